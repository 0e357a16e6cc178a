import { Data, Effect, Either, Option } from "effect";
import { Csi } from "../layers/Csi.js";
import { Kube } from "../layers/Kube.js";
import type { StringMap } from "../schemas/Field.js";
import { annotation, hasFinalizer, isBeingDeleted } from "../schemas/ObjectMeta.js";
import type { PersistentVolume } from "../schemas/PersistentVolume.js";
import { withTimeout } from "./CsiCalls.js";
import { Driver } from "./Driver.js";
import { onVolume, recordEvent } from "./Events.js";
import { setVolumeFinalizer } from "./Finalizers.js";
import { Informers } from "./Informers.js";
import { Annotation, Finalizer, ReclaimPolicy } from "./Names.js";
import { resolveSecretReference } from "./SecretReference.js";

/** Deleting a released volume failed; the PV is retried after its backoff. */
export class VolumeNotDeleted extends Data.TaggedError("VolumeNotDeleted")<{
  readonly volume: string;
  readonly message: string;
}> {}

const isOurs = (pv: PersistentVolume, driver: string) =>
  annotation(pv.metadata, Annotation.provisionedBy) === driver ||
  annotation(pv.metadata, Annotation.migratedTo) === driver;

/**
 * Secrets for DeleteVolume: those recorded on the PV at provisioning time (empty strings: none),
 * else resolved again from the StorageClass. A secret that is gone is no reason to keep a volume.
 */
const deletionSecrets = (pv: PersistentVolume) =>
  Effect.gen(function* () {
    const kube = yield* Kube;
    const stores = yield* Informers;
    const annotations = pv.metadata.annotations ?? {};
    const name = annotations[Annotation.deletionSecretName];
    const namespace = annotations[Annotation.deletionSecretNamespace];
    let ref: { name: string; namespace: string } | undefined;
    if (name !== undefined && namespace !== undefined) {
      ref = name && namespace ? { name, namespace } : undefined;
    } else {
      const storageClass = stores.classes.get(pv.spec.storageClassName ?? "");
      const claim = pv.spec.claimRef;
      if (storageClass && claim) {
        const resolved = resolveSecretReference(
          "provisioner",
          storageClass.parameters ?? {},
          pv.metadata.name,
          {
            name: claim.name ?? "",
            namespace: claim.namespace ?? "",
          },
        );
        if (Either.isLeft(resolved)) {
          return yield* new VolumeNotDeleted({
            volume: pv.metadata.name,
            message: `failed to get secretreference for volume ${pv.metadata.name}: ${resolved.left}`,
          });
        }
        ref = resolved.right;
      }
    }
    if (!ref) return {} as StringMap;
    const secret = yield* kube.getSecret(ref).pipe(Effect.either);
    if (Either.isRight(secret) && Option.isSome(secret.right)) return secret.right.value.data;
    yield* Effect.logWarning(
      `deleting volume ${pv.metadata.name} without secrets: secret ${ref.namespace}/${ref.name} unavailable`,
    );
    return {} as StringMap;
  });

/**
 * The deletion side of the controller (SPEC §6): `reconcile(name)` deletes the volume of a released
 * PV whose reclaim policy is Delete, then the PV; it only drops our finalizer from other PVs.
 */
export const makeVolumeReconciler = Effect.sync(() => {
  /**
   * PVs (name → UID) whose deletion we finished, until the cache shows them gone: a run triggered
   * by our own writes would otherwise read a stale PV and call DeleteVolume again.
   */
  const deleted = new Map<string, string>();
  const failed = (pv: PersistentVolume, message: string) =>
    Effect.zipRight(
      recordEvent(onVolume(pv), "Warning", "VolumeFailedDelete", message),
      Effect.fail(new VolumeNotDeleted({ volume: pv.metadata.name, message })),
    );

  const deleteVolume = (pv: PersistentVolume) =>
    Effect.gen(function* () {
      const kube = yield* Kube;
      const csi = yield* Csi;
      const driver = yield* Driver;
      const name = pv.metadata.name;
      const handle = pv.spec.csi?.volumeHandle;
      if (!handle) return yield* failed(pv, "invalid CSI PV");
      if (driver.controllerCapabilities.has("PUBLISH_UNPUBLISH_VOLUME")) {
        const attachments = yield* kube.listVolumeAttachments.pipe(
          Effect.catchAll((e) => failed(pv, `failed to list volumeattachments: ${e.message}`)),
        );
        const attached = attachments.find((va) => va.spec.source.persistentVolumeName === name);
        if (attached)
          return yield* failed(
            pv,
            `persistentvolume ${name} is still attached to node ${attached.spec.nodeName}`,
          );
      }
      const secrets = yield* deletionSecrets(pv).pipe(
        Effect.catchAll((e) => failed(pv, e.message)),
      );
      yield* withTimeout("DeleteVolume", csi.deleteVolume({ volume_id: handle, secrets })).pipe(
        Effect.catchAll((e) => failed(pv, e.message)),
      );
      yield* kube.deletePersistentVolume(name).pipe(
        Effect.catchIf(
          (e) => e.reason === "NotFound",
          () => Effect.void,
        ),
        Effect.mapError((e) => new VolumeNotDeleted({ volume: name, message: e.message })),
      );
      yield* setVolumeFinalizer(pv, Finalizer.pv, false).pipe(
        Effect.mapError((e) => new VolumeNotDeleted({ volume: name, message: e.message })),
      );
      yield* Effect.logInfo(`deleted volume ${handle} and PersistentVolume ${name}`);
    });

  const reconcile = (name: string) =>
    Effect.gen(function* () {
      const stores = yield* Informers;
      const driver = yield* Driver;
      const pv = stores.volumes.get(name);
      if (!pv) deleted.delete(name);
      if (!pv || !isOurs(pv, driver.name) || deleted.get(name) === pv.metadata.uid) return;
      const policy = pv.spec.persistentVolumeReclaimPolicy;
      if (policy !== ReclaimPolicy.delete) {
        // Retain and Recycle volumes are never deleted by us, so our finalizer must not hold them.
        if (hasFinalizer(pv.metadata, Finalizer.pv)) {
          yield* setVolumeFinalizer(pv, Finalizer.pv, false).pipe(
            Effect.mapError((e) => new VolumeNotDeleted({ volume: name, message: e.message })),
          );
        }
        return;
      }
      if (isBeingDeleted(pv.metadata) && !hasFinalizer(pv.metadata, Finalizer.pv)) return;
      if (pv.status?.phase !== "Released") return;
      yield* deleteVolume(pv);
      deleted.set(name, pv.metadata.uid);
    });

  return {
    /** Every log line of a volume's work names the PV. */
    reconcile: (name: string) => Effect.annotateLogs(reconcile(name), "pv", name),
    /** PVs we deleted that the cache still shows; drops to zero once their deletions are seen. */
    guardedDeletions: () => deleted.size,
  };
});
