/**
 * Provisioning benchmark on a real control plane with the reference driver and the built sidecar,
 * beside a "floor" run in which this script creates each matching PV itself: the control plane's
 * own limit for the same work. Usage: npm run bench -- [N ...] (default 200 5000).
 * Results go to bench/out/<timestamp>.json and bench/RESULTS.md.
 */
import { spawn } from "node:child_process";
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import * as k8s from "@kubernetes/client-node";
import { claimBody } from "../test/e2e/support/Claims.js";
import { type RunningControlPlane, start } from "../test/e2e/support/ControlPlane.js";
import {
  driverName,
  sidecarKubeconfig,
  startDriver,
  waitFor,
} from "../test/e2e/support/Processes.js";
import { percentile, pool, sidecarArgs, sidecarEnvironment, words } from "./support.js";

/**
 * `watch` is the floor's run with a sidecar beside it whose driver has another name: it provisions
 * nothing, so its CPU is what keeping its caches current costs (every claim and PV event).
 */
type Mode = "floor" | "ours" | "watch";

/** The built sidecar, run as the image runs it; BENCH_NODE_ARGS (e.g. --cpu-prof) go to node too. */
const startSidecar = (flags: ReadonlyArray<string>) => {
  const child = spawn(process.execPath, sidecarArgs(flags), {
    stdio: ["ignore", "pipe", "pipe"],
    env: sidecarEnvironment(),
  });
  let output = "";
  const log = process.env.BENCH_SIDECAR_LOG
    ? createWriteStream(process.env.BENCH_SIDECAR_LOG)
    : undefined;
  const collect = (chunk: Buffer) => {
    log?.write(chunk);
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout.on("data", collect);
  child.stderr.on("data", collect);
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  return {
    child,
    output: () => output,
    stop: async (signal: NodeJS.Signals = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
};

interface RunResult {
  readonly mode: Mode;
  readonly n: number;
  readonly allBoundSeconds: number;
  readonly allPvsSeconds: number;
  readonly pvcsPerSecond: number;
  readonly bindP50Seconds: number;
  readonly bindP99Seconds: number;
  /** CPU time the whole machine spent (all processes) from the first create to the last bind. */
  readonly machineCpuSeconds: number;
  /** Node start, caches synced, driver probed: before the first create, so not in the next two. */
  readonly sidecarStartupCpuSeconds?: number;
  readonly sidecarCpuSeconds?: number;
  readonly sidecarCpuMsPerPvc?: number;
  readonly sidecarPeakRssMiB?: number;
  readonly apiRequestsPerPvc?: number;
  readonly eventsPerPvc?: number;
  /** PVC and PV watch events the run caused (the sidecar's watches see the same), per claim. */
  readonly watchEventsPerPvc: number;
  /** Update conflicts (409) kube-controller-manager's PV controller met while binding. */
  readonly binderConflicts?: number;
}

const namespace = "bench";
const system = "csi-system";
const className = "bench";

const referenceTo = (pvc: k8s.V1PersistentVolumeClaim) => ({
  kind: "PersistentVolumeClaim",
  apiVersion: "v1",
  namespace,
  name: pvc.metadata?.name,
  uid: pvc.metadata?.uid,
});

const floorEvent = (pvc: k8s.V1PersistentVolumeClaim, reason: string): k8s.CoreV1Event => ({
  metadata: { generateName: `${pvc.metadata?.name}.` },
  involvedObject: referenceTo(pvc),
  reason,
  message: `${reason} ${pvc.metadata?.name}`,
  type: "Normal",
  source: { component: "bench-floor" },
});

/** Busy CPU seconds of the whole machine so far, from /proc/stat. */
const machineBusySeconds = () => {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "")
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return (fields.reduce((a, b) => a + b, 0) - idle) / 100;
};

/** CPU seconds (user+system) and peak RSS of a process, from /proc. */
const processStats = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  const ticks = Number(stat[11]) + Number(stat[12]);
  const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return { cpuSeconds: ticks / 100, peakRssMiB: Number(hwm ?? 0) / 1024 };
};

/**
 * Watches `path` for as long as the run lasts: client-node's Watch ends whenever the server closes
 * the stream, so this resumes from the last version seen (and relists after a 410).
 */
const watchForever = <A extends k8s.KubernetesObject>(
  kc: k8s.KubeConfig,
  path: string,
  onEvent: (type: string, object: A) => void,
) => {
  let stopped = false;
  let current: AbortController | undefined;
  let resourceVersion = "";
  const loop = async () => {
    while (!stopped) {
      await new Promise<void>((resolve) => {
        new k8s.Watch(kc)
          .watch(
            path,
            { resourceVersion, allowWatchBookmarks: true },
            (type, object: A & { code?: number }) => {
              if (type === "ERROR") {
                if (object.code === 410) resourceVersion = "";
                return;
              }
              if (object.metadata?.resourceVersion)
                resourceVersion = object.metadata.resourceVersion;
              if (type !== "BOOKMARK") onEvent(type, object);
            },
            () => resolve(),
          )
          .then(
            (controller) => {
              current = controller;
            },
            () => resolve(),
          );
      });
      if (!stopped) await new Promise((r) => setTimeout(r, 100));
    }
  };
  void loop();
  return {
    abort: () => {
      stopped = true;
      current?.abort();
    },
  };
};

/** Audit only the sidecar's ServiceAccount: an outside count of the requests it makes. */
const sidecarUser = `system:serviceaccount:${system}:csi-provisioner`;
/** kube-controller-manager's PV controller (it runs with --use-service-account-credentials). */
const binderUser = "system:serviceaccount:kube-system:persistent-volume-binder";

interface AuditEvent {
  readonly stage: string;
  readonly user: { readonly username: string };
  readonly verb: string;
  readonly objectRef?: { readonly resource?: string };
  readonly responseStatus?: { readonly code?: number };
}

const auditPolicy = (dir: string) => {
  const path = join(dir, "audit-policy.yaml");
  writeFileSync(
    path,
    [
      "apiVersion: audit.k8s.io/v1",
      "kind: Policy",
      "omitStages: [RequestReceived]",
      "rules:",
      "  - level: Metadata",
      `    users: ["${sidecarUser}", "${binderUser}"]`,
      "  - level: None",
    ].join("\n"),
  );
  return path;
};

const run = async (mode: Mode, n: number, workDir: string): Promise<RunResult> => {
  const auditLog = join(workDir, `audit-${mode}-${n}.log`);
  rmSync(auditLog, { force: true });
  const cp: RunningControlPlane = await start({
    controllerManagerQps: 1000,
    controllerManagerBurst: 1000,
    extraApiServerArgs: [
      `--audit-policy-file=${auditPolicy(workDir)}`,
      `--audit-log-path=${auditLog}`,
      "--audit-log-format=json",
    ],
  });
  const kc = cp.kubeConfig();
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const storage = kc.makeApiClient(k8s.StorageV1Api);
  const driver = startDriver(["--capacity=1Pi"]);
  const bystander = mode === "watch" ? startDriver(["--name=bystander.csi.effect.dev"]) : undefined;
  let sidecar: ReturnType<typeof startSidecar> | undefined;
  try {
    await core.createNamespace({ body: { metadata: { name: namespace } } });
    await core.createNamespace({ body: { metadata: { name: system } } });
    await storage.createStorageClass({
      body: {
        metadata: { name: className },
        provisioner: driverName,
        reclaimPolicy: "Delete",
        volumeBindingMode: "Immediate",
      },
    });
    const kubeconfig = await sidecarKubeconfig(cp, system);

    const createdAt = new Map<string, number>();
    const boundAt = new Map<string, number>();
    const pvAt = new Map<string, number>();
    let watchEvents = 0;
    const pvcWatch = watchForever(
      kc,
      `/api/v1/namespaces/${namespace}/persistentvolumeclaims`,
      (_type, pvc: k8s.V1PersistentVolumeClaim) => {
        watchEvents++;
        const name = pvc.metadata?.name ?? "";
        if (pvc.status?.phase === "Bound" && !boundAt.has(name)) boundAt.set(name, Date.now());
      },
    );
    const floorQueue: Array<k8s.V1PersistentVolumeClaim> = [];
    const pvWatch = watchForever(
      kc,
      "/api/v1/persistentvolumes",
      (type, pv: k8s.V1PersistentVolume) => {
        watchEvents++;
        if (type === "ADDED") pvAt.set(pv.metadata?.name ?? "", Date.now());
      },
    );

    let floorPvcWatch: { abort: () => void } | undefined;
    let floorWorkers: Promise<unknown> | undefined;
    if (mode !== "floor") {
      sidecar = startSidecar([
        `--csi-address=unix://${(bystander ?? driver).socket}`,
        `--kubeconfig=${kubeconfig}`,
        ...words(process.env.BENCH_SIDECAR_FLAGS),
      ]);
      // A sidecar runs long before claims arrive: its start-up is not part of the provisioning.
      const running = sidecar;
      await waitFor(
        "the sidecar's controller to start",
        () => running.output().includes("controller started") || undefined,
        60_000,
        running.output,
      );
    }
    if (mode !== "ours") {
      // The floor: create each PV the moment the PV controller asks for a provisioner.
      const seen = new Set<string>();
      floorPvcWatch = watchForever(
        kc,
        `/api/v1/namespaces/${namespace}/persistentvolumeclaims`,
        (_type, pvc: k8s.V1PersistentVolumeClaim) => {
          const uid = pvc.metadata?.uid ?? "";
          if (
            !seen.has(uid) &&
            pvc.metadata?.annotations?.["volume.beta.kubernetes.io/storage-provisioner"] ===
              driverName
          ) {
            seen.add(uid);
            floorQueue.push(pvc);
          }
        },
      );
      let created = 0;
      floorWorkers = Promise.all(
        Array.from({ length: 100 }, async () => {
          while (created < n) {
            const pvc = floorQueue.shift();
            if (!pvc) {
              await new Promise((r) => setTimeout(r, 5));
              continue;
            }
            created += 1;
            // The protocol's own API work per claim: the two events upstream records, and the PV.
            await core.createNamespacedEvent({ namespace, body: floorEvent(pvc, "Provisioning") });
            await core.createPersistentVolume({
              body: {
                metadata: {
                  name: `pvc-${pvc.metadata?.uid}`,
                  annotations: { "pv.kubernetes.io/provisioned-by": driverName },
                },
                spec: {
                  accessModes: ["ReadWriteOnce"],
                  capacity: { storage: "1Gi" },
                  persistentVolumeReclaimPolicy: "Delete",
                  storageClassName: className,
                  claimRef: referenceTo(pvc),
                  csi: { driver: driverName, volumeHandle: `floor-${pvc.metadata?.uid}` },
                },
              },
            });
            await core.createNamespacedEvent({
              namespace,
              body: floorEvent(pvc, "ProvisioningSucceeded"),
            });
          }
        }),
      );
    }

    const names = Array.from({ length: n }, (_, i) => `pvc-${String(i).padStart(5, "0")}`);
    const startup = sidecar ? processStats(sidecar.child.pid as number) : undefined;
    const busyBefore = machineBusySeconds();
    const t0 = Date.now();
    watchEvents = 0;
    await pool(names, 20, async (name) => {
      createdAt.set(name, Date.now());
      await core.createNamespacedPersistentVolumeClaim({
        namespace,
        body: claimBody(name, className),
      });
    });
    const progress = setInterval(
      () =>
        console.error(
          `[${mode} N=${n}] ${((Date.now() - t0) / 1000).toFixed(0)}s: ${pvAt.size} PVs, ${boundAt.size} Bound`,
        ),
      10_000,
    );
    await waitFor(
      `all ${n} PVCs Bound (${mode})`,
      () => (boundAt.size >= n ? true : undefined),
      60 * 60_000,
      () => sidecar?.output().slice(-3000) ?? "",
    );
    clearInterval(progress);
    const allBound = (Math.max(...boundAt.values()) - t0) / 1000;
    const allPvs = (Math.max(...pvAt.values()) - t0) / 1000;
    const latencies = names.map(
      (name) => ((boundAt.get(name) ?? 0) - (createdAt.get(name) ?? 0)) / 1000,
    );
    const stats = sidecar ? processStats(sidecar.child.pid as number) : undefined;
    const machineBusy = machineBusySeconds() - busyBefore;
    const watchEventsPerPvc = watchEvents / n;
    pvcWatch.abort();
    pvWatch.abort();
    floorPvcWatch?.abort();
    await floorWorkers;
    await sidecar?.stop();
    const audited: Array<AuditEvent> = existsSync(auditLog)
      ? readFileSync(auditLog, "utf8")
          .split("\n")
          .filter((l) => l.includes('"ResponseComplete"'))
          .map((l) => JSON.parse(l) as AuditEvent)
      : [];
    const bySidecar = audited.filter((e) => e.user.username === sidecarUser);
    const requests = bySidecar.length;
    // Two per claim unless the background recorder had to drop some (a backlog beyond 1000).
    const events = bySidecar.filter(
      (e) => e.verb === "create" && e.objectRef?.resource === "events",
    ).length;
    // The PV controller binds in conditional writes: each 409 sends a claim to the back of its queue.
    const binderConflicts = audited.filter(
      (e) => e.user.username === binderUser && e.responseStatus?.code === 409,
    ).length;
    return {
      mode,
      n,
      allBoundSeconds: allBound,
      allPvsSeconds: allPvs,
      pvcsPerSecond: n / allBound,
      bindP50Seconds: percentile(latencies, 50),
      bindP99Seconds: percentile(latencies, 99),
      machineCpuSeconds: machineBusy,
      watchEventsPerPvc,
      binderConflicts,
      ...(stats && startup
        ? {
            sidecarStartupCpuSeconds: startup.cpuSeconds,
            sidecarCpuSeconds: stats.cpuSeconds - startup.cpuSeconds,
            sidecarCpuMsPerPvc: (1000 * (stats.cpuSeconds - startup.cpuSeconds)) / n,
            sidecarPeakRssMiB: stats.peakRssMiB,
            apiRequestsPerPvc: requests / n,
            eventsPerPvc: events / n,
          }
        : {}),
    };
  } finally {
    await sidecar?.stop("SIGKILL");
    await driver.stop("SIGKILL");
    await bystander?.stop("SIGKILL");
    await cp.stop();
  }
};

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((x) => x > 0);
/** BENCH_MODES=ours skips the floor run (e.g. while profiling); `watch` runs only when named. */
const modes = (["floor", "ours", "watch"] as const).filter((mode) =>
  process.env.BENCH_MODES ? words(process.env.BENCH_MODES).includes(mode) : mode !== "watch",
);
const results: Array<RunResult> = [];
const outDir = join(process.cwd(), "bench/out");
mkdirSync(outDir, { recursive: true });
for (const n of sizes.length > 0 ? sizes : [200, 5000]) {
  for (const mode of modes) {
    const result = await run(mode, n, outDir);
    console.log(JSON.stringify(result));
    results.push(result);
  }
}
const stamp = new Date().toISOString().replace(/[:.]/g, "-");
writeFileSync(join(outDir, `provision-${stamp}.json`), `${JSON.stringify(results, null, 2)}\n`);
for (const n of new Set(results.map((r) => r.n))) {
  const floor = results.find((r) => r.n === n && r.mode === "floor");
  const ours = results.find((r) => r.n === n && r.mode === "ours");
  if (floor && ours)
    console.log(
      `N=${n}: time to all Bound ${ours.allBoundSeconds.toFixed(1)}s vs floor ${floor.allBoundSeconds.toFixed(1)}s = ${(ours.allBoundSeconds / floor.allBoundSeconds).toFixed(2)}x`,
    );
}
