import { Either } from "effect";
import { annotation } from "../schemas/ObjectMeta.js";
import type {
  PersistentVolumeClaim,
  TypedObjectReference,
} from "../schemas/PersistentVolumeClaim.js";
import { parseQuantity } from "../schemas/Quantity.js";
import { Annotation } from "./Names.js";

/** The class a claim asks for: the beta annotation wins over `spec.storageClassName`, as in Kubernetes. */
export const storageClassOf = (claim: PersistentVolumeClaim): string =>
  annotation(claim.metadata, Annotation.betaStorageClass) ?? claim.spec.storageClassName ?? "";

/** The provisioner the PV controller asked for; the beta key counts only when the GA key is absent. */
export const requestedProvisioner = (claim: PersistentVolumeClaim): string | undefined =>
  annotation(claim.metadata, Annotation.storageProvisioner) ??
  annotation(claim.metadata, Annotation.betaStorageProvisioner);

export const isForDriver = (claim: PersistentVolumeClaim, driver: string): boolean =>
  requestedProvisioner(claim) === driver ||
  annotation(claim.metadata, Annotation.migratedTo) === driver;

export const selectedNodeOf = (claim: PersistentVolumeClaim): string =>
  annotation(claim.metadata, Annotation.selectedNode) ?? "";

/**
 * `<prefix>-<uid>`, or with a UUID length the UID without dashes cut to that length. The same
 * string names the volume on every retry, which makes CreateVolume idempotent.
 */
export const volumeNameFor = (prefix: string, uid: string, uuidLength: number): string =>
  uuidLength < 0 ? `${prefix}-${uid}` : `${prefix}-${uid.replace(/-/g, "").slice(0, uuidLength)}`;

/** The claim's data source as upstream reads it: `dataSource`, else `dataSourceRef`. */
export const dataSourceOf = (claim: PersistentVolumeClaim): TypedObjectReference | undefined =>
  claim.spec.dataSource ?? claim.spec.dataSourceRef;

export const isBlock = (claim: PersistentVolumeClaim): boolean => claim.spec.volumeMode === "Block";

/** `spec.resources.requests.storage` in bytes; a claim without one asks for 0. */
export const requestedBytes = (claim: PersistentVolumeClaim): Either.Either<bigint, string> => {
  const request = claim.spec.resources?.requests?.storage;
  if (request === undefined) return Either.right(0n);
  return Either.mapLeft(parseQuantity(request), (e) => `invalid storage request: ${e}`);
};
