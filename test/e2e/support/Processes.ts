import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as k8s from "@kubernetes/client-node";
import type { RunningControlPlane } from "./ControlPlane.js";

/** The built commands, as a user runs them (`npm run build` comes first, see test:e2e). */
const repo = new URL("../../../", import.meta.url).pathname;
const sidecarBin = join(repo, "dist/main.js");
const driverBin = join(repo, "dist/driver/main.js");

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const waitFor = async <A>(
  what: string,
  probe: () => Promise<A | undefined> | A | undefined,
  timeoutMs = 30_000,
  diagnostics?: () => Promise<string> | string,
): Promise<A> => {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const more = diagnostics ? `\n${await diagnostics()}` : "";
      throw new Error(
        `timed out after ${timeoutMs}ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ""}${more}`,
      );
    }
    await sleep(100);
  }
};

export interface RunningProcess {
  readonly child: ChildProcess;
  readonly output: () => string;
  readonly exited: Promise<number | null>;
  readonly stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

const run = (
  command: string,
  args: ReadonlyArray<string>,
  env: NodeJS.ProcessEnv = {},
): RunningProcess => {
  const child = spawn(process.execPath, [command, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    child,
    output: () => output,
    exited,
    stop: async (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
};

export interface ReferenceDriver extends RunningProcess {
  readonly socket: string;
  readonly root: string;
  /** Volumes on the driver's disk, from its metadata files (src/driver/store.ts). */
  readonly volumes: () => ReadonlyArray<DriverVolume>;
}

/** A volume as the reference driver records it (its VolumeRecord). */
export interface DriverVolume {
  readonly volume_id: string;
  readonly name: string;
  readonly capacity_bytes: string;
  readonly parameters: Readonly<Record<string, string>>;
  readonly accessible_topology: ReadonlyArray<Readonly<Record<string, string>>>;
  readonly secret_keys?: ReadonlyArray<string>;
}

export const driverName = "e2e.csi.effect.dev";
/** The driver's own topology segment (src/driver/server.ts), the key CSINode objects list. */
export const nodeTopologyKey = `topology.${driverName}/node`;

export const startDriver = (flags: ReadonlyArray<string> = [], dir?: string): ReferenceDriver => {
  const home = dir ?? mkdtempSync(join(tmpdir(), "e2e-driver-"));
  const socket = join(home, "csi.sock");
  const root = join(home, "volumes");
  const process = run(driverBin, [
    `--endpoint=unix://${socket}`,
    `--root=${root}`,
    `--name=${driverName}`,
    ...flags,
  ]);
  return {
    ...process,
    socket,
    root,
    volumes: () =>
      existsSync(root)
        ? readdirSync(root)
            .filter((f) => f.endsWith(".json"))
            .map((f) => JSON.parse(readFileSync(join(root, f), "utf8")))
        : [],
    stop: async (signal) => {
      const code = await process.stop(signal);
      if (!dir) rmSync(home, { recursive: true, force: true });
      return code;
    },
  };
};

export const startSidecar = (flags: ReadonlyArray<string>, env: NodeJS.ProcessEnv = {}) =>
  run(sidecarBin, flags, env);

/**
 * Applies deploy/rbac.yaml in `namespace` and returns a kubeconfig for its ServiceAccount: every
 * sidecar in this tier runs under our least-privilege RBAC, not as cluster-admin.
 */
export const sidecarKubeconfig = async (
  cp: RunningControlPlane,
  namespace: string,
  options: { readonly server?: string; readonly name?: string } = {},
): Promise<string> => {
  const objects = k8s.loadAllYaml(
    readFileSync(join(repo, "deploy/rbac.yaml"), "utf8").replaceAll("csi-driver", namespace),
  );
  const client = k8s.KubernetesObjectApi.makeApiClient(cp.kubeConfig());
  for (const object of objects as Array<k8s.KubernetesObject>) {
    if (
      object.metadata &&
      !object.metadata.name?.startsWith("csi-provisioner-") &&
      object.kind !== "ServiceAccount"
    )
      continue;
    // Cluster-wide objects get the namespace in their name so several suites can share a cluster.
    if (object.kind === "ClusterRole" || object.kind === "ClusterRoleBinding") {
      object.metadata = { ...object.metadata, name: `${object.metadata?.name}-${namespace}` };
    }
    if (object.kind === "ClusterRoleBinding") {
      (object as unknown as { roleRef: { name: string } }).roleRef.name =
        `csi-provisioner-runner-${namespace}`;
    }
    await client.create(object).catch((error: unknown) => {
      if (!String(error).includes("AlreadyExists") && (error as { code?: number }).code !== 409)
        throw error;
    });
  }
  const token = await cp.serviceAccountToken(namespace, "csi-provisioner", 3600);
  return cp.writeKubeconfig({ token, namespace, ...options });
};
