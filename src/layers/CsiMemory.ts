import {
  Cause,
  Clock,
  Context,
  type Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  Layer,
  Option,
  Ref,
  type Schema,
  type Scope,
} from "effect";
import {
  ControllerGetCapabilitiesResponse,
  type CreateVolumeRequest,
  CreateVolumeResponse,
  type DeleteVolumeRequest,
  DeleteVolumeResponse,
  type GetCapacityRequest,
  GetCapacityResponse,
  GetPluginCapabilitiesResponse,
  GetPluginInfoResponse,
  ProbeResponse,
  type Topology,
  type TopologyRequirement,
  type VolumeCapability,
  type VolumeContentSource,
} from "../schemas/Csi.js";
import type { StringMap } from "../schemas/Field.js";
import {
  Csi,
  CsiError,
  type CsiMethod,
  type CsiService,
  decodeReply,
  type GrpcCodeName,
} from "./Csi.js";

/**
 * An in-memory CSI driver for tests and the demo. It keeps real state (volumes, capacity,
 * snapshots) with the semantics a well-behaved driver has, and each method can be scripted to fail,
 * stall, hang or answer arbitrary wire objects. Answers are built in the shape @grpc/proto-loader
 * hands out (keepCase, longs: String, enums: String, defaults, oneofs) and decoded with the same
 * schemas as the gRPC layer, so a malformed answer surfaces exactly as it would from a real socket.
 */

// ---------------------------------------------------------------------------------------------
// Options

export type PluginCapabilityName =
  | "CONTROLLER_SERVICE"
  | "VOLUME_ACCESSIBILITY_CONSTRAINTS"
  | "GROUP_CONTROLLER_SERVICE"
  | "SNAPSHOT_METADATA_SERVICE";

export type ControllerCapabilityName =
  | "CREATE_DELETE_VOLUME"
  | "PUBLISH_UNPUBLISH_VOLUME"
  | "LIST_VOLUMES"
  | "GET_CAPACITY"
  | "CREATE_DELETE_SNAPSHOT"
  | "LIST_SNAPSHOTS"
  | "CLONE_VOLUME"
  | "PUBLISH_READONLY"
  | "EXPAND_VOLUME"
  | "LIST_VOLUMES_PUBLISHED_NODES"
  | "VOLUME_CONDITION"
  | "GET_VOLUME"
  | "SINGLE_NODE_MULTI_WRITER"
  | "MODIFY_VOLUME"
  | "GET_SNAPSHOT";

/** What Probe reports: `absent` leaves the optional `ready` field out (CSI: counts as ready). */
export type Readiness = "ready" | "not-ready" | "absent";

export const defaultDriverName = "memory.csi.example.com";
export const defaultPluginCapabilities: ReadonlyArray<PluginCapabilityName> = [
  "CONTROLLER_SERVICE",
];
export const defaultControllerCapabilities: ReadonlyArray<ControllerCapabilityName> = [
  "CREATE_DELETE_VOLUME",
  "GET_CAPACITY",
];
/** CreateVolume with required_bytes 0 leaves the size to the driver; this one picks 1 GiB. */
export const defaultVolumeSize = 1n << 30n;
/** GetCapacity without a capacity limit: 1 EiB, far above anything a test requests. */
export const unlimitedCapacity = 1n << 60n;

