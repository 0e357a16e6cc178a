import { Schema } from "effect";
import { optional, StringMap } from "./Field.js";

/**
 * The part of `metadata` that the provisioner reads. Decoding drops every other field, which is
 * what keeps the informer caches small.
 */
export const ObjectMeta = Schema.Struct({
  name: Schema.String,
  namespace: optional(Schema.String),
  uid: Schema.String,
  resourceVersion: optional(Schema.String),
  annotations: optional(StringMap),
  finalizers: optional(Schema.Array(Schema.String)),
  deletionTimestamp: optional(Schema.String),
});
export type ObjectMeta = typeof ObjectMeta.Type;

export const annotation = (meta: ObjectMeta, key: string): string | undefined =>
  meta.annotations?.[key];

export const hasFinalizer = (meta: ObjectMeta, finalizer: string): boolean =>
  meta.finalizers?.includes(finalizer) ?? false;

export const isBeingDeleted = (meta: ObjectMeta): boolean => meta.deletionTimestamp !== undefined;

/** `namespace/name`, the way kubectl and upstream's events name an object. */
export const objectKey = (meta: {
  readonly name: string;
  readonly namespace?: string | undefined;
}) => (meta.namespace ? `${meta.namespace}/${meta.name}` : meta.name);
