import { describe, expect, it } from "@effect/vitest";
import { Effect, TestClock } from "effect";
import { Behaviour, MemoryDriver } from "../src/layers/CsiMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { claim, storageClass } from "./support/Fixtures.js";
import { harness, startProvisioner } from "./support/Harness.js";

describe("SPEC §8 explainable state: every pending claim of ours says why", () => {
  it.scoped(
    "waiting, backing off with the last error and next retry, in background; bound claims drop out",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* cluster.create(
          "storageclasses",
          storageClass("late", { volumeBindingMode: "WaitForFirstConsumer" }),
        );
        const controller = yield* startProvisioner;
        yield* driver.script(
          "CreateVolume",
          Behaviour.fail("Internal", "disk on fire"),
          Behaviour.fail("DeadlineExceeded", "slow"),
        );
        yield* cluster.create("persistentvolumeclaims", claim("broken"));
        yield* cluster.create("persistentvolumeclaims", claim("slow"));
        yield* cluster.create("persistentvolumeclaims", claim("fine"));
        yield* cluster.create(
          "persistentvolumeclaims",
          claim("later", {
            storageClassName: "late",
            annotations: { "volume.kubernetes.io/storage-provisioner": "memory.csi.example.com" },
          }),
        );
        yield* TestClock.adjust("500 millis");
        const pending = [...(yield* controller.pendingClaims)].sort((a, b) =>
          a.name.localeCompare(b.name),
        );
        expect(
          pending.map(({ name, state, attempts, lastError, nextRetryAt, storageClass }) => ({
            name,
            state,
            attempts,
            lastError,
            nextRetryAt,
            storageClass,
          })),
        ).toEqual([
          {
            name: "broken",
            state: "BackingOff",
            attempts: 1,
            lastError: "rpc error: code = Internal desc = disk on fire",
            nextRetryAt: 1_000,
            storageClass: "fast",
          },
          {
            name: "later",
            state: "Waiting",
            attempts: 0,
            lastError: undefined,
            nextRetryAt: undefined,
            storageClass: "late",
          },
          {
            name: "slow",
            state: "InBackground",
            attempts: 1,
            lastError: "rpc error: code = DeadlineExceeded desc = slow",
            nextRetryAt: 1_000,
            storageClass: "fast",
          },
        ]);
        yield* TestClock.adjust("1 second");
        expect((yield* controller.pendingClaims).map((c) => c.name)).toEqual(["later"]);
      }).pipe(Effect.provide(harness())),
  );
});
