import { Context, Data, Effect, Schema } from "effect";
import type {
  ControllerGetCapabilitiesResponse,
  CreateVolumeRequest,
  CreateVolumeResponse,
  DeleteVolumeRequest,
  GetCapacityRequest,
  GetCapacityResponse,
  GetPluginCapabilitiesResponse,
  GetPluginInfoResponse,
  ProbeResponse,
} from "../schemas/Csi.js";

/** gRPC status codes by name, as grpc-go prints them in `rpc error: code = X desc = Y`. */
export const GrpcCode = {
  OK: 0,
  Canceled: 1,
  Unknown: 2,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
  Unauthenticated: 16,
} as const;
export type GrpcCodeName = keyof typeof GrpcCode;

export type CsiMethod =
  | "Probe"
  | "GetPluginInfo"
  | "GetPluginCapabilities"
  | "ControllerGetCapabilities"
  | "CreateVolume"
  | "DeleteVolume"
  | "GetCapacity";

/**
 * A CSI call that did not succeed. `code` is the gRPC status; it is absent when the call never got
 * a status (the answer could not be decoded, the connection broke before a reply): the operation
 * may or may not have happened on the driver's side.
 */
export class CsiError extends Data.TaggedError("CsiError")<{
  readonly method: CsiMethod;
  readonly code: GrpcCodeName | undefined;
  readonly detail: string;
}> {
  override get message(): string {
    return this.code === undefined
      ? this.detail
      : `rpc error: code = ${this.code} desc = ${this.detail}`;
  }
}

/** The driver's Identity and Controller services. Every call is bounded by the caller's timeout. */
export interface CsiService {
  readonly probe: Effect.Effect<ProbeResponse, CsiError>;
  readonly getPluginInfo: Effect.Effect<GetPluginInfoResponse, CsiError>;
  readonly getPluginCapabilities: Effect.Effect<GetPluginCapabilitiesResponse, CsiError>;
  readonly controllerGetCapabilities: Effect.Effect<ControllerGetCapabilitiesResponse, CsiError>;
  readonly createVolume: (
    request: CreateVolumeRequest,
  ) => Effect.Effect<CreateVolumeResponse, CsiError>;
  readonly deleteVolume: (request: DeleteVolumeRequest) => Effect.Effect<void, CsiError>;
  readonly getCapacity: (
    request: GetCapacityRequest,
  ) => Effect.Effect<GetCapacityResponse, CsiError>;
}

export class Csi extends Context.Tag("csi-provisioner/Csi")<Csi, CsiService>() {}

/**
 * Decodes a driver's reply. A reply that does not decode is not a gRPC status: the driver may have
 * done the work and answered garbage, so it keeps `code: undefined` (SPEC §5: "in background").
 */
export const decodeReply =
  <A, I>(method: CsiMethod, schema: Schema.Schema<A, I>) =>
  (raw: unknown): Effect.Effect<A, CsiError> =>
    Schema.decodeUnknown(schema)(raw).pipe(
      Effect.mapError(
        (error) =>
          new CsiError({
            method,
            code: undefined,
            detail: `the driver's answer to ${method} was invalid (the driver answered garbage; the operation may have happened): ${error.message}`,
          }),
      ),
    );
