import { describe, expect, it } from "@effect/vitest";
import { Effect, Either, Layer, TestClock } from "effect";
import { Behaviour, MemoryDriver } from "../src/layers/CsiMemory.js";
import { type HttpEndpointOptions, parseAddress, serve } from "../src/layers/HttpServer.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import { layerPrometheus } from "../src/layers/Metrics.js";
import { LeaderElectionUnhealthy } from "../src/programs/LeaderElection.js";
import { claim, driverName, storageClass } from "./support/Fixtures.js";
import { harness, startProvisioner } from "./support/Harness.js";

interface Reply {
  readonly status: number;
  readonly contentType: string | null;
  readonly body: string;
}

/** Starts the endpoint on a free loopback port; returns a GET against it. */
const start = (options: Partial<HttpEndpointOptions> = {}) =>
  Effect.map(
    serve({
      address: "127.0.0.1:0",
      metricsPath: "/metrics",
      pendingClaims: Effect.succeed([]),
      ...options,
    }),
    ({ port }) =>
      (path: string, init: RequestInit = {}) =>
        Effect.promise(async (): Promise<Reply> => {
          const response = await fetch(`http://127.0.0.1:${port}${path}`, init);
          return {
            status: response.status,
            contentType: response.headers.get("content-type"),
            body: await response.text(),
          };
        }),
  );

const metricsOnly = layerPrometheus({ processMetrics: false });

describe("the HTTP endpoint", () => {
  it("parses addresses as upstream's Go does", () => {
    expect(parseAddress(":8080")).toEqual(Either.right({ port: 8080 }));
    expect(parseAddress("0.0.0.0:8080")).toEqual(Either.right({ host: "0.0.0.0", port: 8080 }));
    expect(parseAddress("127.0.0.1:0")).toEqual(Either.right({ host: "127.0.0.1", port: 0 }));
    expect(parseAddress("[::1]:9808")).toEqual(Either.right({ host: "::1", port: 9808 }));
    for (const bad of ["8080", "", ":", "host:99999", "::1:80", ":http"])
      expect(Either.isLeft(parseAddress(bad)), bad).toBe(true);
  });

  it.scoped("metrics, health, 404 and 405 on a real socket", () =>
    Effect.gen(function* () {
      const get = yield* start({ metricsPath: "/custom-metrics" });
      const metrics = yield* get("/custom-metrics");
      expect(metrics.status).toBe(200);
      expect(metrics.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(metrics.body).toContain("# TYPE csi_sidecar_operations_seconds histogram");
      expect(metrics.body).toContain("# TYPE csi_provisioner_kube_requests_total counter");
      expect(yield* get("/healthz")).toMatchObject({ status: 200, body: "ok\n" });
      // Without leader election, always healthy.
      expect(yield* get("/healthz/leader-election")).toMatchObject({ status: 200, body: "ok\n" });
      expect(yield* get("/metrics")).toMatchObject({ status: 404, body: "404 page not found\n" });
      expect(yield* get("/healthz/")).toMatchObject({ status: 404 });
      expect((yield* get("/healthz", { method: "POST" })).status).toBe(405);
    }).pipe(Effect.provide(metricsOnly)),
  );

  it.scoped("/healthz/leader-election follows the elector's health both ways", () =>
    Effect.gen(function* () {
      let healthy = true;
      const get = yield* start({
        leaderHealthy: Effect.suspend(() =>
          healthy
            ? Effect.void
            : Effect.fail(
                new LeaderElectionUnhealthy({
                  lease: "kube-system/x",
                  message: "failed election to renew leadership on lease kube-system/x",
                }),
              ),
        ),
      });
      expect(yield* get("/healthz/leader-election")).toMatchObject({ status: 200, body: "ok\n" });
      healthy = false;
      expect(yield* get("/healthz/leader-election")).toEqual({
        status: 500,
        contentType: "text/plain; charset=utf-8",
        body: "internal server error: failed election to renew leadership on lease kube-system/x\n",
      });
      // The process itself still serves.
      expect((yield* get("/healthz")).status).toBe(200);
      healthy = true;
      expect((yield* get("/healthz/leader-election")).status).toBe(200);
    }),
  );

  it.scoped("/debug/pvcs from the real controller: JSON, and a table for Accept: text/plain", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const driver = yield* MemoryDriver;
      yield* cluster.create("storageclasses", storageClass("fast"));
      const controller = yield* startProvisioner;
      yield* driver.script("CreateVolume", Behaviour.fail("Internal", "disk\n  on fire"));
      yield* cluster.create("persistentvolumeclaims", claim("broken"));
      yield* cluster.create(
        "persistentvolumeclaims",
        claim("later", {
          storageClassName: "missing-class",
          annotations: { "volume.kubernetes.io/storage-provisioner": driverName },
        }),
      );
      yield* TestClock.adjust("500 millis");
      const get = yield* start({ pendingClaims: controller.pendingClaims });

      const json = yield* get("/debug/pvcs");
      expect(json.status).toBe(200);
      expect(json.contentType).toBe("application/json");
      const items = JSON.parse(json.body);
      expect(items.map((c: any) => [c.name, c.state, c.attempts])).toEqual([
        ["broken", "BackingOff", 1],
        ["later", "BackingOff", 1],
      ]);
      expect(items[0]).toMatchObject({
        namespace: "default",
        storageClass: "fast",
        lastError: "rpc error: code = Internal desc = disk\n  on fire",
        nextRetryAt: "1970-01-01T00:00:01.000Z",
      });
      expect(typeof items[0].uid).toBe("string");

      const table = yield* get("/debug/pvcs", { headers: { accept: "text/plain" } });
      expect(table.contentType).toBe("text/plain; charset=utf-8");
      expect(table.body).toBe(
        [
          "NAMESPACE   NAME     STATE        ATTEMPTS   NEXT RETRY                 LAST ERROR",
          "default     broken   BackingOff   1          1970-01-01T00:00:01.000Z   rpc error: code = Internal desc = disk on fire",
          'default     later    BackingOff   1          1970-01-01T00:00:01.000Z   storageclass.storage.k8s.io "missing-class" not found',
          "",
        ].join("\n"),
      );
      // A browser's Accept prefers neither: JSON.
      const browser = yield* get("/debug/pvcs", {
        headers: { accept: "text/html,application/xhtml+xml,*/*;q=0.8" },
      });
      expect(browser.contentType).toBe("application/json");
    }).pipe(Effect.provide(Layer.merge(harness(), metricsOnly))),
  );

  it.scoped("an address in use is an error naming it", () =>
    Effect.gen(function* () {
      const first = yield* serve({
        address: "127.0.0.1:0",
        metricsPath: "/metrics",
        pendingClaims: Effect.succeed([]),
      });
      const address = `127.0.0.1:${first.port}`;
      const second = yield* Effect.either(
        serve({ address, metricsPath: "/metrics", pendingClaims: Effect.succeed([]) }),
      );
      expect(Either.isLeft(second) && second.left.message).toMatch(
        new RegExp(`^cannot serve HTTP on "${address}": .*EADDRINUSE`),
      );
    }),
  );
});
