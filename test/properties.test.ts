import { describe, expect, it } from "@effect/vitest";
import { Effect, Either, Layer, Schema, TestClock } from "effect";
import fc from "fast-check";
import * as ConfigLayer from "../src/layers/Config.js";
import { MemoryDriver } from "../src/layers/CsiMemory.js";
import * as KubeMemory from "../src/layers/KubeMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { Driver } from "../src/programs/Driver.js";
import { Informers } from "../src/programs/Informers.js";
import { planCreateVolume } from "../src/programs/ProvisionPlan.js";
import { PersistentVolumeClaim } from "../src/schemas/PersistentVolumeClaim.js";
import { formatBinarySI, parseQuantity } from "../src/schemas/Quantity.js";
import { StorageClass } from "../src/schemas/StorageClass.js";
import { claim, driverName, storageClass } from "./support/Fixtures.js";
import { eventsOf, getRaw, harness, startProvisioner } from "./support/Harness.js";

const units = {
  "": 1n,
  Ki: 1n << 10n,
  Mi: 1n << 20n,
  Gi: 1n << 30n,
  Ti: 1n << 40n,
  k: 1000n,
  M: 10n ** 6n,
  G: 10n ** 9n,
};

describe("quantities", () => {
  it("parse(format(bytes)) is the identity for any byte count", () =>
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 1n << 62n }), (bytes) => {
        expect(parseQuantity(formatBinarySI(bytes))).toEqual(Either.right(bytes));
      }),
    ));

  it("<n><suffix> is n times the suffix's multiplier", () =>
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1_000_000 }),
        fc.constantFrom(...Object.keys(units)),
        (n, suffix) => {
          expect(parseQuantity(`${n}${suffix}`)).toEqual(
            Either.right(BigInt(n) * units[suffix as keyof typeof units]),
          );
        },
      ),
    ));

  it("fractions round up as Quantity.Value() does; garbage is an error", () => {
    expect(parseQuantity("1.5Gi")).toEqual(Either.right(1_610_612_736n));
    expect(parseQuantity("0.1")).toEqual(Either.right(1n));
    expect(parseQuantity("1e3")).toEqual(Either.right(1000n));
    expect(parseQuantity("500m")).toEqual(Either.right(1n));
    expect(Either.isLeft(parseQuantity("ten gigs"))).toBe(true);
    expect(Either.isLeft(parseQuantity(""))).toBe(true);
  });
});

const accessModes = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"];
const plainKey = fc
  .stringMatching(/^[a-zA-Z][a-zA-Z0-9._-]{0,20}$/)
  .filter((k) => k.toLowerCase() !== "fstype");

const planLayer = (className: string, classJson: unknown) =>
  Layer.mergeAll(
    KubeMemory.layerWithCluster(),
    ConfigLayer.layer(),
    Layer.succeed(Driver, {
      name: driverName,
      vendorVersion: "1",
      identity: "1-1-x",
      pluginCapabilities: new Set(["CONTROLLER_SERVICE"]),
      controllerCapabilities: new Set(["CREATE_DELETE_VOLUME"]),
    }),
    Layer.succeed(Informers, {
      claims: { get: () => undefined, values: () => [], size: () => 0 },
      volumes: { get: () => undefined, values: () => [], size: () => 0 },
      classes: {
        get: (name) =>
          name === className ? Schema.decodeUnknownSync(StorageClass)(classJson) : undefined,
        values: () => [],
        size: () => 1,
      },
    }),
  );

