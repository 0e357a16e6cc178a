import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "@effect/vitest";
import * as grpc from "@grpc/grpc-js";
import {
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Option,
  Scope,
} from "effect";
import {
  type DriverOptions,
  defaultDriverOptions,
  parseDriverFlags,
  parseStatusCode,
} from "../src/driver/flags.js";
import { type RunningDriver, startDriver } from "../src/driver/server.js";
import * as ConfigLayer from "../src/layers/Config.js";
import { Csi, CsiError } from "../src/layers/Csi.js";
import {
  CsiConnection,
  type CsiConnectionError,
  layerWith,
  loadCsiProto,
  makeCsiGrpc,
} from "../src/layers/CsiGrpc.js";
import { withTimeout } from "../src/programs/CsiCalls.js";
import { connectDriver } from "../src/programs/Driver.js";
import type { CreateVolumeRequest } from "../src/schemas/Csi.js";

const GiB = 1n << 30n;

/** Real time and sockets; the layer's connection logs stay out of the test output. */
const live = <A, E>(name: string, body: () => Effect.Effect<A, E, Scope.Scope>) =>
  it.scopedLive(name, () => Logger.withMinimumLogLevel(body(), LogLevel.None));

const createRequest = (name: string, requiredBytes: bigint): CreateVolumeRequest => ({
  name,
  capacity_range: { required_bytes: requiredBytes, limit_bytes: 0n },
  volume_capabilities: [
    { mount: { fs_type: "ext4", mount_flags: [] }, access_mode: { mode: "SINGLE_NODE_WRITER" } },
  ],
  parameters: { type: "fast" },
  secrets: {},
  mutable_parameters: {},
});

const capacityRequest = {
  volume_capabilities: createRequest("x", 0n).volume_capabilities,
  parameters: {},
};

/** A fresh directory for one test, removed with the scope. */
const tempDir = Effect.acquireRelease(
  Effect.promise(() => mkdtemp(join(tmpdir(), "csi-grpc-"))),
  (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true })),
);

interface Running {
  readonly driver: RunningDriver;
  readonly dir: string;
  readonly lines: Array<string>;
}

/** The reference driver in-process on a temp socket, closed with the scope. */
const withReferenceDriver = (overrides: Partial<DriverOptions> = {}, dir?: string) =>
  Effect.gen(function* () {
    const base = dir ?? (yield* tempDir);
    const lines: Array<string> = [];
    const driver = yield* Effect.acquireRelease(
      Effect.promise(() =>
        startDriver(
          {
            ...defaultDriverOptions(),
            endpoint: join(base, "csi.sock"),
            root: join(base, "volumes"),
            capacityBytes: 10n * GiB,
            seed: 1,
            ...overrides,
          },
          { log: (line) => lines.push(line) },
        ),
      ),
      (running) => Effect.promise(() => running.close()),
    );
    return { driver, dir: base, lines } satisfies Running;
  });

const csiLayer = (driver: RunningDriver, timeout: Duration.DurationInput = "2 seconds") =>
  layerWith({
    address: `unix://${driver.socketPath}`,
    timeout,
    connectTimeout: "2 seconds",
  });

/** Runs `body` with `Csi` and `CsiConnection` over gRPC to `driver`. */
const overGrpc = <A, E>(
  driver: RunningDriver,
  body: Effect.Effect<A, E, Csi | CsiConnection>,
  timeout?: Duration.DurationInput,
) => Effect.provide(body, csiLayer(driver, timeout));

const errorOf = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.either(effect), (result) =>
    Either.isLeft(result) && result.left instanceof CsiError
      ? Effect.succeed(result.left)
      : Effect.die(`expected a CsiError, got ${JSON.stringify(result)}`),
  );

