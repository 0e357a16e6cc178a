import { Context, Data, type Effect, type Option, type Stream } from "effect";
import type { NewEvent } from "../schemas/Event.js";
import type { Lease } from "../schemas/Lease.js";
import type { CsiNode, Node } from "../schemas/Node.js";
import type { NewPersistentVolume, PersistentVolume } from "../schemas/PersistentVolume.js";
import type { PersistentVolumeClaim } from "../schemas/PersistentVolumeClaim.js";
import type { Secret } from "../schemas/Secret.js";
import type {
  VolumeAttachment,
  VolumeAttributesClass,
  VolumeSnapshot,
  VolumeSnapshotContent,
} from "../schemas/Storage.js";
import type { StorageClass } from "../schemas/StorageClass.js";

export type KubeErrorReason =
  | "NotFound"
  | "AlreadyExists"
  | "Conflict"
  | "Gone"
  | "Invalid"
  | "Forbidden"
  | "Unauthorized"
  | "TooManyRequests"
  | "ServerError"
  | "Unavailable"
  | "Malformed";

/** A failed Kubernetes API call; `message` is the API server's own wording where it sent one. */
export class KubeError extends Data.TaggedError("KubeError")<{
  readonly reason: KubeErrorReason;
  readonly verb: string;
  readonly resource: string;
  /** The object's name (not `name`: that is the Error's own). */
  readonly object: string;
  readonly message: string;
}> {}

/**
 * One step of a list+watch. `Listed` carries a complete snapshot (the first list, or a relist after
 * the watch expired): objects missing from it are gone.
 */
export type WatchEvent<A> =
  | { readonly _tag: "Listed"; readonly items: ReadonlyArray<A> }
  | { readonly _tag: "Added" | "Modified" | "Deleted"; readonly object: A };

/**
 * A metadata change that leaves everything else alone, whatever changed meanwhile: no
 * resourceVersion, no conflicts.
 */
export interface MetadataPatch {
  /** Single finalizers added or removed (a strategic merge patch, as upstream patches them). */
  readonly addFinalizers?: ReadonlyArray<string>;
  readonly removeFinalizers?: ReadonlyArray<string>;
  /** Annotations set, or removed with `null` (a JSON merge patch). */
  readonly annotations?: Readonly<Record<string, string | null>>;
}

export interface ObjectRef {
  readonly namespace: string;
  readonly name: string;
}

/** The Kubernetes API as the provisioner uses it: typed, decoded, errors tagged. */
export interface KubeService {
  readonly watchPersistentVolumeClaims: Stream.Stream<WatchEvent<PersistentVolumeClaim>, KubeError>;
  readonly watchPersistentVolumes: Stream.Stream<WatchEvent<PersistentVolume>, KubeError>;
  readonly watchStorageClasses: Stream.Stream<WatchEvent<StorageClass>, KubeError>;

  readonly getPersistentVolumeClaim: (
    ref: ObjectRef,
  ) => Effect.Effect<Option.Option<PersistentVolumeClaim>, KubeError>;
  readonly getPersistentVolume: (
    name: string,
  ) => Effect.Effect<Option.Option<PersistentVolume>, KubeError>;
  readonly getSecret: (ref: ObjectRef) => Effect.Effect<Option.Option<Secret>, KubeError>;
  readonly getNode: (name: string) => Effect.Effect<Option.Option<Node>, KubeError>;
  readonly listNodes: Effect.Effect<ReadonlyArray<Node>, KubeError>;
  readonly getCsiNode: (name: string) => Effect.Effect<Option.Option<CsiNode>, KubeError>;
  readonly listCsiNodes: Effect.Effect<ReadonlyArray<CsiNode>, KubeError>;
  readonly getVolumeSnapshot: (
    ref: ObjectRef,
  ) => Effect.Effect<Option.Option<VolumeSnapshot>, KubeError>;
  readonly getVolumeSnapshotContent: (
    name: string,
  ) => Effect.Effect<Option.Option<VolumeSnapshotContent>, KubeError>;
  readonly getVolumeAttributesClass: (
    name: string,
  ) => Effect.Effect<Option.Option<VolumeAttributesClass>, KubeError>;
  readonly listVolumeAttachments: Effect.Effect<ReadonlyArray<VolumeAttachment>, KubeError>;

  readonly createPersistentVolume: (
    pv: NewPersistentVolume,
  ) => Effect.Effect<PersistentVolume, KubeError>;
  readonly patchPersistentVolume: (
    name: string,
    patch: MetadataPatch,
  ) => Effect.Effect<PersistentVolume, KubeError>;
  readonly deletePersistentVolume: (name: string) => Effect.Effect<void, KubeError>;
  readonly patchPersistentVolumeClaim: (
    ref: ObjectRef,
    patch: MetadataPatch,
  ) => Effect.Effect<PersistentVolumeClaim, KubeError>;
  readonly createEvent: (event: NewEvent) => Effect.Effect<void, KubeError>;
}

export class Kube extends Context.Tag("csi-provisioner/Kube")<Kube, KubeService>() {}

/**
 * Leases (`coordination.k8s.io/v1`), for leader election. A service of their own rather than part
 * of `Kube` so that the live layer can give them their own client and request budget, as upstream
 * gives leader election its own clientset: a provisioning storm must never starve renewals.
 */
export interface KubeLeasesService {
  readonly getLease: (ref: ObjectRef) => Effect.Effect<Option.Option<Lease>, KubeError>;
  readonly createLease: (lease: Lease) => Effect.Effect<Lease, KubeError>;
  /** A full replace (PUT); with `metadata.resourceVersion` it fails with `Conflict` when stale. */
  readonly updateLease: (lease: Lease) => Effect.Effect<Lease, KubeError>;
}

export class KubeLeases extends Context.Tag("csi-provisioner/KubeLeases")<
  KubeLeases,
  KubeLeasesService
>() {}
