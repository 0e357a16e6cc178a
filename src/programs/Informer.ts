import { type Chunk, Deferred, Duration, Effect, Schedule, type Scope, Stream } from "effect";
import type { KubeError, WatchEvent } from "../layers/Kube.js";
import type { Store } from "./Informers.js";

export interface Informer<A> extends Store<A> {
  /** Completes once the first complete list has been applied. */
  readonly synced: Effect.Effect<void>;
}

/**
 * A cache kept current by a list+watch stream, in the manner of client-go's informer: it applies
 * each event, then tells `onChange` which key changed (its old and new object, undefined when
 * absent). A relist replaces the cache and reports every key, like a resync.
 */
export const makeInformer = <A, R>(
  name: string,
  events: Stream.Stream<WatchEvent<A>, KubeError, R>,
  keyOf: (object: A) => string,
  onChange: (key: string, previous: A | undefined, current: A | undefined) => void,
): Effect.Effect<Informer<A>, never, R | Scope.Scope> =>
  Effect.gen(function* () {
    const cache = new Map<string, A>();
    const synced = yield* Deferred.make<void>();

    // Synchronous, like client-go's handlers: one step per chunk of events rather than an Effect
    // per event, which cost more than the rest of an event's way through the cache.
    const apply = (event: WatchEvent<A>) => {
      if (event._tag === "Listed") {
        const seen = new Set<string>();
        for (const object of event.items) {
          const key = keyOf(object);
          seen.add(key);
          const previous = cache.get(key);
          cache.set(key, object);
          onChange(key, previous, object);
        }
        for (const [key, previous] of cache) {
          if (!seen.has(key)) {
            cache.delete(key);
            onChange(key, previous, undefined);
          }
        }
        return;
      }
      const key = keyOf(event.object);
      const previous = cache.get(key);
      if (event._tag === "Deleted") cache.delete(key);
      else cache.set(key, event.object);
      onChange(key, previous, event._tag === "Deleted" ? undefined : event.object);
    };
    const applyChunk = (events: Chunk.Chunk<WatchEvent<A>>) =>
      Effect.suspend(() => {
        let listed = false;
        for (const event of events) {
          apply(event);
          listed ||= event._tag === "Listed";
        }
        return listed ? Deferred.succeed(synced, undefined) : Effect.void;
      });

    // The Kube layer already relists and reconnects; this only guards against a stream that ends.
    yield* events.pipe(
      Stream.runForEachChunk(applyChunk),
      Effect.zipRight(Effect.fail(`watch of ${name} ended`)),
      Effect.tapError((error) =>
        Effect.logWarning(
          `watch of ${name} failed, restarting: ${typeof error === "string" ? error : error.message}`,
        ),
      ),
      Effect.retry(
        Schedule.exponential(Duration.seconds(1)).pipe(
          Schedule.union(Schedule.spaced(Duration.seconds(30))),
        ),
      ),
      Effect.forkScoped,
    );

    return {
      get: (key) => cache.get(key),
      values: () => cache.values(),
      size: () => cache.size,
      synced: Deferred.await(synced),
    };
  });