describe("CsiGrpc against the reference driver", () => {
  live("Probe, plugin info and capabilities; start-up succeeds over the wire", () =>
    Effect.gen(function* () {
      const { driver, lines } = yield* withReferenceDriver({
        name: "ref.csi.test",
        topology: true,
        nodeId: "node-1",
        publishUnpublish: true,
      });
      yield* overGrpc(
        driver,
        Effect.gen(function* () {
          const csi = yield* Csi;
          expect(yield* csi.probe).toEqual({ ready: { value: true } });
          expect(yield* csi.getPluginInfo).toEqual({
            name: "ref.csi.test",
            vendor_version: "0.1.0",
          });
          const plugin = yield* csi.getPluginCapabilities;
          expect(plugin.capabilities.map((c) => c.service?.type)).toEqual([
            "CONTROLLER_SERVICE",
            "VOLUME_ACCESSIBILITY_CONSTRAINTS",
          ]);
          const controller = yield* csi.controllerGetCapabilities;
          expect(controller.capabilities.map((c) => c.rpc?.type)).toEqual([
            "CREATE_DELETE_VOLUME",
            "GET_CAPACITY",
            "PUBLISH_UNPUBLISH_VOLUME",
          ]);

          const info = yield* connectDriver.pipe(
            Effect.provide(ConfigLayer.layer({ timeout: Duration.seconds(2) })),
          );
          expect(info.name).toBe("ref.csi.test");
          expect([...info.controllerCapabilities]).toContain("CREATE_DELETE_VOLUME");
        }),
      );
      expect(lines.filter((line) => / Probe -> OK ready=true /.test(line))).toHaveLength(2);
    }),
  );

  live("a driver that is not ready yet answers ready=false", () =>
    Effect.gen(function* () {
      const { driver } = yield* withReferenceDriver({ readyAfterMs: 60_000 });
      const probe = yield* overGrpc(
        driver,
        Effect.flatMap(Csi, (csi) => csi.probe),
      );
      expect(probe).toEqual({ ready: { value: false } });
    }),
  );

  live(
    "CreateVolume is idempotent by name, ALREADY_EXISTS when larger, RESOURCE_EXHAUSTED past the capacity",
    () =>
      Effect.gen(function* () {
        const { driver } = yield* withReferenceDriver({ capacityBytes: 10n * GiB });
        yield* overGrpc(
          driver,
          Effect.gen(function* () {
            const csi = yield* Csi;
            const first = yield* csi.createVolume(createRequest("pvc-a", 4n * GiB));
            const again = yield* csi.createVolume(createRequest("pvc-a", 4n * GiB));
            expect(again).toEqual(first);
            expect(first.volume.capacity_bytes).toBe(4n * GiB);
            expect(first.volume.volume_id).toMatch(/^[0-9a-f-]{36}$/);
            expect(first.volume.volume_context.path).toBe(
              driver.store.dirOf(first.volume.volume_id),
            );
            // A smaller request is satisfied by the existing volume.
            const smaller = yield* csi.createVolume(createRequest("pvc-a", GiB));
            expect(smaller.volume.volume_id).toBe(first.volume.volume_id);

            const larger = yield* errorOf(csi.createVolume(createRequest("pvc-a", 5n * GiB)));
            expect(larger.code).toBe("AlreadyExists");
            expect(larger.method).toBe("CreateVolume");

            yield* csi.createVolume(createRequest("pvc-b", 5n * GiB));
            const full = yield* errorOf(csi.createVolume(createRequest("pvc-c", 2n * GiB)));
            expect(full.code).toBe("ResourceExhausted");
            expect(full.message).toBe(
              "rpc error: code = ResourceExhausted desc = insufficient capacity: requested 2147483648 bytes, 1073741824 available",
            );

            expect(yield* csi.getCapacity(capacityRequest)).toEqual({ available_capacity: GiB });

            const invalid = yield* errorOf(csi.createVolume(createRequest("", GiB)));
            expect(invalid.code).toBe("InvalidArgument");
          }),
        );
        const files = yield* Effect.promise(() => readdir(driver.options.root));
        expect(files.filter((f) => f.endsWith(".json"))).toHaveLength(2);
      }),
  );

  live("DeleteVolume is idempotent and frees capacity; state survives a restart", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir;
      const scope = yield* Scope.make();
      const first = yield* Scope.extend(withReferenceDriver({}, dir), scope);
      const created = yield* overGrpc(
        first.driver,
        Effect.flatMap(Csi, (csi) =>
          Effect.zip(
            csi.createVolume(createRequest("pvc-keep", 3n * GiB)),
            csi.createVolume(createRequest("pvc-drop", 2n * GiB)),
          ),
        ),
      );
      yield* Scope.close(scope, Exit.void);

      // A new process on the same root knows both volumes.
      const { driver } = yield* withReferenceDriver({}, dir);
      yield* overGrpc(
        driver,
        Effect.gen(function* () {
          const csi = yield* Csi;
          const again = yield* csi.createVolume(createRequest("pvc-keep", 3n * GiB));
          expect(again.volume.volume_id).toBe(created[0].volume.volume_id);
          expect(yield* csi.getCapacity(capacityRequest)).toEqual({
            available_capacity: 5n * GiB,
          });

          const drop = { volume_id: created[1].volume.volume_id, secrets: {} };
          yield* csi.deleteVolume(drop);
          yield* csi.deleteVolume(drop);
          yield* csi.deleteVolume({ volume_id: "never-existed", secrets: {} });
          expect(yield* csi.getCapacity(capacityRequest)).toEqual({
            available_capacity: 7n * GiB,
          });
          const missing = yield* errorOf(csi.deleteVolume({ volume_id: "", secrets: {} }));
          expect(missing.code).toBe("InvalidArgument");
        }),
      );
      expect(driver.store.list().map((v) => v.name)).toEqual(["pvc-keep"]);
    }),
  );

  live(
    "a CreateVolume slower than the deadline is DeadlineExceeded, and the driver finishes it",
    () =>
      Effect.gen(function* () {
        const { driver } = yield* withReferenceDriver({
          create: { delayMs: 400, delayCalls: 2, failRate: 0, failCode: grpc.status.UNAVAILABLE },
        });
        yield* overGrpc(
          driver,
          Effect.gen(function* () {
            const csi = yield* Csi;
            // The gRPC deadline of the layer (150 ms).
            const deadline = yield* errorOf(csi.createVolume(createRequest("pvc-slow", GiB)));
            expect(deadline.code).toBe("DeadlineExceeded");
            // The program's own timeout, shorter than the gRPC deadline, fails the same way.
            const timedOut = yield* errorOf(
              withTimeout("CreateVolume", csi.createVolume(createRequest("pvc-slow", GiB))).pipe(
                Effect.provide(ConfigLayer.layer({ timeout: Duration.millis(50) })),
              ),
            );
            expect(timedOut.code).toBe("DeadlineExceeded");
            // The first call's work completes on the driver's side after the caller gave up.
            yield* Effect.sleep("450 millis");
            const done = yield* csi.createVolume(createRequest("pvc-slow", GiB));
            expect(driver.store.list().map((v) => v.volume_id)).toEqual([done.volume.volume_id]);
          }),
          "150 millis",
        );
      }),
  );

  live("injected failures keep their gRPC code and replay with the same seed", () =>
    Effect.gen(function* () {
      const outcomes = (seed: number) =>
        Effect.scoped(
          Effect.gen(function* () {
            const { driver } = yield* withReferenceDriver({
              seed,
              create: {
                delayMs: 0,
                delayCalls: undefined,
                failRate: 0.5,
                failCode: grpc.status.RESOURCE_EXHAUSTED,
              },
            });
            return yield* overGrpc(
              driver,
              Effect.flatMap(Csi, (csi) =>
                Effect.forEach(
                  Array.from({ length: 12 }, (_, i) => i),
                  (i) =>
                    Effect.match(csi.createVolume(createRequest(`pvc-${i}`, 1024n)), {
                      onFailure: (error) => error.code ?? "none",
                      onSuccess: () => "OK",
                    }),
                ),
              ),
            );
          }),
        );
      const first = yield* outcomes(7);
      expect(yield* outcomes(7)).toEqual(first);
      expect(new Set(first)).toEqual(new Set(["OK", "ResourceExhausted"]));
      expect(yield* outcomes(8)).not.toEqual(first);
    }),
  );

  live("topology: requisite elsewhere is RESOURCE_EXHAUSTED; clones copy their source", () =>
    Effect.gen(function* () {
      const { driver } = yield* withReferenceDriver({
        topology: true,
        nodeId: "node-1",
        zone: "z1",
        clone: true,
      });
      const here = { "topology.hostpath.csi.effect.dev/node": "node-1" };
      const elsewhere = { "topology.hostpath.csi.effect.dev/node": "node-2" };
      const withTopology = (name: string, requisite: ReadonlyArray<Record<string, string>>) => ({
        ...createRequest(name, GiB),
        accessibility_requirements: {
          requisite: requisite.map((segments) => ({ segments })),
          preferred: [],
        },
      });
      yield* overGrpc(
        driver,
        Effect.gen(function* () {
          const csi = yield* Csi;
          const placed = yield* csi.createVolume(withTopology("pvc-a", [elsewhere, here]));
          expect(placed.volume.accessible_topology).toEqual([
            { segments: { ...here, "topology.kubernetes.io/zone": "z1" } },
          ]);
          const refused = yield* errorOf(csi.createVolume(withTopology("pvc-b", [elsewhere])));
          expect(refused.code).toBe("ResourceExhausted");
          const capacityElsewhere = yield* csi.getCapacity({
            ...capacityRequest,
            accessible_topology: { segments: elsewhere },
          });
          expect(capacityElsewhere.available_capacity).toBe(0n);

          yield* Effect.promise(() =>
            writeFile(join(driver.store.dirOf(placed.volume.volume_id), "data.txt"), "hello"),
          );
          const clone = yield* csi.createVolume({
            ...createRequest("pvc-clone", GiB),
            volume_content_source: { volume: { volume_id: placed.volume.volume_id } },
          });
          expect(clone.volume.content_source).toEqual({
            volume: { volume_id: placed.volume.volume_id },
            type: "volume",
          });
          const copied = yield* Effect.promise(() =>
            readFile(join(driver.store.dirOf(clone.volume.volume_id), "data.txt"), "utf8"),
          );
          expect(copied).toBe("hello");
          const missing = yield* errorOf(
            csi.createVolume({
              ...createRequest("pvc-orphan", GiB),
              volume_content_source: { volume: { volume_id: "nope" } },
            }),
          );
          expect(missing.code).toBe("NotFound");
        }),
      );
    }),
  );

  live("RPCs the driver does not serve answer UNIMPLEMENTED", () =>
    Effect.gen(function* () {
      const { driver } = yield* withReferenceDriver();
      const proto = loadCsiProto();
      const client = new proto.csi.v1.Controller(
        `unix:${driver.socketPath}`,
        grpc.credentials.createInsecure(),
      );
      yield* Effect.addFinalizer(() => Effect.sync(() => client.close()));
      const code = (call: (cb: grpc.requestCallback<unknown>) => void) =>
        Effect.async<number | undefined>((resume) =>
          call((error) => resume(Effect.succeed(error?.code))),
        );
      const deadline = () => ({ deadline: Date.now() + 2000 });
      expect(yield* code((cb) => client.ListVolumes({}, deadline(), cb))).toBe(
        grpc.status.UNIMPLEMENTED,
      );
      expect(
        yield* code((cb) => client.ControllerPublishVolume({ volume_id: "v" }, deadline(), cb)),
      ).toBe(grpc.status.UNIMPLEMENTED);
      expect(yield* code((cb) => client.CreateSnapshot({ name: "s" }, deadline(), cb))).toBe(
        grpc.status.UNIMPLEMENTED,
      );
    }),
  );

  live("connection loss is detected when the driver goes away", () =>
    Effect.gen(function* () {
      const { driver } = yield* withReferenceDriver();
      yield* overGrpc(
        driver,
        Effect.gen(function* () {
          const csi = yield* Csi;
          const connection = yield* CsiConnection;
          yield* csi.probe;
          expect(yield* connection.state).toBe("READY");
          const watcher = yield* Effect.fork(Effect.flip(connection.lost));
          yield* Effect.sleep("50 millis");
          expect(yield* connection.isLost).toEqual(Option.none());

          yield* Effect.promise(() => driver.close());
          const lost = yield* Fiber.join(watcher).pipe(
            Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => "not detected" }),
          );
          expect(lost.reason).toBe("Lost");
          expect(lost.message).toMatch(
            /^lost connection to the CSI driver at .*csi\.sock: channel went from READY to /,
          );
          expect(Option.isSome(yield* connection.isLost)).toBe(true);
          const after = yield* errorOf(csi.probe);
          expect(after.code).toBe("Unavailable");
        }),
      );
    }),
  );

  live("closing the layer closes the channel without reporting a loss", () =>
    Effect.gen(function* () {
      const { driver } = yield* withReferenceDriver();
      const scope = yield* Scope.make();
      const handle = yield* makeCsiGrpc({
        address: driver.socketPath,
        timeout: "1 second",
      }).pipe(Scope.extend(scope));
      yield* handle.service.probe;
      yield* Scope.close(scope, Exit.void);
      yield* Effect.sleep("100 millis");
      expect(yield* handle.connection.isLost).toEqual(Option.none());
      expect(yield* handle.connection.state).toBe("SHUTDOWN");
    }),
  );

  live("a socket nobody serves is Unreachable after connectTimeout", () =>
    Effect.gen(function* () {
      const dir = yield* tempDir;
      const error = yield* Effect.flip(
        Layer.build(
          layerWith({
            address: `unix://${join(dir, "nobody.sock")}`,
            timeout: "1 second",
            connectTimeout: "300 millis",
            connectLogInterval: "100 millis",
          }),
        ),
      );
      expect((error as CsiConnectionError).reason).toBe("Unreachable");
    }),
  );
});

