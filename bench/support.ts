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

/**
 * How our image (Dockerfile) runs the sidecar, so that the benchmarks measure what a user gets:
 * its Node.js options (also in the bin's shebang) and MALLOC_ARENA_MAX=2 unless the caller sets it.
 */
export const sidecarNodeArgs = ["--max-semi-space-size=2"];

export const sidecarEnvironment = (): NodeJS.ProcessEnv => ({
  ...process.env,
  MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? "2",
});
