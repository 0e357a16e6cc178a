import * as http from "node:http";
import * as https from "node:https";
import { createInterface } from "node:readline";
import { KubeConfig } from "@kubernetes/client-node";
import { Duration, Effect, RateLimiter, type Scope } from "effect";
import { KubeError, type KubeErrorReason } from "./Kube.js";

/**
 * A small REST client for the Kubernetes API on node:http(s): client-node loads the kubeconfig or
 * in-cluster credentials, we keep one keep-alive agent, rate-limit requests in Effect, and get raw
 * JSON back (decoding only the fields we use is cheaper than client-node's model classes).
 */

export interface KubeConnection {
  readonly kubeconfig: string;
  readonly master: string;
  readonly qps: number;
  readonly burst: number;
}

export interface RestResponse {
  readonly status: number;
  readonly body: unknown;
}

export interface RequestOptions {
  readonly method: "GET" | "POST" | "PATCH" | "DELETE";
  readonly path: string;
  readonly body?: unknown;
  readonly contentType?: string;
  /** For error messages: what was asked, about which object. */
  readonly verb: string;
  readonly resource: string;
  readonly object: string;
}

export interface WatchLine {
  readonly type: string;
  readonly object: unknown;
}

export interface KubeRest {
  readonly server: string;
  readonly request: (options: RequestOptions) => Effect.Effect<RestResponse, KubeError>;
  /** Opens a watch; `onLine` gets each event; resolves when the server ends the stream. */
  readonly watch: (
    path: string,
    onLine: (line: WatchLine) => void,
  ) => Effect.Effect<void, KubeError>;
}

const reasonOf = (status: number, body: unknown): KubeErrorReason => {
  const reason = (body as { reason?: string } | undefined)?.reason;
  if (status === 404) return "NotFound";
  if (status === 409) return reason === "AlreadyExists" ? "AlreadyExists" : "Conflict";
  if (status === 410) return "Gone";
  if (status === 422) return "Invalid";
  if (status === 403) return "Forbidden";
  if (status === 401) return "Unauthorized";
  if (status === 429) return "TooManyRequests";
  return status >= 500 ? "ServerError" : "Invalid";
};

export const errorFrom = (
  options: Omit<RequestOptions, "method" | "path">,
  status: number,
  body: unknown,
) =>
  new KubeError({
    reason: reasonOf(status, body),
    verb: options.verb,
    resource: options.resource,
    object: options.object,
    message:
      (body as { message?: string } | undefined)?.message ??
      `${options.verb} ${options.resource} ${options.object}: HTTP ${status}`,
  });

const loadConfig = (connection: KubeConnection): KubeConfig => {
  const config = new KubeConfig();
  if (connection.kubeconfig) config.loadFromFile(connection.kubeconfig);
  else if (connection.master) {
    config.loadFromOptions({
      clusters: [{ name: "master", server: connection.master, skipTLSVerify: false }],
      users: [{ name: "anonymous" }],
      contexts: [{ name: "master", cluster: "master", user: "anonymous" }],
      currentContext: "master",
    });
  } else config.loadFromCluster();
  return config;
};

/** Credentials and TLS material as client-node resolves them (tokens may rotate: re-read often). */
const resolveAuth = async (config: KubeConfig) => {
  const options: https.RequestOptions = {};
  await config.applyToHTTPSOptions(options);
  (options.agent as http.Agent | undefined)?.destroy();
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(options.headers ?? {})) {
    if (value !== undefined) headers[key] = String(value);
  }
  if (options.auth) headers.Authorization = `Basic ${Buffer.from(options.auth).toString("base64")}`;
  return { headers, tls: options };
};

const authRefresh = Duration.toMillis("1 minute");

