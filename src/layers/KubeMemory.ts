/**
 * An in-memory Kubernetes API server with a simulated PV controller, for tests and the demo. The
 * provisioner talks to it through `Kube`; a test drives it through the `MemoryCluster` handle.
 */
import {
  Clock,
  Context,
  Effect,
  Either,
  Layer,
  Option,
  ParseResult,
  Queue,
  Schema,
  Stream,
} from "effect";
import { NewEvent } from "../schemas/Event.js";
import { Lease } from "../schemas/Lease.js";
import { CsiNode, Node } from "../schemas/Node.js";
import { NewPersistentVolume, PersistentVolume } from "../schemas/PersistentVolume.js";
import { PersistentVolumeClaim } from "../schemas/PersistentVolumeClaim.js";
import { Secret } from "../schemas/Secret.js";
import {
  VolumeAttachment,
  VolumeAttributesClass,
  VolumeSnapshot,
  VolumeSnapshotContent,
} from "../schemas/Storage.js";
import { StorageClass } from "../schemas/StorageClass.js";
import {
  Kube,
  KubeError,
  type KubeErrorReason,
  KubeLeases,
  type KubeLeasesService,
  type KubeService,
  type MetadataPatch,
  type WatchEvent,
} from "./Kube.js";
import { makePvController } from "./KubeMemoryPvController.js";
import {
  type JsonObject,
  keyOf,
  kubeError,
  locate,
  type MemoryResource,
  MemoryStore,
  metadataOf,
  type RawWatchEvent,
  type ResourceRef,
  stringOf,
} from "./KubeMemoryStore.js";

export type { JsonObject, MemoryResource, ResourceRef } from "./KubeMemoryStore.js";
export { resources } from "./KubeMemoryStore.js";

export interface MemoryClusterOptions {
  /** Simulate kube-controller-manager's PV controller (default true). */
  readonly pvController?: boolean;
  /** Set only `volume.beta.kubernetes.io/storage-provisioner`, as Kubernetes 1.20–1.22 (default false). */
  readonly legacyProvisionerAnnotation?: boolean;
}

export type KubeVerb = "get" | "list" | "watch" | "create" | "update" | "patch" | "delete";

/**
 * Makes the next matching `Kube` service calls fail; `name`/`namespace` narrow the match (an
 * Event's `name` is its `generateName`).
 */
export interface FailureInjection {
  readonly verb: KubeVerb;
  readonly resource: MemoryResource;
  readonly name?: string;
  readonly namespace?: string;
  readonly reason: KubeErrorReason;
  /** Defaults to the API server's wording for `reason`. */
  readonly message?: string;
  /** How many matching calls fail (default 1). */
  readonly times?: number;
}

/**
 * The test's side of the cluster. Its own operations bypass failure injection and request counts:
 * only calls through `kube` and `leases` (the services) are what the provisioner would send.
 */
export interface MemoryClusterHandle {
  readonly kube: KubeService;
  readonly leases: KubeLeasesService;
  /** Stores a copy; fills uid, creationTimestamp, namespace `default`, apiVersion/kind when absent. */
  readonly create: (
    resource: MemoryResource,
    object: JsonObject,
  ) => Effect.Effect<JsonObject, KubeError>;
  /** Full replace, conditional when `metadata.resourceVersion` is set. */
  readonly update: (
    resource: MemoryResource,
    object: JsonObject,
  ) => Effect.Effect<JsonObject, KubeError>;
  readonly patchMetadata: (
    resource: MemoryResource,
    ref: ResourceRef,
    patch: MetadataPatch,
  ) => Effect.Effect<JsonObject, KubeError>;
  /** Deletes, or only marks deleting (deletionTimestamp) while finalizers remain. */
  readonly remove: (resource: MemoryResource, ref: ResourceRef) => Effect.Effect<void, KubeError>;
  readonly get: (
    resource: MemoryResource,
    ref: ResourceRef,
  ) => Effect.Effect<Option.Option<JsonObject>>;
  /** Sorted by namespace/name, as the API server lists. */
  readonly list: (resource: MemoryResource) => Effect.Effect<ReadonlyArray<JsonObject>>;
  /** Recorded Events in the order they were created. */
  readonly events: Effect.Effect<ReadonlyArray<JsonObject>>;
  /** Every open watch re-lists, as after a `410 Gone`. */
  readonly expireWatches: () => Effect.Effect<void>;
  readonly failNext: (injection: FailureInjection) => Effect.Effect<void>;
  /**
   * Service calls so far by `"<verb> <resource>"`, failed ones included. A watch counts one
   * `watch` when opened and one `list` per snapshot it emits (a relist is a list call).
   */
  readonly requestCounts: Effect.Effect<Readonly<Record<string, number>>>;
  readonly resetRequestCounts: Effect.Effect<void>;
}

