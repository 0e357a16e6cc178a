import { Duration, Either, ParseResult, Schema } from "effect";
import { GoDurationFromString } from "./GoDuration.js";

/**
 * The sidecar's configuration: every flag of upstream csi-provisioner (same names, same defaults
 * unless README.md says why not), each also settable through an environment variable.
 */

const Bool = Schema.transformOrFail(Schema.String, Schema.Boolean, {
  strict: true,
  decode: (text, _, ast) => {
    if (["1", "t", "T", "true", "TRUE", "True"].includes(text)) return ParseResult.succeed(true);
    if (["0", "f", "F", "false", "FALSE", "False"].includes(text))
      return ParseResult.succeed(false);
    return ParseResult.fail(new ParseResult.Type(ast, text, `true or false, got "${text}"`));
  },
  encode: (value) => ParseResult.succeed(String(value)),
});

const integer = (min: number) =>
  Schema.compose(
    Schema.NumberFromString,
    Schema.Number.pipe(
      Schema.int({ message: () => "an integer" }),
      Schema.greaterThanOrEqualTo(min, { message: () => `an integer of at least ${min}` }),
    ),
  ).annotations({ message: () => `an integer of at least ${min}` });

const Float = Schema.compose(
  Schema.NumberFromString,
  Schema.Number.pipe(Schema.finite()),
).annotations({
  message: () => "a number",
});

const Duration_ = GoDurationFromString;
const PositiveDuration = Schema.compose(
  GoDurationFromString,
  Schema.DurationFromSelf.pipe(
    Schema.filter((d) => Duration.greaterThan(d, Duration.zero) || "a duration greater than 0"),
  ),
);

/** `key=value,key2=value2`, as Kubernetes' map flags take it. */
const pairs = (text: string, separator: RegExp): Array<[string, string]> | undefined => {
  if (text.trim() === "") return [];
  const entries = text.split(",").map((pair) => pair.split(separator).map((s) => s.trim()));
  return entries.every((e) => e.length === 2 && e[0] !== "")
    ? (entries as Array<[string, string]>)
    : undefined;
};

const FeatureGates = Schema.transformOrFail(
  Schema.String,
  Schema.Record({ key: Schema.String, value: Schema.Boolean }),
  {
    strict: true,
    decode: (text, _, ast) => {
      const entries = pairs(text, /=/);
      const gates: Record<string, boolean> = {};
      for (const [key, value] of entries ?? [["", ""]]) {
        const parsed = Schema.decodeEither(Bool)(value);
        if (Either.isLeft(parsed) || key === "") {
          return ParseResult.fail(
            new ParseResult.Type(
              ast,
              text,
              `Name=true|false pairs separated by commas, got "${text}"`,
            ),
          );
        }
        gates[key] = parsed.right;
      }
      return ParseResult.succeed(gates);
    },
    encode: (gates) =>
      ParseResult.succeed(
        Object.entries(gates)
          .map(([k, v]) => `${k}=${v}`)
          .join(","),
      ),
  },
);

const Labels = Schema.transformOrFail(
  Schema.String,
  Schema.Record({ key: Schema.String, value: Schema.String }),
  {
    strict: true,
    decode: (text, _, ast) => {
      // Upstream's syntax is key:value; key=value is accepted too (neither may be in a label).
      const entries = pairs(text, /[:=]/);
      return entries
        ? ParseResult.succeed(Object.fromEntries(entries))
        : ParseResult.fail(
            new ParseResult.Type(ast, text, `key:value pairs separated by commas, got "${text}"`),
          );
    },
    encode: (labels) =>
      ParseResult.succeed(
        Object.entries(labels)
          .map(([k, v]) => `${k}=${v}`)
          .join(","),
      ),
  },
);

const NonEmpty = (what: string) =>
  Schema.String.pipe(Schema.minLength(1, { message: () => `a non-empty ${what}` }));

