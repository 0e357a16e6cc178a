import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { Duration, Either } from "effect";
import { parseGoDuration } from "../schemas/GoDuration.js";
import { parseQuantity } from "../schemas/Quantity.js";

/** Fault injection for one RPC: an optional delay, then a failure at a rate. */
export interface Fault {
  readonly delayMs: number;
  /** Only the first N calls are delayed; undefined: every call. */
  readonly delayCalls: number | undefined;
  readonly failRate: number;
  readonly failCode: grpc.status;
}

export interface DriverOptions {
  /** Socket path, without `unix://`. */
  readonly endpoint: string;
  readonly root: string;
  readonly name: string;
  readonly vendorVersion: string;
  /** Total bytes all volumes may take; undefined: the free space of the root's file system. */
  readonly capacityBytes: bigint | undefined;
  readonly topology: boolean;
  readonly nodeId: string;
  readonly zone: string | undefined;
  readonly publishUnpublish: boolean;
  readonly singleNodeMultiWriter: boolean;
  readonly clone: boolean;
  /** Probe answers not-ready until this long after start. */
  readonly readyAfterMs: number;
  readonly create: Fault;
  readonly delete: Fault;
  readonly seed: number;
}

export const defaultDriverName = "hostpath.csi.effect.dev";
export const driverVersion = "0.1.0";

export const defaultDriverOptions = (): DriverOptions => ({
  endpoint: "/run/csi/socket",
  root: join(tmpdir(), "csi-hostpath-ref"),
  name: defaultDriverName,
  vendorVersion: driverVersion,
  capacityBytes: undefined,
  topology: false,
  nodeId: hostname(),
  zone: undefined,
  publishUnpublish: false,
  singleNodeMultiWriter: false,
  clone: false,
  readyAfterMs: 0,
  create: noFault,
  delete: noFault,
  seed: Date.now() % 2 ** 31,
});

export const noFault: Fault = {
  delayMs: 0,
  delayCalls: undefined,
  failRate: 0,
  failCode: grpc.status.UNAVAILABLE,
};

export const usage = `csi-hostpath-ref: a reference CSI driver (Identity + Controller) keeping volumes as
directories, for tests and demos of csi-provisioner.

Usage: csi-hostpath-ref [flags]

  --endpoint=unix:///path      socket to serve on (a plain path works too; $CSI_ENDPOINT)
                               default /run/csi/socket; a stale socket file is removed
  --root=DIR                   where volumes live: DIR/<id>/ plus DIR/<id>.json (default $TMPDIR/csi-hostpath-ref)
  --name=NAME                  driver name (default ${defaultDriverName})
  --capacity=QUANTITY          total size of all volumes, e.g. 10Gi (default: free space of --root)
  --topology                   advertise VOLUME_ACCESSIBILITY_CONSTRAINTS with the segments below
  --node-id=ID                 segment topology.${defaultDriverName}/node (default: host name)
  --zone=ZONE                  adds segment topology.kubernetes.io/zone
  --publish-unpublish          advertise PUBLISH_UNPUBLISH_VOLUME (ControllerPublish/Unpublish)
  --single-node-multi-writer   advertise SINGLE_NODE_MULTI_WRITER
  --clone                      advertise CLONE_VOLUME (a clone copies the source directory)
  --ready-after=DURATION       Probe reports not ready until this long after start (e.g. 2s)

Fault injection (deterministic with --seed):
  --delay-create=DURATION      wait before each CreateVolume (Go syntax: 500ms, 15s)
  --delay-create-calls=N       delay only the first N CreateVolume calls
  --fail-create-rate=0..1      fraction of CreateVolume calls that fail (after the delay, before any work)
  --fail-create-code=CODE      their gRPC code, e.g. Unavailable, RESOURCE_EXHAUSTED, 13 (default Unavailable)
  --delay-delete, --delay-delete-calls, --fail-delete-rate, --fail-delete-code   the same for DeleteVolume
  --seed=N                     seed of the fault dice (default: time based)

  --help, --version
`;

/** Accepts gRPC code names as grpc-go prints them (ResourceExhausted), as enums (RESOURCE_EXHAUSTED), or numbers. */
export const parseStatusCode = (text: string): grpc.status | undefined => {
  if (/^\d+$/.test(text)) {
    const code = Number(text);
    return code >= 0 && code <= 16 ? (code as grpc.status) : undefined;
  }
  const key = text
    .replace(/([a-z])([A-Z])/g, "$1_$2")
    .toUpperCase()
    .replace(/^CANCELED$/, "CANCELLED");
  const code = (grpc.status as unknown as Record<string, number | undefined>)[key];
  return typeof code === "number" ? (code as grpc.status) : undefined;
};

export type ParsedCommandLine =
  | { readonly _tag: "Run"; readonly options: DriverOptions }
  | { readonly _tag: "Help" }
  | { readonly _tag: "Version" }
  | { readonly _tag: "Invalid"; readonly problems: ReadonlyArray<string> };

const booleanFlags = new Set([
  "topology",
  "publish-unpublish",
  "single-node-multi-writer",
  "clone",
]);

