/**
 * Leader election on a Lease, with client-go's rules (tools/leaderelection) as csi-lib-utils runs
 * them for the CSI sidecars. Only our own clock decides expiry: another holder's lease counts as
 * expired `leaseDurationSeconds` after we last saw its record change, whatever its timestamps say,
 * so clock skew between replicas does not matter.
 */

import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { Clock, Data, Duration, Effect, Either, Fiber, Option, Random, Ref } from "effect";
import { KubeLeases } from "../layers/Kube.js";
import type { ProvisionerConfig } from "../schemas/Config.js";
import type { Lease, LeaseSpec } from "../schemas/Lease.js";

export class LeadershipLost extends Data.TaggedError("LeadershipLost")<{
  readonly lease: string;
  readonly identity: string;
  readonly message: string;
}> {}

export class LeaderElectionUnhealthy extends Data.TaggedError("LeaderElectionUnhealthy")<{
  readonly lease: string;
  readonly message: string;
}> {}

export class InvalidLeaderElection extends Data.TaggedError("InvalidLeaderElection")<{
  readonly message: string;
}> {}

export interface LeaderElectionOptions {
  /** The Lease's name, already sanitized (see `leaseNameFor`). */
  readonly name: string;
  readonly namespace: string;
  readonly identity: string;
  readonly leaseDuration: Duration.DurationInput;
  readonly renewDeadline: Duration.DurationInput;
  readonly retryPeriod: Duration.DurationInput;
  /** Put on the Lease when we create it, and merged into it on every write of ours. */
  readonly labels?: Readonly<Record<string, string>>;
  /**
   * Acquire attempts wait `retryPeriod * (1 + random * jitterFactor)`, so that candidates spread
   * out; client-go's factor is 1.2. Renewals are not jittered.
   */
  readonly jitterFactor?: number;
  /** How long past `leaseDuration` a leader that has not renewed still counts as healthy. */
  readonly healthCheckTimeout?: Duration.DurationInput;
}

/** client-go's JitterFactor, also used to validate renewDeadline against retryPeriod. */
export const clientGoJitterFactor = 1.2;
/** csi-lib-utils' DefaultHealthCheckTimeout. */
export const defaultHealthCheckTimeout = Duration.seconds(20);

export interface LeaderElector {
  /**
   * Acquires the Lease (retrying), then runs `work` while renewing it. Fails with `LeadershipLost`
   * once renewals have failed for `renewDeadline`, after `work` has been interrupted. The Lease is
   * released when `run` ends for any reason, so that another replica takes over at once.
   */
  readonly run: <A, E, R>(work: Effect.Effect<A, E, R>) => Effect.Effect<A, E | LeadershipLost, R>;
  /**
   * For `/healthz/leader-election` (client-go's HealthzAdaptor): fails when we are the observed
   * holder but our last successful write is older than leaseDuration + healthCheckTimeout, which
   * means the election loop is stuck. A replica that is not leading is healthy.
   */
  readonly healthy: Effect.Effect<void, LeaderElectionUnhealthy>;
  readonly isLeader: Effect.Effect<boolean>;
  /** The holder in the last record we saw (or wrote); none when no one holds the Lease. */
  readonly leader: Effect.Effect<Option.Option<string>>;
}

/** The fields of a Lease's spec that the election reads, with the API's defaults applied. */
interface LeaseRecord {
  readonly holderIdentity: string;
  readonly leaseDurationSeconds: number;
  readonly acquireTime: string | undefined;
  readonly renewTime: string | undefined;
  readonly leaseTransitions: number;
}

interface Observed {
  readonly record: LeaseRecord | undefined;
  /** Our clock when `record` last changed: the start of its validity, not its renewTime. */
  readonly at: number;
  /** The object last read or written: the next update is conditional on its resourceVersion. */
  readonly lease: Lease | undefined;
}

