import { type Duration, Schedule } from "effect";

/**
 * Per-key backoff of failed provisioning and deletion: `start`, doubling with every failure, never
 * more than `max` (upstream's ItemExponentialFailureRateLimiter). A success resets it.
 */
export const retryBackoff = (start: Duration.DurationInput, max: Duration.DurationInput) =>
  Schedule.exponential(start, 2).pipe(Schedule.union(Schedule.spaced(max)));
