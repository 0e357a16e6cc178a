import {
  type Change,
  type JsonObject,
  keyOf,
  type MemoryStore,
  metadataOf,
  type Reactor,
  recordOf,
  stringOf,
} from "./KubeMemoryStore.js";

/**
 * A small simulation of kube-controller-manager's PV controller, enough for a provisioner to run
 * against: it announces which provisioner owns a claim, binds pre-bound PVs to their claims, and
 * marks PVs Released when their claim goes away. Static binding (matching Available PVs by size) is
 * not simulated: an external provisioner never relies on it.
 */

export interface PvControllerOptions {
  /** Kubernetes 1.20–1.22 set only the beta provisioner annotation. */
  readonly legacyProvisionerAnnotation: boolean;
}

const ann = {
  storageClass: "volume.beta.kubernetes.io/storage-class",
  provisioner: "volume.kubernetes.io/storage-provisioner",
  betaProvisioner: "volume.beta.kubernetes.io/storage-provisioner",
  selectedNode: "volume.kubernetes.io/selected-node",
  bindCompleted: "pv.kubernetes.io/bind-completed",
  boundByController: "pv.kubernetes.io/bound-by-controller",
} as const;

type Draft = Record<string, unknown>;

/** The claim key (`namespace/name`) a PV's claimRef points to, if it has a usable one. */
const claimKeyOf = (pv: JsonObject | undefined): string | undefined => {
  const claimRef = recordOf(recordOf(pv?.spec)?.claimRef);
  const name = stringOf(claimRef?.name);
  return name ? keyOf(stringOf(claimRef?.namespace) ?? "", name) : undefined;
};

const phaseOf = (object: JsonObject) => stringOf(recordOf(object.status)?.phase);
const annotationsOf = (object: JsonObject) => recordOf(metadataOf(object).annotations) ?? {};

