import { Effect, Either, Option } from "effect";
import { Config } from "../layers/Config.js";
import { Kube } from "../layers/Kube.js";
import type { VolumeContentSource } from "../schemas/Csi.js";
import { isBeingDeleted } from "../schemas/ObjectMeta.js";
import type {
  PersistentVolumeClaim,
  TypedObjectReference,
} from "../schemas/PersistentVolumeClaim.js";
import { parseQuantity } from "../schemas/Quantity.js";
import type { StorageClass } from "../schemas/StorageClass.js";
import { requestedBytes, storageClassOf } from "./Claims.js";
import { findClaim, Informers } from "./Informers.js";

/** Where a claim's content comes from: a snapshot to restore, a PVC to clone, or a populator. */
export type DataSourceKind = "Snapshot" | "Clone" | "Populator";

export const dataSourceKind = (source: TypedObjectReference): DataSourceKind =>
  source.kind === "VolumeSnapshot"
    ? "Snapshot"
    : source.kind === "PersistentVolumeClaim" && !source.apiGroup
      ? "Clone"
      : "Populator";

const fail = (message: string) => Effect.fail(message);

type SourceLookup = Effect.Effect<VolumeContentSource, string, Kube | Config | Informers>;

/** A restore: the snapshot must be bound to a content of this driver, ready, and not larger than the claim. */
const snapshotSource = (
  claim: PersistentVolumeClaim,
  sc: StorageClass,
  name: string,
): SourceLookup =>
  Effect.gen(function* () {
    const kube = yield* Kube;
    const config = yield* Config;
    const namespace = claim.metadata.namespace ?? "";
    const snapshot = yield* kube.getVolumeSnapshot({ namespace, name }).pipe(
      Effect.mapError((e) => `error getting snapshot ${name} from api server: ${e.message}`),
      Effect.flatMap(
        Option.match({
          onNone: () =>
            fail(
              `error getting snapshot ${name} from api server: volumesnapshots.snapshot.storage.k8s.io "${name}" not found`,
            ),
          onSome: Effect.succeed,
        }),
      ),
    );
    if (isBeingDeleted(snapshot.metadata)) return yield* fail(`snapshot ${name} is being deleted`);
    const notBound = `snapshot ${name} not bound`;
    const contentName = snapshot.status?.boundVolumeSnapshotContentName;
    if (!contentName) return yield* fail(notBound);
    const content = yield* kube.getVolumeSnapshotContent(contentName).pipe(
      Effect.mapError(() => notBound),
      Effect.flatMap(Option.match({ onNone: () => fail(notBound), onSome: Effect.succeed })),
    );
    const ref = content.spec.volumeSnapshotRef;
    if (ref.uid !== snapshot.metadata.uid || ref.namespace !== namespace || ref.name !== name) {
      return yield* fail(notBound);
    }
    if (content.spec.driver !== sc.provisioner) return yield* fail(notBound);
    if (snapshot.status?.readyToUse !== true) return yield* fail(`snapshot ${name} is not Ready`);
    const handle = content.status?.snapshotHandle;
    if (!handle) return yield* fail(`snapshot handle ${name} is not available`);
    const restoreSize = snapshot.status?.restoreSize;
    if (restoreSize !== undefined) {
      const size = Either.getOrElse(parseQuantity(restoreSize), () => 0n);
      const requested = Either.getOrElse(requestedBytes(claim), () => 0n);
      if (requested < size) {
        return yield* fail(
          `requested volume size ${requested} is less than the size ${size} for the source snapshot ${name}`,
        );
      }
    }
    const sourceMode = content.spec.sourceVolumeMode;
    if (
      config.preventVolumeModeConversion &&
      sourceMode &&
      claim.spec.volumeMode &&
      sourceMode !== claim.spec.volumeMode
    ) {
      const allowed =
        content.metadata.annotations?.["snapshot.storage.kubernetes.io/allow-volume-mode-change"];
      if (allowed !== "true") {
        return yield* fail(
          `requested volume ${namespace}/${claim.metadata.name} modifies the mode of the source volume but does not have permission to do so. snapshot.storage.kubernetes.io/allow-volume-mode-change annotation is not present on snapshotcontent ${content.metadata.name}`,
        );
      }
    }
    return { snapshot: { snapshot_id: handle } } satisfies VolumeContentSource;
  });

