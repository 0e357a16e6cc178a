import { describe, expect, it } from "@effect/vitest";
import { Effect, Fiber, TestClock } from "effect";
import { Behaviour, MemoryDriver } from "../src/layers/CsiMemory.js";
import { connectDriver } from "../src/programs/Driver.js";
import { driverName } from "./support/Fixtures.js";
import { harness } from "./support/Harness.js";

const probeStarts = Effect.flatMap(MemoryDriver, (d) => d.callsTo("Probe")).pipe(
  Effect.map((calls) => calls.map((c) => c.startedAt)),
);

describe("SPEC §1 start-up", () => {
  it.scoped("§1.1 a Probe that times out is retried every second until the driver answers", () =>
    Effect.gen(function* () {
      const driver = yield* MemoryDriver;
      yield* driver.script("Probe", Behaviour.hang, Behaviour.hang);
      const fiber = yield* Effect.fork(connectDriver);
      yield* TestClock.adjust("21 seconds");
      expect(fiber.unsafePoll()).toBeNull();
      yield* TestClock.adjust("1 second");
      const info = yield* Fiber.join(fiber);
      // --timeout 10s per probe, 1s between probes: 0s, 11s, 22s.
      expect(yield* probeStarts).toEqual([0, 11_000, 22_000]);
      expect(info.name).toBe(driverName);
    }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§1.1 a driver that is not ready yet is probed again; a missing `ready` counts as ready",
    () =>
      Effect.gen(function* () {
        const driver = yield* MemoryDriver;
        yield* driver.setReadiness("not-ready");
        const fiber = yield* Effect.fork(connectDriver);
        yield* TestClock.adjust("2 seconds");
        yield* driver.setReadiness("absent");
        yield* TestClock.adjust("1 second");
        yield* Fiber.join(fiber);
        expect(yield* probeStarts).toEqual([0, 1_000, 2_000, 3_000]);
      }).pipe(Effect.provide(harness())),
  );

  it.scoped("§1.1 any other Probe error is fatal", () =>
    Effect.gen(function* () {
      const driver = yield* MemoryDriver;
      yield* driver.script("Probe", Behaviour.fail("FailedPrecondition", "no backend"));
      const error = yield* Effect.flip(connectDriver);
      expect(error.message).toBe("rpc error: code = FailedPrecondition desc = no backend");
      expect(yield* probeStarts).toEqual([0]);
    }).pipe(Effect.provide(harness())),
  );

  it.scoped(
    "§1.2 a driver without CREATE_DELETE_VOLUME cannot provision: start-up fails with upstream's message",
    () =>
      Effect.gen(function* () {
        const error = yield* Effect.flip(connectDriver);
        expect(error.message).toBe(
          "CSI driver does not support dynamic provisioning: controller CREATE_DELETE_VOLUME capability is not reported",
        );
      }).pipe(Effect.provide(harness({ driver: { controllerCapabilities: ["GET_CAPACITY"] } }))),
  );

  it.scoped("§1.2 a driver without CONTROLLER_SERVICE cannot provision", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(connectDriver);
      expect(error.message).toContain("plugin CONTROLLER_SERVICE capability is not reported");
    }).pipe(Effect.provide(harness({ driver: { pluginCapabilities: [] } }))),
  );

  it.scoped(
    "§1.2 GetPluginInfo names the provisioner; §1.4 identity is <unix-ms>-<0..9999>-<driver>",
    () =>
      Effect.gen(function* () {
        yield* TestClock.setTime(1_700_000_000_123);
        const info = yield* connectDriver;
        expect(info.name).toBe(driverName);
        expect(info.identity).toMatch(
          new RegExp(`^1700000000123-\\d{1,4}-${driverName.replace(/\./g, "\\.")}$`),
        );
        expect([...info.controllerCapabilities]).toContain("CREATE_DELETE_VOLUME");
      }).pipe(Effect.provide(harness())),
  );

  it.scoped("§1.2 a failing capability call is fatal", () =>
    Effect.gen(function* () {
      const driver = yield* MemoryDriver;
      yield* driver.script("ControllerGetCapabilities", Behaviour.fail("Internal", "boom"));
      const error = yield* Effect.flip(connectDriver);
      expect(error.message).toBe("rpc error: code = Internal desc = boom");
    }).pipe(Effect.provide(harness())),
  );
});