export const makeKubeRest = (
  connection: KubeConnection,
): Effect.Effect<KubeRest, KubeError, Scope.Scope> =>
  Effect.gen(function* () {
    const config = yield* Effect.try({
      try: () => loadConfig(connection),
      catch: (e) =>
        new KubeError({
          reason: "Unauthorized",
          verb: "configure",
          resource: "kubeconfig",
          object: connection.kubeconfig,
          message: `Failed to create config: ${String(e)}`,
        }),
    });
    const cluster = config.getCurrentCluster();
    if (!cluster) {
      return yield* new KubeError({
        reason: "Invalid",
        verb: "configure",
        resource: "kubeconfig",
        object: "",
        message: "no current cluster in kubeconfig",
      });
    }
    const server = (connection.master || cluster.server).replace(/\/$/, "");
    const url = new URL(server);
    const secure = url.protocol === "https:";
    let auth = yield* Effect.tryPromise({
      try: () => resolveAuth(config),
      catch: (e) =>
        new KubeError({
          reason: "Unauthorized",
          verb: "authenticate",
          resource: "kubeconfig",
          object: "",
          message: String(e),
        }),
    });
    let authAt = Date.now();
    const agent = secure
      ? new https.Agent({
          keepAlive: true,
          maxSockets: Math.max(16, connection.burst),
          ca: auth.tls.ca,
          cert: auth.tls.cert,
          key: auth.tls.key,
          ...(cluster.skipTLSVerify ? { rejectUnauthorized: false } : {}),
          ...(cluster.tlsServerName ? { servername: cluster.tlsServerName } : {}),
        })
      : new http.Agent({ keepAlive: true, maxSockets: Math.max(16, connection.burst) });
    yield* Effect.addFinalizer(() => Effect.sync(() => agent.destroy()));
    const headers = Effect.promise(async () => {
      if (Date.now() - authAt > authRefresh) {
        auth = await resolveAuth(config).catch(() => auth);
        authAt = Date.now();
      }
      return auth.headers;
    });

    // A token bucket of `burst` tokens refilled at `qps` per second, as client-go's flowcontrol.
    const limiter = yield* RateLimiter.make({
      limit: Math.max(1, connection.burst),
      interval: Duration.millis(
        (1000 * Math.max(1, connection.burst)) / Math.max(connection.qps, 0.001),
      ),
      algorithm: "token-bucket",
    });

    const send = (
      method: string,
      path: string,
      extraHeaders: Record<string, string>,
      payload: string | undefined,
      signal?: AbortSignal,
    ) =>
      Effect.flatMap(headers, (base) =>
        Effect.async<http.IncomingMessage, Error>((resume) => {
          const request = (secure ? https : http).request(
            {
              protocol: url.protocol,
              hostname: url.hostname,
              port: url.port,
              path: `${url.pathname === "/" ? "" : url.pathname}${path}`,
              method,
              agent,
              headers: { ...base, Accept: "application/json", ...extraHeaders },
              ...(signal ? { signal } : {}),
            },
            (response) => resume(Effect.succeed(response)),
          );
          request.on("error", (error) => resume(Effect.fail(error)));
          if (payload !== undefined) request.write(payload);
          request.end();
          return Effect.sync(() => request.destroy());
        }),
      );

    const readBody = (response: http.IncomingMessage) =>
      Effect.async<string, Error>((resume) => {
        const chunks: Array<Buffer> = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => resume(Effect.succeed(Buffer.concat(chunks).toString("utf8"))));
        response.on("error", (error) => resume(Effect.fail(error)));
      });

    const unavailable = (options: Omit<RequestOptions, "method" | "path">) => (error: Error) =>
      new KubeError({
        reason: "Unavailable",
        verb: options.verb,
        resource: options.resource,
        object: options.object,
        message: error.message,
      });

    const request = (options: RequestOptions): Effect.Effect<RestResponse, KubeError> =>
      limiter(
        Effect.gen(function* () {
          const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
          const response = yield* send(
            options.method,
            options.path,
            payload === undefined
              ? {}
              : { "Content-Type": options.contentType ?? "application/json" },
            payload,
          );
          const text = yield* readBody(response);
          let body: unknown;
          try {
            body = text === "" ? undefined : JSON.parse(text);
          } catch {
            body = { message: text.slice(0, 200) };
          }
          const status = response.statusCode ?? 0;
          if (status < 200 || status >= 300)
            return yield* Effect.fail(errorFrom(options, status, body));
          return { status, body };
        }).pipe(
          Effect.catchIf(
            (e): e is Error => e instanceof Error && !(e instanceof KubeError),
            (e) => Effect.fail(unavailable(options)(e)),
          ),
        ),
      ) as Effect.Effect<RestResponse, KubeError>;

    const watch = (
      path: string,
      onLine: (line: WatchLine) => void,
    ): Effect.Effect<void, KubeError> =>
      Effect.gen(function* () {
        const controller = new AbortController();
        const what = { verb: "watch", resource: path.split("?")[0] ?? path, object: "" };
        const response = yield* send("GET", path, {}, undefined, controller.signal).pipe(
          Effect.mapError(unavailable(what)),
        );
        const status = response.statusCode ?? 0;
        if (status !== 200) {
          const text = yield* readBody(response).pipe(Effect.mapError(unavailable(what)));
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch {
            body = { message: text.slice(0, 200) };
          }
          return yield* Effect.fail(errorFrom(what, status, body));
        }
        yield* Effect.async<void, KubeError>((resume) => {
          const lines = createInterface({ input: response, crlfDelay: Number.POSITIVE_INFINITY });
          lines.on("line", (line) => {
            if (line.trim() === "") return;
            try {
              onLine(JSON.parse(line) as WatchLine);
            } catch {
              // A torn line at a disconnect: the next watch resumes from the last good version.
            }
          });
          lines.on("close", () => resume(Effect.void));
          // readline re-emits its input's errors on the interface, and an 'error' nobody listens to
          // throws: without this, a watch cut mid-stream (an apiserver restart: "aborted",
          // ECONNRESET) crashed the whole process instead of failing this watch.
          lines.on("error", (error) => resume(Effect.fail(unavailable(what)(error))));
          response.on("error", (error) => resume(Effect.fail(unavailable(what)(error))));
          return Effect.sync(() => {
            controller.abort();
            response.destroy();
          });
        });
      });

    return { server, request, watch };
  });
