import { describe, expect, it } from "@effect/vitest";
import { Effect, Either, Logger, LogLevel, Option, Queue, Stream, TestClock } from "effect";
import { Kube, KubeLeases, type WatchEvent } from "../src/layers/Kube.js";
import * as KubeMemory from "../src/layers/KubeMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import type { NewPersistentVolume } from "../src/schemas/PersistentVolume.js";

const driver = "csi.example.com";
const uid = (n: number) => `00000000-0000-4000-8000-${n.toString(16).padStart(12, "0")}`;

const withCluster = (options?: KubeMemory.MemoryClusterOptions) =>
  Effect.provide(KubeMemory.layerWithCluster(options));
const noController = withCluster({ pvController: false });

const claim = (
  name: string,
  options: {
    readonly className?: string;
    readonly annotations?: Record<string, string>;
    readonly finalizers?: ReadonlyArray<string>;
  } = {},
) => ({
  apiVersion: "v1",
  kind: "PersistentVolumeClaim",
  metadata: {
    name,
    namespace: "ns",
    ...(options.annotations ? { annotations: options.annotations } : {}),
    ...(options.finalizers ? { finalizers: options.finalizers } : {}),
  },
  spec: {
    accessModes: ["ReadWriteOnce"],
    resources: { requests: { storage: "1Gi" } },
    storageClassName: options.className ?? "fast",
  },
});

const storageClass = (name: string, extra: Record<string, unknown> = {}) => ({
  metadata: { name },
  provisioner: driver,
  reclaimPolicy: "Delete",
  ...extra,
});

const newPv = (name: string, claimName: string, claimUid: string): NewPersistentVolume => ({
  apiVersion: "v1",
  kind: "PersistentVolume",
  metadata: { name, annotations: { "pv.kubernetes.io/provisioned-by": driver } },
  spec: {
    accessModes: ["ReadWriteOnce"],
    capacity: { storage: "1Gi" },
    claimRef: {
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      name: claimName,
      namespace: "ns",
      uid: claimUid,
    },
    csi: { driver, volumeHandle: `handle-${name}`, volumeAttributes: {} },
    persistentVolumeReclaimPolicy: "Delete",
    storageClassName: "fast",
  },
});

const raw = (
  cluster: KubeMemory.MemoryClusterHandle,
  resource: KubeMemory.MemoryResource,
  ref: string,
) => cluster.get(resource, ref).pipe(Effect.map(Option.getOrUndefined));

/** Reads a nested field of a raw object, `undefined` when any step is missing. */
const at = (object: unknown, ...path: ReadonlyArray<string>): unknown =>
  path.reduce<unknown>(
    (value, key) =>
      typeof value === "object" && value !== null
        ? (value as Record<string, unknown>)[key]
        : undefined,
    object,
  );

/** One line per watch event, so a whole sequence is asserted at once. */
const summary = (
  event: WatchEvent<{
    readonly metadata: { readonly name: string; readonly resourceVersion?: string | undefined };
  }>,
) =>
  event._tag === "Listed"
    ? `Listed ${event.items.map((i) => i.metadata.name).join(",")}`
    : `${event._tag} ${event.object.metadata.name}@${event.object.metadata.resourceVersion}`;

/** Opens the claim watch in the background and waits for its first snapshot. */
const openClaimWatch = Effect.gen(function* () {
  const kube = yield* Kube;
  const received = yield* Queue.unbounded<string>();
  yield* kube.watchPersistentVolumeClaims.pipe(
    Stream.runForEach((event) => Queue.offer(received, summary(event))),
    Effect.fork,
  );
  const first = yield* Queue.take(received);
  return { first, next: (n: number) => Effect.replicateEffect(Queue.take(received), n) };
});

