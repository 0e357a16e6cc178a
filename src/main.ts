#!/usr/bin/env node
import { readFileSync } from "node:fs";
import v8 from "node:v8";
import * as NodeRuntime from "@effect/platform-node/NodeRuntime";
import { Effect, Either, Layer } from "effect";
import * as ConfigLayer from "./layers/Config.js";
import { parseCommandLine } from "./layers/Config.js";
import * as CsiGrpc from "./layers/CsiGrpc.js";
import { CsiConnection } from "./layers/CsiGrpc.js";
import { KubeLeases } from "./layers/Kube.js";
import * as KubeLive from "./layers/KubeLive.js";
import * as Logging from "./layers/Logging.js";
import { startController } from "./programs/Controller.js";
import { connectDriver, Driver } from "./programs/Driver.js";
import { makeLeaderElector, optionsFromConfig, podEnvironment } from "./programs/LeaderElection.js";
import type { ProvisionerConfig } from "./schemas/Config.js";
import { flagSpecs } from "./schemas/Config.js";

// A sidecar's memory is shared with its driver's pod: trade some GC time for a heap that stays
// close to the live set (peak RSS 200 → 127 MiB provisioning 1000 PVCs, see bench/RESULTS.md).
v8.setFlagsFromString("--optimize-for-size");

const version: string = JSON.parse(
  readFileSync(new URL("../package.json", import.meta.url), "utf8"),
).version;

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
const sidecar = (config: ProvisionerConfig, warnings: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    yield* Effect.logInfo(`csi-provisioner ${version}`);
    for (const warning of warnings) yield* Effect.logWarning(warning);
    const driver = yield* connectDriver;
    yield* Effect.logInfo(`Detected CSI driver ${driver.name} (identity ${driver.identity})`);
    const connection = yield* CsiConnection;
    // Its own scope: losing the Lease or stopping closes it, and with it every controller fiber.
    const work = startController.pipe(
      Effect.provideService(Driver, driver),
      Effect.zipRight(connection.lost),
      Effect.scoped,
    );
    if (!config.leaderElection) return yield* work;
    const options = optionsFromConfig(config, driver.name, yield* podEnvironment);
    yield* Effect.logInfo(
      `leader election on Lease ${options.namespace}/${options.name} as ${options.identity}`,
    );
    const elector = yield* makeLeaderElector(options);
    return yield* elector.run(work);
  }).pipe(
    Effect.scoped,
    Effect.provide(
      Layer.mergeAll(
        KubeLive.layer,
        CsiGrpc.layer,
        config.leaderElection ? KubeLive.leasesLayer : withoutLeases,
      ).pipe(Layer.provideMerge(ConfigLayer.layer(config))),
    ),
    Effect.tapError((error) => Effect.logError(error.message)),
    Effect.provide(Logging.layer({ v: config.v, format: config.loggingFormat })),
  );

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
