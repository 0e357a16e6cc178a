import { Context, Effect, Layer, type Scope } from "effect";
import type * as Prometheus from "prom-client";

/**
 * What the sidecar measures. Recording is synchronous and cheap (a counter bump, a histogram
 * observation) because it sits on per-key and per-request paths; what can be read instead of
 * counted (queue depth, claims by state) is read only when scraped.
 */
export interface MetricsService {
  /** csi-lib-utils' SetDriverName: CSI calls before it count under `unknown-driver`. */
  readonly setDriverName: (name: string) => void;
  /** One CSI call: `method` as gRPC names it (`/csi.v1.Controller/CreateVolume`), `code` by name. */
  readonly csiOperation: (method: string, code: string, seconds: number) => void;
  /** A claim's PV saved, `seconds` after its first provisioning attempt. */
  readonly provisioned: (storageClass: string, seconds: number) => void;
  /** A released volume's PV gone, `seconds` after it was first seen released. */
  readonly deleted: (storageClass: string, seconds: number) => void;
  readonly queueAdded: (queue: string) => void;
  readonly queueRetried: (queue: string) => void;
  /** One Kubernetes API request; `code` is the HTTP status, or `<error>` without a reply. */
  readonly kubeRequest: (verb: string, code: string) => void;
  /** Reads the queue at each scrape until the scope closes. */
  readonly watchQueue: (
    queue: string,
    probe: QueueProbe,
  ) => Effect.Effect<void, never, Scope.Scope>;
  /** Counts the claims pending on us by state at each scrape until the scope closes. */
  readonly watchPendingClaims: (
    claims: Effect.Effect<ReadonlyArray<{ readonly state: string }>>,
  ) => Effect.Effect<void, never, Scope.Scope>;
  /** The Prometheus text exposition. */
  readonly exposition: Effect.Effect<Exposition>;
}

export interface QueueProbe {
  /** Keys waiting for a worker. */
  readonly depth: () => number;
  /** Keys a worker is processing now. */
  readonly inFlight: () => number;
}

export interface Exposition {
  readonly contentType: string;
  readonly text: string;
}

/** Records nothing: what every program sees unless a real implementation is provided. */
export const noop: MetricsService = {
  setDriverName: () => {},
  csiOperation: () => {},
  provisioned: () => {},
  deleted: () => {},
  queueAdded: () => {},
  queueRetried: () => {},
  kubeRequest: () => {},
  watchQueue: () => Effect.void,
  watchPendingClaims: () => Effect.void,
  exposition: Effect.succeed({ contentType: "text/plain; version=0.0.4; charset=utf-8", text: "" }),
};

/**
 * A reference with a no-op default, so that programs and unit tests run without any metrics
 * setup and recording never shows up in a program's requirements.
 */
export class Metrics extends Context.Reference<Metrics>()("csi-provisioner/Metrics", {
  defaultValue: (): MetricsService => noop,
}) {}

export const layerNoop = Layer.succeed(Metrics, noop);

/** csi-lib-utils' buckets for csi_sidecar_operations_seconds; our latencies use them too. */
export const operationBuckets = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 25, 50, 120, 300, 600];
export const unknownDriver = "unknown-driver";
/** The states of `/debug/pvcs`, always exported so that a state's series never disappears. */
const claimStates = ["Waiting", "Queued", "InProgress", "InBackground", "BackingOff"];

export interface PrometheusOptions {
  /** A few cheap process gauges (RSS, heap, CPU, start time); prom-client's defaults are not used. */
  readonly processMetrics?: boolean;
}

