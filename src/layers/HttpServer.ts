import * as http from "node:http";
import * as HttpServerRequest from "@effect/platform/HttpServerRequest";
import * as HttpServerResponse from "@effect/platform/HttpServerResponse";
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer";
import { Cause, Data, Effect, Either, Layer, type Scope } from "effect";
import type { PendingClaim } from "../programs/Controller.js";
import { Metrics, type MetricsService } from "./Metrics.js";

/**
 * The HTTP endpoint of `--http-endpoint`: Prometheus metrics, health checks for the kubelet, and
 * `/debug/pvcs`, which says for every claim pending on us why it has no volume yet (SPEC §8).
 */

export class HttpEndpointError extends Data.TaggedError("HttpEndpointError")<{
  readonly message: string;
}> {}

export interface HttpEndpointOptions {
  /** `[host]:port` as upstream takes it: `:8080` (every interface), `127.0.0.1:0` (any port). */
  readonly address: string;
  /** `--metrics-path`. */
  readonly metricsPath: string;
  /** Fails while leader election is stuck; absent without leader election (always healthy). */
  readonly leaderHealthy?: Effect.Effect<void, unknown>;
  readonly pendingClaims: Effect.Effect<ReadonlyArray<PendingClaim>>;
}

export interface BoundEndpoint {
  readonly hostname: string;
  /** The port actually bound: the one asked for, or the system's choice for port 0. */
  readonly port: number;
}

/** `--http-endpoint`, else its deprecated alias `--metrics-address`; empty: no endpoint. */
export const endpointAddress = (config: {
  readonly httpEndpoint: string;
  readonly metricsAddress: string;
}) => config.httpEndpoint || config.metricsAddress;

/** Go's `host:port` (a bracketed IPv6 host too); an empty host listens on every interface. */
export const parseAddress = (
  address: string,
): Either.Either<{ readonly host?: string; readonly port: number }, string> => {
  const match = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/.exec(address);
  const port = Number(match?.[3]);
  if (!match || port > 65535) {
    return Either.left(`invalid HTTP endpoint "${address}": want [host]:port, such as ":8080"`);
  }
  const host = match[1] ?? match[2] ?? "";
  return Either.right(host === "" ? { port } : { host, port });
};

const text = (body: string, status = 200) =>
  HttpServerResponse.text(body, { status, contentType: "text/plain; charset=utf-8" });

const reasonOf = (error: unknown): string =>
  typeof error === "object" && error !== null && "message" in error
    ? String(error.message)
    : String(error);

/** The weight an Accept header gives a media type: -1 when it does not name it. */
const weightOf = (accept: string, type: string) => {
  let weight = -1;
  for (const range of accept.split(",")) {
    const [name, ...parameters] = range.split(";").map((part) => part.trim());
    if (name?.toLowerCase() !== type) continue;
    const q = parameters.find((p) => p.startsWith("q="));
    weight = Math.max(weight, q === undefined ? 1 : Number(q.slice(2)) || 0);
  }
  return weight;
};

const row = (claim: PendingClaim) => [
  claim.namespace,
  claim.name,
  claim.state,
  String(claim.attempts),
  claim.nextRetryAt === undefined ? "-" : new Date(claim.nextRetryAt).toISOString(),
  // One line per claim, whatever the driver put in its message.
  claim.lastError?.replace(/\s+/g, " ") ?? "-",
];

/** kubectl's layout: columns padded to their widest cell, three spaces apart. */
export const pendingClaimsTable = (claims: ReadonlyArray<PendingClaim>): string => {
  const rows = [
    ["NAMESPACE", "NAME", "STATE", "ATTEMPTS", "NEXT RETRY", "LAST ERROR"],
    ...claims.map(row),
  ];
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((cells) => cells[i]?.length ?? 0)));
  return rows
    .map((cells) =>
      cells
        .map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths?.[i] ?? 0)))
        .join("   "),
    )
    .join("\n")
    .concat("\n");
};

const pendingClaimsJson = (claims: ReadonlyArray<PendingClaim>) =>
  `${JSON.stringify(
    claims.map((claim) => ({
      ...claim,
      lastError: claim.lastError ?? null,
      nextRetryAt:
        claim.nextRetryAt === undefined ? null : new Date(claim.nextRetryAt).toISOString(),
    })),
    null,
    2,
  )}\n`;

const byName = (a: PendingClaim, b: PendingClaim) =>
  a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name);

/** The endpoint as an HttpApp, to serve on any @effect/platform server. */
export const httpApp = (options: HttpEndpointOptions, metrics: MetricsService) =>
  Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest;
    const path = request.url.split("?")[0];
    if (request.method !== "GET" && request.method !== "HEAD") {
      return HttpServerResponse.text("method not allowed\n", {
        status: 405,
        headers: { allow: "GET, HEAD" },
      });
    }
    if (path === options.metricsPath) {
      const exposition = yield* metrics.exposition;
      return HttpServerResponse.text(exposition.text, { contentType: exposition.contentType });
    }
    switch (path) {
      case "/healthz":
        return text("ok\n");
      case "/healthz/leader-election": {
        const health = yield* Effect.either(options.leaderHealthy ?? Effect.void);
        return Either.isRight(health)
          ? text("ok\n")
          : text(`internal server error: ${reasonOf(health.left)}\n`, 500);
      }
      case "/debug/pvcs": {
        const claims = [...(yield* options.pendingClaims)].sort(byName);
        const accept = request.headers.accept ?? "";
        return weightOf(accept, "text/plain") > weightOf(accept, "application/json")
          ? text(pendingClaimsTable(claims))
          : HttpServerResponse.text(pendingClaimsJson(claims), {
              contentType: "application/json",
            });
      }
      default:
        return text("404 page not found\n", 404);
    }
  }).pipe(
    Effect.catchAllCause((cause) =>
      Effect.as(
        Effect.logError(`HTTP endpoint: ${Cause.pretty(cause)}`),
        text("internal server error\n", 500),
      ),
    ),
  );

/**
 * Listens on `options.address` until the scope closes (in-flight requests finish first). Metrics
 * come from the `Metrics` service in context: with none provided, the metrics page is empty.
 */
export const serve = (
  options: HttpEndpointOptions,
): Effect.Effect<BoundEndpoint, HttpEndpointError, Scope.Scope> =>
  Effect.gen(function* () {
    const listen = yield* Either.mapLeft(
      parseAddress(options.address),
      (message) => new HttpEndpointError({ message }),
    );
    const metrics = yield* Metrics;
    const server = yield* NodeHttpServer.make(() => http.createServer(), listen).pipe(
      Effect.mapError(
        (error) =>
          new HttpEndpointError({
            message: `cannot serve HTTP on "${options.address}": ${reasonOf(error.cause)}`,
          }),
      ),
    );
    yield* server.serve(httpApp(options, metrics));
    const bound =
      server.address._tag === "TcpAddress"
        ? { hostname: server.address.hostname, port: server.address.port }
        : { hostname: server.address.path, port: 0 };
    yield* Effect.logInfo(
      `HTTP endpoint on ${options.address} (port ${bound.port}): ${options.metricsPath}, /healthz, /healthz/leader-election, /debug/pvcs`,
    );
    return bound;
  });

/** `serve` for the lifetime of a layer. */
export const layer = (options: HttpEndpointOptions) => Layer.scopedDiscard(serve(options));
