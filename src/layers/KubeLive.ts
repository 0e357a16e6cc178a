import {
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  type ParseResult,
  Queue,
  Schedule,
  Schema,
  Stream,
} from "effect";
import { decodeUnknownEither } from "../schemas/Decode.js";
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
import { Config } from "./Config.js";
import {
  Kube,
  KubeError,
  KubeLeases,
  type KubeLeasesService,
  type KubeService,
  type MetadataPatch,
  type ObjectRef,
  type WatchEvent,
} from "./Kube.js";
import { type KubeConnection, type KubeRest, makeKubeRest } from "./KubeHttp.js";

/** Where a resource lives in the API, and the schema its objects decode with. */
interface Resource<A> {
  readonly name: string;
  readonly group: string;
  readonly namespaced: boolean;
  /** Built once per resource: every watch event of it goes through this. */
  readonly decode: (raw: unknown) => Either.Either<A, ParseResult.ParseError>;
}

const resource = <A, I>(
  name: string,
  group: string,
  namespaced: boolean,
  schema: Schema.Schema<A, I>,
): Resource<A> => ({
  name,
  group,
  namespaced,
  decode: decodeUnknownEither(schema),
});

const claims = resource("persistentvolumeclaims", "/api/v1", true, PersistentVolumeClaim);
const volumes = resource("persistentvolumes", "/api/v1", false, PersistentVolume);
const classes = resource("storageclasses", "/apis/storage.k8s.io/v1", false, StorageClass);
const secrets = resource("secrets", "/api/v1", true, Secret);
const nodes = resource("nodes", "/api/v1", false, Node);
const csiNodes = resource("csinodes", "/apis/storage.k8s.io/v1", false, CsiNode);
const snapshots = resource(
  "volumesnapshots",
  "/apis/snapshot.storage.k8s.io/v1",
  true,
  VolumeSnapshot,
);
const snapshotContents = resource(
  "volumesnapshotcontents",
  "/apis/snapshot.storage.k8s.io/v1",
  false,
  VolumeSnapshotContent,
);
const attachments = resource(
  "volumeattachments",
  "/apis/storage.k8s.io/v1",
  false,
  VolumeAttachment,
);

const pathOf = (
  r: { readonly group: string; readonly name: string; readonly namespaced: boolean },
  ref?: { namespace?: string; name?: string },
) =>
  `${r.group}${r.namespaced && ref?.namespace ? `/namespaces/${encodeURIComponent(ref.namespace)}` : ""}/${r.name}${
    ref?.name ? `/${encodeURIComponent(ref.name)}` : ""
  }`;

const describeObject = (raw: unknown) => {
  const meta = (raw as { metadata?: { namespace?: string; name?: string } } | undefined)?.metadata;
  return `${meta?.namespace ? `${meta.namespace}/` : ""}${meta?.name ?? "<unnamed>"}`;
};

const decodeOne = <A>(r: Resource<A>, raw: unknown) =>
  Either.mapLeft(
    r.decode(raw),
    (error) =>
      new KubeError({
        reason: "Malformed",
        verb: "decode",
        resource: r.name,
        object: describeObject(raw),
        message: `${r.name} ${describeObject(raw)} does not decode: ${error.message}`,
      }),
  );

const pageSize = 500;
const watchSeconds = 300;
const watchBackoff = Schedule.exponential(Duration.seconds(1)).pipe(
  Schedule.union(Schedule.spaced(Duration.seconds(30))),
);

/** One object, decoded; a missing one is `None`. */
const getObject = <A>(rest: KubeRest, r: Resource<A>, ref: { namespace?: string; name: string }) =>
  rest
    .request({
      method: "GET",
      path: pathOf(r, ref),
      verb: "get",
      resource: r.name,
      object: ref.name,
    })
    .pipe(
      Effect.flatMap((response) => decodeOne(r, response.body)),
      Effect.map(Option.some),
      Effect.catchIf(
        (e) => e.reason === "NotFound",
        () => Effect.succeed(Option.none<A>()),
      ),
    );

