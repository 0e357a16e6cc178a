import { DateTime, Effect } from "effect";
import { Kube } from "../layers/Kube.js";
import type { PersistentVolume } from "../schemas/PersistentVolume.js";
import type { PersistentVolumeClaim } from "../schemas/PersistentVolumeClaim.js";
import { Driver } from "./Driver.js";

export type EventTarget =
  | { readonly kind: "PersistentVolumeClaim"; readonly object: PersistentVolumeClaim }
  | { readonly kind: "PersistentVolume"; readonly object: PersistentVolume };

export const onClaim = (object: PersistentVolumeClaim): EventTarget => ({
  kind: "PersistentVolumeClaim",
  object,
});
export const onVolume = (object: PersistentVolume): EventTarget => ({
  kind: "PersistentVolume",
  object,
});

/**
 * Records a core/v1 Event. An Event that cannot be written is logged and dropped: it must never
 * fail or delay the operation it reports on more than the one API call.
 */
export const recordEvent = (
  target: EventTarget,
  type: "Normal" | "Warning",
  reason: string,
  message: string,
) =>
  Effect.gen(function* () {
    const kube = yield* Kube;
    const driver = yield* Driver;
    const now = DateTime.formatIso(yield* DateTime.now);
    const meta = target.object.metadata;
    yield* Effect.logDebug(`Event ${type} ${reason} on ${target.kind} ${meta.name}: ${message}`);
    yield* kube
      .createEvent({
        apiVersion: "v1",
        kind: "Event",
        metadata: { generateName: `${meta.name}.`, namespace: meta.namespace ?? "default" },
        involvedObject: {
          apiVersion: "v1",
          kind: target.kind,
          name: meta.name,
          namespace: meta.namespace,
          uid: meta.uid,
          resourceVersion: meta.resourceVersion,
        },
        type,
        reason,
        message,
        source: { component: `${driver.name}_${driver.identity}` },
        reportingComponent: "external-provisioner",
        reportingInstance: driver.identity,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      })
      .pipe(
        Effect.catchAll((error) =>
          Effect.logWarning(`could not record event ${reason} on ${meta.name}: ${error.message}`),
        ),
      );
  });
