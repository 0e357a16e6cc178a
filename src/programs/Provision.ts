import { Clock, Data, Effect, Option } from "effect";
import { Config } from "../layers/Config.js";
import { Csi, type CsiError } from "../layers/Csi.js";
import { Kube, type KubeError } from "../layers/Kube.js";
import { Metrics } from "../layers/Metrics.js";
import type { Volume } from "../schemas/Csi.js";
import { hasFinalizer, isBeingDeleted, objectKey } from "../schemas/ObjectMeta.js";
import type { PersistentVolumeClaim } from "../schemas/PersistentVolumeClaim.js";
import type { StorageClass } from "../schemas/StorageClass.js";
import {
  dataSourceOf,
  isForDriver,
  selectedNodeOf,
  storageClassOf,
  volumeNameFor,
} from "./Claims.js";
import { dataSourceKind } from "./ContentSource.js";
import { classifyCreateVolumeError, withTimeout } from "./CsiCalls.js";
import { Driver } from "./Driver.js";
import { onClaim, recordEvent } from "./Events.js";
import { removeClaimAnnotation, setClaimFinalizer } from "./Finalizers.js";
import { findClaim, Informers } from "./Informers.js";
import { Annotation, Finalizer } from "./Names.js";
import { buildPersistentVolume } from "./PersistentVolumeBuilder.js";
import { ProvisionFailure, type ProvisionPlan, planCreateVolume } from "./ProvisionPlan.js";

/** An attempt for a claim failed; the claim is retried after its backoff. */
export class ClaimNotProvisioned extends Data.TaggedError("ClaimNotProvisioned")<{
  readonly claim: string;
  readonly message: string;
}> {}

/** What the last attempt told us about a volume the driver may hold (SPEC §5). */
type LastOutcome =
  | { readonly _tag: "InBackground"; readonly claim: PersistentVolumeClaim }
  | { readonly _tag: "Final" };

type Decision =
  | { readonly _tag: "Skip"; readonly provisioned: boolean }
  | { readonly _tag: "Populator" }
  | { readonly _tag: "Provision"; readonly storageClass: StorageClass };

const skip: Decision = { _tag: "Skip", provisioned: false };

/**
 * kube-controller-manager binds a claim in two writes, its volumeName and then its status, the
 * second conditional on the first's resourceVersion: a patch of ours in between (releasing the
 * intent) would make it fail and send the claim to the back of the PV controller's queue. Once
 * the status says Bound (or Lost), the controller writes no more.
 */
const bindingSettled = (claim: PersistentVolumeClaim) =>
  claim.status?.phase === "Bound" || claim.status?.phase === "Lost";

/**
 * The provisioning side of the controller: `reconcile(uid)` brings one claim one step closer to
 * having its PV, and is safe to run again at any time (it re-reads everything from the caches).
 */
