import { type Duration, Effect, Layer, Option, Stream } from "effect";
import * as ConfigLayer from "../../src/layers/Config.js";
import * as CsiMemory from "../../src/layers/CsiMemory.js";
import { Kube, type KubeError } from "../../src/layers/Kube.js";
import * as KubeMemory from "../../src/layers/KubeMemory.js";
import { startController } from "../../src/programs/Controller.js";
import { connectDriver, Driver } from "../../src/programs/Driver.js";
import type { ProvisionerConfig } from "../../src/schemas/Config.js";

export interface HarnessOptions {
  readonly config?: Partial<ProvisionerConfig>;
  readonly driver?: CsiMemory.MemoryDriverOptions;
  readonly cluster?: KubeMemory.MemoryClusterOptions;
}

/** An in-memory cluster and driver, and the configuration, for one test. */
export const harness = (options: HarnessOptions = {}) =>
  Layer.mergeAll(
    KubeMemory.layerWithCluster(options.cluster),
    CsiMemory.layerMemory(options.driver),
    ConfigLayer.layer(options.config),
  );

/** Starts the sidecar in the current scope, as `main` would after start-up. */
export const startProvisioner = Effect.gen(function* () {
  const driver = yield* connectDriver;
  return yield* startController.pipe(Effect.provideService(Driver, driver));
});

export const getRaw = (resource: KubeMemory.MemoryResource, ref: KubeMemory.ResourceRef) =>
  Effect.flatMap(KubeMemory.MemoryCluster, (cluster) => cluster.get(resource, ref)).pipe(
    Effect.map(Option.getOrUndefined),
  ) as Effect.Effect<any, never, KubeMemory.MemoryCluster>;

/** Events as `reason: message`, optionally only those about one object. */
export const eventsOf = (name?: string) =>
  Effect.flatMap(KubeMemory.MemoryCluster, (cluster) => cluster.events).pipe(
    Effect.map((events) =>
      (events as ReadonlyArray<any>)
        .filter((e) => name === undefined || e.involvedObject.name === name)
        .map((e) => `${e.type} ${e.reason}: ${e.message}`),
    ),
  );

/**
 * The same cluster seen through watches that lag `delay` behind every write, as a loaded API
 * server's do: the caches hold stale objects while our own writes are on their way.
 */
export const laggyWatches = (
  delay: Duration.DurationInput,
  volumeDelay: Duration.DurationInput = delay,
) =>
  Layer.effect(
    Kube,
    Effect.map(KubeMemory.MemoryCluster, (cluster) => {
      const lag =
        (by: Duration.DurationInput) =>
        <A>(stream: Stream.Stream<A, KubeError>) =>
          stream.pipe(Stream.mapEffect((event) => Effect.delay(Effect.succeed(event), by)));
      return {
        ...cluster.kube,
        watchPersistentVolumeClaims: lag(delay)(cluster.kube.watchPersistentVolumeClaims),
        watchPersistentVolumes: lag(volumeDelay)(cluster.kube.watchPersistentVolumes),
        watchStorageClasses: lag(delay)(cluster.kube.watchStorageClasses),
      };
    }),
  );
