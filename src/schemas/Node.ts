import { Schema } from "effect";
import { optional, StringMap } from "./Field.js";

export const Node = Schema.Struct({
  metadata: Schema.Struct({
    name: Schema.String,
    labels: Schema.optionalWith(StringMap, { nullable: true, default: () => ({}) }),
  }),
});
export type Node = typeof Node.Type;

export const CsiNode = Schema.Struct({
  metadata: Schema.Struct({ name: Schema.String }),
  spec: Schema.Struct({
    drivers: Schema.optionalWith(
      Schema.Array(
        Schema.Struct({
          name: Schema.String,
          nodeID: optional(Schema.String),
          topologyKeys: optional(Schema.Array(Schema.String)),
        }),
      ),
      { nullable: true, default: () => [] },
    ),
  }),
});
export type CsiNode = typeof CsiNode.Type;

/** The topology keys the driver registered on a node, empty when it has none there. */
export const topologyKeysOf = (csiNode: CsiNode, driver: string): ReadonlyArray<string> =>
  csiNode.spec.drivers.find((d) => d.name === driver)?.topologyKeys ?? [];
