import { Schema } from "effect";

/**
 * An optional field of a Kubernetes object. The API server omits empty fields rather than sending
 * `null`; an object that does send `null` where we expect a value fails to decode and is skipped.
 * (Accepting `null` with `optionalWith({ nullable })` turns every decode into a transformation
 * that costs four to six times as much, on every watch event.)
 */
export const optional = <S extends Schema.Schema.Any>(schema: S) => Schema.optional(schema);

/** An optional message field as @grpc/proto-loader decodes it: absent or `null` when unset. */
export const optionalMessage = <S extends Schema.Schema.All>(schema: S) =>
  Schema.optionalWith(schema, { nullable: true });

/** A string map (labels, annotations, parameters, volume attributes). */
export const StringMap = Schema.Record({ key: Schema.String, value: Schema.String });
export type StringMap = typeof StringMap.Type;