export class MemoryCluster extends Context.Tag("csi-provisioner/MemoryCluster")<
  MemoryCluster,
  MemoryClusterHandle
>() {}

// Handed out copies are mutable so that a test may edit one and `update` it back.
const copy = (object: JsonObject): JsonObject => structuredClone(object) as JsonObject;

const describeRef = (object: JsonObject) => {
  const meta = metadataOf(object);
  return keyOf(stringOf(meta.namespace), stringOf(meta.name) ?? "<unnamed>");
};

export const makeMemoryCluster = (
  options: MemoryClusterOptions = {},
): Effect.Effect<MemoryClusterHandle> =>
  Effect.sync(() => {
    const store = new MemoryStore();
    if (options.pvController ?? true) {
      store.reactor = makePvController(store, {
        legacyProvisionerAnnotation: options.legacyProvisionerAnnotation ?? false,
      });
    }
    const injections: Array<FailureInjection & { remaining: number }> = [];
    const counts: Record<string, number> = {};
    const count = (verb: KubeVerb, resource: MemoryResource) => {
      const key = `${verb} ${resource}`;
      counts[key] = (counts[key] ?? 0) + 1;
    };

    /** Counts the call and fails it when an injection matches. */
    const request = (verb: KubeVerb, resource: MemoryResource, ref?: ResourceRef) =>
      Effect.suspend(() => {
        count(verb, resource);
        const target = ref === undefined ? undefined : locate(resource, ref);
        const index = injections.findIndex(
          (i) =>
            i.verb === verb &&
            i.resource === resource &&
            (i.name === undefined || i.name === target?.name) &&
            (i.namespace === undefined || i.namespace === target?.namespace),
        );
        const injection = injections[index];
        if (!injection) return Effect.void;
        injection.remaining -= 1;
        if (injection.remaining <= 0) injections.splice(index, 1);
        const name = target?.name ?? "";
        const { reason, message } = injection;
        const error = kubeError(reason, verb, resource, name);
        return Effect.fail(
          message === undefined
            ? error
            : new KubeError({ reason, verb, resource, object: name, message }),
        );
      });

    const decode = <A, I>(
      schema: Schema.Schema<A, I>,
      resource: MemoryResource,
      object: JsonObject,
      verb: KubeVerb = "get",
    ): Either.Either<A, KubeError> =>
      Schema.decodeUnknownEither(schema)(object).pipe(
        Either.mapLeft((error) =>
          kubeError(
            "Malformed",
            verb,
            resource,
            stringOf(metadataOf(object).name) ?? "",
            ParseResult.TreeFormatter.formatErrorSync(error),
          ),
        ),
      );

    /** Decodes or logs why the object is left out: one bad object must not stop a list or watch. */
    const decodeOrSkip = <A, I>(
      schema: Schema.Schema<A, I>,
      resource: MemoryResource,
      object: JsonObject,
    ): Effect.Effect<Option.Option<A>> =>
      Either.match(decode(schema, resource, object), {
        onRight: (value) => Effect.succeed(Option.some(value)),
        onLeft: (error) =>
          Effect.logWarning(
            `skipping malformed ${resource} "${describeRef(object)}": ${error.message}`,
          ).pipe(Effect.as(Option.none())),
      });

    const decodeAll = <A, I>(
      schema: Schema.Schema<A, I>,
      resource: MemoryResource,
      objects: ReadonlyArray<JsonObject>,
    ) =>
      Effect.forEach(objects, (object) => decodeOrSkip(schema, resource, object)).pipe(
        Effect.map((decoded) => decoded.flatMap(Option.toArray)),
      );

    const get =
      <A, I>(resource: MemoryResource, schema: Schema.Schema<A, I>) =>
      (ref: ResourceRef): Effect.Effect<Option.Option<A>, KubeError> =>
        request("get", resource, ref).pipe(
          Effect.flatMap(() => {
            const object = store.lookup(resource, locate(resource, ref).key);
            return object === undefined
              ? Effect.succeedNone
              : Effect.map(decode(schema, resource, object), Option.some);
          }),
        );

    const list = <A, I>(resource: MemoryResource, schema: Schema.Schema<A, I>) =>
      request("list", resource).pipe(
        Effect.flatMap(() => decodeAll(schema, resource, store.list(resource))),
      );

    const watch = <A, I>(
      resource: MemoryResource,
      schema: Schema.Schema<A, I>,
    ): Stream.Stream<WatchEvent<A>, KubeError> =>
      Stream.unwrapScoped(
        Effect.gen(function* () {
          yield* request("watch", resource);
          const queue = yield* Effect.acquireRelease(
            Queue.unbounded<RawWatchEvent>(),
            Queue.shutdown,
          );
          yield* Effect.acquireRelease(
            Effect.sync(() =>
              store.subscribe(resource, (event) => {
                if (event._tag === "Listed") count("list", resource);
                queue.unsafeOffer(event);
              }),
            ),
            (unsubscribe) => Effect.sync(unsubscribe),
          );
          return Stream.fromQueue(queue).pipe(
            Stream.mapEffect(
              (event): Effect.Effect<Option.Option<WatchEvent<A>>> =>
                event._tag === "Listed"
                  ? decodeAll(schema, resource, event.items).pipe(
                      Effect.map((items) => Option.some({ _tag: "Listed", items })),
                    )
                  : decodeOrSkip(schema, resource, event.object).pipe(
                      Effect.map(Option.map((object) => ({ _tag: event._tag, object }))),
                    ),
            ),
            Stream.filterMap((event) => event),
          );
        }),
      );

    const now = Clock.currentTimeMillis;

    const writeThen = <A, I>(
      schema: Schema.Schema<A, I>,
      resource: MemoryResource,
      verb: KubeVerb,
    ) => Effect.flatMap((object: JsonObject) => decode(schema, resource, object, verb));

    const kube: KubeService = {
      watchPersistentVolumeClaims: watch("persistentvolumeclaims", PersistentVolumeClaim),
      watchPersistentVolumes: watch("persistentvolumes", PersistentVolume),
      watchStorageClasses: watch("storageclasses", StorageClass),
      getPersistentVolumeClaim: get("persistentvolumeclaims", PersistentVolumeClaim),
      getPersistentVolume: get("persistentvolumes", PersistentVolume),
      getSecret: get("secrets", Secret),
      getNode: get("nodes", Node),
      listNodes: list("nodes", Node),
      getCsiNode: get("csinodes", CsiNode),
      listCsiNodes: list("csinodes", CsiNode),
      getVolumeSnapshot: get("volumesnapshots", VolumeSnapshot),
      getVolumeSnapshotContent: get("volumesnapshotcontents", VolumeSnapshotContent),
      getVolumeAttributesClass: get("volumeattributesclasses", VolumeAttributesClass),
      listVolumeAttachments: list("volumeattachments", VolumeAttachment),
      createPersistentVolume: (pv) =>
        request("create", "persistentvolumes", pv.metadata.name).pipe(
          Effect.zipRight(validate(NewPersistentVolume, "persistentvolumes", pv.metadata.name, pv)),
          Effect.zipWith(now, (encoded, millis) =>
            store.create("persistentvolumes", encoded, millis),
          ),
          Effect.flatten,
          writeThen(PersistentVolume, "persistentvolumes", "create"),
        ),
      patchPersistentVolume: (name, patch) =>
        request("patch", "persistentvolumes", name).pipe(
          Effect.zipRight(
            Effect.suspend(() => store.patchMetadata("persistentvolumes", name, patch)),
          ),
          writeThen(PersistentVolume, "persistentvolumes", "patch"),
        ),
      deletePersistentVolume: (name) =>
        request("delete", "persistentvolumes", name).pipe(
          Effect.zipRight(now),
          Effect.flatMap((millis) => store.remove("persistentvolumes", name, millis)),
        ),
      patchPersistentVolumeClaim: (ref, patch) =>
        request("patch", "persistentvolumeclaims", ref).pipe(
          Effect.zipRight(
            Effect.suspend(() => store.patchMetadata("persistentvolumeclaims", ref, patch)),
          ),
          writeThen(PersistentVolumeClaim, "persistentvolumeclaims", "patch"),
        ),
      createEvent: (event) =>
        request("create", "events", {
          namespace: event.metadata.namespace,
          name: event.metadata.generateName,
        }).pipe(
          Effect.zipRight(validate(NewEvent, "events", event.metadata.generateName, event)),
          Effect.zipWith(now, (encoded, millis) => store.create("events", encoded, millis)),
          Effect.flatten,
          Effect.asVoid,
        ),
    };

    const leaseRef = (lease: Lease) => ({
      namespace: lease.metadata.namespace,
      name: lease.metadata.name,
    });
    const leases: KubeLeasesService = {
      getLease: get("leases", Lease),
      createLease: (lease) =>
        request("create", "leases", leaseRef(lease)).pipe(
          Effect.zipRight(validate(Lease, "leases", lease.metadata.name, lease)),
          Effect.zipWith(now, (encoded, millis) => store.create("leases", encoded, millis)),
          Effect.flatten,
          writeThen(Lease, "leases", "create"),
        ),
      updateLease: (lease) =>
        request("update", "leases", leaseRef(lease)).pipe(
          Effect.zipRight(validate(Lease, "leases", lease.metadata.name, lease, "update")),
          Effect.flatMap((encoded) => store.update("leases", encoded)),
          writeThen(Lease, "leases", "update"),
        ),
    };

    return {
      kube,
      leases,
      create: (resource, object) =>
        Effect.flatMap(now, (millis) => store.create(resource, object, millis)).pipe(
          Effect.map(copy),
        ),
      update: (resource, object) =>
        Effect.suspend(() => store.update(resource, object)).pipe(Effect.map(copy)),
      patchMetadata: (resource, ref, patch) =>
        Effect.suspend(() => store.patchMetadata(resource, ref, patch)).pipe(Effect.map(copy)),
      remove: (resource, ref) =>
        Effect.flatMap(now, (millis) => store.remove(resource, ref, millis)),
      get: (resource, ref) =>
        Effect.sync(() =>
          Option.map(Option.fromNullable(store.lookup(resource, locate(resource, ref).key)), copy),
        ),
      list: (resource) => Effect.sync(() => store.list(resource).map(copy)),
      events: Effect.sync(() => store.inCreationOrder("events").map(copy)),
      expireWatches: () => Effect.sync(() => store.expireWatches()),
      failNext: (injection) =>
        Effect.sync(() => {
          injections.push({ ...injection, remaining: injection.times ?? 1 });
        }),
      requestCounts: Effect.sync(() => ({ ...counts })),
      resetRequestCounts: Effect.sync(() => {
        for (const key of Object.keys(counts)) delete counts[key];
      }),
    } satisfies MemoryClusterHandle;
  });

