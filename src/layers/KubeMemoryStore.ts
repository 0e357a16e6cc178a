import { Either } from "effect";
import { KubeError, type KubeErrorReason, type MetadataPatch } from "./Kube.js";

/**
 * The storage half of the in-memory API server: raw JSON objects per resource with the API server's
 * write semantics (resourceVersion, uid, finalizers, conditional writes) and raw watch fan-out.
 * Everything here is synchronous on purpose: a mutation, its watch events and the PV controller's
 * reactions happen in one JavaScript turn, so no reader can observe a half-applied change.
 */

interface ResourceInfo {
  readonly kind: string;
  readonly apiVersion: string;
  readonly namespaced: boolean;
}

export const resources = {
  persistentvolumeclaims: { kind: "PersistentVolumeClaim", apiVersion: "v1", namespaced: true },
  persistentvolumes: { kind: "PersistentVolume", apiVersion: "v1", namespaced: false },
  storageclasses: { kind: "StorageClass", apiVersion: "storage.k8s.io/v1", namespaced: false },
  secrets: { kind: "Secret", apiVersion: "v1", namespaced: true },
  nodes: { kind: "Node", apiVersion: "v1", namespaced: false },
  csinodes: { kind: "CSINode", apiVersion: "storage.k8s.io/v1", namespaced: false },
  volumesnapshots: {
    kind: "VolumeSnapshot",
    apiVersion: "snapshot.storage.k8s.io/v1",
    namespaced: true,
  },
  volumesnapshotcontents: {
    kind: "VolumeSnapshotContent",
    apiVersion: "snapshot.storage.k8s.io/v1",
    namespaced: false,
  },
  volumeattributesclasses: {
    kind: "VolumeAttributesClass",
    apiVersion: "storage.k8s.io/v1",
    namespaced: false,
  },
  volumeattachments: {
    kind: "VolumeAttachment",
    apiVersion: "storage.k8s.io/v1",
    namespaced: false,
  },
  events: { kind: "Event", apiVersion: "v1", namespaced: true },
  leases: { kind: "Lease", apiVersion: "coordination.k8s.io/v1", namespaced: true },
} as const satisfies Record<string, ResourceInfo>;

export type MemoryResource = keyof typeof resources;

/** A JSON object as the API server serves it; nothing about its shape is guaranteed. */
export type JsonObject = { readonly [key: string]: unknown };
type Draft = Record<string, unknown>;

/**
 * Names an object. For namespaced resources a bare string may be `namespace/name`; without a slash
 * (or without `namespace`) the namespace is `default`, as kubectl assumes. Cluster-scoped resources
 * ignore the namespace.
 */
export type ResourceRef =
  | string
  | { readonly namespace?: string | undefined; readonly name: string };

export type RawWatchEvent =
  | { readonly _tag: "Listed"; readonly items: ReadonlyArray<JsonObject> }
  | { readonly _tag: "Added" | "Modified" | "Deleted"; readonly object: JsonObject };

export interface Change {
  readonly resource: MemoryResource;
  readonly key: string;
  readonly type: "Added" | "Modified" | "Deleted";
  readonly before: JsonObject | undefined;
  readonly after: JsonObject;
}

/** Reacts to committed changes, like a controller watching the store; see KubeMemoryPvController. */
export interface Reactor {
  readonly observe: (change: Change) => void;
  /** Runs after each top-level mutation; its own writes go through `replace`. */
  readonly settle: () => void;
}

export const isRecord = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u);
export const recordOf = (u: unknown): Record<string, unknown> | undefined =>
  isRecord(u) ? u : undefined;
export const stringOf = (u: unknown): string | undefined => (typeof u === "string" ? u : undefined);
export const metadataOf = (object: JsonObject): Record<string, unknown> =>
  recordOf(object.metadata) ?? {};
const finalizersOf = (object: JsonObject): ReadonlyArray<unknown> => {
  const finalizers = metadataOf(object).finalizers;
  return Array.isArray(finalizers) ? finalizers : [];
};
const isDeleting = (object: JsonObject) => metadataOf(object).deletionTimestamp != null;

/** Kubernetes serialises metav1.Time with second precision. */
export const rfc3339 = (millis: number): string =>
  new Date(millis).toISOString().replace(/\.\d{3}Z$/, "Z");

