import * as http from "node:http";
import * as http2 from "node:http2";
import * as https from "node:https";
import { isIP } from "node:net";
import type { Readable } from "node:stream";
import * as tls from "node:tls";
import type { Credentials } from "./KubeCredentials.js";

/**
 * How requests reach the API server. Over TLS we speak HTTP/2 when the server offers it (ALPN), as
 * client-go does: one connection multiplexes every request and watch, where HTTP/1.1 needs a TLS
 * connection per request in flight (a hundred or more in a provisioning storm, each with its own
 * handshake and buffers). Servers without HTTP/2, plain HTTP, and `DISABLE_HTTP2` (client-go's
 * switch) use a keep-alive HTTP/1.1 pool.
 */
export interface Transport {
  /** Sends one request; returns a function that cancels it. */
  readonly open: (
    request: OutgoingRequest,
    onResponse: (status: number, body: Readable) => void,
    onError: (error: Error) => void,
  ) => () => void;
  readonly close: () => void;
}

export interface OutgoingRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly payload: string | undefined;
}

export interface TransportOptions {
  /** Upper bound of HTTP/1.1 connections. */
  readonly maxSockets: number;
  readonly disableHttp2: boolean;
}

/**
 * A connection that dies silently (a NAT or a node gone) would leave every watch on it waiting
 * forever: ping every 30 s and drop the session when 15 s pass without an answer, as client-go's
 * HTTP/2 health check does (it pings after 30 s without a frame).
 */
const pingEvery = 30_000;
const pingTimeout = 15_000;

export const makeTransport = (credentials: Credentials, options: TransportOptions): Transport => {
  const url = new URL(credentials.server);
  const secure = url.protocol === "https:";
  const servername = credentials.tlsServerName ?? (isIP(url.hostname) ? undefined : url.hostname);
  const tlsOptions: tls.ConnectionOptions = {
    ...(credentials.ca ? { ca: credentials.ca } : {}),
    ...(credentials.cert ? { cert: credentials.cert } : {}),
    ...(credentials.key ? { key: credentials.key } : {}),
    ...(credentials.skipTLSVerify ? { rejectUnauthorized: false } : {}),
    ...(servername ? { servername } : {}),
  };
  // A server URL may carry a path (a proxy's): every request goes below it.
  const prefix = url.pathname === "/" ? "" : url.pathname;
  const http1 = makeHttp1(url, prefix, secure, tlsOptions, options);
  return !secure || options.disableHttp2 ? http1 : makeNegotiated(url, prefix, tlsOptions, http1);
};

const makeHttp1 = (
  url: URL,
  prefix: string,
  secure: boolean,
  tlsOptions: tls.ConnectionOptions,
  options: TransportOptions,
): Transport => {
  const agentOptions = { keepAlive: true, maxSockets: options.maxSockets };
  const agent = secure
    ? new https.Agent({ ...agentOptions, ...tlsOptions })
    : new http.Agent(agentOptions);
  return {
    open: (request, onResponse, onError) => {
      let response: http.IncomingMessage | undefined;
      const outgoing = (secure ? https : http).request(
        {
          protocol: url.protocol,
          hostname: url.hostname,
          port: url.port,
          path: `${prefix}${request.path}`,
          method: request.method,
          agent,
          headers: request.headers,
        },
        (reply) => {
          response = reply;
          onResponse(reply.statusCode ?? 0, reply);
        },
      );
      outgoing.on("error", onError);
      if (request.payload !== undefined) outgoing.write(request.payload);
      outgoing.end();
      return () => {
        outgoing.destroy();
        response?.destroy();
      };
    },
    close: () => agent.destroy(),
  };
};

/**
 * HTTP/2 on one session, opened on first use and again after it closes. The first TLS handshake
 * decides the protocol for good: a server that does not select `h2` gets HTTP/1.1 from then on.
 */
