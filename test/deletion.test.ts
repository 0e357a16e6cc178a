import { describe, expect, it } from "@effect/vitest";
import { Effect, Fiber, Layer, TestClock } from "effect";
import { Behaviour, defaultControllerCapabilities, MemoryDriver } from "../src/layers/CsiMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { claim, driverName, secret, storageClass } from "./support/Fixtures.js";
import { eventsOf, getRaw, harness, laggyWatches, startProvisioner } from "./support/Harness.js";

const deleteCalls = Effect.flatMap(MemoryDriver, (d) => d.callsTo("DeleteVolume"));

/** Provisions claim `a`, binds it, deletes the claim; returns the PV name. */
const provisionThenDeleteClaim = (classExtra: Parameters<typeof storageClass>[1] = {}) =>
  Effect.gen(function* () {
    const cluster = yield* MemoryCluster;
    yield* cluster.create("storageclasses", storageClass("fast", classExtra));
    yield* startProvisioner;
    yield* cluster.create("persistentvolumeclaims", claim("a"));
    yield* TestClock.adjust(0);
    const pvName = (yield* getRaw("persistentvolumeclaims", "default/a")).spec.volumeName as string;
    yield* cluster.remove("persistentvolumeclaims", "default/a");
    yield* TestClock.adjust(0);
    return pvName;
  });

describe("SPEC §6 deletion", () => {
  it.scoped(
    "§6 a Released PV with reclaim policy Delete: DeleteVolume(volumeHandle), then the PV is gone",
    () =>
      Effect.gen(function* () {
        const pvName = yield* provisionThenDeleteClaim();
        expect((yield* deleteCalls).map((c) => c.request)).toEqual([
          { volume_id: "vol-1", secrets: {} },
        ]);
        expect(yield* getRaw("persistentvolumes", pvName)).toBeUndefined();
        expect((yield* Effect.flatMap(MemoryDriver, (d) => d.volumes)).size).toBe(0);
      }).pipe(Effect.provide(harness())),
  );

  it.scoped("§6 Retain: no DeleteVolume, the PV stays Released", () =>
    Effect.gen(function* () {
      const pvName = yield* provisionThenDeleteClaim({ reclaimPolicy: "Retain" });
      yield* TestClock.adjust("1 hour");
      expect(yield* deleteCalls).toEqual([]);
      expect((yield* getRaw("persistentvolumes", pvName)).status.phase).toBe("Released");
    }).pipe(Effect.provide(harness())),
  );

  it.scoped("§6 Retain or Recycle PVs lose our finalizer and are never deleted by us", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* startProvisioner;
      yield* cluster.create("persistentvolumes", {
        metadata: {
          name: "kept",
          annotations: { "pv.kubernetes.io/provisioned-by": driverName },
          finalizers: ["external-provisioner.volume.kubernetes.io/finalizer"],
        },
        spec: {
          persistentVolumeReclaimPolicy: "Retain",
          capacity: { storage: "1Gi" },
          csi: { driver: driverName, volumeHandle: "h" },
        },
      });
      yield* TestClock.adjust(0);
      expect((yield* getRaw("persistentvolumes", "kept")).metadata.finalizers ?? []).toEqual([]);
      expect(yield* deleteCalls).toEqual([]);
    }).pipe(Effect.provide(harness())),
  );

  it.scoped("§6 PVs provisioned by someone else are left alone", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* startProvisioner;
      yield* cluster.create("persistentvolumes", {
        metadata: {
          name: "theirs",
          annotations: { "pv.kubernetes.io/provisioned-by": "other.example.com" },
        },
        spec: {
          persistentVolumeReclaimPolicy: "Delete",
          capacity: { storage: "1Gi" },
          claimRef: { namespace: "default", name: "gone", uid: "u-1" },
          csi: { driver: "other.example.com", volumeHandle: "h" },
        },
      });
      yield* TestClock.adjust("1 minute");
      expect((yield* getRaw("persistentvolumes", "theirs")).status.phase).toBe("Released");
      expect(yield* deleteCalls).toEqual([]);
    }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§6 a failed DeleteVolume is a VolumeFailedDelete event on the PV and is retried with backoff",
    () =>
      Effect.gen(function* () {
        const driver = yield* MemoryDriver;
        yield* driver.script(
          "DeleteVolume",
          Behaviour.fail("FailedPrecondition", "volume has snapshots"),
        );
        const pvName = yield* provisionThenDeleteClaim();
        expect(yield* eventsOf(pvName)).toEqual([
          "Warning VolumeFailedDelete: rpc error: code = FailedPrecondition desc = volume has snapshots",
        ]);
        yield* TestClock.adjust("1 second");
        expect((yield* deleteCalls).map((c) => c.startedAt)).toEqual([0, 1_000]);
        expect(yield* getRaw("persistentvolumes", pvName)).toBeUndefined();
      }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§6 with PUBLISH_UNPUBLISH_VOLUME deletion waits while a VolumeAttachment names the PV",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const pvName = yield* Effect.gen(function* () {
          yield* cluster.create("storageclasses", storageClass("fast"));
          yield* startProvisioner;
          yield* cluster.create("persistentvolumeclaims", claim("a"));
          yield* TestClock.adjust(0);
          const name = (yield* getRaw("persistentvolumeclaims", "default/a")).spec
            .volumeName as string;
          yield* cluster.create("volumeattachments", {
            metadata: { name: "va-1" },
            spec: { attacher: driverName, nodeName: "n1", source: { persistentVolumeName: name } },
          });
          yield* cluster.remove("persistentvolumeclaims", "default/a");
          yield* TestClock.adjust(0);
          return name;
        });
        expect(yield* eventsOf(pvName)).toEqual([
          `Warning VolumeFailedDelete: persistentvolume ${pvName} is still attached to node n1`,
        ]);
        expect(yield* deleteCalls).toEqual([]);
        yield* cluster.remove("volumeattachments", "va-1");
        yield* TestClock.adjust("1 second");
        expect((yield* deleteCalls).map((c) => c.startedAt)).toEqual([1_000]);
      }).pipe(
        Effect.provide(
          harness({
            driver: {
              controllerCapabilities: [
                ...defaultControllerCapabilities,
                "PUBLISH_UNPUBLISH_VOLUME",
              ],
            },
          }),
        ),
      ),
  );

  it.scoped("§6 deletion secrets come from the PV's annotations", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("secrets", secret("vault", "creds", { key: "k" }));
      yield* provisionThenDeleteClaim({
        parameters: {
          "csi.storage.k8s.io/provisioner-secret-name": "creds",
          "csi.storage.k8s.io/provisioner-secret-namespace": "vault",
        },
      });
      expect((yield* deleteCalls).map((c) => c.request.secrets)).toEqual([{ key: "k" }]);
    }).pipe(Effect.provide(harness())),
  );

  it.scoped("§6 without the annotations the secrets are resolved again from the StorageClass", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("secrets", secret("default", "a-creds", { key: "from-class" }));
      yield* cluster.create(
        "storageclasses",
        storageClass("fast", {
          parameters: {
            "csi.storage.k8s.io/provisioner-secret-name": "${pvc.name}-creds",
            "csi.storage.k8s.io/provisioner-secret-namespace": "${pvc.namespace}",
          },
        }),
      );
      yield* startProvisioner;
      yield* cluster.create("persistentvolumes", {
        metadata: { name: "old", annotations: { "pv.kubernetes.io/provisioned-by": driverName } },
        spec: {
          persistentVolumeReclaimPolicy: "Delete",
          storageClassName: "fast",
          capacity: { storage: "1Gi" },
          claimRef: { namespace: "default", name: "a", uid: "u-1" },
          csi: { driver: driverName, volumeHandle: "legacy-1" },
        },
      });
      yield* TestClock.adjust(0);
      expect((yield* deleteCalls).map((c) => c.request)).toEqual([
        { volume_id: "legacy-1", secrets: { key: "from-class" } },
      ]);
    }).pipe(Effect.provide(harness())),
  );

  it.scoped("§6 a PV being deleted without our finalizer is not ours to delete any more", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* startProvisioner;
      yield* cluster.create("persistentvolumes", {
        metadata: {
          name: "going",
          annotations: { "pv.kubernetes.io/provisioned-by": driverName },
          finalizers: ["kubernetes.io/pv-protection"],
        },
        spec: {
          persistentVolumeReclaimPolicy: "Delete",
          capacity: { storage: "1Gi" },
          claimRef: { namespace: "default", name: "gone", uid: "u-1" },
          csi: { driver: driverName, volumeHandle: "h" },
        },
      });
      yield* cluster.remove("persistentvolumes", "going");
      yield* TestClock.adjust("1 minute");
      expect(yield* deleteCalls).toEqual([]);
    }).pipe(Effect.provide(harness())),
  );
});

