import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { describe, expect, it } from "@effect/vitest";
import { Effect, Layer, TestClock } from "effect";
import { Behaviour, MemoryDriver } from "../src/layers/CsiMemory.js";
import { makeKubeRestWith } from "../src/layers/KubeHttp.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { layerPrometheus, Metrics } from "../src/layers/Metrics.js";
import { claim, driverName, storageClass } from "./support/Fixtures.js";
import { harness, startProvisioner } from "./support/Harness.js";

const scrape = Effect.flatMap(Metrics, (metrics) => metrics.exposition).pipe(
  Effect.map((exposition) => exposition.text),
);

/** The sample lines of one metric family, without HELP/TYPE and without histogram buckets. */
const samples = (text: string, family: string) =>
  text
    .split("\n")
    .filter((line) => line.startsWith(family) && !line.startsWith(`${family}_bucket`));

const op = (method: string, code: string, driver = driverName) =>
  `{driver_name="${driver}",method_name="${method}",grpc_status_code="${code}"}`;
const createVolume = "/csi.v1.Controller/CreateVolume";

const withMetrics = (options: Parameters<typeof harness>[0] = {}) =>
  Layer.merge(harness(options), layerPrometheus({ processMetrics: false }));

const withClass = Effect.gen(function* () {
  const cluster = yield* MemoryCluster;
  yield* cluster.create("storageclasses", storageClass("fast"));
  return cluster;
});

