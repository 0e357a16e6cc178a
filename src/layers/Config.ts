import { Context, Data, Either, Layer, ParseResult, Schema } from "effect";
import {
  envAliases,
  envName,
  type FlagSpec,
  fieldName,
  flagSpecs,
  ignoredFlagsSchema,
  ProvisionerConfig,
} from "../schemas/Config.js";

export class Config extends Context.Tag("csi-provisioner/Config")<Config, ProvisionerConfig>() {}

/** Every problem with the command line and environment, each naming its flag or variable. */
export class ConfigError extends Data.TaggedError("ConfigError")<{
  readonly problems: ReadonlyArray<string>;
}> {
  override get message(): string {
    return `invalid configuration:\n  ${this.problems.join("\n  ")}`;
  }
}

export type CommandLine =
  | {
      readonly _tag: "Run";
      readonly config: ProvisionerConfig;
      readonly warnings: ReadonlyArray<string>;
    }
  | { readonly _tag: "Help" }
  | { readonly _tag: "Version" };

const specsByName = new Map(flagSpecs.map((spec) => [spec.name, spec]));

interface Source {
  readonly value: string;
  readonly origin: string;
}

/**
 * Reads flags the way Go's pflag does (`--name=value`, `--name value`, `-name`, bare booleans) and
 * fills the rest from `CSI_PROVISIONER_*` variables (or an alias such as CSI_ENDPOINT), then the
 * defaults.
 */
export const parseCommandLine = (
  argv: ReadonlyArray<string>,
  env: Readonly<Record<string, string | undefined>>,
): Either.Either<CommandLine, ConfigError> => {
  const problems: Array<string> = [];
  const fromFlags = new Map<string, Source>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const match = /^--?([^=]+)(?:=(.*))?$/s.exec(arg);
    if (!match || arg === "-" || arg === "--") {
      problems.push(`unexpected argument "${arg}": every setting is a --flag`);
      continue;
    }
    const name = match[1] as string;
    if (name === "help" || name === "h") return Either.right({ _tag: "Help" });
    if (name === "version" && match[2] !== "false") return Either.right({ _tag: "Version" });
    const spec = specsByName.get(name) ?? specsByName.get(name.replace(/_/g, "-"));
    if (!spec) {
      problems.push(`unknown flag: --${name}`);
      continue;
    }
    let value = match[2];
    if (value === undefined) {
      if (spec.type === "bool") value = "true";
      else if (i + 1 < argv.length) value = argv[++i] as string;
      else {
        problems.push(`flag needs an argument: --${name}`);
        continue;
      }
    }
    fromFlags.set(spec.name, { value, origin: `--${spec.name}` });
  }

  const fromEnv = (spec: FlagSpec): Source | undefined => {
    const aliases = Object.keys(envAliases).filter((key) => envAliases[key] === spec.name);
    for (const variable of [envName(spec.name), ...aliases]) {
      const value = env[variable];
      if (value !== undefined && value !== "") return { value, origin: `$${variable}` };
    }
    return undefined;
  };
  // Upstream lets KUBECONFIG win over --kubeconfig; we keep that so manifests behave the same.
  const sourceOf = (spec: FlagSpec): Source => {
    const flag = fromFlags.get(spec.name);
    const environment = fromEnv(spec);
    if (spec.name === "kubeconfig" && env.KUBECONFIG)
      return { value: env.KUBECONFIG, origin: "$KUBECONFIG" };
    return flag ?? environment ?? { value: spec.default, origin: `default of --${spec.name}` };
  };

  const raw: Record<string, string> = {};
  const origins: Record<string, string> = {};
  for (const spec of flagSpecs) {
    const source = sourceOf(spec);
    raw[fieldName(spec.name)] = source.value;
    origins[fieldName(spec.name)] = `${source.origin}=${JSON.stringify(source.value)}`;
  }
  if (raw.logFormat) {
    raw.loggingFormat = raw.logFormat;
    origins.loggingFormat = origins.logFormat as string;
  }

  const describe = (error: ParseResult.ParseError) =>
    ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => {
      const field = String(issue.path[0] ?? "");
      return `${origins[field] ?? field}: expected ${issue.message.replace(/^Expected /, "")}`;
    });
  const config = Schema.decodeUnknownEither(ProvisionerConfig, { errors: "all" })(raw);
  if (Either.isLeft(config)) problems.push(...describe(config.left));
  const ignored = Schema.decodeUnknownEither(ignoredFlagsSchema, { errors: "all" })(raw);
  if (Either.isLeft(ignored)) problems.push(...describe(ignored.left));
  if (problems.length > 0 || Either.isLeft(config))
    return Either.left(new ConfigError({ problems }));

  const warnings = flagSpecs
    .filter((spec) => spec.noop && fromFlags.has(spec.name))
    .map((spec) => `--${spec.name} is accepted for compatibility and has no effect`);
  if (config.right.enableCapacity)
    problems.push("--enable-capacity: capacity tracking is not supported yet");
  if (config.right.nodeDeployment)
    problems.push("--node-deployment: node deployment is not supported yet");
  if (config.right.httpEndpoint && config.right.metricsAddress) {
    problems.push("only one of --metrics-address and --http-endpoint can be set");
  }
  if (problems.length > 0) return Either.left(new ConfigError({ problems }));
  return Either.right({ _tag: "Run", config: config.right, warnings });
};

/** The configuration with every default, as the sidecar runs with no flags at all. */
export const defaultConfig: ProvisionerConfig = (() => {
  const parsed = parseCommandLine([], {});
  if (Either.isRight(parsed) && parsed.right._tag === "Run") return parsed.right.config;
  throw new Error(`the built-in defaults do not parse: ${JSON.stringify(parsed)}`);
})();

/** Defaults with some settings replaced: what tests and the demo run with. */
export const layer = (overrides: Partial<ProvisionerConfig> = {}) =>
  Layer.succeed(Config, { ...defaultConfig, ...overrides });