const makeNegotiated = (
  url: URL,
  prefix: string,
  tlsOptions: tls.ConnectionOptions,
  http1: Transport,
): Transport => {
  const authority = `${url.protocol}//${url.host}`;
  let useHttp1 = false;
  let session: http2.ClientHttp2Session | undefined;
  let connecting: Array<(error: Error | undefined) => void> | undefined;
  let closed = false;

  const connect = (ready: (error: Error | undefined) => void) => {
    if (connecting) {
      connecting.push(ready);
      return;
    }
    const waiters = [ready];
    connecting = waiters;
    let settled = false;
    const settle = (error: Error | undefined) => {
      if (settled) return;
      settled = true;
      connecting = undefined;
      for (const waiter of waiters) waiter(error);
    };
    const socket = tls.connect({
      ...tlsOptions,
      host: url.hostname,
      port: Number(url.port || 443),
      ALPNProtocols: ["h2", "http/1.1"],
    });
    socket.once("error", settle);
    socket.once("secureConnect", () => {
      socket.off("error", settle);
      if (socket.alpnProtocol !== "h2") {
        useHttp1 = true;
        socket.destroy();
        settle(undefined);
        return;
      }
      const opened = http2.connect(authority, { createConnection: () => socket });
      const forget = () => {
        if (session === opened) session = undefined;
        settle(new Error("the API server closed the connection"));
      };
      opened.on("close", forget);
      opened.on("goaway", forget);
      // Before the server's SETTINGS this fails the waiting requests; after, it only ends the
      // session (each stream on it fails on its own).
      opened.on("error", forget);
      // Streams opened before the SETTINGS arrive may exceed the server's concurrent-stream limit
      // and be refused; once it is known, Node holds streams beyond it until others finish.
      opened.once("remoteSettings", () => {
        session = opened;
        watchHealth(opened);
        settle(undefined);
      });
    });
  };

  const watchHealth = (opened: http2.ClientHttp2Session) => {
    const timer = setInterval(() => {
      const deadline = setTimeout(
        () => opened.destroy(new Error("HTTP/2 ping to the API server timed out")),
        pingTimeout,
      );
      deadline.unref();
      opened.ping((error) => {
        clearTimeout(deadline);
        if (error) opened.destroy(error);
      });
    }, pingEvery);
    timer.unref();
    opened.on("close", () => clearInterval(timer));
  };

  const open: Transport["open"] = (request, onResponse, onError) => {
    let cancelled = false;
    let cancel: () => void = () => {
      cancelled = true;
    };
    const start = () => {
      if (cancelled) return;
      if (useHttp1) {
        cancel = http1.open(request, onResponse, onError);
        return;
      }
      const current = session;
      if (!current || current.closed || current.destroyed) {
        connect((error) => (error ? onError(error) : start()));
        return;
      }
      // Node lowercases the header names, as HTTP/2 requires.
      const stream = current.request(
        { ":method": request.method, ":path": `${prefix}${request.path}`, ...request.headers },
        { endStream: request.payload === undefined },
      );
      let failed = false;
      const fail = (error: Error) => {
        if (failed || cancelled) return;
        failed = true;
        onError(error);
      };
      stream.on("response", (headers) => onResponse(Number(headers[":status"] ?? 0), stream));
      stream.on("error", fail);
      stream.on("close", () => {
        // A stream reset without an error code (or a session torn down under it) emits no
        // 'error' and no 'end': without this its caller would wait forever.
        if (!stream.readableEnded)
          fail(new Error(`HTTP/2 stream closed early (code ${stream.rstCode ?? "none"})`));
      });
      if (request.payload !== undefined) stream.end(request.payload);
      cancel = () => {
        cancelled = true;
        stream.close(http2.constants.NGHTTP2_CANCEL);
      };
    };
    if (closed) onError(new Error("the API client is closed"));
    else start();
    return () => cancel();
  };

  return {
    open,
    close: () => {
      closed = true;
      session?.close();
      http1.close();
    },
  };
};
