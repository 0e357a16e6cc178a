import { randomUUID } from "node:crypto";
import { lstat, mkdir, unlink } from "node:fs/promises";
import { dirname } from "node:path";
import * as grpc from "@grpc/grpc-js";
import type { ControllerHandlers } from "../generated/csi/csi/v1/Controller.js";
import type { ControllerServiceCapability } from "../generated/csi/csi/v1/ControllerServiceCapability.js";
import type { CreateVolumeRequest__Output } from "../generated/csi/csi/v1/CreateVolumeRequest.js";
import type { CreateVolumeResponse } from "../generated/csi/csi/v1/CreateVolumeResponse.js";
import type { IdentityHandlers } from "../generated/csi/csi/v1/Identity.js";
import type { PluginCapability } from "../generated/csi/csi/v1/PluginCapability.js";
import type { Topology__Output } from "../generated/csi/csi/v1/Topology.js";
import type { VolumeCapability__Output } from "../generated/csi/csi/v1/VolumeCapability.js";
import type { DriverOptions, Fault } from "./flags.js";
import { loadCsiProto } from "./proto.js";
import { type VolumeRecord, VolumeStore } from "./store.js";

/** A call that ends with a gRPC status other than OK. */
export class RpcError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

export interface RunningDriver {
  readonly options: DriverOptions;
  readonly socketPath: string;
  readonly store: VolumeStore;
  /** Stops serving (open calls are cut) and removes the socket file. */
  readonly close: () => Promise<void>;
}

export interface StartOptions {
  /** One line per call; console.log by default. */
  readonly log?: (line: string) => void;
}

