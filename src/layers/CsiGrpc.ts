import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import {
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Layer,
  Option,
  Schema,
  type Scope,
  type Types,
} from "effect";
import type { ControllerClient } from "../generated/csi/csi/v1/Controller.js";
import type { IdentityClient } from "../generated/csi/csi/v1/Identity.js";
import type { ProtoGrpcType } from "../generated/csi/csi.js";
import { packageFile } from "../PackageFiles.js";
import {
  ControllerGetCapabilitiesResponse,
  CreateVolumeRequest,
  CreateVolumeResponse,
  DeleteVolumeRequest,
  DeleteVolumeResponse,
  GetCapacityRequest,
  GetCapacityResponse,
  GetPluginCapabilitiesResponse,
  GetPluginInfoResponse,
  ProbeResponse,
} from "../schemas/Csi.js";
import { Config } from "./Config.js";
import {
  Csi,
  CsiError,
  type CsiMethod,
  type CsiService,
  decodeReply,
  GrpcCode,
  type GrpcCodeName,
} from "./Csi.js";

/**
 * The `Csi` service over gRPC on the driver's Unix socket (@grpc/grpc-js, one channel for the
 * Identity and Controller clients).
 *
 * - Building the layer waits until the socket accepts a connection, forever unless
 *   `connectTimeout` is given, logging every 10 s, as upstream's csi-lib-utils does. Probing is
 *   left to the start-up program (`connectDriver`).
 * - Every call carries a gRPC `deadline` of `timeout`; interrupting a call cancels it.
 * - A non-OK status becomes `CsiError` with the status name; a reply the schemas reject becomes
 *   `CsiError` with `code: undefined` (`decodeReply`).
 * - `CsiConnection.lost` fails with `CsiConnectionError` once the channel, after having been
 *   READY, drops its connection (READY → anything but READY, or TRANSIENT_FAILURE/SHUTDOWN later)
 *   for any reason other than our own close. `main` forks it and exits non-zero when it fails
 *   (SPEC §1.3):
 *
 *   ```ts
 *   const connection = yield* CsiConnection;
 *   yield* Effect.raceFirst(runSidecar, connection.lost); // lost never succeeds
 *   ```
 *
 *   Closing the layer's scope closes the channel, which does not count as a loss.
 */

// ---------------------------------------------------------------------------------------------
// Loading the proto

export const csiProtoPath = packageFile("proto/csi.proto");

/** Must match the flags of `npm run gen:proto`, or the generated types lie about the wire. */
export const protoLoaderOptions: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

export const loadCsiProto = (): ProtoGrpcType =>
  grpc.loadPackageDefinition(
    protoLoader.loadSync(csiProtoPath, protoLoaderOptions),
  ) as unknown as ProtoGrpcType;

// ---------------------------------------------------------------------------------------------
// Connection state

export type ConnectivityStateName =
  | "IDLE"
  | "CONNECTING"
  | "READY"
  | "TRANSIENT_FAILURE"
  | "SHUTDOWN";

const stateName = (state: grpc.connectivityState): ConnectivityStateName =>
  grpc.connectivityState[state] as ConnectivityStateName;

export class CsiConnectionError extends Data.TaggedError("CsiConnectionError")<{
  readonly address: string;
  /** `Unreachable`: never connected within `connectTimeout`; `Lost`: connected, then not. */
  readonly reason: "Unreachable" | "Lost";
  readonly detail: string;
}> {
  override get message(): string {
    return this.reason === "Lost"
      ? `lost connection to the CSI driver at ${this.address}: ${this.detail}`
      : `cannot connect to the CSI driver at ${this.address}: ${this.detail}`;
  }
}

export interface CsiConnectionService {
  /** The dialled target, `unix:<path>`. */
  readonly target: string;
  /** Fails once the connection is lost; never succeeds. */
  readonly lost: Effect.Effect<never, CsiConnectionError>;
  /** Whether the connection has been lost (without waiting). */
  readonly isLost: Effect.Effect<Option.Option<CsiConnectionError>>;
  readonly state: Effect.Effect<ConnectivityStateName>;
}

