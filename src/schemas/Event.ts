import { Schema } from "effect";

export const EventType = Schema.Literal("Normal", "Warning");

/** A core/v1 Event as the provisioner records it on a PVC or PV. */
export const NewEvent = Schema.Struct({
  apiVersion: Schema.Literal("v1"),
  kind: Schema.Literal("Event"),
  metadata: Schema.Struct({ generateName: Schema.String, namespace: Schema.String }),
  involvedObject: Schema.Struct({
    apiVersion: Schema.Literal("v1"),
    kind: Schema.Literal("PersistentVolumeClaim", "PersistentVolume"),
    name: Schema.String,
    namespace: Schema.optional(Schema.String),
    uid: Schema.String,
    resourceVersion: Schema.optional(Schema.String),
  }),
  type: EventType,
  reason: Schema.String,
  message: Schema.String,
  source: Schema.Struct({ component: Schema.String }),
  reportingComponent: Schema.String,
  reportingInstance: Schema.String,
  firstTimestamp: Schema.String,
  lastTimestamp: Schema.String,
  count: Schema.Number,
});
export type NewEvent = typeof NewEvent.Type;
