import { Effect } from "effect";
import { Config } from "../layers/Config.js";
import { CsiError, type CsiMethod } from "../layers/Csi.js";

/**
 * Bounds a CSI call by `--timeout`. A call that runs out of time fails like a gRPC deadline does,
 * so it is classified as "may still be running on the driver" (SPEC §5).
 */
export const withTimeout = <A, R>(
  method: CsiMethod,
  call: Effect.Effect<A, CsiError, R>,
): Effect.Effect<A, CsiError, R | Config> =>
  Effect.flatMap(Config, (config) =>
    Effect.timeoutFail(call, {
      duration: config.timeout,
      onTimeout: () =>
        new CsiError({ method, code: "DeadlineExceeded", detail: "context deadline exceeded" }),
    }),
  );

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
