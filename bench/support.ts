import { join } from "node:path";

/** Runs `task` over `items` with at most `limit` in flight. */
export const pool = async <A>(
  items: ReadonlyArray<A>,
  limit: number,
  task: (item: A) => Promise<unknown>,
) => {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await task(items[next++] as A);
    }),
  );
};

/** The words of an environment variable (empty when unset). */
export const words = (text: string | undefined) => (text ?? "").split(" ").filter(Boolean);

/** The value below which `p` percent of `values` lie (the median at 50). */
export const percentile = (values: ReadonlyArray<number>, p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
};

/**
 * The built sidecar's command line as our image (Dockerfile) runs it, so that the benchmarks
 * measure what a user gets: its Node.js options (also in the bin's shebang), then BENCH_NODE_ARGS
 * (e.g. --cpu-prof), then the sidecar's flags.
 */
export const sidecarArgs = (flags: ReadonlyArray<string>) => [
  "--max-semi-space-size=2",
  ...words(process.env.BENCH_NODE_ARGS),
  join(process.cwd(), "dist/main.js"),
  ...flags,
];

/** The image's environment: MALLOC_ARENA_MAX=2 unless the caller sets it. */
export const sidecarEnvironment = (): NodeJS.ProcessEnv => ({
  ...process.env,
  MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? "2",
});