describe("KubeMemory objects", () => {
  it.effect(
    "create fills server fields; get, AlreadyExists and NotFound read as the API server's",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const kube = yield* Kube;
        yield* TestClock.adjust("90 seconds");
        const created = yield* cluster.create("persistentvolumeclaims", claim("data"));
        expect(created).toEqual({
          ...claim("data"),
          metadata: {
            name: "data",
            namespace: "ns",
            uid: uid(1),
            resourceVersion: "1",
            creationTimestamp: "1970-01-01T00:01:30Z",
          },
          status: { phase: "Pending" },
        });
        expect(yield* kube.getPersistentVolumeClaim({ namespace: "ns", name: "data" })).toEqual(
          Option.some({
            metadata: { name: "data", namespace: "ns", uid: uid(1), resourceVersion: "1" },
            spec: {
              accessModes: ["ReadWriteOnce"],
              resources: { requests: { storage: "1Gi" } },
              storageClassName: "fast",
            },
            status: { phase: "Pending" },
          }),
        );
        const duplicate = yield* Effect.flip(
          cluster.create("persistentvolumeclaims", claim("data")),
        );
        expect([duplicate.reason, duplicate.verb, duplicate.message]).toEqual([
          "AlreadyExists",
          "create",
          'persistentvolumeclaims "data" already exists',
        ]);
        expect(yield* kube.getPersistentVolumeClaim({ namespace: "other", name: "data" })).toEqual(
          Option.none(),
        );
        expect(yield* kube.getPersistentVolume("missing")).toEqual(Option.none());
        const patchMissing = yield* Effect.flip(kube.patchPersistentVolume("missing", {}));
        expect([patchMissing.reason, patchMissing.message]).toEqual([
          "NotFound",
          'persistentvolumes "missing" not found',
        ]);
        const deleteMissing = yield* Effect.flip(kube.deletePersistentVolume("missing"));
        expect(deleteMissing.reason).toBe("NotFound");
        const groupMissing = yield* Effect.flip(cluster.remove("storageclasses", "fast"));
        expect(groupMissing.message).toBe('storageclasses.storage.k8s.io "fast" not found');
      }).pipe(noController),
  );

  it.effect("every write bumps the global resourceVersion; a stale one is a Conflict", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const kube = yield* Kube;
      const ref = { namespace: "ns", name: "data" };
      yield* cluster.create(
        "persistentvolumeclaims",
        claim("data", { annotations: { a: "1", b: "2" } }),
      );
      yield* cluster.create("storageclasses", storageClass("fast"));
      const patched = yield* kube.patchPersistentVolumeClaim(ref, {
        annotations: { a: null, c: "3" },
        addFinalizers: ["x"],
      });
      expect(patched.metadata).toEqual({
        name: "data",
        namespace: "ns",
        uid: uid(1),
        resourceVersion: "3",
        annotations: { b: "2", c: "3" },
        finalizers: ["x"],
      });
      // A write that changes nothing is not a write: no new resourceVersion.
      const same = yield* kube.patchPersistentVolumeClaim(ref, { annotations: { b: "2" } });
      expect(same.metadata.resourceVersion).toBe("3");
      const current = yield* raw(cluster, "persistentvolumeclaims", "ns/data");
      const updated = yield* cluster.update("persistentvolumeclaims", {
        ...current,
        spec: { volumeName: "pv-1" },
      });
      expect(updated.metadata).toMatchObject({ resourceVersion: "4", uid: uid(1) });
      const stale = yield* Effect.flip(cluster.update("persistentvolumeclaims", current ?? {}));
      expect([stale.reason, stale.verb, stale.message]).toEqual([
        "Conflict",
        "update",
        'Operation cannot be fulfilled on persistentvolumeclaims "data": the object has been modified; please apply your changes to the latest version and try again',
      ]);
    }).pipe(noController),
  );

  it.effect(
    "delete with finalizers only marks the object; the last finalizer's removal deletes it",
    () =>
      Effect.gen(function* () {
        const cluster = yield* MemoryCluster;
        const kube = yield* Kube;
        const ref = { namespace: "ns", name: "data" };
        const watch = yield* openClaimWatch;
        yield* cluster.create("persistentvolumeclaims", claim("data", { finalizers: ["a", "b"] }));
        yield* TestClock.adjust("5 seconds");
        yield* cluster.remove("persistentvolumeclaims", ref);
        yield* cluster.remove("persistentvolumeclaims", ref);
        expect(Option.map(yield* kube.getPersistentVolumeClaim(ref), (c) => c.metadata)).toEqual(
          Option.some({
            name: "data",
            namespace: "ns",
            uid: uid(1),
            resourceVersion: "2",
            finalizers: ["a", "b"],
            deletionTimestamp: "1970-01-01T00:00:05Z",
          }),
        );
        const added = yield* Effect.flip(
          kube.patchPersistentVolumeClaim(ref, { addFinalizers: ["c"] }),
        );
        expect([added.reason, added.message]).toEqual([
          "Invalid",
          'PersistentVolumeClaim "data" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ["c"]',
        ]);
        yield* kube.patchPersistentVolumeClaim(ref, { removeFinalizers: ["a"] });
        const last = yield* kube.patchPersistentVolumeClaim(ref, { removeFinalizers: ["b"] });
        expect(last.metadata.resourceVersion).toBe("4");
        expect(yield* kube.getPersistentVolumeClaim(ref)).toEqual(Option.none());
        expect(yield* watch.next(4)).toEqual([
          "Added data@1",
          "Modified data@2",
          "Modified data@3",
          "Deleted data@4",
        ]);
      }).pipe(noController),
  );
});

