import { Schema } from "effect";
import { optional, StringMap } from "./Field.js";

export const TopologySelectorTerm = Schema.Struct({
  matchLabelExpressions: optional(
    Schema.Array(Schema.Struct({ key: Schema.String, values: Schema.Array(Schema.String) })),
  ),
});
export type TopologySelectorTerm = typeof TopologySelectorTerm.Type;

export const StorageClass = Schema.Struct({
  metadata: Schema.Struct({ name: Schema.String, uid: optional(Schema.String) }),
  provisioner: Schema.String,
  parameters: optional(StringMap),
  reclaimPolicy: optional(Schema.String),
  mountOptions: optional(Schema.Array(Schema.String)),
  volumeBindingMode: optional(Schema.String),
  allowedTopologies: optional(Schema.Array(TopologySelectorTerm)),
});
export type StorageClass = typeof StorageClass.Type;
