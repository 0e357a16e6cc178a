/**
 * A real Kubernetes control plane for the end-to-end tier: etcd + kube-apiserver +
 * kube-controller-manager on loopback, random free ports, throw-away PKI, everything under one temp
 * dir that `stop()` removes. With `E2E_KUBECONFIG` set, an existing cluster is used instead and
 * nothing is started.
 *
 * Promise API:  const cp = await start(options); ...; await cp.stop()
 * Effect API:   Layer `ControlPlane.layer(options)` provides the `ControlPlane` tag (stopped when
 *               the layer's scope closes), or `acquire(options)` inside a Scope.
 *
 * Binaries come from scripts/e2e-binaries.sh (explicit paths, KUBEBUILDER_ASSETS, or a cached build
 * from Debian's sources). `E2E_KEEP_DIR=1` keeps the temp dir (logs, certs) for post-mortems.
 */

import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import * as https from "node:https";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import * as k8s from "@kubernetes/client-node";
import { Context, Data, Effect, Layer, type Scope } from "effect";

const execFileP = promisify(execFile);

export interface ControlPlaneOptions {
  /** kube-controller-manager's client QPS/burst; upstream defaults 20/30, benchmarks want 1000/1000. */
  readonly controllerManagerQps?: number;
  readonly controllerManagerBurst?: number;
  /** `--controllers` of kube-controller-manager. */
  readonly controllers?: string;
  readonly extraApiServerArgs?: ReadonlyArray<string>;
  readonly extraControllerManagerArgs?: ReadonlyArray<string>;
  /** etcd's data dir lives in /dev/shm when present: fsync on a real disk dominates write latency. */
  readonly etcdInMemory?: boolean;
  /** Deadline for the start-up once the binaries exist (their first build has its own). */
  readonly startTimeoutMs?: number;
  /** Deadline for scripts/e2e-binaries.sh; a first build from source takes several minutes. */
  readonly binariesTimeoutMs?: number;
  /** Leave the temp dir (certs, logs, etcd data) in place after stop, for post-mortems.
   * Defaults to `E2E_KEEP_DIR=1`. */
  readonly keepTempDir?: boolean;
  readonly log?: (line: string) => void;
}

export interface WriteKubeconfigOptions {
  readonly token: string;
  /** File name inside the harness's temp dir (or the OS temp dir for an external cluster). */
  readonly name?: string;
  readonly namespace?: string;
  /** Another URL for the same API server (e.g. a proxy in front of it); default: the server. */
  readonly server?: string;
}

export interface ControlPlaneInfo {
  /** True when `E2E_KUBECONFIG` pointed at an existing cluster: nothing was started. */
  readonly external: boolean;
  /** https://127.0.0.1:<port> */
  readonly server: string;
  /** PEM of the CA that signed the apiserver's serving cert (empty if the kubeconfig has none). */
  readonly caPem: string;
  readonly caFile: string;
  /** Admin kubeconfig (system:masters). */
  readonly kubeconfigPath: string;
  /** Bearer token of the admin identity; undefined for an external cluster. */
  readonly adminToken: string | undefined;
  /** Harness temp dir: certs, kubeconfigs, per-process logs. */
  readonly dir: string;
  /** A KubeConfig loaded from `kubeconfigPath`, for client-node. */
  readonly kubeConfig: () => k8s.KubeConfig;
  /** Writes a kubeconfig that authenticates with `token` against this server; returns its path. */
  readonly writeKubeconfig: (options: WriteKubeconfigOptions) => Promise<string>;
  /** TokenRequest API: a bound token for a ServiceAccount (created if missing). */
  readonly serviceAccountToken: (
    namespace: string,
    name: string,
    expirationSeconds?: number,
  ) => Promise<string>;
  /** The last lines of every process log, for failure messages. */
  readonly logTails: (lines?: number) => Promise<string>;
  readonly ports: { readonly etcd: number; readonly etcdPeer: number; readonly apiserver: number };
  /** Timings of the last start, in milliseconds. */
  readonly timings: Readonly<Record<string, number>>;
}