/** A small seeded generator, so that `--seed` replays the same faults. */
export const mulberry32 = (seed: number) => {
  let state = seed >>> 0;
  return (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
};

const GiB = 1n << 30n;
const statusName = (code: grpc.status): string => grpc.status[code] ?? String(code);

const removeStaleSocket = async (path: string) => {
  const stats = await lstat(path).catch(() => undefined);
  if (stats === undefined) return;
  if (!stats.isSocket())
    throw new Error(`${path} exists and is not a socket: refusing to remove it`);
  await unlink(path);
};

const int64 = (text: string | undefined | null): bigint => (text ? BigInt(text) : 0n);

/** Secret names only: the log and the metadata files must never hold secret values. */
const secretKeys = (secrets: Readonly<Record<string, string>> | undefined) =>
  Object.keys(secrets ?? {}).sort();
const describeSecrets = (secrets: Readonly<Record<string, string>> | undefined) => {
  const keys = secretKeys(secrets);
  return keys.length > 0 ? ` secrets=[${keys.join(",")}]` : "";
};

/** True when every segment of `wanted` is one of ours with the same value. */
const matches = (ours: Readonly<Record<string, string>>, wanted: Topology__Output) =>
  Object.entries(wanted.segments).every(([key, value]) => ours[key] === value);

export const startDriver = async (
  options: DriverOptions,
  start: StartOptions = {},
): Promise<RunningDriver> => {
  const log = start.log ?? ((line: string) => console.log(line));
  const store = await VolumeStore.open(options.root);
  const startedAt = Date.now();
  let closed = false;

  const segments: Readonly<Record<string, string>> = {
    [`topology.${options.name}/node`]: options.nodeId,
    ...(options.zone === undefined ? {} : { "topology.kubernetes.io/zone": options.zone }),
  };

  // Mutations run one at a time, so that two calls with the same name never both create.
  let queue: Promise<unknown> = Promise.resolve();
  const serially = <A>(work: () => Promise<A>): Promise<A> => {
    const next = queue.then(work, work);
    queue = next.catch(() => undefined);
    return next;
  };

  const injector = (fault: Fault, seed: number) => {
    const random = mulberry32(seed);
    let calls = 0;
    return async (what: string): Promise<void> => {
      calls += 1;
      if (fault.delayMs > 0 && (fault.delayCalls === undefined || calls <= fault.delayCalls)) {
        // Calls are logged when they end; this line tells a test that a slow call is in flight.
        log(`${new Date().toISOString()} ${what} delayed ${fault.delayMs}ms (call ${calls})`);
        await new Promise((resolve) => setTimeout(resolve, fault.delayMs).unref());
        if (closed) throw new RpcError(grpc.status.UNAVAILABLE, "the driver is shutting down");
      }
      if (fault.failRate > 0 && random() < fault.failRate) {
        throw new RpcError(fault.failCode, `injected ${statusName(fault.failCode)} fault`);
      }
    };
  };
  const createFault = injector(options.create, options.seed);
  const deleteFault = injector(options.delete, options.seed + 1);

  // -- the call edge: one log line per call

  const unary =
    <Req, Res>(
      method: string,
      handler: (request: Req) => Promise<Res>,
      describe: (request: Req) => string = () => "",
      result: (response: Res) => string = () => "",
    ): grpc.handleUnaryCall<Req, Res> =>
    (call, callback) => {
      const began = performance.now();
      const line = (outcome: string) =>
        log(
          `${new Date().toISOString()} ${method}${describe(call.request) ? ` ${describe(call.request)}` : ""} -> ${outcome} (${Math.round(performance.now() - began)}ms)`,
        );
      handler(call.request).then(
        (response) => {
          const summary = result(response);
          line(summary ? `OK ${summary}` : "OK");
          callback(null, response);
        },
        (error: unknown) => {
          const status =
            error instanceof RpcError
              ? { code: error.code, details: error.message }
              : { code: grpc.status.INTERNAL, details: String(error) };
          line(`${statusName(status.code)}: ${status.details}`);
          callback(status);
        },
      );
    };

  // -- Identity

  const identity: IdentityHandlers = {
    GetPluginInfo: unary("GetPluginInfo", async () => ({
      name: options.name,
      vendor_version: options.vendorVersion,
      manifest: {},
    })),
    GetPluginCapabilities: unary("GetPluginCapabilities", async () => {
      const capabilities: Array<PluginCapability> = [{ service: { type: "CONTROLLER_SERVICE" } }];
      if (options.topology) {
        capabilities.push({ service: { type: "VOLUME_ACCESSIBILITY_CONSTRAINTS" } });
      }
      return { capabilities };
    }),
    Probe: unary(
      "Probe",
      async () => ({ ready: { value: Date.now() - startedAt >= options.readyAfterMs } }),
      undefined,
      (response) => `ready=${response.ready?.value}`,
    ),
  };

  // -- Controller

  const controllerCapabilities = (): Array<ControllerServiceCapability> => {
    const types: Array<string> = ["CREATE_DELETE_VOLUME", "GET_CAPACITY"];
    if (options.publishUnpublish) types.push("PUBLISH_UNPUBLISH_VOLUME");
    if (options.clone) types.push("CLONE_VOLUME");
    if (options.singleNodeMultiWriter) types.push("SINGLE_NODE_MULTI_WRITER");
    return types.map((type) => ({ rpc: { type: type as "CREATE_DELETE_VOLUME" } }));
  };

  const checkCapabilities = (capabilities: ReadonlyArray<VolumeCapability__Output>) => {
    if (capabilities.length === 0) {
      throw new RpcError(grpc.status.INVALID_ARGUMENT, "Volume Capabilities missing in request");
    }
    for (const capability of capabilities) {
      const mode = capability.access_mode?.mode ?? "UNKNOWN";
      if (mode === "UNKNOWN") {
        throw new RpcError(grpc.status.INVALID_ARGUMENT, "access mode missing in request");
      }
      const needsMultiWriter =
        mode === "SINGLE_NODE_SINGLE_WRITER" || mode === "SINGLE_NODE_MULTI_WRITER";
      if (needsMultiWriter && !options.singleNodeMultiWriter) {
        throw new RpcError(
          grpc.status.INVALID_ARGUMENT,
          `access mode ${mode} needs the SINGLE_NODE_MULTI_WRITER capability (--single-node-multi-writer)`,
        );
      }
    }
  };

  const wireVolume = (record: VolumeRecord): CreateVolumeResponse["volume"] => ({
    capacity_bytes: record.capacity_bytes,
    volume_id: record.volume_id,
    volume_context: { path: store.dirOf(record.volume_id) },
    content_source:
      record.source_volume_id === undefined
        ? null
        : { volume: { volume_id: record.source_volume_id } },
    accessible_topology: record.accessible_topology.map((s) => ({ segments: { ...s } })),
  });

  const createVolume = async (request: CreateVolumeRequest__Output) => {
    if (request.name === "")
      throw new RpcError(grpc.status.INVALID_ARGUMENT, "Name missing in request");
    checkCapabilities(request.volume_capabilities);
    const required = int64(request.capacity_range?.required_bytes);
    const limit = int64(request.capacity_range?.limit_bytes);
    if (required < 0n || limit < 0n) {
      throw new RpcError(grpc.status.INVALID_ARGUMENT, "capacity_range must not be negative");
    }
    if (limit > 0n && required > limit) {
      throw new RpcError(
        grpc.status.OUT_OF_RANGE,
        `required_bytes ${required} exceeds limit_bytes ${limit}`,
      );
    }
    const source = request.volume_content_source;
    if (source?.snapshot) {
      throw new RpcError(grpc.status.INVALID_ARGUMENT, "this driver does not support snapshots");
    }
    const sourceId = source?.volume?.volume_id;
    if (sourceId !== undefined && !options.clone) {
      throw new RpcError(grpc.status.INVALID_ARGUMENT, "cloning needs CLONE_VOLUME (--clone)");
    }
    if (options.topology) {
      const requisite = request.accessibility_requirements?.requisite ?? [];
      if (requisite.length > 0 && !requisite.some((t) => matches(segments, t))) {
        throw new RpcError(
          grpc.status.RESOURCE_EXHAUSTED,
          `none of the requisite topologies is accessible from node ${options.nodeId}`,
        );
      }
    }

    await createFault(`CreateVolume name=${request.name}`);

    return serially(async () => {
      const existing = store.byName(request.name);
      if (existing !== undefined) {
        const size = BigInt(existing.capacity_bytes);
        const fits = size >= required && (limit === 0n || size <= limit);
        if (!fits || existing.source_volume_id !== sourceId) {
          throw new RpcError(
            grpc.status.ALREADY_EXISTS,
            fits
              ? `volume "${request.name}" already exists with another content source`
              : `volume "${request.name}" already exists with ${size} bytes, outside the requested range [${required}, ${limit}]`,
          );
        }
        return { volume: wireVolume(existing) };
      }
      let size = required === 0n ? (limit > 0n && limit < GiB ? limit : GiB) : required;
      if (sourceId !== undefined) {
        const parent = store.get(sourceId);
        if (parent === undefined) {
          throw new RpcError(grpc.status.NOT_FOUND, `source volume ${sourceId} not found`);
        }
        const parentSize = BigInt(parent.capacity_bytes);
        if (limit > 0n && parentSize > limit) {
          throw new RpcError(
            grpc.status.OUT_OF_RANGE,
            `the source volume has ${parentSize} bytes, above limit_bytes ${limit}`,
          );
        }
        if (parentSize > size) size = parentSize;
      }
      const available =
        options.capacityBytes === undefined
          ? await store.freeBytes()
          : options.capacityBytes - store.usedBytes();
      if (size > available) {
        throw new RpcError(
          grpc.status.RESOURCE_EXHAUSTED,
          `insufficient capacity: requested ${size} bytes, ${available > 0n ? available : 0n} available`,
        );
      }
      const record: VolumeRecord = {
        volume_id: randomUUID(),
        name: request.name,
        capacity_bytes: size.toString(),
        parameters: { ...request.parameters },
        accessible_topology: options.topology ? [segments] : [],
        source_volume_id: sourceId,
        secret_keys: secretKeys(request.secrets),
        created_at: new Date().toISOString(),
      };
      await store.add(record, sourceId);
      return { volume: wireVolume(record) };
    });
  };

  const requireVolume = (volumeId: string) => {
    if (volumeId === "")
      throw new RpcError(grpc.status.INVALID_ARGUMENT, "Volume ID missing in request");
    const record = store.get(volumeId);
    if (record === undefined)
      throw new RpcError(grpc.status.NOT_FOUND, `volume ${volumeId} not found`);
    return record;
  };

  const controller: Partial<ControllerHandlers> = {
    ControllerGetCapabilities: unary("ControllerGetCapabilities", async () => ({
      capabilities: controllerCapabilities(),
    })),
    CreateVolume: unary(
      "CreateVolume",
      createVolume,
      (r) =>
        `name=${r.name} required_bytes=${int64(r.capacity_range?.required_bytes)}${describeSecrets(r.secrets)}`,
      (r) => `volume_id=${r.volume?.volume_id} capacity_bytes=${r.volume?.capacity_bytes}`,
    ),
    DeleteVolume: unary(
      "DeleteVolume",
      async (request) => {
        if (request.volume_id === "") {
          throw new RpcError(grpc.status.INVALID_ARGUMENT, "Volume ID missing in request");
        }
        await deleteFault(`DeleteVolume volume_id=${request.volume_id}`);
        // CSI: deleting a volume that is already gone succeeds.
        await serially(() => store.remove(request.volume_id));
        return {};
      },
      (r) => `volume_id=${r.volume_id}${describeSecrets(r.secrets)}`,
    ),
    GetCapacity: unary(
      "GetCapacity",
      async (request) => {
        const elsewhere =
          options.topology &&
          request.accessible_topology !== null &&
          !matches(segments, request.accessible_topology);
        const free =
          options.capacityBytes === undefined
            ? await store.freeBytes()
            : options.capacityBytes - store.usedBytes();
        const available = elsewhere || free < 0n ? 0n : free;
        return {
          available_capacity: available.toString(),
          maximum_volume_size: null,
          minimum_volume_size: null,
        };
      },
      (r) =>
        r.accessible_topology === null
          ? ""
          : `topology=${JSON.stringify(r.accessible_topology.segments)}`,
      (r) => `available_capacity=${r.available_capacity}`,
    ),
    ValidateVolumeCapabilities: unary(
      "ValidateVolumeCapabilities",
      async (request) => {
        requireVolume(request.volume_id);
        checkCapabilities(request.volume_capabilities);
        return {
          confirmed: {
            volume_context: request.volume_context,
            volume_capabilities: request.volume_capabilities,
            parameters: request.parameters,
            mutable_parameters: request.mutable_parameters,
          },
          message: "",
        };
      },
      (r) => `volume_id=${r.volume_id}`,
    ),
  };
  if (options.publishUnpublish) {
    // A directory needs no attaching: publishing only checks that the volume and node make sense.
    controller.ControllerPublishVolume = unary(
      "ControllerPublishVolume",
      async (request) => {
        requireVolume(request.volume_id);
        if (request.node_id === "") {
          throw new RpcError(grpc.status.INVALID_ARGUMENT, "Node ID missing in request");
        }
        return { publish_context: {} };
      },
      (r) => `volume_id=${r.volume_id} node_id=${r.node_id}`,
    );
    controller.ControllerUnpublishVolume = unary(
      "ControllerUnpublishVolume",
      async () => ({}),
      (r) => `volume_id=${r.volume_id} node_id=${r.node_id}`,
    );
  }

  // -- serving

  const proto = loadCsiProto();
  const server = new grpc.Server();
  server.addService(proto.csi.v1.Identity.service, identity);
  server.addService(
    proto.csi.v1.Controller.service,
    controller as grpc.UntypedServiceImplementation,
  );

  const socketPath = options.endpoint;
  await mkdir(dirname(socketPath), { recursive: true });
  await removeStaleSocket(socketPath);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (error) =>
      error ? reject(error) : resolve(),
    ),
  );

  const close = async () => {
    if (closed) return;
    closed = true;
    server.forceShutdown();
    await unlink(socketPath).catch(() => undefined);
  };
  return { options, socketPath, store, close };
};
