import { describe, expect, it } from "@effect/vitest";
import { Clock, Effect, Fiber, Option, Random, Ref, TestClock } from "effect";
import { KubeLeases, type KubeLeasesService } from "../src/layers/Kube.js";
import * as KubeMemory from "../src/layers/KubeMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import {
  type LeaderElectionOptions,
  type LeaderElector,
  leaseNameFor,
  makeLeaderElector,
  optionsFromConfig,
  type PodEnvironment,
  podNamespace,
  sanitizeName,
} from "../src/programs/LeaderElection.js";

const lease = "csi-example-com";
const namespace = "kube-system";
const ref = `${namespace}/${lease}`;

const options = (
  identity: string,
  extra: Partial<LeaderElectionOptions> = {},
): LeaderElectionOptions => ({
  name: lease,
  namespace,
  identity,
  leaseDuration: "15 seconds",
  renewDeadline: "10 seconds",
  retryPeriod: "5 seconds",
  ...extra,
});

const at = (seconds: number) => TestClock.setTime(seconds * 1000);
const micro = (seconds: number) =>
  `${new Date(seconds * 1000).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z")}`;
const seconds = Effect.map(Clock.currentTimeMillis, (millis) => millis / 1000);

/**
 * The memory cluster's leases, with every successful write of the elector logged as
 * `<seconds>s <verb> <holder>` and every read as `<seconds>s get`.
 */
const recordingLeases = Effect.gen(function* () {
  const cluster = yield* MemoryCluster;
  const log = yield* Ref.make<ReadonlyArray<string>>([]);
  const note = (line: string) =>
    Effect.flatMap(seconds, (s) => Ref.update(log, (lines) => [...lines, `${s}s ${line}`]));
  const leases: KubeLeasesService = {
    getLease: (r) => Effect.tap(cluster.leases.getLease(r), () => note("get")),
    createLease: (l) =>
      Effect.tap(cluster.leases.createLease(l), (w) => note(`create ${w.spec?.holderIdentity}`)),
    updateLease: (l) =>
      Effect.tap(cluster.leases.updateLease(l), (w) => note(`update ${w.spec?.holderIdentity}`)),
  };
  const writes = Effect.map(Ref.get(log), (lines) => lines.filter((l) => !l.endsWith(" get")));
  return { leases, log: Ref.get(log), writes };
});

/** Starts `run` in the background: `started` holds when the work began, `stopped` when it ended. */
const startRunning = (elector: LeaderElector) =>
  Effect.gen(function* () {
    const started = yield* Ref.make<Option.Option<number>>(Option.none());
    const stopped = yield* Ref.make<Option.Option<number>>(Option.none());
    const work = Effect.flatMap(seconds, (s) => Ref.set(started, Option.some(s))).pipe(
      Effect.zipRight(Effect.never),
      Effect.onInterrupt(() => Effect.flatMap(seconds, (s) => Ref.set(stopped, Option.some(s)))),
    );
    const fiber = yield* Effect.fork(elector.run(work));
    yield* TestClock.adjust(0);
    return { fiber, started: Ref.get(started), stopped: Ref.get(stopped) };
  });

const spec = Effect.flatMap(MemoryCluster, (cluster) => cluster.get("leases", ref)).pipe(
  Effect.map((object) => Option.getOrThrow(object) as { spec: unknown; metadata: any }),
);

/** Another replica's write, bypassing our recorder. */
const otherHolds = (holder: string, extra: Record<string, unknown> = {}) =>
  Effect.gen(function* () {
    const cluster = yield* MemoryCluster;
    const now = yield* seconds;
    const current = yield* cluster.get("leases", ref);
    const body = {
      metadata: { name: lease, namespace },
      spec: {
        holderIdentity: holder,
        leaseDurationSeconds: 15,
        acquireTime: micro(now),
        renewTime: micro(now),
        leaseTransitions: 0,
        ...extra,
      },
    };
    if (Option.isNone(current)) yield* cluster.create("leases", body);
    else yield* cluster.update("leases", { ...current.value, spec: body.spec });
  });