export interface RunningControlPlane extends ControlPlaneInfo {
  /** SIGTERM, then SIGKILL after a grace period; removes the temp dir. Idempotent. */
  readonly stop: () => Promise<void>;
  /**
   * Stops kube-apiserver (SIGTERM, SIGKILL after `graceMs`) and starts it again with the same
   * arguments and port, resolving once /readyz answers. Its watch cache starts empty at etcd's
   * current revision, so a client that resumes a watch from an older resourceVersion gets 410 Gone.
   * 1.20 stops listening at once on SIGTERM but keeps running well past 10 s while clients hold
   * watches, hence the short default grace. Not available for an external cluster.
   */
  readonly restartApiServer: (options?: {
    readonly graceMs?: number;
  }) => Promise<{ readonly downMs: number }>;
}

export class ControlPlaneError extends Data.TaggedError("ControlPlaneError")<{
  readonly message: string;
  readonly cause?: unknown;
}> {}

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const binariesScript = join(repoRoot, "scripts", "e2e-binaries.sh");
const serviceClusterIpRange = "10.0.0.0/24";
const serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Promise API. */
export const start = async (options: ControlPlaneOptions = {}): Promise<RunningControlPlane> => {
  const external = process.env.E2E_KUBECONFIG;
  if (external !== undefined && external !== "") return useExisting(external, options);
  // Two processes can race for the same "free" port between probing and binding; a fresh set of
  // ports on a retry is cheaper than making every failure message explain that.
  let lastError: unknown;
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      return await startLocal(options);
    } catch (error) {
      lastError = error;
      if (!(error instanceof ControlPlaneError && /address already in use/i.test(error.message))) {
        throw error;
      }
      options.log?.(`[control-plane] port clash on attempt ${attempt}, retrying with new ports`);
    }
  }
  throw lastError;
};

/** Effect API: a scoped control plane, stopped when the scope closes. */
export const acquire = (
  options: ControlPlaneOptions = {},
): Effect.Effect<ControlPlaneInfo, ControlPlaneError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => start(options),
      catch: (cause) =>
        cause instanceof ControlPlaneError
          ? cause
          : new ControlPlaneError({ message: String(cause), cause }),
    }),
    (cp) => Effect.promise(() => cp.stop()),
  );

export class ControlPlane extends Context.Tag("e2e/ControlPlane")<
  ControlPlane,
  ControlPlaneInfo
>() {
  static readonly layer = (
    options: ControlPlaneOptions = {},
  ): Layer.Layer<ControlPlane, ControlPlaneError> => Layer.scoped(ControlPlane, acquire(options));
}

// ---------------------------------------------------------------------------------------------

interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logFile: string;
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exit: Promise<void>;
}

/** Children still alive in this Node process; killed synchronously if Node exits without stop(). */
const live = new Set<Proc>();
let exitHookInstalled = false;
const installExitHook = () => {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const p of live) p.child.kill("SIGKILL");
  });
};

// setpriv's parent-death signal also covers a test worker killed with SIGKILL, where no "exit"
// hook runs; without it a crashed run would leave an apiserver and etcd behind.
const pdeathsig = existsSync("/usr/bin/setpriv")
  ? ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--"]
  : [];

const spawnProc = (name: string, bin: string, args: ReadonlyArray<string>, dir: string): Proc => {
  installExitHook();
  const logFile = join(dir, "logs", `${name}.log`);
  const fd = openSync(logFile, "a");
  const argv = [...pdeathsig, bin, ...args];
  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: ["ignore", fd, fd],
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir },
  });
  closeSync(fd);
  let resolveExit!: () => void;
  const proc: Proc = {
    name,
    child,
    logFile,
    exited: undefined,
    exit: new Promise<void>((r) => {
      resolveExit = r;
    }),
  };
  live.add(proc);
  child.once("exit", (code, signal) => {
    proc.exited = { code, signal };
    live.delete(proc);
    resolveExit();
  });
  child.once("error", (error) => {
    proc.exited = { code: -1, signal: null };
    live.delete(proc);
    writeFile(logFile, `spawn failed: ${error.message}\n`, { flag: "a" }).catch(() => undefined);
    resolveExit();
  });
  return proc;
};