const CsiAddress = Schema.transform(NonEmpty("socket path"), Schema.String, {
  strict: true,
  decode: (address) => address.replace(/^unix:\/\//, ""),
  encode: (path) => path,
});

const LoggingFormat = Schema.String.pipe(
  Schema.filter((format): format is "text" | "json" => format === "text" || format === "json", {
    message: () => 'either "text" or "json"',
  }),
);

export interface FlagSpec {
  readonly name: string;
  readonly type: "string" | "bool" | "int" | "float" | "duration" | "map";
  readonly default: string;
  readonly help: string;
  /** Accepted so upstream manifests keep working, but it changes nothing here. */
  readonly noop?: true;
}

const flag = (
  name: string,
  type: FlagSpec["type"],
  defaultValue: string,
  help: string,
  noop?: true,
): FlagSpec =>
  noop
    ? { name, type, default: defaultValue, help, noop }
    : { name, type, default: defaultValue, help };

export const flagSpecs: ReadonlyArray<FlagSpec> = [
  flag(
    "csi-address",
    "string",
    "/run/csi/socket",
    "The gRPC endpoint of the CSI driver (a Unix socket path, unix:// optional).",
  ),
  flag("timeout", "duration", "10s", "Timeout of every call to the CSI driver."),
  flag(
    "retry-interval-start",
    "duration",
    "1s",
    "Initial retry interval of failed provisioning or deletion; it doubles with each failure.",
  ),
  flag(
    "retry-interval-max",
    "duration",
    "5m",
    "Maximum retry interval of failed provisioning or deletion.",
  ),
  flag(
    "worker-threads",
    "int",
    "100",
    "Simultaneous CreateVolume calls, and separately simultaneous DeleteVolume calls.",
  ),
  flag(
    "volume-name-prefix",
    "string",
    "pvc",
    "Prefix of the names of created volumes and PersistentVolumes.",
  ),
  flag(
    "volume-name-uuid-length",
    "int",
    "-1",
    "Keep this many characters of the dash-less PVC UID in volume names (-1: the whole UID with dashes).",
  ),
  flag("default-fstype", "string", "", "Filesystem type when the StorageClass names none."),
  flag(
    "extra-create-metadata",
    "bool",
    "false",
    "Add PVC and PV name/namespace to CreateVolume parameters.",
  ),
  flag(
    "controller-publish-readonly",
    "bool",
    "false",
    "Mark a PV readOnly when its PVC asks only for ReadOnlyMany.",
  ),
  flag(
    "strict-topology",
    "bool",
    "false",
    "Delayed binding: send only the selected node's topology.",
  ),
  flag(
    "immediate-topology",
    "bool",
    "true",
    "Immediate binding: send the aggregated cluster topology (false: none).",
  ),
  flag(
    "resync-period",
    "duration",
    "15m",
    "How often every known PVC and PV is checked again, whatever changed.",
  ),
  flag(
    "kubeconfig",
    "string",
    "",
    "Path to a kubeconfig file; empty means in-cluster configuration. The KUBECONFIG variable wins over it, as upstream.",
  ),
  flag("master", "string", "", "Kubernetes API server URL, overriding the kubeconfig's."),
  // Upstream's 5/10 caps a provisioning run at about one PVC a second (five writes each):
  // ours keep the client from being the bottleneck; the API server's own fairness protects it.
  flag(
    "kube-api-qps",
    "float",
    "500",
    "Sustained Kubernetes API requests per second (upstream: 5).",
  ),
  flag(
    "kube-api-burst",
    "int",
    "1000",
    "Kubernetes API requests allowed above --kube-api-qps in a burst (upstream: 10).",
  ),
  flag(
    "disable-http2",
    "bool",
    "false",
    "Talk HTTP/1.1 to the API server even when it offers HTTP/2 (also client-go's DISABLE_HTTP2 variable).",
  ),
  flag(
    "leader-election",
    "bool",
    "false",
    "Run only while holding a Lease, so that one of several replicas works.",
  ),
  flag(
    "leader-election-namespace",
    "string",
    "",
    "Namespace of the Lease (default: the pod's namespace).",
  ),
  flag(
    "leader-election-lease-duration",
    "duration",
    "15s",
    "How long non-leaders wait before forcing leadership.",
  ),
  flag(
    "leader-election-renew-deadline",
    "duration",
    "10s",
    "How long the leader keeps retrying a renewal before giving up.",
  ),
  flag(
    "leader-election-retry-period",
    "duration",
    "5s",
    "How often candidates and the leader try to acquire or renew.",
  ),
  flag("leader-election-labels", "map", "", "Labels to put on the Lease (key:value,...)."),
  flag(
    "http-endpoint",
    "string",
    "",
    "Address of the HTTP server for metrics and health checks (e.g. :8080); empty: off.",
  ),
  flag("metrics-address", "string", "", "Deprecated alias of --http-endpoint."),
  flag("metrics-path", "string", "/metrics", "HTTP path of the Prometheus metrics."),
  flag(
    "enable-pprof",
    "bool",
    "false",
    "Go profiling endpoint of upstream; accepted, no effect here.",
    true,
  ),
  flag("feature-gates", "map", "", "Feature gates as Name=true|false pairs."),
  flag(
    "cloning-protection-threads",
    "int",
    "1",
    "Upstream's workers for the cloning-protection finalizer; the claim workers do that here.",
    true,
  ),
  flag(
    "prevent-volume-mode-conversion",
    "bool",
    "false",
    "Refuse to restore a snapshot into a different volume mode.",
  ),
  flag(
    "enable-capacity",
    "bool",
    "false",
    "Publish CSIStorageCapacity objects (not supported yet: refused when true).",
  ),
  flag("capacity-threads", "int", "1", "Workers of capacity tracking."),
  flag("capacity-poll-interval", "duration", "1m", "How often capacity is polled."),
  flag(
    "capacity-for-immediate-binding",
    "bool",
    "false",
    "Also track capacity for classes with immediate binding.",
  ),
  flag("capacity-ownerref-level", "int", "1", "Owner level of CSIStorageCapacity objects."),
  flag("kube-api-capacity-qps", "float", "1", "API requests per second for capacity updates."),
  flag("kube-api-capacity-burst", "int", "5", "API request burst for capacity updates."),
  flag(
    "node-deployment",
    "bool",
    "false",
    "Run on every node for node-local volumes (not supported yet: refused when true).",
  ),
  flag(
    "node-deployment-immediate-binding",
    "bool",
    "true",
    "Node deployment: support immediate binding.",
  ),
  flag(
    "node-deployment-base-delay",
    "duration",
    "20s",
    "Node deployment: initial delay before owning a PVC.",
  ),
  flag(
    "node-deployment-max-delay",
    "duration",
    "60s",
    "Node deployment: maximum delay before owning a PVC.",
  ),
  flag("v", "int", "0", "Log verbosity, 0 to 5 as klog's -v."),
  flag("logging-format", "string", "text", "Log format: text or json."),
  flag("log-format", "string", "", "Alias of --logging-format."),
  flag("vmodule", "string", "", "klog per-file verbosity; accepted, no effect here.", true),
  flag("logtostderr", "bool", "true", "klog flag; logs always go to stderr here.", true),
  flag("alsologtostderr", "bool", "false", "klog flag; accepted, no effect here.", true),
  flag("stderrthreshold", "string", "2", "klog flag; accepted, no effect here.", true),
  flag("log_dir", "string", "", "klog flag; accepted, no effect here.", true),
  flag("log_file", "string", "", "klog flag; accepted, no effect here.", true),
  flag("log_file_max_size", "int", "1800", "klog flag; accepted, no effect here.", true),
  flag("log_backtrace_at", "string", "", "klog flag; accepted, no effect here.", true),
  flag("add_dir_header", "bool", "false", "klog flag; accepted, no effect here.", true),
  flag("one_output", "bool", "false", "klog flag; accepted, no effect here.", true),
  flag("skip_headers", "bool", "false", "klog flag; accepted, no effect here.", true),
  flag("skip_log_headers", "bool", "false", "klog flag; accepted, no effect here.", true),
  flag(
    "log-flush-frequency",
    "duration",
    "5s",
    "Kubernetes logging flag; accepted, no effect here.",
    true,
  ),
  flag(
    "log-json-info-buffer-size",
    "string",
    "0",
    "Kubernetes logging flag; accepted, no effect here.",
    true,
  ),
  flag(
    "log-json-split-stream",
    "bool",
    "false",
    "Kubernetes logging flag; accepted, no effect here.",
    true,
  ),
  flag(
    "log-text-info-buffer-size",
    "string",
    "0",
    "Kubernetes logging flag; accepted, no effect here.",
    true,
  ),
  flag(
    "log-text-split-stream",
    "bool",
    "false",
    "Kubernetes logging flag; accepted, no effect here.",
    true,
  ),
  flag(
    "connection-timeout",
    "duration",
    "0s",
    "Removed upstream long ago; accepted, no effect here.",
    true,
  ),
];

/** `csi-address` → `csiAddress`; klog's underscores count as dashes. */
export const fieldName = (flagName: string) =>
  flagName.replace(/[-_]([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** `csi-address` → `CSI_PROVISIONER_CSI_ADDRESS`. */
export const envName = (flagName: string) =>
  `CSI_PROVISIONER_${flagName.replace(/-/g, "_").toUpperCase()}`;

/** Conventional variables that name a setting without our prefix. */
export const envAliases: Readonly<Record<string, string>> = {
  CSI_ENDPOINT: "csi-address",
  KUBECONFIG: "kubeconfig",
  DISABLE_HTTP2: "disable-http2",
};

export const ProvisionerConfig = Schema.Struct({
  csiAddress: CsiAddress,
  timeout: PositiveDuration,
  retryIntervalStart: PositiveDuration,
  retryIntervalMax: PositiveDuration,
  workerThreads: integer(1),
  volumeNamePrefix: NonEmpty("prefix (upstream: volume name prefix cannot be of length 0)"),
  volumeNameUuidLength: integer(-1),
  defaultFstype: Schema.String,
  extraCreateMetadata: Bool,
  controllerPublishReadonly: Bool,
  strictTopology: Bool,
  immediateTopology: Bool,
  resyncPeriod: PositiveDuration,
  kubeconfig: Schema.String,
  master: Schema.String,
  kubeApiQps: Float,
  kubeApiBurst: integer(1),
  disableHttp2: Bool,
  leaderElection: Bool,
  leaderElectionNamespace: Schema.String,
  leaderElectionLeaseDuration: PositiveDuration,
  leaderElectionRenewDeadline: PositiveDuration,
  leaderElectionRetryPeriod: PositiveDuration,
  leaderElectionLabels: Labels,
  httpEndpoint: Schema.String,
  metricsAddress: Schema.String,
  metricsPath: Schema.String,
  featureGates: FeatureGates,
  preventVolumeModeConversion: Bool,
  enableCapacity: Bool,
  nodeDeployment: Bool,
  v: integer(0),
  loggingFormat: LoggingFormat,
});
export type ProvisionerConfig = typeof ProvisionerConfig.Type;

/** Flags we accept and type-check but that feed no setting of ours. */
const ignoredFlags = flagSpecs.filter(
  (spec) => !(fieldName(spec.name) in ProvisionerConfig.fields),
);

// biome-ignore lint/suspicious/noExplicitAny: each flag type decodes to its own value type
const typeOf: Record<FlagSpec["type"], Schema.Schema<any, string>> = {
  string: Schema.String,
  bool: Bool,
  int: integer(Number.MIN_SAFE_INTEGER),
  float: Float,
  duration: Duration_,
  map: Labels,
};
export const ignoredFlagsSchema = Schema.Struct(
  Object.fromEntries(ignoredFlags.map((spec) => [fieldName(spec.name), typeOf[spec.type]])),
);
