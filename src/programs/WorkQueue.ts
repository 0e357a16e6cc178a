import {
  Cause,
  Deferred,
  Duration,
  Effect,
  Exit,
  FiberMap,
  type Schedule,
  ScheduleDecision,
  ScheduleIntervals,
} from "effect";
import { Metrics } from "../layers/Metrics.js";

/** Where a key stands, for the debug endpoint and for tests. */
export interface KeyStatus {
  readonly key: string;
  readonly state: "Queued" | "Processing" | "BackingOff";
  /** Failures since the last success. */
  readonly failures: number;
  readonly lastError: string | undefined;
  /** Epoch milliseconds of the next retry while backing off. */
  readonly nextRetryAt: number | undefined;
}

interface Entry {
  queued: boolean;
  processing: boolean;
  /** Added while processing: run once more right after, unless the run failed and backs off. */
  dirty: boolean;
  failures: number;
  lastError: string | undefined;
  retryAt: number | undefined;
  backoffState: unknown;
}

export interface WorkQueue {
  /** Asks for `key` to be processed. While the key backs off this waits for the retry instead. */
  readonly add: (key: string) => Effect.Effect<void>;
  /** `add` for synchronous callers (informer handlers). */
  readonly unsafeAdd: (key: string) => void;
  readonly status: Effect.Effect<ReadonlyArray<KeyStatus>>;
  readonly depth: Effect.Effect<number>;
  /**
   * Processes keys with at most `workers` at once and never two runs of one key at the same time.
   * A failed run is retried after the backoff schedule's next delay; a success resets the backoff.
   */
  readonly run: <R>(
    workers: number,
    handle: (key: string) => Effect.Effect<void, { readonly message: string }, R>,
  ) => Effect.Effect<never, never, R>;
  /**
   * Stops taking new keys and waits (at most `deadline`) for the runs in progress to finish:
   * a graceful stop lets in-flight operations complete instead of interrupting them.
   */
  readonly drain: (deadline: Duration.DurationInput) => Effect.Effect<void>;
}

/**
 * A keyed work queue in the manner of client-go's rate-limited workqueue, built on Effect. A named
 * queue reports its adds, retries, depth and keys in flight as client-go's named queues do.
 */
