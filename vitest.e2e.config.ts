import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/e2e/**/*.e2e.test.ts"],
    // One control plane at a time: two of them on 2 cores would make every timing meaningless.
    fileParallelism: false,
    // Forks, not threads: the harness's child processes are tied (parent-death signal) to the
    // thread that spawned them, and a forked worker's main thread lives as long as the file runs.
    pool: "forks",
    poolOptions: { forks: { singleFork: true } },
    // A first run builds Kubernetes from source (minutes); after that a start takes seconds.
    hookTimeout: 30 * 60_000,
    testTimeout: 5 * 60_000,
    teardownTimeout: 60_000,
  },
});
