import { Context } from "effect";
import type { PersistentVolume } from "../schemas/PersistentVolume.js";
import type { PersistentVolumeClaim } from "../schemas/PersistentVolumeClaim.js";
import type { StorageClass } from "../schemas/StorageClass.js";

/** A read-only view of an informer cache. Reads are synchronous: the cache is a plain Map. */
export interface Store<A> {
  readonly get: (key: string) => A | undefined;
  readonly values: () => Iterable<A>;
  readonly size: () => number;
}

/**
 * The caches the programs read instead of asking the API server: PVCs by UID, PVs by name,
 * StorageClasses by name.
 */
export interface InformerStores {
  readonly claims: Store<PersistentVolumeClaim>;
  readonly volumes: Store<PersistentVolume>;
  readonly classes: Store<StorageClass>;
}

export class Informers extends Context.Tag("csi-provisioner/Informers")<
  Informers,
  InformerStores
>() {}

export const findClaim = (
  stores: InformerStores,
  namespace: string,
  name: string,
): PersistentVolumeClaim | undefined => {
  for (const claim of stores.claims.values()) {
    if (claim.metadata.name === name && claim.metadata.namespace === namespace) return claim;
  }
  return undefined;
};