export const keyOf = (namespace: string | undefined, name: string) =>
  namespace === undefined ? name : `${namespace}/${name}`;

export const locate = (resource: MemoryResource, ref: ResourceRef) => {
  const namespaced = resources[resource].namespaced;
  const [namespace, name] =
    typeof ref === "string"
      ? ref.includes("/") && namespaced
        ? (ref.split("/", 2) as [string, string])
        : ["default", ref]
      : [ref.namespace ?? "default", ref.name];
  return namespaced
    ? { namespace, name, key: keyOf(namespace, name) }
    : { namespace: undefined, name, key: name };
};

/** `persistentvolumes`, `storageclasses.storage.k8s.io`: how the API server names a resource. */
export const qualifiedName = (resource: MemoryResource) => {
  const apiVersion: string = resources[resource].apiVersion;
  const slash = apiVersion.indexOf("/");
  return slash < 0 ? resource : `${resource}.${apiVersion.slice(0, slash)}`;
};

const conflictMessage = (resource: MemoryResource, name: string) =>
  `Operation cannot be fulfilled on ${qualifiedName(resource)} "${name}": the object has been modified; please apply your changes to the latest version and try again`;

/** The API server's wording for each failure, used for real and for injected errors alike. */
export const kubeError = (
  reason: KubeErrorReason,
  verb: string,
  resource: MemoryResource,
  name: string,
  detail?: string,
): KubeError => {
  const q = qualifiedName(resource);
  const messages: Record<KubeErrorReason, string> = {
    NotFound: `${q} "${name}" not found`,
    AlreadyExists: `${q} "${name}" already exists`,
    Conflict: conflictMessage(resource, name),
    Gone: "too old resource version",
    Invalid: `${resources[resource].kind} "${name}" is invalid: ${detail ?? "injected failure"}`,
    Forbidden: `${q} "${name}" is forbidden: ${detail ?? "injected failure"}`,
    Unauthorized: "Unauthorized",
    TooManyRequests:
      "the server has received too many requests and has asked us to try again later",
    ServerError: `Internal error occurred: ${detail ?? "injected failure"}`,
    Unavailable: "the server is currently unable to handle the request",
    Malformed: `${q} "${name}" could not be decoded: ${detail ?? "injected failure"}`,
  };
  return new KubeError({ reason, verb, resource, object: name, message: messages[reason] });
};

const deepFreeze = <A>(value: A): A => {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
};

const jsonEqual = (a: unknown, b: unknown): boolean => {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return (
      Array.isArray(a) &&
      Array.isArray(b) &&
      a.length === b.length &&
      a.every((item, i) => jsonEqual(item, b[i]))
    );
  }
  if (!isRecord(a) || !isRecord(b)) return false;
  const keys = Object.keys(a).filter((k) => a[k] !== undefined);
  return (
    keys.length === Object.keys(b).filter((k) => b[k] !== undefined).length &&
    keys.every((k) => jsonEqual(a[k], b[k]))
  );
};

/** k8s' random suffix alphabet (no vowels, no look-alikes), fed by a counter to stay reproducible. */
const suffixAlphabet = "bcdfghjklmnpqrstvwxz2456789";

export class MemoryStore {
  private readonly tables = new Map<MemoryResource, Map<string, JsonObject>>();
  private readonly watchers = new Map<MemoryResource, Set<(event: RawWatchEvent) => void>>();
  private lastResourceVersion = 0;
  private lastUid = 0;
  private lastSuffix = 0;
  reactor: Reactor | undefined;

  private table(resource: MemoryResource): Map<string, JsonObject> {
    let table = this.tables.get(resource);
    if (!table) {
      table = new Map();
      this.tables.set(resource, table);
    }
    return table;
  }

  lookup(resource: MemoryResource, key: string): JsonObject | undefined {
    return this.table(resource).get(key);
  }

  keys(resource: MemoryResource): ReadonlyArray<string> {
    return [...this.table(resource).keys()];
  }