/** The write side checks what a real API server's validation would: a wrong shape is `Invalid`. */
const validate = <A, I>(
  schema: Schema.Schema<A, I>,
  resource: MemoryResource,
  name: string,
  value: A,
  verb: KubeVerb = "create",
): Effect.Effect<JsonObject, KubeError> =>
  Schema.encodeEither(schema)(value).pipe(
    Either.mapBoth({
      onLeft: (error) =>
        kubeError(
          "Invalid",
          verb,
          resource,
          name,
          ParseResult.TreeFormatter.formatErrorSync(error),
        ),
      onRight: (encoded) => encoded as JsonObject,
    }),
  );

export const layer = (cluster: MemoryClusterHandle): Layer.Layer<Kube | KubeLeases> =>
  Layer.succeedContext(
    Context.make(Kube, cluster.kube).pipe(Context.add(KubeLeases, cluster.leases)),
  );

/** `Kube` and `KubeLeases` backed by a fresh cluster, and the cluster's handle to drive it. */
export const layerWithCluster = (
  options?: MemoryClusterOptions,
): Layer.Layer<Kube | KubeLeases | MemoryCluster> =>
  Layer.effectContext(
    Effect.map(makeMemoryCluster(options), (cluster) =>
      Context.make(MemoryCluster, cluster).pipe(
        Context.add(Kube, cluster.kube),
        Context.add(KubeLeases, cluster.leases),
      ),
    ),
  );
