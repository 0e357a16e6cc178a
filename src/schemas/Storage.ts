import { Schema } from "effect";
import { optional, StringMap } from "./Field.js";
import { ObjectMeta } from "./ObjectMeta.js";

/** snapshot.storage.k8s.io/v1 VolumeSnapshot, the fields a restore reads. */
export const VolumeSnapshot = Schema.Struct({
  metadata: ObjectMeta,
  status: optional(
    Schema.Struct({
      boundVolumeSnapshotContentName: optional(Schema.String),
      readyToUse: optional(Schema.Boolean),
      restoreSize: optional(Schema.String),
    }),
  ),
});
export type VolumeSnapshot = typeof VolumeSnapshot.Type;

export const VolumeSnapshotContent = Schema.Struct({
  metadata: Schema.Struct({ name: Schema.String, annotations: optional(StringMap) }),
  spec: Schema.Struct({
    driver: Schema.String,
    sourceVolumeMode: optional(Schema.String),
    volumeSnapshotRef: Schema.Struct({
      name: optional(Schema.String),
      namespace: optional(Schema.String),
      uid: optional(Schema.String),
    }),
  }),
  status: optional(Schema.Struct({ snapshotHandle: optional(Schema.String) })),
});
export type VolumeSnapshotContent = typeof VolumeSnapshotContent.Type;

/** storage.k8s.io VolumeAttachment: deletion waits while one names the PV. */
export const VolumeAttachment = Schema.Struct({
  metadata: Schema.Struct({ name: Schema.String }),
  spec: Schema.Struct({
    nodeName: Schema.String,
    source: Schema.Struct({ persistentVolumeName: optional(Schema.String) }),
  }),
});
export type VolumeAttachment = typeof VolumeAttachment.Type;

export const VolumeAttributesClass = Schema.Struct({
  metadata: Schema.Struct({ name: Schema.String }),
  driverName: Schema.String,
  parameters: optional(StringMap),
});
export type VolumeAttributesClass = typeof VolumeAttributesClass.Type;
