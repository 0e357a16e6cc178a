import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { Effect } from "effect";
import { packageFile } from "../PackageFiles.js";
import { KubeError } from "./Kube.js";

/** Everything needed to talk to the API server, as client-node resolves it. */
export interface Credentials {
  readonly server: string;
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly skipTLSVerify: boolean;
  readonly tlsServerName?: string;
  /** A rotating token (in-cluster ServiceAccount): re-read it, don't cache it. */
  readonly tokenFile?: string;
  /** Short-lived credentials (exec plugin, auth provider): resolve again periodically. */
  readonly refresh: boolean;
}

// A file of its own even in the bundled sidecar: only this child loads @kubernetes/client-node.
const child = packageFile("dist/layers/KubeCredentialsChild.js");

/** Resolves `--kubeconfig`/`--master`/in-cluster credentials in a child process (see the child). */
export const resolveCredentials = (connection: {
  readonly kubeconfig: string;
  readonly master: string;
}) =>
  Effect.async<Credentials, KubeError>((resume) => {
    const process_ = execFile(
      process.execPath,
      [child, JSON.stringify({ kubeconfig: connection.kubeconfig, master: connection.master })],
      { maxBuffer: 16 * 1024 * 1024, timeout: 60_000 },
      (error, stdout, stderr) => {
        if (error) {
          resume(
            Effect.fail(
              new KubeError({
                reason: "Unauthorized",
                verb: "configure",
                resource: "kubeconfig",
                object: connection.kubeconfig,
                message: `Failed to create config: ${stderr.trim() || error.message}`,
              }),
            ),
          );
        } else resume(Effect.succeed(JSON.parse(stdout) as Credentials));
      },
    );
    return Effect.sync(() => process_.kill());
  });

/** The Authorization header for a token file, read now (tokens rotate on disk). */
export const readTokenFile = (path: string) =>
  Effect.tryPromise(() => readFile(path, "utf8")).pipe(
    Effect.map((token) => `Bearer ${token.trim()}`),
    Effect.orElseSucceed(() => undefined),
  );