const withElector = <A, E>(
  identity: string,
  body: (
    elector: LeaderElector,
    recorder: Effect.Effect.Success<typeof recordingLeases>,
  ) => Effect.Effect<A, E, MemoryCluster>,
  extra: Partial<LeaderElectionOptions> = {},
) =>
  Effect.gen(function* () {
    const recorder = yield* recordingLeases;
    const elector = yield* makeLeaderElector(options(identity, extra)).pipe(
      Effect.provideService(KubeLeases, recorder.leases),
    );
    return yield* body(elector, recorder);
  }).pipe(Effect.provide(KubeMemory.layerWithCluster({ pvController: false })));

describe("leader election: acquiring", () => {
  it.effect("takes a free lease at once, with holder, duration, times and labels", () =>
    withElector(
      "me",
      (elector, recorder) =>
        Effect.gen(function* () {
          const running = yield* startRunning(elector);
          expect(yield* running.started).toEqual(Option.some(0));
          expect(yield* elector.isLeader).toBe(true);
          expect(yield* elector.leader).toEqual(Option.some("me"));
          const stored = yield* spec;
          expect(stored.spec).toEqual({
            holderIdentity: "me",
            leaseDurationSeconds: 15,
            acquireTime: "1970-01-01T00:00:00.000000Z",
            renewTime: "1970-01-01T00:00:00.000000Z",
            leaseTransitions: 0,
          });
          expect(stored.metadata).toMatchObject({
            name: lease,
            namespace,
            labels: { app: "csi-provisioner" },
          });
          expect(yield* recorder.log).toEqual(["0s get", "0s create me"]);
        }),
      { labels: { app: "csi-provisioner" } },
    ),
  );

  it.effect("renews every retry period, on top of its own last write", () =>
    withElector("me", (elector, recorder) =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        yield* startRunning(elector);
        yield* at(24);
        expect(yield* recorder.writes).toEqual([
          "0s create me",
          "5s update me",
          "10s update me",
          "15s update me",
          "20s update me",
        ]);
        expect((yield* spec).spec).toMatchObject({
          acquireTime: micro(0),
          renewTime: micro(20),
          leaseTransitions: 0,
        });
        // client-go's fast path: a leader whose lease is valid writes without reading first.
        expect(yield* cluster.requestCounts).toEqual({
          "get leases": 1,
          "create leases": 1,
          "update leases": 4,
        });
      }),
    ),
  );

  it.effect("never takes a lease whose holder keeps renewing", () =>
    withElector("me", (elector, recorder) =>
      Effect.gen(function* () {
        yield* otherHolds("other");
        const running = yield* startRunning(elector);
        for (let t = 2; t <= 62; t += 5) {
          yield* at(t);
          yield* otherHolds("other", { acquireTime: micro(0) });
        }
        yield* at(66);
        expect(yield* running.started).toEqual(Option.none());
        expect(yield* recorder.writes).toEqual([]);
        expect(yield* elector.leader).toEqual(Option.some("other"));
        expect(yield* elector.isLeader).toBe(false);
        // Attempts every retry period (no jitter unless asked).
        expect((yield* recorder.log).slice(0, 4)).toEqual([
          "0s get",
          "5s get",
          "10s get",
          "15s get",
        ]);
      }),
    ),
  );

  it.effect(
    "takes over a lease leaseDuration after it last saw the record change, on its own clock",
    () =>
      withElector("me", (elector, recorder) =>
        Effect.gen(function* () {
          yield* otherHolds("other", { leaseTransitions: 3 });
          const running = yield* startRunning(elector);
          yield* at(2);
          yield* otherHolds("other", { leaseTransitions: 3, acquireTime: micro(0) });
          yield* at(7);
          yield* otherHolds("other", { leaseTransitions: 3, acquireTime: micro(0) });
          yield* at(12);
          yield* otherHolds("other", { leaseTransitions: 3, acquireTime: micro(0) });
          // The last renewal (12s) is seen at the 15s attempt: expired at 30s, not at 27s.
          yield* TestClock.setTime(29_999);
          expect(yield* running.started).toEqual(Option.none());
          yield* at(30);
          expect(yield* running.started).toEqual(Option.some(30));
          expect(yield* recorder.writes).toEqual(["30s update me"]);
          expect((yield* spec).spec).toEqual({
            holderIdentity: "me",
            leaseDurationSeconds: 15,
            acquireTime: micro(30),
            renewTime: micro(30),
            leaseTransitions: 4,
          });
        }),
      ),
  );

  it.effect("ignores the record's own timestamps but honours its leaseDurationSeconds", () =>
    withElector("me", (elector, recorder) =>
      Effect.gen(function* () {
        yield* at(100);
        // Renewed "100 seconds ago" by its own clock: still valid for 40s from when we see it.
        yield* otherHolds("other", {
          leaseDurationSeconds: 40,
          acquireTime: micro(0),
          renewTime: micro(0),
        });
        const running = yield* startRunning(elector);
        yield* at(139);
        expect(yield* running.started).toEqual(Option.none());
        yield* at(140);
        expect(yield* running.started).toEqual(Option.some(140));
        expect(yield* recorder.writes).toEqual(["140s update me"]);
      }),
    ),
  );

  it.effect("takes a released lease (empty holder) at its next attempt", () =>
    withElector("me", (elector, recorder) =>
      Effect.gen(function* () {
        yield* otherHolds("", { leaseDurationSeconds: 1, leaseTransitions: 2 });
        const running = yield* startRunning(elector);
        expect(yield* running.started).toEqual(Option.some(0));
        expect(yield* recorder.writes).toEqual(["0s update me"]);
        expect((yield* spec).spec).toMatchObject({ leaseTransitions: 3 });
      }),
    ),
  );

  it.effect("spreads acquire attempts by retryPeriod * (1 + random * jitterFactor)", () =>
    withElector(
      "me",
      (elector, recorder) =>
        Effect.gen(function* () {
          yield* otherHolds("other", { leaseDurationSeconds: 3600 });
          yield* startRunning(elector);
          yield* at(30);
          // 5s + 0.5 * 1.2 * 5s = 8s, then 5s + 0.25 * 6s = 6.5s, and so on.
          expect(yield* recorder.log).toEqual([
            "0s get",
            "8s get",
            "14.5s get",
            "22.5s get",
            "29s get",
          ]);
        }).pipe(Effect.withRandom(Random.fixed([0.5, 0.25]))),
      { jitterFactor: 1.2 },
    ),
  );
});

