import { type Clock, Duration, Effect, Schedule, type Scope } from "effect";
import { Config } from "../layers/Config.js";
import type { Csi } from "../layers/Csi.js";
import { Kube } from "../layers/Kube.js";
import { Metrics, type MetricsService } from "../layers/Metrics.js";
import { annotation } from "../schemas/ObjectMeta.js";
import type { PersistentVolume } from "../schemas/PersistentVolume.js";
import { isForDriver, storageClassOf } from "./Claims.js";
import { makeVolumeReconciler } from "./Delete.js";
import { Driver } from "./Driver.js";
import { EventRecorder, makeEventRecorder } from "./Events.js";
import { makeInformer } from "./Informer.js";
import { type InformerStores, Informers } from "./Informers.js";
import { Annotation, ReclaimPolicy } from "./Names.js";
import { makeClaimReconciler } from "./Provision.js";
import { retryBackoff } from "./RetryPolicy.js";
import { type KeyStatus, makeWorkQueue, type WorkQueue } from "./WorkQueue.js";

/** Why a claim of ours has no volume yet: what `/debug/pvcs` shows. */
export interface PendingClaim {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly storageClass: string;
  readonly state: "Waiting" | "Queued" | "InProgress" | "InBackground" | "BackingOff";
  /** Failed attempts since the last success. */
  readonly attempts: number;
  readonly lastError: string | undefined;
  /** Epoch milliseconds of the next retry while backing off. */
  readonly nextRetryAt: number | undefined;
}

export interface RunningController {
  readonly claims: WorkQueue;
  readonly volumes: WorkQueue;
  readonly stores: InformerStores;
  /** Every unbound claim for our driver, with where it stands. */
  readonly pendingClaims: Effect.Effect<ReadonlyArray<PendingClaim>>;
  /** PVs whose deletion we finished but the cache still shows (zero once it catches up). */
  readonly guardedDeletions: Effect.Effect<number>;
  /**
   * A graceful stop's first step: take no new work and let operations in progress finish (their
   * CSI calls end by --timeout), so nothing is interrupted half-way; the scope closes after.
   */
  readonly drain: Effect.Effect<void>;
}

/**
 * The reconcile loop: PVC and PV watch events only enqueue keys; workers (`--worker-threads` for
 * claims and as many for volumes) reconcile one key at a time each, with per-key backoff. Every
 * fiber lives in the caller's scope, so closing it stops all work at once.
 */
export const startController: Effect.Effect<
  RunningController,
  never,
  Kube | Csi | Config | Driver | Scope.Scope
