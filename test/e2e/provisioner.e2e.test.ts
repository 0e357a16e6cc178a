import * as k8s from "@kubernetes/client-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type ApiProxy, startApiProxy } from "./support/ApiProxy.js";
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
  driverName,
  nodeTopologyKey,
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

const sidecar = (d: ReferenceDriver, flags: Array<string> = [], config = kubeconfig) => {
  const s = startSidecar([
    `--csi-address=unix://${d.socket}`,
    `--kubeconfig=${config}`,
    "-v=4",
    ...flags,
  ]);
  running.push(s);
  return s;
};

/** What the API objects carry (black box: the strings, not src/programs/Names.ts). */
const pvFinalizer = "external-provisioner.volume.kubernetes.io/finalizer";
const betaProvisioner = "volume.beta.kubernetes.io/storage-provisioner";
const selectedNode = "volume.kubernetes.io/selected-node";
const mergePatch = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch);

/** One line per call the driver finished (or, with fault injection, began to delay). */
/** The volume ids DeleteVolume was called with, in order. */
const deletedVolumeIds = (d: ReferenceDriver) =>
  driverLines(d, / DeleteVolume volume_id=\S+.* -> OK/).map(
    (line) => / volume_id=(\S+)/.exec(line)?.[1],
  );

/** Everything both processes said, for failure messages. */

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
    body: claimBody(name, className, extra.annotations),
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

const readVolume = (name: string) =>
  core.readPersistentVolume({ name }).catch((e: unknown) => {
    if ((e as { code?: number }).code === 404) return undefined;
    throw e;
  });