/** Reads `--flag=value`, `--flag value` and bare booleans; every problem is reported at once. */
export const parseDriverFlags = (
  argv: ReadonlyArray<string>,
  env: Readonly<Record<string, string | undefined>> = {},
): ParsedCommandLine => {
  const problems: Array<string> = [];
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const match = /^--?([^=]+)(?:=(.*))?$/s.exec(arg);
    if (!match) {
      problems.push(`unexpected argument "${arg}"`);
      continue;
    }
    const name = match[1] as string;
    if (name === "help" || name === "h") return { _tag: "Help" };
    if (name === "version") return { _tag: "Version" };
    let value = match[2];
    if (value === undefined) {
      if (booleanFlags.has(name)) value = "true";
      else if (i + 1 < argv.length) value = argv[++i] as string;
      else {
        problems.push(`flag needs an argument: --${name}`);
        continue;
      }
    }
    values.set(name, value);
  }

  const defaults = defaultDriverOptions();
  const used = new Set<string>();
  const take = (name: string): string | undefined => {
    used.add(name);
    return values.get(name);
  };
  const bool = (name: string, fallback: boolean): boolean => {
    const value = take(name);
    if (value === undefined) return fallback;
    if (/^(true|1|yes)$/i.test(value)) return true;
    if (/^(false|0|no)$/i.test(value)) return false;
    problems.push(`--${name}: expected true or false, got "${value}"`);
    return fallback;
  };
  const duration = (name: string): number => {
    const value = take(name);
    if (value === undefined) return 0;
    return Either.match(parseGoDuration(value), {
      onLeft: (message) => {
        problems.push(`--${name}: expected ${message}`);
        return 0;
      },
      onRight: (d) => Duration.toMillis(d),
    });
  };
  const count = (name: string): number | undefined => {
    const value = take(name);
    if (value === undefined) return undefined;
    if (/^\d+$/.test(value)) return Number(value);
    problems.push(`--${name}: expected a whole number, got "${value}"`);
    return undefined;
  };
  const rate = (name: string): number => {
    const value = take(name);
    if (value === undefined) return 0;
    const n = Number(value);
    if (value.trim() !== "" && Number.isFinite(n) && n >= 0 && n <= 1) return n;
    problems.push(`--${name}: expected a number between 0 and 1, got "${value}"`);
    return 0;
  };
  const code = (name: string): grpc.status => {
    const value = take(name);
    if (value === undefined) return noFault.failCode;
    const parsed = parseStatusCode(value);
    if (parsed !== undefined && parsed !== grpc.status.OK) return parsed;
    problems.push(`--${name}: expected a gRPC code other than OK, got "${value}"`);
    return noFault.failCode;
  };
  const fault = (rpc: "create" | "delete"): Fault => ({
    delayMs: duration(`delay-${rpc}`),
    delayCalls: count(`delay-${rpc}-calls`),
    failRate: rate(`fail-${rpc}-rate`),
    failCode: code(`fail-${rpc}-code`),
  });

  const endpointFlag = take("endpoint");
  const csiAddressFlag = take("csi-address");
  const endpointText = endpointFlag ?? csiAddressFlag ?? env.CSI_ENDPOINT;
  const endpoint =
    endpointText === undefined ? defaults.endpoint : endpointText.replace(/^unix:(\/\/)?/, "");
  if (endpoint === "") problems.push("--endpoint: expected a socket path");

  let capacityBytes: bigint | undefined;
  const capacityText = take("capacity");
  if (capacityText !== undefined) {
    Either.match(parseQuantity(capacityText), {
      onLeft: (message) => problems.push(`--capacity: ${message}`),
      onRight: (bytes) => {
        if (bytes < 0n) problems.push(`--capacity: must not be negative, got "${capacityText}"`);
        else capacityBytes = bytes;
      },
    });
  }

  const seedText = take("seed");
  let seed = defaults.seed;
  if (seedText !== undefined) {
    if (/^-?\d+$/.test(seedText)) seed = Number(seedText);
    else problems.push(`--seed: expected a whole number, got "${seedText}"`);
  }

  const options: DriverOptions = {
    endpoint,
    root: take("root") ?? defaults.root,
    name: take("name") ?? defaults.name,
    vendorVersion: take("vendor-version") ?? defaults.vendorVersion,
    capacityBytes,
    topology: bool("topology", false),
    nodeId: take("node-id") ?? defaults.nodeId,
    zone: take("zone"),
    publishUnpublish: bool("publish-unpublish", false),
    singleNodeMultiWriter: bool("single-node-multi-writer", false),
    clone: bool("clone", false),
    readyAfterMs: duration("ready-after"),
    create: fault("create"),
    delete: fault("delete"),
    seed,
  };
  for (const name of values.keys()) {
    if (!used.has(name)) problems.push(`unknown flag: --${name}`);
  }
  if (options.name === "") problems.push("--name: must not be empty");
  return problems.length > 0 ? { _tag: "Invalid", problems } : { _tag: "Run", options };
};
