import { Effect, Option } from "effect";
import { Kube, type KubeError, type MetadataPatch, type ObjectRef } from "../layers/Kube.js";
import type { ObjectMeta } from "../schemas/ObjectMeta.js";
import type { PersistentVolume } from "../schemas/PersistentVolume.js";
import type { PersistentVolumeClaim } from "../schemas/PersistentVolumeClaim.js";

/**
 * Metadata changes that touch only what they name (strategic merge patches: one finalizer added or
 * removed, one annotation dropped), so they need no resourceVersion and never conflict with the
 * PV controller's concurrent writes. Nothing to change is no request; an object that is gone needs
 * no change (`None`).
 */
const patchIfNeeded = <A>(
  change: MetadataPatch | undefined,
  write: (patch: MetadataPatch) => Effect.Effect<A, KubeError>,
  unchanged: A,
): Effect.Effect<Option.Option<A>, KubeError> =>
  change === undefined
    ? Effect.succeed(Option.some(unchanged))
    : write(change).pipe(
        Effect.map(Option.some),
        Effect.catchIf(
          (error) => error.reason === "NotFound",
          () => Effect.succeed(Option.none<A>()),
        ),
      );

const finalizerChange = (metadata: ObjectMeta, finalizer: string, present: boolean) =>
  (metadata.finalizers ?? []).includes(finalizer) === present
    ? undefined
    : present
      ? { addFinalizers: [finalizer] }
      : { removeFinalizers: [finalizer] };

const claimRef = (claim: PersistentVolumeClaim): ObjectRef => ({
  namespace: claim.metadata.namespace ?? "",
  name: claim.metadata.name,
});

export const setClaimFinalizer = (
  claim: PersistentVolumeClaim,
  finalizer: string,
  present: boolean,
) =>
  Effect.flatMap(Kube, (kube) =>
    patchIfNeeded(
      finalizerChange(claim.metadata, finalizer, present),
      (patch) => kube.patchPersistentVolumeClaim(claimRef(claim), patch),
      claim,
    ),
  );

export const removeClaimAnnotation = (claim: PersistentVolumeClaim, key: string) =>
  Effect.flatMap(Kube, (kube) =>
    patchIfNeeded(
      claim.metadata.annotations?.[key] === undefined
        ? undefined
        : { annotations: { [key]: null } },
      (patch) => kube.patchPersistentVolumeClaim(claimRef(claim), patch),
      claim,
    ),
  );

export const setVolumeFinalizer = (volume: PersistentVolume, finalizer: string, present: boolean) =>
  Effect.flatMap(Kube, (kube) =>
    patchIfNeeded(
      finalizerChange(volume.metadata, finalizer, present),
      (patch) => kube.patchPersistentVolume(volume.metadata.name, patch),
      volume,
    ),
  );