> = Effect.gen(function* () {
  const kube = yield* Kube;
  const config = yield* Config;
  const driver = yield* Driver;
  const metrics = yield* Metrics;
  metrics.setDriverName(driver.name);
  const deletionSeen = trackDeletions(metrics, driver.name, yield* Effect.clock);
  const backoff = retryBackoff(config.retryIntervalStart, config.retryIntervalMax);
  // Upstream's queue names (sig-storage-lib-external-provisioner), for client-go style metrics.
  const claimQueue = yield* makeWorkQueue(backoff, "claims");
  const volumeQueue = yield* makeWorkQueue(backoff, "volumes");

  const claims = yield* makeInformer(
    "PersistentVolumeClaims",
    kube.watchPersistentVolumeClaims,
    (claim) => claim.metadata.uid,
    (uid) => claimQueue.unsafeAdd(uid),
  );
  const volumes = yield* makeInformer(
    "PersistentVolumes",
    kube.watchPersistentVolumes,
    (pv) => pv.metadata.name,
    (name, _, current) => {
      deletionSeen(name, current);
      // A deletion too: the reconciler then forgets the PV it was guarding.
      volumeQueue.unsafeAdd(name);
    },
  );
  const classes = yield* makeInformer(
    "StorageClasses",
    kube.watchStorageClasses,
    (sc) => sc.metadata.name,
    () => {},
  );
  yield* Effect.all([claims.synced, volumes.synced, classes.synced], { discard: true });
  const stores: InformerStores = { claims, volumes, classes };

  // A resync only enqueues; a key that is backing off keeps waiting for its retry.
  yield* Effect.gen(function* () {
    for (const claim of claims.values()) yield* claimQueue.add(claim.metadata.uid);
    for (const pv of volumes.values()) yield* volumeQueue.add(pv.metadata.name);
  }).pipe(Effect.schedule(Schedule.spaced(config.resyncPeriod)), Effect.forever, Effect.forkScoped);

  const claimReconciler = yield* makeClaimReconciler;
  const volumeReconciler = yield* makeVolumeReconciler;
  const recorder = yield* makeEventRecorder();
  const withCaches = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    effect.pipe(
      Effect.provideService(Informers, stores),
      Effect.provideService(EventRecorder, recorder),
    );
  yield* claimQueue
    .run(config.workerThreads, claimReconciler.reconcile)
    .pipe(withCaches, Effect.forkScoped);
  yield* volumeQueue
    .run(config.workerThreads, volumeReconciler.reconcile)
    .pipe(withCaches, Effect.forkScoped);

  yield* Effect.logInfo(
    `controller started: ${claims.size()} PVCs, ${volumes.size()} PVs, ${classes.size()} StorageClasses`,
  );
  const pendingClaims = Effect.map(claimQueue.status, (statuses) => {
    const byUid = new Map(statuses.map((status) => [status.key, status]));
    const pending: Array<PendingClaim> = [];
    for (const claim of claims.values()) {
      if (claim.spec.volumeName || !isForDriver(claim, driver.name)) continue;
      const status = byUid.get(claim.metadata.uid);
      pending.push({
        namespace: claim.metadata.namespace ?? "",
        name: claim.metadata.name,
        uid: claim.metadata.uid,
        storageClass: storageClassOf(claim),
        state: pendingState(status?.state, claimReconciler.inBackground(claim.metadata.uid)),
        attempts: status?.failures ?? 0,
        lastError: status?.lastError,
        nextRetryAt: status?.nextRetryAt,
      });
    }
    return pending;
  });
  yield* metrics.watchPendingClaims(pendingClaims);
  const drain = Effect.gen(function* () {
    yield* Effect.logInfo("stopping: letting operations in progress finish");
    const deadline = Duration.sum(config.timeout, Duration.seconds(5));
    yield* Effect.all([claimQueue.drain(deadline), volumeQueue.drain(deadline)], {
      concurrency: "unbounded",
      discard: true,
    });
  });
  return {
    claims: claimQueue,
    volumes: volumeQueue,
    stores,
    pendingClaims,
    guardedDeletions: Effect.sync(volumeReconciler.guardedDeletions),
    drain,
  };
});

/** A claim's queue state as `/debug/pvcs` names it; a backoff the driver is still working on is "InBackground". */
const pendingState = (
  queued: KeyStatus["state"] | undefined,
  inBackground: boolean,
): PendingClaim["state"] => {
  switch (queued) {
    case "Processing":
      return "InProgress";
    case "BackingOff":
      return inBackground ? "InBackground" : "BackingOff";
    case "Queued":
      return "Queued";
    default:
      return "Waiting";
  }
};

/**
 * Deletion latency, from a PV of ours with reclaim policy Delete seen Released to the PV gone:
 * the informer sees both ends (provisioning latency is measured by the claim reconciler).
 */
const trackDeletions = (metrics: MetricsService, driverName: string, clock: Clock.Clock) => {
  const deleting = new Map<string, { readonly at: number; readonly storageClass: string }>();
  const seconds = (at: number) => (clock.unsafeCurrentTimeMillis() - at) / 1000;
  const isOurs = (pv: PersistentVolume) =>
    annotation(pv.metadata, Annotation.provisionedBy) === driverName ||
    annotation(pv.metadata, Annotation.migratedTo) === driverName;
  return (name: string, current: PersistentVolume | undefined) => {
    const started = deleting.get(name);
    if (!current) {
      deleting.delete(name);
      if (started) metrics.deleted(started.storageClass, seconds(started.at));
    } else if (
      !started &&
      current.status?.phase === "Released" &&
      current.spec.persistentVolumeReclaimPolicy === ReclaimPolicy.delete &&
      isOurs(current)
    ) {
      const storageClass = current.spec.storageClassName ?? "";
      deleting.set(name, { at: clock.unsafeCurrentTimeMillis(), storageClass });
    }
  };
};
