import { describe, expect, it } from "@effect/vitest";
import { Cause, Effect, Either, Fiber, Option, TestClock } from "effect";
import { Csi, type CsiError } from "../src/layers/Csi.js";
import {
  Behaviour,
  echoPreferredTopology,
  layer,
  layerMemory,
  MemoryDriver,
  type MemoryDriverOptions,
  makeMemoryDriver,
} from "../src/layers/CsiMemory.js";
import type { CreateVolumeRequest, GetCapacityRequest } from "../src/schemas/Csi.js";

const GiB = 1n << 30n;

const mountRwo = {
  mount: { fs_type: "ext4", mount_flags: [] },
  access_mode: { mode: "SINGLE_NODE_WRITER" },
} as const;

const createRequest = (
  name: string,
  requiredBytes: bigint,
  extra: Partial<CreateVolumeRequest> = {},
): CreateVolumeRequest => ({
  name,
  capacity_range: { required_bytes: requiredBytes, limit_bytes: 0n },
  volume_capabilities: [mountRwo],
  parameters: {},
  secrets: {},
  mutable_parameters: {},
  ...extra,
});

const capacityRequest: GetCapacityRequest = { volume_capabilities: [mountRwo], parameters: {} };

/** Runs a test body against a fresh driver, reachable both as `Csi` and as `MemoryDriver`. */
const withDriver = <A, E>(
  body: Effect.Effect<A, E, Csi | MemoryDriver>,
  options: MemoryDriverOptions = {},
) => Effect.provide(body, layerMemory(options));

const errorOf = <A>(effect: Effect.Effect<A, CsiError>) =>
  Effect.flatMap(Effect.either(effect), (result) =>
    Either.isLeft(result) ? Effect.succeed(result.left) : Effect.die("expected a CsiError"),
  );

