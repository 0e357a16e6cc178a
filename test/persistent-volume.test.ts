import { describe, expect, it } from "@effect/vitest";
import { Effect, TestClock } from "effect";
import { Behaviour, MemoryDriver } from "../src/layers/CsiMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { claim, driverName, storageClass } from "./support/Fixtures.js";
import { eventsOf, getRaw, harness, startProvisioner } from "./support/Harness.js";

const respondWithCapacity = (capacityBytes: string) =>
  Behaviour.respond({
    volume: {
      volume_id: "vol-x",
      capacity_bytes: capacityBytes,
      volume_context: {},
      accessible_topology: [],
    },
  });

/** Provisions claim `a` of class `fast` and returns the PV created for it. */
const provisionOne = (
  options: {
    claim?: Parameters<typeof claim>[1];
    classExtra?: Parameters<typeof storageClass>[1];
  } = {},
) =>
  Effect.gen(function* () {
    const cluster = yield* MemoryCluster;
    yield* cluster.create("storageclasses", storageClass("fast", options.classExtra));
    yield* startProvisioner;
    const created = yield* cluster.create("persistentvolumeclaims", claim("a", options.claim));
    yield* TestClock.adjust(0);
    const uid = (created.metadata as { uid: string }).uid;
    return { uid, pv: yield* getRaw("persistentvolumes", `pvc-${uid}`) };
  });

