import { Schema } from "effect";
import { optionalMessage, StringMap } from "./Field.js";

/**
 * CSI v1 messages with the field names of csi.proto (snake_case, as @grpc/proto-loader keeps them
 * with `keepCase`). int64 travels as a decimal string and is a bigint inside. Responses decode
 * leniently (absent repeated fields are empty) but a driver that answers garbage fails decoding.
 */

export const AccessMode = Schema.Literal(
  "UNKNOWN",
  "SINGLE_NODE_WRITER",
  "SINGLE_NODE_READER_ONLY",
  "MULTI_NODE_READER_ONLY",
  "MULTI_NODE_SINGLE_WRITER",
  "MULTI_NODE_MULTI_WRITER",
  "SINGLE_NODE_SINGLE_WRITER",
  "SINGLE_NODE_MULTI_WRITER",
);
export type AccessMode = typeof AccessMode.Type;

export const VolumeCapability = Schema.Struct({
  block: Schema.optional(Schema.Struct({})),
  mount: Schema.optional(
    Schema.Struct({
      fs_type: Schema.String,
      mount_flags: Schema.Array(Schema.String),
    }),
  ),
  access_mode: Schema.Struct({ mode: AccessMode }),
});
export type VolumeCapability = typeof VolumeCapability.Type;

export const Topology = Schema.Struct({ segments: StringMap });
export type Topology = typeof Topology.Type;

export const TopologyRequirement = Schema.Struct({
  requisite: Schema.Array(Topology),
  preferred: Schema.Array(Topology),
});
export type TopologyRequirement = typeof TopologyRequirement.Type;

export const VolumeContentSource = Schema.Union(
  Schema.Struct({ snapshot: Schema.Struct({ snapshot_id: Schema.String }) }),
  Schema.Struct({ volume: Schema.Struct({ volume_id: Schema.String }) }),
);
export type VolumeContentSource = typeof VolumeContentSource.Type;

export const CreateVolumeRequest = Schema.Struct({
  name: Schema.String,
  capacity_range: Schema.Struct({ required_bytes: Schema.BigInt, limit_bytes: Schema.BigInt }),
  volume_capabilities: Schema.Array(VolumeCapability),
  parameters: StringMap,
  secrets: StringMap,
  volume_content_source: Schema.optional(VolumeContentSource),
  accessibility_requirements: Schema.optional(TopologyRequirement),
  mutable_parameters: StringMap,
});
export type CreateVolumeRequest = typeof CreateVolumeRequest.Type;

const int64 = Schema.Union(
  Schema.BigInt,
  Schema.transform(Schema.Number, Schema.BigIntFromSelf, {
    strict: true,
    decode: (n) => BigInt(Math.trunc(n)),
    encode: (b) => Number(b),
  }),
);

export const Volume = Schema.Struct({
  capacity_bytes: Schema.optionalWith(int64, { nullable: true, default: () => 0n }),
  volume_id: Schema.String.pipe(Schema.minLength(1, { message: () => "volume_id is empty" })),
  volume_context: Schema.optionalWith(StringMap, { nullable: true, default: () => ({}) }),
  content_source: optionalMessage(Schema.Unknown),
  accessible_topology: Schema.optionalWith(Schema.Array(Topology), {
    nullable: true,
    default: () => [],
  }),
});
export type Volume = typeof Volume.Type;

export const CreateVolumeResponse = Schema.Struct({ volume: Volume });
export type CreateVolumeResponse = typeof CreateVolumeResponse.Type;

export const DeleteVolumeRequest = Schema.Struct({ volume_id: Schema.String, secrets: StringMap });
export type DeleteVolumeRequest = typeof DeleteVolumeRequest.Type;

/** DeleteVolumeResponse has no fields: any object decodes, anything else is garbage. */
export const DeleteVolumeResponse = Schema.Record({ key: Schema.String, value: Schema.Unknown });
export type DeleteVolumeResponse = typeof DeleteVolumeResponse.Type;

export const GetCapacityRequest = Schema.Struct({
  volume_capabilities: Schema.Array(VolumeCapability),
  parameters: StringMap,
  accessible_topology: Schema.optional(Topology),
});
export type GetCapacityRequest = typeof GetCapacityRequest.Type;

export const GetCapacityResponse = Schema.Struct({
  available_capacity: Schema.optionalWith(int64, { nullable: true, default: () => 0n }),
});
export type GetCapacityResponse = typeof GetCapacityResponse.Type;

export const ProbeResponse = Schema.Struct({
  /** google.protobuf.BoolValue: absent means ready. */
  ready: optionalMessage(
    Schema.Struct({ value: Schema.optionalWith(Schema.Boolean, { default: () => false }) }),
  ),
});
export type ProbeResponse = typeof ProbeResponse.Type;

export const GetPluginInfoResponse = Schema.Struct({
  name: Schema.String.pipe(Schema.minLength(1, { message: () => "driver name is empty" })),
  vendor_version: Schema.optionalWith(Schema.String, { nullable: true, default: () => "" }),
});
export type GetPluginInfoResponse = typeof GetPluginInfoResponse.Type;

/** Capability enums as names; a number stands for a value newer than our csi.proto. */
const EnumName = Schema.Union(Schema.String, Schema.Number.pipe(Schema.asSchema));

export const GetPluginCapabilitiesResponse = Schema.Struct({
  capabilities: Schema.optionalWith(
    Schema.Array(
      Schema.Struct({
        service: optionalMessage(Schema.Struct({ type: EnumName })),
        volume_expansion: optionalMessage(Schema.Struct({ type: EnumName })),
      }),
    ),
    { nullable: true, default: () => [] },
  ),
});
export type GetPluginCapabilitiesResponse = typeof GetPluginCapabilitiesResponse.Type;

export const ControllerGetCapabilitiesResponse = Schema.Struct({
  capabilities: Schema.optionalWith(
    Schema.Array(Schema.Struct({ rpc: optionalMessage(Schema.Struct({ type: EnumName })) })),
    { nullable: true, default: () => [] },
  ),
});
export type ControllerGetCapabilitiesResponse = typeof ControllerGetCapabilitiesResponse.Type;