export interface MemoryDriverOptions {
  readonly name?: string;
  readonly vendorVersion?: string;
  /** Replaces the defaults; a number stands for an enum value newer than our csi.proto. */
  readonly pluginCapabilities?: ReadonlyArray<PluginCapabilityName | number>;
  /** Replaces the defaults; a number stands for an enum value newer than our csi.proto. */
  readonly controllerCapabilities?: ReadonlyArray<ControllerCapabilityName | number>;
  readonly readiness?: Readiness;
  /** Total bytes all volumes may use; without it the driver never runs out. */
  readonly capacityLimitBytes?: bigint;
  /** Reported on created volumes: fixed, or chosen from the request (see `echoPreferredTopology`). */
  readonly accessibleTopology?:
    | ReadonlyArray<Topology>
    | ((request: CreateVolumeRequest) => ReadonlyArray<Topology>);
  readonly volumeContext?: StringMap | ((request: CreateVolumeRequest) => StringMap);
  /** Snapshots that exist on the backend, by id, with their size in bytes. */
  readonly snapshots?: Readonly<Record<string, bigint>>;
  /**
   * Per-call deadline as the gRPC layer sets it: past it the caller gets DeadlineExceeded (grpc-js
   * wording) while the driver's work goes on. Without it the caller waits until the answer.
   */
  readonly deadline?: Duration.DurationInput;
  /** Scripts in place before the first call (e.g. a Probe that is not ready at start-up). */
  readonly scripts?: Partial<Record<CsiMethod, ReadonlyArray<Behaviour>>>;
}

/** A topology chooser that places the volume in the first preferred, else first requisite, topology. */
export const echoPreferredTopology = (request: CreateVolumeRequest): ReadonlyArray<Topology> => {
  const requirement = request.accessibility_requirements;
  const chosen = requirement?.preferred[0] ?? requirement?.requisite[0];
  return chosen === undefined ? [] : [chosen];
};

// ---------------------------------------------------------------------------------------------
// Scripting

/**
 * What the driver does with one call. `Real` is the driver's own behaviour; `Delay` does the work
 * (by default the real one) after the delay, on the driver's side, whether or not the caller waits.
 */
export type Behaviour =
  | { readonly _tag: "Real" }
  | { readonly _tag: "Fail"; readonly code: GrpcCodeName; readonly message?: string }
  | {
      readonly _tag: "Delay";
      readonly duration: Duration.DurationInput;
      readonly then?: Behaviour;
    }
  | { readonly _tag: "Hang" }
  | { readonly _tag: "Respond"; readonly raw: unknown };

export const Behaviour = {
  real: { _tag: "Real" } as Behaviour,
  fail: (code: GrpcCodeName, message?: string): Behaviour =>
    message === undefined ? { _tag: "Fail", code } : { _tag: "Fail", code, message },
  delay: (duration: Duration.DurationInput, then?: Behaviour): Behaviour =>
    then === undefined ? { _tag: "Delay", duration } : { _tag: "Delay", duration, then },
  hang: { _tag: "Hang" } as Behaviour,
  respond: (raw: unknown): Behaviour => ({ _tag: "Respond", raw }),
} as const;

// ---------------------------------------------------------------------------------------------
// Observability

export interface CallRequests {
  readonly Probe: undefined;
  readonly GetPluginInfo: undefined;
  readonly GetPluginCapabilities: undefined;
  readonly ControllerGetCapabilities: undefined;
  readonly CreateVolume: CreateVolumeRequest;
  readonly DeleteVolume: DeleteVolumeRequest;
  readonly GetCapacity: GetCapacityRequest;
}

/**
 * The outcome as the caller receives it (a garbage answer is `Failed` with `code: undefined`),
 * decided when the driver finishes, even if the caller stopped waiting earlier.
 */
export type CallOutcome =
  | { readonly _tag: "Pending" }
  | { readonly _tag: "Ok" }
  | { readonly _tag: "Failed"; readonly code: GrpcCodeName | undefined; readonly detail: string };

export interface CallRecordOf<M extends CsiMethod> {
  /** 1-based arrival order across all methods. */
  readonly seq: number;
  readonly method: M;
  readonly request: CallRequests[M];
  /** Clock millis when the call reached the driver. */
  readonly startedAt: number;
  /** Clock millis when the driver finished; undefined while pending or hanging. */
  readonly endedAt: number | undefined;
  /** Clock millis when the caller stopped waiting (timeout, interruption) before the answer. */
  readonly abandonedAt: number | undefined;
  readonly outcome: CallOutcome;
}

export type CallRecord<M extends CsiMethod = CsiMethod> = { [K in M]: CallRecordOf<K> }[M];

