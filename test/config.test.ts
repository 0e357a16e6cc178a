import { Duration, Either } from "effect";
import { describe, expect, it } from "vitest";
import { defaultConfig, parseCommandLine } from "../src/layers/Config.js";
import { flagSpecs } from "../src/schemas/Config.js";

const run = (argv: Array<string>, env: Record<string, string> = {}) => {
  const parsed = parseCommandLine(argv, env);
  if (Either.isLeft(parsed)) throw new Error(parsed.left.message);
  if (parsed.right._tag !== "Run") throw new Error(parsed.right._tag);
  return parsed.right;
};
const problems = (argv: Array<string>, env: Record<string, string> = {}) => {
  const parsed = parseCommandLine(argv, env);
  return Either.isLeft(parsed) ? parsed.left.problems : [];
};

describe("configuration", () => {
  it("has upstream's defaults", () => {
    expect(defaultConfig.csiAddress).toBe("/run/csi/socket");
    expect(Duration.toMillis(defaultConfig.timeout)).toBe(10_000);
    expect(Duration.toMillis(defaultConfig.retryIntervalStart)).toBe(1_000);
    expect(Duration.toMillis(defaultConfig.retryIntervalMax)).toBe(300_000);
    expect(defaultConfig.workerThreads).toBe(100);
    expect(defaultConfig.volumeNamePrefix).toBe("pvc");
    expect(defaultConfig.volumeNameUuidLength).toBe(-1);
    expect(defaultConfig.immediateTopology).toBe(true);
    expect(Duration.toMillis(defaultConfig.leaderElectionLeaseDuration)).toBe(15_000);
  });

  it("parses upstream flag syntax: --a=b, --a b, -a=b, bare booleans, unix:// addresses", () => {
    const { config } = run([
      "--csi-address=unix:///csi/csi.sock",
      "--timeout",
      "1m30s",
      "-v=5",
      "--leader-election",
      "--extra-create-metadata=false",
      "--feature-gates=Topology=true,CSINodeExpandSecret=false",
      "--worker-threads=7",
    ]);
    expect(config.csiAddress).toBe("/csi/csi.sock");
    expect(Duration.toMillis(config.timeout)).toBe(90_000);
    expect(config.v).toBe(5);
    expect(config.leaderElection).toBe(true);
    expect(config.extraCreateMetadata).toBe(false);
    expect(config.featureGates).toEqual({ Topology: true, CSINodeExpandSecret: false });
    expect(config.workerThreads).toBe(7);
  });

  it("accepts every upstream flag, including klog's", () => {
    const argv = flagSpecs
      .filter(
        (spec) => !["enable-capacity", "node-deployment", "metrics-address"].includes(spec.name),
      )
      .map((spec) => {
        const example: Record<string, string> = {
          "log-format": "json",
          "feature-gates": "Topology=true",
          "leader-election-labels": "team:storage,tier=gold",
        };
        return `--${spec.name}=${example[spec.name] ?? (spec.default || "x")}`;
      });
    const parsed = run([...argv, "--log_dir=/tmp", "--logtostderr", "--enable-pprof"]);
    expect(parsed.warnings).toContain(
      "--enable-pprof is accepted for compatibility and has no effect",
    );
  });

  it("takes settings from environment variables, flags first", () => {
    const { config } = run(["--timeout=3s"], {
      CSI_ENDPOINT: "/var/lib/csi/sockets/pluginproxy/csi.sock",
      CSI_PROVISIONER_TIMEOUT: "9s",
      CSI_PROVISIONER_WORKER_THREADS: "3",
    });
    expect(config.csiAddress).toBe("/var/lib/csi/sockets/pluginproxy/csi.sock");
    expect(Duration.toMillis(config.timeout)).toBe(3_000);
    expect(config.workerThreads).toBe(3);
  });

  it("names every bad flag and variable with what it expected and what it got", () => {
    const found = problems(
      ["--timeout=abc", "--worker-threads=0", "--bogus", "--volume-name-prefix="],
      {
        CSI_PROVISIONER_RETRY_INTERVAL_MAX: "soon",
      },
    );
    expect(found).toHaveLength(5);
    expect(found.join("\n")).toContain('--timeout="abc": expected a duration such as 10s');
    expect(found.join("\n")).toContain('--worker-threads="0": expected an integer of at least 1');
    expect(found.join("\n")).toContain("unknown flag: --bogus");
    expect(found.join("\n")).toContain('--volume-name-prefix="": expected a non-empty prefix');
    expect(found.join("\n")).toContain(
      '$CSI_PROVISIONER_RETRY_INTERVAL_MAX="soon": expected a duration',
    );
  });

  it("refuses features it does not implement instead of silently ignoring them", () => {
    expect(problems(["--enable-capacity"])).toEqual([
      "--enable-capacity: capacity tracking is not supported yet",
    ]);
  });

  it("answers --help and --version", () => {
    expect(Either.getOrThrow(parseCommandLine(["--help"], {}))._tag).toBe("Help");
    expect(Either.getOrThrow(parseCommandLine(["--version"], {}))._tag).toBe("Version");
  });
});