const makePrometheus = (options: PrometheusOptions) =>
  Effect.gen(function* () {
    // Loaded only when metrics are wanted: importing this module must stay free.
    // prom-client is CommonJS: in the bundled sidecar its exports arrive as `default`.
    const loaded = yield* Effect.promise(() => import("prom-client"));
    const prom: typeof loaded =
      "Registry" in loaded ? loaded : (loaded as { default: typeof loaded }).default;
    const registry = new prom.Registry();
    const registers = [registry];
    const counter = (name: string, help: string, labelNames: Array<string>) =>
      new prom.Counter({ name, help, labelNames, registers });
    const gauge = (name: string, help: string, labelNames: Array<string>) =>
      new prom.Gauge({ name, help, labelNames, registers });
    const histogram = (name: string, help: string, labelNames: Array<string>) =>
      new prom.Histogram({ name, help, labelNames, buckets: operationBuckets, registers });

    const operations = histogram(
      "csi_sidecar_operations_seconds",
      "Container Storage Interface operation duration with gRPC error code status total",
      ["driver_name", "method_name", "grpc_status_code"],
    );
    const provisioning = histogram(
      "csi_provisioner_provisioning_duration_seconds",
      "Time from a claim's first provisioning attempt to its PersistentVolume saved, retries included.",
      ["class"],
    );
    const deletion = histogram(
      "csi_provisioner_deletion_duration_seconds",
      "Time from a PersistentVolume seen Released to it being gone, its volume deleted.",
      ["class"],
    );
    const kubeRequests = counter(
      "csi_provisioner_kube_requests_total",
      "Kubernetes API requests by verb and HTTP status code (<error>: no reply).",
      ["verb", "code"],
    );
    const depth = gauge("csi_provisioner_queue_depth", "Keys waiting for a worker.", ["queue"]);
    const inFlight = gauge(
      "csi_provisioner_in_flight_operations",
      "Keys being processed by a worker.",
      ["queue"],
    );
    const retries = counter(
      "csi_provisioner_retries_total",
      "Failed runs of a key that were scheduled for a retry after backoff.",
      ["queue"],
    );
    const pending = gauge(
      "csi_provisioner_pending_claims",
      "Claims of our driver without a volume yet, by state (see /debug/pvcs).",
      ["state"],
    );
    // client-go's workqueue names, for dashboards made for Kubernetes controllers.
    const workqueueDepth = gauge("workqueue_depth", "Current depth of workqueue", ["name"]);
    const workqueueAdds = counter(
      "workqueue_adds_total",
      "Total number of adds handled by workqueue",
      ["name"],
    );
    const workqueueRetries = counter(
      "workqueue_retries_total",
      "Total number of retries handled by workqueue",
      ["name"],
    );

    let driverName = unknownDriver;
    // Plain numbers on the per-key path, copied into the counters when scraped.
    const queueCounts = new Map<string, { adds: number; retries: number }>();
    const countsOf = (queue: string) => {
      let counts = queueCounts.get(queue);
      if (!counts) {
        counts = { adds: 0, retries: 0 };
        queueCounts.set(queue, counts);
      }
      return counts;
    };
    const probes = new Map<string, QueueProbe>();
    let claims: Effect.Effect<ReadonlyArray<{ readonly state: string }>> | undefined;
    const refreshProcess =
      options.processMetrics === false ? () => {} : processGauges(prom, registers);

    const refreshQueues = () => {
      for (const [queue, counts] of queueCounts) {
        for (const [metric, label, value] of [
          [retries, "queue", counts.retries],
          [workqueueAdds, "name", counts.adds],
          [workqueueRetries, "name", counts.retries],
        ] as const) {
          metric.remove({ [label]: queue });
          metric.inc({ [label]: queue }, value);
        }
      }
      for (const [queue, probe] of probes) {
        const waiting = probe.depth();
        depth.set({ queue }, waiting);
        workqueueDepth.set({ name: queue }, waiting);
        inFlight.set({ queue }, probe.inFlight());
      }
    };

    const countClaims = (list: ReadonlyArray<{ readonly state: string }>) => {
      const counts = new Map(claimStates.map((state) => [state, 0]));
      for (const claim of list) counts.set(claim.state, (counts.get(claim.state) ?? 0) + 1);
      for (const [state, count] of counts) pending.set({ state }, count);
    };

    const service: MetricsService = {
      setDriverName: (name) => {
        driverName = name === "" ? unknownDriver : name;
      },
      csiOperation: (method, code, seconds) =>
        operations.observe(
          { driver_name: driverName, method_name: method, grpc_status_code: code },
          seconds,
        ),
      provisioned: (storageClass, seconds) =>
        provisioning.observe({ class: storageClass }, seconds),
      deleted: (storageClass, seconds) => deletion.observe({ class: storageClass }, seconds),
      queueAdded: (queue) => {
        countsOf(queue).adds++;
      },
      queueRetried: (queue) => {
        countsOf(queue).retries++;
      },
      kubeRequest: (verb, code) => kubeRequests.inc({ verb, code }),
      watchQueue: (queue, probe) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            countsOf(queue);
            probes.set(queue, probe);
          }),
          () =>
            Effect.sync(() => {
              if (probes.get(queue) !== probe) return;
              probes.delete(queue);
              // A stopped controller (leadership lost) has nothing queued.
              depth.set({ queue }, 0);
              workqueueDepth.set({ name: queue }, 0);
              inFlight.set({ queue }, 0);
            }),
        ),
      watchPendingClaims: (source) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            claims = source;
          }),
          () =>
            Effect.sync(() => {
              if (claims !== source) return;
              claims = undefined;
              countClaims([]);
            }),
        ),
      exposition: Effect.gen(function* () {
        if (claims) countClaims(yield* claims);
        refreshQueues();
        refreshProcess();
        const text = yield* Effect.promise(() => registry.metrics());
        return { contentType: registry.contentType, text };
      }),
    };
    return service;
  });

/** The few process metrics a sidecar's operator looks at, read when scraped, nothing sampled. */
const processGauges = (
  prom: typeof Prometheus,
  registers: Array<Prometheus.Registry>,
): (() => void) => {
  const rss = new prom.Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size in bytes.",
    registers,
  });
  const heap = new prom.Gauge({
    name: "nodejs_heap_size_used_bytes",
    help: "Process heap size used from Node.js in bytes.",
    registers,
  });
  const cpu = new prom.Counter({
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent in seconds.",
    registers,
  });
  new prom.Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since unix epoch in seconds.",
    registers,
  }).set(Math.round(Date.now() / 1000 - process.uptime()));
  return () => {
    const memory = process.memoryUsage();
    rss.set(memory.rss);
    heap.set(memory.heapUsed);
    const usage = process.cpuUsage();
    cpu.reset();
    cpu.inc((usage.user + usage.system) / 1e6);
  };
};

/** Prometheus metrics on prom-client, in a registry of their own. */
export const layerPrometheus = (options: PrometheusOptions = {}) =>
  Layer.effect(Metrics, makePrometheus(options));