describe("SPEC §6 with caches that lag behind our own writes", () => {
  const lagging = Layer.provideMerge(laggyWatches("300 millis"), harness());

  /** The "fast" class, then the provisioner, started once its lagging caches have synced. */
  const startLagging = Effect.gen(function* () {
    const cluster = yield* MemoryCluster;
    yield* cluster.create("storageclasses", storageClass("fast"));
    const starting = yield* Effect.forkScoped(startProvisioner);
    yield* TestClock.adjust("3 seconds");
    return { cluster, controller: yield* Fiber.join(starting) };
  });

  it.scoped("§6 DeleteVolume exactly once although our own writes re-queue a stale PV", () =>
    Effect.gen(function* () {
      const { cluster } = yield* startLagging;
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust("10 seconds");
      const pvName = (yield* getRaw("persistentvolumeclaims", "default/a")).spec
        .volumeName as string;
      yield* cluster.remove("persistentvolumeclaims", "default/a");
      yield* TestClock.adjust("30 seconds");
      expect(yield* getRaw("persistentvolumes", pvName)).toBeUndefined();
      expect((yield* deleteCalls).length).toBe(1);
    }).pipe(Effect.provide(lagging)),
  );

  it.scoped(
    "forgets each PV it deleted once the cache shows it gone: nothing kept per deletion",
    () =>
      Effect.gen(function* () {
        const { cluster, controller } = yield* startLagging;
        for (const name of ["a", "b", "c"]) {
          yield* cluster.create("persistentvolumeclaims", claim(name));
          yield* TestClock.adjust("10 seconds");
          yield* cluster.remove("persistentvolumeclaims", `default/${name}`);
          yield* TestClock.adjust("30 seconds");
        }
        expect((yield* deleteCalls).length).toBe(3);
        expect(yield* cluster.list("persistentvolumes")).toEqual([]);
        expect(yield* controller.guardedDeletions).toBe(0);
      }).pipe(Effect.provide(lagging)),
  );
});
