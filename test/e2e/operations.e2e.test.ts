import { createServer } from "node:net";
import * as k8s from "@kubernetes/client-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { mulberry32 } from "../../src/driver/server.js";
import {
  claimBody,
  createVolumeInFlight,
  driverLines,
  intentFinalizer,
  outputs,
  readClaim,
} from "./support/Claims.js";
import { type RunningControlPlane, start } from "./support/ControlPlane.js";
import {
  driverName as baseDriverName,
  type ReferenceDriver,
  type RunningProcess,
  sidecarKubeconfig,
  startDriver,
  startSidecar,
  waitFor,
} from "./support/Processes.js";

// Operations of the built csi-provisioner on a real control plane: two replicas under leader
// election, the HTTP endpoint (metrics, health, /debug/pvcs) and the graceful stop on SIGTERM.
// Every sidecar runs under deploy/rbac.yaml's ServiceAccount (sidecarKubeconfig).
//
// Each scenario runs its own driver name, so that its sidecars see only its claims (a claim left
// backing off by one scenario would otherwise take the first, delayed, CreateVolume of the next)
// and its Lease is its own.

let cp: RunningControlPlane;
let core: k8s.CoreV1Api;
let storage: k8s.StorageV1Api;
let coordination: k8s.CoordinationV1Api;
let kubeconfig: string;
/** The sidecars' namespace: their ServiceAccount, and the Leases (deploy/rbac.yaml's Role). */
const system = `ops-${Date.now().toString(36)}`;
const running: Array<RunningProcess> = [];
const stopWatches: Array<() => void> = [];
/** How long things took, printed at the end. */
const timings: Record<string, number> = {};

/** Short election timings to keep the test fast; the rules are the same as with the defaults. */
const leaseSeconds = 6;
const retrySeconds = 1;
const election = [
  "--leader-election",
  `--leader-election-namespace=${system}`,
  `--leader-election-lease-duration=${leaseSeconds}s`,
  "--leader-election-renew-deadline=4s",
  `--leader-election-retry-period=${retrySeconds}s`,
];
/** client-go's JitterFactor: a candidate tries again every retryPeriod × [1, 2.2). */
const jitteredRetryMs = retrySeconds * 1000 * 2.2;

let scenario = 0;
/** A fresh namespace, StorageClass name and driver name per test. */
const fresh = async () => {
  scenario += 1;
  const suffix = Date.now().toString(36);
  const namespace = `ops-${scenario}-${suffix}`;
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  return {
    namespace,
    className: `ops-sc-${scenario}-${suffix}`,
    name: `op${scenario}-${suffix}.${baseDriverName}`,
  };
};

/** The reference driver as `name` (its flag parser takes the last `--name`). */
const driver = (name: string, flags: Array<string> = []) => {
  const d = startDriver([`--name=${name}`, ...flags]);
  running.push(d);
  return d;
};

const sidecar = (d: ReferenceDriver, flags: Array<string> = []) => {
  const s = startSidecar([
    `--csi-address=unix://${d.socket}`,
    `--kubeconfig=${kubeconfig}`,
    "-v=4",
    ...flags,
  ]);
  running.push(s);
  return s;
};

const storageClass = (name: string, provisioner: string, parameters?: Record<string, string>) =>
  storage.createStorageClass({
    body: {
      metadata: { name },
      provisioner,
      reclaimPolicy: "Delete",
      volumeBindingMode: "Immediate",
      ...(parameters ? { parameters } : {}),
    },
  });

const claim = (namespace: string, name: string, className: string) =>
  core.createNamespacedPersistentVolumeClaim({ namespace, body: claimBody(name, className) });

const readVolume = (name: string) =>
  core.readPersistentVolume({ name }).catch((e: unknown) => {
    if ((e as { code?: number }).code === 404) return undefined;
    throw e;
  });

const bound = (namespace: string, name: string, timeoutMs = 30_000, logs?: () => string) =>
  waitFor(
    `PVC ${namespace}/${name} Bound`,
    async () => {
      const pvc = await readClaim(core, namespace, name);
      return pvc?.status?.phase === "Bound" ? pvc : undefined;
    },
    timeoutMs,
    logs,
  );

