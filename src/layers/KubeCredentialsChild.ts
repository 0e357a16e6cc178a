/**
 * Resolves Kubernetes client credentials with @kubernetes/client-node and prints them as JSON.
 * It runs as a short-lived child process: client-node's module graph costs the sidecar ~70 MiB of
 * resident memory and a second of start-up, and the sidecar only needs what it computes.
 */
import type * as https from "node:https";
import { KubeConfig } from "@kubernetes/client-node";

interface Request {
  readonly kubeconfig: string;
  readonly master: string;
}

const pem = (value: unknown): string | undefined =>
  value === undefined ? undefined : Buffer.isBuffer(value) ? value.toString("utf8") : String(value);

const main = async () => {
  const request = JSON.parse(process.argv[2] ?? "{}") as Request;
  const config = new KubeConfig();
  if (request.kubeconfig) config.loadFromFile(request.kubeconfig);
  else if (request.master) {
    config.loadFromOptions({
      clusters: [{ name: "master", server: request.master, skipTLSVerify: false }],
      users: [{ name: "anonymous" }],
      contexts: [{ name: "master", cluster: "master", user: "anonymous" }],
      currentContext: "master",
    });
  } else config.loadFromCluster();
  const cluster = config.getCurrentCluster();
  if (!cluster) throw new Error("no current cluster in the kubeconfig");
  const user = config.getCurrentUser();
  const options: https.RequestOptions = {};
  await config.applyToHTTPSOptions(options);
  (options.agent as { destroy?: () => void } | undefined)?.destroy?.();
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(options.headers ?? {})) {
    if (value !== undefined) headers[key] = String(value);
  }
  if (options.auth) headers.Authorization = `Basic ${Buffer.from(options.auth).toString("base64")}`;
  const tokenFile =
    (user as { tokenFile?: string } | null)?.tokenFile ??
    (user?.authProvider?.name === "tokenFile" ? user.authProvider.config?.tokenFile : undefined);
  process.stdout.write(
    JSON.stringify({
      server: (request.master || cluster.server).replace(/\/$/, ""),
      ca: pem(options.ca),
      cert: pem(options.cert),
      key: pem(options.key),
      headers,
      skipTLSVerify: cluster.skipTLSVerify === true,
      tlsServerName: cluster.tlsServerName,
      tokenFile,
      // Exec plugins and auth providers mint short-lived tokens: ask again periodically.
      refresh:
        tokenFile === undefined && (user?.exec !== undefined || user?.authProvider !== undefined),
    }),
  );
};

main().catch((error: unknown) => {
  process.stderr.write(error instanceof Error ? error.message : String(error));
  process.exit(1);
});
