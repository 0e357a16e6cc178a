#!/usr/bin/env -S node --max-semi-space-size=2
import { readFileSync } from "node:fs";
import v8 from "node:v8";
import * as NodeRuntime from "@effect/platform-node/NodeRuntime";
import { Cause, Effect, Either, Fiber, Layer, Option, Ref } from "effect";
import * as ConfigLayer from "./layers/Config.js";
import { parseCommandLine } from "./layers/Config.js";
import * as CsiGrpc from "./layers/CsiGrpc.js";
import { CsiConnection } from "./layers/CsiGrpc.js";
import { KubeLeases } from "./layers/Kube.js";
import * as KubeLive from "./layers/KubeLive.js";
import * as Logging from "./layers/Logging.js";
import * as Metrics from "./layers/Metrics.js";
import { packageFile } from "./PackageFiles.js";
import {
  type PendingClaim,
  type RunningController,
  startController,
} from "./programs/Controller.js";
import { connectDriver, Driver } from "./programs/Driver.js";
import { makeLeaderElector, optionsFromConfig, podEnvironment } from "./programs/LeaderElection.js";
import type { ProvisionerConfig } from "./schemas/Config.js";
import { flagSpecs } from "./schemas/Config.js";

// A sidecar's memory is shared with its driver's pod: trade some GC time for a heap that stays
// close to the live set (peak RSS ~155 → ~92 MiB provisioning 1000 PVCs, for ~5% more CPU; see
// bench/RESULTS.md).
v8.setFlagsFromString("--optimize-for-size");

const version: string = JSON.parse(readFileSync(packageFile("package.json"), "utf8")).version;

const usage = () =>
  [
    "Usage: csi-provisioner [flags]",
    "",
    "A Kubernetes CSI external-provisioner: provisions PersistentVolumes for PVCs of the CSI driver",
    "at --csi-address. Every flag can also be set as CSI_PROVISIONER_<FLAG> in the environment.",
    "",
    ...flagSpecs.map((spec) => {
      const name = `  --${spec.name}${spec.type === "bool" ? "" : ` ${spec.type}`}`;
      const fallback = spec.default === "" ? "" : ` (default ${JSON.stringify(spec.default)})`;
      return `${name.padEnd(44)} ${spec.help}${fallback}`;
    }),
    `  ${"--version".padEnd(42)} Print the version and exit.`,
  ].join("\n");

/** Leases are only spoken to with --leader-election: no second API connection otherwise. */
const withoutLeases = Layer.succeed(KubeLeases, {
  getLease: () => Effect.dieMessage("leader election is off"),
  createLease: () => Effect.dieMessage("leader election is off"),
  updateLease: () => Effect.dieMessage("leader election is off"),
});

/**
 * The sidecar: connect to the driver (SPEC §1), then, holding the Lease when `--leader-election`
 * is on, reconcile until stopped, the driver is lost, or leadership is lost.
 */
const sidecar = (config: ProvisionerConfig, warnings: ReadonlyArray<string>) => {
  const endpoint = config.httpEndpoint || config.metricsAddress;
  return Effect.gen(function* () {
    yield* Effect.logInfo(`csi-provisioner ${version}`);
    for (const warning of warnings) yield* Effect.logWarning(warning);
    const driver = yield* connectDriver;
    yield* Effect.logInfo(`Detected CSI driver ${driver.name} (identity ${driver.identity})`);
    const connection = yield* CsiConnection;
    const running = yield* Ref.make(Option.none<RunningController>());

    // Its own scope: losing the Lease or stopping closes it, and with it every controller fiber.
    // A stop (SIGTERM, SIGINT) first drains: operations in progress finish instead of breaking.
    // Losing the Lease does not drain: another replica may hold it already, so the work stops at
    // once (upstream exits on the spot). Both reach the work as an interruption; `stopping`, set
    // before a stop interrupts the work (see below), tells them apart.
    const stopping = yield* Ref.make(false);
    const work = Effect.gen(function* () {
      const controller = yield* startController.pipe(Effect.provideService(Driver, driver));
      yield* Ref.set(running, Option.some(controller));
      return yield* connection.lost.pipe(
        Effect.onInterrupt(() => Effect.whenEffect(controller.drain, Ref.get(stopping))),
      );
    }).pipe(Effect.ensuring(Ref.set(running, Option.none())), Effect.scoped);

    const election = config.leaderElection
      ? optionsFromConfig(config, driver.name, yield* podEnvironment)
      : undefined;
    const elector = election ? yield* makeLeaderElector(election) : undefined;
    if (endpoint) {
      // Loaded only when asked for: the HTTP server's modules cost ~20 MiB of memory.
      const HttpServer = yield* Effect.promise(() => import("./layers/HttpServer.js"));
      const pendingClaims = Effect.flatMap(
        Ref.get(running),
        Option.match({
          onNone: () => Effect.succeed<ReadonlyArray<PendingClaim>>([]),
          onSome: (controller) => controller.pendingClaims,
        }),
      );
      // Served before the Lease is ours: replicas waiting for it still answer their probes.
      // `serve` logs the address and the port bound itself (one line per event, not two).
      yield* HttpServer.serve({
        address: endpoint,
        metricsPath: config.metricsPath,
        pendingClaims,
        ...(elector ? { leaderHealthy: elector.healthy } : {}),
      });
    }
    if (elector && election) {
      yield* Effect.logInfo(
        `waiting to lead on Lease ${election.namespace}/${election.name} as ${election.identity}`,
      );
    }
    // In a fiber of its own: a stop interrupts this fiber (runMain, on SIGTERM/SIGINT), which
    // marks the stop before interrupting the work. Were the work run here, the stop would reach
    // it first, through the elector's scope, indistinguishable from a lost Lease.
    const worker = yield* Effect.fork(elector ? elector.run(work) : work);
    return yield* Fiber.join(worker).pipe(
      Effect.onInterrupt(() => Effect.zipRight(Ref.set(stopping, true), Fiber.interrupt(worker))),
    );
  }).pipe(
    Effect.scoped,
    Effect.provide(
      Layer.mergeAll(
        KubeLive.layer,
        CsiGrpc.layer,
        config.leaderElection ? KubeLive.leasesLayer : withoutLeases,
      ).pipe(Layer.provideMerge(ConfigLayer.layer(config))),
    ),
    Effect.provide(endpoint ? Metrics.layerPrometheus() : Metrics.layerNoop),
    Effect.tapError((error) => Effect.logError(error.message)),
    Effect.tapDefect((defect) => Effect.logError(`unexpected failure: ${Cause.pretty(defect)}`)),
    Effect.provide(Logging.layer({ v: config.v, format: config.loggingFormat })),
  );
};

const commandLine = parseCommandLine(process.argv.slice(2), process.env);
if (Either.isLeft(commandLine)) {
  process.stderr.write(`${commandLine.left.message}\n\nRun with --help for the list of flags.\n`);
  process.exit(1);
}
switch (commandLine.right._tag) {
  case "Help":
    process.stdout.write(`${usage()}\n`);
    break;
  case "Version":
    process.stdout.write(`${process.argv[1] ?? "csi-provisioner"} ${version}\n`);
    break;
  case "Run":
    sidecar(commandLine.right.config, commandLine.right.warnings).pipe(
      // Logging.layer is the only logger: runMain's default pretty logger would print every line a
      // second time, in another format (breaking --logging-format=json for log collectors).
      NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true }),
    );
}
