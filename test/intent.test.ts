import { describe, expect, it } from "@effect/vitest";
import { Duration, Effect, Exit, Fiber, Layer, Scope, TestClock } from "effect";
import { Behaviour, defaultDriverName, MemoryDriver } from "../src/layers/CsiMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { claim, storageClass } from "./support/Fixtures.js";
import { getRaw, harness, laggyWatches, startProvisioner } from "./support/Harness.js";

const intent = "csi-provisioner.effect.dev/provisioning-intent";

/** Runs the sidecar until the returned effect "kills" it: every fiber of it is interrupted. */
const startKillable = Effect.gen(function* () {
  const scope = yield* Scope.make();
  yield* Scope.extend(startProvisioner, scope);
  return Scope.close(scope, Exit.void);
});

const finalizersOf = (name: string) =>
  Effect.map(
    getRaw("persistentvolumeclaims", `default/${name}`),
    (pvc) => pvc?.metadata.finalizers ?? [],
  );

describe("SPEC §8 no leak across restarts (beyond upstream)", () => {
  it.scoped(
    "§8 the intent finalizer is on the PVC before the first CreateVolume and gone once the PV exists",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* startProvisioner;
        yield* driver.script("CreateVolume", Behaviour.delay(Duration.seconds(5)));
        yield* cluster.create("persistentvolumeclaims", claim("a"));
        yield* TestClock.adjust("1 second");
        expect(yield* driver.callCount("CreateVolume")).toBe(1);
        expect(yield* finalizersOf("a")).toEqual([intent]);
        yield* TestClock.adjust("4 seconds");
        expect(yield* finalizersOf("a")).toEqual([]);
        expect((yield* getRaw("persistentvolumeclaims", "default/a")).status.phase).toBe("Bound");
      }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§8 the intent stays between the PV controller's two binding writes, so its conditional status write never conflicts",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* startProvisioner;
        yield* cluster.create(
          "persistentvolumeclaims",
          claim("a", {
            annotations: { "volume.kubernetes.io/storage-provisioner": defaultDriverName },
          }),
        );
        yield* TestClock.adjust("1 second");
        const [pv] = (yield* cluster.list("persistentvolumes")) as ReadonlyArray<any>;
        expect(yield* finalizersOf("a")).toEqual([intent]);

        // kube-controller-manager's bind(): the claim's volumeName, then (conditionally) its status.
        const pending = yield* getRaw("persistentvolumeclaims", "default/a");
        const named = yield* cluster.update("persistentvolumeclaims", {
          ...pending,
          spec: { ...pending.spec, volumeName: pv?.metadata.name },
        });
        yield* TestClock.adjust("1 second");
        expect(yield* finalizersOf("a")).toEqual([intent]);
        const bound = yield* cluster.update("persistentvolumeclaims", {
          ...named,
          status: { phase: "Bound" },
        });
        expect(bound.status).toEqual({ phase: "Bound" });

        yield* TestClock.adjust("1 second");
        expect(yield* finalizersOf("a")).toEqual([]);
      }).pipe(Effect.provide(harness({ cluster: { pvController: false } }))),
  );

  it.scoped(
    "§8 killed while CreateVolume runs on the driver: the restarted sidecar finishes with the same volume",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        const kill = yield* startKillable;
        yield* driver.script("CreateVolume", Behaviour.delay(Duration.seconds(30)));
        yield* cluster.create("persistentvolumeclaims", claim("a"));
        yield* TestClock.adjust("5 seconds");
        yield* kill;
        // The driver goes on and creates the volume while no sidecar runs.
        yield* TestClock.adjust("60 seconds");
        expect((yield* driver.volumes).size).toBe(1);
        expect(yield* finalizersOf("a")).toEqual([intent]);

        yield* startProvisioner;
        yield* TestClock.adjust(0);
        const creates = yield* driver.callsTo("CreateVolume");
        expect(creates.map((c) => c.startedAt)).toEqual([0, 65_000]);
        expect(creates[1]?.request.name).toBe(creates[0]?.request.name);
        expect((yield* driver.volumes).size).toBe(1);
        const pvc = yield* getRaw("persistentvolumeclaims", "default/a");
        expect(pvc.status.phase).toBe("Bound");
        expect(pvc.spec.volumeName).toBe(creates[0]?.request.name);
        expect(yield* finalizersOf("a")).toEqual([]);
      }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§8 killed, then the PVC is deleted: the restarted sidecar replays CreateVolume, deletes the volume, releases the PVC",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        const kill = yield* startKillable;
        yield* driver.script("CreateVolume", Behaviour.delay(Duration.seconds(30)));
        yield* cluster.create("persistentvolumeclaims", claim("a"));
        yield* TestClock.adjust("5 seconds");
        yield* kill;
        yield* cluster.remove("persistentvolumeclaims", "default/a");
        yield* TestClock.adjust("60 seconds");
        // Held by our finalizer: the volume the driver made is still findable.
        expect(
          (yield* getRaw("persistentvolumeclaims", "default/a")).metadata.deletionTimestamp,
        ).toBeDefined();
        expect((yield* driver.volumes).size).toBe(1);

        yield* startProvisioner;
        yield* TestClock.adjust(0);
        expect((yield* driver.callsTo("DeleteVolume")).map((c) => c.request.volume_id)).toEqual([
          "vol-1",
        ]);
        expect((yield* driver.volumes).size).toBe(0);
        expect(yield* getRaw("persistentvolumeclaims", "default/a")).toBeUndefined();
        expect(yield* cluster.list("persistentvolumes")).toEqual([]);
      }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§8 a PVC deleted while CreateVolume keeps timing out leaks nothing once the driver answers",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* startProvisioner;
        yield* driver.script("CreateVolume", Behaviour.hang, Behaviour.hang, Behaviour.hang);
        yield* cluster.create("persistentvolumeclaims", claim("a"));
        yield* TestClock.adjust("1 second");
        yield* cluster.remove("persistentvolumeclaims", "default/a");
        yield* TestClock.adjust("5 minutes");
        expect((yield* driver.callsTo("CreateVolume")).length).toBe(4);
        expect((yield* driver.volumes).size).toBe(0);
        expect(yield* getRaw("persistentvolumeclaims", "default/a")).toBeUndefined();
      }).pipe(Effect.provide(harness())),
  );

  it.scoped("§8 stopping the sidecar interrupts every fiber: no call starts after the stop", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const driver = yield* MemoryDriver;
      yield* cluster.create("storageclasses", storageClass("fast"));
      const kill = yield* startKillable;
      yield* driver.script(
        "CreateVolume",
        ...Array.from({ length: 5 }, () => Behaviour.fail("Internal", "no")),
      );
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust("2 seconds");
      yield* kill;
      const before = yield* driver.callCount("CreateVolume");
      yield* TestClock.adjust("1 hour");
      expect(yield* driver.callCount("CreateVolume")).toBe(before);
    }).pipe(Effect.provide(harness())),
  );
});