export const makePvController = (store: MemoryStore, options: PvControllerOptions): Reactor => {
  const dirtyClaims = new Set<string>();
  const dirtyVolumes = new Set<string>();
  // claim key → names of PVs whose claimRef names it, so a claim change finds its PVs without a scan
  const volumesByClaim = new Map<string, Set<string>>();

  const index = (claimKey: string | undefined, volume: string, add: boolean) => {
    if (claimKey === undefined) return;
    const set = volumesByClaim.get(claimKey) ?? new Set<string>();
    if (add) set.add(volume);
    else set.delete(volume);
    if (set.size === 0) volumesByClaim.delete(claimKey);
    else volumesByClaim.set(claimKey, set);
  };

  const observe = (change: Change) => {
    switch (change.resource) {
      case "persistentvolumeclaims":
        dirtyClaims.add(change.key);
        for (const volume of volumesByClaim.get(change.key) ?? []) dirtyVolumes.add(volume);
        break;
      case "persistentvolumes": {
        const before = claimKeyOf(change.before);
        const after = change.type === "Deleted" ? undefined : claimKeyOf(change.after);
        index(before, change.key, false);
        index(after, change.key, true);
        if (change.type !== "Deleted") dirtyVolumes.add(change.key);
        if (before !== undefined) dirtyClaims.add(before);
        if (after !== undefined) dirtyClaims.add(after);
        break;
      }
      case "storageclasses":
        for (const key of store.keys("persistentvolumeclaims")) dirtyClaims.add(key);
        break;
    }
  };

  /** Clones an object, lets `edit` change the copy, and writes it (a no-op write is skipped). */
  const edit = (
    resource: "persistentvolumeclaims" | "persistentvolumes",
    key: string,
    object: JsonObject,
    change: (draft: Draft, meta: Draft) => void,
  ) => {
    const draft = structuredClone(object) as Draft;
    change(draft, draft.metadata as Draft);
    store.replace(resource, key, draft);
  };
  const setPhase = (
    resource: "persistentvolumeclaims" | "persistentvolumes",
    key: string,
    object: JsonObject,
    phase: string,
    extra: Draft = {},
  ) =>
    edit(resource, key, object, (draft) => {
      draft.status = { ...recordOf(draft.status), ...extra, phase };
    });

  const reconcileClaim = (key: string) => {
    const claim = store.lookup("persistentvolumeclaims", key);
    const spec = recordOf(claim?.spec ?? {});
    if (!claim || !spec) return;
    const annotations = annotationsOf(claim);
    const volumeName = stringOf(spec.volumeName) ?? "";
    if (volumeName !== "") {
      const lost =
        annotations[ann.bindCompleted] !== undefined &&
        store.lookup("persistentvolumes", volumeName) === undefined;
      if (lost) setPhase("persistentvolumeclaims", key, claim, "Lost");
      return;
    }
    const className =
      stringOf(annotations[ann.storageClass]) ?? stringOf(spec.storageClassName) ?? "";
    const storageClass = className ? store.lookup("storageclasses", className) : undefined;
    const provisioner = stringOf(storageClass?.provisioner);
    if (!storageClass || !provisioner) return;
    const waitsForNode = storageClass.volumeBindingMode === "WaitForFirstConsumer";
    if (waitsForNode && !stringOf(annotations[ann.selectedNode])) return;
    edit("persistentvolumeclaims", key, claim, (_, meta) => {
      const next: Draft = { ...recordOf(meta.annotations), [ann.betaProvisioner]: provisioner };
      if (!options.legacyProvisionerAnnotation) next[ann.provisioner] = provisioner;
      meta.annotations = next;
    });
  };

  /** As upstream's bind(): the PV side first, then the claim, then the claim's status. */
  const bind = (name: string, pv: JsonObject, claimKey: string, claim: JsonObject) => {
    const claimUid = metadataOf(claim).uid;
    edit("persistentvolumes", name, pv, (draft) => {
      const spec = draft.spec as Draft;
      const claimRef = spec.claimRef as Draft;
      if (!stringOf(claimRef.uid)) claimRef.uid = claimUid;
      draft.status = { ...recordOf(draft.status), phase: "Bound" };
    });
    edit("persistentvolumeclaims", claimKey, claim, (draft, meta) => {
      const spec = recordOf(draft.spec) ?? {};
      const setByUs = !stringOf(spec.volumeName);
      draft.spec = { ...spec, volumeName: name };
      meta.annotations = {
        ...recordOf(meta.annotations),
        [ann.bindCompleted]: "yes",
        ...(setByUs ? { [ann.boundByController]: "yes" } : {}),
      };
    });
    const updated = store.lookup("persistentvolumeclaims", claimKey);
    const pvSpec = recordOf(pv.spec) ?? {};
    if (updated) {
      setPhase("persistentvolumeclaims", claimKey, updated, "Bound", {
        ...(pvSpec.capacity !== undefined ? { capacity: pvSpec.capacity } : {}),
        ...(pvSpec.accessModes !== undefined ? { accessModes: pvSpec.accessModes } : {}),
      });
    }
  };

  const reconcileVolume = (name: string) => {
    const pv = store.lookup("persistentvolumes", name);
    const spec = recordOf(pv?.spec ?? {});
    if (!pv || !spec) return;
    const phase = phaseOf(pv);
    if (spec.claimRef == null) {
      setPhase("persistentvolumes", name, pv, "Available");
      return;
    }
    const claimKey = claimKeyOf(pv);
    if (claimKey === undefined) return;
    const claim = store.lookup("persistentvolumeclaims", claimKey);
    const refUid = stringOf(recordOf(spec.claimRef)?.uid);
    if (!claim || (refUid && refUid !== metadataOf(claim).uid)) {
      // A claimRef without uid is a pre-binding waiting for its claim, not a lost one.
      if (!refUid) setPhase("persistentvolumes", name, pv, "Available");
      else if (phase !== "Released" && phase !== "Failed") {
        setPhase("persistentvolumes", name, pv, "Released");
      }
      return;
    }
    if (phase === "Released" || phase === "Failed") return;
    const claimVolume = stringOf(recordOf(claim.spec)?.volumeName) ?? "";
    if (claimVolume !== "" && claimVolume !== name) return;
    bind(name, pv, claimKey, claim);
  };

  const settle = () => {
    // Every write here only moves towards a fixed state, so this bound is only a guard against a bug.
    let budget = 1000 + 20 * (dirtyClaims.size + dirtyVolumes.size);
    while (dirtyClaims.size > 0 || dirtyVolumes.size > 0) {
      if (--budget < 0) throw new Error("the simulated PV controller does not settle");
      const [claim] = dirtyClaims;
      if (claim !== undefined) {
        dirtyClaims.delete(claim);
        reconcileClaim(claim);
        continue;
      }
      const [volume] = dirtyVolumes;
      if (volume !== undefined) {
        dirtyVolumes.delete(volume);
        reconcileVolume(volume);
      }
    }
  };

  return { observe, settle };
};