export const makeKubeService = (rest: KubeRest): KubeService => {
  const get = <A>(r: Resource<A>, ref: { namespace?: string; name: string }) =>
    getObject(rest, r, ref);

  /** Lists in pages; returns decoded items (malformed ones logged and skipped) and the list's version. */
  const list = <A>(r: Resource<A>) =>
    Effect.gen(function* () {
      const items: Array<A> = [];
      let next: string | undefined;
      let resourceVersion = "";
      do {
        const query = `?limit=${pageSize}${next ? `&continue=${encodeURIComponent(next)}` : ""}`;
        const response = yield* rest.request({
          method: "GET",
          path: `${pathOf(r)}${query}`,
          verb: "list",
          resource: r.name,
          object: "",
        });
        const body = response.body as {
          items?: Array<unknown>;
          metadata?: { continue?: string; resourceVersion?: string };
        };
        for (const raw of body.items ?? []) {
          const decoded = decodeOne(r, raw);
          if (Either.isRight(decoded)) items.push(decoded.right);
          else yield* Effect.logWarning(decoded.left.message);
        }
        next = body.metadata?.continue || undefined;
        resourceVersion = body.metadata?.resourceVersion ?? "";
      } while (next);
      return { items, resourceVersion };
    });

  /**
   * List, then watch from the list's version with bookmarks; a watch that ends is resumed from the
   * last version seen, an expired version (410) relists, any other failure retries with backoff.
   * The stream never ends by itself.
   */
  const listWatch = <A>(r: Resource<A>): Stream.Stream<WatchEvent<A>, KubeError> =>
    // Pushed from the socket's callback: an unbounded asyncPush costs a third of what
    // Stream.fromQueue did per pull, and events mostly arrive one per pull.
    Stream.asyncPush<WatchEvent<A>, KubeError>((emit) =>
      Effect.gen(function* () {
        // Warnings found in the socket callback are logged by a fiber of ours, with our logger.
        const warnings = yield* Queue.unbounded<string>();
        yield* Queue.take(warnings).pipe(
          Effect.flatMap(Effect.logWarning),
          Effect.forever,
          Effect.forkScoped,
        );
        const session = Effect.gen(function* () {
          const listed = yield* list(r);
          emit.single({ _tag: "Listed", items: listed.items });
          let resourceVersion = listed.resourceVersion;
          let failures = 0;
          for (;;) {
            let expired = false;
            const path = `${pathOf(r)}?watch=1&allowWatchBookmarks=true&resourceVersion=${encodeURIComponent(resourceVersion)}&timeoutSeconds=${watchSeconds}`;
            const watched = yield* rest
              .watch(path, (line) => {
                const object = line.object as {
                  metadata?: { resourceVersion?: string };
                  code?: number;
                };
                if (line.type === "ERROR") {
                  expired = object?.code === 410;
                  if (!expired) {
                    warnings.unsafeOffer(
                      `watch of ${r.name} reported an error: ${JSON.stringify(object)}`,
                    );
                  }
                  return;
                }
                if (object?.metadata?.resourceVersion)
                  resourceVersion = object.metadata.resourceVersion;
                if (line.type === "BOOKMARK") return;
                const decoded = decodeOne(r, object);
                if (Either.isLeft(decoded)) {
                  warnings.unsafeOffer(decoded.left.message);
                  return;
                }
                const tag =
                  line.type === "ADDED"
                    ? "Added"
                    : line.type === "DELETED"
                      ? "Deleted"
                      : "Modified";
                emit.single({ _tag: tag, object: decoded.right });
              })
              .pipe(Effect.either);
            if (watched._tag === "Left" && watched.left.reason !== "Gone") {
              // Resume from the last version seen, as client-go's reflector does: only an expired
              // version (410) or a failed list costs a relist.
              failures += 1;
              yield* Effect.logWarning(
                `watch of ${r.name} failed, resuming: ${watched.left.message}`,
              );
              yield* Effect.sleep(
                Duration.millis(Math.min(30_000, 1000 * 2 ** Math.min(failures - 1, 5))),
              );
              continue;
            }
            failures = 0;
            if (expired || watched._tag === "Left")
              return yield* new KubeError({
                reason: "Gone",
                verb: "watch",
                resource: r.name,
                object: "",
                message: "too old resource version",
              });
          }
        });
        yield* session.pipe(
          Effect.tapError((e) =>
            e.reason === "Gone"
              ? Effect.logDebug(`watch of ${r.name} expired, relisting`)
              : Effect.logWarning(`list+watch of ${r.name} failed, retrying: ${e.message}`),
          ),
          // A 410 relists at once; anything else waits its backoff first.
          Effect.retry({ while: (e) => e.reason === "Gone" }),
          Effect.retry(watchBackoff),
          Effect.forkScoped,
        );
      }),
    );

  const listAll = <A>(r: Resource<A>) => Effect.map(list(r), (l) => l.items as ReadonlyArray<A>);

  /**
   * Metadata changes: finalizers go as a strategic merge patch (ObjectMeta.finalizers merges),
   * annotations alone as a JSON merge patch; neither touches anything else.
   */
  const patch = <A>(
    r: Resource<A>,
    ref: { namespace?: string; name: string },
    change: MetadataPatch,
  ) => {
    const { addFinalizers, removeFinalizers, annotations } = change;
    const strategic = addFinalizers !== undefined || removeFinalizers !== undefined;
    const metadata = {
      ...(annotations ? { annotations } : {}),
      ...(addFinalizers ? { finalizers: addFinalizers } : {}),
      ...(removeFinalizers ? { "$deleteFromPrimitiveList/finalizers": removeFinalizers } : {}),
    };
    return rest
      .request({
        method: "PATCH",
        path: pathOf(r, ref),
        body: { metadata },
        contentType: strategic
          ? "application/strategic-merge-patch+json"
          : "application/merge-patch+json",
        verb: "patch",
        resource: r.name,
        object: ref.name,
      })
      .pipe(Effect.flatMap((response) => decodeOne(r, response.body)));
  };

  const vacPaths = ["/apis/storage.k8s.io/v1", "/apis/storage.k8s.io/v1beta1"];

  return {
    watchPersistentVolumeClaims: listWatch(claims),
    watchPersistentVolumes: listWatch(volumes),
    watchStorageClasses: listWatch(classes),
    getPersistentVolumeClaim: (ref: ObjectRef) => get(claims, ref),
    getPersistentVolume: (name) => get(volumes, { name }),
    getSecret: (ref) => get(secrets, ref),
    getNode: (name) => get(nodes, { name }),
    listNodes: listAll(nodes),
    getCsiNode: (name) => get(csiNodes, { name }),
    listCsiNodes: listAll(csiNodes),
    getVolumeSnapshot: (ref) => get(snapshots, ref),
    getVolumeSnapshotContent: (name) => get(snapshotContents, { name }),
    // VolumeAttributesClass is storage.k8s.io/v1 from Kubernetes 1.34, v1beta1 before.
    getVolumeAttributesClass: (name) =>
      Effect.gen(function* () {
        for (const group of vacPaths) {
          const found = yield* get(
            resource("volumeattributesclasses", group, false, VolumeAttributesClass),
            { name },
          );
          if (Option.isSome(found)) return found;
        }
        return Option.none();
      }),
    listVolumeAttachments: listAll(attachments),
    createPersistentVolume: (pv) =>
      Effect.gen(function* () {
        const body = yield* Schema.encode(NewPersistentVolume)(pv).pipe(
          Effect.mapError(
            (e) =>
              new KubeError({
                reason: "Invalid",
                verb: "create",
                resource: "persistentvolumes",
                object: pv.metadata.name,
                message: e.message,
              }),
          ),
        );
        const response = yield* rest.request({
          method: "POST",
          path: pathOf(volumes),
          body,
          verb: "create",
          resource: "persistentvolumes",
          object: pv.metadata.name,
        });
        return yield* decodeOne(volumes, response.body);
      }),
    patchPersistentVolume: (name, change) => patch(volumes, { name }, change),
    deletePersistentVolume: (name) =>
      rest
        .request({
          method: "DELETE",
          path: pathOf(volumes, { name }),
          verb: "delete",
          resource: "persistentvolumes",
          object: name,
          discardBody: true,
        })
        .pipe(Effect.asVoid),
    patchPersistentVolumeClaim: (ref, change) => patch(claims, ref, change),
    createEvent: (event) =>
      Effect.gen(function* () {
        const body = yield* Schema.encode(NewEvent)(event).pipe(
          Effect.mapError(
            (e) =>
              new KubeError({
                reason: "Invalid",
                verb: "create",
                resource: "events",
                object: event.involvedObject.name,
                message: e.message,
              }),
          ),
        );
        yield* rest.request({
          method: "POST",
          path: `/api/v1/namespaces/${encodeURIComponent(event.metadata.namespace)}/events`,
          body,
          verb: "create",
          resource: "events",
          object: event.involvedObject.name,
          discardBody: true,
        });
      }),
  };
};