describe("leader election: losing", () => {
  it.effect("API failures for renewDeadline interrupt the work at the deadline", () =>
    withElector("me", (elector, recorder) =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const running = yield* startRunning(elector);
        yield* at(12);
        for (const verb of ["update", "get"] as const) {
          yield* cluster.failNext({ verb, resource: "leases", reason: "ServerError", times: 100 });
        }
        yield* cluster.resetRequestCounts;
        // The renewal that starts at 15s retries at 20s; its deadline is 15s + 10s.
        yield* TestClock.setTime(24_999);
        expect(yield* running.stopped).toEqual(Option.none());
        yield* at(25);
        expect(yield* running.stopped).toEqual(Option.some(25));
        const error = yield* Effect.flip(Fiber.join(running.fiber));
        expect(error._tag).toBe("LeadershipLost");
        expect(error.message).toBe(`lost leader election lease ${ref}: renewals failed for 10s`);
        // Two attempts (fast-path update, then get), and one get of the release that failed too.
        expect(yield* cluster.requestCounts).toEqual({ "update leases": 2, "get leases": 3 });
        expect(yield* recorder.writes).toEqual(["0s create me", "5s update me", "10s update me"]);
      }),
    ),
  );

  it.effect("a failure shorter than renewDeadline is retried and leadership kept", () =>
    withElector("me", (elector, recorder) =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const running = yield* startRunning(elector);
        yield* at(12);
        yield* cluster.failNext({ verb: "update", resource: "leases", reason: "Unavailable" });
        yield* cluster.failNext({ verb: "get", resource: "leases", reason: "Unavailable" });
        yield* at(34);
        expect(yield* running.stopped).toEqual(Option.none());
        expect(yield* recorder.writes).toEqual([
          "0s create me",
          "5s update me",
          "10s update me",
          "20s update me",
          "25s update me",
          "30s update me",
        ]);
      }),
    ),
  );

  it.effect("someone else's write makes the next update conflict; their holder wins", () =>
    withElector("me", (elector, recorder) =>
      Effect.gen(function* () {
        const running = yield* startRunning(elector);
        yield* at(7);
        yield* otherHolds("intruder");
        // 10s: the update conflicts, the re-read shows a valid lease of theirs; 15s: still theirs.
        yield* TestClock.setTime(19_999);
        expect(yield* running.stopped).toEqual(Option.none());
        yield* at(20);
        expect(yield* running.stopped).toEqual(Option.some(20));
        expect((yield* Effect.flip(Fiber.join(running.fiber)))._tag).toBe("LeadershipLost");
        expect(yield* recorder.writes).toEqual(["0s create me", "5s update me"]);
        expect(yield* recorder.log).toEqual([
          "0s get",
          "0s create me",
          "5s update me",
          "10s get",
          "15s get",
        ]);
        // Not released (not even read again): the last record we saw is not ours.
        expect((yield* spec).spec).toMatchObject({ holderIdentity: "intruder" });
        expect(yield* elector.leader).toEqual(Option.some("intruder"));
        expect(yield* elector.isLeader).toBe(false);
      }),
    ),
  );

  it.effect("a conflicting write that keeps us as holder is absorbed by re-reading", () =>
    withElector(
      "me",
      (elector, recorder) =>
        Effect.gen(function* () {
          const cluster = yield* MemoryCluster;
          const running = yield* startRunning(elector);
          yield* at(7);
          yield* cluster.patchMetadata("leases", ref, {
            annotations: { "example.com/touched": "yes" },
          });
          yield* at(16);
          expect(yield* running.stopped).toEqual(Option.none());
          expect(yield* recorder.log).toEqual([
            "0s get",
            "0s create me",
            "5s update me",
            "10s get",
            "10s update me",
            "15s update me",
          ]);
          expect((yield* spec).metadata).toMatchObject({
            annotations: { "example.com/touched": "yes" },
            labels: { app: "csi-provisioner" },
          });
        }),
      { labels: { app: "csi-provisioner" } },
    ),
  );
});