const stopProc = async (p: Proc, graceMs: number): Promise<void> => {
  if (p.exited) return;
  p.child.kill("SIGTERM");
  const timedOut = await Promise.race([p.exit.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut && !p.exited) {
    p.child.kill("SIGKILL");
    await p.exit;
  }
};

const tail = async (file: string, lines: number): Promise<string> => {
  try {
    const text = await readFile(file, "utf8");
    return text
      .split("\n")
      .slice(-lines - 1)
      .join("\n");
  } catch {
    return "(no log)";
  }
};

const freePort = (): Promise<number> =>
  new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close(() => res(port));
    });
  });

const distinctFreePorts = async (n: number): Promise<number[]> => {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
};

const resolveBinaries = async (
  timeoutMs: number,
  log: (line: string) => void,
): Promise<{ dir: string; ms: number }> => {
  const t0 = Date.now();
  try {
    const { stdout, stderr } = await execFileP("bash", [binariesScript], {
      cwd: repoRoot,
      timeout: timeoutMs,
      maxBuffer: 64 * 1024 * 1024,
    });
    for (const line of stderr.split("\n").filter((l) => l.length > 0)) log(line);
    const dir = stdout.trim().split("\n").pop() ?? "";
    if (dir === "" || !existsSync(join(dir, "kube-apiserver"))) {
      throw new Error(
        `scripts/e2e-binaries.sh printed no usable directory: ${JSON.stringify(dir)}`,
      );
    }
    return { dir, ms: Date.now() - t0 };
  } catch (cause) {
    const detail =
      typeof cause === "object" && cause !== null && "stderr" in cause
        ? String((cause as { stderr: unknown }).stderr)
            .split("\n")
            .slice(-30)
            .join("\n")
        : String(cause);
    throw new ControlPlaneError({ message: `scripts/e2e-binaries.sh failed:\n${detail}`, cause });
  }
};

const openssl = async (args: ReadonlyArray<string>, cwd: string): Promise<void> => {
  try {
    await execFileP("openssl", [...args], { cwd });
  } catch (cause) {
    const stderr =
      typeof cause === "object" && cause !== null && "stderr" in cause
        ? String((cause as { stderr: unknown }).stderr)
        : String(cause);
    throw new ControlPlaneError({ message: `openssl ${args[0]} failed: ${stderr}`, cause });
  }
};

