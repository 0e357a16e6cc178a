import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { Duration, Effect, type Scope } from "effect";
import { KubeError, type KubeErrorReason } from "./Kube.js";
import { type Credentials, readTokenFile, resolveCredentials } from "./KubeCredentials.js";
import { makeTransport } from "./KubeTransport.js";
import { Metrics } from "./Metrics.js";
import { makeTokenBucket } from "./TokenBucket.js";

/**
 * A small REST client for the Kubernetes API on Node's HTTP/2 (or HTTP/1.1, see KubeTransport):
 * client-node loads the kubeconfig or in-cluster credentials, we rate-limit requests in Effect and
 * get raw JSON back (decoding only the fields we use is cheaper than client-node's model classes).
 */

export interface KubeConnection {
  readonly kubeconfig: string;
  readonly master: string;
  readonly qps: number;
  readonly burst: number;
  /** client-go's `DISABLE_HTTP2`: HTTP/1.1 even when the server offers HTTP/2. */
  readonly disableHttp2: boolean;
}

export interface RestResponse {
  readonly status: number;
  readonly body: unknown;
}

export interface RequestOptions {
  readonly method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  readonly path: string;
  readonly body?: unknown;
  readonly contentType?: string;
  /** The caller does not read a successful reply: skip parsing it. */
  readonly discardBody?: boolean;
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

const authRefresh = Duration.toMillis("1 minute");

export const makeKubeRest = (
  connection: KubeConnection,
): Effect.Effect<KubeRest, KubeError, Scope.Scope> =>
  Effect.flatMap(resolveCredentials(connection), (credentials) =>
    makeKubeRestWith(credentials, connection),
  );

/** `makeKubeRest` with credentials already resolved (tests talk to a local plain-HTTP server). */
export const makeKubeRestWith = (
  credentials: Credentials,
  connection: KubeConnection,
): Effect.Effect<KubeRest, KubeError, Scope.Scope> =>
  Effect.gen(function* () {
    const metrics = yield* Metrics;
    const server = credentials.server;
    const transport = makeTransport(credentials, {
      maxSockets: Math.max(16, connection.burst),
      disableHttp2: connection.disableHttp2,
    });
    yield* Effect.addFinalizer(() => Effect.sync(() => transport.close()));

    // Tokens rotate (projected ServiceAccount tokens, exec plugins): refresh them in the
    // background so that no request waits for it.
    let headers: Readonly<Record<string, string>> = credentials.headers;
    const refresh = credentials.tokenFile
      ? Effect.map(readTokenFile(credentials.tokenFile), (authorization) =>
          authorization ? { ...headers, Authorization: authorization } : headers,
        )
      : credentials.refresh
        ? Effect.map(
            Effect.orElseSucceed(resolveCredentials(connection), () => credentials),
            (c) => c.headers,
          )
        : undefined;
    if (refresh) {
      headers = yield* refresh;
      yield* refresh.pipe(
        Effect.tap((fresh) =>
          Effect.sync(() => {
            headers = fresh;
          }),
        ),
        Effect.delay(authRefresh),
        Effect.forever,
        Effect.forkScoped,
      );
    }

    const limiter = makeTokenBucket(connection.qps, connection.burst).limit;

    const open = (
      method: string,
      path: string,
      payload: string | undefined,
      contentType: string | undefined,
      onResponse: (status: number, body: Readable) => void,
      onError: (error: Error) => void,
    ) =>
      transport.open(
        {
          method,
          path,
          payload,
          headers: {
            ...headers,
            Accept: "application/json",
            ...(payload === undefined ? {} : { "Content-Type": contentType ?? "application/json" }),
          },
        },
        onResponse,
        onError,
      );

    const unavailable = (options: Omit<RequestOptions, "method" | "path">) => (error: Error) =>
      new KubeError({
        reason: "Unavailable",
        verb: options.verb,
        resource: options.resource,
        object: options.object,
        message: error.message,
      });

    const parse = (text: string): unknown => {
      try {
        return text === "" ? undefined : JSON.parse(text);
      } catch {
        return { message: text.slice(0, 200) };
      }
    };

    /** Collects a reply; `parse: false` skips JSON for a successful reply nobody reads. */
    const collect = (
      status: number,
      body: Readable,
      parseSuccess: boolean,
      done: (status: number, body: unknown) => void,
      onError: (error: Error) => void,
    ) => {
      const chunks: Array<Buffer> = [];
      body.on("data", (chunk: Buffer) => chunks.push(chunk));
      body.on("error", onError);
      body.on("end", () => {
        const ok = status >= 200 && status < 300;
        done(
          status,
          ok && !parseSuccess ? undefined : parse(Buffer.concat(chunks).toString("utf8")),
        );
      });
    };

    /** Counts a request once: by its reply's status, or as `<error>` (client-go's) without one. */
    const counter = (verb: string) => {
      let counted = false;
      return (code: string) => {
        if (counted) return;
        counted = true;
        if (code !== "") metrics.kubeRequest(verb, code);
      };
    };

    // One callback chain per request rather than an Effect per step: this is on every API call.
    const request = (options: RequestOptions): Effect.Effect<RestResponse, KubeError> =>
      limiter(
        Effect.async<RestResponse, KubeError>((resume) => {
          const count = counter(options.verb);
          const fail = (error: Error) => {
            count("<error>");
            resume(Effect.fail(unavailable(options)(error)));
          };
          const cancel = open(
            options.method,
            options.path,
            options.body === undefined ? undefined : JSON.stringify(options.body),
            options.contentType,
            (status, body) => {
              count(String(status));
              collect(
                status,
                body,
                !options.discardBody,
                (status, body) =>
                  resume(
                    status >= 200 && status < 300
                      ? Effect.succeed({ status, body })
                      : Effect.fail(errorFrom(options, status, body)),
                  ),
                fail,
              );
            },
            fail,
          );
          // Our own cancellation is not an API error.
          return Effect.sync(() => {
            count("");
            cancel();
          });
        }),
      );

    const watch = (
      path: string,
      onLine: (line: WatchLine) => void,
    ): Effect.Effect<void, KubeError> =>
      Effect.async<void, KubeError>((resume) => {
        const what = { verb: "watch", resource: path.split("?")[0] ?? path, object: "" };
        const count = counter("watch");
        const fail = (error: Error) => {
          count("<error>");
          resume(Effect.fail(unavailable(what)(error)));
        };
        const cancel = open(
          "GET",
          path,
          undefined,
          undefined,
          (status, reply) => {
            count(String(status));
            if (status !== 200) {
              collect(
                status,
                reply,
                true,
                (status, body) => resume(Effect.fail(errorFrom(what, status, body))),
                fail,
              );
              return;
            }
            const lines = createInterface({ input: reply, crlfDelay: Number.POSITIVE_INFINITY });
            lines.on("line", (line) => {
              if (line.trim() === "") return;
              try {
                onLine(JSON.parse(line) as WatchLine);
              } catch {
                // A torn line at a disconnect: the next watch resumes from the last good version.
              }
            });
            lines.on("close", () => resume(Effect.void));
            // readline re-emits its input's errors on the interface, and an 'error' nobody listens
            // to throws: without this, a watch cut mid-stream (an apiserver restart: "aborted",
            // ECONNRESET) crashed the whole process instead of failing this watch.
            lines.on("error", fail);
            reply.on("error", fail);
          },
          fail,
        );
        return Effect.sync(() => {
          count("");
          cancel();
        });
      });

    return { server, request, watch };
  });
