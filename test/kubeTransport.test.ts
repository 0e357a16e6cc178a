import { readFileSync } from "node:fs";
import * as http2 from "node:http2";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { describe, expect, it } from "@effect/vitest";
import { Effect, type Scope } from "effect";
import { makeKubeRestWith } from "../src/layers/KubeHttp.js";
import { layerNoop } from "../src/layers/Metrics.js";

/**
 * The API client's transport against real local TLS servers: HTTP/2 when the server offers it
 * (one connection for everything), HTTP/1.1 when it does not or when told not to.
 */

const tls = join(import.meta.dirname, "fixtures/tls");
const cert = readFileSync(join(tls, "localhost.crt"), "utf8");
const key = readFileSync(join(tls, "localhost.key"), "utf8");

interface Seen {
  readonly versions: Array<string>;
  /** TLS connections accepted. */
  connections: number;
}

type Handler = (request: http2.Http2ServerRequest, response: http2.Http2ServerResponse) => void;

const json = (response: http2.Http2ServerResponse, body: unknown) => {
  response.setHeader("content-type", "application/json");
  response.end(JSON.stringify(body));
};

const echoPath: Handler = (request, response) => json(response, { path: request.url });

/** An HTTP/2 server that also speaks HTTP/1.1 (as kube-apiserver does), or HTTP/1.1 only. */
const serve = (
  handler: Handler,
  options: { readonly http2: boolean; readonly maxConcurrentStreams?: number },
): Effect.Effect<{ readonly url: string; readonly seen: Seen }, never, Scope.Scope> => {
  const seen: Seen = { versions: [], connections: 0 };
  const onRequest: Handler = (request, response) => {
    seen.versions.push(request.httpVersion);
    handler(request, response);
  };
  const server = options.http2
    ? http2.createSecureServer(
        {
          cert,
          key,
          allowHTTP1: true,
          settings: { maxConcurrentStreams: options.maxConcurrentStreams ?? 100 },
        },
        onRequest,
      )
    : https.createServer({ cert, key }, onRequest as never);
  server.on("secureConnection", () => {
    seen.connections++;
  });
  return Effect.acquireRelease(
    Effect.async<{ readonly url: string; readonly seen: Seen }>((resume) => {
      server.listen(0, "127.0.0.1", () =>
        resume(
          Effect.succeed({
            url: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
            seen,
          }),
        ),
      );
    }),
    () =>
      Effect.sync(() => {
        server.close();
        if ("closeAllConnections" in server) server.closeAllConnections();
      }),
  );
};

const client = (url: string, disableHttp2 = false) =>
  makeKubeRestWith(
    { server: url, ca: cert, headers: {}, skipTLSVerify: false, refresh: false },
    { kubeconfig: "", master: "", qps: 1000, burst: 1000, disableHttp2 },
  );

const get = (rest: Effect.Effect.Success<ReturnType<typeof client>>, path: string) =>
  Effect.map(
    rest.request({ method: "GET", path, verb: "get", resource: "things", object: path }),
    (response) => response.body,
  );

describe("the API client's transport", () => {
  it.scopedLive("speaks HTTP/2 when the server offers it: every request on one connection", () =>
    Effect.gen(function* () {
      const { url, seen } = yield* serve(echoPath, { http2: true });
      const rest = yield* client(url);
      const paths = Array.from({ length: 40 }, (_, i) => `/api/v1/things/${i}`);
      const bodies = yield* Effect.forEach(paths, (path) => get(rest, path), {
        concurrency: "unbounded",
      });
      expect(bodies).toEqual(paths.map((path) => ({ path })));
      expect(new Set(seen.versions)).toEqual(new Set(["2.0"]));
      expect(seen.connections).toBe(1);
    }).pipe(Effect.provide(layerNoop)),
  );

  it.scopedLive("falls back to HTTP/1.1 for a server without HTTP/2, and stays there", () =>
    Effect.gen(function* () {
      const { url, seen } = yield* serve(echoPath, { http2: false });
      const rest = yield* client(url);
      expect(yield* get(rest, "/a")).toEqual({ path: "/a" });
      expect(yield* get(rest, "/b")).toEqual({ path: "/b" });
      expect(seen.versions).toEqual(["1.1", "1.1"]);
    }).pipe(Effect.provide(layerNoop)),
  );

  it.scopedLive("--disable-http2 (DISABLE_HTTP2) keeps HTTP/1.1 even when HTTP/2 is offered", () =>
    Effect.gen(function* () {
      const { url, seen } = yield* serve(echoPath, { http2: true });
      const rest = yield* client(url, true);
      yield* get(rest, "/a");
      expect(seen.versions).toEqual(["1.1"]);
    }).pipe(Effect.provide(layerNoop)),
  );

  it.scopedLive(
    "queues requests beyond the server's concurrent-stream limit instead of failing",
    () =>
      Effect.gen(function* () {
        let open = 0;
        let most = 0;
        const slow: Handler = (request, response) => {
          open++;
          most = Math.max(most, open);
          setTimeout(() => {
            open--;
            json(response, { path: request.url });
          }, 20);
        };
        const { url } = yield* serve(slow, { http2: true, maxConcurrentStreams: 3 });
        // All at once on a fresh client: before the server's SETTINGS arrive, the client does not
        // know its limit yet, and a stream opened beyond it would be refused.
        const rest = yield* client(url);
        const paths = Array.from({ length: 12 }, (_, i) => `/${i}`);
        const bodies = yield* Effect.forEach(paths, (path) => get(rest, path), {
          concurrency: "unbounded",
        });
        expect(bodies).toEqual(paths.map((path) => ({ path })));
        expect(most).toBeLessThanOrEqual(3);
      }).pipe(Effect.provide(layerNoop)),
  );

  it.scopedLive("a watch streams lines over HTTP/2 and ends when the server ends it", () =>
    Effect.gen(function* () {
      const streaming: Handler = (_, response) => {
        response.setHeader("content-type", "application/json");
        response.write(`${JSON.stringify({ type: "ADDED", object: { n: 1 } })}\n`);
        // A line split across two DATA frames is still one event.
        response.write('{"type":"MODIFIED",');
        setTimeout(() => response.end('"object":{"n":2}}\n'), 10);
      };
      const { url, seen } = yield* serve(streaming, { http2: true });
      const rest = yield* client(url);
      const lines: Array<unknown> = [];
      yield* rest.watch("/api/v1/things?watch=1", (line) => lines.push(line));
      expect(lines).toEqual([
        { type: "ADDED", object: { n: 1 } },
        { type: "MODIFIED", object: { n: 2 } },
      ]);
      expect(seen.versions).toEqual(["2.0"]);
    }).pipe(Effect.provide(layerNoop)),
  );

  it.scopedLive("a lost connection fails the requests on it; the next request reconnects", () =>
    Effect.gen(function* () {
      let hangUp = true;
      const flaky: Handler = (request, response) => {
        if (request.url === "/hang-up" && hangUp) {
          hangUp = false;
          request.stream.session?.destroy();
          return;
        }
        json(response, { path: request.url });
      };
      const { url, seen } = yield* serve(flaky, { http2: true });
      const rest = yield* client(url);
      expect(yield* get(rest, "/before")).toEqual({ path: "/before" });
      const lost = yield* Effect.flip(get(rest, "/hang-up"));
      expect(lost.reason).toBe("Unavailable");
      expect(yield* get(rest, "/after")).toEqual({ path: "/after" });
      expect(seen.connections).toBe(2);
    }).pipe(Effect.provide(layerNoop)),
  );
});
