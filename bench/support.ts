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