/** CA, apiserver serving cert, and the service-account signing key pair. */
const makePki = async (pki: string): Promise<void> => {
  await mkdir(pki, { recursive: true });
  await openssl(
    [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      "ca.key",
      "-out",
      "ca.crt",
      "-days",
      "7",
      "-subj",
      "/CN=e2e-control-plane-ca",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    ],
    pki,
  );
  await writeFile(
    join(pki, "apiserver.ext"),
    [
      // The in-cluster names and the service IP are there so that a pod-style client (the
      // sidecar run with in-cluster config semantics) would also verify; loopback is what we dial.
      `subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1`,
      "extendedKeyUsage=serverAuth",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "",
    ].join("\n"),
  );
  await Promise.all([
    openssl(
      [
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
        "-subj",
        "/CN=kube-apiserver",
      ],
      pki,
    ),
    openssl(["genrsa", "-out", "sa.key", "2048"], pki),
  ]);
  await Promise.all([
    openssl(
      [
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "apiserver.crt",
        "-days",
        "7",
        "-extfile",
        "apiserver.ext",
      ],
      pki,
    ),
    openssl(["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], pki),
  ]);
};

const kubeconfigJson = (
  server: string,
  caPem: string,
  user: string,
  token: string,
  namespace?: string,
): string =>
  // JSON is YAML: both client-go and client-node read it, and no YAML writer is needed.
  `${JSON.stringify(
    {
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        {
          name: "e2e",
          cluster: {
            server,
            ...(caPem === ""
              ? {}
              : { "certificate-authority-data": Buffer.from(caPem).toString("base64") }),
          },
        },
      ],
      users: [{ name: user, user: { token } }],
      contexts: [
        {
          name: "e2e",
          context: { cluster: "e2e", user, ...(namespace ? { namespace } : {}) },
        },
      ],
      "current-context": "e2e",
    },
    null,
    2,
  )}\n`;

/** GET over TLS with our CA; used before any client library is worth setting up. */
const httpsGet = (
  url: string,
  ca: string,
  token: string,
): Promise<{ status: number; body: string }> =>
  new Promise((res, rej) => {
    const req = https.get(
      url,
      { ca, headers: { Authorization: `Bearer ${token}` }, timeout: 5000 },
      (resp) => {
        let body = "";
        resp.setEncoding("utf8");
        resp.on("data", (c: string) => {
          body += c;
        });
        resp.on("end", () => res({ status: resp.statusCode ?? 0, body }));
        resp.on("error", rej);
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", rej);
  });

const httpGet = async (url: string): Promise<{ status: number; body: string }> => {
  const resp = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return { status: resp.status, body: await resp.text() };
};

const makeHelpers = (
  server: string,
  caPem: string,
  kubeconfigPath: string,
  kubeconfigDir: string,
) => {
  const kubeConfig = () => {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kubeconfigPath);
    return kc;
  };
  let counter = 0;
  const writeKubeconfig = async (o: WriteKubeconfigOptions): Promise<string> => {
    counter += 1;
    const file = join(kubeconfigDir, o.name ?? `kubeconfig-token-${counter}.json`);
    await writeFile(
      file,
      kubeconfigJson(o.server ?? server, caPem, "token-user", o.token, o.namespace),
      {
        mode: 0o600,
      },
    );
    return file;
  };
  const serviceAccountToken = async (
    namespace: string,
    name: string,
    expirationSeconds = 3600,
  ): Promise<string> => {
    const core = kubeConfig().makeApiClient(k8s.CoreV1Api);
    try {
      await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
    } catch (error) {
      if (!(error instanceof k8s.ApiException && error.code === 409)) throw error;
    }
    const tr = await core.createNamespacedServiceAccountToken({
      name,
      namespace,
      body: { spec: { audiences: [], expirationSeconds } },
    });
    const token = tr.status?.token;
    if (!token)
      throw new ControlPlaneError({
        message: `TokenRequest for ${namespace}/${name} returned no token`,
      });
    return token;
  };
  return { kubeConfig, writeKubeconfig, serviceAccountToken };
};

const useExisting = async (
  kubeconfigPath: string,
  options: ControlPlaneOptions,
): Promise<RunningControlPlane> => {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    throw new ControlPlaneError({
      message: `E2E_KUBECONFIG=${kubeconfigPath} has no current cluster`,
    });
  }
  const caPem = cluster.caData
    ? Buffer.from(cluster.caData, "base64").toString("utf8")
    : cluster.caFile
      ? readFileSync(cluster.caFile, "utf8")
      : "";
  const dir = await mkdtemp(join(tmpdir(), "e2e-external-"));
  const caFile = join(dir, "ca.crt");
  await writeFile(caFile, caPem);
  options.log?.(`[control-plane] using existing cluster ${cluster.server} from E2E_KUBECONFIG`);
  const helpers = makeHelpers(cluster.server, caPem, kubeconfigPath, dir);
  return {
    external: true,
    server: cluster.server,
    caPem,
    caFile,
    kubeconfigPath,
    adminToken: undefined,
    dir,
    ...helpers,
    logTails: async () => "(external cluster: no local process logs)",
    ports: { etcd: 0, etcdPeer: 0, apiserver: 0 },
    timings: {},
    stop: async () => {
      if (!options.keepTempDir) await rm(dir, { recursive: true, force: true });
    },
    restartApiServer: () =>
      Promise.reject(
        new ControlPlaneError({ message: "restartApiServer: not possible on an external cluster" }),
      ),
  };
};

const dirPrefix = "e2e-control-plane-";

/**
 * A test worker killed with SIGKILL takes its children along (parent-death signal) but cannot
 * remove its temp dir; the etcd data in /dev/shm is RAM, so the next start clears what dead owners
 * left, except dirs kept on purpose.
 */
const sweepAbandoned = async (log: (line: string) => void): Promise<void> => {
  const entries = await readdir(tmpdir()).catch(() => [] as string[]);
  for (const entry of entries.filter((e) => e.startsWith(dirPrefix))) {
    const dir = join(tmpdir(), entry);
    try {
      if (existsSync(join(dir, "kept"))) continue;
      const owner = JSON.parse(await readFile(join(dir, "owner.json"), "utf8")) as {
        pid: number;
        etcdData: string;
      };
      if (isAlive(owner.pid)) continue;
      log(`[control-plane] removing ${dir}, left by dead process ${owner.pid}`);
      if (owner.etcdData.startsWith("/dev/shm/e2e-etcd-")) {
        await rm(owner.etcdData, { recursive: true, force: true });
      }
      await rm(dir, { recursive: true, force: true });
    } catch {
      // Not ours, half-written, or racing with its owner: leave it.
    }
  }
};

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
};

const startLocal = async (options: ControlPlaneOptions): Promise<RunningControlPlane> => {
  const log = options.log ?? (() => undefined);
  const timings: Record<string, number> = {};
  const t0 = Date.now();

  const binaries = await resolveBinaries(options.binariesTimeoutMs ?? 30 * 60_000, log);
  timings.binariesMs = binaries.ms;
  const bin = (name: string) => join(binaries.dir, name);

  const startDeadline = Date.now() + (options.startTimeoutMs ?? 120_000);
  await sweepAbandoned(log);
  const dir = await mkdtemp(join(tmpdir(), dirPrefix));
  const useShm = (options.etcdInMemory ?? true) && existsSync("/dev/shm");
  const etcdData = useShm ? await mkdtemp(join("/dev/shm", "e2e-etcd-")) : join(dir, "etcd");
  await writeFile(join(dir, "owner.json"), JSON.stringify({ pid: process.pid, etcdData }));
  const pki = join(dir, "pki");
  const procs: Proc[] = [];
  let stopped = false;
  const keepTempDir = options.keepTempDir ?? process.env.E2E_KEEP_DIR === "1";

  const logTails = async (lines = 40): Promise<string> => {
    const parts = await Promise.all(
      procs.map(async (p) => {
        const state = p.exited
          ? `exited code=${p.exited.code} signal=${p.exited.signal}`
          : "running";
        return `----- ${p.name} (${state}) ${p.logFile} -----\n${await tail(p.logFile, lines)}`;
      }),
    );
    return parts.join("\n");
  };

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // Reverse start order: the controller-manager and apiserver should not spend their grace period
    // retrying against an etcd that is already gone.
    for (const p of [...procs].reverse()) await stopProc(p, 10_000);
    if (!keepTempDir) {
      await rm(dir, { recursive: true, force: true });
      if (useShm) await rm(etcdData, { recursive: true, force: true });
    } else {
      await writeFile(join(dir, "kept"), "");
      log(`[control-plane] kept ${dir}${useShm ? ` and ${etcdData}` : ""}`);
    }
  };

  const fail = async (message: string, cause?: unknown): Promise<never> => {
    const tails = await logTails(60);
    await stop();
    const hint = keepTempDir
      ? ""
      : "\n(set E2E_KEEP_DIR=1 to keep the logs and certs after a failure)";
    throw new ControlPlaneError({ message: `${message}\n${tails}${hint}`, cause });
  };

  /** Polls `check` until it returns true, failing early if any process has died. */
  const waitFor = async (what: string, check: () => Promise<boolean>): Promise<void> => {
    let lastError: unknown;
    for (;;) {
      const dead = procs.find((p) => p.exited);
      if (dead) {
        const logText = await tail(dead.logFile, 200);
        const clash = /address already in use/i.test(logText) ? " (address already in use)" : "";
        return fail(
          `${dead.name} exited (code=${dead.exited?.code} signal=${dead.exited?.signal}) while waiting for ${what}${clash}`,
        );
      }
      try {
        if (await check()) return;
      } catch (error) {
        lastError = error;
      }
      if (Date.now() > startDeadline) {
        return fail(`timed out waiting for ${what}; last error: ${String(lastError)}`, lastError);
      }
      await sleep(100);
    }
  };

  // Any failure past this point stops what was started and reports the logs, whatever threw.
  const boot = async (): Promise<RunningControlPlane> => {
    await mkdir(join(dir, "logs"), { recursive: true });
    await mkdir(join(dir, "flexvolume"), { recursive: true });
    const pkiStart = Date.now();
    await makePki(pki);
    timings.pkiMs = Date.now() - pkiStart;

    const [etcdPort, etcdPeerPort, apiPort] = (await distinctFreePorts(3)) as [
      number,
      number,
      number,
    ];
    const adminToken = randomBytes(24).toString("hex");
    const kcmToken = randomBytes(24).toString("hex");
    const server = `https://127.0.0.1:${apiPort}`;
    const caFile = join(pki, "ca.crt");
    const caPem = await readFile(caFile, "utf8");

    // Static tokens: the admin in system:masters, and the controller-manager as the user the RBAC
    // bootstrap policy already grants its root permissions to (as in kubeadm clusters).
    await writeFile(
      join(pki, "tokens.csv"),
      `${adminToken},e2e-admin,e2e-admin,"system:masters"\n${kcmToken},system:kube-controller-manager,system:kube-controller-manager\n`,
      { mode: 0o600 },
    );
    const kubeconfigPath = join(dir, "admin.kubeconfig");
    await writeFile(kubeconfigPath, kubeconfigJson(server, caPem, "e2e-admin", adminToken), {
      mode: 0o600,
    });
    const kcmKubeconfig = join(dir, "controller-manager.kubeconfig");
    await writeFile(
      kcmKubeconfig,
      kubeconfigJson(server, caPem, "system:kube-controller-manager", kcmToken),
      { mode: 0o600 },
    );

    // etcd ------------------------------------------------------------------------------------
    let t = Date.now();
    const etcdUrl = `http://127.0.0.1:${etcdPort}`;
    const peerUrl = `http://127.0.0.1:${etcdPeerPort}`;
    procs.push(
      spawnProc(
        "etcd",
        bin("etcd"),
        [
          "--name=e2e",
          `--data-dir=${etcdData}`,
          `--listen-client-urls=${etcdUrl}`,
          `--advertise-client-urls=${etcdUrl}`,
          `--listen-peer-urls=${peerUrl}`,
          `--initial-advertise-peer-urls=${peerUrl}`,
          `--initial-cluster=e2e=${peerUrl}`,
          "--initial-cluster-state=new",
          "--quota-backend-bytes=8589934592",
          "--logger=zap",
          "--log-outputs=stderr",
          "--log-level=warn",
        ],
        dir,
      ),
    );
    await waitFor("etcd /health", async () => {
      const r = await httpGet(`${etcdUrl}/health`);
      return r.status === 200 && r.body.includes('"true"');
    });
    timings.etcdMs = Date.now() - t;

    // kube-apiserver --------------------------------------------------------------------------
    t = Date.now();
    const apiServerArgs = [
      `--etcd-servers=${etcdUrl}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${apiPort}`,
      "--insecure-port=0",
      `--cert-dir=${pki}`,
      `--tls-cert-file=${join(pki, "apiserver.crt")}`,
      `--tls-private-key-file=${join(pki, "apiserver.key")}`,
      `--client-ca-file=${caFile}`,
      `--token-auth-file=${join(pki, "tokens.csv")}`,
      "--authorization-mode=RBAC",
      `--service-account-key-file=${join(pki, "sa.pub")}`,
      `--service-account-signing-key-file=${join(pki, "sa.key")}`,
      `--service-account-issuer=${serviceAccountIssuer}`,
      `--api-audiences=${serviceAccountIssuer}`,
      `--service-cluster-ip-range=${serviceClusterIpRange}`,
      // Loopback-only: no endpoint reconciler, so the apiserver never publishes 127.0.0.1 as
      // the `kubernetes` service's endpoint for anything to dial.
      "--endpoint-reconciler-type=none",
      "--allow-privileged=true",
      "--profiling=false",
      "--v=1",
      ...(options.extraApiServerArgs ?? []),
    ];
    procs.push(spawnProc("kube-apiserver", bin("kube-apiserver"), apiServerArgs, dir));
    const apiServerReady = async () => {
      const r = await httpsGet(`${server}/readyz`, caPem, adminToken);
      return r.status === 200;
    };
    await waitFor("kube-apiserver /readyz", apiServerReady);
    timings.apiserverMs = Date.now() - t;

    // kube-controller-manager -----------------------------------------------------------------
    t = Date.now();
    procs.push(
      spawnProc(
        "kube-controller-manager",
        bin("kube-controller-manager"),
        [
          `--kubeconfig=${kcmKubeconfig}`,
          "--port=0",
          "--secure-port=0",
          "--leader-elect=false",
          "--use-service-account-credentials",
          `--controllers=${options.controllers ?? "*"}`,
          `--service-account-private-key-file=${join(pki, "sa.key")}`,
          `--root-ca-file=${caFile}`,
          `--cluster-signing-cert-file=${caFile}`,
          `--cluster-signing-key-file=${join(pki, "ca.key")}`,
          `--service-cluster-ip-range=${serviceClusterIpRange}`,
          `--flex-volume-plugin-dir=${join(dir, "flexvolume")}`,
          `--kube-api-qps=${options.controllerManagerQps ?? 20}`,
          `--kube-api-burst=${options.controllerManagerBurst ?? 30}`,
          "--v=1",
          ...(options.extraControllerManagerArgs ?? []),
        ],
        dir,
      ),
    );
    const helpers = makeHelpers(server, caPem, kubeconfigPath, dir);
    // The default ServiceAccount and its token Secret appear only when the serviceaccount and
    // tokens controllers run with working credentials: the cheapest proof that the
    // controller-manager is up, not just started.
    await waitFor("the default ServiceAccount and its token", async () => {
      const r = await httpsGet(
        `${server}/api/v1/namespaces/default/serviceaccounts/default`,
        caPem,
        adminToken,
      );
      if (r.status !== 200) return false;
      const sa = JSON.parse(r.body) as { secrets?: ReadonlyArray<unknown> };
      return (sa.secrets?.length ?? 0) > 0;
    });
    timings.controllerManagerMs = Date.now() - t;
    timings.startMs = Date.now() - t0 - (timings.binariesMs ?? 0);
    log(
      `[control-plane] up at ${server} in ${timings.startMs} ms (${Object.entries(timings)
        .map(([k, v]) => `${k}=${v}`)
        .join(" ")}; dir ${dir})`,
    );

    return {
      external: false,
      server,
      caPem,
      caFile,
      kubeconfigPath,
      adminToken,
      dir,
      ...helpers,
      logTails,
      ports: { etcd: etcdPort, etcdPeer: etcdPeerPort, apiserver: apiPort },
      timings,
      stop,
      restartApiServer: async ({ graceMs = 1000 } = {}) => {
        const index = procs.findIndex((p) => p.name === "kube-apiserver");
        const old = procs[index];
        if (stopped || old === undefined) {
          throw new ControlPlaneError({
            message: "restartApiServer: the control plane is stopped",
          });
        }
        const down = Date.now();
        await stopProc(old, graceMs);
        // Replace, not append: the start-up waitFor above treats any exited process as fatal.
        procs[index] = spawnProc("kube-apiserver", bin("kube-apiserver"), apiServerArgs, dir);
        const deadline = Date.now() + 60_000;
        for (;;) {
          const current = procs[index] as Proc;
          if (current.exited) {
            throw new ControlPlaneError({
              message: `kube-apiserver exited (code=${current.exited.code}) after a restart\n${await tail(current.logFile, 60)}`,
            });
          }
          if (await apiServerReady().catch(() => false)) break;
          if (Date.now() > deadline) {
            throw new ControlPlaneError({
              message: `kube-apiserver not ready 60s after a restart\n${await tail(current.logFile, 60)}`,
            });
          }
          await sleep(100);
        }
        return { downMs: Date.now() - down };
      },
    };
  };
  try {
    return await boot();
  } catch (error) {
    if (stopped) throw error;
    const tails = await logTails(60);
    await stop();
    throw new ControlPlaneError({
      message: `${error instanceof Error ? error.message : String(error)}\n${tails}`,
      cause: error,
    });
  }
};
