import { describe, expect, it } from "@effect/vitest";
import { Duration, Effect, TestClock } from "effect";
import { Behaviour, MemoryDriver } from "../src/layers/CsiMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { claim, csiNode, node, storageClass } from "./support/Fixtures.js";
import { eventsOf, getRaw, harness, startProvisioner } from "./support/Harness.js";

const createStarts = Effect.flatMap(MemoryDriver, (d) => d.callsTo("CreateVolume")).pipe(
  Effect.map((calls) => calls.map((c) => c.startedAt)),
);

const withClassAndProvisioner = Effect.gen(function* () {
  const cluster = yield* MemoryCluster;
  yield* cluster.create("storageclasses", storageClass("fast"));
  yield* startProvisioner;
  return cluster;
});

const failing = (times: number) =>
  Array.from({ length: times }, () => Behaviour.fail("Internal", "disk on fire"));

describe("SPEC §5 errors, retries and events", () => {
  it.scoped("§5 backoff per PVC: --retry-interval-start doubling up to --retry-interval-max", () =>
    Effect.gen(function* () {
      const driver = yield* MemoryDriver;
      const cluster = yield* withClassAndProvisioner;
      yield* driver.script("CreateVolume", ...failing(7));
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust("60 seconds");
      // 1s, 2s, 4s, 8s, then capped at 10s.
      expect(yield* createStarts).toEqual([0, 1_000, 3_000, 7_000, 15_000, 25_000, 35_000, 45_000]);
      expect((yield* getRaw("persistentvolumeclaims", "default/a")).status.phase).toBe("Bound");
    }).pipe(Effect.provide(harness({ config: { retryIntervalMax: Duration.seconds(10) } }))),
  );

  it.scoped(
    "§5 each failure is a ProvisioningFailed event after a Provisioning event; success once",
    () =>
      Effect.gen(function* () {
        const driver = yield* MemoryDriver;
        const cluster = yield* withClassAndProvisioner;
        yield* driver.script("CreateVolume", ...failing(1));
        yield* cluster.create("persistentvolumeclaims", claim("a"));
        yield* TestClock.adjust("1 second");
        const events = yield* eventsOf("a");
        expect(events).toHaveLength(4);
        expect(events.slice(0, 3)).toEqual([
          'Normal Provisioning: External provisioner is provisioning volume for claim "default/a"',
          'Warning ProvisioningFailed: failed to provision volume with StorageClass "fast": rpc error: code = Internal desc = disk on fire',
          'Normal Provisioning: External provisioner is provisioning volume for claim "default/a"',
        ]);
        expect(events[3]).toMatch(
          /^Normal ProvisioningSucceeded: Successfully provisioned volume pvc-/,
        );
      }).pipe(Effect.provide(harness())),
  );

  it.scoped("§5 periodic resync never cuts a pending backoff short", () =>
    Effect.gen(function* () {
      const driver = yield* MemoryDriver;
      const cluster = yield* withClassAndProvisioner;
      yield* driver.script("CreateVolume", ...failing(3));
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust("2 minutes");
      // Resync every 3s would have run it at 3s, 6s, 9s...; the backoff of 10s, 20s, 40s holds.
      expect(yield* createStarts).toEqual([0, 10_000, 30_000, 70_000]);
    }).pipe(
      Effect.provide(
        harness({
          config: { resyncPeriod: Duration.seconds(3), retryIntervalStart: Duration.seconds(10) },
        }),
      ),
    ),
  );

  it.scoped("§5 changes to a claim while it backs off wait for the retry too", () =>
    Effect.gen(function* () {
      const driver = yield* MemoryDriver;
      const cluster = yield* withClassAndProvisioner;
      yield* driver.script("CreateVolume", ...failing(1));
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust("2 seconds");
      yield* cluster.patchMetadata("persistentvolumeclaims", "default/a", {
        annotations: { poke: "1" },
      });
      yield* TestClock.adjust("7 seconds");
      expect(yield* createStarts).toEqual([0]);
      yield* TestClock.adjust("1 second");
      expect(yield* createStarts).toEqual([0, 10_000]);
    }).pipe(Effect.provide(harness({ config: { retryIntervalStart: Duration.seconds(10) } }))),
  );

  it.scoped(
    "§5 success resets the backoff: the next failure waits --retry-interval-start again",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* startProvisioner;
        yield* driver.script("DeleteVolume", ...failing(2), Behaviour.real, ...failing(1));
        // Two claims in a row, each deleted after binding: the second deletion's backoff starts over.
        for (const name of ["a", "b"]) {
          yield* cluster.create("persistentvolumeclaims", claim(name));
          yield* TestClock.adjust(0);
        }
        yield* cluster.remove("persistentvolumeclaims", "default/a");
        yield* TestClock.adjust("3 seconds");
        const t = 3_000;
        yield* cluster.remove("persistentvolumeclaims", "default/b");
        yield* TestClock.adjust("1 second");
        const deletes = yield* driver.callsTo("DeleteVolume");
        expect(deletes.map((c) => c.startedAt)).toEqual([0, 1_000, 3_000, t, t + 1_000]);
      }).pipe(Effect.provide(harness())),
  );

  it.scoped("§5 at most --worker-threads CreateVolume calls at once", () =>
    Effect.gen(function* () {
      const driver = yield* MemoryDriver;
      const cluster = yield* withClassAndProvisioner;
      yield* driver.script(
        "CreateVolume",
        ...Array.from({ length: 5 }, () => Behaviour.delay(Duration.seconds(4))),
      );
      for (const name of ["a", "b", "c", "d", "e"])
        yield* cluster.create("persistentvolumeclaims", claim(name));
      yield* TestClock.adjust("20 seconds");
      const calls = yield* driver.callsTo("CreateVolume");
      expect(calls.map((c) => [c.startedAt, c.endedAt])).toEqual([
        [0, 4_000],
        [0, 4_000],
        [4_000, 8_000],
        [4_000, 8_000],
        [8_000, 12_000],
      ]);
    }).pipe(Effect.provide(harness({ config: { workerThreads: 2 } }))),
  );

  it.scoped(
    "§5 never two operations on one PVC at once; events meanwhile coalesce into one more run",
    () =>
      Effect.gen(function* () {
        const driver = yield* MemoryDriver;
        const cluster = yield* withClassAndProvisioner;
        yield* driver.script("CreateVolume", Behaviour.delay(Duration.seconds(5)));
        yield* cluster.create("persistentvolumeclaims", claim("a"));
        for (let i = 0; i < 10; i++) {
          yield* TestClock.adjust("100 millis");
          yield* cluster.patchMetadata("persistentvolumeclaims", "default/a", {
            annotations: { poke: String(i) },
          });
        }
        yield* TestClock.adjust("10 seconds");
        const calls = yield* driver.callsTo("CreateVolume");
        expect(calls).toHaveLength(1);
        expect((yield* eventsOf("a")).filter((e) => e.includes("Provisioning:"))).toHaveLength(1);
      }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§5 ResourceExhausted with topology and a selected node reschedules: the annotation is removed",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create(
          "storageclasses",
          storageClass("late", { volumeBindingMode: "WaitForFirstConsumer" }),
        );
        yield* cluster.create("nodes", node("n1", { zone: "z1" }));
        yield* cluster.create("csinodes", csiNode("n1", ["zone"]));
        yield* startProvisioner;
        yield* driver.script("CreateVolume", Behaviour.fail("ResourceExhausted", "pool full"));
        yield* cluster.create(
          "persistentvolumeclaims",
          claim("a", {
            storageClassName: "late",
            annotations: { "volume.kubernetes.io/selected-node": "n1" },
          }),
        );
        yield* TestClock.adjust("1 minute");
        const pvc = yield* getRaw("persistentvolumeclaims", "default/a");
        expect(pvc.metadata.annotations["volume.kubernetes.io/selected-node"]).toBeUndefined();
        expect(yield* createStarts).toEqual([0]);
        expect((yield* eventsOf("a"))[1]).toBe(
          'Warning ProvisioningFailed: failed to provision volume with StorageClass "late": rpc error: code = ResourceExhausted desc = pool full',
        );
      }).pipe(
        Effect.provide(
          harness({
            driver: {
              pluginCapabilities: ["CONTROLLER_SERVICE", "VOLUME_ACCESSIBILITY_CONSTRAINTS"],
            },
          }),
        ),
      ),
  );

  it.scoped("§5 ResourceExhausted without topology is final for the attempt and retried", () =>
    Effect.gen(function* () {
      const driver = yield* MemoryDriver;
      const cluster = yield* withClassAndProvisioner;
      yield* driver.script("CreateVolume", Behaviour.fail("ResourceExhausted", "pool full"));
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust("1 second");
      expect(yield* createStarts).toEqual([0, 1_000]);
    }).pipe(Effect.provide(harness())),
  );

  it.scoped("§5 a selected node that does not exist is given back to the scheduler", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create(
        "storageclasses",
        storageClass("late", { volumeBindingMode: "WaitForFirstConsumer" }),
      );
      yield* startProvisioner;
      yield* cluster.create(
        "persistentvolumeclaims",
        claim("a", {
          storageClassName: "late",
          annotations: { "volume.kubernetes.io/selected-node": "gone" },
        }),
      );
      yield* TestClock.adjust(0);
      const pvc = yield* getRaw("persistentvolumeclaims", "default/a");
      expect(pvc.metadata.annotations["volume.kubernetes.io/selected-node"]).toBeUndefined();
      expect(yield* createStarts).toEqual([]);
    }).pipe(Effect.provide(harness())),
  );

  for (const code of ["DeadlineExceeded", "Unavailable", "Canceled", "Aborted"] as const) {
    it.scoped(
      `§5 ${code} is in background: after the PVC is deleted CreateVolume keeps being retried, then the volume is deleted`,
      () =>
        Effect.gen(function* () {
          const driver = yield* MemoryDriver;
          const cluster = yield* withClassAndProvisioner;
          yield* driver.script(
            "CreateVolume",
            Behaviour.fail(code, "busy"),
            Behaviour.fail(code, "busy"),
          );
          yield* cluster.create("persistentvolumeclaims", claim("a"));
          yield* TestClock.adjust(0);
          yield* cluster.remove("persistentvolumeclaims", "default/a");
          yield* TestClock.adjust("3 seconds");
          const creates = yield* driver.callsTo("CreateVolume");
          expect(creates.map((c) => c.startedAt)).toEqual([0, 1_000, 3_000]);
          expect(
            new Set(
              creates.map((c) =>
                JSON.stringify(c.request, (_, v) => (typeof v === "bigint" ? String(v) : v)),
              ),
            ).size,
          ).toBe(1);
          expect((yield* driver.callsTo("DeleteVolume")).map((c) => c.request.volume_id)).toEqual([
            "vol-1",
          ]);
          expect((yield* driver.volumes).size).toBe(0);
          expect(yield* getRaw("persistentvolumeclaims", "default/a")).toBeUndefined();
        }).pipe(Effect.provide(harness())),
    );
  }

  it.scoped(
    "§5 a final error ends the in-background state: a deleted PVC is released without more calls",
    () =>
      Effect.gen(function* () {
        const driver = yield* MemoryDriver;
        const cluster = yield* withClassAndProvisioner;
        yield* driver.script("CreateVolume", Behaviour.fail("InvalidArgument", "bad parameters"));
        yield* cluster.create("persistentvolumeclaims", claim("a"));
        yield* TestClock.adjust(0);
        yield* cluster.remove("persistentvolumeclaims", "default/a");
        yield* TestClock.adjust("1 minute");
        expect(yield* createStarts).toEqual([0]);
        expect(yield* getRaw("persistentvolumeclaims", "default/a")).toBeUndefined();
      }).pipe(Effect.provide(harness())),
  );
});
