import type * as k8s from "@kubernetes/client-node";
import { type ReferenceDriver, type RunningProcess, waitFor } from "./Processes.js";

/** What the API objects carry (black box: the strings, not src/programs/Names.ts). */
export const intentFinalizer = "csi-provisioner.effect.dev/provisioning-intent";

/** A 1Gi ReadWriteOnce claim of `className`, as every scenario and the benchmarks create them. */
export const claimBody = (
  name: string,
  className: string,
  annotations?: Record<string, string>,
): k8s.V1PersistentVolumeClaim => ({
  metadata: { name, ...(annotations ? { annotations } : {}) },
  spec: {
    storageClassName: className,
    accessModes: ["ReadWriteOnce"],
    resources: { requests: { storage: "1Gi" } },
  },
});

/** The claim, or undefined once it is gone. */
export const readClaim = (core: k8s.CoreV1Api, namespace: string, name: string) =>
  core.readNamespacedPersistentVolumeClaim({ namespace, name }).catch((e: unknown) => {
    if ((e as { code?: number }).code === 404) return undefined;
    throw e;
  });

/** The reference driver's log lines that match. */
export const driverLines = (d: ReferenceDriver, pattern: RegExp) =>
  d
    .output()
    .split("\n")
    .filter((line) => pattern.test(line));

/** Every process's output, for a failure message. */
export const outputs =
  (...processes: Array<RunningProcess>) =>
  () =>
    processes.map((p, i) => `----- process ${i} -----\n${p.output()}`).join("\n");

/** Waits until the claim carries our intent and its (delayed) CreateVolume is on the driver. */
export const createVolumeInFlight = (
  core: k8s.CoreV1Api,
  d: ReferenceDriver,
  claim: { readonly namespace: string; readonly name: string; readonly volumeName: string },
  logs: () => string,
) =>
  waitFor(
    "the intent finalizer and a CreateVolume in flight",
    async () =>
      ((await readClaim(core, claim.namespace, claim.name))?.metadata?.finalizers ?? []).includes(
        intentFinalizer,
      ) && driverLines(d, new RegExp(`CreateVolume name=${claim.volumeName} delayed`)).length === 1
        ? true
        : undefined,
    30_000,
    logs,
  );