describe("KubeMemory watches", () => {
  it.effect("emit a snapshot, then every later change once and in order", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("persistentvolumeclaims", claim("b"));
      yield* cluster.create("persistentvolumeclaims", {
        ...claim("a"),
        metadata: { name: "a", namespace: "aa" },
      });
      const watch = yield* openClaimWatch;
      expect(watch.first).toBe("Listed a,b");
      yield* cluster.create("persistentvolumeclaims", claim("c"));
      yield* cluster.patchMetadata("persistentvolumeclaims", "ns/b", { annotations: { x: "y" } });
      yield* cluster.remove("persistentvolumeclaims", "ns/c");
      yield* cluster.create("persistentvolumeclaims", claim("marker"));
      expect(yield* watch.next(4)).toEqual([
        "Added c@3",
        "Modified b@4",
        "Deleted c@5",
        "Added marker@6",
      ]);
    }).pipe(noController),
  );

  it.effect("expireWatches makes every open watch relist", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const kube = yield* Kube;
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      const watch = yield* openClaimWatch;
      yield* cluster.create("persistentvolumeclaims", claim("b"));
      yield* cluster.expireWatches();
      yield* cluster.remove("persistentvolumeclaims", "ns/a");
      expect(yield* watch.next(3)).toEqual(["Added b@2", "Listed a,b", "Deleted a@3"]);
      const classes = yield* kube.watchStorageClasses.pipe(Stream.take(1), Stream.runCollect);
      expect([...classes]).toEqual([{ _tag: "Listed", items: [] }]);
      expect(yield* cluster.requestCounts).toEqual({
        "watch persistentvolumeclaims": 1,
        "list persistentvolumeclaims": 2,
        "watch storageclasses": 1,
        "list storageclasses": 1,
      });
    }).pipe(noController),
  );

  it.effect("skip malformed objects with a warning; get reports them as Malformed", () => {
    const warnings: Array<string> = [];
    const logger = Logger.make(({ logLevel, message }) => {
      if (logLevel === LogLevel.Warning) {
        warnings.push(Array.isArray(message) ? message.join(" ") : String(message));
      }
    });
    return Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const kube = yield* Kube;
      yield* cluster.create("persistentvolumeclaims", claim("good"));
      yield* cluster.create("persistentvolumeclaims", {
        metadata: { name: "bad", namespace: "ns" },
        spec: { accessModes: "ReadWriteOnce" },
      });
      const watch = yield* openClaimWatch;
      expect(watch.first).toBe("Listed good");
      yield* cluster.patchMetadata("persistentvolumeclaims", "ns/bad", { annotations: { a: "b" } });
      yield* cluster.patchMetadata("persistentvolumeclaims", "ns/good", {
        annotations: { a: "b" },
      });
      expect(yield* watch.next(1)).toEqual(["Modified good@4"]);
      expect(warnings).toHaveLength(2);
      expect(warnings[0]).toMatch(/^skipping malformed persistentvolumeclaims "ns\/bad": /);
      const error = yield* Effect.flip(
        kube.getPersistentVolumeClaim({ namespace: "ns", name: "bad" }),
      );
      expect([error.reason, error.verb, error.object]).toEqual(["Malformed", "get", "bad"]);
      expect(error.message).toContain('persistentvolumeclaims "bad" could not be decoded');

      yield* cluster.create("nodes", { metadata: { name: "node-1", labels: { zone: "a" } } });
      yield* cluster.create("nodes", { metadata: { name: "node-2", labels: { zone: 1 } } });
      expect(yield* kube.listNodes).toEqual([
        { metadata: { name: "node-1", labels: { zone: "a" } } },
      ]);
      expect(warnings).toHaveLength(3);
    }).pipe(noController, Effect.provide(Logger.replace(Logger.defaultLogger, logger)));
  });
});