const intentReleased = (namespace: string, name: string, timeoutMs = 10_000, logs?: () => string) =>
  waitFor(
    `the intent finalizer of ${namespace}/${name} released`,
    async () =>
      ((await readClaim(core, namespace, name))?.metadata?.finalizers ?? []).includes(
        intentFinalizer,
      )
        ? undefined
        : true,
    timeoutMs,
    logs,
  );

/**
 * Exactly one volume on the driver per claim, each the one its PV names, and no intent finalizer
 * left: nothing provisioned twice, nothing leaked.
 */
const expectOneVolumePerClaim = async (
  d: ReferenceDriver,
  namespace: string,
  names: ReadonlyArray<string>,
) => {
  const handles: Array<string> = [];
  for (const name of names) {
    const pvc = await readClaim(core, namespace, name);
    expect(pvc?.status?.phase).toBe("Bound");
    expect(pvc?.metadata?.finalizers ?? []).not.toContain(intentFinalizer);
    const pvName = pvc?.spec?.volumeName as string;
    expect(pvName).toBe(`pvc-${pvc?.metadata?.uid}`);
    const pv = await core.readPersistentVolume({ name: pvName });
    handles.push(pv.spec?.csi?.volumeHandle as string);
  }
  const volumes = d.volumes();
  expect(volumes).toHaveLength(names.length);
  expect(new Set(volumes.map((v) => v.name)).size).toBe(names.length);
  expect(volumes.map((v) => v.volume_id).sort()).toEqual([...handles].sort());
};

/** csi-lib-utils' lease name for a driver (black box: its rule, not src/programs). */
const leaseNameOf = (driver: string) => driver.replace(/[^a-zA-Z0-9-]/g, "-");

const readLease = (name: string) =>
  coordination.readNamespacedLease({ namespace: system, name }).catch((e: unknown) => {
    if ((e as { code?: number }).code === 404) return undefined;
    throw e;
  });

interface LeaseSeen {
  /** When the test process received the watch event. */
  readonly at: number;
  readonly holder: string;
  readonly transitions: number;
}

/** Every version of the Lease, as a watch delivers them: a release is seen even if short-lived. */
const watchLease = async (name: string) => {
  const seen: Array<LeaseSeen> = [];
  const controller = await new k8s.Watch(cp.kubeConfig()).watch(
    `/apis/coordination.k8s.io/v1/namespaces/${system}/leases`,
    { fieldSelector: `metadata.name=${name}` },
    (_type, lease: { spec?: { holderIdentity?: string; leaseTransitions?: number } }) => {
      seen.push({
        at: Date.now(),
        holder: lease.spec?.holderIdentity ?? "",
        transitions: lease.spec?.leaseTransitions ?? 0,
      });
    },
    () => {},
  );
  stopWatches.push(() => controller.abort());
  return {
    seen,
    /** The first version at or after `since` that `holder` holds ("" for a released Lease). */
    heldBy: (holder: string, since: number) =>
      seen.find((entry) => entry.at >= since && entry.holder === holder),
  };
};

/** The identity a replica campaigns with, from its log. */
const identityOf = (s: RunningProcess) =>
  waitFor(
    "a replica's identity",
    () => /waiting to lead on Lease \S+ as ([A-Za-z0-9-]+)/.exec(s.output())?.[1],
    15_000,
    s.output,
  );

const controllerStarted = (s: RunningProcess) => s.output().includes("controller started");

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });

/** A sidecar with `--http-endpoint` on a free loopback port, once its endpoint answers. */
const sidecarWithEndpoint = async (d: ReferenceDriver, flags: Array<string> = []) => {
  const port = await freePort();
  const s = sidecar(d, [`--http-endpoint=127.0.0.1:${port}`, ...flags]);
  const base = `http://127.0.0.1:${port}`;
  await waitFor(
    "the HTTP endpoint",
    async () => (await fetch(`${base}/healthz`)).ok,
    15_000,
    s.output,
  );
  return { s, base };
};

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** The Prometheus text format's samples. */
const parseExposition = (text: string): Array<Sample> =>
  text
    .split("\n")
    .filter((line) => line !== "" && !line.startsWith("#"))
    .flatMap((line) => {
      const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!match) return [];
      const labels: Record<string, string> = {};
      for (const [, key, value] of (match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
        labels[key as string] = value as string;
      }
      return [{ name: match[1] as string, labels, value: Number(match[3]) }];
    });

