import { Schema } from "effect";

/**
 * An optional field as the Kubernetes API serves it: absent, or explicitly `null`.
 * Both decode to "absent" so that programs only ever see `undefined`.
 */
export const optional = <S extends Schema.Schema.All>(schema: S) =>
  Schema.optionalWith(schema, { nullable: true });

/** A string map (labels, annotations, parameters, volume attributes). */
export const StringMap = Schema.Record({ key: Schema.String, value: Schema.String });
export type StringMap = typeof StringMap.Type;
