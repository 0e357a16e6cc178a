import { Clock, Duration, Effect } from "effect";

/**
 * Client-side request rate limiting as client-go's flowcontrol does it: a bucket of `burst` tokens
 * refilled at `qps` per second; a caller that finds it empty reserves the next token and waits for
 * it. (Effect's RateLimiter costs ~150µs a call here, this ~1µs: it is on every API request.)
 */
export const makeTokenBucket = (qps: number, burst: number) => {
  const capacity = Math.max(1, burst);
  const perMillis = Math.max(qps, 1e-6) / 1000;
  let tokens = capacity;
  let updatedAt: number | undefined;

  /** Takes a token, waiting as long as the bucket says. */
  const take: Effect.Effect<void> = Effect.flatMap(Clock.currentTimeMillis, (now) => {
    tokens = Math.min(capacity, tokens + (now - (updatedAt ?? now)) * perMillis);
    updatedAt = now;
    tokens -= 1;
    return tokens >= 0 ? Effect.void : Effect.sleep(Duration.millis(-tokens / perMillis));
  });

  return {
    take,
    limit: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.zipRight(take, effect),
  };
};
