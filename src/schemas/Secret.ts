import { Schema } from "effect";
import { optional } from "./Field.js";

/** A Secret with its `data` values decoded from base64: these become CSI request secrets. */
export const Secret = Schema.Struct({
  metadata: Schema.Struct({ name: Schema.String, namespace: optional(Schema.String) }),
  data: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.StringFromBase64 }), {
    nullable: true,
    default: () => ({}),
  }),
});
export type Secret = typeof Secret.Type;