/** A clone: the source PVC must be bound to a volume of this driver, in the same class, not larger. */
const cloneSource = (claim: PersistentVolumeClaim, sc: StorageClass, name: string): SourceLookup =>
  Effect.gen(function* () {
    const kube = yield* Kube;
    const stores = yield* Informers;
    const namespace = claim.metadata.namespace ?? "";
    const source = findClaim(stores, namespace, name);
    if (!source) {
      return yield* fail(
        `error getting PVC ${name} (namespace "${namespace}") from api server: persistentvolumeclaim "${name}" not found`,
      );
    }
    if (source.status?.phase !== "Bound") {
      return yield* fail(
        `the PVC DataSource ${name} must have a status of Bound.  Got ${source.status?.phase ?? "Pending"}`,
      );
    }
    if (isBeingDeleted(source.metadata))
      return yield* fail(`the PVC DataSource ${name} is currently being deleted`);
    if (!storageClassOf(source))
      return yield* fail(`the source PVC (${name}) storageclass cannot be empty`);
    if (!storageClassOf(claim)) {
      return yield* fail(`the requested PVC (${claim.metadata.name}) storageclass cannot be empty`);
    }
    if (storageClassOf(source) !== storageClassOf(claim)) {
      return yield* fail(
        `the source PVC and destination PVCs must be in the same storage class for cloning.  Source is in ${storageClassOf(source)}, but new PVC is in ${storageClassOf(claim)}`,
      );
    }
    const requested = Either.getOrElse(requestedBytes(claim), () => 0n);
    const sourceSize = Either.getOrElse(requestedBytes(source), () => 0n);
    if (requested < sourceSize) {
      return yield* fail(
        `error, new PVC request must be greater than or equal in size to the specified PVC data source, requested ${requested} but source is ${sourceSize}`,
      );
    }
    const volumeName = source.spec.volumeName;
    if (!volumeName) return yield* fail(`volume name is empty in source PVC ${name}`);
    const invalid = "claim in dataSource not bound or invalid";
    const pv = yield* kube.getPersistentVolume(volumeName).pipe(
      Effect.mapError(() => invalid),
      Effect.flatMap(Option.match({ onNone: () => fail(invalid), onSome: Effect.succeed })),
    );
    const ref = pv.spec.claimRef;
    if (
      !pv.spec.csi ||
      pv.spec.csi.driver !== sc.provisioner ||
      ref?.uid !== source.metadata.uid ||
      ref?.namespace !== namespace ||
      ref?.name !== name ||
      pv.status?.phase !== "Bound"
    ) {
      return yield* fail(invalid);
    }
    const sourceBlock = pv.spec.volumeMode === "Block";
    const claimBlock = claim.spec.volumeMode === "Block";
    if (sourceBlock !== claimBlock) {
      return yield* fail(
        `the source PVC and destination PVCs must have the same volume mode for cloning.  Source is ${sourceBlock ? "Block" : "Filesystem"}, but new PVC requested ${claimBlock ? "Block" : "Filesystem"}`,
      );
    }
    return { volume: { volume_id: pv.spec.csi.volumeHandle } } satisfies VolumeContentSource;
  });

/** The content source of a restore or clone; the failure text is the one upstream puts in events. */
export const volumeContentSource = (
  claim: PersistentVolumeClaim,
  sc: StorageClass,
  source: TypedObjectReference,
): SourceLookup =>
  (dataSourceKind(source) === "Snapshot" ? snapshotSource : cloneSource)(
    claim,
    sc,
    source.name,
  ).pipe(
    Effect.mapError(
      (reason) =>
        `error getting handle for DataSource Type ${source.kind} by Name ${source.name}: ${reason}`,
    ),
  );
