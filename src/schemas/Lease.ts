import { Schema } from "effect";
import { optional, StringMap } from "./Field.js";

/**
 * A `coordination.k8s.io/v1` Lease as leader election reads and writes it. Updates are full PUTs,
 * so metadata keeps the labels and annotations that others may have put on the Lease: dropping
 * them on decode would erase them on the next renewal.
 */

/** Times are metav1.MicroTime: RFC 3339 with microseconds. Every field may be absent or null. */
export const LeaseSpec = Schema.Struct({
  holderIdentity: optional(Schema.String),
  leaseDurationSeconds: optional(Schema.Int),
  acquireTime: optional(Schema.String),
  renewTime: optional(Schema.String),
  leaseTransitions: optional(Schema.Int),
});
export type LeaseSpec = typeof LeaseSpec.Type;

export const LeaseMeta = Schema.Struct({
  name: Schema.String,
  namespace: Schema.String,
  uid: optional(Schema.String),
  /** Set on every object read back; on an update it makes the write conditional. */
  resourceVersion: optional(Schema.String),
  labels: optional(StringMap),
  annotations: optional(StringMap),
});
export type LeaseMeta = typeof LeaseMeta.Type;

export const Lease = Schema.Struct({
  metadata: LeaseMeta,
  spec: optional(LeaseSpec),
});
export type Lease = typeof Lease.Type;