describe("CsiGrpc against a driver that answers garbage", () => {
  /** A tiny server whose CreateVolume answers with whatever `reply` says. */
  const garbageServer = (reply: Record<string, unknown>) =>
    Effect.gen(function* () {
      const dir = yield* tempDir;
      const socket = join(dir, "garbage.sock");
      const proto = loadCsiProto();
      const server = new grpc.Server();
      server.addService(proto.csi.v1.Controller.service, {
        CreateVolume: (_call: unknown, callback: grpc.sendUnaryData<unknown>) =>
          callback(null, reply),
        GetCapacity: (_call: unknown, callback: grpc.sendUnaryData<unknown>) =>
          callback(null, { available_capacity: "-5" }),
      });
      yield* Effect.acquireRelease(
        Effect.async<void, Error>((resume) =>
          server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (error) =>
            resume(error ? Effect.fail(error) : Effect.void),
          ),
        ),
        () => Effect.sync(() => server.forceShutdown()),
      );
      return socket;
    });

  live("an empty volume_id is CsiError without a gRPC code", () =>
    Effect.gen(function* () {
      const socket = yield* garbageServer({ volume: { volume_id: "", capacity_bytes: "1024" } });
      const error = yield* errorOf(
        Effect.flatMap(Csi, (csi) => csi.createVolume(createRequest("pvc-a", GiB))).pipe(
          Effect.provide(layerWith({ address: socket, timeout: "1 second" })),
        ),
      );
      expect(error.code).toBeUndefined();
      expect(error.method).toBe("CreateVolume");
      expect(error.detail).toContain("the driver's answer to CreateVolume was invalid");
      expect(error.detail).toContain("volume_id is empty");
    }),
  );

  live("a missing volume is CsiError without a gRPC code", () =>
    Effect.gen(function* () {
      const socket = yield* garbageServer({});
      const error = yield* errorOf(
        Effect.flatMap(Csi, (csi) => csi.createVolume(createRequest("pvc-a", GiB))).pipe(
          Effect.provide(layerWith({ address: socket, timeout: "1 second" })),
        ),
      );
      expect(error.code).toBeUndefined();
      // Services the server lacks are still plain gRPC statuses.
      const probe = yield* errorOf(
        Effect.flatMap(Csi, (csi) => csi.probe).pipe(
          Effect.provide(layerWith({ address: socket, timeout: "1 second" })),
        ),
      );
      expect(probe.code).toBe("Unimplemented");
    }),
  );
});

