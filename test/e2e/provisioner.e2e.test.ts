import * as k8s from "@kubernetes/client-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type RunningControlPlane, start } from "./support/ControlPlane.js";
import {
  driverName,
  type ReferenceDriver,
  type RunningProcess,
  sidecarKubeconfig,
  startDriver,
  startSidecar,
  waitFor,
} from "./support/Processes.js";

// The built csi-provisioner as a child process, under deploy/rbac.yaml's ServiceAccount, against a
// real kube-apiserver + kube-controller-manager and the reference driver on a Unix socket.

let cp: RunningControlPlane;
let core: k8s.CoreV1Api;
let storage: k8s.StorageV1Api;
let kubeconfig: string;
const system = `csi-${Date.now().toString(36)}`;
const running: Array<RunningProcess> = [];

let scenario = 0;
/** A fresh namespace and StorageClass name per test. */
const fresh = async () => {
  scenario += 1;
  const namespace = `e2e-${scenario}-${Date.now().toString(36)}`;
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  return { namespace, className: `sc-${scenario}-${Date.now().toString(36)}` };
};

const driver = (flags: Array<string> = []) => {
  const d = startDriver(flags);
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

const storageClass = (name: string, extra: Partial<k8s.V1StorageClass> = {}) =>
  storage.createStorageClass({
    body: {
      metadata: { name },
      provisioner: driverName,
      reclaimPolicy: "Delete",
      volumeBindingMode: "Immediate",
      ...extra,
    },
  });

const claim = (
  namespace: string,
  name: string,
  className: string,
  extra: { annotations?: Record<string, string> } = {},
) =>
  core.createNamespacedPersistentVolumeClaim({
    namespace,
    body: {
      metadata: { name, ...(extra.annotations ? { annotations: extra.annotations } : {}) },
      spec: {
        storageClassName: className,
        accessModes: ["ReadWriteOnce"],
        resources: { requests: { storage: "1Gi" } },
      },
    },
  });

const readClaim = (namespace: string, name: string) =>
  core.readNamespacedPersistentVolumeClaim({ namespace, name }).catch((e: unknown) => {
    if ((e as { code?: number }).code === 404) return undefined;
    throw e;
  });

const bound = (namespace: string, name: string, timeoutMs = 30_000, logs?: () => string) =>
  waitFor(
    `PVC ${namespace}/${name} Bound`,
    async () => {
      const pvc = await readClaim(namespace, name);
      return pvc?.status?.phase === "Bound" ? pvc : undefined;
    },
    timeoutMs,
    logs,
  );

/** Our events about an object (not the PV controller's), sorted: timestamps have 1s precision. */
const eventsOf = async (namespace: string, name: string) =>
  (await core.listNamespacedEvent({ namespace })).items
    .filter(
      (e) => e.involvedObject.name === name && e.reportingComponent === "external-provisioner",
    )
    .map((e) => `${e.type} ${e.reason}: ${e.message}`)
    .sort();

beforeAll(async () => {
  cp = await start();
  const kc = cp.kubeConfig();
  core = kc.makeApiClient(k8s.CoreV1Api);
  storage = kc.makeApiClient(k8s.StorageV1Api);
  await core.createNamespace({ body: { metadata: { name: system } } });
  kubeconfig = await sidecarKubeconfig(cp, system);
}, 30 * 60_000);

afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => p.stop("SIGKILL")));
});

afterAll(async () => {
  await cp?.stop();
}, 60_000);

describe("csi-provisioner on a real control plane", () => {
  it("provisions and binds a PVC, records events, and deletes the volume with the PVC (reclaim Delete)", async () => {
    const { namespace, className } = await fresh();
    const d = driver();
    const s = sidecar(d);
    await storageClass(className);
    await claim(namespace, "data", className);
    const pvc = await bound(namespace, "data", 30_000, s.output);
    const pvName = pvc.spec?.volumeName as string;
    const pv = await core.readPersistentVolume({ name: pvName });
    expect(pv.spec?.csi?.driver).toBe(driverName);
    expect(pv.metadata?.annotations?.["pv.kubernetes.io/provisioned-by"]).toBe(driverName);
    expect(d.volumes().map((v) => v.name)).toEqual([pvName]);
    await waitFor("events", async () =>
      (await eventsOf(namespace, "data")).length >= 2 ? true : undefined,
    );
    expect(await eventsOf(namespace, "data")).toEqual([
      `Normal Provisioning: External provisioner is provisioning volume for claim "${namespace}/data"`,
      `Normal ProvisioningSucceeded: Successfully provisioned volume ${pvName}`,
    ]);

    await core.deleteNamespacedPersistentVolumeClaim({ namespace, name: "data" });
    await waitFor(
      "PV deleted",
      async () =>
        await core.readPersistentVolume({ name: pvName }).then(
          () => undefined,
          () => true,
        ),
      30_000,
      s.output,
    );
    expect(d.volumes()).toEqual([]);
  });
});