export interface MemoryVolume {
  readonly volumeId: string;
  readonly name: string;
  readonly capacityBytes: bigint;
  readonly parameters: StringMap;
  readonly secrets: StringMap;
  readonly mutableParameters: StringMap;
  readonly volumeCapabilities: ReadonlyArray<VolumeCapability>;
  readonly contentSource: VolumeContentSource | undefined;
  readonly accessibilityRequirements: TopologyRequirement | undefined;
  readonly accessibleTopology: ReadonlyArray<Topology>;
  readonly volumeContext: StringMap;
  /** Clock millis when the driver finished creating it. */
  readonly createdAt: number;
}

export interface MemoryDriverHandle {
  readonly name: string;
  /** The driver as the `Csi` service: what `layer(driver)` provides. */
  readonly service: CsiService;
  /** Appends behaviours for the next calls of `method`, consumed one per call, in order. */
  readonly script: (
    method: CsiMethod,
    ...behaviours: ReadonlyArray<Behaviour>
  ) => Effect.Effect<void>;
  readonly clearScripts: Effect.Effect<void>;
  /** Behaviours not yet consumed for `method`. */
  readonly pendingScript: (method: CsiMethod) => Effect.Effect<ReadonlyArray<Behaviour>>;
  readonly setReadiness: (readiness: Readiness) => Effect.Effect<void>;
  readonly addSnapshot: (snapshotId: string, sizeBytes: bigint) => Effect.Effect<void>;
  readonly calls: Effect.Effect<ReadonlyArray<CallRecord>>;
  readonly callsTo: <M extends CsiMethod>(method: M) => Effect.Effect<ReadonlyArray<CallRecord<M>>>;
  readonly callCount: (method: CsiMethod) => Effect.Effect<number>;
  /** Current volumes by id, in creation order. */
  readonly volumes: Effect.Effect<ReadonlyMap<string, MemoryVolume>>;
  readonly volumeByName: (name: string) => Effect.Effect<Option.Option<MemoryVolume>>;
  /** Bytes taken by current volumes. */
  readonly usedBytes: Effect.Effect<bigint>;
}

export class MemoryDriver extends Context.Tag("csi-provisioner/MemoryDriver")<
  MemoryDriver,
  MemoryDriverHandle
>() {}

// ---------------------------------------------------------------------------------------------
// State

interface DriverState {
  readonly nextVolume: number;
  readonly volumes: ReadonlyMap<string, MemoryVolume>;
  readonly snapshots: ReadonlyMap<string, bigint>;
}

type Scripts = Partial<Record<CsiMethod, ReadonlyArray<Behaviour>>>;

type Answer = Either.Either<unknown, CsiError>;

const invalid = (method: CsiMethod, detail: string): Answer =>
  Either.left(new CsiError({ method, code: "InvalidArgument", detail }));

const usedBytesOf = (state: DriverState): bigint => {
  let used = 0n;
  for (const volume of state.volumes.values()) used += volume.capacityBytes;
  return used;
};

const sourceIdOf = (source: VolumeContentSource): string =>
  "snapshot" in source
    ? `snapshot:${source.snapshot.snapshot_id}`
    : `volume:${source.volume.volume_id}`;

// Wire shapes as proto-loader produces them with `defaults` and `oneofs`: unset message fields are
// null, a set oneof member comes with a virtual field naming it.

const wireContentSource = (source: VolumeContentSource) =>
  "snapshot" in source
    ? { snapshot: { snapshot_id: source.snapshot.snapshot_id }, type: "snapshot" }
    : { volume: { volume_id: source.volume.volume_id }, type: "volume" };

const wireVolume = (volume: MemoryVolume) => ({
  capacity_bytes: volume.capacityBytes.toString(),
  volume_id: volume.volumeId,
  volume_context: { ...volume.volumeContext },
  content_source:
    volume.contentSource === undefined ? null : wireContentSource(volume.contentSource),
  accessible_topology: volume.accessibleTopology.map((topology) => ({
    segments: { ...topology.segments },
  })),
});

// ---------------------------------------------------------------------------------------------
// The driver