describe("leader election: health and release", () => {
  it.effect("healthz fails once the leader's last renewal is older than leaseDuration + 20s", () =>
    withElector("me", (elector) =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        yield* elector.healthy;
        const running = yield* startRunning(elector);
        yield* at(60);
        yield* elector.healthy;
        yield* cluster.failNext({
          verb: "update",
          resource: "leases",
          reason: "ServerError",
          times: 100,
        });
        yield* cluster.failNext({
          verb: "get",
          resource: "leases",
          reason: "ServerError",
          times: 100,
        });
        // Last renewal at 60s; lost at 75s (the release fails too, so we still look like the
        // holder), unhealthy strictly after 60s + 15s + 20s.
        yield* at(95);
        expect((yield* Fiber.await(running.fiber))._tag).toBe("Failure");
        yield* elector.healthy;
        yield* TestClock.setTime(95_001);
        const unhealthy = yield* Effect.flip(elector.healthy);
        expect(unhealthy.message).toBe(`failed election to renew leadership on lease ${ref}`);
      }),
    ),
  );

  it.effect("a candidate that is not leading is healthy", () =>
    withElector("me", (elector) =>
      Effect.gen(function* () {
        yield* otherHolds("other", { leaseDurationSeconds: 3600 });
        yield* startRunning(elector);
        yield* at(120);
        yield* elector.healthy;
      }),
    ),
  );

  it.effect("shutdown releases the lease, and another candidate takes it at its next attempt", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const a = yield* makeLeaderElector(options("a"));
      const b = yield* makeLeaderElector(options("b"));
      const first = yield* startRunning(a);
      yield* at(1);
      const second = yield* startRunning(b);
      yield* at(7);
      yield* Fiber.interrupt(first.fiber);
      expect(yield* first.stopped).toEqual(Option.some(7));
      expect(Option.getOrThrow(yield* cluster.get("leases", ref)).spec).toEqual({
        holderIdentity: "",
        leaseDurationSeconds: 1,
        acquireTime: micro(7),
        renewTime: micro(7),
        leaseTransitions: 0,
      });
      expect(yield* a.isLeader).toBe(false);
      // b saw a's 5s renewal at 6s, so without the release it would have waited until 21s.
      yield* at(11);
      expect(yield* second.started).toEqual(Option.some(11));
      expect(Option.getOrThrow(yield* cluster.get("leases", ref)).spec).toMatchObject({
        holderIdentity: "b",
        leaseTransitions: 1,
      });
    }).pipe(Effect.provide(KubeMemory.layerWithCluster({ pvController: false }))),
  );

  it.effect("shutdown keeps renewing while the work winds down, then releases", () =>
    withElector("me", (elector, recorder) =>
      Effect.gen(function* () {
        const work = Effect.never.pipe(Effect.onInterrupt(() => Effect.sleep("7 seconds")));
        const fiber = yield* Effect.fork(elector.run(work));
        yield* at(7);
        const interrupted = yield* Effect.fork(Fiber.interrupt(fiber));
        yield* at(14);
        yield* Fiber.join(interrupted);
        expect(yield* recorder.writes).toEqual([
          "0s create me",
          "5s update me",
          "10s update me",
          "14s update ",
        ]);
      }),
    ),
  );

  it.effect("work that ends releases the lease and returns its result", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const elector = yield* makeLeaderElector(options("me"));
      const fiber = yield* Effect.fork(elector.run(Effect.as(Effect.sleep("12 seconds"), "done")));
      yield* at(12);
      expect(yield* Fiber.join(fiber)).toBe("done");
      expect(Option.getOrThrow(yield* cluster.get("leases", ref)).spec).toMatchObject({
        holderIdentity: "",
        renewTime: micro(12),
      });
    }).pipe(Effect.provide(KubeMemory.layerWithCluster({ pvController: false }))),
  );
});