export class CsiConnection extends Context.Tag("csi-provisioner/CsiConnection")<
  CsiConnection,
  CsiConnectionService
>() {}

// ---------------------------------------------------------------------------------------------
// Options

export interface CsiGrpcOptions {
  /** Socket path (a `unix://` or `unix:` prefix is accepted). */
  readonly address: string;
  /** The gRPC deadline of every call. */
  readonly timeout: Duration.DurationInput;
  /** Give up connecting after this long; without it, wait forever as upstream does. */
  readonly connectTimeout?: Duration.DurationInput;
  /** How often "still connecting" is logged while waiting. */
  readonly connectLogInterval?: Duration.DurationInput;
}

export const socketPathOf = (address: string): string => address.replace(/^unix:(\/\/)?/, "");

// The socket is local: reconnecting fast costs nothing and start-up should not wait for grpc's
// default 120 s backoff when the driver comes up after us.
const channelOptions: grpc.ChannelOptions = {
  "grpc.initial_reconnect_backoff_ms": 200,
  "grpc.max_reconnect_backoff_ms": 1000,
  // Idleness would close the transport and look like a loss; the longest timer Node allows (24.8
  // days) keeps it open, and an idle transition that does happen is recognised below.
  "grpc.client_idle_timeout_ms": 2 ** 31 - 1,
};
const idleTimeoutMs = 2 ** 31 - 1;

// ---------------------------------------------------------------------------------------------
// Calls

const codeNames = new Map<number, GrpcCodeName>(
  Object.entries(GrpcCode).map(([name, code]) => [code, name as GrpcCodeName]),
);

/** A failed call as `CsiError`, keeping grpc's status name (an unknown number counts as Unknown). */
export const csiErrorFromStatus = (method: CsiMethod, error: Partial<grpc.StatusObject>) => {
  const code = codeNames.get(error.code ?? GrpcCode.Unknown) ?? "Unknown";
  // grpc-js words a client-side deadline with its internal timings; events say what grpc-go says.
  const clientDeadline =
    code === "DeadlineExceeded" && error.details?.startsWith("Deadline exceeded");
  return new CsiError({
    method,
    code,
    detail: clientDeadline ? "context deadline exceeded" : (error.details ?? ""),
  });
};

type Invoke<Req, Res> = (
  request: Req,
  options: grpc.CallOptions,
  callback: grpc.requestCallback<Res>,
) => grpc.ClientUnaryCall;

interface CallTracker {
  inFlight: number;
  lastActivity: number;
}

const unary = <Req, Res>(
  method: CsiMethod,
  timeoutMs: number,
  tracker: CallTracker,
  invoke: Invoke<Req, Res>,
  request: Req,
): Effect.Effect<Res, CsiError> =>
  Effect.async<Res, CsiError>((resume) => {
    tracker.inFlight += 1;
    tracker.lastActivity = Date.now();
    const done = () => {
      tracker.inFlight -= 1;
      tracker.lastActivity = Date.now();
    };
    const call = invoke(request, { deadline: Date.now() + timeoutMs }, (error, response) => {
      done();
      if (error) resume(Effect.fail(csiErrorFromStatus(method, error)));
      else if (response === undefined) {
        resume(
          Effect.fail(
            new CsiError({ method, code: undefined, detail: "the driver sent no answer" }),
          ),
        );
      } else resume(Effect.succeed(response));
    });
    // The caller stopped waiting (its own timeout, shutdown): tell the driver too.
    return Effect.sync(() => call.cancel());
  });