describe("metrics recorded by the real programs", () => {
  it.scoped(
    "a provisioned claim: CSI calls by method and code, end-to-end latency, queue adds",
    () =>
      Effect.gen(function* () {
        const cluster = yield* withClass;
        yield* startProvisioner;
        yield* cluster.create("persistentvolumeclaims", claim("a"));
        yield* TestClock.adjust(0);
        const text = yield* scrape;
        expect(samples(text, "csi_sidecar_operations_seconds_count")).toEqual([
          // Before the driver has said its name, as csi-lib-utils does.
          `csi_sidecar_operations_seconds_count${op("/csi.v1.Identity/Probe", "OK", "unknown-driver")} 1`,
          `csi_sidecar_operations_seconds_count${op("/csi.v1.Identity/GetPluginInfo", "OK", "unknown-driver")} 1`,
          `csi_sidecar_operations_seconds_count${op("/csi.v1.Identity/GetPluginCapabilities", "OK", "unknown-driver")} 1`,
          `csi_sidecar_operations_seconds_count${op("/csi.v1.Controller/ControllerGetCapabilities", "OK", "unknown-driver")} 1`,
          `csi_sidecar_operations_seconds_count${op(createVolume, "OK")} 1`,
        ]);
        expect(text).toContain(
          'csi_provisioner_provisioning_duration_seconds_count{class="fast"} 1',
        );
        expect(text).toMatch(/^workqueue_adds_total\{name="claims"\} [1-9]/m);
        expect(text).toContain('csi_provisioner_pending_claims{state="BackingOff"} 0');
        expect(text).toContain('csi_provisioner_in_flight_operations{queue="claims"} 0');
      }).pipe(Effect.provide(withMetrics())),
  );

  it.scoped("a failed attempt: its gRPC code, one retry, latency from the first attempt", () =>
    Effect.gen(function* () {
      const driver = yield* MemoryDriver;
      const cluster = yield* withClass;
      yield* startProvisioner;
      yield* driver.script("CreateVolume", Behaviour.fail("Internal", "disk on fire"));
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust("500 millis");
      const backingOff = yield* scrape;
      expect(backingOff).toContain(
        `csi_sidecar_operations_seconds_count${op(createVolume, "Internal")} 1`,
      );
      expect(backingOff).toContain('csi_provisioner_retries_total{queue="claims"} 1');
      expect(backingOff).toContain('workqueue_retries_total{name="claims"} 1');
      expect(backingOff).toContain('csi_provisioner_pending_claims{state="BackingOff"} 1');
      yield* TestClock.adjust("1 second");
      const done = yield* scrape;
      expect(done).toContain(`csi_sidecar_operations_seconds_count${op(createVolume, "OK")} 1`);
      // Retried at 1 s: the latency spans both attempts.
      expect(samples(done, "csi_provisioner_provisioning_duration_seconds")).toEqual([
        'csi_provisioner_provisioning_duration_seconds_sum{class="fast"} 1',
        'csi_provisioner_provisioning_duration_seconds_count{class="fast"} 1',
      ]);
      expect(done).toContain('csi_provisioner_pending_claims{state="BackingOff"} 0');
    }).pipe(Effect.provide(withMetrics())),
  );

  it.scoped("durations on the clock, our own timeout as DeadlineExceeded, claims by state", () =>
    Effect.gen(function* () {
      const driver = yield* MemoryDriver;
      const cluster = yield* withClass;
      yield* startProvisioner;
      yield* driver.script("CreateVolume", Behaviour.hang, Behaviour.delay("2 seconds"));
      yield* cluster.create("persistentvolumeclaims", claim("stuck"));
      yield* cluster.create("persistentvolumeclaims", claim("slow"));
      yield* TestClock.adjust("1 second");
      const running = yield* scrape;
      expect(running).toContain('csi_provisioner_in_flight_operations{queue="claims"} 2');
      expect(running).toContain('csi_provisioner_pending_claims{state="InProgress"} 2');
      yield* TestClock.adjust("9 seconds");
      const text = yield* scrape;
      expect(samples(text, "csi_sidecar_operations_seconds_sum")).toContain(
        `csi_sidecar_operations_seconds_sum${op(createVolume, "OK")} 2`,
      );
      expect(text).toContain(
        `csi_sidecar_operations_seconds_sum${op(createVolume, "DeadlineExceeded")} 10`,
      );
      expect(text).toContain('csi_provisioner_pending_claims{state="InBackground"} 1');
      expect(text).toContain('csi_provisioner_in_flight_operations{queue="claims"} 0');
    }).pipe(Effect.provide(withMetrics())),
  );

  it.scoped("a deleted claim: DeleteVolume, its retry, and the deletion latency of its PV", () =>
    Effect.gen(function* () {
      const driver = yield* MemoryDriver;
      const cluster = yield* withClass;
      yield* startProvisioner;
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust(0);
      yield* driver.script("DeleteVolume", Behaviour.fail("Unavailable", "busy"));
      yield* cluster.remove("persistentvolumeclaims", "default/a");
      yield* TestClock.adjust("1 second");
      const text = yield* scrape;
      const deleteVolume = "/csi.v1.Controller/DeleteVolume";
      expect(text).toContain(
        `csi_sidecar_operations_seconds_count${op(deleteVolume, "Unavailable")} 1`,
      );
      expect(text).toContain(`csi_sidecar_operations_seconds_count${op(deleteVolume, "OK")} 1`);
      expect(text).toContain('csi_provisioner_retries_total{queue="volumes"} 1');
      // Released at 0 s, gone after the retry at 1 s.
      expect(samples(text, "csi_provisioner_deletion_duration_seconds")).toEqual([
        'csi_provisioner_deletion_duration_seconds_sum{class="fast"} 1',
        'csi_provisioner_deletion_duration_seconds_count{class="fast"} 1',
      ]);
    }).pipe(Effect.provide(withMetrics())),
  );

  it.scoped("without a Metrics layer, programs run and record nothing", () =>
    Effect.gen(function* () {
      const cluster = yield* withClass;
      yield* startProvisioner;
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust(0);
      expect(yield* scrape).toBe("");
    }).pipe(Effect.provide(harness())),
  );

  it.scopedLive("Kubernetes API requests by verb and HTTP code, <error> without a reply", () =>
    Effect.gen(function* () {
      const server = http.createServer((request, response) => {
        if (request.url === "/hang-up") return request.socket.destroy();
        response.statusCode = request.url === "/api/v1/namespaces/default/things/a" ? 200 : 404;
        response.end("{}");
      });
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => {
          server.listen(0, "127.0.0.1", () => resume(Effect.void));
        }),
        () => Effect.sync(() => server.close()),
      );
      const { port } = server.address() as AddressInfo;
      const rest = yield* makeKubeRestWith(
        { server: `http://127.0.0.1:${port}`, headers: {}, skipTLSVerify: false, refresh: false },
        { kubeconfig: "", master: "", qps: 1000, burst: 1000, disableHttp2: false },
      );
      const get = (path: string) =>
        Effect.either(
          rest.request({ method: "GET", path, verb: "get", resource: "things", object: "a" }),
        );
      yield* get("/api/v1/namespaces/default/things/a");
      yield* get("/api/v1/namespaces/default/things/a");
      yield* get("/api/v1/namespaces/default/things/b");
      yield* get("/hang-up");
      expect(samples(yield* scrape, "csi_provisioner_kube_requests_total")).toEqual([
        'csi_provisioner_kube_requests_total{verb="get",code="200"} 2',
        'csi_provisioner_kube_requests_total{verb="get",code="404"} 1',
        'csi_provisioner_kube_requests_total{verb="get",code="<error>"} 1',
      ]);
    }).pipe(Effect.provide(layerPrometheus({ processMetrics: false }))),
  );

  it.effect("process metrics are a few gauges read when scraped", () =>
    Effect.gen(function* () {
      const text = yield* scrape;
      expect(text).toMatch(/^process_resident_memory_bytes [1-9]\d+$/m);
      expect(text).toMatch(/^process_start_time_seconds [1-9]\d+$/m);
      expect(text).toMatch(/^process_cpu_seconds_total \d/m);
      expect(text).not.toContain("nodejs_eventloop_lag");
    }).pipe(Effect.provide(layerPrometheus())),
  );
});