describe("KubeMemory PV controller", () => {
  const annotationsOf = (cluster: KubeMemory.MemoryClusterHandle, name: string) =>
    raw(cluster, "persistentvolumeclaims", `ns/${name}`).pipe(
      Effect.map((object) => at(object, "metadata", "annotations")),
    );

  it.effect("announces the class's provisioner on pending claims", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("persistentvolumeclaims", claim("early"));
      expect(yield* annotationsOf(cluster, "early")).toBeUndefined();
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* cluster.create("storageclasses", {
        ...storageClass("other"),
        provisioner: "other.io",
      });
      yield* cluster.create(
        "persistentvolumeclaims",
        claim("beta", { annotations: { "volume.beta.kubernetes.io/storage-class": "other" } }),
      );
      expect(yield* annotationsOf(cluster, "early")).toEqual({
        "volume.beta.kubernetes.io/storage-provisioner": driver,
        "volume.kubernetes.io/storage-provisioner": driver,
      });
      expect(yield* annotationsOf(cluster, "beta")).toEqual({
        "volume.beta.kubernetes.io/storage-class": "other",
        "volume.beta.kubernetes.io/storage-provisioner": "other.io",
        "volume.kubernetes.io/storage-provisioner": "other.io",
      });
    }).pipe(withCluster()),
  );

  it.effect("sets only the beta annotation in legacy mode", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* cluster.create("persistentvolumeclaims", claim("data"));
      expect(yield* annotationsOf(cluster, "data")).toEqual({
        "volume.beta.kubernetes.io/storage-provisioner": driver,
      });
    }).pipe(withCluster({ legacyProvisionerAnnotation: true })),
  );

  it.effect("waits for a selected node with WaitForFirstConsumer", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      yield* cluster.create(
        "storageclasses",
        storageClass("fast", { volumeBindingMode: "WaitForFirstConsumer" }),
      );
      yield* cluster.create("persistentvolumeclaims", claim("data"));
      expect(yield* annotationsOf(cluster, "data")).toBeUndefined();
      yield* cluster.patchMetadata("persistentvolumeclaims", "ns/data", {
        annotations: { "volume.kubernetes.io/selected-node": "" },
      });
      expect(yield* annotationsOf(cluster, "data")).toEqual({
        "volume.kubernetes.io/selected-node": "",
      });
      yield* cluster.patchMetadata("persistentvolumeclaims", "ns/data", {
        annotations: { "volume.kubernetes.io/selected-node": "node-1" },
      });
      expect(yield* annotationsOf(cluster, "data")).toEqual({
        "volume.kubernetes.io/selected-node": "node-1",
        "volume.beta.kubernetes.io/storage-provisioner": driver,
        "volume.kubernetes.io/storage-provisioner": driver,
      });
    }).pipe(withCluster()),
  );

  it.effect("binds a PV to its claim on both sides, then releases it when the claim goes", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const kube = yield* Kube;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* cluster.create("persistentvolumeclaims", claim("data", { finalizers: ["keep"] }));
      yield* cluster.create("persistentvolumes", {
        metadata: { name: "static" },
        spec: { capacity: { storage: "5Gi" } },
      });
      expect(yield* raw(cluster, "persistentvolumes", "static")).toMatchObject({
        metadata: { resourceVersion: "5" },
        status: { phase: "Available" },
      });
      const watch = yield* openClaimWatch;

      const created = yield* kube.createPersistentVolume(newPv("pvc-1", "data", uid(2)));
      expect(created).toEqual({
        metadata: {
          name: "pvc-1",
          uid: uid(4),
          resourceVersion: "6",
          annotations: { "pv.kubernetes.io/provisioned-by": driver },
        },
        spec: {
          persistentVolumeReclaimPolicy: "Delete",
          storageClassName: "fast",
          claimRef: { name: "data", namespace: "ns", uid: uid(2) },
          csi: { driver, volumeHandle: "handle-pvc-1" },
        },
        status: { phase: "Pending" },
      });
      expect(yield* raw(cluster, "persistentvolumes", "pvc-1")).toMatchObject({
        metadata: { resourceVersion: "7" },
        status: { phase: "Bound" },
      });
      expect(yield* raw(cluster, "persistentvolumeclaims", "ns/data")).toEqual({
        ...claim("data"),
        metadata: {
          name: "data",
          namespace: "ns",
          uid: uid(2),
          resourceVersion: "9",
          creationTimestamp: "1970-01-01T00:00:00Z",
          finalizers: ["keep"],
          annotations: {
            "volume.beta.kubernetes.io/storage-provisioner": driver,
            "volume.kubernetes.io/storage-provisioner": driver,
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
          },
        },
        spec: { ...claim("data").spec, volumeName: "pvc-1" },
        status: { phase: "Bound", capacity: { storage: "1Gi" }, accessModes: ["ReadWriteOnce"] },
      });

      yield* cluster.remove("persistentvolumeclaims", "ns/data");
      const phase = raw(cluster, "persistentvolumes", "pvc-1").pipe(
        Effect.map((pv) => at(pv, "status", "phase")),
      );
      expect(yield* phase).toBe("Bound");
      yield* cluster.patchMetadata("persistentvolumeclaims", "ns/data", {
        removeFinalizers: ["keep"],
      });
      expect(yield* phase).toBe("Released");
      expect(yield* watch.next(4)).toEqual([
        "Modified data@8",
        "Modified data@9",
        "Modified data@10",
        "Deleted data@11",
      ]);
    }).pipe(withCluster()),
  );

  it.effect("releases at once a PV whose claim is gone or was replaced", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const kube = yield* Kube;
      yield* cluster.create("persistentvolumeclaims", claim("data"));
      yield* kube.createPersistentVolume(newPv("pvc-gone", "gone", uid(99)));
      yield* kube.createPersistentVolume(newPv("pvc-replaced", "data", uid(99)));
      for (const name of ["pvc-gone", "pvc-replaced"]) {
        expect(yield* raw(cluster, "persistentvolumes", name)).toMatchObject({
          status: { phase: "Released" },
        });
      }
      const data = yield* raw(cluster, "persistentvolumeclaims", "ns/data");
      expect([at(data, "status", "phase"), at(data, "spec", "volumeName")]).toEqual([
        "Pending",
        undefined,
      ]);
    }).pipe(withCluster()),
  );

  it.effect("marks a bound claim Lost when its PV disappears", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const kube = yield* Kube;
      yield* cluster.create("persistentvolumeclaims", claim("data"));
      yield* kube.createPersistentVolume(newPv("pvc-1", "data", uid(1)));
      const phase = raw(cluster, "persistentvolumeclaims", "ns/data").pipe(
        Effect.map((data) => at(data, "status", "phase")),
      );
      expect(yield* phase).toBe("Bound");
      yield* kube.deletePersistentVolume("pvc-1");
      expect(yield* phase).toBe("Lost");
    }).pipe(withCluster()),
  );

  it.effect("does nothing when turned off", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const kube = yield* Kube;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* cluster.create("persistentvolumeclaims", claim("data"));
      yield* kube.createPersistentVolume(newPv("pvc-1", "data", uid(2)));
      expect(yield* annotationsOf(cluster, "data")).toBeUndefined();
      expect(yield* raw(cluster, "persistentvolumes", "pvc-1")).toMatchObject({
        metadata: { resourceVersion: "3" },
        status: { phase: "Pending" },
      });
    }).pipe(noController),
  );
});