/**
 * Builds a driver whose background work (delayed and hanging calls) lives as long as the scope:
 * a caller that gives up does not stop the driver, closing the scope does.
 */
export const makeMemoryDriver = (
  options: MemoryDriverOptions = {},
): Effect.Effect<MemoryDriverHandle, never, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope;
    const name = options.name ?? defaultDriverName;
    const vendorVersion = options.vendorVersion ?? "0.1.0";
    const pluginCapabilities = options.pluginCapabilities ?? defaultPluginCapabilities;
    const controllerCapabilities = options.controllerCapabilities ?? defaultControllerCapabilities;
    const has = (capability: ControllerCapabilityName) =>
      controllerCapabilities.includes(capability);
    const limit = options.capacityLimitBytes;

    const state = yield* Ref.make<DriverState>({
      nextVolume: 1,
      volumes: new Map(),
      snapshots: new Map(Object.entries(options.snapshots ?? {})),
    });
    const readiness = yield* Ref.make<Readiness>(options.readiness ?? "ready");
    const scripts = yield* Ref.make<Scripts>({
      ...options.scripts,
    });
    const calls = yield* Ref.make<ReadonlyArray<CallRecord>>([]);

    const unimplemented = (method: CsiMethod, capability: ControllerCapabilityName): Answer =>
      Either.left(
        new CsiError({
          method,
          code: "Unimplemented",
          detail: `${method} is not supported: the driver does not advertise ${capability}`,
        }),
      );

    // -- real behaviours: each is one atomic transition of the state, returning a wire answer

    const createVolume = (
      request: CreateVolumeRequest,
      now: number,
      current: DriverState,
    ): [Answer, DriverState] => {
      const method = "CreateVolume";
      const keep = (answer: Answer): [Answer, DriverState] => [answer, current];
      if (!has("CREATE_DELETE_VOLUME")) return keep(unimplemented(method, "CREATE_DELETE_VOLUME"));
      if (request.name === "") return keep(invalid(method, "Name missing in request"));
      if (request.volume_capabilities.length === 0) {
        return keep(invalid(method, "Volume Capabilities missing in request"));
      }
      for (const capability of request.volume_capabilities) {
        if ((capability.block === undefined) === (capability.mount === undefined)) {
          return keep(invalid(method, "a volume capability needs exactly one of block and mount"));
        }
        const mode = capability.access_mode.mode;
        if (
          (mode === "SINGLE_NODE_SINGLE_WRITER" || mode === "SINGLE_NODE_MULTI_WRITER") &&
          !has("SINGLE_NODE_MULTI_WRITER")
        ) {
          return keep(invalid(method, `access mode ${mode} is not supported`));
        }
      }
      if (Object.keys(request.mutable_parameters).length > 0 && !has("MODIFY_VOLUME")) {
        return keep(invalid(method, "mutable_parameters need the MODIFY_VOLUME capability"));
      }
      const { required_bytes: required, limit_bytes: limitBytes } = request.capacity_range;
      if (required < 0n || limitBytes < 0n) {
        return keep(invalid(method, "capacity_range must not be negative"));
      }
      if (limitBytes > 0n && required > limitBytes) {
        return keep(
          Either.left(
            new CsiError({
              method,
              code: "OutOfRange",
              detail: `required_bytes ${required} exceeds limit_bytes ${limitBytes}`,
            }),
          ),
        );
      }

      const source = request.volume_content_source;
      const existing = [...current.volumes.values()].find((v) => v.name === request.name);
      if (existing !== undefined) {
        const fits =
          existing.capacityBytes >= required &&
          (limitBytes === 0n || existing.capacityBytes <= limitBytes);
        const sameSource =
          source === undefined ||
          (existing.contentSource !== undefined &&
            sourceIdOf(existing.contentSource) === sourceIdOf(source));
        if (!fits || !sameSource) {
          return keep(
            Either.left(
              new CsiError({
                method,
                code: "AlreadyExists",
                detail: fits
                  ? `volume "${request.name}" already exists with a different content source`
                  : `volume "${request.name}" already exists with ${existing.capacityBytes} bytes, outside the requested range [${required}, ${limitBytes}]`,
              }),
            ),
          );
        }
        return keep(Either.right({ volume: wireVolume(existing) }));
      }

      let sourceSize = 0n;
      if (source !== undefined) {
        if ("snapshot" in source) {
          if (!has("CREATE_DELETE_SNAPSHOT")) {
            return keep(invalid(method, "restoring a snapshot needs CREATE_DELETE_SNAPSHOT"));
          }
          const size = current.snapshots.get(source.snapshot.snapshot_id);
          if (size === undefined) {
            return keep(
              Either.left(
                new CsiError({
                  method,
                  code: "NotFound",
                  detail: `snapshot ${source.snapshot.snapshot_id} not found`,
                }),
              ),
            );
          }
          sourceSize = size;
        } else {
          if (!has("CLONE_VOLUME")) {
            return keep(invalid(method, "cloning a volume needs CLONE_VOLUME"));
          }
          const parent = current.volumes.get(source.volume.volume_id);
          if (parent === undefined) {
            return keep(
              Either.left(
                new CsiError({
                  method,
                  code: "NotFound",
                  detail: `source volume ${source.volume.volume_id} not found`,
                }),
              ),
            );
          }
          sourceSize = parent.capacityBytes;
        }
      }

      // Like most drivers, a restore or clone is never smaller than its source.
      const wanted = required === 0n ? defaultVolumeSize : required;
      const capacity = wanted > sourceSize ? wanted : sourceSize;
      if (limitBytes > 0n && capacity > limitBytes) {
        return keep(
          Either.left(
            new CsiError({
              method,
              code: "OutOfRange",
              detail: `the source needs ${capacity} bytes, above limit_bytes ${limitBytes}`,
            }),
          ),
        );
      }
      if (limit !== undefined) {
        const available = limit - usedBytesOf(current);
        if (capacity > available) {
          return keep(
            Either.left(
              new CsiError({
                method,
                code: "ResourceExhausted",
                detail: `insufficient capacity: requested ${capacity} bytes, ${available} available`,
              }),
            ),
          );
        }
      }

      const volumeId = `vol-${current.nextVolume}`;
      const topology = options.accessibleTopology;
      const context = options.volumeContext;
      const volume: MemoryVolume = {
        volumeId,
        name: request.name,
        capacityBytes: capacity,
        parameters: request.parameters,
        secrets: request.secrets,
        mutableParameters: request.mutable_parameters,
        volumeCapabilities: request.volume_capabilities,
        contentSource: source,
        accessibilityRequirements: request.accessibility_requirements,
        accessibleTopology:
          topology === undefined
            ? []
            : typeof topology === "function"
              ? topology(request)
              : topology,
        volumeContext:
          context === undefined ? {} : typeof context === "function" ? context(request) : context,
        createdAt: now,
      };
      const volumes = new Map(current.volumes);
      volumes.set(volumeId, volume);
      return [
        Either.right({ volume: wireVolume(volume) }),
        { ...current, nextVolume: current.nextVolume + 1, volumes },
      ];
    };

    const deleteVolume = (
      request: DeleteVolumeRequest,
      current: DriverState,
    ): [Answer, DriverState] => {
      if (!has("CREATE_DELETE_VOLUME")) {
        return [unimplemented("DeleteVolume", "CREATE_DELETE_VOLUME"), current];
      }
      if (request.volume_id === "") {
        return [invalid("DeleteVolume", "Volume ID missing in request"), current];
      }
      // CSI: deleting a volume that does not exist succeeds.
      if (!current.volumes.has(request.volume_id)) return [Either.right({}), current];
      const volumes = new Map(current.volumes);
      volumes.delete(request.volume_id);
      return [Either.right({}), { ...current, volumes }];
    };

    const getCapacity = (current: DriverState): Answer => {
      if (!has("GET_CAPACITY")) return unimplemented("GetCapacity", "GET_CAPACITY");
      const available = limit === undefined ? unlimitedCapacity : limit - usedBytesOf(current);
      return Either.right({
        available_capacity: (available > 0n ? available : 0n).toString(),
        maximum_volume_size: null,
        minimum_volume_size: null,
      });
    };

    const fromState = (
      transition: (current: DriverState, now: number) => [Answer, DriverState],
    ): Effect.Effect<unknown, CsiError> =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.flatMap(
          Ref.modify(state, (current) => transition(current, now)),
          (answer) => answer,
        ),
      );

    // -- scripting and the call edge

    const takeBehaviour = (method: CsiMethod) =>
      Ref.modify(scripts, (current): [Behaviour | undefined, Scripts] => {
        const queue = current[method] ?? [];
        return [queue[0], { ...current, [method]: queue.slice(1) }];
      });

    const perform = (
      method: CsiMethod,
      behaviour: Behaviour | undefined,
      real: Effect.Effect<unknown, CsiError>,
    ): Effect.Effect<unknown, CsiError> => {
      if (behaviour === undefined) return real;
      switch (behaviour._tag) {
        case "Real":
          return real;
        case "Fail":
          return Effect.fail(
            new CsiError({
              method,
              code: behaviour.code,
              detail: behaviour.message ?? `scripted ${behaviour.code}`,
            }),
          );
        case "Delay":
          return Effect.zipRight(
            Effect.sleep(behaviour.duration),
            perform(method, behaviour.then, real),
          );
        case "Hang":
          return Effect.never;
        case "Respond":
          return Effect.succeed(behaviour.raw);
      }
    };

    const updateCall = (seq: number, f: (record: CallRecord) => CallRecord) =>
      Ref.update(calls, (all) => all.map((record) => (record.seq === seq ? f(record) : record)));

    const call = <M extends CsiMethod, A, I>(
      method: M,
      request: CallRequests[M],
      schema: Schema.Schema<A, I>,
      real: Effect.Effect<unknown, CsiError>,
    ): Effect.Effect<A, CsiError> =>
      // Uninterruptible until the work is forked, so that a consumed script step always runs.
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function* () {
          const behaviour = yield* takeBehaviour(method);
          const startedAt = yield* Clock.currentTimeMillis;
          const seq = yield* Ref.modify(calls, (all): [number, ReadonlyArray<CallRecord>] => {
            const record = {
              seq: all.length + 1,
              method,
              request,
              startedAt,
              endedAt: undefined,
              abandonedAt: undefined,
              outcome: { _tag: "Pending" },
            } as CallRecord;
            return [record.seq, [...all, record]];
          });
          const work = perform(method, behaviour, real).pipe(
            Effect.flatMap(decodeReply(method, schema)),
            Effect.onExit((exit) =>
              Exit.isInterrupted(exit)
                ? Effect.void
                : Effect.flatMap(Clock.currentTimeMillis, (endedAt) =>
                    updateCall(seq, (record) => ({
                      ...record,
                      endedAt,
                      outcome: Exit.match(exit, {
                        onSuccess: (): CallOutcome => ({ _tag: "Ok" }),
                        onFailure: (cause): CallOutcome =>
                          Option.match(Cause.failureOption(cause), {
                            onSome: (error) => ({
                              _tag: "Failed",
                              code: error.code,
                              detail: error.detail,
                            }),
                            onNone: () => ({
                              _tag: "Failed",
                              code: undefined,
                              detail: Cause.pretty(cause),
                            }),
                          }),
                      }),
                    })),
                  ),
            ),
          );
          // The driver's work belongs to the driver: interrupting the caller leaves it running.
          const fiber = yield* Effect.forkIn(Effect.interruptible(work), scope);
          const wait = Fiber.join(fiber).pipe(
            Effect.onInterrupt(() =>
              Effect.flatMap(Clock.currentTimeMillis, (abandonedAt) =>
                updateCall(seq, (record) =>
                  record.endedAt === undefined ? { ...record, abandonedAt } : record,
                ),
              ),
            ),
          );
          return yield* restore(
            options.deadline === undefined
              ? wait
              : Effect.timeoutFail(wait, {
                  duration: options.deadline,
                  onTimeout: () =>
                    new CsiError({ method, code: "DeadlineExceeded", detail: "Deadline exceeded" }),
                }),
          );
        }),
      );

    const service: CsiService = {
      probe: call(
        "Probe",
        undefined,
        ProbeResponse,
        Effect.map(Ref.get(readiness), (current) => ({
          ready: current === "absent" ? null : { value: current === "ready" },
        })),
      ),
      getPluginInfo: call(
        "GetPluginInfo",
        undefined,
        GetPluginInfoResponse,
        Effect.succeed({ name, vendor_version: vendorVersion, manifest: {} }),
      ),
      getPluginCapabilities: call(
        "GetPluginCapabilities",
        undefined,
        GetPluginCapabilitiesResponse,
        Effect.succeed({
          capabilities: pluginCapabilities.map((type) => ({ service: { type }, type: "service" })),
        }),
      ),
      controllerGetCapabilities: call(
        "ControllerGetCapabilities",
        undefined,
        ControllerGetCapabilitiesResponse,
        Effect.succeed({
          capabilities: controllerCapabilities.map((type) => ({ rpc: { type }, type: "rpc" })),
        }),
      ),
      createVolume: (request) =>
        call(
          "CreateVolume",
          request,
          CreateVolumeResponse,
          fromState((current, now) => createVolume(request, now, current)),
        ),
      deleteVolume: (request) =>
        Effect.asVoid(
          call(
            "DeleteVolume",
            request,
            DeleteVolumeResponse,
            fromState((current) => deleteVolume(request, current)),
          ),
        ),
      getCapacity: (request) =>
        call(
          "GetCapacity",
          request,
          GetCapacityResponse,
          fromState((current) => [getCapacity(current), current]),
        ),
    };

    const handle: MemoryDriverHandle = {
      name,
      service,
      script: (method, ...behaviours) =>
        Ref.update(scripts, (current) => ({
          ...current,
          [method]: [...(current[method] ?? []), ...behaviours],
        })),
      clearScripts: Ref.set(scripts, {}),
      pendingScript: (method) => Effect.map(Ref.get(scripts), (current) => current[method] ?? []),
      setReadiness: (next) => Ref.set(readiness, next),
      addSnapshot: (snapshotId, sizeBytes) =>
        Ref.update(state, (current) => ({
          ...current,
          snapshots: new Map(current.snapshots).set(snapshotId, sizeBytes),
        })),
      calls: Ref.get(calls),
      callsTo: <M extends CsiMethod>(method: M) =>
        Effect.map(
          Ref.get(calls),
          (all) =>
            all.filter((record) => record.method === method) as unknown as ReadonlyArray<
              CallRecord<M>
            >,
        ),
      callCount: (method) =>
        Effect.map(
          Ref.get(calls),
          (all) => all.filter((record) => record.method === method).length,
        ),
      volumes: Effect.map(Ref.get(state), (current) => current.volumes),
      volumeByName: (volumeName) =>
        Effect.map(Ref.get(state), (current) =>
          Option.fromNullable([...current.volumes.values()].find((v) => v.name === volumeName)),
        ),
      usedBytes: Effect.map(Ref.get(state), usedBytesOf),
    };
    return handle;
  });

/** Provides `Csi` backed by an existing driver (built with `makeMemoryDriver`). */
export const layer = (driver: MemoryDriverHandle): Layer.Layer<Csi> =>
  Layer.succeed(Csi, driver.service);

/** Builds a driver for the layer's lifetime and provides it both as `Csi` and as `MemoryDriver`. */
export const layerMemory = (options: MemoryDriverOptions = {}): Layer.Layer<Csi | MemoryDriver> =>
  Layer.scopedContext(
    Effect.map(makeMemoryDriver(options), (driver) =>
      Context.make(MemoryDriver, driver).pipe(Context.add(Csi, driver.service)),
    ),
  );
