import { Effect, Option } from "effect";
import { Kube, type KubeError, type MetadataPatch, type ObjectRef } from "../layers/Kube.js";
import type { ObjectMeta } from "../schemas/ObjectMeta.js";
import type { PersistentVolume } from "../schemas/PersistentVolume.js";
import type { PersistentVolumeClaim } from "../schemas/PersistentVolumeClaim.js";

const conflictRetries = 5;

/**
 * Changes an object's metadata with a conditional merge patch, so a concurrent writer's finalizers
 * or annotations are never overwritten: on Conflict it re-reads the object and tries again. An
 * object that is gone needs no change.
 */
const patchMetadata = <A extends { readonly metadata: ObjectMeta }>(
  current: A,
  read: Effect.Effect<Option.Option<A>, KubeError>,
  write: (patch: MetadataPatch) => Effect.Effect<A, KubeError>,
  change: (metadata: ObjectMeta) => Omit<MetadataPatch, "resourceVersion"> | undefined,
): Effect.Effect<Option.Option<A>, KubeError> =>
  Effect.gen(function* () {
    let object = current;
    for (let attempt = 0; ; attempt++) {
      const patch = change(object.metadata);
      if (patch === undefined) return Option.some(object);
      const result = yield* write({
        ...patch,
        ...(object.metadata.resourceVersion
          ? { resourceVersion: object.metadata.resourceVersion }
          : {}),
      }).pipe(
        Effect.map(Option.some),
        Effect.catchIf(
          (error) => error.reason === "NotFound",
          () => Effect.succeed(Option.none<A>()),
        ),
        Effect.catchIf(
          (error) => error.reason === "Conflict" && attempt < conflictRetries,
          () => Effect.succeed(undefined),
        ),
      );
      if (result !== undefined) return result;
      const fresh = yield* read;
      if (Option.isNone(fresh)) return fresh;
      object = fresh.value;
    }
  });

const withFinalizer = (finalizer: string, present: boolean) => (metadata: ObjectMeta) => {
  const finalizers = metadata.finalizers ?? [];
  if (finalizers.includes(finalizer) === present) return undefined;
  return {
    finalizers: present ? [...finalizers, finalizer] : finalizers.filter((f) => f !== finalizer),
  };
};

const claimRef = (claim: PersistentVolumeClaim): ObjectRef => ({
  namespace: claim.metadata.namespace ?? "",
  name: claim.metadata.name,
});

const patchClaim = (
  claim: PersistentVolumeClaim,
  change: (metadata: ObjectMeta) => Omit<MetadataPatch, "resourceVersion"> | undefined,
) =>
  Effect.flatMap(Kube, (kube) =>
    patchMetadata(
      claim,
      kube
        .getPersistentVolumeClaim(claimRef(claim))
        .pipe(Effect.map(Option.filter((fresh) => fresh.metadata.uid === claim.metadata.uid))),
      (patch) => kube.patchPersistentVolumeClaim(claimRef(claim), patch),
      change,
    ),
  );

export const setClaimFinalizer = (
  claim: PersistentVolumeClaim,
  finalizer: string,
  present: boolean,
) => patchClaim(claim, withFinalizer(finalizer, present));

export const removeClaimAnnotation = (claim: PersistentVolumeClaim, key: string) =>
  patchClaim(claim, (metadata) =>
    metadata.annotations?.[key] === undefined ? undefined : { annotations: { [key]: null } },
  );

export const setVolumeFinalizer = (volume: PersistentVolume, finalizer: string, present: boolean) =>
  Effect.flatMap(Kube, (kube) =>
    patchMetadata(
      volume,
      kube.getPersistentVolume(volume.metadata.name),
      (patch) => kube.patchPersistentVolume(volume.metadata.name, patch),
      withFinalizer(finalizer, present),
    ),
  );
