import { NodeRuntime } from "@effect/platform-node";
import { Clock, Duration, Effect, Layer, Logger, LogLevel, Random, Stream } from "effect";
import * as ConfigLayer from "../layers/Config.js";
import * as CsiMemory from "../layers/CsiMemory.js";
import { Behaviour, MemoryDriver } from "../layers/CsiMemory.js";
import { Kube } from "../layers/Kube.js";
import * as KubeMemory from "../layers/KubeMemory.js";
import { MemoryCluster } from "../layers/KubeMemory.js";
import { startController } from "../programs/Controller.js";
import { connectDriver, Driver } from "../programs/Driver.js";

/**
 * The sidecar's whole pipeline on an embedded cluster: an in-memory API server with a PV
 * controller, and an in-memory CSI driver that is sometimes slow and sometimes fails.
 */

const claims = 40;
const driverName = "demo.csi.effect.dev";

const claimObject = (i: number) => ({
  metadata: { name: `data-${String(i).padStart(2, "0")}`, namespace: "demo" },
  spec: {
    storageClassName: "standard",
    accessModes: ["ReadWriteOnce"],
    resources: { requests: { storage: `${1 + (i % 4)}Gi` } },
  },
});

const demo = Effect.gen(function* () {
  const cluster = yield* MemoryCluster;
  const driver = yield* MemoryDriver;
  const kube = yield* Kube;
  const start = yield* Clock.currentTimeMillis;
  const elapsed = Effect.map(Clock.currentTimeMillis, (now) =>
    ((now - start) / 1000).toFixed(2).padStart(6),
  );

  yield* cluster.create("storageclasses", {
    metadata: { name: "standard" },
    provisioner: driverName,
    reclaimPolicy: "Delete",
    volumeBindingMode: "Immediate",
    parameters: { tier: "gold" },
  });
  // A driver that takes 50-400ms per volume and times out or hiccups now and then.
  const behaviours = [];
  for (let i = 0; i < claims + 10; i++) {
    const roll = yield* Random.nextIntBetween(0, 100);
    const delay = Duration.millis(yield* Random.nextIntBetween(50, 400));
    behaviours.push(
      roll < 8
        ? Behaviour.fail("Unavailable", "driver restarting")
        : roll < 12
          ? Behaviour.delay(Duration.seconds(3))
          : Behaviour.delay(delay),
    );
  }
  yield* driver.script("CreateVolume", ...behaviours);

  const info = yield* connectDriver;
  yield* Effect.log(`driver ${info.name}, identity ${info.identity}`);
  const controller = yield* startController.pipe(Effect.provideService(Driver, info));

  const createdAt = new Map<string, number>();
  const boundAt = new Map<string, { pv: string; at: number }>();
  yield* kube.watchPersistentVolumeClaims.pipe(
    Stream.runForEach((event) =>
      Effect.gen(function* () {
        const items = event._tag === "Listed" ? event.items : [event.object];
        for (const pvc of items) {
          if (pvc.status?.phase === "Bound" && !boundAt.has(pvc.metadata.name)) {
            boundAt.set(pvc.metadata.name, {
              pv: pvc.spec.volumeName ?? "",
              at: yield* Clock.currentTimeMillis,
            });
          }
        }
      }),
    ),
    Effect.forkScoped,
  );

  console.log(`creating ${claims} PVCs in namespace demo, StorageClass standard → ${driverName}`);
  for (let i = 0; i < claims; i++) {
    const object = claimObject(i);
    yield* cluster.create("persistentvolumeclaims", object);
    createdAt.set(object.metadata.name, yield* Clock.currentTimeMillis);
    yield* Effect.sleep(Duration.millis(20));
  }

  while (boundAt.size < claims) {
    const inFlight = (yield* driver.calls).filter((c) => c.outcome._tag === "Pending").length;
    const backingOff = (yield* controller.claims.status).filter(
      (s) => s.state === "BackingOff",
    ).length;
    console.log(
      `[${yield* elapsed}s] bound ${String(boundAt.size).padStart(2)}/${claims}  CreateVolume in flight ${inFlight}  backing off ${backingOff}`,
    );
    yield* Effect.sleep(Duration.millis(500));
  }

  const volumes = yield* driver.volumes;
  const byPv = new Map([...volumes.values()].map((v) => [v.name, v.volumeId]));
  const rows = [...boundAt].sort(([a], [b]) => a.localeCompare(b));
  console.log(`\nall ${claims} PVCs bound in ${yield* elapsed}s\n`);
  console.log(`${"PVC".padEnd(10)} ${"PV".padEnd(42)} ${"VOLUME".padEnd(8)} TIME TO BIND`);
  for (const [name, { pv, at }] of rows) {
    const took = (at - (createdAt.get(name) ?? at)) / 1000;
    console.log(
      `${name.padEnd(10)} ${pv.padEnd(42)} ${(byPv.get(pv) ?? "?").padEnd(8)} ${took.toFixed(2)}s`,
    );
  }
  const calls = yield* driver.callCount("CreateVolume");
  console.log(
    `\n${calls} CreateVolume calls for ${volumes.size} volumes (retries after failures and timeouts)`,
  );
});

const layers = Layer.mergeAll(
  KubeMemory.layerWithCluster(),
  CsiMemory.layerMemory({ name: driverName }),
  ConfigLayer.layer({
    timeout: Duration.seconds(2),
    retryIntervalStart: Duration.millis(250),
    workerThreads: 8,
  }),
);

demo.pipe(
  Effect.scoped,
  Effect.provide(layers),
  Logger.withMinimumLogLevel(LogLevel.Warning),
  NodeRuntime.runMain,
);
