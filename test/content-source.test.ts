import { describe, expect, it } from "@effect/vitest";
import { Duration, Effect, TestClock } from "effect";
import { Behaviour, defaultControllerCapabilities, MemoryDriver } from "../src/layers/CsiMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { claim, driverName, storageClass } from "./support/Fixtures.js";
import { eventsOf, getRaw, harness, startProvisioner } from "./support/Harness.js";

const restoreAndClone = harness({
  driver: {
    controllerCapabilities: [
      ...defaultControllerCapabilities,
      "CREATE_DELETE_SNAPSHOT",
      "CLONE_VOLUME",
    ],
    snapshots: { "snap-handle-1": 1n << 30n },
  },
});

const snapshotObjects = (ready: boolean) =>
  Effect.gen(function* () {
    const cluster = yield* MemoryCluster;
    const snapshot = yield* cluster.create("volumesnapshots", {
      metadata: { name: "snap", namespace: "default" },
      status: {
        boundVolumeSnapshotContentName: "content-1",
        readyToUse: ready,
        restoreSize: "1Gi",
      },
    });
    yield* cluster.create("volumesnapshotcontents", {
      metadata: { name: "content-1" },
      spec: {
        driver: driverName,
        volumeSnapshotRef: {
          name: "snap",
          namespace: "default",
          uid: (snapshot.metadata as { uid: string }).uid,
        },
      },
      status: { snapshotHandle: "snap-handle-1" },
    });
  });

const snapshotSource = {
  apiGroup: "snapshot.storage.k8s.io",
  kind: "VolumeSnapshot",
  name: "snap",
};
const createRequests = Effect.flatMap(MemoryDriver, (d) => d.callsTo("CreateVolume")).pipe(
  Effect.map((calls) => calls.map((c) => c.request)),
);

describe("SPEC §3 volume_content_source", () => {
  it.scoped("§3 a ready VolumeSnapshot is restored by its snapshot handle", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* snapshotObjects(true);
      yield* startProvisioner;
      yield* cluster.create(
        "persistentvolumeclaims",
        claim("a", { size: "1Gi", dataSource: snapshotSource }),
      );
      yield* TestClock.adjust(0);
      const [request] = yield* createRequests;
      expect(request?.volume_content_source).toEqual({
        snapshot: { snapshot_id: "snap-handle-1" },
      });
      expect((yield* getRaw("persistentvolumeclaims", "default/a")).status.phase).toBe("Bound");
    }).pipe(Effect.provide(restoreAndClone)),
  );

  it.scoped(
    "§3 a snapshot that is not ready yet is retried; one larger than the claim is refused",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* snapshotObjects(false);
        yield* startProvisioner;
        yield* cluster.create(
          "persistentvolumeclaims",
          claim("a", { size: "1Gi", dataSource: snapshotSource }),
        );
        yield* cluster.create(
          "persistentvolumeclaims",
          claim("small", { size: "1Mi", dataSource: snapshotSource }),
        );
        yield* TestClock.adjust(0);
        expect((yield* eventsOf("a"))[1]).toBe(
          'Warning ProvisioningFailed: failed to provision volume with StorageClass "fast": error getting handle for DataSource Type VolumeSnapshot by Name snap: snapshot snap is not Ready',
        );
        const snapshot = yield* getRaw("volumesnapshots", "default/snap");
        snapshot.status.readyToUse = true;
        yield* cluster.update("volumesnapshots", snapshot);
        yield* TestClock.adjust("1 second");
        expect((yield* getRaw("persistentvolumeclaims", "default/a")).status.phase).toBe("Bound");
        expect((yield* eventsOf("small")).at(-1)).toContain(
          "requested volume size 1048576 is less than the size 1073741824 for the source snapshot snap",
        );
      }).pipe(Effect.provide(restoreAndClone)),
  );

  it.scoped("§3 restoring needs CREATE_DELETE_SNAPSHOT", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* snapshotObjects(true);
      yield* startProvisioner;
      yield* cluster.create("persistentvolumeclaims", claim("a", { dataSource: snapshotSource }));
      yield* TestClock.adjust(0);
      expect((yield* eventsOf("a"))[1]).toContain(
        "CSI driver does not support snapshot restore: controller CREATE_DELETE_SNAPSHOT capability is not reported",
      );
      expect(yield* createRequests).toEqual([]);
    }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§3 a clone copies a bound source PVC of the same class; the source is protected meanwhile",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* startProvisioner;
        yield* cluster.create("persistentvolumeclaims", claim("source", { size: "1Gi" }));
        yield* TestClock.adjust(0);
        yield* driver.script("CreateVolume", Behaviour.delay(Duration.seconds(5)));
        yield* cluster.create(
          "persistentvolumeclaims",
          claim("copy", {
            size: "2Gi",
            dataSource: { kind: "PersistentVolumeClaim", name: "source" },
          }),
        );
        yield* TestClock.adjust("1 second");
        const requests = yield* createRequests;
        expect(requests[1]?.volume_content_source).toEqual({ volume: { volume_id: "vol-1" } });
        const protection = "provisioner.storage.kubernetes.io/cloning-protection";
        expect(
          (yield* getRaw("persistentvolumeclaims", "default/source")).metadata.finalizers,
        ).toEqual([protection]);

        // The source is deleted while its clone is being made: the finalizer holds it until the clone is done.
        yield* cluster.remove("persistentvolumeclaims", "default/source");
        yield* TestClock.adjust("1 second");
        expect(
          (yield* getRaw("persistentvolumeclaims", "default/source")).metadata.finalizers,
        ).toEqual([protection]);
        yield* TestClock.adjust("10 seconds");
        expect((yield* getRaw("persistentvolumeclaims", "default/copy")).status.phase).toBe(
          "Bound",
        );
        expect(yield* getRaw("persistentvolumeclaims", "default/source")).toBeUndefined();
      }).pipe(Effect.provide(restoreAndClone)),
  );

  it.scoped("§3 a clone source must be bound and no larger than the new claim", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* startProvisioner;
      yield* cluster.create("persistentvolumeclaims", claim("big", { size: "5Gi" }));
      yield* TestClock.adjust(0);
      yield* cluster.create(
        "persistentvolumeclaims",
        claim("copy", { size: "1Gi", dataSource: { kind: "PersistentVolumeClaim", name: "big" } }),
      );
      yield* cluster.create(
        "persistentvolumeclaims",
        claim("orphan", { dataSource: { kind: "PersistentVolumeClaim", name: "missing" } }),
      );
      yield* TestClock.adjust(0);
      expect((yield* eventsOf("copy"))[1]).toContain(
        "error, new PVC request must be greater than or equal in size to the specified PVC data source, requested 1073741824 but source is 5368709120",
      );
      expect((yield* eventsOf("orphan"))[1]).toContain(
        'error getting PVC missing (namespace "default") from api server: persistentvolumeclaim "missing" not found',
      );
    }).pipe(Effect.provide(restoreAndClone)),
  );
});
