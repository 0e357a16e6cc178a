import { describe, expect, it } from "@effect/vitest";
import { Arbitrary, Either, FastCheck as fc, Option, Schema } from "effect";
import { decodeUnknownEither, fastDecoder } from "../src/schemas/Decode.js";
import { CsiNode, Node } from "../src/schemas/Node.js";
import { PersistentVolume } from "../src/schemas/PersistentVolume.js";
import { PersistentVolumeClaim } from "../src/schemas/PersistentVolumeClaim.js";
import { VolumeAttachment, VolumeSnapshot, VolumeSnapshotContent } from "../src/schemas/Storage.js";
import { StorageClass } from "../src/schemas/StorageClass.js";

// Every feature the compiler handles, in one schema.
const Kitchen = Schema.Struct({
  name: Schema.String,
  size: Schema.optional(Schema.Number),
  mode: Schema.Union(Schema.Literal("a", "b"), Schema.Boolean),
  labels: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), {
    nullable: true,
    default: () => ({}),
  }),
  items: Schema.Array(Schema.Struct({ key: Schema.String, extra: Schema.Unknown })),
  marker: Schema.Struct({}),
  tagged: Schema.optional(Schema.Struct({ kind: Schema.Literal("x"), n: Schema.Number })),
  mixed: Schema.Struct({ fixed: Schema.String }, { key: Schema.String, value: Schema.String }),
});

const schemas = {
  Kitchen,
  PersistentVolumeClaim,
  PersistentVolume,
  StorageClass,
  Node,
  CsiNode,
  VolumeSnapshot,
  VolumeSnapshotContent,
  VolumeAttachment,
} as const;

type Path = ReadonlyArray<string | number>;

/** Every place in a JSON-like value where something else could stand, and what stands there. */
const placesOf = (value: unknown, path: Path = []): Array<[Path, unknown]> => {
  if (typeof value !== "object" || value === null) return [[path, value]];
  const entries = Array.isArray(value)
    ? value.map((v, i) => [i, v] as const)
    : Object.entries(value);
  return [[path, value], ...entries.flatMap(([key, v]) => placesOf(v, [...path, key]))];
};

/** A copy of `value` with `replacement` at `path` (the whole value for the empty path). */
const replaceAt = (value: unknown, path: Path, replacement: unknown) => {
  if (path.length === 0) return replacement;
  const copy = structuredClone(value) as Record<string | number, unknown>;
  let node = copy;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, unknown>;
  node[path[path.length - 1] as string | number] = replacement;
  return copy;
};

// The edge values that tell types apart come up often; any JSON value now and then.
const replacements = fc.oneof(
  fc.constantFrom(null, 0, 1.5, "", "x", true, [], {}, ["x"]),
  fc.jsonValue(),
);

const isObject = (node: unknown) =>
  typeof node === "object" && node !== null && !Array.isArray(node);

/**
 * A depth first, then a place at that depth: the few shallow fields are hit as often as the many
 * values deep inside an `Unknown` or a map.
 */
const pickByDepth = (places: Array<[Path, unknown]>, pick: number): [Path, unknown] => {
  const depths = [...new Set(places.map(([path]) => path.length))];
  const depth = depths[pick % depths.length];
  const atDepth = places.filter(([path]) => path.length === depth);
  return atDepth[Math.floor(pick / depths.length) % atDepth.length] ?? [[], undefined];
};

/**
 * A valid encoded value with one change: a value swapped for any JSON value (often still valid,
 * often not), or a key nobody declared added to one of its objects.
 */
const mutated = <A, I>(schema: Schema.Schema<A, I>) =>
  fc
    .tuple(Arbitrary.make(Schema.encodedSchema(schema)), fc.nat(), replacements, fc.boolean())
    .map(([value, pick, replacement, addKey]) => {
      const places = placesOf(value);
      const objects = places.filter(([, node]) => isObject(node));
      if (addKey && objects.length > 0) {
        const [path] = pickByDepth(objects, pick);
        return replaceAt(value, [...path, "unexpected"], replacement);
      }
      const [path] = pickByDepth(places, pick);
      return replaceAt(value, path, replacement);
    });