export const makeWorkQueue = (backoff: Schedule.Schedule<unknown, unknown>, name?: string) =>
  Effect.gen(function* () {
    const queue = makeKeyQueue();
    const retries = yield* FiberMap.make<string>();
    const entries = new Map<string, Entry>();
    const metrics = yield* Metrics;
    let inFlight = 0;
    if (name !== undefined) {
      yield* metrics.watchQueue(name, {
        depth: queue.size,
        inFlight: () => inFlight,
      });
    }

    const entryOf = (key: string): Entry => {
      let entry = entries.get(key);
      if (!entry) {
        entry = {
          queued: false,
          processing: false,
          dirty: false,
          failures: 0,
          lastError: undefined,
          retryAt: undefined,
          backoffState: backoff.initial,
        };
        entries.set(key, entry);
      }
      return entry;
    };

    const unsafeAdd = (key: string): void => {
      const entry = entryOf(key);
      if (entry.retryAt !== undefined || entry.queued) return;
      if (entry.processing) {
        entry.dirty = true;
        return;
      }
      entry.queued = true;
      queue.offer(key);
      if (name !== undefined) metrics.queueAdded(name);
    };
    const add = (key: string): Effect.Effect<void> => Effect.sync(() => unsafeAdd(key));

    const nextDelay = (entry: Entry, now: number) =>
      Effect.map(backoff.step(now, undefined, entry.backoffState), ([state, , decision]) => {
        entry.backoffState = state;
        return ScheduleDecision.isDone(decision)
          ? 0
          : Math.max(0, ScheduleIntervals.start(decision.intervals) - now);
      });

    const scheduleRetry = (key: string, entry: Entry, error: string) =>
      Effect.gen(function* () {
        const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis);
        const delay = yield* nextDelay(entry, now);
        entry.failures += 1;
        entry.lastError = error;
        entry.retryAt = now + delay;
        if (name !== undefined) metrics.queueRetried(name);
        yield* Effect.logDebug(
          `retrying ${key} in ${Duration.format(Duration.millis(delay))}: ${error}`,
        );
        yield* FiberMap.run(
          retries,
          key,
          Effect.sleep(Duration.millis(delay)).pipe(
            Effect.zipRight(
              Effect.suspend(() => {
                entry.retryAt = undefined;
                return add(key);
              }),
            ),
          ),
        );
      });

    const processOne =
      <R>(handle: (key: string) => Effect.Effect<void, { readonly message: string }, R>) =>
      (key: string) =>
        Effect.gen(function* () {
          const entry = entryOf(key);
          entry.queued = false;
          entry.processing = true;
          inFlight++;
          const exit = yield* Effect.exit(handle(key));
          // Not decremented when interrupted: only a closing scope interrupts, unwatching the queue.
          inFlight--;
          if (draining && inFlight === 0) yield* Deferred.succeed(idle, undefined);
          entry.processing = false;
          if (Exit.isSuccess(exit)) {
            entry.failures = 0;
            entry.lastError = undefined;
            entry.backoffState = backoff.initial;
            if (entry.dirty) {
              entry.dirty = false;
              yield* add(key);
            } else {
              entries.delete(key);
            }
            return;
          }
          if (Cause.isInterruptedOnly(exit.cause)) return yield* Effect.interrupt;
          entry.dirty = false;
          const failure = Cause.failureOption(exit.cause);
          const message =
            failure._tag === "Some" ? failure.value.message : Cause.pretty(exit.cause);
          if (failure._tag === "None") yield* Effect.logError(`processing ${key} died: ${message}`);
          yield* scheduleRetry(key, entry, message);
        });

    let draining = false;
    const idle = yield* Deferred.make<void>();

    // Plain worker fibers taking from the queue: keys are the hot path, and a concurrent
    // Stream.mapEffect cost far more per key in bench/pipeline-cpu.ts.
    const run = <R>(
      workers: number,
      handle: (key: string) => Effect.Effect<void, { readonly message: string }, R>,
    ): Effect.Effect<never, never, R> =>
      Effect.suspend(() => {
        const process = processOne(handle);
        return Effect.forEach(
          Array.from({ length: workers }, (_, i) => i),
          () =>
            Effect.forever(
              // Once draining, a key taken is left for the next start (which relists everything).
              Effect.flatMap(queue.take, (key) => (draining ? Effect.never : process(key))),
            ),
          { concurrency: "unbounded", discard: true },
        );
      }).pipe(Effect.zipRight(Effect.never));

    const drain = (deadline: Duration.DurationInput) =>
      Effect.suspend(() => {
        draining = true;
        return inFlight === 0
          ? Effect.void
          : Effect.ignore(Effect.timeout(Deferred.await(idle), deadline));
      });

    const status = Effect.sync(() =>
      [...entries].map(
        ([key, entry]): KeyStatus => ({
          key,
          state: entry.processing
            ? "Processing"
            : entry.retryAt !== undefined
              ? "BackingOff"
              : "Queued",
          failures: entry.failures,
          lastError: entry.lastError,
          nextRetryAt: entry.retryAt,
        }),
      ),
    );

    return {
      add,
      unsafeAdd,
      status,
      depth: Effect.sync(queue.size),
      run,
      drain,
    } satisfies WorkQueue;
  });

/**
 * Keys waiting for a worker, and workers waiting for a key. Not an Effect Queue: a key handed to
 * an idle worker resumes it directly, without Queue.take's Deferred per take, which cost more
 * than half of a key's way through the work queue.
 */
const makeKeyQueue = () => {
  let keys: Array<string> = [];
  let head = 0;
  const idle: Array<(key: string) => void> = [];

  const offer = (key: string) => {
    const worker = idle.pop();
    if (worker) worker(key);
    else keys.push(key);
  };
  const poll = (): string | undefined => {
    if (head === keys.length) return undefined;
    const key = keys[head++];
    // Drop the consumed front now and then rather than shifting the array on every take.
    if (head === keys.length) {
      keys = [];
      head = 0;
    } else if (head > 1024 && head * 2 > keys.length) {
      keys = keys.slice(head);
      head = 0;
    }
    return key;
  };
  const take: Effect.Effect<string> = Effect.suspend(() => {
    const key = poll();
    if (key !== undefined) return Effect.succeed(key);
    return Effect.async<string>((resume) => {
      const worker = (key: string) => resume(Effect.succeed(key));
      idle.push(worker);
      return Effect.sync(() => {
        const at = idle.indexOf(worker);
        if (at >= 0) idle.splice(at, 1);
      });
    });
  });
  return { offer, take, size: () => keys.length - head };
};