/** The sum of the samples of `name` whose labels include `labels` (0 when there are none). */
const sampleValue = (
  samples: ReadonlyArray<Sample>,
  name: string,
  labels: Readonly<Record<string, string>>,
) =>
  samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);

beforeAll(async () => {
  cp = await start();
  const kc = cp.kubeConfig();
  core = kc.makeApiClient(k8s.CoreV1Api);
  storage = kc.makeApiClient(k8s.StorageV1Api);
  coordination = kc.makeApiClient(k8s.CoordinationV1Api);
  await core.createNamespace({ body: { metadata: { name: system } } });
  kubeconfig = await sidecarKubeconfig(cp, system);
}, 30 * 60_000);

afterEach(async ({ task }) => {
  // Everything the test's processes said, for a failure that did not happen in a waitFor.
  if (task.result?.state === "fail") {
    for (const p of running)
      console.log(`----- ${p.child.spawnargs.slice(1, 2)} -----\n${p.output()}`);
  }
  for (const stop of stopWatches.splice(0)) stop();
  await Promise.all(running.splice(0).map((p) => p.stop("SIGKILL")));
});

afterAll(async () => {
  console.log(`operations e2e timings (ms): ${JSON.stringify(timings)}`);
  await cp?.stop();
}, 60_000);

