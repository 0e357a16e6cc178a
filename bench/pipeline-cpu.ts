/**
 * CPU cost of the provisioning pipeline itself (informers, queues, programs, schemas) without
 * network I/O: N claims through the in-memory cluster and driver. Prints ms of CPU per PVC.
 */
import { Duration, Effect, Layer, Logger, LogLevel, TestClock, TestContext } from "effect";
import * as ConfigLayer from "../src/layers/Config.js";
import * as CsiMemory from "../src/layers/CsiMemory.js";
import * as KubeMemory from "../src/layers/KubeMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { startController } from "../src/programs/Controller.js";
import { connectDriver, Driver } from "../src/programs/Driver.js";

const n = Number(process.argv[2] ?? 2000);

const program = Effect.gen(function* () {
  const cluster = yield* MemoryCluster;
  yield* cluster.create("storageclasses", {
    metadata: { name: "fast" },
    provisioner: CsiMemory.defaultDriverName,
    reclaimPolicy: "Delete",
    volumeBindingMode: "Immediate",
  });
  const driver = yield* connectDriver;
  yield* startController.pipe(Effect.provideService(Driver, driver));
  const before = process.cpuUsage();
  const start = Date.now();
  for (let i = 0; i < n; i++) {
    yield* cluster.create("persistentvolumeclaims", {
      metadata: { name: `c-${i}`, namespace: "default" },
      spec: {
        storageClassName: "fast",
        accessModes: ["ReadWriteOnce"],
        resources: { requests: { storage: "1Gi" } },
      },
    });
  }
  yield* TestClock.adjust(Duration.seconds(1));
  const used = process.cpuUsage(before);
  const bound = (yield* cluster.list("persistentvolumeclaims")).filter(
    (c) => (c as { status?: { phase?: string } }).status?.phase === "Bound",
  ).length;
  console.log(
    `${n} claims, ${bound} bound, ${((used.user + used.system) / 1000 / n).toFixed(2)} ms CPU per PVC (${Date.now() - start} ms wall)`,
  );
});

program.pipe(
  Effect.scoped,
  Effect.provide(
    Layer.mergeAll(KubeMemory.layerWithCluster(), CsiMemory.layerMemory(), ConfigLayer.layer()),
  ),
  Effect.provide(TestContext.TestContext),
  Logger.withMinimumLogLevel(LogLevel.Warning),
  Effect.runPromise,
);