describe("memory CSI driver", () => {
  it.effect("CreateVolume is idempotent by name and numbers volumes deterministically", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const driver = yield* MemoryDriver;
        const first = yield* csi.createVolume(createRequest("pvc-a", 5n * GiB));
        const again = yield* csi.createVolume(createRequest("pvc-a", 5n * GiB));
        const other = yield* csi.createVolume(createRequest("pvc-b", 0n));

        expect(first.volume.volume_id).toBe("vol-1");
        expect(first.volume.capacity_bytes).toBe(5n * GiB);
        expect(again.volume).toEqual(first.volume);
        expect(other.volume.volume_id).toBe("vol-2");
        // required_bytes 0 leaves the size to the driver.
        expect(other.volume.capacity_bytes).toBe(GiB);
        expect([...(yield* driver.volumes).keys()]).toEqual(["vol-1", "vol-2"]);
        expect(yield* driver.callCount("CreateVolume")).toBe(3);
      }),
    ),
  );

  it.effect("an existing volume outside the requested range is ALREADY_EXISTS", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        yield* csi.createVolume(createRequest("pvc-a", 5n * GiB));
        const larger = yield* errorOf(csi.createVolume(createRequest("pvc-a", 6n * GiB)));
        expect(larger.code).toBe("AlreadyExists");
        expect(larger.method).toBe("CreateVolume");

        const capped = yield* errorOf(
          csi.createVolume(
            createRequest("pvc-a", GiB, {
              capacity_range: { required_bytes: GiB, limit_bytes: GiB },
            }),
          ),
        );
        expect(capped.code).toBe("AlreadyExists");

        // A smaller request is still satisfied by the existing volume.
        const smaller = yield* csi.createVolume(createRequest("pvc-a", GiB));
        expect(smaller.volume.volume_id).toBe("vol-1");
        expect(smaller.volume.capacity_bytes).toBe(5n * GiB);
      }),
    ),
  );

  it.effect("rejects a request without name or volume capabilities", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const driver = yield* MemoryDriver;
        const noName = yield* errorOf(csi.createVolume(createRequest("", GiB)));
        const noCaps = yield* errorOf(
          csi.createVolume(createRequest("pvc-a", GiB, { volume_capabilities: [] })),
        );
        expect([noName.code, noCaps.code]).toEqual(["InvalidArgument", "InvalidArgument"]);
        expect((yield* driver.volumes).size).toBe(0);
      }),
    ),
  );

  it.effect(
    "the capacity limit yields RESOURCE_EXHAUSTED and GetCapacity reports what is left",
    () =>
      withDriver(
        Effect.gen(function* () {
          const csi = yield* Csi;
          expect((yield* csi.getCapacity(capacityRequest)).available_capacity).toBe(10n * GiB);
          yield* csi.createVolume(createRequest("pvc-a", 6n * GiB));
          expect((yield* csi.getCapacity(capacityRequest)).available_capacity).toBe(4n * GiB);

          const tooBig = yield* errorOf(csi.createVolume(createRequest("pvc-b", 5n * GiB)));
          expect(tooBig.code).toBe("ResourceExhausted");
          expect(tooBig.message).toBe(
            `rpc error: code = ResourceExhausted desc = insufficient capacity: requested ${5n * GiB} bytes, ${4n * GiB} available`,
          );

          yield* csi.deleteVolume({ volume_id: "vol-1", secrets: {} });
          expect((yield* csi.getCapacity(capacityRequest)).available_capacity).toBe(10n * GiB);
          const fits = yield* csi.createVolume(createRequest("pvc-b", 5n * GiB));
          expect(fits.volume.volume_id).toBe("vol-2");
        }),
        { capacityLimitBytes: 10n * GiB },
      ),
  );

  it.effect("GetCapacity without a limit is large; without GET_CAPACITY it is unimplemented", () =>
    Effect.gen(function* () {
      const unlimited = yield* withDriver(
        Effect.flatMap(Csi, (csi) => csi.getCapacity(capacityRequest)),
      );
      expect(unlimited.available_capacity).toBe(1n << 60n);
      const missing = yield* withDriver(
        Effect.flatMap(Csi, (csi) => errorOf(csi.getCapacity(capacityRequest))),
        { controllerCapabilities: ["CREATE_DELETE_VOLUME"] },
      );
      expect(missing.code).toBe("Unimplemented");
    }),
  );

  it.effect("DeleteVolume is idempotent and accepts unknown ids", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const driver = yield* MemoryDriver;
        yield* csi.createVolume(createRequest("pvc-a", GiB));
        yield* csi.deleteVolume({ volume_id: "vol-1", secrets: {} });
        yield* csi.deleteVolume({ volume_id: "vol-1", secrets: {} });
        yield* csi.deleteVolume({ volume_id: "never-existed", secrets: {} });
        expect((yield* driver.volumes).size).toBe(0);
        expect((yield* driver.callsTo("DeleteVolume")).map((c) => c.outcome)).toEqual([
          { _tag: "Ok" },
          { _tag: "Ok" },
          { _tag: "Ok" },
        ]);
        // Re-creating under the same name after deletion is a new volume.
        const again = yield* csi.createVolume(createRequest("pvc-a", GiB));
        expect(again.volume.volume_id).toBe("vol-2");
      }),
    ),
  );

  it.effect("records what the driver received and stores it on the volume", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const driver = yield* MemoryDriver;
        const zoneA = { segments: { "topology.example.com/zone": "a" } };
        const zoneB = { segments: { "topology.example.com/zone": "b" } };
        const request = createRequest("pvc-a", GiB, {
          parameters: { type: "fast" },
          secrets: { password: "x" },
          mutable_parameters: { iops: "3000" },
          accessibility_requirements: { requisite: [zoneA, zoneB], preferred: [zoneB, zoneA] },
        });
        const created = yield* csi.createVolume(request);
        expect(created.volume.accessible_topology).toEqual([zoneB]);
        expect(created.volume.volume_context).toEqual({ pool: "fast" });

        const volume = Option.getOrThrow(yield* driver.volumeByName("pvc-a"));
        expect(volume.parameters).toEqual({ type: "fast" });
        expect(volume.secrets).toEqual({ password: "x" });
        expect(volume.mutableParameters).toEqual({ iops: "3000" });
        expect(volume.accessibilityRequirements).toEqual(request.accessibility_requirements);
        expect((yield* driver.callsTo("CreateVolume"))[0]?.request).toEqual(request);
      }),
      {
        pluginCapabilities: ["CONTROLLER_SERVICE", "VOLUME_ACCESSIBILITY_CONSTRAINTS"],
        controllerCapabilities: ["CREATE_DELETE_VOLUME", "MODIFY_VOLUME"],
        accessibleTopology: echoPreferredTopology,
        volumeContext: (request) => ({ pool: request.parameters.type ?? "" }),
      },
    ),
  );

  it.effect("restores existing snapshots, echoing the content source, else NOT_FOUND", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const source = { snapshot: { snapshot_id: "snap-1" } };
        const restored = yield* csi.createVolume(
          createRequest("pvc-a", GiB, { volume_content_source: source }),
        );
        expect(restored.volume.content_source).toEqual({ ...source, type: "snapshot" });
        // Never smaller than the snapshot.
        expect(restored.volume.capacity_bytes).toBe(2n * GiB);

        const missing = yield* errorOf(
          csi.createVolume(
            createRequest("pvc-b", GiB, {
              volume_content_source: { snapshot: { snapshot_id: "snap-404" } },
            }),
          ),
        );
        expect(missing.code).toBe("NotFound");
      }),
      {
        controllerCapabilities: ["CREATE_DELETE_VOLUME", "CREATE_DELETE_SNAPSHOT"],
        snapshots: { "snap-1": 2n * GiB },
      },
    ),
  );

  it.effect("identity and capability calls answer from the driver's state", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const driver = yield* MemoryDriver;
        expect(yield* csi.probe).toEqual({ ready: { value: false } });
        yield* driver.setReadiness("absent");
        expect(yield* csi.probe).toEqual({});
        yield* driver.setReadiness("ready");
        expect(yield* csi.probe).toEqual({ ready: { value: true } });

        expect(yield* csi.getPluginInfo).toEqual({
          name: "disk.example.com",
          vendor_version: "9.9",
        });
        expect(yield* csi.getPluginCapabilities).toEqual({
          capabilities: [
            { service: { type: "CONTROLLER_SERVICE" } },
            { service: { type: "VOLUME_ACCESSIBILITY_CONSTRAINTS" } },
          ],
        });
        expect(yield* csi.controllerGetCapabilities).toEqual({
          capabilities: [{ rpc: { type: "CREATE_DELETE_VOLUME" } }, { rpc: { type: 99 } }],
        });
      }),
      {
        name: "disk.example.com",
        vendorVersion: "9.9",
        readiness: "not-ready",
        pluginCapabilities: ["CONTROLLER_SERVICE", "VOLUME_ACCESSIBILITY_CONSTRAINTS"],
        controllerCapabilities: ["CREATE_DELETE_VOLUME", 99],
      },
    ),
  );

  it.effect("the defaults: memory.csi.example.com with CREATE_DELETE_VOLUME and GET_CAPACITY", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        expect((yield* csi.getPluginInfo).name).toBe("memory.csi.example.com");
        expect(yield* csi.probe).toEqual({ ready: { value: true } });
        expect(yield* csi.getPluginCapabilities).toEqual({
          capabilities: [{ service: { type: "CONTROLLER_SERVICE" } }],
        });
        expect(yield* csi.controllerGetCapabilities).toEqual({
          capabilities: [
            { rpc: { type: "CREATE_DELETE_VOLUME" } },
            { rpc: { type: "GET_CAPACITY" } },
          ],
        });
      }),
    ),
  );

  it.effect("a scripted Fail answers with that gRPC code once, then the driver is real again", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const driver = yield* MemoryDriver;
        yield* driver.script("CreateVolume", Behaviour.fail("Unavailable", "backend down"));
        const failed = yield* errorOf(csi.createVolume(createRequest("pvc-a", GiB)));
        expect(failed.code).toBe("Unavailable");
        expect(failed.message).toBe("rpc error: code = Unavailable desc = backend down");
        expect((yield* driver.volumes).size).toBe(0);

        const created = yield* csi.createVolume(createRequest("pvc-a", GiB));
        expect(created.volume.volume_id).toBe("vol-1");
        expect((yield* driver.callsTo("CreateVolume")).map((c) => c.outcome)).toEqual([
          { _tag: "Failed", code: "Unavailable", detail: "backend down" },
          { _tag: "Ok" },
        ]);
      }),
    ),
  );

  it.effect("a scripted garbage answer fails decoding: CsiError without a gRPC code", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const driver = yield* MemoryDriver;
        yield* driver.script(
          "CreateVolume",
          Behaviour.respond({ volume: { volume_id: "", capacity_bytes: "1" } }),
          Behaviour.respond("garbage"),
          Behaviour.respond({ volume: { volume_id: "vol-x", capacity_bytes: "0" } }),
        );
        yield* driver.script("DeleteVolume", Behaviour.respond(42));

        const empty = yield* errorOf(csi.createVolume(createRequest("pvc-a", GiB)));
        expect(empty.code).toBeUndefined();
        expect(empty.detail).toContain("the driver's answer to CreateVolume was invalid");
        expect(empty.detail).toContain("volume_id is empty");
        expect(empty.message).toBe(empty.detail);
        const garbage = yield* errorOf(csi.createVolume(createRequest("pvc-a", GiB)));
        expect(garbage.code).toBeUndefined();

        // A well-formed scripted answer passes through; the driver's state is untouched.
        const scripted = yield* csi.createVolume(createRequest("pvc-a", GiB));
        expect(scripted.volume).toEqual({
          volume_id: "vol-x",
          capacity_bytes: 0n,
          volume_context: {},
          accessible_topology: [],
        });
        expect((yield* driver.volumes).size).toBe(0);

        const deleteError = yield* errorOf(csi.deleteVolume({ volume_id: "vol-1", secrets: {} }));
        expect(deleteError.code).toBeUndefined();
        expect((yield* driver.callsTo("CreateVolume"))[0]?.outcome).toMatchObject({
          _tag: "Failed",
          code: undefined,
        });
      }),
    ),
  );

  it.effect("a Hang never answers: the caller's timeout fires at virtual 10s", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const driver = yield* MemoryDriver;
        yield* driver.script("Probe", Behaviour.hang);
        const fiber = yield* Effect.fork(
          csi.probe.pipe(
            Effect.timeout("10 seconds"),
            Effect.either,
            Effect.zip(TestClock.currentTimeMillis),
          ),
        );
        yield* TestClock.adjust("10 seconds");
        const [result, failedAt] = yield* Fiber.join(fiber);
        expect(Either.isLeft(result) && Cause.isTimeoutException(result.left)).toBe(true);
        expect(failedAt).toBe(10_000);
        expect(yield* driver.calls).toEqual([
          {
            seq: 1,
            method: "Probe",
            request: undefined,
            startedAt: 0,
            endedAt: undefined,
            abandonedAt: 10_000,
            outcome: { _tag: "Pending" },
          },
        ]);
        // The script is consumed: the next Probe answers.
        expect(yield* csi.probe).toEqual({ ready: { value: true } });
      }),
    ),
  );

  it.effect("a delayed CreateVolume outlives the caller's timeout and leaks the volume", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const driver = yield* MemoryDriver;
        yield* driver.script("CreateVolume", Behaviour.delay("30 seconds"));
        const fiber = yield* Effect.fork(
          csi
            .createVolume(createRequest("pvc-a", GiB))
            .pipe(
              Effect.timeout("10 seconds"),
              Effect.either,
              Effect.zip(TestClock.currentTimeMillis),
            ),
        );
        yield* TestClock.adjust("10 seconds");
        const [result, failedAt] = yield* Fiber.join(fiber);
        expect(Either.isLeft(result) && Cause.isTimeoutException(result.left)).toBe(true);
        expect(failedAt).toBe(10_000);
        expect((yield* driver.volumes).size).toBe(0);

        yield* TestClock.adjust("19 seconds");
        expect((yield* driver.volumes).size).toBe(0);
        yield* TestClock.adjust("1 second");
        const volume = Option.getOrThrow(yield* driver.volumeByName("pvc-a"));
        expect(volume.volumeId).toBe("vol-1");
        expect(volume.createdAt).toBe(30_000);

        // The retry with the same name finds the volume the abandoned call created.
        const retried = yield* csi.createVolume(createRequest("pvc-a", GiB));
        expect(retried.volume.volume_id).toBe("vol-1");
        const calls = yield* driver.callsTo("CreateVolume");
        expect(
          calls.map(({ startedAt, endedAt, abandonedAt, outcome }) => ({
            startedAt,
            endedAt,
            abandonedAt,
            outcome,
          })),
        ).toEqual([
          { startedAt: 0, endedAt: 30_000, abandonedAt: 10_000, outcome: { _tag: "Ok" } },
          { startedAt: 30_000, endedAt: 30_000, abandonedAt: undefined, outcome: { _tag: "Ok" } },
        ]);
      }),
    ),
  );

  it.effect("with a deadline the caller gets DeadlineExceeded, as over gRPC", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const driver = yield* MemoryDriver;
        yield* driver.script("CreateVolume", Behaviour.delay("30 seconds"));
        const fiber = yield* Effect.fork(
          errorOf(csi.createVolume(createRequest("pvc-a", GiB))).pipe(
            Effect.zip(TestClock.currentTimeMillis),
          ),
        );
        yield* TestClock.adjust("10 seconds");
        const [error, at] = yield* Fiber.join(fiber);
        expect(error.message).toBe("rpc error: code = DeadlineExceeded desc = Deadline exceeded");
        expect(at).toBe(10_000);
        yield* TestClock.adjust("20 seconds");
        expect((yield* driver.callsTo("CreateVolume"))[0]).toMatchObject({
          endedAt: 30_000,
          abandonedAt: 10_000,
          outcome: { _tag: "Ok" },
        });
        expect((yield* driver.volumes).has("vol-1")).toBe(true);
      }),
      { deadline: "10 seconds" },
    ),
  );

  it.effect(
    "a Delay can end in another behaviour; a waiting caller gets it at the right time",
    () =>
      withDriver(
        Effect.gen(function* () {
          const csi = yield* Csi;
          const driver = yield* MemoryDriver;
          yield* driver.script(
            "DeleteVolume",
            Behaviour.delay("2 seconds", Behaviour.fail("Aborted", "operation pending")),
          );
          const fiber = yield* Effect.fork(
            csi
              .deleteVolume({ volume_id: "vol-1", secrets: {} })
              .pipe(Effect.either, Effect.zip(TestClock.currentTimeMillis)),
          );
          yield* TestClock.adjust("2 seconds");
          const [result, at] = yield* Fiber.join(fiber);
          expect(Either.isLeft(result) && result.left.code).toBe("Aborted");
          expect(at).toBe(2_000);
          expect(yield* driver.pendingScript("DeleteVolume")).toEqual([]);
        }),
      ),
  );

  it.effect("scripts given as options apply from the first call", () =>
    withDriver(
      Effect.gen(function* () {
        const csi = yield* Csi;
        const first = yield* errorOf(csi.probe);
        expect(first.code).toBe("DeadlineExceeded");
        expect(yield* csi.probe).toEqual({ ready: { value: true } });
      }),
      { scripts: { Probe: [Behaviour.fail("DeadlineExceeded")] } },
    ),
  );

  it.scoped("layer(driver) provides Csi backed by a driver the test holds", () =>
    Effect.gen(function* () {
      const driver = yield* makeMemoryDriver({ capacityLimitBytes: GiB });
      const created = yield* Effect.provide(
        Effect.flatMap(Csi, (csi) => csi.createVolume(createRequest("pvc-a", GiB))),
        layer(driver),
      );
      expect(created.volume.volume_id).toBe("vol-1");
      expect(yield* driver.usedBytes).toBe(GiB);
    }),
  );
});