describe("SPEC §8 with caches that lag behind our own writes", () => {
  it.scoped(
    "§8 one CreateVolume and one PV per claim, and the intent released once the claim is bound",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        // The caches sync only as the clock moves: start the sidecar alongside.
        yield* Effect.forkScoped(startProvisioner);
        yield* TestClock.adjust("3 seconds");
        yield* cluster.create("persistentvolumeclaims", claim("a"));
        yield* TestClock.adjust("1 second");
        expect(yield* finalizersOf("a")).toEqual([]);
        yield* TestClock.adjust("10 seconds");
        expect(yield* driver.callCount("CreateVolume")).toBe(1);
        expect((yield* cluster.requestCounts)["create persistentvolumes"]).toBe(1);
        expect((yield* getRaw("persistentvolumeclaims", "default/a")).status.phase).toBe("Bound");
      }).pipe(
        Effect.provide(Layer.provideMerge(laggyWatches("100 millis", "2 seconds"), harness())),
      ),
  );
});

describe("graceful stop (issue: operations)", () => {
  it.scoped(
    "draining lets an in-flight CreateVolume finish and save its PV; no new work starts",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        const controller = yield* startProvisioner;
        yield* driver.script("CreateVolume", Behaviour.delay(Duration.seconds(5)));
        yield* cluster.create("persistentvolumeclaims", claim("a"));
        yield* TestClock.adjust("1 second");
        const stopping = yield* Effect.fork(controller.drain);
        yield* TestClock.adjust("10 millis");
        yield* cluster.create("persistentvolumeclaims", claim("b"));
        yield* TestClock.adjust("2990 millis");
        expect(stopping.unsafePoll()).toBeNull();
        yield* TestClock.adjust("1 second");
        yield* Fiber.join(stopping);
        expect((yield* getRaw("persistentvolumeclaims", "default/a")).status.phase).toBe("Bound");
        // Its PV is saved; the intent comes off once the claim is bound, by this run or the next.
        expect(
          yield* getRaw(
            "persistentvolumes",
            (yield* getRaw("persistentvolumeclaims", "default/a")).spec.volumeName,
          ),
        ).toBeDefined();
        expect((yield* driver.callsTo("CreateVolume")).map((c) => c.startedAt)).toEqual([0]);
      }).pipe(Effect.provide(harness())),
  );
});