describe("building CreateVolume requests (SPEC §3) for arbitrary valid claims", () => {
  it.effect(
    "parameters pass through, one capability per access mode, required_bytes is the request",
    () =>
      Effect.gen(function* () {
        const samples = fc.sample(
          fc.record({
            modes: fc.subarray(accessModes, { minLength: 1 }),
            count: fc.integer({ min: 1, max: 4096 }),
            unit: fc.constantFrom("Mi", "Gi", "M", "G", ""),
            parameters: fc.dictionary(plainKey, fc.string({ maxLength: 20 }), { maxKeys: 6 }),
            block: fc.boolean(),
          }),
          { numRuns: 100, seed: 7 },
        );
        for (const sample of samples) {
          const classJson = storageClass("fast", { parameters: sample.parameters });
          const pvc = Schema.decodeUnknownSync(PersistentVolumeClaim)({
            ...claim("a", {
              uid: "11111111-2222-3333-4444-555555555555",
              accessModes: sample.modes,
              size: `${sample.count}${sample.unit}`,
              ...(sample.block ? { volumeMode: "Block" } : {}),
            }),
          });
          const plan = yield* planCreateVolume(
            pvc,
            Schema.decodeUnknownSync(StorageClass)(classJson),
            "",
          ).pipe(Effect.provide(planLayer("fast", classJson)));
          expect(plan.request.parameters).toEqual(sample.parameters);
          expect(plan.request.volume_capabilities).toHaveLength(sample.modes.length);
          expect(
            plan.request.volume_capabilities.every(
              (c) => (sample.block ? c.block : c.mount) !== undefined,
            ),
          ).toBe(true);
          expect(plan.request.capacity_range.required_bytes).toBe(
            BigInt(sample.count) * units[sample.unit as keyof typeof units],
          );
          expect(plan.request.name).toBe("pvc-11111111-2222-3333-4444-555555555555");
        }
      }),
  );
});

/** JSON of any shape, where a PVC's fields should be. */
const junk = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.constant(null),
  fc.boolean(),
  fc.array(fc.oneof(fc.string(), fc.integer(), fc.constantFrom(...accessModes)), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ maxLength: 8 }), fc.integer()), {
    maxKeys: 3,
  }),
);

const malformedClaim = fc.record(
  {
    accessModes: fc.oneof(junk, fc.subarray([...accessModes, "ReadSometimes"])),
    resources: fc.oneof(
      junk,
      fc.record({
        requests: fc.oneof(
          junk,
          fc.record({ storage: fc.oneof(junk, fc.constantFrom("1Gi", "-1", "1.5.5Gi", "")) }),
        ),
      }),
    ),
    volumeMode: fc.oneof(junk, fc.constantFrom("Block", "Filesystem")),
    dataSource: fc.oneof(
      junk,
      fc.record({
        kind: fc.constantFrom("VolumeSnapshot", "PersistentVolumeClaim", "Odd"),
        name: fc.string({ maxLength: 5 }),
      }),
    ),
    selector: junk,
    volumeAttributesClassName: junk,
  },
  { requiredKeys: [] },
);

describe("malformed claims never crash the pipeline (SPEC §2, §5)", () => {
  it.scoped(
    "every malformed claim is skipped or gets a ProvisioningFailed event; good claims still provision",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const driver = yield* MemoryDriver;
        yield* cluster.create("storageclasses", storageClass("fast"));
        yield* startProvisioner;
        const samples = fc.sample(malformedClaim, { numRuns: 60, seed: 42 });
        for (const [i, spec] of samples.entries()) {
          yield* cluster.create("persistentvolumeclaims", {
            metadata: {
              name: `bad-${i}`,
              namespace: "default",
              annotations: { "volume.kubernetes.io/storage-provisioner": driverName },
            },
            spec: { storageClassName: "fast", ...spec },
          });
        }
        yield* cluster.create("persistentvolumeclaims", claim("good"));
        yield* TestClock.adjust("30 seconds");

        expect((yield* getRaw("persistentvolumeclaims", "default/good")).status.phase).toBe(
          "Bound",
        );
        const volumes = yield* driver.volumes;
        for (const [i] of samples.entries()) {
          const name = `bad-${i}`;
          const pvc = yield* getRaw("persistentvolumeclaims", `default/${name}`);
          const events = yield* eventsOf(name);
          const provisioned = pvc.status?.phase === "Bound";
          const failed = events.some((e) => e.startsWith("Warning ProvisioningFailed"));
          const populator = events.some((e) => e.includes("external populator"));
          const skipped = events.length === 0;
          expect({ name, outcome: provisioned || failed || populator || skipped }).toEqual({
            name,
            outcome: true,
          });
        }
        // Every volume the driver holds belongs to a bound claim: nothing half-made.
        const bound = (yield* cluster.list("persistentvolumes")).length;
        expect(volumes.size).toBe(bound);
      }).pipe(Effect.provide(harness())),
  );
});