describe("the compiled decoder", () => {
  for (const [name, schema] of Object.entries(schemas) as Array<
    [string, Schema.Schema<unknown, unknown>]
  >) {
    const slow = Schema.decodeUnknownEither(schema);
    const fast = fastDecoder(schema);

    it(`${name}: compiles`, () => {
      expect(fast).toBeDefined();
    });

    it(`${name}: decodes every valid input exactly as Schema does`, () =>
      fc.assert(
        fc.property(Arbitrary.make(Schema.encodedSchema(schema)), (input) => {
          const expected = slow(input);
          expect(Either.isRight(expected)).toBe(true);
          expect(fast?.(input)).toStrictEqual(Option.some(Either.getOrThrow(expected)));
        }),
        { numRuns: 150 },
      ));

    it(`${name}: accepts and rejects what Schema does, with the same output`, () =>
      fc.assert(
        fc.property(mutated(schema), (input) => {
          const expected = slow(input);
          expect(fast?.(input)).toStrictEqual(Either.getRight(expected));
          expect(decodeUnknownEither(schema)(input)).toStrictEqual(expected);
        }),
        { numRuns: 300 },
      ));
  }

  it("treats every edge value as Schema does, for each kind of node", () => {
    const edges = [
      null,
      undefined,
      0,
      -0,
      1.5,
      Number.NaN,
      "",
      "a",
      true,
      false,
      [],
      ["a"],
      {},
      { a: "a" },
    ];
    const kinds = [
      Schema.String,
      Schema.Number,
      Schema.Boolean,
      Schema.Literal("a"),
      Schema.Union(Schema.Literal("a"), Schema.Boolean, Schema.Number),
      Schema.Unknown,
      Schema.Array(Schema.String),
      Schema.Struct({}),
      Schema.Struct({ a: Schema.String }),
      Schema.Struct({ a: Schema.optional(Schema.String) }),
      Schema.Record({ key: Schema.String, value: Schema.String }),
      Schema.Struct({
        a: Schema.optionalWith(Schema.String, { nullable: true, default: () => "d" }),
      }),
    ];
    for (const kind of kinds as Array<Schema.Schema<unknown, unknown>>) {
      const fast = fastDecoder(kind);
      expect(fast).toBeDefined();
      for (const edge of [...edges, ...edges.map((a) => ({ a }))]) {
        expect(fast?.(edge), `${String(kind)} on ${JSON.stringify(edge)}`).toStrictEqual(
          Either.getRight(Schema.decodeUnknownEither(kind)(edge)),
        );
      }
    }
  });

  it("leaves a schema with a refinement to Schema, which still decodes it", () => {
    const Named = Schema.Struct({ name: Schema.NonEmptyString });
    expect(fastDecoder(Named)).toBeUndefined();
    expect(decodeUnknownEither(Named)({ name: "x", other: 1 })).toStrictEqual(
      Either.right({ name: "x" }),
    );
    expect(Either.isLeft(decodeUnknownEither(Named)({ name: "" }))).toBe(true);
  });

  it("reports an invalid input with Schema's own message", () => {
    const result = decodeUnknownEither(PersistentVolumeClaim)({ metadata: { name: 7 } });
    expect(Either.isLeft(result)).toBe(true);
    if (Either.isLeft(result)) expect(result.left.message).toContain('["name"]');
  });

  it("does not alter its input", () => {
    const input = { metadata: { name: "a", uid: "u" }, spec: null, extra: [1] };
    const before = structuredClone(input);
    expect(decodeUnknownEither(PersistentVolumeClaim)(input)).toStrictEqual(
      Either.right({ metadata: { name: "a", uid: "u" }, spec: {} }),
    );
    expect(input).toStrictEqual(before);
  });
});
