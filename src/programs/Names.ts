/** Annotation, finalizer and parameter names of the external-provisioner protocol. */
export const Annotation = {
  storageProvisioner: "volume.kubernetes.io/storage-provisioner",
  betaStorageProvisioner: "volume.beta.kubernetes.io/storage-provisioner",
  betaStorageClass: "volume.beta.kubernetes.io/storage-class",
  migratedTo: "pv.kubernetes.io/migrated-to",
  selectedNode: "volume.kubernetes.io/selected-node",
  provisionedBy: "pv.kubernetes.io/provisioned-by",
  deletionSecretName: "volume.kubernetes.io/provisioner-deletion-secret-name",
  deletionSecretNamespace: "volume.kubernetes.io/provisioner-deletion-secret-namespace",
} as const;

export const Finalizer = {
  /** On PVs with reclaim policy Delete, so the volume is deleted before the object goes. */
  pv: "external-provisioner.volume.kubernetes.io/finalizer",
  /** On a PVC that is the source of a clone still being provisioned. */
  cloneSource: "provisioner.storage.kubernetes.io/cloning-protection",
  /**
   * Ours, beyond upstream: on a PVC from before its first CreateVolume until its status is Bound, so a
   * restarted sidecar finds every volume it may have created (SPEC §8).
   */
  provisioningIntent: "csi-provisioner.effect.dev/provisioning-intent",
} as const;

/** Volume attribute that records which sidecar instance provisioned a volume. */
export const provisionerIdentityKey = "storage.kubernetes.io/csiProvisionerIdentity";

export const csiParameterPrefix = "csi.storage.k8s.io/";
export const Parameter = {
  fsType: `${csiParameterPrefix}fstype`,
  pvcName: `${csiParameterPrefix}pvc/name`,
  pvcNamespace: `${csiParameterPrefix}pvc/namespace`,
  pvName: `${csiParameterPrefix}pv/name`,
} as const;

export const ReclaimPolicy = { delete: "Delete", retain: "Retain", recycle: "Recycle" } as const;
