import { Schema } from "effect";
import { optional, StringMap } from "./Field.js";
import { ObjectMeta } from "./ObjectMeta.js";

export const TypedObjectReference = Schema.Struct({
  apiGroup: optional(Schema.String),
  kind: Schema.String,
  name: Schema.String,
  namespace: optional(Schema.String),
});
export type TypedObjectReference = typeof TypedObjectReference.Type;

/**
 * The fields of a PersistentVolumeClaim that provisioning reads. Quantities stay strings here:
 * a malformed size is a provisioning failure to report on the claim, not a reason to drop it.
 */
export const PersistentVolumeClaimSpec = Schema.Struct({
  accessModes: optional(Schema.Array(Schema.String)),
  resources: optional(Schema.Struct({ requests: optional(StringMap) })),
  storageClassName: optional(Schema.String),
  volumeName: optional(Schema.String),
  volumeMode: optional(Schema.String),
  selector: optional(Schema.Unknown),
  dataSource: optional(TypedObjectReference),
  dataSourceRef: optional(TypedObjectReference),
  volumeAttributesClassName: optional(Schema.String),
});

export const PersistentVolumeClaim = Schema.Struct({
  metadata: ObjectMeta,
  spec: Schema.optionalWith(PersistentVolumeClaimSpec, { nullable: true, default: () => ({}) }),
  status: optional(Schema.Struct({ phase: optional(Schema.String) })),
});
export type PersistentVolumeClaim = typeof PersistentVolumeClaim.Type;

export const storageRequest = (claim: PersistentVolumeClaim): string | undefined =>
  claim.spec.resources?.requests?.storage;