describe("leader election: configuration", () => {
  const environment = (overrides: Partial<PodEnvironment> = {}): PodEnvironment => ({
    hostname: "csi-provisioner-7d9f8-abcde",
    env: {},
    serviceAccountNamespace: undefined,
    unique: "1234",
    ...overrides,
  });

  it("names the lease after the driver as csi-lib-utils sanitizes it", () => {
    expect(leaseNameFor("hostpath.csi.k8s.io")).toBe("hostpath-csi-k8s-io");
    expect(leaseNameFor("example.com/csi_driver")).toBe("example-com-csi-driver");
    expect(leaseNameFor("csi.example.com.")).toBe("csi-example-com-X");
    expect(sanitizeName("Node_1.local")).toBe("Node-1-local");
  });

  it("takes the namespace from the flag, else POD_NAMESPACE, else the service account, else default", () => {
    expect(podNamespace(environment({ env: { POD_NAMESPACE: "from-env" } }))).toBe("from-env");
    expect(podNamespace(environment({ serviceAccountNamespace: " from-file\n" }))).toBe(
      "from-file",
    );
    expect(podNamespace(environment())).toBe("default");
    const config = {
      leaderElectionNamespace: "",
      leaderElectionLeaseDuration: "15 seconds",
      leaderElectionRenewDeadline: "10 seconds",
      leaderElectionRetryPeriod: "5 seconds",
      leaderElectionLabels: { team: "storage" },
    } as const;
    const derived = optionsFromConfig(
      config as never,
      "csi.example.com",
      environment({ env: { POD_NAMESPACE: "pods" } }),
    );
    expect(derived).toMatchObject({
      name: "csi-example-com",
      namespace: "pods",
      identity: "csi-provisioner-7d9f8-abcde-1234",
      labels: { team: "storage" },
      jitterFactor: 1.2,
    });
    const explicit = optionsFromConfig(
      { ...config, leaderElectionNamespace: "kube-system" } as never,
      "csi.example.com",
      environment({ env: { POD_NAMESPACE: "pods" } }),
    );
    expect(explicit.namespace).toBe("kube-system");
  });

  it.effect("refuses timings client-go refuses", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(
        makeLeaderElector(options("me", { renewDeadline: "6 seconds" })),
      );
      expect(error.message).toBe(
        "leader election: renewDeadline must be greater than retryPeriod*JitterFactor",
      );
      const longer = yield* Effect.flip(
        makeLeaderElector(options("me", { renewDeadline: "15 seconds" })),
      );
      expect(longer.message).toContain("leaseDuration must be greater than renewDeadline");
    }).pipe(Effect.provide(KubeMemory.layerWithCluster({ pvController: false }))),
  );
});
