import { Schema } from "effect";
import { optional, StringMap } from "./Field.js";
import { ObjectMeta } from "./ObjectMeta.js";

export const SecretReference = Schema.Struct({ name: Schema.String, namespace: Schema.String });
export type SecretReference = typeof SecretReference.Type;

export const ClaimReference = Schema.Struct({
  name: optional(Schema.String),
  namespace: optional(Schema.String),
  uid: optional(Schema.String),
});

/** What the provisioner reads back from a PersistentVolume: enough to delete it and to clone it. */
export const PersistentVolume = Schema.Struct({
  metadata: ObjectMeta,
  spec: Schema.optionalWith(
    Schema.Struct({
      persistentVolumeReclaimPolicy: optional(Schema.String),
      storageClassName: optional(Schema.String),
      volumeMode: optional(Schema.String),
      claimRef: optional(ClaimReference),
      csi: optional(Schema.Struct({ driver: Schema.String, volumeHandle: Schema.String })),
    }),
    { nullable: true, default: () => ({}) },
  ),
  status: optional(Schema.Struct({ phase: optional(Schema.String) })),
});
export type PersistentVolume = typeof PersistentVolume.Type;

const NodeSelectorTerm = Schema.Struct({
  matchExpressions: Schema.Array(
    Schema.Struct({
      key: Schema.String,
      operator: Schema.Literal("In"),
      values: Schema.Array(Schema.String),
    }),
  ),
});

/** A PersistentVolume as the provisioner creates it (the write side, every field we set). */
export const NewPersistentVolume = Schema.Struct({
  apiVersion: Schema.Literal("v1"),
  kind: Schema.Literal("PersistentVolume"),
  metadata: Schema.Struct({
    name: Schema.String,
    annotations: StringMap,
    finalizers: Schema.optional(Schema.Array(Schema.String)),
  }),
  spec: Schema.Struct({
    accessModes: Schema.Array(Schema.String),
    capacity: Schema.Struct({ storage: Schema.String }),
    claimRef: Schema.Struct({
      apiVersion: Schema.Literal("v1"),
      kind: Schema.Literal("PersistentVolumeClaim"),
      name: Schema.String,
      namespace: Schema.String,
      uid: Schema.String,
      resourceVersion: Schema.optional(Schema.String),
    }),
    csi: Schema.Struct({
      driver: Schema.String,
      volumeHandle: Schema.String,
      fsType: Schema.optional(Schema.String),
      readOnly: Schema.optional(Schema.Boolean),
      volumeAttributes: StringMap,
      controllerPublishSecretRef: Schema.optional(SecretReference),
      nodeStageSecretRef: Schema.optional(SecretReference),
      nodePublishSecretRef: Schema.optional(SecretReference),
      controllerExpandSecretRef: Schema.optional(SecretReference),
      nodeExpandSecretRef: Schema.optional(SecretReference),
    }),
    mountOptions: Schema.optional(Schema.Array(Schema.String)),
    nodeAffinity: Schema.optional(
      Schema.Struct({
        required: Schema.Struct({ nodeSelectorTerms: Schema.Array(NodeSelectorTerm) }),
      }),
    ),
    persistentVolumeReclaimPolicy: Schema.String,
    storageClassName: Schema.String,
    volumeMode: Schema.optional(Schema.String),
    volumeAttributesClassName: Schema.optional(Schema.String),
  }),
});
export type NewPersistentVolume = typeof NewPersistentVolume.Type;
