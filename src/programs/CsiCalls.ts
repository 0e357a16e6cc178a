import { Cause, Effect, Exit } from "effect";
import { Config } from "../layers/Config.js";
import { CsiError, type CsiMethod } from "../layers/Csi.js";
import { Metrics } from "../layers/Metrics.js";

const identityMethods: ReadonlySet<CsiMethod> = new Set([
  "Probe",
  "GetPluginInfo",
  "GetPluginCapabilities",
]);

/** The full gRPC method name, as csi-lib-utils labels its metrics. */
export const grpcMethodName = (method: CsiMethod) =>
  `/csi.v1.${identityMethods.has(method) ? "Identity" : "Controller"}/${method}`;

/** The status code by name as grpc-go prints it; csi-lib-utils' label for a call without one. */
const statusOf = (exit: Exit.Exit<unknown, CsiError>): string => {
  if (Exit.isSuccess(exit)) return "OK";
  const failure = Cause.failureOption(exit.cause);
  if (failure._tag === "Some") return failure.value.code ?? "unknown-non-grpc";
  // An interrupted call is a cancelled context on the wire.
  return Cause.isInterruptedOnly(exit.cause) ? "Canceled" : "unknown-non-grpc";
};

/**
 * Bounds a CSI call by `--timeout`. A call that runs out of time fails like a gRPC deadline does,
 * so it is classified as "may still be running on the driver" (SPEC §5). Every CSI call goes
 * through here, so this is also where `csi_sidecar_operations_seconds` is recorded.
 */
export const withTimeout = <A, R>(
  method: CsiMethod,
  call: Effect.Effect<A, CsiError, R>,
): Effect.Effect<A, CsiError, R | Config> =>
  Effect.flatMap(Config, (config) => {
    const bounded = Effect.timeoutFail(call, {
      duration: config.timeout,
      onTimeout: () =>
        new CsiError({ method, code: "DeadlineExceeded", detail: "context deadline exceeded" }),
    });
    return Effect.flatMap(Metrics, (metrics) =>
      Effect.clockWith((clock) => {
        const start = clock.unsafeCurrentTimeNanos();
        return Effect.onExit(bounded, (exit) =>
          Effect.sync(() =>
            metrics.csiOperation(
              grpcMethodName(method),
              statusOf(exit),
              Number(clock.unsafeCurrentTimeNanos() - start) / 1e9,
            ),
          ),
        );
      }),
    );
  });

/** What a failed CreateVolume means for the volume (SPEC §5). */
export type ProvisioningState = "InBackground" | "Final" | "Reschedule";

export const classifyCreateVolumeError = (
  error: CsiError,
  mayReschedule: boolean,
): ProvisioningState => {
  switch (error.code) {
    case undefined:
    case "Canceled":
    case "DeadlineExceeded":
    case "Unavailable":
    case "Aborted":
      // The driver may still be creating the volume: keep asking with the same request.
      return "InBackground";
    case "ResourceExhausted":
      return mayReschedule ? "Reschedule" : "Final";
    default:
      return "Final";
  }
};