describe("csi-provisioner operations on a real control plane", () => {
  it("two replicas: one leads; the leader killed mid-CreateVolume is replaced within the lease, nothing twice; a SIGTERM hands over at once", async () => {
    const began = Date.now();
    const { namespace, className, name } = await fresh();
    const lease = leaseNameOf(name);
    const leases = await watchLease(lease);
    const d = driver(name, ["--delay-create=3s", "--delay-create-calls=3"]);
    const a = sidecar(d, election);
    const b = sidecar(d, election);
    const logs = outputs(a, b, d);
    const ids = new Map([
      [await identityOf(a), a],
      [await identityOf(b), b],
    ]);
    expect(ids.size).toBe(2);

    // Exactly one leads: the Lease names it, only its controller runs, the other knows it.
    const leaderId = await waitFor(
      "a holder of the Lease",
      async () => (await readLease(lease))?.spec?.holderIdentity || undefined,
      30_000,
      logs,
    );
    const leader = ids.get(leaderId) as RunningProcess;
    expect(leader).toBeDefined();
    const [followerId, follower] = [...ids].find(([id]) => id !== leaderId) as [
      string,
      RunningProcess,
    ];
    await waitFor(
      "the leader's controller",
      () => controllerStarted(leader) || undefined,
      15_000,
      logs,
    );
    await waitFor(
      "the follower to see the leader",
      () =>
        follower
          .output()
          .includes(`new leader detected on lease ${system}/${lease}: ${leaderId}`) || undefined,
      15_000,
      logs,
    );
    expect(controllerStarted(follower)).toBe(false);
    expect((await readLease(lease))?.spec?.holderIdentity).toBe(leaderId);

    // Claims while the first three CreateVolume calls are slow; the leader dies during them.
    await storageClass(className, name);
    const claims = ["c1", "c2", "c3", "c4"];
    for (const c of claims) await claim(namespace, c, className);
    await waitFor(
      "three slow CreateVolume calls in flight",
      () => driverLines(d, /CreateVolume name=\S+ delayed/).length >= 3 || undefined,
      30_000,
      logs,
    );
    const finalizersAtKill = await Promise.all(
      claims.map(async (c) => (await readClaim(core, namespace, c))?.metadata?.finalizers ?? []),
    );
    const killedAt = Date.now();
    expect(await leader.stop("SIGKILL")).toBeNull();
    expect(driverLines(d, /CreateVolume name=\S+ .*-> OK/).length).toBeLessThan(claims.length);
    // At least the slow ones were still pending, under their intent finalizer.
    expect(
      finalizersAtKill.filter((f) => f.includes(intentFinalizer)).length,
    ).toBeGreaterThanOrEqual(3);

    const takeover = await waitFor(
      "the follower to hold the Lease",
      () => leases.heldBy(followerId, killedAt),
      30_000,
      logs,
    );
    timings.killToTakeover = takeover.at - killedAt;
    const lastRenewal = leases.seen.filter((e) => e.at < killedAt && e.holder === leaderId).pop();
    if (lastRenewal) timings.lastRenewalToTakeover = takeover.at - lastRenewal.at;
    // client-go's rule: the follower counts the lease from when it last saw the record change,
    // which is up to one jittered retry after the leader's last renewal, and notices expiry at
    // its next jittered retry: leaseDuration + 2 × retryPeriod × 2.2 at worst, plus API latency.
    expect(timings.killToTakeover).toBeLessThanOrEqual(
      leaseSeconds * 1000 + 2 * jitteredRetryMs + 1000,
    );
    expect(follower.output()).toMatch(/successfully acquired lease/);
    await waitFor("the new leader's controller", () => controllerStarted(follower) || undefined);

    for (const c of claims) await bound(namespace, c, 30_000, logs);
    for (const c of claims) await intentReleased(namespace, c, 10_000, logs);
    await expectOneVolumePerClaim(d, namespace, claims);
    timings.failoverScenarioUntilBound = Date.now() - killedAt;

    // A replica stopped with SIGTERM hands the Lease back: the next one takes it at once.
    const third = sidecar(d, election);
    const thirdId = await identityOf(third);
    await waitFor(
      "the third replica to see the leader",
      () =>
        third.output().includes(`new leader detected on lease ${system}/${lease}: ${followerId}`) ||
        undefined,
      15_000,
      outputs(follower, third, d),
    );
    const termAt = Date.now();
    follower.child.kill("SIGTERM");
    const released = await waitFor("the Lease released", () => leases.heldBy("", termAt), 15_000);
    const taken = await waitFor(
      "the third replica to hold the Lease",
      () => leases.heldBy(thirdId, termAt),
      15_000,
      outputs(follower, third, d),
    );
    expect(await follower.exited).toBe(0);
    expect(follower.output()).toMatch(/released lease/);
    expect(released.at).toBeLessThanOrEqual(taken.at);
    timings.sigtermToRelease = released.at - termAt;
    timings.sigtermToTakeover = taken.at - termAt;
    // Well under the lease duration: at the candidate's next (jittered) retry.
    expect(timings.sigtermToTakeover).toBeLessThan(jitteredRetryMs + 1500);
    expect(timings.sigtermToTakeover).toBeLessThan(leaseSeconds * 1000);
    await waitFor("the third replica's controller", () => controllerStarted(third) || undefined);
    await claim(namespace, "c5", className);
    await bound(namespace, "c5", 30_000, outputs(third, d));
    await intentReleased(namespace, "c5", 10_000, outputs(third, d));
    await expectOneVolumePerClaim(d, namespace, [...claims, "c5"]);

    // A replica waiting for the Lease stops at once with SIGTERM, and leaves the Lease alone.
    const waiting = sidecar(d, election);
    await identityOf(waiting);
    await waitFor(
      "the waiting replica to see the leader",
      () =>
        waiting.output().includes(`new leader detected on lease ${system}/${lease}: ${thirdId}`) ||
        undefined,
      15_000,
      outputs(third, waiting, d),
    );
    const waitingTermAt = Date.now();
    waiting.child.kill("SIGTERM");
    expect(await waiting.exited, waiting.output()).toBe(0);
    timings.sigtermToExitWaiting = Date.now() - waitingTermAt;
    expect(timings.sigtermToExitWaiting).toBeLessThan(3_000);
    expect((await readLease(lease))?.spec?.holderIdentity).toBe(thirdId);
    expect(third.child.exitCode).toBeNull();
    timings.scenario1 = Date.now() - began;
  });

  it("a leader whose Lease is taken stops at once: no waiting for its CreateVolume, no PV after the loss", async () => {
    const began = Date.now();
    const { namespace, className, name } = await fresh();
    const lease = leaseNameOf(name);
    const d = driver(name, ["--delay-create=10s", "--delay-create-calls=1"]);
    const s = sidecar(d, [...election, "--timeout=30s"]);
    let logs = outputs(s, d);
    await waitFor("the controller", () => controllerStarted(s) || undefined, 15_000, logs);
    await storageClass(className, name);
    const pvc = await claim(namespace, "data", className);
    const volumeName = `pvc-${pvc.metadata?.uid}`;
    await createVolumeInFlight(core, d, { namespace: namespace, name: "data", volumeName }, logs);

    // Another holder writes the Lease (as a replica that saw it expire would): ours is lost.
    const write = (spec: k8s.V1LeaseSpec) =>
      waitFor("a write of the Lease", async () => {
        const current = (await readLease(lease)) as k8s.V1Lease;
        const transitions = (current.spec?.leaseTransitions ?? 0) + 1;
        return coordination.replaceNamespacedLease({
          namespace: system,
          name: lease,
          body: { ...current, spec: { ...spec, leaseTransitions: transitions } },
        });
      });
    const now = () => new k8s.V1MicroTime();
    await write({
      holderIdentity: "another-replica",
      leaseDurationSeconds: 300,
      acquireTime: now(),
      renewTime: now(),
    });
    const lostAt = Date.now();
    const code = await s.exited;
    timings.leaseTakenToExit = Date.now() - lostAt;
    // client-go's rule: renewals fail for renewDeadline (4s), starting within a retry period.
    expect(code, logs()).not.toBe(0);
    expect(s.output()).toContain("lost leader election lease");
    expect(timings.leaseTakenToExit).toBeLessThan(4_000 + jitteredRetryMs + 1_000);
    // It did not wait for the call, nor record anything after losing the Lease.
    expect(driverLines(d, new RegExp(`CreateVolume name=${volumeName} .*-> OK`))).toEqual([]);
    expect(s.output()).not.toContain("stopping: letting operations in progress finish");
    expect(await readVolume(volumeName)).toBeUndefined();
    expect((await readClaim(core, namespace, "data"))?.metadata?.finalizers).toContain(
      intentFinalizer,
    );

    // The other holder hands the Lease back; the next replica finishes the claim, once.
    await write({
      holderIdentity: "",
      leaseDurationSeconds: 1,
      acquireTime: now(),
      renewTime: now(),
    });
    const next = sidecar(d, election);
    logs = outputs(s, next, d);
    await bound(namespace, "data", 30_000, logs);
    await intentReleased(namespace, "data", 10_000, logs);
    await expectOneVolumePerClaim(d, namespace, ["data"]);
    timings.scenario1b = Date.now() - began;
  });

  it("/metrics counts the CreateVolume calls the driver answered, and Kubernetes requests; /healthz answers", async () => {
    const began = Date.now();
    const { namespace, className, name } = await fresh();
    // The driver's fault dice are seeded: pick a seed whose first CreateVolume fails and whose
    // next ten succeed, so that exactly one of the calls fails, whatever the order of the claims.
    const rate = 0.5;
    let seed = 1;
    for (; ; seed++) {
      const roll = mulberry32(seed);
      if (roll() < rate && Array.from({ length: 10 }, roll).every((x) => x >= rate)) break;
    }
    const d = driver(name, [`--fail-create-rate=${rate}`, `--seed=${seed}`]);
    const { s, base } = await sidecarWithEndpoint(d, election);
    const logs = outputs(s, d);
    await waitFor("the leader's controller", () => controllerStarted(s) || undefined, 15_000, logs);

    await storageClass(className, name);
    const claims = ["m1", "m2", "m3", "m4", "m5"];
    for (const c of claims) await claim(namespace, c, className);
    for (const c of claims) await bound(namespace, c, 30_000, logs);
    for (const c of claims) await intentReleased(namespace, c, 10_000, logs);
    await expectOneVolumePerClaim(d, namespace, claims);

    const driverOk = driverLines(d, /CreateVolume name=\S+ .*-> OK /).length;
    const driverFailed = driverLines(d, /CreateVolume name=\S+ .*-> UNAVAILABLE: /).length;
    expect(driverOk).toBe(claims.length);
    expect(driverFailed).toBe(1);
    // The counter has verb and code, no resource: PV creates are told apart by the arithmetic.
    // Our events exist on the server before the sidecar counts their replies: poll for those.
    const events = (await core.listNamespacedEvent({ namespace })).items.filter(
      (e) => e.reportingComponent === "external-provisioner",
    ).length;
    expect(events).toBeGreaterThanOrEqual(claims.length * 2);

    const response = await waitFor("the metrics", async () => {
      const r = await fetch(`${base}/metrics`);
      const samples = parseExposition(await r.text());
      const creates = sampleValue(samples, "csi_provisioner_kube_requests_total", {
        verb: "create",
        code: "201",
      });
      return creates >= claims.length + events ? { r, samples, creates } : undefined;
    });
    // Every create of this sidecar: the five PVs, its events, and the Lease (new: our driver name).
    expect(response.creates).toBe(claims.length + events + 1);
    expect(response.r.status).toBe(200);
    expect(response.r.headers.get("content-type")).toMatch(/^text\/plain/);
    const { samples } = response;
    const operations = (code: string) =>
      sampleValue(samples, "csi_sidecar_operations_seconds_count", {
        driver_name: name,
        grpc_status_code: code,
        method_name: "/csi.v1.Controller/CreateVolume",
      });
    expect(operations("OK")).toBe(driverOk);
    expect(operations("Unavailable")).toBe(driverFailed);
    // Only the calls before the driver's name is known (Probe, GetPluginInfo, …) count under
    // csi-lib-utils' "unknown-driver", as upstream's do.
    expect(
      samples.filter(
        (x) =>
          x.name === "csi_sidecar_operations_seconds_count" &&
          x.labels.driver_name !== name &&
          x.labels.method_name === "/csi.v1.Controller/CreateVolume",
      ),
    ).toEqual([]);
    // Kubernetes requests by verb and code: the PV creates (and our events) answered 201, the
    // Lease renewals 200, the informers' lists and watches 200.
    for (const [verb, code] of [
      ["create", "201"],
      ["update", "200"],
      ["list", "200"],
      ["watch", "200"],
      ["patch", "200"],
    ]) {
      expect(
        sampleValue(samples, "csi_provisioner_kube_requests_total", { verb, code }),
        `${verb} ${code}`,
      ).toBeGreaterThan(0);
    }
    expect(sampleValue(samples, "csi_provisioner_provisioning_duration_seconds_count", {})).toBe(
      claims.length,
    );
    expect(sampleValue(samples, "csi_provisioner_pending_claims", {})).toBe(0);

    const healthz = await fetch(`${base}/healthz`);
    expect(healthz.status).toBe(200);
    const leaderHealth = await fetch(`${base}/healthz/leader-election`);
    expect(leaderHealth.status).toBe(200);
    expect(await leaderHealth.text()).toBe("ok\n");
    expect((await fetch(`${base}/nothing-here`)).status).toBe(404);

    // A stop with the scraper's keep-alive connection still open: nothing in flight, exit 0 now.
    const termAt = Date.now();
    s.child.kill("SIGTERM");
    expect(await s.exited, logs()).toBe(0);
    timings.sigtermToExitIdle = Date.now() - termAt;
    expect(timings.sigtermToExitIdle).toBeLessThan(3_000);
    timings.scenario2 = Date.now() - began;
  });

  it("/debug/pvcs lists claims backing off, as JSON and as a table for text/plain", async () => {
    const began = Date.now();
    const { namespace, className, name } = await fresh();
    const badClass = `${className}-bad`;
    const d = driver(name, ["--fail-create-rate=1", "--fail-create-code=Internal"]);
    const { s, base } = await sidecarWithEndpoint(d);
    const logs = outputs(s, d);
    await storageClass(className, name);
    // An unknown key in the reserved prefix is a final error of the sidecar's, before any CSI call.
    await storageClass(badClass, name, { "csi.storage.k8s.io/unknown": "x" });
    await claim(namespace, "failing", className);
    await claim(namespace, "bad-param", badClass);

    interface Listed {
      readonly namespace: string;
      readonly name: string;
      readonly uid: string;
      readonly storageClass: string;
      readonly state: string;
      readonly attempts: number;
      readonly lastError: string | null;
      readonly nextRetryAt: string | null;
    }
    const { listed, fetchedAt } = await waitFor(
      "both claims backing off",
      async () => {
        const fetchedAt = Date.now();
        const r = await fetch(`${base}/debug/pvcs`);
        expect(r.headers.get("content-type")).toMatch(/^application\/json/);
        const listed = ((await r.json()) as Array<Listed>).filter((c) => c.namespace === namespace);
        // The claim can reach the sidecar before its class does: its first error can be
        // "storageclass not found", the next one (a second later) is the parameter's.
        return listed.length === 2 &&
          listed.every((c) => c.state === "BackingOff" && c.attempts >= 1) &&
          listed.some((c) => c.lastError?.includes("unknown parameter key"))
          ? { listed, fetchedAt }
          : undefined;
      },
      30_000,
      logs,
    );
    const [bad, failing] = listed;
    expect(bad?.name).toBe("bad-param");
    expect(bad?.storageClass).toBe(badClass);
    expect(bad?.lastError).toContain('unknown parameter key "csi.storage.k8s.io/unknown"');
    expect(failing?.name).toBe("failing");
    expect(failing?.storageClass).toBe(className);
    expect(failing?.lastError).toContain("injected INTERNAL fault");
    for (const c of listed) {
      expect(c.uid).toBe((await readClaim(core, namespace, c.name))?.metadata?.uid);
      expect(Date.parse(c.nextRetryAt ?? "")).toBeGreaterThan(fetchedAt);
    }
    // The unknown parameter never reached the driver; the other claim did, and failed there.
    expect(driverLines(d, /CreateVolume name=\S+ .*-> INTERNAL: /).length).toBeGreaterThanOrEqual(
      1,
    );
    expect(d.volumes()).toEqual([]);

    // What `curl -H 'Accept: text/plain'` gets: kubectl's layout, one row per claim.
    const table = await fetch(`${base}/debug/pvcs`, { headers: { accept: "text/plain" } });
    expect(table.status).toBe(200);
    expect(table.headers.get("content-type")).toMatch(/^text\/plain/);
    const lines = (await table.text()).trimEnd().split("\n");
    const header = lines[0] ?? "";
    expect(header).toMatch(/^NAMESPACE\s+NAME\s+STATE\s+ATTEMPTS\s+NEXT RETRY\s+LAST ERROR$/);
    // Where a column starts: after the blank before its title (NAME is not NAMESPACE's start).
    const column = (title: string) => header.indexOf(` ${title}`) + 1;
    for (const c of listed) {
      const row = lines.find(
        (line) => line.startsWith(`${namespace} `) && line.includes(` ${c.name} `),
      );
      expect(row, `row of ${c.name} in\n${lines.join("\n")}`).toBeDefined();
      const at = (title: string) => (row as string).slice(column(title));
      expect(at("NAME")).toMatch(new RegExp(`^${c.name} `));
      expect(at("STATE")).toMatch(/^BackingOff /);
      expect(at("ATTEMPTS")).toMatch(/^[1-9]\d* /);
      expect(at("NEXT RETRY")).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /);
      expect(at("LAST ERROR").length).toBeGreaterThan(0);
      for (const title of ["NAME", "STATE", "ATTEMPTS", "NEXT RETRY", "LAST ERROR"]) {
        expect((row as string)[column(title) - 1]).toBe(" ");
      }
    }
    expect(lines.find((line) => line.includes(" bad-param "))).toContain("unknown parameter key");
    timings.scenario3 = Date.now() - began;
  });

  it.each([
    { variant: "alone", flags: [] as Array<string> },
    { variant: "leading under leader election", flags: election },
  ])(
    "SIGTERM during CreateVolume ($variant): the call finishes, the volume is recorded, exit 0",
    async ({ variant, flags }) => {
      const began = Date.now();
      const { namespace, className, name } = await fresh();
      const lease = leaseNameOf(name);
      const leases = await watchLease(lease);
      // The first calls are slow (the second for a sidecar that finishes "drained"); the
      // default --timeout (10s) outlasts them.
      const d = driver(name, ["--delay-create=4s", "--delay-create-calls=2"]);
      await storageClass(className, name);
      const first = sidecar(d, flags);
      let logs = outputs(first, d);
      const pvc = await claim(namespace, "drained", className);
      const volumeName = `pvc-${pvc.metadata?.uid}`;
      await createVolumeInFlight(
        core,
        d,
        { namespace: namespace, name: "drained", volumeName },
        logs,
      );
      const termAt = Date.now();
      first.child.kill("SIGTERM");
      const code = await first.exited;
      const exitedAt = Date.now();
      timings[`sigtermToExit (${variant})`] = exitedAt - termAt;
      expect(code, logs()).toBe(0);
      expect(first.output()).toContain("stopping: letting operations in progress finish");
      // It waited for the call: the driver answered it before the sidecar exited.
      const answered = driverLines(d, new RegExp(`CreateVolume name=${volumeName} .*-> OK`));
      expect(answered).toHaveLength(1);
      const answeredAt = Date.parse(answered[0]?.split(" ")[0] ?? "");
      expect(answeredAt).toBeLessThanOrEqual(exitedAt);
      if (flags.length > 0) {
        // The Lease is handed back, and only once the work it guards is over.
        const released = await waitFor("the Lease released", () => leases.heldBy("", termAt));
        expect(released.at).toBeGreaterThanOrEqual(answeredAt);
        expect((await readLease(lease))?.spec?.holderIdentity ?? "").toBe("");
      }
      // …and finished the claim's work: the PV is saved and the intent released before the exit.
      const pv = await core.readPersistentVolume({ name: volumeName }).catch(() => undefined);
      const finalizers = (await readClaim(core, namespace, "drained"))?.metadata?.finalizers ?? [];
      const finishedBeforeExit = pv !== undefined && !finalizers.includes(intentFinalizer);
      console.log(
        `SIGTERM (${variant}): PV saved, intent released before exit: ${finishedBeforeExit}`,
      );
      // If not, the intent finalizer still marks the claim, and the next sidecar finishes it.
      expect(pv !== undefined || finalizers.includes(intentFinalizer)).toBe(true);
      if (!finishedBeforeExit) {
        const again = sidecar(d, flags);
        logs = outputs(first, again, d);
        await intentReleased(namespace, "drained", 30_000, logs);
      }
      await bound(namespace, "drained", 30_000, logs);
      await intentReleased(namespace, "drained", 10_000, logs);
      await expectOneVolumePerClaim(d, namespace, ["drained"]);
      timings[`scenario4 (${variant})`] = Date.now() - began;
    },
  );

  it("a second SIGTERM during the drain exits at once; the next sidecar finishes the claim", async () => {
    const began = Date.now();
    const { namespace, className, name } = await fresh();
    const d = driver(name, ["--delay-create=4s", "--delay-create-calls=2"]);
    await storageClass(className, name);
    const s = sidecar(d);
    let logs = outputs(s, d);
    const pvc = await claim(namespace, "abandoned", className);
    const volumeName = `pvc-${pvc.metadata?.uid}`;
    await waitFor(
      "a slow CreateVolume in flight",
      () =>
        driverLines(d, new RegExp(`CreateVolume name=${volumeName} delayed`)).length === 1 ||
        undefined,
      30_000,
      logs,
    );
    s.child.kill("SIGTERM");
    // The second signal once the first has been taken (a person's second Ctrl-C, a kubelet's
    // SIGKILL after the grace period is the other way).
    await waitFor(
      "the drain to begin",
      () => s.output().includes("stopping: letting operations in progress finish") || undefined,
      5_000,
      logs,
    );
    const secondAt = Date.now();
    s.child.kill("SIGTERM");
    await s.exited;
    timings.secondSigtermToExit = Date.now() - secondAt;
    expect(timings.secondSigtermToExit).toBeLessThan(1_000);
    // Gone before the driver answered: no drain.
    expect(driverLines(d, new RegExp(`CreateVolume name=${volumeName} .*-> OK`))).toEqual([]);
    // Not a clean exit: the second signal takes Node's default action (killed by SIGTERM).
    expect([s.child.exitCode, s.child.signalCode]).not.toEqual([0, null]);
    // The intent finalizer keeps the claim's volume findable: the next sidecar finishes it.
    expect((await readClaim(core, namespace, "abandoned"))?.metadata?.finalizers).toContain(
      intentFinalizer,
    );
    const next = sidecar(d);
    logs = outputs(s, next, d);
    await bound(namespace, "abandoned", 30_000, logs);
    await intentReleased(namespace, "abandoned", 10_000, logs);
    await expectOneVolumePerClaim(d, namespace, ["abandoned"]);
    timings.scenario4b = Date.now() - began;
  });
});