describe("KubeMemory service calls", () => {
  it.effect("failNext fails exactly the next N matching calls, and every call is counted", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const kube = yield* Kube;
      const ref = { namespace: "ns", name: "data" };
      yield* cluster.create("persistentvolumeclaims", claim("data"));
      yield* cluster.failNext({
        verb: "get",
        resource: "persistentvolumeclaims",
        name: "data",
        reason: "ServerError",
        times: 2,
      });
      yield* cluster.failNext({
        verb: "watch",
        resource: "persistentvolumes",
        reason: "Forbidden",
        message: "no access",
      });
      const other = yield* kube.getPersistentVolumeClaim({ namespace: "ns", name: "other" });
      expect(other).toEqual(Option.none());
      const attempts = yield* Effect.forEach([1, 2, 3], () =>
        Effect.either(kube.getPersistentVolumeClaim(ref)),
      );
      expect(attempts.map((a) => (Either.isLeft(a) ? a.left.message : "ok"))).toEqual([
        "Internal error occurred: injected failure",
        "Internal error occurred: injected failure",
        "ok",
      ]);
      const watchError = yield* Effect.flip(Stream.runDrain(kube.watchPersistentVolumes));
      expect([watchError.reason, watchError.verb, watchError.message]).toEqual([
        "Forbidden",
        "watch",
        "no access",
      ]);
      expect(yield* cluster.requestCounts).toEqual({
        "get persistentvolumeclaims": 4,
        "watch persistentvolumes": 1,
      });
      yield* cluster.resetRequestCounts;
      expect(yield* cluster.requestCounts).toEqual({});
    }).pipe(noController),
  );

  it.effect("createEvent stores the event under a generated name", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const kube = yield* Kube;
      const event = {
        apiVersion: "v1",
        kind: "Event",
        metadata: { generateName: "data.", namespace: "ns" },
        involvedObject: {
          apiVersion: "v1",
          kind: "PersistentVolumeClaim",
          name: "data",
          namespace: "ns",
          uid: uid(1),
        },
        type: "Normal",
        reason: "Provisioning",
        message: 'External provisioner is provisioning volume for claim "ns/data"',
        source: { component: "csi-provisioner" },
        reportingComponent: "csi-provisioner",
        reportingInstance: "instance",
        firstTimestamp: "1970-01-01T00:00:00Z",
        lastTimestamp: "1970-01-01T00:00:00Z",
        count: 1,
      } as const;
      yield* kube.createEvent(event);
      yield* kube.createEvent({ ...event, reason: "ProvisioningSucceeded" });
      const events = yield* cluster.events;
      expect(events.map((e) => [(e.metadata as { name: string }).name, e.reason])).toEqual([
        ["data.bbbbb", "Provisioning"],
        ["data.bbbbc", "ProvisioningSucceeded"],
      ]);
      expect(events[0]).toEqual({
        ...event,
        metadata: {
          generateName: "data.",
          name: "data.bbbbb",
          namespace: "ns",
          uid: uid(1),
          resourceVersion: "1",
          creationTimestamp: "1970-01-01T00:00:00Z",
        },
      });
      const invalid = yield* Effect.flip(
        kube.createPersistentVolume({ ...newPv("pvc-1", "data", uid(1)), kind: "Pod" } as never),
      );
      expect(invalid.reason).toBe("Invalid");
      expect(invalid.message).toMatch(/^PersistentVolume "pvc-1" is invalid: /);
      expect(yield* cluster.list("persistentvolumes")).toEqual([]);
    }).pipe(noController),
  );
});

