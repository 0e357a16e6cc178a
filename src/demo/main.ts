import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as NodeRuntime from "@effect/platform-node/NodeRuntime";
import { Clock, Duration, Effect, Layer, Logger, LogLevel, Option, Stream } from "effect";
import * as ConfigLayer from "../layers/Config.js";
import * as CsiGrpc from "../layers/CsiGrpc.js";
import { Kube } from "../layers/Kube.js";
import * as KubeMemory from "../layers/KubeMemory.js";
import { MemoryCluster } from "../layers/KubeMemory.js";
import { startController } from "../programs/Controller.js";
import { connectDriver, Driver } from "../programs/Driver.js";

/**
 * The sidecar's pipeline end to end on one machine: an embedded in-memory API server (with a PV
 * controller) and the bundled reference CSI driver, `csi-hostpath-ref`, as a child process on a
 * real Unix socket, slowed down and made to fail now and then.
 */

const claims = 40;
const driverName = "hostpath.csi.effect.dev";
const timeout = Duration.seconds(2);

/** Starts csi-hostpath-ref; stopping the scope stops it and removes its files. */
const referenceDriver = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = mkdtempSync(join(tmpdir(), "csi-demo-"));
    const socket = join(dir, "csi.sock");
    const child = spawn(
      process.execPath,
      [
        fileURLToPath(new URL("../driver/main.js", import.meta.url)),
        `--endpoint=unix://${socket}`,
        `--root=${join(dir, "volumes")}`,
        `--name=${driverName}`,
        "--capacity=1Ti",
        "--delay-create=150ms",
        "--fail-create-rate=0.1",
        "--fail-create-code=Unavailable",
        "--seed=7",
      ],
      { stdio: ["ignore", "ignore", "inherit"] },
    );
    return { dir, socket, child };
  }),
  ({ dir, child }: { dir: string; socket: string; child: ChildProcess }) =>
    Effect.sync(() => {
      child.kill("SIGTERM");
      rmSync(dir, { recursive: true, force: true });
    }),
);

const claimObject = (i: number) => ({
  metadata: { name: `data-${String(i).padStart(2, "0")}`, namespace: "demo" },
  spec: {
    storageClassName: "standard",
    accessModes: ["ReadWriteOnce"],
    resources: { requests: { storage: `${1 + (i % 4)}Gi` } },
  },
});

const demo = (socket: string) =>
  Effect.gen(function* () {
    const cluster = yield* MemoryCluster;
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

    const info = yield* connectDriver;
    console.log(`driver ${info.name} on unix://${socket}, sidecar identity ${info.identity}`);
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
      const status = yield* controller.claims.status;
      const count = (state: string) => status.filter((s) => s.state === state).length;
      console.log(
        `[${yield* elapsed}s] bound ${String(boundAt.size).padStart(2)}/${claims}  provisioning ${count("Processing")}  queued ${count("Queued")}  backing off ${count("BackingOff")}`,
      );
      yield* Effect.sleep(Duration.millis(250));
    }

    console.log(`\nall ${claims} PVCs bound in ${yield* elapsed}s\n`);
    console.log(`${"PVC".padEnd(10)} ${"PV".padEnd(42)} ${"VOLUME ID".padEnd(38)} TIME TO BIND`);
    for (const [name, { pv, at }] of [...boundAt].sort(([a], [b]) => a.localeCompare(b))) {
      const volume = Option.getOrUndefined(yield* cluster.get("persistentvolumes", pv)) as
        | { spec?: { csi?: { volumeHandle?: string } } }
        | undefined;
      const took = (at - (createdAt.get(name) ?? at)) / 1000;
      console.log(
        `${name.padEnd(10)} ${pv.padEnd(42)} ${(volume?.spec?.csi?.volumeHandle ?? "?").padEnd(38)} ${took.toFixed(2)}s`,
      );
    }
    const events = (yield* cluster.events) as ReadonlyArray<{ reason?: string }>;
    const attempts = events.filter((e) => e.reason === "Provisioning").length;
    const failures = events.filter((e) => e.reason === "ProvisioningFailed").length;
    console.log(
      `\n${attempts} attempts, ${failures} failed (injected UNAVAILABLE answers) and retried with backoff`,
    );
  });

const main = Effect.gen(function* () {
  const driver = yield* referenceDriver;
  const config = ConfigLayer.layer({
    csiAddress: driver.socket,
    timeout,
    retryIntervalStart: Duration.millis(250),
    workerThreads: 8,
  });
  yield* demo(driver.socket).pipe(
    Effect.provide(
      Layer.mergeAll(
        KubeMemory.layerWithCluster(),
        CsiGrpc.layer.pipe(Layer.provide(config)),
        config,
      ),
    ),
  );
});

main.pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Warning), NodeRuntime.runMain);