describe("reference driver flags", () => {
  it("parses endpoints, capacities, capabilities and faults", () => {
    const parsed = parseDriverFlags([
      "--endpoint",
      "unix:///run/csi/x.sock",
      "--root=/srv/vols",
      "--capacity=10Gi",
      "--topology",
      "--node-id=n1",
      "--zone",
      "z1",
      "--clone",
      "--delay-create=1m30s",
      "--delay-create-calls=2",
      "--fail-create-rate=0.25",
      "--fail-create-code=ResourceExhausted",
      "--fail-delete-rate=1",
      "--fail-delete-code=ABORTED",
      "--seed=42",
    ]);
    expect(parsed._tag).toBe("Run");
    if (parsed._tag !== "Run") return;
    expect(parsed.options).toMatchObject({
      endpoint: "/run/csi/x.sock",
      root: "/srv/vols",
      capacityBytes: 10n * GiB,
      topology: true,
      nodeId: "n1",
      zone: "z1",
      clone: true,
      publishUnpublish: false,
      create: {
        delayMs: 90_000,
        delayCalls: 2,
        failRate: 0.25,
        failCode: grpc.status.RESOURCE_EXHAUSTED,
      },
      delete: { delayMs: 0, delayCalls: undefined, failRate: 1, failCode: grpc.status.ABORTED },
      seed: 42,
    });
    expect(parseDriverFlags([], { CSI_ENDPOINT: "unix:/tmp/e.sock" })).toMatchObject({
      options: { endpoint: "/tmp/e.sock", name: "hostpath.csi.effect.dev" },
    });
  });

  it("names every bad flag at once", () => {
    expect(
      parseDriverFlags([
        "--fail-create-rate=2",
        "--fail-create-code=Nope",
        "--delay-delete=soon",
        "--capacity=lots",
        "--bogus=1",
      ]),
    ).toEqual({
      _tag: "Invalid",
      problems: [
        "--capacity: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got \"lots\"",
        '--fail-create-rate: expected a number between 0 and 1, got "2"',
        '--fail-create-code: expected a gRPC code other than OK, got "Nope"',
        '--delay-delete: expected a duration such as 10s, 1m30s or 300ms, got "soon"',
        "unknown flag: --bogus",
      ],
    });
  });

  it("reads gRPC codes in grpc-go, enum and numeric spellings", () => {
    expect(parseStatusCode("DeadlineExceeded")).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(parseStatusCode("Canceled")).toBe(grpc.status.CANCELLED);
    expect(parseStatusCode("UNAVAILABLE")).toBe(grpc.status.UNAVAILABLE);
    expect(parseStatusCode("8")).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(parseStatusCode("17")).toBeUndefined();
  });
});