const gone = (
  what: string,
  read: () => Promise<unknown>,
  timeoutMs = 30_000,
  logs?: () => string,
) => waitFor(what, async () => ((await read()) === undefined ? true : undefined), timeoutMs, logs);

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

  it("keeps the volume of a Retain class: the PV stays Released, no DeleteVolume, no finalizer of ours", async () => {
    const { namespace, className } = await fresh();
    const scratchClass = `${className}-delete`;
    const d = driver();
    const s = sidecar(d);
    const logs = outputs(s, d);
    await storageClass(className, { reclaimPolicy: "Retain" });
    await storageClass(scratchClass);
    await claim(namespace, "keep", className);
    await claim(namespace, "scratch", scratchClass);
    const keepPv = (await bound(namespace, "keep", 30_000, logs)).spec?.volumeName as string;
    const scratchPv = (await bound(namespace, "scratch", 30_000, logs)).spec?.volumeName as string;
    const created = await core.readPersistentVolume({ name: keepPv });
    expect(created.spec?.persistentVolumeReclaimPolicy).toBe("Retain");
    expect(created.metadata?.finalizers ?? []).not.toContain(pvFinalizer);
    const keepVolume = created.spec?.csi?.volumeHandle as string;
    const scratchVolume = (await core.readPersistentVolume({ name: scratchPv })).spec?.csi
      ?.volumeHandle;

    await core.deleteNamespacedPersistentVolumeClaim({ namespace, name: "keep" });
    await waitFor(
      `PV ${keepPv} Released`,
      async () => ((await readVolume(keepPv))?.status?.phase === "Released" ? true : undefined),
      30_000,
      logs,
    );
    // A barrier instead of a sleep: PV updates reach the sidecar in order on one watch, so once it
    // has deleted the scratch volume, released after the kept one, the kept one's Released update
    // has been through its reconciler (which does no I/O for a PV without our finalizer).
    await core.deleteNamespacedPersistentVolumeClaim({ namespace, name: "scratch" });
    await gone(`PV ${scratchPv} deleted`, () => readVolume(scratchPv), 30_000, logs);

    const kept = await core.readPersistentVolume({ name: keepPv });
    expect(kept.status?.phase).toBe("Released");
    expect(kept.metadata?.finalizers ?? []).not.toContain(pvFinalizer);
    expect(d.volumes().map((v) => v.volume_id)).toEqual([keepVolume]);
    // Exactly once: a run triggered by our own writes must not delete the volume again.
    expect(deletedVolumeIds(d)).toEqual([scratchVolume]);
    await core.deletePersistentVolume({ name: keepPv });
  });

  it("passes the provisioner secret named by templates, references the node-publish secret, and deletes with the secret", async () => {
    const { namespace, className } = await fresh();
    const d = driver();
    const s = sidecar(d);
    const logs = outputs(s, d);
    await core.createNamespacedSecret({
      namespace,
      body: {
        metadata: { name: "data-creds" },
        stringData: { username: "admin", password: "not-for-logs" },
      },
    });
    await storageClass(className, {
      parameters: {
        "csi.storage.k8s.io/provisioner-secret-name": "${pvc.name}-creds",
        "csi.storage.k8s.io/provisioner-secret-namespace": "${pvc.namespace}",
        "csi.storage.k8s.io/node-publish-secret-name": "${pvc.name}-publish",
        "csi.storage.k8s.io/node-publish-secret-namespace": "${pvc.namespace}",
        tier: "gold",
      },
    });
    await claim(namespace, "data", className);
    const pvName = (await bound(namespace, "data", 30_000, logs)).spec?.volumeName as string;
    const pv = await core.readPersistentVolume({ name: pvName });
    expect(pv.spec?.csi?.nodePublishSecretRef).toEqual({ name: "data-publish", namespace });
    expect(pv.spec?.csi?.controllerPublishSecretRef).toBeUndefined();
    expect(pv.metadata?.annotations).toMatchObject({
      "volume.kubernetes.io/provisioner-deletion-secret-name": "data-creds",
      "volume.kubernetes.io/provisioner-deletion-secret-namespace": namespace,
    });
    const volumes = d.volumes();
    expect(volumes.map((v) => v.volume_id)).toEqual([pv.spec?.csi?.volumeHandle]);
    expect(volumes[0]?.secret_keys).toEqual(["password", "username"]);
    // The reserved secret parameters are the sidecar's, not the driver's.
    expect(volumes[0]?.parameters).toEqual({ tier: "gold" });

    await core.deleteNamespacedPersistentVolumeClaim({ namespace, name: "data" });
    await gone(`PV ${pvName} deleted`, () => readVolume(pvName), 30_000, logs);
    expect(d.volumes()).toEqual([]);
    const deletes = driverLines(d, / DeleteVolume /);
    expect(deletes).toHaveLength(1);
    expect(deletes[0]).toContain(
      `DeleteVolume volume_id=${pv.spec?.csi?.volumeHandle} secrets=[password,username] -> OK`,
    );
    expect(d.output()).not.toContain("not-for-logs");
  });

  it("WaitForFirstConsumer: waits for the selected node, then provisions with its topology", async () => {
    const { namespace, className } = await fresh();
    const node = `node-${namespace}`;
    const nowClass = `${className}-now`;
    // No kubelet runs here: the Node and its CSINode registration are what a kubelet would create.
    await core.createNode({
      body: { metadata: { name: node, labels: { [nodeTopologyKey]: node } } },
    });
    await storage.createCSINode({
      body: {
        metadata: { name: node },
        spec: { drivers: [{ name: driverName, nodeID: node, topologyKeys: [nodeTopologyKey] }] },
      },
    });
    try {
      const d = driver(["--topology", `--node-id=${node}`]);
      const s = sidecar(d);
      const logs = outputs(s, d);
      await storageClass(className, { volumeBindingMode: "WaitForFirstConsumer" });
      await storageClass(nowClass);
      // Kubernetes 1.20 announces the provisioner only once a node is selected; announcing it
      // here makes the sidecar's own WaitForFirstConsumer rule (SPEC §2) the one that holds.
      const pvc = await claim(namespace, "data", className, {
        annotations: { [betaProvisioner]: driverName },
      });
      // A barrier instead of a sleep: claims reach the sidecar in order on one watch, and an
      // Immediate claim created after "data" binds only after "data" has been looked at.
      await claim(namespace, "barrier", nowClass);
      await bound(namespace, "barrier", 30_000, logs);
      expect((await readClaim(core, namespace, "data"))?.status?.phase).toBe("Pending");
      expect(driverLines(d, new RegExp(`CreateVolume name=pvc-${pvc.metadata?.uid}`))).toEqual([]);
      expect(await eventsOf(namespace, "data")).toEqual([]);

      // What the scheduler does once it has placed the claim's first consumer.
      await core.patchNamespacedPersistentVolumeClaim(
        {
          namespace,
          name: "data",
          body: { metadata: { annotations: { [selectedNode]: node } } },
        },
        mergePatch,
      );
      const pvName = (await bound(namespace, "data", 30_000, logs)).spec?.volumeName as string;
      const pv = await core.readPersistentVolume({ name: pvName });
      expect(pv.spec?.nodeAffinity?.required?.nodeSelectorTerms).toEqual([
        { matchExpressions: [{ key: nodeTopologyKey, operator: "In", values: [node] }] },
      ]);
      const volume = d.volumes().find((v) => v.name === pvName);
      expect(volume?.accessible_topology).toEqual([{ [nodeTopologyKey]: node }]);
    } finally {
      await storage.deleteCSINode({ name: node }).catch(() => undefined);
      await core.deleteNode({ name: node }).catch(() => undefined);
    }
  });

  it("retries a CreateVolume that outlives --timeout, and binds one volume", async () => {
    const { namespace, className } = await fresh();
    const d = driver(["--delay-create=4s", "--delay-create-calls=1"]);
    const s = sidecar(d, ["--timeout=1s", "--retry-interval-start=500ms"]);
    const logs = outputs(s, d);
    await storageClass(className);
    await claim(namespace, "data", className);
    const pvName = (await bound(namespace, "data", 30_000, logs)).spec?.volumeName as string;
    const pv = await core.readPersistentVolume({ name: pvName });
    const events = await eventsOf(namespace, "data");
    expect(events).toContainEqual(
      expect.stringMatching(
        new RegExp(
          `^Warning ProvisioningFailed: failed to provision volume with StorageClass "${className}": .*DeadlineExceeded`,
        ),
      ),
    );
    // The slow first call finishes on the driver after the sidecar gave up on it: still one volume.
    await waitFor(
      "the delayed CreateVolume to finish",
      () => driverLines(d, /CreateVolume name=.* -> OK/).length >= 2 || undefined,
      10_000,
      logs,
    );
    expect(d.volumes().map((v) => v.volume_id)).toEqual([pv.spec?.csi?.volumeHandle]);
  });

  it("a PVC deleted while CreateVolume keeps timing out stays until its volume is deleted: nothing leaks", async () => {
    const { namespace, className } = await fresh();
    const d = driver(["--delay-create=3s", "--delay-create-calls=4"]);
    const s = sidecar(d, ["--timeout=1s", "--retry-interval-start=500ms"]);
    const logs = outputs(s, d);
    await storageClass(className);
    const pvc = await claim(namespace, "data", className);
    const pvName = `pvc-${pvc.metadata?.uid}`;
    await waitFor(
      "the first ProvisioningFailed",
      async () =>
        (await eventsOf(namespace, "data")).some((e) => e.includes("ProvisioningFailed")) ||
        undefined,
      30_000,
      logs,
    );
    await core.deleteNamespacedPersistentVolumeClaim({ namespace, name: "data" });

    // Until the claim is gone it must be Terminating under our finalizer; once it is gone the
    // driver must already have deleted the volume it made meanwhile.
    // (Recorded, not asserted inside the probe: waitFor takes a throwing probe for "not yet".)
    let sawVolume = false;
    const terminating: Array<boolean> = [];
    const volumesWhenGone = await waitFor(
      `PVC ${namespace}/data gone`,
      async () => {
        const current = await readClaim(core, namespace, "data");
        const volumes = d.volumes();
        if (volumes.length > 0) sawVolume = true;
        if (current === undefined) return volumes;
        terminating.push(
          current.metadata?.deletionTimestamp !== undefined &&
            (current.metadata?.finalizers ?? []).includes(intentFinalizer),
        );
        return undefined;
      },
      60_000,
      logs,
    );
    expect(volumesWhenGone).toEqual([]);
    expect(sawVolume).toBe(true);
    expect(terminating.length).toBeGreaterThan(0);
    expect(terminating.every((held) => held)).toBe(true);
    const made = driverLines(d, new RegExp(`CreateVolume name=${pvName} .*-> OK volume_id=`)).map(
      (line) => / -> OK volume_id=(\S+)/.exec(line)?.[1],
    );
    expect(new Set(made).size).toBe(1);
    expect(deletedVolumeIds(d)).toEqual([made[0]]);
    expect(await readVolume(pvName)).toBeUndefined();
    expect(s.output()).toContain(`deleted volume ${made[0]} of claim ${namespace}/data`);
  });

  it("a sidecar killed with SIGKILL during CreateVolume is replaced without a duplicate or a leak", async () => {
    const { namespace, className } = await fresh();
    const d = driver(["--delay-create=5s", "--delay-create-calls=1"]);
    const first = sidecar(d, ["--timeout=30s"]);
    await storageClass(className);
    const pvc = await claim(namespace, "data", className);
    const volumeName = `pvc-${pvc.metadata?.uid}`;
    await createVolumeInFlight(
      core,
      d,
      { namespace: namespace, name: "data", volumeName },
      outputs(first, d),
    );
    await first.stop("SIGKILL");
    // The driver finishes the call nobody waits for any more.
    const [volume] = await waitFor(
      "the driver to make the volume",
      () => (d.volumes().length > 0 ? d.volumes() : undefined),
      15_000,
      outputs(first, d),
    );
    expect((await readClaim(core, namespace, "data"))?.metadata?.finalizers).toContain(
      intentFinalizer,
    );

    const second = sidecar(d, ["--timeout=30s"]);
    const logs = outputs(first, second, d);
    const pvName = (await bound(namespace, "data", 30_000, logs)).spec?.volumeName as string;
    expect(pvName).toBe(volumeName);
    const pv = await core.readPersistentVolume({ name: pvName });
    expect(pv.spec?.csi?.volumeHandle).toBe(volume?.volume_id);
    expect(d.volumes().map((v) => v.volume_id)).toEqual([volume?.volume_id]);
    await waitFor(
      "the intent finalizer released",
      async () =>
        ((await readClaim(core, namespace, "data"))?.metadata?.finalizers ?? []).includes(
          intentFinalizer,
        )
          ? undefined
          : true,
      10_000,
      logs,
    );
  });

  it("survives a kube-apiserver restart that cuts its watches, and provisions afterwards", async () => {
    const { namespace, className } = await fresh();
    const d = driver();
    const s = sidecar(d);
    const logs = outputs(s, d);
    await storageClass(className);
    await claim(namespace, "before", className);
    await bound(namespace, "before", 30_000, logs);
    await cp.restartApiServer();
    await claim(namespace, "after", className);
    await bound(namespace, "after", 30_000, logs);
    expect(s.child.exitCode).toBeNull();
    expect(s.output()).toMatch(/watch of persistentvolumeclaims failed, resuming/);
  });

  it("relists when a resumed watch is answered 410 Gone, and provisions afterwards", async () => {
    const { namespace, className } = await fresh();
    const proxy: ApiProxy = await startApiProxy(cp);
    try {
      const config = await sidecarKubeconfig(cp, system, {
        server: proxy.server,
        name: "sidecar-via-proxy.kubeconfig",
      });
      const d = driver();
      const s = sidecar(d, [], config);
      const logs = outputs(s, d);
      await storageClass(className);
      await claim(namespace, "before", className);
      await bound(namespace, "before", 30_000, logs);
      await waitFor("the sidecar's three watches", () => proxy.watches().length >= 3 || undefined);

      // The watches end cleanly and their resumption waits while the apiserver restarts; the
      // revision moves on meanwhile, so the restarted apiserver's watch cache starts past the
      // versions the sidecar resumes from.
      proxy.hold();
      expect(proxy.endWatches()).toBeGreaterThanOrEqual(3);
      await waitFor("the sidecar to resume its watches", () => proxy.heldCount() >= 3 || undefined);
      for (let i = 0; i < 3; i++) {
        await core.createNamespacedConfigMap({
          namespace,
          body: { metadata: { name: `revision-${i}` } },
        });
      }
      await cp.restartApiServer();
      proxy.release();

      await waitFor(
        "the relist after 410",
        () => /watch of persistentvolumeclaims expired, relisting/.test(s.output()) || undefined,
        30_000,
        logs,
      );
      await claim(namespace, "after", className);
      await bound(namespace, "after", 30_000, logs);
      expect(s.child.exitCode).toBeNull();
    } finally {
      await proxy.close();
    }
  });
});
