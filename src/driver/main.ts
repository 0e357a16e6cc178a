#!/usr/bin/env node
import { driverVersion, parseDriverFlags, usage } from "./flags.js";
import { startDriver } from "./server.js";

/** `csi-hostpath-ref`: serves until SIGTERM/SIGINT, then closes the socket and exits 0. */
const main = async (): Promise<number | undefined> => {
  const parsed = parseDriverFlags(process.argv.slice(2), process.env);
  switch (parsed._tag) {
    case "Help":
      process.stdout.write(usage);
      return 0;
    case "Version":
      process.stdout.write(`csi-hostpath-ref ${driverVersion}\n`);
      return 0;
    case "Invalid":
      process.stderr.write(
        `csi-hostpath-ref: invalid flags:\n  ${parsed.problems.join("\n  ")}\n\n${usage}`,
      );
      return 2;
    case "Run": {
      const { options } = parsed;
      const driver = await startDriver(options);
      console.log(
        `${new Date().toISOString()} serving ${options.name} on unix://${driver.socketPath} (root ${options.root}, ${driver.store.list().length} volumes, seed ${options.seed})`,
      );
      const stop = (signal: string) => {
        console.log(`${new Date().toISOString()} ${signal}: shutting down`);
        void driver.close().then(() => process.exit(0));
      };
      process.once("SIGTERM", () => stop("SIGTERM"));
      process.once("SIGINT", () => stop("SIGINT"));
      return undefined;
    }
  }
};

main().then(
  (code) => {
    if (code !== undefined) process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(
      `csi-hostpath-ref: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    process.exit(1);
  },
);
