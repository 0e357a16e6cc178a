import { describe, expect, it } from "@effect/vitest";
import { Clock, Effect, Fiber, TestClock } from "effect";
import { makeTokenBucket } from "../src/layers/TokenBucket.js";

/** Virtual times at which `count` concurrent takes got their token. */
const takeTimes = (bucket: ReturnType<typeof makeTokenBucket>, count: number) =>
  Effect.gen(function* () {
    const startedAt: Array<number> = [];
    const fiber = yield* Effect.fork(
      Effect.forEach(
        Array.from({ length: count }),
        () =>
          Effect.zipRight(
            bucket.take,
            Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => startedAt.push(t))),
          ),
        { concurrency: "unbounded" },
      ),
    );
    yield* TestClock.adjust("1 second");
    yield* Fiber.join(fiber);
    return startedAt;
  });

describe("client-side rate limiting (--kube-api-qps, --kube-api-burst)", () => {
  it.effect("lets a burst through at once, then one request per 1/qps", () =>
    Effect.gen(function* () {
      const bucket = makeTokenBucket(10, 3);
      expect(yield* takeTimes(bucket, 6)).toEqual([0, 0, 0, 100, 200, 300]);
    }),
  );

  it.effect("refills over time up to the burst, never beyond", () =>
    Effect.gen(function* () {
      const bucket = makeTokenBucket(2, 2);
      yield* bucket.take;
      yield* bucket.take;
      yield* TestClock.adjust("10 seconds");
      expect(yield* takeTimes(bucket, 3)).toEqual([10_000, 10_000, 10_500]);
    }),
  );
});
