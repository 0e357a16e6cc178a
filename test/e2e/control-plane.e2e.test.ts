import * as k8s from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type RunningControlPlane, start } from "./support/ControlPlane.js";

// Proves the harness gives our provisioner what it relies on: the PV controller announces the
// provisioner on a claim, and binds/releases a claim against a PV whose claimRef matches.

const provisioner = "example.com/fake";
const annProvisioner = "volume.beta.kubernetes.io/storage-provisioner";

let cp: RunningControlPlane;
let core: k8s.CoreV1Api;
let storage: k8s.StorageV1Api;
const suffix = Date.now().toString(36);
const namespace = `e2e-cp-${suffix}`;

const waitUntil = async <A>(
  what: string,
  probe: () => Promise<A | undefined>,
  timeoutMs = 30_000,
): Promise<A> => {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const tails = cp ? await cp.logTails(30) : "";
      throw new Error(`timed out waiting for ${what} (last error: ${String(last)})\n${tails}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
};

beforeAll(async () => {
  cp = await start({ log: (line) => console.log(line) });
  const kc = cp.kubeConfig();
  core = kc.makeApiClient(k8s.CoreV1Api);
  storage = kc.makeApiClient(k8s.StorageV1Api);
  await core.createNamespace({ body: { metadata: { name: namespace } } });
}, 30 * 60_000);

afterAll(async () => {
  if (cp?.external) {
    await core.deleteNamespace({ name: namespace }).catch(() => undefined);
    await storage.deleteStorageClass({ name: `fake-${suffix}` }).catch(() => undefined);
    await core.deletePersistentVolume({ name: `pv-${suffix}` }).catch(() => undefined);
  }
  await cp?.stop();
}, 60_000);

describe("control plane harness", () => {
  it("serves the API with the admin kubeconfig", async () => {
    const ns = await core.readNamespace({ name: "default" });
    expect(ns.metadata?.name).toBe("default");
    expect(cp.server).toMatch(/^https:\/\//);
  });

  it("binds a claim announced to our provisioner, then releases the PV when the claim goes", async () => {
    const scName = `fake-${suffix}`;
    const pvName = `pv-${suffix}`;
    const pvcName = "claim";

    await storage.createStorageClass({
      body: {
        metadata: { name: scName },
        provisioner,
        reclaimPolicy: "Retain",
        volumeBindingMode: "Immediate",
      },
    });
    await core.createNamespacedPersistentVolumeClaim({
      namespace,
      body: {
        metadata: { name: pvcName },
        spec: {
          storageClassName: scName,
          accessModes: ["ReadWriteOnce"],
          resources: { requests: { storage: "1Gi" } },
        },
      },
    });

    const announced = await waitUntil("the PV controller to name our provisioner", async () => {
      const pvc = await core.readNamespacedPersistentVolumeClaim({ name: pvcName, namespace });
      return pvc.metadata?.annotations?.[annProvisioner] === provisioner ? pvc : undefined;
    });
    expect(announced.status?.phase).toBe("Pending");

    // What our provisioner will create: a PV pre-bound to the claim by claimRef (with its uid).
    await core.createPersistentVolume({
      body: {
        metadata: { name: pvName, annotations: { "pv.kubernetes.io/provisioned-by": provisioner } },
        spec: {
          storageClassName: scName,
          capacity: { storage: "1Gi" },
          accessModes: ["ReadWriteOnce"],
          persistentVolumeReclaimPolicy: "Retain",
          claimRef: {
            apiVersion: "v1",
            kind: "PersistentVolumeClaim",
            namespace,
            name: pvcName,
            uid: announced.metadata?.uid,
          },
          // A CSI driver name must be a DNS subdomain, so "example.com/fake" (a valid
          // StorageClass provisioner) cannot double as one: a real driver's name has no "/".
          csi: { driver: "fake.example.com", volumeHandle: `vol-${suffix}` },
        },
      },
    });

    const t0 = Date.now();
    const bound = await waitUntil("the claim to become Bound", async () => {
      const pvc = await core.readNamespacedPersistentVolumeClaim({ name: pvcName, namespace });
      return pvc.status?.phase === "Bound" ? pvc : undefined;
    });
    console.log(`[control-plane e2e] PV create -> PVC Bound in ${Date.now() - t0} ms`);
    expect(bound.spec?.volumeName).toBe(pvName);
    await waitUntil("the PV to become Bound", async () => {
      const pv = await core.readPersistentVolume({ name: pvName });
      return pv.status?.phase === "Bound" ? pv : undefined;
    });

    await core.deleteNamespacedPersistentVolumeClaim({ name: pvcName, namespace });
    // The pvc-protection finalizer must come off (a controller-manager job) before the claim is
    // really gone and the PV controller can release the volume.
    const released = await waitUntil("the PV to become Released", async () => {
      const pv = await core.readPersistentVolume({ name: pvName });
      return pv.status?.phase === "Released" ? pv : undefined;
    });
    expect(released.spec?.claimRef?.name).toBe(pvcName);
  });

  it("mints ServiceAccount tokens that the apiserver accepts", async () => {
    const token = await cp.serviceAccountToken(namespace, "sidecar");
    const path = await cp.writeKubeconfig({ token, namespace });
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(path);
    const asSa = kc.makeApiClient(k8s.CoreV1Api);
    // RBAC is on and the ServiceAccount has no bindings: a 403 (not 401) proves the token
    // authenticated and authorization is enforced.
    const error = await asSa.listNamespacedPersistentVolumeClaim({ namespace }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(k8s.ApiException);
    expect((error as k8s.ApiException<unknown>).code).toBe(403);
  });
});
