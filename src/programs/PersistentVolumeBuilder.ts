import type { ProvisionerConfig } from "../schemas/Config.js";
import type { Volume } from "../schemas/Csi.js";
import type { NewPersistentVolume } from "../schemas/PersistentVolume.js";
import type { PersistentVolumeClaim } from "../schemas/PersistentVolumeClaim.js";
import { formatBinarySI } from "../schemas/Quantity.js";
import type { StorageClass } from "../schemas/StorageClass.js";
import { isBlock, storageClassOf } from "./Claims.js";
import type { DriverInfo } from "./Driver.js";
import { Annotation, Finalizer, provisionerIdentityKey, ReclaimPolicy } from "./Names.js";
import type { ProvisionPlan } from "./ProvisionPlan.js";
import { volumeNodeAffinity } from "./Topology.js";

/** SPEC §4: the PersistentVolume for a volume the driver created, bound in advance to its claim. */
export const buildPersistentVolume = (input: {
  readonly claim: PersistentVolumeClaim;
  readonly storageClass: StorageClass;
  readonly plan: ProvisionPlan;
  readonly volume: Volume;
  readonly capacityBytes: bigint;
  readonly driver: DriverInfo;
  readonly config: ProvisionerConfig;
}): NewPersistentVolume => {
  const { claim, storageClass, plan, volume, driver, config } = input;
  const reclaimPolicy = storageClass.reclaimPolicy ?? ReclaimPolicy.delete;
  const capabilities = plan.request.volume_capabilities;
  const readOnly =
    config.controllerPublishReadonly &&
    capabilities.length === 1 &&
    capabilities[0]?.access_mode.mode === "MULTI_NODE_READER_ONLY";
  const nodeAffinity = plan.topology ? volumeNodeAffinity(volume.accessible_topology) : undefined;
  const block = isBlock(claim);
  return {
    apiVersion: "v1",
    kind: "PersistentVolume",
    metadata: {
      name: plan.pvName,
      annotations: {
        [Annotation.provisionedBy]: driver.name,
        [Annotation.deletionSecretName]: plan.provisionerSecret?.name ?? "",
        [Annotation.deletionSecretNamespace]: plan.provisionerSecret?.namespace ?? "",
      },
      ...(reclaimPolicy === ReclaimPolicy.delete ? { finalizers: [Finalizer.pv] } : {}),
    },
    spec: {
      accessModes: claim.spec.accessModes ?? [],
      capacity: { storage: formatBinarySI(input.capacityBytes) },
      claimRef: {
        apiVersion: "v1",
        kind: "PersistentVolumeClaim",
        name: claim.metadata.name,
        namespace: claim.metadata.namespace ?? "",
        uid: claim.metadata.uid,
        ...(claim.metadata.resourceVersion
          ? { resourceVersion: claim.metadata.resourceVersion }
          : {}),
      },
      csi: {
        driver: driver.name,
        volumeHandle: volume.volume_id,
        ...(block ? {} : { fsType: plan.fsType }),
        ...(readOnly ? { readOnly: true } : {}),
        volumeAttributes: { [provisionerIdentityKey]: driver.identity, ...volume.volume_context },
        ...(plan.pvSecrets.controllerPublish
          ? { controllerPublishSecretRef: plan.pvSecrets.controllerPublish }
          : {}),
        ...(plan.pvSecrets.nodeStage ? { nodeStageSecretRef: plan.pvSecrets.nodeStage } : {}),
        ...(plan.pvSecrets.nodePublish ? { nodePublishSecretRef: plan.pvSecrets.nodePublish } : {}),
        ...(plan.pvSecrets.controllerExpand
          ? { controllerExpandSecretRef: plan.pvSecrets.controllerExpand }
          : {}),
        ...(plan.pvSecrets.nodeExpand ? { nodeExpandSecretRef: plan.pvSecrets.nodeExpand } : {}),
      },
      ...(storageClass.mountOptions ? { mountOptions: storageClass.mountOptions } : {}),
      ...(nodeAffinity ? { nodeAffinity } : {}),
      persistentVolumeReclaimPolicy: reclaimPolicy,
      storageClassName: storageClassOf(claim),
      ...(claim.spec.volumeMode ? { volumeMode: claim.spec.volumeMode } : {}),
      ...(claim.spec.volumeAttributesClassName
        ? { volumeAttributesClassName: claim.spec.volumeAttributesClassName }
        : {}),
    },
  };
};
