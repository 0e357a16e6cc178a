import { describe, expect, it } from "@effect/vitest";
import { Effect, TestClock } from "effect";
import { MemoryDriver } from "../src/layers/CsiMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { claim, driverName, node, storageClass } from "./support/Fixtures.js";
import { eventsOf, getRaw, harness, startProvisioner } from "./support/Harness.js";

const createCalls = Effect.flatMap(MemoryDriver, (d) => d.callCount("CreateVolume"));

describe("SPEC §2 which PVCs are provisioned", () => {
  it.scoped("§2 the GA provisioner annotation naming the driver selects the claim", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* startProvisioner;
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust(0);
      const pvc = yield* getRaw("persistentvolumeclaims", "default/a");
      expect(pvc.metadata.annotations["volume.kubernetes.io/storage-provisioner"]).toBe(driverName);
      expect(pvc.status.phase).toBe("Bound");
    }).pipe(Effect.provide(harness())),
  );

  it.scoped("§2 with only the beta annotation (Kubernetes 1.20–1.22) the beta key is read", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* startProvisioner;
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust(0);
      const pvc = yield* getRaw("persistentvolumeclaims", "default/a");
      expect(pvc.metadata.annotations["volume.kubernetes.io/storage-provisioner"]).toBeUndefined();
      expect(pvc.status.phase).toBe("Bound");
    }).pipe(Effect.provide(harness({ cluster: { legacyProvisionerAnnotation: true } }))),
  );

  it.scoped(
    "§2 the beta key is ignored when the GA key is present and names another provisioner",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* startProvisioner;
        yield* cluster.create(
          "persistentvolumeclaims",
          claim("a", {
            annotations: {
              "volume.kubernetes.io/storage-provisioner": "other.example.com",
              "volume.beta.kubernetes.io/storage-provisioner": driverName,
            },
          }),
        );
        yield* TestClock.adjust("10 seconds");
        expect(yield* createCalls).toBe(0);
        expect(yield* eventsOf()).toEqual([]);
      }).pipe(Effect.provide(harness({ cluster: { pvController: false } }))),
  );

  it.scoped("§2 pv.kubernetes.io/migrated-to naming the driver selects the claim", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* startProvisioner;
      yield* cluster.create(
        "persistentvolumeclaims",
        claim("a", {
          annotations: {
            "volume.kubernetes.io/storage-provisioner": "kubernetes.io/in-tree",
            "pv.kubernetes.io/migrated-to": driverName,
          },
        }),
      );
      yield* TestClock.adjust(0);
      expect(yield* createCalls).toBe(1);
    }).pipe(Effect.provide(harness({ cluster: { pvController: false } }))),
  );

  it.scoped("§2 a claim that already names a volume is left alone", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* startProvisioner;
      const bound = claim("a", {
        annotations: { "volume.kubernetes.io/storage-provisioner": driverName },
      });
      (bound.spec as Record<string, unknown>).volumeName = "static-pv";
      yield* cluster.create("persistentvolumeclaims", bound);
      yield* TestClock.adjust(0);
      expect(yield* createCalls).toBe(0);
    }).pipe(Effect.provide(harness({ cluster: { pvController: false } }))),
  );

  it.scoped("§2 a StorageClass of another provisioner is not ours", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create(
        "storageclasses",
        storageClass("fast", { provisioner: "other.example.com" }),
      );
      yield* startProvisioner;
      yield* cluster.create(
        "persistentvolumeclaims",
        claim("a", { annotations: { "volume.kubernetes.io/storage-provisioner": driverName } }),
      );
      yield* TestClock.adjust("10 seconds");
      expect(yield* createCalls).toBe(0);
    }).pipe(Effect.provide(harness({ cluster: { pvController: false } }))),
  );

  it.scoped(
    "§2 a missing StorageClass is retried with backoff and the claim is provisioned once it appears",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        yield* startProvisioner;
        yield* cluster.create(
          "persistentvolumeclaims",
          claim("a", { annotations: { "volume.kubernetes.io/storage-provisioner": driverName } }),
        );
        // Attempts at 0s, 1s, 3s, 7s: the class appears at 4s, so the 7s attempt provisions.
        yield* TestClock.adjust("4 seconds");
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* TestClock.adjust("2900 millis");
        expect(yield* createCalls).toBe(0);
        yield* TestClock.adjust("100 millis");
        const calls = yield* Effect.flatMap(MemoryDriver, (d) => d.callsTo("CreateVolume"));
        expect(calls.map((c) => c.startedAt)).toEqual([7_000]);
        // No event while the class is missing, as upstream.
        expect((yield* eventsOf("a"))[0]).toContain("Provisioning");
        expect(yield* eventsOf("a")).toHaveLength(2);
      }).pipe(Effect.provide(harness({ cluster: { pvController: false } }))),
  );

  it.scoped("§2 WaitForFirstConsumer waits silently for volume.kubernetes.io/selected-node", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create(
        "storageclasses",
        storageClass("late", { volumeBindingMode: "WaitForFirstConsumer" }),
      );
      yield* cluster.create("nodes", node("node-1", {}));
      yield* startProvisioner;
      yield* cluster.create(
        "persistentvolumeclaims",
        claim("a", {
          storageClassName: "late",
          annotations: { "volume.kubernetes.io/storage-provisioner": driverName },
        }),
      );
      yield* TestClock.adjust("1 minute");
      expect(yield* createCalls).toBe(0);
      expect(yield* eventsOf()).toEqual([]);
      yield* cluster.patchMetadata("persistentvolumeclaims", "default/a", {
        annotations: { "volume.kubernetes.io/selected-node": "node-1" },
      });
      yield* TestClock.adjust(0);
      expect(yield* createCalls).toBe(1);
    }).pipe(Effect.provide(harness({ cluster: { pvController: false } }))),
  );

  it.scoped(
    "§2 a PV with the claim's volume name already existing stops provisioning without an event",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* cluster.create("persistentvolumes", {
          metadata: { name: "pvc-0000-1111" },
          spec: { capacity: { storage: "1Gi" }, csi: { driver: driverName, volumeHandle: "old" } },
        });
        yield* startProvisioner;
        yield* cluster.create(
          "persistentvolumeclaims",
          claim("a", {
            uid: "0000-1111",
            annotations: { "volume.kubernetes.io/storage-provisioner": driverName },
          }),
        );
        yield* TestClock.adjust("10 seconds");
        expect(yield* createCalls).toBe(0);
        expect(yield* eventsOf("a")).toEqual([]);
      }).pipe(Effect.provide(harness({ cluster: { pvController: false } }))),
  );

  it.scoped("§2 a claim selector is a final error: claim Selector is not supported", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* startProvisioner;
      yield* cluster.create(
        "persistentvolumeclaims",
        claim("a", { selector: { matchLabels: { tier: "db" } } }),
      );
      yield* TestClock.adjust(0);
      expect(yield* createCalls).toBe(0);
      expect(yield* eventsOf("a")).toEqual([
        'Normal Provisioning: External provisioner is provisioning volume for claim "default/a"',
        'Warning ProvisioningFailed: failed to provision volume with StorageClass "fast": claim Selector is not supported',
      ]);
    }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§2 a data source of another kind belongs to a populator: one Normal event, then ignored",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* startProvisioner;
        yield* cluster.create(
          "persistentvolumeclaims",
          claim("a", { dataSource: { apiGroup: "hello.example.com", kind: "Hello", name: "h" } }),
        );
        yield* TestClock.adjust(0);
        yield* cluster.patchMetadata("persistentvolumeclaims", "default/a", {
          annotations: { touched: "yes" },
        });
        yield* TestClock.adjust("1 hour");
        expect(yield* createCalls).toBe(0);
        expect(yield* eventsOf("a")).toEqual([
          "Normal Provisioning: Assuming an external populator will provision the volume",
        ]);
      }).pipe(Effect.provide(harness())),
  );
});