// A request that does not encode is our bug, not the driver's: it dies rather than being retried.
// The schemas' readonly arrays are only read by the serializer, hence the mutable view.
const encode =
  <A, I>(schema: Schema.Schema<A, I>) =>
  (value: A): Effect.Effect<Types.DeepMutable<I>> =>
    Effect.orDie(Schema.encode(schema)(value)) as Effect.Effect<Types.DeepMutable<I>>;

// ---------------------------------------------------------------------------------------------
// The layer

export interface CsiGrpcHandle {
  readonly service: CsiService;
  readonly connection: CsiConnectionService;
}

/**
 * Opens the channel, waits until it is READY, and closes it with the scope. The returned service
 * is the `Csi` implementation; `connection` reports connection loss.
 */
export const makeCsiGrpc = (
  options: CsiGrpcOptions,
): Effect.Effect<CsiGrpcHandle, CsiConnectionError, Scope.Scope> =>
  Effect.gen(function* () {
    const path = socketPathOf(options.address);
    const target = `unix:${path}`;
    const timeoutMs = Math.max(1, Math.round(Duration.toMillis(Duration.decode(options.timeout))));
    const proto = loadCsiProto();
    const credentials = grpc.credentials.createInsecure();

    // Set before our own close, so that SHUTDOWN is not taken for a loss.
    let closing = false;
    const { identity, controller, channel } = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const identity = new proto.csi.v1.Identity(target, credentials, channelOptions);
        const channel = identity.getChannel();
        const controller = new proto.csi.v1.Controller(target, credentials, {
          ...channelOptions,
          channelOverride: channel,
        });
        return {
          identity: identity as IdentityClient,
          controller: controller as ControllerClient,
          channel,
        };
      }),
      ({ channel }) =>
        Effect.sync(() => {
          closing = true;
          channel.close();
        }),
    );

    const lostSignal = yield* Deferred.make<never, CsiConnectionError>();
    const tracker: CallTracker = { inFlight: 0, lastActivity: Date.now() };

    // -- connecting

    const waitOnce = (deadlineMs: number) =>
      Effect.async<boolean>((resume) => {
        identity.waitForReady(Date.now() + deadlineMs, (error) => resume(Effect.succeed(!error)));
      });
    const logEvery = Duration.toMillis(Duration.decode(options.connectLogInterval ?? "10 seconds"));
    const waitForever: Effect.Effect<void> = Effect.flatMap(waitOnce(logEvery), (ready) =>
      ready
        ? Effect.void
        : closing
          ? Effect.interrupt
          : Effect.zipRight(
              Effect.logWarning(`Still connecting to unix://${path}`),
              Effect.suspend(() => waitForever),
            ),
    );
    yield* Effect.logInfo(`Connecting to unix://${path}`);
    yield* options.connectTimeout === undefined
      ? waitForever
      : Effect.timeoutFail(waitForever, {
          duration: options.connectTimeout,
          onTimeout: () =>
            new CsiConnectionError({
              address: path,
              reason: "Unreachable",
              detail: `not connected after ${Duration.format(Duration.decode(options.connectTimeout ?? 0))} (state ${stateName(channel.getConnectivityState(false))})`,
            }),
        });
    yield* Effect.logInfo(`Connected to unix://${path}`);

    // -- watching for loss (plain callbacks: grpc reports state changes one at a time)

    let lostError: CsiConnectionError | undefined;
    const markLost = (from: ConnectivityStateName, to: ConnectivityStateName) => {
      lostError = new CsiConnectionError({
        address: path,
        reason: "Lost",
        detail: `channel went from ${from} to ${to}`,
      });
      Deferred.unsafeDone(lostSignal, Effect.fail(lostError));
    };
    const idleByTimer = () =>
      tracker.inFlight === 0 && Date.now() - tracker.lastActivity >= idleTimeoutMs - 1000;
    const watch = (current: grpc.connectivityState) => {
      if (closing) return;
      try {
        channel.watchConnectivityState(current, Number.POSITIVE_INFINITY, () => {
          if (closing) return;
          const next = channel.getConnectivityState(false);
          const from = stateName(current);
          const to = stateName(next);
          const dropped =
            (current === grpc.connectivityState.READY &&
              next !== grpc.connectivityState.READY &&
              !(next === grpc.connectivityState.IDLE && idleByTimer())) ||
            next === grpc.connectivityState.TRANSIENT_FAILURE ||
            next === grpc.connectivityState.SHUTDOWN;
          if (dropped) markLost(from, to);
          else watch(next);
        });
      } catch {
        if (!closing) markLost(stateName(current), "SHUTDOWN");
      }
    };
    const initial = channel.getConnectivityState(false);
    if (initial === grpc.connectivityState.READY) watch(initial);
    else markLost("READY", stateName(initial));

    // -- the service

    const call = <Req, Res, A, I>(
      method: CsiMethod,
      invoke: Invoke<Req, Res>,
      request: Req,
      schema: Schema.Schema<A, I>,
    ): Effect.Effect<A, CsiError> =>
      Effect.flatMap(
        unary(method, timeoutMs, tracker, invoke, request),
        decodeReply(method, schema),
      );

    const service: CsiService = {
      probe: call("Probe", (r, o, cb) => identity.Probe(r, o, cb), {}, ProbeResponse),
      getPluginInfo: call(
        "GetPluginInfo",
        (r, o, cb) => identity.GetPluginInfo(r, o, cb),
        {},
        GetPluginInfoResponse,
      ),
      getPluginCapabilities: call(
        "GetPluginCapabilities",
        (r, o, cb) => identity.GetPluginCapabilities(r, o, cb),
        {},
        GetPluginCapabilitiesResponse,
      ),
      controllerGetCapabilities: call(
        "ControllerGetCapabilities",
        (r, o, cb) => controller.ControllerGetCapabilities(r, o, cb),
        {},
        ControllerGetCapabilitiesResponse,
      ),
      createVolume: (request) =>
        Effect.flatMap(encode(CreateVolumeRequest)(request), (wire) =>
          call(
            "CreateVolume",
            (r, o, cb) => controller.CreateVolume(r, o, cb),
            wire,
            CreateVolumeResponse,
          ),
        ),
      deleteVolume: (request) =>
        Effect.flatMap(encode(DeleteVolumeRequest)(request), (wire) =>
          Effect.asVoid(
            call(
              "DeleteVolume",
              (r, o, cb) => controller.DeleteVolume(r, o, cb),
              wire,
              DeleteVolumeResponse,
            ),
          ),
        ),
      getCapacity: (request) =>
        Effect.flatMap(encode(GetCapacityRequest)(request), (wire) =>
          call(
            "GetCapacity",
            (r, o, cb) => controller.GetCapacity(r, o, cb),
            wire,
            GetCapacityResponse,
          ),
        ),
    };

    const connection: CsiConnectionService = {
      target,
      lost: Deferred.await(lostSignal),
      isLost: Effect.sync(() => Option.fromNullable(lostError)),
      state: Effect.sync(() => stateName(channel.getConnectivityState(false))),
    };
    return { service, connection };
  });

/** `Csi` and `CsiConnection` for explicit options (tests, the demo). */
export const layerWith = (
  options: CsiGrpcOptions,
): Layer.Layer<Csi | CsiConnection, CsiConnectionError> =>
  Layer.scopedContext(
    Effect.map(makeCsiGrpc(options), ({ service, connection }) =>
      Context.make(Csi, service).pipe(Context.add(CsiConnection, connection)),
    ),
  );

/** The Live layer: `--csi-address` and `--timeout` from `Config`. */
export const layer: Layer.Layer<Csi | CsiConnection, CsiConnectionError, Config> =
  Layer.unwrapEffect(
    Effect.map(Config, (config) =>
      layerWith({ address: config.csiAddress, timeout: config.timeout }),
    ),
  );
