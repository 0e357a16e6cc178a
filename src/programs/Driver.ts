import { Context, Data, Duration, Effect, Random, Schedule } from "effect";
import type { Config } from "../layers/Config.js";
import { Csi, CsiError } from "../layers/Csi.js";
import { withTimeout } from "./CsiCalls.js";

/** What start-up learned about the CSI driver; fixed for the life of the process (SPEC §1). */
export interface DriverInfo {
  readonly name: string;
  readonly vendorVersion: string;
  /** `<unix-ms>-<0..9999>-<driver>`, recorded on every PV this process provisions. */
  readonly identity: string;
  readonly pluginCapabilities: ReadonlySet<string>;
  readonly controllerCapabilities: ReadonlySet<string>;
}

export class Driver extends Context.Tag("csi-provisioner/Driver")<Driver, DriverInfo>() {}

export class DriverUnusable extends Data.TaggedError("DriverUnusable")<{
  readonly message: string;
}> {}

export const supportsTopology = (driver: DriverInfo, gates: Readonly<Record<string, boolean>>) =>
  driver.pluginCapabilities.has("VOLUME_ACCESSIBILITY_CONSTRAINTS") && gates.Topology !== false;

const probeInterval = Duration.seconds(1);

/**
 * Probes until the driver says it is ready. A probe that times out, or a driver that is not ready
 * yet, is retried every second forever; any other error is fatal, as upstream.
 */
const probeUntilReady = Effect.gen(function* () {
  const csi = yield* Csi;
  const probe = withTimeout("Probe", csi.probe).pipe(
    Effect.flatMap((response) =>
      response.ready === undefined || response.ready.value
        ? Effect.void
        : Effect.fail(
            new CsiError({ method: "Probe", code: "Unavailable", detail: "driver is not ready" }),
          ),
    ),
    Effect.tapError((error) => Effect.logInfo(`CSI driver probe failed: ${error.message}`)),
  );
  yield* probe.pipe(
    Effect.retry({
      schedule: Schedule.spaced(probeInterval),
      while: (error) =>
        error.code === "DeadlineExceeded" ||
        (error.code === "Unavailable" && error.detail === "driver is not ready"),
    }),
  );
});

/** SPEC §1: probe, learn the driver's name and capabilities once, refuse a driver that cannot provision. */
export const connectDriver: Effect.Effect<DriverInfo, CsiError | DriverUnusable, Csi | Config> =
  Effect.gen(function* () {
    const csi = yield* Csi;
    yield* probeUntilReady;
    const info = yield* withTimeout("GetPluginInfo", csi.getPluginInfo);
    const plugin = yield* withTimeout("GetPluginCapabilities", csi.getPluginCapabilities);
    const controller = yield* withTimeout(
      "ControllerGetCapabilities",
      csi.controllerGetCapabilities,
    );
    const pluginCapabilities = new Set(
      plugin.capabilities.flatMap((c) => (c.service ? [String(c.service.type)] : [])),
    );
    const controllerCapabilities = new Set(
      controller.capabilities.flatMap((c) => (c.rpc ? [String(c.rpc.type)] : [])),
    );
    if (!pluginCapabilities.has("CONTROLLER_SERVICE")) {
      return yield* new DriverUnusable({
        message:
          "CSI driver does not support dynamic provisioning: plugin CONTROLLER_SERVICE capability is not reported",
      });
    }
    if (!controllerCapabilities.has("CREATE_DELETE_VOLUME")) {
      return yield* new DriverUnusable({
        message:
          "CSI driver does not support dynamic provisioning: controller CREATE_DELETE_VOLUME capability is not reported",
      });
    }
    const now = yield* Effect.clockWith((clock) => clock.currentTimeMillis);
    const suffix = yield* Random.nextIntBetween(0, 10000);
    return {
      name: info.name,
      vendorVersion: info.vendor_version,
      identity: `${now}-${suffix}-${info.name}`,
      pluginCapabilities,
      controllerCapabilities,
    };
  });