const recordOf = (spec: LeaseSpec | undefined): LeaseRecord => ({
  holderIdentity: spec?.holderIdentity ?? "",
  leaseDurationSeconds: spec?.leaseDurationSeconds ?? 0,
  acquireTime: spec?.acquireTime,
  renewTime: spec?.renewTime,
  leaseTransitions: spec?.leaseTransitions ?? 0,
});

const sameRecord = (a: LeaseRecord | undefined, b: LeaseRecord) =>
  a !== undefined &&
  a.holderIdentity === b.holderIdentity &&
  a.leaseDurationSeconds === b.leaseDurationSeconds &&
  a.acquireTime === b.acquireTime &&
  a.renewTime === b.renewTime &&
  a.leaseTransitions === b.leaseTransitions;

/** metav1.MicroTime's wire format. */
export const microTime = (millis: number) =>
  new Date(millis).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");

/**
 * csi-lib-utils' sanitizeName: every character other than an ASCII letter, digit or `-` becomes
 * `-`, and a trailing `-` gets an `X` appended.
 */
export const sanitizeName = (name: string): string => {
  const sanitized = name.replace(/[^a-zA-Z0-9-]/gu, "-");
  return sanitized.endsWith("-") ? `${sanitized}X` : sanitized;
};

/** csi-provisioner's lock name: the driver name with `/` replaced, then sanitized. */
export const leaseNameFor = (driverName: string) => sanitizeName(driverName.replaceAll("/", "-"));

export const serviceAccountNamespaceFile =
  "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/** What the defaults are derived from: the process's surroundings, injected for tests. */
export interface PodEnvironment {
  readonly hostname: string;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The service account's namespace file's content, when it could be read. */
  readonly serviceAccountNamespace: string | undefined;
  /** Distinguishes replicas that share a hostname (hostNetwork pods, local runs). */
  readonly unique: string;
}

export const podEnvironment: Effect.Effect<PodEnvironment> = Effect.sync(() => {
  let serviceAccountNamespace: string | undefined;
  try {
    serviceAccountNamespace = readFileSync(serviceAccountNamespaceFile, "utf8");
  } catch {
    serviceAccountNamespace = undefined;
  }
  return {
    hostname: hostname(),
    env: process.env,
    serviceAccountNamespace,
    unique: randomUUID(),
  };
});

/** csi-lib-utils' inClusterNamespace: POD_NAMESPACE, then the service account's, then `default`. */
export const podNamespace = (environment: PodEnvironment): string => {
  const fromEnv = environment.env.POD_NAMESPACE;
  if (fromEnv) return fromEnv;
  const fromFile = environment.serviceAccountNamespace?.trim();
  return fromFile ? fromFile : "default";
};

/** The election as csi-provisioner's flags configure it for the driver `driverName`. */
export const optionsFromConfig = (
  config: Pick<
    ProvisionerConfig,
    | "leaderElectionNamespace"
    | "leaderElectionLeaseDuration"
    | "leaderElectionRenewDeadline"
    | "leaderElectionRetryPeriod"
    | "leaderElectionLabels"
  >,
  driverName: string,
  environment: PodEnvironment,
): LeaderElectionOptions => ({
  name: leaseNameFor(driverName),
  namespace: config.leaderElectionNamespace || podNamespace(environment),
  identity: sanitizeName(`${environment.hostname}_${environment.unique}`),
  leaseDuration: config.leaderElectionLeaseDuration,
  renewDeadline: config.leaderElectionRenewDeadline,
  retryPeriod: config.leaderElectionRetryPeriod,
  labels: config.leaderElectionLabels,
  jitterFactor: clientGoJitterFactor,
});

