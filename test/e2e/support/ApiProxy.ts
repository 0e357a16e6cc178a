import { readFileSync } from "node:fs";
import type * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { RunningControlPlane } from "./ControlPlane.js";

/**
 * A TLS-terminating reverse proxy in front of kube-apiserver, for one client (the sidecar). A test
 * can end the client's watches the way a server ends them (the chunked response finishes cleanly,
 * as at a watch timeout) and hold new requests while the apiserver restarts. The client then
 * resumes its watches from a resourceVersion the restarted apiserver no longer serves: a genuine
 * 410 Gone, which a plain restart does not give (the kill cuts the stream, and a client may treat
 * a cut as a reason to relist rather than to resume).
 *
 * It presents the apiserver's own serving certificate (SAN 127.0.0.1), so the client's kubeconfig
 * differs only in its port.
 */
export interface ApiProxy {
  /** https://127.0.0.1:<port> */
  readonly server: string;
  /** Paths (with query) of the watches currently streaming through the proxy. */
  readonly watches: () => ReadonlyArray<string>;
  /** Requests that arrive from now on wait, unsent, until `release`. */
  readonly hold: () => void;
  readonly release: () => void;
  /** How many requests are waiting. */
  readonly heldCount: () => number;
  /** Ends every streaming watch cleanly; returns how many there were. */
  readonly endWatches: () => number;
  readonly close: () => Promise<void>;
}

// Hop-by-hop headers belong to one connection, not to the request or response being relayed.
const hopByHop = ["connection", "keep-alive", "proxy-connection", "upgrade"];
const endToEnd = (headers: http.IncomingHttpHeaders) => {
  const copy = { ...headers };
  for (const name of hopByHop) delete copy[name];
  return copy;
};

export const startApiProxy = async (
  cp: Pick<RunningControlPlane, "server" | "caPem" | "dir">,
): Promise<ApiProxy> => {
  const upstream = new URL(cp.server);
  const pki = join(cp.dir, "pki");
  const watches = new Map<http.ServerResponse, { path: string; end: () => void }>();
  let held: Array<() => void> | undefined;

  const server = https.createServer(
    {
      cert: readFileSync(join(pki, "apiserver.crt")),
      key: readFileSync(join(pki, "apiserver.key")),
    },
    (request, response) => {
      const path = request.url ?? "/";
      const isWatch = /[?&]watch=(1|true)(&|$)/.test(path);
      const forward = () => {
        let endedByUs = false;
        const relay = https.request(
          {
            hostname: upstream.hostname,
            port: upstream.port,
            method: request.method,
            path,
            headers: { ...endToEnd(request.headers), host: upstream.host },
            ca: cp.caPem,
            // A connection per request: a pooled one is dead after an apiserver restart, and its
            // reset would reach the client as a failure instead of the apiserver's answer.
            agent: false,
          },
          (answer) => {
            response.writeHead(answer.statusCode ?? 502, endToEnd(answer.headers));
            answer.pipe(response);
            // An apiserver that dies mid-response cuts the client off too, as it would directly.
            answer.on("error", () => {
              if (!endedByUs) response.destroy();
            });
            if (isWatch) {
              watches.set(response, {
                path,
                end: () => {
                  endedByUs = true;
                  answer.unpipe(response);
                  response.end();
                  relay.destroy();
                },
              });
              response.on("close", () => watches.delete(response));
            }
          },
        );
        relay.on("error", () => {
          if (!endedByUs) response.destroy();
        });
        request.pipe(relay);
      };
      if (held) held.push(forward);
      else forward();
    },
  );
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  const endWatches = () => {
    const all = [...watches.values()];
    for (const watch of all) watch.end();
    return all.length;
  };
  const release = () => {
    const waiting = held ?? [];
    held = undefined;
    for (const forward of waiting) forward();
  };
  return {
    server: `https://127.0.0.1:${port}`,
    watches: () => [...watches.values()].map((w) => w.path),
    hold: () => {
      held ??= [];
    },
    release,
    heldCount: () => held?.length ?? 0,
    endWatches,
    close: async () => {
      release();
      endWatches();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
};