  /** Sorted by key, as etcd returns a list. */
  list(resource: MemoryResource): ReadonlyArray<JsonObject> {
    return [...this.table(resource).entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, object]) => object);
  }

  /** In creation order: for Events, where order is what a test asserts. */
  inCreationOrder(resource: MemoryResource): ReadonlyArray<JsonObject> {
    return [...this.table(resource).values()];
  }

  /** Emits the snapshot and registers in one synchronous step, so nothing falls in between. */
  subscribe(resource: MemoryResource, watcher: (event: RawWatchEvent) => void): () => void {
    let set = this.watchers.get(resource);
    if (!set) {
      set = new Set();
      this.watchers.set(resource, set);
    }
    watcher({ _tag: "Listed", items: this.list(resource) });
    set.add(watcher);
    return () => set.delete(watcher);
  }

  expireWatches(): void {
    for (const [resource, set] of this.watchers) {
      for (const watcher of set) watcher({ _tag: "Listed", items: this.list(resource) });
    }
  }

  create(
    resource: MemoryResource,
    input: JsonObject,
    now: number,
  ): Either.Either<JsonObject, KubeError> {
    return this.mutation(() => {
      const info = resources[resource];
      const object = structuredClone(input) as Draft;
      if (!isRecord(object.metadata)) {
        return Either.left(
          kubeError("Invalid", "create", resource, "", "metadata: Required value"),
        );
      }
      const meta = object.metadata;
      const generateName = stringOf(meta.generateName) ?? "";
      if (!stringOf(meta.name) && generateName !== "") meta.name = generateName + this.suffix();
      const name = stringOf(meta.name) ?? "";
      if (name === "") {
        const detail = "metadata.name: Required value: name or generateName is required";
        return Either.left(kubeError("Invalid", "create", resource, "", detail));
      }
      if (info.namespaced) meta.namespace = stringOf(meta.namespace) || "default";
      else delete meta.namespace;
      const key = keyOf(stringOf(meta.namespace), name);
      if (this.table(resource).has(key)) {
        return Either.left(kubeError("AlreadyExists", "create", resource, name));
      }
      object.apiVersion ??= info.apiVersion;
      object.kind ??= info.kind;
      // Unlike the API server, keep a caller's uid and timestamp: tests pin them for exact asserts.
      if (!stringOf(meta.uid)) meta.uid = this.uid();
      if (!stringOf(meta.creationTimestamp)) meta.creationTimestamp = rfc3339(now);
      if (resource === "persistentvolumeclaims" || resource === "persistentvolumes") {
        // API defaulting (SetDefaults_PersistentVolume[Claim]), not the controller.
        const status = object.status ?? {};
        if (isRecord(status) && status.phase == null)
          object.status = { ...status, phase: "Pending" };
      }
      return Either.right(this.commit(resource, key, "Added", undefined, object));
    });
  }

  /** A full replace (spec and status alike); identity and deletion fields stay the server's. */
  update(resource: MemoryResource, input: JsonObject): Either.Either<JsonObject, KubeError> {
    return this.mutation(() => {
      const meta = recordOf(input.metadata) ?? {};
      const target = locate(resource, {
        namespace: stringOf(meta.namespace),
        name: stringOf(meta.name) ?? "",
      });
      const before = this.lookup(resource, target.key);
      if (!before) return Either.left(kubeError("NotFound", "update", resource, target.name));
      const beforeMeta = metadataOf(before);
      const expected = stringOf(meta.resourceVersion);
      if (expected && expected !== beforeMeta.resourceVersion) {
        return Either.left(kubeError("Conflict", "update", resource, target.name));
      }
      const next = structuredClone(input) as Draft;
      next.apiVersion ??= before.apiVersion;
      next.kind ??= before.kind;
      const nextMeta: Draft = isRecord(next.metadata) ? next.metadata : {};
      next.metadata = nextMeta;
      for (const field of [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
      ]) {
        if (beforeMeta[field] === undefined) delete nextMeta[field];
        else nextMeta[field] = beforeMeta[field];
      }
      return this.write("update", resource, target.key, before, next);
    });
  }

  patchMetadata(
    resource: MemoryResource,
    ref: ResourceRef,
    patch: MetadataPatch,
  ): Either.Either<JsonObject, KubeError> {
    return this.mutation(() => {
      const target = locate(resource, ref);
      const before = this.lookup(resource, target.key);
      if (!before) return Either.left(kubeError("NotFound", "patch", resource, target.name));
      const next = structuredClone(before) as Draft;
      const meta = next.metadata as Draft;
      const current = Array.isArray(meta.finalizers) ? (meta.finalizers as Array<string>) : [];
      const finalizers = [
        ...current.filter((f) => !(patch.removeFinalizers ?? []).includes(f)),
        ...(patch.addFinalizers ?? []).filter((f) => !current.includes(f)),
      ];
      // Empty lists are omitted when served (omitempty), so drop the field.
      if (finalizers.length === 0) delete meta.finalizers;
      else meta.finalizers = [...finalizers];
      if (patch.annotations !== undefined) {
        const annotations: Draft = recordOf(meta.annotations) ?? {};
        for (const [key, value] of Object.entries(patch.annotations)) {
          if (value === null) delete annotations[key];
          else annotations[key] = value;
        }
        if (Object.keys(annotations).length === 0) delete meta.annotations;
        else meta.annotations = annotations;
      }
      return this.write("patch", resource, target.key, before, next);
    });
  }

  remove(resource: MemoryResource, ref: ResourceRef, now: number): Either.Either<void, KubeError> {
    return this.mutation(() => {
      const target = locate(resource, ref);
      const before = this.lookup(resource, target.key);
      if (!before) return Either.left(kubeError("NotFound", "delete", resource, target.name));
      if (isDeleting(before)) return Either.void;
      const next = structuredClone(before) as Draft;
      if (finalizersOf(before).length === 0) {
        this.commit(resource, target.key, "Deleted", before, next);
      } else {
        const meta = next.metadata as Draft;
        meta.deletionTimestamp = rfc3339(now);
        meta.deletionGracePeriodSeconds = 0;
        this.commit(resource, target.key, "Modified", before, next);
      }
      return Either.void;
    });
  }

  /** A controller's write: no preconditions, skipped when it changes nothing. */
  replace(resource: MemoryResource, key: string, next: Draft): void {
    const before = this.lookup(resource, key);
    if (before) this.write("update", resource, key, before, next);
  }

  private mutation<A>(body: () => Either.Either<A, KubeError>): Either.Either<A, KubeError> {
    const result = body();
    if (Either.isRight(result)) this.reactor?.settle();
    return result;
  }

  private write(
    verb: string,
    resource: MemoryResource,
    key: string,
    before: JsonObject,
    next: Draft,
  ): Either.Either<JsonObject, KubeError> {
    const meta = next.metadata as Draft;
    const name = stringOf(meta.name) ?? key;
    if (isDeleting(before)) {
      const old = new Set(finalizersOf(before));
      const added = finalizersOf(next).filter((f) => !old.has(f));
      if (added.length > 0) {
        const detail = `metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}`;
        return Either.left(kubeError("Invalid", verb, resource, name, detail));
      }
    }
    meta.resourceVersion = metadataOf(before).resourceVersion;
    // The API server does not bump resourceVersion or notify watchers for a write that changes nothing.
    if (jsonEqual(before, next)) return Either.right(before);
    if (isDeleting(next) && finalizersOf(next).length === 0) {
      return Either.right(this.commit(resource, key, "Deleted", before, next));
    }
    return Either.right(this.commit(resource, key, "Modified", before, next));
  }

  private commit(
    resource: MemoryResource,
    key: string,
    type: Change["type"],
    before: JsonObject | undefined,
    next: Draft,
  ): JsonObject {
    (next.metadata as Draft).resourceVersion = String(++this.lastResourceVersion);
    const after = deepFreeze(next);
    if (type === "Deleted") this.table(resource).delete(key);
    else this.table(resource).set(key, after);
    this.reactor?.observe({ resource, key, type, before, after });
    for (const watcher of this.watchers.get(resource) ?? []) watcher({ _tag: type, object: after });
    return after;
  }

  private uid(): string {
    this.lastUid += 1;
    return `00000000-0000-4000-8000-${this.lastUid.toString(16).padStart(12, "0")}`;
  }

  private suffix(): string {
    let n = this.lastSuffix++;
    let text = "";
    for (let i = 0; i < 5; i++) {
      text = suffixAlphabet[n % suffixAlphabet.length] + text;
      n = Math.floor(n / suffixAlphabet.length);
    }
    return text;
  }
}