describe("KubeMemory leases", () => {
  const lease = {
    metadata: { name: "csi-example-com", namespace: "kube-system", labels: { app: "csi" } },
    spec: {
      holderIdentity: "a",
      leaseDurationSeconds: 15,
      acquireTime: "1970-01-01T00:00:00.000000Z",
      renewTime: "1970-01-01T00:00:00.000000Z",
      leaseTransitions: 0,
    },
  };
  const ref = { namespace: "kube-system", name: "csi-example-com" };

  it.effect("create, get and a conditional full update; a stale update is a Conflict", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const leases = yield* KubeLeases;
      expect(yield* leases.getLease(ref)).toEqual(Option.none());
      const created = yield* leases.createLease(lease);
      expect(created).toEqual({
        ...lease,
        metadata: { ...lease.metadata, uid: uid(1), resourceVersion: "1" },
      });
      expect(yield* raw(cluster, "leases", "kube-system/csi-example-com")).toMatchObject({
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
      });
      const renewed = yield* leases.updateLease({
        ...created,
        spec: { ...lease.spec, renewTime: "1970-01-01T00:00:05.000000Z" },
      });
      expect(renewed.metadata.resourceVersion).toBe("2");
      expect(yield* leases.getLease(ref)).toEqual(Option.some(renewed));
      const stale = yield* Effect.flip(leases.updateLease(created));
      expect([stale.reason, stale.verb, stale.message]).toEqual([
        "Conflict",
        "update",
        'Operation cannot be fulfilled on leases.coordination.k8s.io "csi-example-com": the object has been modified; please apply your changes to the latest version and try again',
      ]);
      const duplicate = yield* Effect.flip(leases.createLease(lease));
      expect(duplicate.reason).toBe("AlreadyExists");
      const missing = yield* Effect.flip(
        leases.updateLease({ ...lease, metadata: { ...lease.metadata, name: "other" } }),
      );
      expect(missing.reason).toBe("NotFound");
      yield* cluster.failNext({
        verb: "update",
        resource: "leases",
        name: "csi-example-com",
        reason: "ServerError",
      });
      const injected = yield* Effect.flip(leases.updateLease(renewed));
      expect(injected.reason).toBe("ServerError");
      expect(yield* cluster.requestCounts).toEqual({
        "get leases": 2,
        "create leases": 2,
        "update leases": 4,
      });
    }).pipe(noController),
  );
});