/** client-go's NewLeaderElector checks. */
const validate = (options: LeaderElectionOptions) => {
  const lease = Duration.toMillis(options.leaseDuration);
  const renew = Duration.toMillis(options.renewDeadline);
  const retry = Duration.toMillis(options.retryPeriod);
  const problems = [
    lease <= renew && "leaseDuration must be greater than renewDeadline",
    renew <= clientGoJitterFactor * retry &&
      "renewDeadline must be greater than retryPeriod*JitterFactor",
    lease < 1000 && "leaseDuration must be at least one second",
    retry <= 0 && "retryPeriod must be greater than zero",
    options.name === "" && "the Lease needs a name",
    options.identity === "" && "the identity must not be empty",
  ].filter((problem): problem is string => typeof problem === "string");
  return problems.length === 0
    ? Effect.void
    : Effect.fail(
        new InvalidLeaderElection({ message: `leader election: ${problems.join("; ")}` }),
      );
};

export const makeLeaderElector = (
  options: LeaderElectionOptions,
): Effect.Effect<LeaderElector, InvalidLeaderElection, KubeLeases> =>
  Effect.gen(function* () {
    yield* validate(options);
    const leases = yield* KubeLeases;
    const { identity, namespace, name } = options;
    const ref = { namespace, name };
    const describe = `${namespace}/${name}`;
    const leaseMillis = Duration.toMillis(options.leaseDuration);
    const renewDeadline = Duration.toMillis(options.renewDeadline);
    const retryPeriod = Duration.toMillis(options.retryPeriod);
    const jitterFactor = options.jitterFactor ?? 0;
    const tolerance = Duration.toMillis(options.healthCheckTimeout ?? defaultHealthCheckTimeout);
    const labels = options.labels ?? {};
    const hasLabels = Object.keys(labels).length > 0;

    const state = yield* Ref.make<Observed>({ record: undefined, at: 0, lease: undefined });
    let reportedLeader = "";

    const isLeaderIn = (observed: Observed) => observed.record?.holderIdentity === identity;
    const isValidIn = (observed: Observed, now: number) =>
      observed.record !== undefined &&
      observed.at + observed.record.leaseDurationSeconds * 1000 > now;

    const observe = (record: LeaseRecord, lease: Lease) =>
      Effect.flatMap(Clock.currentTimeMillis, (at) => Ref.set(state, { record, at, lease }));

    const specOf = (record: LeaseRecord): LeaseSpec => ({
      holderIdentity: record.holderIdentity,
      leaseDurationSeconds: record.leaseDurationSeconds,
      ...(record.acquireTime === undefined ? {} : { acquireTime: record.acquireTime }),
      ...(record.renewTime === undefined ? {} : { renewTime: record.renewTime }),
      leaseTransitions: record.leaseTransitions,
    });

    /** As client-go's LeaseLock.Update: our labels overwrite theirs, the rest stays. */
    const rewrite = (lease: Lease, record: LeaseRecord): Lease => ({
      metadata: hasLabels
        ? { ...lease.metadata, labels: { ...lease.metadata.labels, ...labels } }
        : lease.metadata,
      spec: specOf(record),
    });

    const fresh = (record: LeaseRecord): Lease => ({
      metadata: { name, namespace, ...(hasLabels ? { labels: { ...labels } } : {}) },
      spec: specOf(record),
    });

    const reportTransition = Effect.flatMap(Ref.get(state), (observed) => {
      const holder = observed.record?.holderIdentity ?? "";
      if (holder === reportedLeader) return Effect.void;
      reportedLeader = holder;
      return holder === ""
        ? Effect.logInfo(`lease ${describe} is free`)
        : Effect.logInfo(`new leader detected on lease ${describe}: ${holder}`);
    });

    /** client-go's tryAcquireOrRenew: one attempt, true when we hold the Lease afterwards. */
    const tryAcquireOrRenew: Effect.Effect<boolean> = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis;
      const desired: LeaseRecord = {
        holderIdentity: identity,
        leaseDurationSeconds: Math.floor(leaseMillis / 1000),
        acquireTime: microTime(now),
        renewTime: microTime(now),
        leaseTransitions: 0,
      };

      // 1. The leader's fast path: write on top of what we last wrote, without reading first.
      const before = yield* Ref.get(state);
      if (before.lease && before.record && isLeaderIn(before) && isValidIn(before, now)) {
        const record = {
          ...desired,
          acquireTime: before.record.acquireTime,
          leaseTransitions: before.record.leaseTransitions,
        };
        const written = yield* Effect.either(leases.updateLease(rewrite(before.lease, record)));
        if (Either.isRight(written)) {
          yield* observe(record, written.right);
          return true;
        }
        yield* Effect.logDebug(
          `failed to update lease ${describe} optimistically, falling back to slow path: ${written.left.message}`,
        );
      }

      // 2. Read the Lease, or create it.
      const got = yield* Effect.either(leases.getLease(ref));
      if (Either.isLeft(got)) {
        yield* Effect.logError(`error retrieving lease ${describe}: ${got.left.message}`);
        return false;
      }
      if (Option.isNone(got.right)) {
        const created = yield* Effect.either(leases.createLease(fresh(desired)));
        if (Either.isLeft(created)) {
          yield* Effect.logError(`error creating lease ${describe}: ${created.left.message}`);
          return false;
        }
        yield* observe(desired, created.right);
        return true;
      }

      // 3. A record that changed restarts its validity on our clock.
      const lease = got.right.value;
      const record = recordOf(lease.spec);
      if (sameRecord(before.record, record)) yield* Ref.update(state, (s) => ({ ...s, lease }));
      else yield* observe(record, lease);
      const seen = yield* Ref.get(state);
      if (record.holderIdentity !== "" && isValidIn(seen, now) && !isLeaderIn(seen)) {
        yield* Effect.logDebug(
          `lease ${describe} is held by ${record.holderIdentity} and has not yet expired`,
        );
        return false;
      }

      // 4. Take it over, or renew it on top of the version just read.
      const next = isLeaderIn(seen)
        ? { ...desired, acquireTime: record.acquireTime, leaseTransitions: record.leaseTransitions }
        : { ...desired, leaseTransitions: record.leaseTransitions + 1 };
      const written = yield* Effect.either(leases.updateLease(rewrite(lease, next)));
      if (Either.isLeft(written)) {
        yield* Effect.logError(`failed to update lease ${describe}: ${written.left.message}`);
        return false;
      }
      yield* observe(next, written.right);
      return true;
    }).pipe(Effect.tap(() => reportTransition));

    /** An attempt that hangs (a stalled connection) counts as failed once `limit` has passed. */
    const attempt = (limit: number) =>
      Effect.timeoutTo(tryAcquireOrRenew, {
        duration: Duration.millis(limit),
        onSuccess: (held) => held,
        onTimeout: () => false,
      });

    const acquire = Effect.gen(function* () {
      yield* Effect.logInfo(`attempting to acquire leader lease ${describe}...`);
      while (!(yield* attempt(renewDeadline))) {
        const jitter = jitterFactor > 0 ? (yield* Random.next) * jitterFactor * retryPeriod : 0;
        yield* Effect.sleep(Duration.millis(retryPeriod + jitter));
      }
      yield* Effect.logInfo(`successfully acquired lease ${describe} as ${identity}`);
    });

    /**
     * One renewal, retried every retryPeriod; false once renewDeadline has passed since it began
     * (client-go's PollUntilContextTimeout: no attempt starts at the deadline itself).
     */
    const renewal = Effect.gen(function* () {
      const deadline = (yield* Clock.currentTimeMillis) + renewDeadline;
      for (;;) {
        const remaining = deadline - (yield* Clock.currentTimeMillis);
        if (yield* attempt(remaining)) return true;
        const now = yield* Clock.currentTimeMillis;
        if (now + retryPeriod >= deadline) {
          yield* Effect.sleep(Duration.millis(Math.max(0, deadline - now)));
          return false;
        }
        yield* Effect.sleep(Duration.millis(retryPeriod));
      }
    });

    const keepRenewing: Effect.Effect<never, LeadershipLost> = Effect.gen(function* () {
      for (;;) {
        yield* Effect.sleep(Duration.millis(retryPeriod));
        if (!(yield* renewal)) {
          yield* Effect.logError(`failed to renew lease ${describe}: stopped leading`);
          return yield* new LeadershipLost({
            lease: describe,
            identity,
            message: `lost leader election lease ${describe}: renewals failed for ${Duration.format(
              options.renewDeadline,
            )}`,
          });
        }
      }
    });

    /**
     * client-go's release (ReleaseOnCancel): only if the Lease still names us, hand it back with an
     * empty holder and a one-second duration, so that candidates take it at their next attempt.
     */
    const tryRelease: Effect.Effect<void> = Effect.gen(function* () {
      if (!isLeaderIn(yield* Ref.get(state))) return;
      const got = yield* Effect.either(leases.getLease(ref));
      if (Either.isLeft(got) || Option.isNone(got.right)) {
        yield* Effect.logWarning(
          `could not release lease ${describe}: ${Either.isLeft(got) ? got.left.message : "it is gone"}`,
        );
        return;
      }
      const lease = got.right.value;
      const record = recordOf(lease.spec);
      if (record.holderIdentity !== identity) return;
      const now = microTime(yield* Clock.currentTimeMillis);
      const released: LeaseRecord = {
        holderIdentity: "",
        leaseDurationSeconds: 1,
        acquireTime: now,
        renewTime: now,
        leaseTransitions: record.leaseTransitions,
      };
      const written = yield* Effect.either(leases.updateLease(rewrite(lease, released)));
      if (Either.isRight(written)) {
        yield* observe(released, written.right);
        yield* Effect.logInfo(`released lease ${describe}`);
      } else if (written.left.reason === "Conflict") {
        // A renewal of ours that was cut short may still have landed: read again and retry.
        yield* tryRelease;
      } else {
        yield* Effect.logWarning(`failed to release lease ${describe}: ${written.left.message}`);
      }
    });

    // Runs as a finalizer, where nothing is interruptible: only a fiber of its own can be cut off.
    const release = Effect.timeoutTo(Effect.interruptible(tryRelease), {
      duration: Duration.millis(renewDeadline),
      onSuccess: () => undefined,
      onTimeout: () => undefined,
    });

    /**
     * Closing the scope interrupts and awaits the fibers in reverse order: the work stops first
     * while renewals go on, and only then is the lease released (client-go's ReleaseOnCancel
     * requires that nothing guarded by the lease still runs).
     */
    const run = <A, E, R>(work: Effect.Effect<A, E, R>): Effect.Effect<A, E | LeadershipLost, R> =>
      Effect.scoped(
        Effect.gen(function* () {
          yield* acquire;
          const renewer = yield* Effect.forkScoped(keepRenewing);
          const worker = yield* Effect.forkScoped(work);
          return yield* Effect.raceFirst(Fiber.join(worker), Fiber.join(renewer));
        }),
      ).pipe(Effect.ensuring(release));

    const healthy = Effect.gen(function* () {
      const observed = yield* Ref.get(state);
      if (!isLeaderIn(observed)) return;
      const now = yield* Clock.currentTimeMillis;
      if (now - observed.at > leaseMillis + tolerance) {
        return yield* new LeaderElectionUnhealthy({
          lease: describe,
          message: `failed election to renew leadership on lease ${describe}`,
        });
      }
    });

    return {
      run,
      healthy,
      isLeader: Effect.map(Ref.get(state), isLeaderIn),
      leader: Effect.map(Ref.get(state), (observed) =>
        Option.fromNullable(observed.record?.holderIdentity || undefined),
      ),
    } satisfies LeaderElector;
  });

/** Runs `work` only while holding the Lease; see `LeaderElector.run`. */
export const withLeadership =
  (options: LeaderElectionOptions) =>
  <A, E, R>(
    work: Effect.Effect<A, E, R>,
  ): Effect.Effect<A, E | LeadershipLost | InvalidLeaderElection, R | KubeLeases> =>
    Effect.flatMap(makeLeaderElector(options), (elector) => elector.run(work));
