import { describe, expect, it } from "@effect/vitest";
import { Effect, TestClock } from "effect";
import { MemoryDriver } from "../src/layers/CsiMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { claim, driverName, storageClass } from "./support/Fixtures.js";
import { eventsOf, getRaw, harness, startProvisioner } from "./support/Harness.js";

describe("provisioning end to end on the in-memory cluster", () => {
  it.scoped(
    "provisions a claim, binds it, and reports Provisioning then ProvisioningSucceeded",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* startProvisioner;
        const created = yield* cluster.create(
          "persistentvolumeclaims",
          claim("data", { size: "5Gi" }),
        );
        yield* TestClock.adjust(0);

        const uid = (created.metadata as { uid: string }).uid;
        const pvc = yield* getRaw("persistentvolumeclaims", "default/data");
        expect(pvc.spec.volumeName).toBe(`pvc-${uid}`);
        expect(pvc.status.phase).toBe("Bound");
        expect(pvc.metadata.finalizers ?? []).toEqual([]);
        const pv = yield* getRaw("persistentvolumes", `pvc-${uid}`);
        expect(pv.spec.csi.driver).toBe(driverName);
        expect(pv.spec.capacity.storage).toBe("5Gi");
        expect(yield* driver.callCount("CreateVolume")).toBe(1);
        expect(yield* eventsOf("data")).toEqual([
          'Normal Provisioning: External provisioner is provisioning volume for claim "default/data"',
          `Normal ProvisioningSucceeded: Successfully provisioned volume pvc-${uid}`,
        ]);
      }).pipe(Effect.provide(harness())),
  );
});