export const makeClaimReconciler = Effect.sync(() => {
  const outcomes = new Map<string, LastOutcome>();
  const populatorsNoticed = new Set<string>();
  /**
   * Claims we just provisioned (UID → PV name), until the caches show our PV or the binding: a run
   * triggered meanwhile would otherwise read a stale claim and start over.
   */
  const justProvisioned = new Map<string, { readonly pvName: string; readonly at: number }>();
  /** How long our own writes may take to show in the caches before we stop waiting for them. */
  const catchUpMillis = 60_000;
  /** When each claim's first attempt went to the driver: provisioning latency spans its retries. */
  const attemptsSince = new Map<string, number>();

  const failed = (claim: PersistentVolumeClaim, message: string) =>
    new ClaimNotProvisioned({ claim: objectKey(claim.metadata), message });

  /** SPEC §2, checked on every event and resync. */
  const decide = (claim: PersistentVolumeClaim) =>
    Effect.gen(function* () {
      const { name: driver } = yield* Driver;
      const config = yield* Config;
      const stores = yield* Informers;
      if (claim.spec.volumeName)
        return { _tag: "Skip", provisioned: bindingSettled(claim) } satisfies Decision;
      if (!isForDriver(claim, driver)) return skip;
      const className = storageClassOf(claim);
      const storageClass = stores.classes.get(className);
      // The class may appear later: an error (no event, as upstream) retries with backoff.
      if (!storageClass)
        return yield* failed(claim, `storageclass.storage.k8s.io "${className}" not found`);
      if (storageClass.provisioner !== driver) return skip;
      if (storageClass.volumeBindingMode === "WaitForFirstConsumer" && !selectedNodeOf(claim))
        return skip;
      const pvName = volumeNameFor(
        config.volumeNamePrefix,
        claim.metadata.uid,
        config.volumeNameUuidLength,
      );
      // Its PV exists: done, but the intent comes off only once the binding settles (above).
      if (stores.volumes.get(pvName)) return skip;
      const source = dataSourceOf(claim);
      if (source && dataSourceKind(source) === "Populator")
        return { _tag: "Populator" } satisfies Decision;
      return { _tag: "Provision", storageClass } satisfies Decision;
    });

  const provisioningFailed = (
    claim: PersistentVolumeClaim,
    storageClass: StorageClass,
    message: string,
  ) =>
    recordEvent(
      onClaim(claim),
      "Warning",
      "ProvisioningFailed",
      `failed to provision volume with StorageClass "${storageClass.metadata.name}": ${message}`,
    );

  /** Gives the node back to the scheduler: the driver cannot provision there (SPEC §5). */
  const reschedule = (claim: PersistentVolumeClaim, storageClass: StorageClass, message: string) =>
    Effect.gen(function* () {
      outcomes.set(claim.metadata.uid, { _tag: "Final" });
      yield* provisioningFailed(claim, storageClass, message);
      yield* removeClaimAnnotation(claim, Annotation.selectedNode).pipe(
        Effect.mapError((e) => failed(claim, `rescheduling failed: ${e.message}`)),
      );
    });

  /** After a failed attempt: remember what it means for the driver's side, report, and retry. */
  const attemptFailed = (
    claim: PersistentVolumeClaim,
    storageClass: StorageClass,
    message: string,
    state: ProvisionFailure["state"],
  ) =>
    Effect.gen(function* () {
      if (state === "Reschedule" && selectedNodeOf(claim))
        return yield* reschedule(claim, storageClass, message);
      if (state === "InBackground")
        outcomes.set(claim.metadata.uid, { _tag: "InBackground", claim });
      if (state === "Final" || state === "Reschedule")
        outcomes.set(claim.metadata.uid, { _tag: "Final" });
      yield* provisioningFailed(claim, storageClass, message);
      return yield* failed(claim, message);
    });

  /** CreateVolume, with the volume checked against what was asked (SPEC §4). */
  const createVolume = (plan: ProvisionPlan) =>
    Effect.gen(function* () {
      const csi = yield* Csi;
      const response = yield* withTimeout("CreateVolume", csi.createVolume(plan.request));
      const volume = response.volume;
      const capacity = volume.capacity_bytes === 0n ? plan.requestedBytes : volume.capacity_bytes;
      let problem: string | undefined;
      if (capacity < plan.requestedBytes) {
        problem = `created volume capacity ${capacity} less than requested capacity ${plan.requestedBytes}`;
      } else if (plan.request.volume_content_source && volume.content_source === undefined) {
        problem = "volume content source missing";
      }
      if (problem === undefined) return { volume, capacity };
      // The volume is unusable: delete it and try again from the start, as upstream.
      const cleanup = yield* withTimeout(
        "DeleteVolume",
        csi.deleteVolume({ volume_id: volume.volume_id, secrets: plan.request.secrets }),
      ).pipe(Effect.retry({ times: 4 }), Effect.either);
      return yield* new ProvisionFailure({
        state: "InBackground",
        message:
          cleanup._tag === "Left"
            ? `${problem}. Cleanup of volume ${plan.pvName} failed, volume is orphaned: ${cleanup.left.message}`
            : problem,
      });
    });

  const provision = (claim: PersistentVolumeClaim, storageClass: StorageClass) =>
    Effect.gen(function* () {
      const kube = yield* Kube;
      const stores = yield* Informers;
      const key = objectKey(claim.metadata);
      const selectedNode = selectedNodeOf(claim);
      if (selectedNode) {
        const node = yield* kube
          .getNode(selectedNode)
          .pipe(
            Effect.catchAll((e: KubeError) =>
              Effect.zipRight(
                recordEvent(
                  onClaim(claim),
                  "Warning",
                  "ProvisioningFailed",
                  `failed to get target node: ${e.message}`,
                ),
                Effect.fail(failed(claim, `failed to get target node: ${e.message}`)),
              ),
            ),
          );
        if (Option.isNone(node)) {
          return yield* reschedule(claim, storageClass, `nodes "${selectedNode}" not found`);
        }
      }

      yield* recordEvent(
        onClaim(claim),
        "Normal",
        "Provisioning",
        `External provisioner is provisioning volume for claim "${key}"`,
      );
      if (!attemptsSince.has(claim.metadata.uid))
        attemptsSince.set(claim.metadata.uid, yield* Clock.currentTimeMillis);

      const outcome = yield* Effect.gen(function* () {
        const plan = yield* planCreateVolume(claim, storageClass, selectedNode);
        const source = plan.dataSource;
        if (source && dataSourceKind(source) === "Clone") {
          const sourceClaim = findClaim(stores, claim.metadata.namespace ?? "", source.name);
          if (sourceClaim) {
            yield* setClaimFinalizer(sourceClaim, Finalizer.cloneSource, true).pipe(
              Effect.mapError(
                (e) => new ProvisionFailure({ state: "NoChange", message: e.message }),
              ),
            );
          }
        }
        // The intent is durable before the driver hears of the volume: a restart finds it (SPEC §8).
        const recorded = yield* setClaimFinalizer(claim, Finalizer.provisioningIntent, true).pipe(
          Effect.mapError((e) => new ProvisionFailure({ state: "NoChange", message: e.message })),
        );
        if (Option.isNone(recorded) || isBeingDeleted(recorded.value.metadata)) {
          return yield* new ProvisionFailure({
            state: "NoChange",
            message: "claim is being deleted",
          });
        }
        const created = yield* createVolume(plan).pipe(
          Effect.mapError((error) =>
            error._tag === "CsiError"
              ? new ProvisionFailure({
                  state: classifyCreateVolumeError(error, plan.topology && selectedNode !== ""),
                  message: error.message,
                })
              : error,
          ),
        );
        return { plan, ...created };
      }).pipe(Effect.either);

      if (outcome._tag === "Left") {
        return yield* attemptFailed(claim, storageClass, outcome.left.message, outcome.left.state);
      }
      const { plan, volume, capacity } = outcome.right;
      yield* savePersistentVolume(claim, storageClass, plan, volume, capacity);
      outcomes.delete(claim.metadata.uid);
      yield* recordEvent(
        onClaim(claim),
        "Normal",
        "ProvisioningSucceeded",
        `Successfully provisioned volume ${plan.pvName}`,
      );
      const now = yield* Clock.currentTimeMillis;
      const since = attemptsSince.get(claim.metadata.uid);
      attemptsSince.delete(claim.metadata.uid);
      if (since !== undefined)
        (yield* Metrics).provisioned(storageClassOf(claim), (now - since) / 1000);
      yield* Effect.logInfo(`provisioned ${plan.pvName} for ${key} (volume ${volume.volume_id})`);
      // The intent stays until the claim's status says Bound (see `decide` and `bindingSettled`).
      justProvisioned.set(claim.metadata.uid, { pvName: plan.pvName, at: now });
    });

  /** The PV records the volume; until it exists the intent finalizer keeps the claim's volume findable. */
  const savePersistentVolume = (
    claim: PersistentVolumeClaim,
    storageClass: StorageClass,
    plan: ProvisionPlan,
    volume: Volume,
    capacityBytes: bigint,
  ) =>
    Effect.gen(function* () {
      const kube = yield* Kube;
      const pv = buildPersistentVolume({
        claim,
        storageClass,
        plan,
        volume,
        capacityBytes,
        driver: yield* Driver,
        config: yield* Config,
      });
      yield* kube.createPersistentVolume(pv).pipe(
        Effect.catchIf(
          (error) => error.reason === "AlreadyExists",
          () => Effect.void,
        ),
        Effect.catchAll((error) =>
          Effect.gen(function* () {
            // The volume exists on the driver; the next attempt gets the same one back by name.
            outcomes.set(claim.metadata.uid, { _tag: "InBackground", claim });
            const message = `error saving PersistentVolume ${plan.pvName}: ${error.message}`;
            yield* provisioningFailed(claim, storageClass, message);
            return yield* failed(claim, message);
          }),
        ),
      );
    });

  const releaseIntent = (claim: PersistentVolumeClaim) =>
    hasFinalizer(claim.metadata, Finalizer.provisioningIntent)
      ? setClaimFinalizer(claim, Finalizer.provisioningIntent, false).pipe(
          Effect.mapError((e) => failed(claim, `releasing the claim failed: ${e.message}`)),
        )
      : Effect.void;

  /**
   * SPEC §8: the claim is being deleted while the driver may hold its volume. Replay CreateVolume
   * (idempotent by name) to learn the volume, delete it, then let the claim go.
   */
  const settleDeletedClaim = (claim: PersistentVolumeClaim, release: boolean) =>
    Effect.gen(function* () {
      const config = yield* Config;
      const stores = yield* Informers;
      const csi = yield* Csi;
      const uid = claim.metadata.uid;
      const pvName = volumeNameFor(config.volumeNamePrefix, uid, config.volumeNameUuidLength);
      const done = Effect.zipRight(
        Effect.sync(() => outcomes.delete(uid)),
        release ? releaseIntent(claim) : Effect.void,
      );
      if (outcomes.get(uid)?._tag === "Final") return yield* done;
      // Ask the API server, not the cache: replaying CreateVolume deletes the volume it finds.
      const kube = yield* Kube;
      const pv = yield* kube
        .getPersistentVolume(pvName)
        .pipe(Effect.mapError((e) => failed(claim, e.message)));
      if (Option.isSome(pv)) return yield* done;
      const storageClass = stores.classes.get(storageClassOf(claim));
      if (!storageClass) {
        return yield* failed(
          claim,
          `storageclass.storage.k8s.io "${storageClassOf(claim)}" not found: cannot replay CreateVolume to clean up`,
        );
      }
      const plan = yield* planCreateVolume(claim, storageClass, selectedNodeOf(claim)).pipe(
        Effect.either,
      );
      if (plan._tag === "Left") {
        if (plan.left.state === "Final") return yield* done;
        return yield* failed(claim, plan.left.message);
      }
      const created = yield* withTimeout("CreateVolume", csi.createVolume(plan.right.request)).pipe(
        Effect.either,
      );
      if (created._tag === "Left") {
        const error: CsiError = created.left;
        if (classifyCreateVolumeError(error, false) === "InBackground") {
          outcomes.set(uid, { _tag: "InBackground", claim });
          return yield* failed(claim, `replaying CreateVolume for deleted claim: ${error.message}`);
        }
        return yield* done;
      }
      const volumeId = created.right.volume.volume_id;
      yield* withTimeout(
        "DeleteVolume",
        csi.deleteVolume({ volume_id: volumeId, secrets: plan.right.request.secrets }),
      ).pipe(
        Effect.mapError((e) =>
          failed(claim, `deleting volume ${volumeId} of deleted claim: ${e.message}`),
        ),
      );
      yield* Effect.logInfo(
        `deleted volume ${volumeId} of claim ${objectKey(claim.metadata)}, deleted before its PV existed`,
      );
      yield* done;
    });

  /** Cloning protection: a source being deleted keeps its finalizer while a clone of it is pending. */
  const releaseCloneSource = (source: PersistentVolumeClaim) =>
    Effect.gen(function* () {
      const stores = yield* Informers;
      for (const claim of stores.claims.values()) {
        const ref = dataSourceOf(claim);
        if (
          ref &&
          dataSourceKind(ref) === "Clone" &&
          ref.name === source.metadata.name &&
          claim.metadata.namespace === source.metadata.namespace &&
          !claim.spec.volumeName &&
          (!isBeingDeleted(claim.metadata) ||
            hasFinalizer(claim.metadata, Finalizer.provisioningIntent))
        ) {
          return yield* failed(
            source,
            `clone ${objectKey(claim.metadata)} of this claim is still being provisioned`,
          );
        }
      }
      yield* setClaimFinalizer(source, Finalizer.cloneSource, false).pipe(
        Effect.mapError((e) => failed(source, e.message)),
      );
    });

  const reconcile = (uid: string) =>
    Effect.gen(function* () {
      const stores = yield* Informers;
      const claim = stores.claims.get(uid);
      const outcome = outcomes.get(uid);
      const provisioned = justProvisioned.get(uid);
      if (provisioned !== undefined) {
        const caughtUp =
          !claim ||
          claim.spec.volumeName ||
          isBeingDeleted(claim.metadata) ||
          stores.volumes.get(provisioned.pvName) ||
          (yield* Clock.currentTimeMillis) - provisioned.at > catchUpMillis;
        if (!caughtUp) return;
        justProvisioned.delete(uid);
      }
      if (!claim) {
        populatorsNoticed.delete(uid);
        attemptsSince.delete(uid);
        // Someone removed our finalizer while the driver may still be creating: finish anyway.
        if (outcome?._tag === "InBackground")
          return yield* settleDeletedClaim(outcome.claim, false);
        outcomes.delete(uid);
        return;
      }
      if (isBeingDeleted(claim.metadata)) {
        if (hasFinalizer(claim.metadata, Finalizer.cloneSource)) yield* releaseCloneSource(claim);
        if (hasFinalizer(claim.metadata, Finalizer.provisioningIntent))
          return yield* settleDeletedClaim(claim, true);
        if (outcome?._tag === "InBackground") return yield* settleDeletedClaim(claim, false);
        return;
      }
      const decision = yield* decide(claim);
      switch (decision._tag) {
        case "Skip":
          if (decision.provisioned) {
            outcomes.delete(uid);
            yield* releaseIntent(claim);
          }
          return;
        case "Populator":
          if (!populatorsNoticed.has(uid)) {
            populatorsNoticed.add(uid);
            yield* recordEvent(
              onClaim(claim),
              "Normal",
              "Provisioning",
              "Assuming an external populator will provision the volume",
            );
          }
          return;
        case "Provision":
          return yield* provision(claim, decision.storageClass);
      }
    });

  const outcomesClaim = (uid: string) => {
    const outcome = outcomes.get(uid);
    return outcome?._tag === "InBackground" ? outcome.claim : undefined;
  };

  /** Whether the driver may still be creating this claim's volume (the last attempt said so). */
  const inBackground = (uid: string) => outcomes.get(uid)?._tag === "InBackground";

  /** Every log line of a claim's work names the claim. */
  const reconcileLogged = (uid: string) =>
    Effect.flatMap(Informers, (stores) => {
      const claim = stores.claims.get(uid) ?? outcomesClaim(uid);
      return Effect.annotateLogs(reconcile(uid), "pvc", claim ? objectKey(claim.metadata) : uid);
    });

  return { reconcile: reconcileLogged, inBackground };
});