export const connectionFrom = (config: {
  readonly kubeconfig: string;
  readonly master: string;
  readonly kubeApiQps: number;
  readonly kubeApiBurst: number;
  readonly disableHttp2: boolean;
}): KubeConnection => ({
  kubeconfig: config.kubeconfig,
  master: config.master,
  qps: config.kubeApiQps,
  burst: config.kubeApiBurst,
  disableHttp2: config.disableHttp2,
});

/** `Kube` against a real API server, configured by `--kubeconfig`/`--master` or in-cluster. */
export const layer = Layer.scoped(
  Kube,
  Effect.gen(function* () {
    const config = yield* Config;
    const rest = yield* makeKubeRest(connectionFrom(config));
    return makeKubeService(rest);
  }),
);

const leases = resource("leases", "/apis/coordination.k8s.io/v1", true, Lease);

const leaseBody = (lease: Lease) => ({
  apiVersion: "coordination.k8s.io/v1",
  kind: "Lease",
  ...lease,
});

export const makeLeaseService = (rest: KubeRest): KubeLeasesService => ({
  getLease: (ref) => getObject(rest, leases, ref),
  createLease: (lease) =>
    rest
      .request({
        method: "POST",
        path: pathOf(leases, { namespace: lease.metadata.namespace }),
        body: leaseBody(lease),
        verb: "create",
        resource: "leases",
        object: lease.metadata.name,
      })
      .pipe(Effect.flatMap((response) => decodeOne(leases, response.body))),
  updateLease: (lease) =>
    rest
      .request({
        method: "PUT",
        path: pathOf(leases, lease.metadata),
        body: leaseBody(lease),
        verb: "update",
        resource: "leases",
        object: lease.metadata.name,
      })
      .pipe(Effect.flatMap((response) => decodeOne(leases, response.body))),
});

/**
 * Leases over their own connection and request budget, as upstream gives leader election its own
 * client: a provisioning storm must never queue a renewal behind PVC traffic.
 */
export const leasesLayer = Layer.scoped(
  KubeLeases,
  Effect.gen(function* () {
    const config = yield* Config;
    const rest = yield* makeKubeRest({ ...connectionFrom(config), qps: 5, burst: 10 });
    return makeLeaseService(rest);
  }),
);