describe("SPEC §4 the PersistentVolume", () => {
  it.scoped(
    "§4 the whole PV: name, capacity, csi source, attributes with identity, class fields, claimRef, finalizer",
    () =>
      Effect.gen(function* () {
        const { uid, pv } = yield* provisionOne({
          claim: { size: "2Gi", accessModes: ["ReadWriteOnce", "ReadOnlyMany"] },
          classExtra: {
            mountOptions: ["noatime"],
            parameters: { "csi.storage.k8s.io/fstype": "ext4" },
          },
        });
        const pvc = yield* getRaw("persistentvolumeclaims", "default/a");
        expect(pv.metadata.name).toBe(`pvc-${uid}`);
        expect(pv.metadata.annotations).toEqual({
          "pv.kubernetes.io/provisioned-by": driverName,
          "volume.kubernetes.io/provisioner-deletion-secret-name": "",
          "volume.kubernetes.io/provisioner-deletion-secret-namespace": "",
        });
        expect(pv.metadata.finalizers).toEqual([
          "external-provisioner.volume.kubernetes.io/finalizer",
        ]);
        expect(pv.spec.capacity).toEqual({ storage: "2Gi" });
        expect(pv.spec.accessModes).toEqual(["ReadWriteOnce", "ReadOnlyMany"]);
        expect(pv.spec.mountOptions).toEqual(["noatime"]);
        expect(pv.spec.persistentVolumeReclaimPolicy).toBe("Delete");
        expect(pv.spec.storageClassName).toBe("fast");
        expect(pv.spec.csi.driver).toBe(driverName);
        expect(pv.spec.csi.volumeHandle).toBe("vol-1");
        expect(pv.spec.csi.fsType).toBe("ext4");
        expect(pv.spec.csi.readOnly).toBeUndefined();
        expect(Object.keys(pv.spec.csi.volumeAttributes)).toEqual([
          "storage.kubernetes.io/csiProvisionerIdentity",
        ]);
        expect(
          pv.spec.csi.volumeAttributes["storage.kubernetes.io/csiProvisionerIdentity"],
        ).toMatch(/^\d+-\d+-memory\.csi\.example\.com$/);
        expect(pv.spec.claimRef).toMatchObject({
          kind: "PersistentVolumeClaim",
          name: "a",
          namespace: "default",
          uid,
        });
        expect(pv.spec.claimRef.resourceVersion).toBeDefined();
        expect(pvc.spec.volumeName).toBe(pv.metadata.name);
      }).pipe(Effect.provide(harness())),
  );

  it.scoped("§4 Retain: no finalizer; Block: volumeMode on the PV and no fsType", () =>
    Effect.gen(function* () {
      const { pv } = yield* provisionOne({
        claim: { volumeMode: "Block" },
        classExtra: { reclaimPolicy: "Retain" },
      });
      expect(pv.metadata.finalizers).toBeUndefined();
      expect(pv.spec.persistentVolumeReclaimPolicy).toBe("Retain");
      expect(pv.spec.volumeMode).toBe("Block");
      expect(pv.spec.csi.fsType).toBeUndefined();
    }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§4 readOnly only for a single ReadOnlyMany capability with --controller-publish-readonly",
    () =>
      Effect.gen(function* () {
        const { pv } = yield* provisionOne({ claim: { accessModes: ["ReadOnlyMany"] } });
        expect(pv.spec.csi.readOnly).toBe(true);
      }).pipe(Effect.provide(harness({ config: { controllerPublishReadonly: true } }))),
  );

  it.scoped(
    "§4 volume_context is copied into volumeAttributes; accessible_topology becomes nodeAffinity",
    () =>
      Effect.gen(function* () {
        const { pv } = yield* provisionOne();
        expect(pv.spec.csi.volumeAttributes.pool).toBe("blue");
        expect(pv.spec.nodeAffinity).toEqual({
          required: {
            nodeSelectorTerms: [
              {
                matchExpressions: [
                  { key: "topology.example.com/zone", operator: "In", values: ["z1"] },
                ],
              },
            ],
          },
        });
      }).pipe(
        Effect.provide(
          harness({
            driver: {
              pluginCapabilities: ["CONTROLLER_SERVICE", "VOLUME_ACCESSIBILITY_CONSTRAINTS"],
              volumeContext: { pool: "blue" },
              accessibleTopology: [{ segments: { "topology.example.com/zone": "z1" } }],
            },
            config: { immediateTopology: false },
          }),
        ),
      ),
  );

  it.scoped(
    "§4 capacity_bytes as a binary-SI quantity: 102400 → 100Ki, 1000 → 1000, 0 → the requested size",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* startProvisioner;
        yield* driver.script(
          "CreateVolume",
          respondWithCapacity("102400"),
          respondWithCapacity("1000"),
          respondWithCapacity("0"),
        );
        for (const [name, size] of [
          ["a", "100Ki"],
          ["b", "1000"],
          ["c", "3Gi"],
        ] as const) {
          yield* cluster.create(
            "persistentvolumeclaims",
            claim(name, { size: name === "c" ? "3Gi" : "1000" }),
          );
          yield* TestClock.adjust(0);
          const pvc = yield* getRaw("persistentvolumeclaims", `default/${name}`);
          const pv = yield* getRaw("persistentvolumes", pvc.spec.volumeName);
          expect(pv.spec.capacity.storage).toBe(size);
        }
      }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§4 a volume smaller than requested is deleted and the attempt retried as in-background",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* startProvisioner;
        yield* driver.script("CreateVolume", respondWithCapacity("1024"));
        yield* cluster.create("persistentvolumeclaims", claim("a", { size: "1Gi" }));
        yield* TestClock.adjust(0);
        const deletes = yield* driver.callsTo("DeleteVolume");
        expect(deletes.map((c) => c.request.volume_id)).toEqual(["vol-x"]);
        expect((yield* eventsOf("a"))[1]).toBe(
          'Warning ProvisioningFailed: failed to provision volume with StorageClass "fast": created volume capacity 1024 less than requested capacity 1073741824',
        );
        yield* TestClock.adjust("1 second");
        const pvc = yield* getRaw("persistentvolumeclaims", "default/a");
        expect(pvc.status.phase).toBe("Bound");
        expect((yield* driver.callsTo("CreateVolume")).map((c) => c.startedAt)).toEqual([0, 1_000]);
      }).pipe(Effect.provide(harness())),
  );

  it.scoped("§4 an existing PV (AlreadyExists) counts as success", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* startProvisioner;
      yield* cluster.failNext({
        verb: "create",
        resource: "persistentvolumes",
        reason: "AlreadyExists",
      });
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust(0);
      expect((yield* eventsOf("a"))[1]).toMatch(
        /^Normal ProvisioningSucceeded: Successfully provisioned volume pvc-/,
      );
      // No retry: the attempt is done.
      yield* TestClock.adjust("1 minute");
      expect(yield* Effect.flatMap(MemoryDriver, (d) => d.callCount("CreateVolume"))).toBe(1);
    }).pipe(Effect.provide(harness())),
  );

  it.scoped("§4 a failed PV create is retried with backoff and keeps the same volume", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const driver = yield* MemoryDriver;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* startProvisioner;
      yield* cluster.failNext({
        verb: "create",
        resource: "persistentvolumes",
        reason: "ServerError",
        times: 2,
      });
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust("3 seconds");
      const creates = yield* driver.callsTo("CreateVolume");
      expect(creates.map((c) => c.startedAt)).toEqual([0, 1_000, 3_000]);
      expect(new Set(creates.map((c) => c.request.name)).size).toBe(1);
      expect((yield* driver.volumes).size).toBe(1);
      const pvc = yield* getRaw("persistentvolumeclaims", "default/a");
      expect(pvc.spec.volumeName).toBe(creates[0]?.request.name);
      expect(pvc.status.phase).toBe("Bound");
    }).pipe(Effect.provide(harness())),
  );
});
