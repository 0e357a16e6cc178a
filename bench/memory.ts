/**
 * The sidecar's memory with many bound PVC+PV pairs in its caches (default 20000): the pairs are
 * created directly (pre-bound both ways), then the built sidecar starts, lists and watches them.
 * Usage: npm run bench:memory -- [pairs]. Prints one JSON line and appends it to bench/out/.
 */
import { spawn } from "node:child_process";
import { appendFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import * as k8s from "@kubernetes/client-node";
import { start } from "../test/e2e/support/ControlPlane.js";
import {
  driverName,
  sidecarKubeconfig,
  startDriver,
  waitFor,
} from "../test/e2e/support/Processes.js";
import { pool, sidecarArgs, sidecarEnvironment } from "./support.js";

const pairs = Number(process.argv[2] ?? 20000);
const namespace = "bench";

const rss = (pid: number) => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
  return { rssMiB: kb("VmRSS") / 1024, peakRssMiB: kb("VmHWM") / 1024 };
};

const cp = await start({ controllerManagerQps: 1000, controllerManagerBurst: 1000 });
const driver = startDriver(["--capacity=1Pi"]);
try {
  const kc = cp.kubeConfig();
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const storage = kc.makeApiClient(k8s.StorageV1Api);
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  await core.createNamespace({ body: { metadata: { name: "csi-system" } } });
  await storage.createStorageClass({
    body: {
      metadata: { name: "bench" },
      provisioner: driverName,
      reclaimPolicy: "Delete",
      volumeBindingMode: "Immediate",
    },
  });
  const kubeconfig = await sidecarKubeconfig(cp, "csi-system");
  const t0 = Date.now();
  const indexes = Array.from({ length: pairs }, (_, i) => i);
  await pool(indexes, 50, async (i) => {
    const name = `pvc-${String(i).padStart(5, "0")}`;
    const pvName = `pv-${String(i).padStart(5, "0")}`;
    const pvc = await core.createNamespacedPersistentVolumeClaim({
      namespace,
      body: {
        metadata: {
          name,
          annotations: { "volume.beta.kubernetes.io/storage-provisioner": driverName },
        },
        spec: {
          storageClassName: "bench",
          volumeName: pvName,
          accessModes: ["ReadWriteOnce"],
          resources: { requests: { storage: "1Gi" } },
        },
      },
    });
    await core.createPersistentVolume({
      body: {
        metadata: { name: pvName, annotations: { "pv.kubernetes.io/provisioned-by": driverName } },
        spec: {
          accessModes: ["ReadWriteOnce"],
          capacity: { storage: "1Gi" },
          persistentVolumeReclaimPolicy: "Delete",
          storageClassName: "bench",
          claimRef: {
            kind: "PersistentVolumeClaim",
            apiVersion: "v1",
            namespace,
            name,
            uid: pvc.metadata?.uid,
          },
          csi: { driver: driverName, volumeHandle: `h-${i}` },
        },
      },
    });
  });
  console.error(`created ${pairs} pairs in ${((Date.now() - t0) / 1000).toFixed(0)}s`);

  const child = spawn(
    process.execPath,
    sidecarArgs([`--csi-address=unix://${driver.socket}`, `--kubeconfig=${kubeconfig}`]),
    { stdio: ["ignore", "pipe", "pipe"], env: sidecarEnvironment() },
  );
  let output = "";
  child.stdout.on("data", (c: Buffer) => {
    output += c.toString();
  });
  child.stderr.on("data", (c: Buffer) => {
    output += c.toString();
  });
  await waitFor(
    "the sidecar's caches",
    () => (/controller started: (\d+) PVCs/.exec(output)?.[1] === String(pairs) ? true : undefined),
    10 * 60_000,
    () => output.slice(-2000),
  );
  const synced = rss(child.pid as number);
  // Let the resync-free steady state settle: the PV controller finishes binding statuses.
  await new Promise((resolve) => setTimeout(resolve, 30_000));
  const steady = rss(child.pid as number);
  child.kill("SIGTERM");
  const result = {
    pairs,
    syncedRssMiB: synced.rssMiB,
    // Whether the peak came while listing (before the caches synced) or after.
    peakAtSyncMiB: synced.peakRssMiB,
    steadyRssMiB: steady.rssMiB,
    peakRssMiB: steady.peakRssMiB,
    at: new Date().toISOString(),
  };
  console.log(JSON.stringify(result));
  mkdirSync(join(process.cwd(), "bench/out"), { recursive: true });
  appendFileSync(join(process.cwd(), "bench/out/memory.jsonl"), `${JSON.stringify(result)}\n`);
} finally {
  await driver.stop("SIGKILL");
  await cp.stop();
}
