/**
 * CPU per I/O operation, ours beside the platform's own floor: an API request (a PATCH and its
 * reply), a PVC watch event, and a CreateVolume call. "raw" uses node:http2 and grpc-js directly and
 * does nothing else. "ours" goes through our Kube and Csi layers: rate limiter, schema decoding, and
 * for watch events the informer cache and the work queue. Two conditions: in a burst (20 calls at
 * once, watch events four to a frame) and paced (one at a time, a millisecond apart, as most of a
 * provisioning run's operations come: each wakes an idle process). With the counts per claim of the
 * latest provisioning run (bench/out/provision-*.json), this shows what a provisioned claim's I/O
 * costs in Node before any provisioning logic runs.
 *
 * The stand-in API server (HTTP/2 over TLS, replies shaped like kube-apiserver's, managedFields
 * included) runs in a child process, and so does the reference driver: only this process's CPU is
 * counted. Each figure is the median of three rounds in which raw and ours take turns.
 * Usage: npm run bench:io -- [N] (default 5000 in a burst, N/5 paced; ~6 minutes). Writes bench/out/io-cpu.json.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import * as v8 from "node:v8";
import * as grpc from "@grpc/grpc-js";
import { Deferred, Effect, Logger, LogLevel } from "effect";
import { type CsiGrpcHandle, loadCsiProto, makeCsiGrpc } from "../src/layers/CsiGrpc.js";
import { makeKubeRestWith } from "../src/layers/KubeHttp.js";
import { makeKubeService } from "../src/layers/KubeLive.js";
import { layerNoop } from "../src/layers/Metrics.js";
import { makeInformer } from "../src/programs/Informer.js";
import { retryBackoff } from "../src/programs/RetryPolicy.js";
import { makeWorkQueue } from "../src/programs/WorkQueue.js";
import { startDriver } from "../test/e2e/support/Processes.js";
import { percentile, pool } from "./support.js";

// As the sidecar runs (src/main.ts sets it the same way).
v8.setFlagsFromString("--optimize-for-size");

const n =
  process.argv
    .slice(2)
    .map(Number)
    .find((x) => x > 0) ?? 5000;
const concurrency = 20;
const tls = join(process.cwd(), "test/fixtures/tls");
const ca = readFileSync(join(tls, "localhost.crt"), "utf8");

const server = `
import * as http2 from "node:http2";
import { readFileSync } from "node:fs";
const claim = (i) => ({
  kind: "PersistentVolumeClaim", apiVersion: "v1",
  metadata: { name: "pvc-" + i, namespace: "bench", uid: "0f3e5b1c-8f7d-4c1e-9a55-" + String(i).padStart(12, "0"),
    resourceVersion: String(1000 + i), creationTimestamp: "2026-11-26T00:00:00Z",
    annotations: { "pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
      "volume.beta.kubernetes.io/storage-provisioner": "e2e.csi.effect.dev" },
    finalizers: ["kubernetes.io/pvc-protection"],
    managedFields: [
      { manager: "bench", operation: "Update", apiVersion: "v1", time: "2026-11-26T00:00:00Z", fieldsType: "FieldsV1",
        fieldsV1: { "f:spec": { "f:accessModes": {}, "f:resources": { "f:requests": { ".": {}, "f:storage": {} } }, "f:storageClassName": {}, "f:volumeMode": {} } } },
      { manager: "kube-controller-manager", operation: "Update", apiVersion: "v1", time: "2026-11-26T00:00:00Z", fieldsType: "FieldsV1",
        fieldsV1: { "f:metadata": { "f:annotations": { ".": {}, "f:pv.kubernetes.io/bind-completed": {}, "f:pv.kubernetes.io/bound-by-controller": {} } }, "f:spec": { "f:volumeName": {} }, "f:status": { "f:accessModes": {}, "f:capacity": { ".": {}, "f:storage": {} }, "f:phase": {} } } } ] },
  spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } }, storageClassName: "bench",
    volumeMode: "Filesystem", volumeName: "pvc-" + i },
  status: { phase: "Bound", accessModes: ["ReadWriteOnce"], capacity: { storage: "1Gi" } } });
const reply = JSON.stringify(claim(0));
// The next watches send \`count\` events, four per tick, or one per millisecond when paced.
let count = 0;
let paced = false;
const server = http2.createSecureServer({ cert: readFileSync(${JSON.stringify(join(tls, "localhost.crt"))}), key: readFileSync(${JSON.stringify(join(tls, "localhost.key"))}) }, (request, response) => {
  response.setHeader("content-type", "application/json");
  if (request.url.startsWith("/bench/watch?")) {
    const query = new URLSearchParams(request.url.split("?")[1]);
    count = Number(query.get("count"));
    paced = query.get("paced") === "1";
    return response.end("{}");
  }
  if (request.method !== "GET") {
    request.resume();
    return request.on("end", () => response.end(reply));
  }
  if (!request.url.includes("watch=1")) return response.end(JSON.stringify({ items: [], metadata: { resourceVersion: "1" } }));
  // One event per DATA frame; then an endless pause, so that a client does not resume the watch
  // and count more than asked for.
  let i = 0;
  const n = count;
  const next = () => {
    for (let k = 0; k < (paced ? 1 : 4) && i < n; k++) response.write(JSON.stringify({ type: "MODIFIED", object: claim(i++) }) + "\\n");
    if (i < n) paced ? setTimeout(next, 1) : setImmediate(next);
  };
  next();
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
`;

/** Microseconds of this process's CPU per operation while `work` runs `count` of them. */
const cpuPerOp = async (count: number, work: () => Promise<unknown>) => {
  const before = process.cpuUsage();
  await work();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / count;
};

const claimPath = (i: number) => `/api/v1/namespaces/bench/persistentvolumeclaims/pvc-${i}`;
const patchBody = JSON.stringify({ metadata: { finalizers: ["x/y"] } });

const rawRequest = (session: http2.ClientHttp2Session, i: number) =>
  new Promise((resolve, reject) => {
    const stream = session.request({
      ":method": "PATCH",
      ":path": claimPath(i),
      "content-type": "application/strategic-merge-patch+json",
      accept: "application/json",
    });
    stream.end(patchBody);
    const chunks: Array<Buffer> = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => resolve(JSON.parse(Buffer.concat(chunks).toString("utf8"))));
    stream.on("error", reject);
  });

/** Sets what the stand-in's next watches send. */
const configureWatches = (session: http2.ClientHttp2Session, count: number, paced: boolean) =>
  new Promise((resolve, reject) => {
    const stream = session.request({
      ":path": `/bench/watch?count=${count}&paced=${paced ? 1 : 0}`,
    });
    stream.resume();
    stream.on("end", resolve);
    stream.on("error", reject);
  });

const rawWatch = (session: http2.ClientHttp2Session, count: number) =>
  new Promise<void>((resolve) => {
    const stream = session.request({ ":path": "/api/v1/persistentvolumeclaims?watch=1" });
    let seen = 0;
    createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) => {
      const event = JSON.parse(line) as { object?: { metadata?: { uid?: string } } };
      if (event.object?.metadata?.uid && ++seen === count) {
        stream.close();
        resolve();
      }
    });
  });

const createRequest = (name: string) => ({
  name,
  capacity_range: { required_bytes: 1073741824n, limit_bytes: 0n },
  volume_capabilities: [
    {
      mount: { fs_type: "", mount_flags: [] },
      access_mode: { mode: "SINGLE_NODE_WRITER" as const },
    },
  ],
  parameters: {},
  secrets: {},
  mutable_parameters: {},
});

const child = spawn(process.execPath, ["--input-type=module", "-e", server], {
  stdio: ["ignore", "pipe", "inherit"],
});
const port = await new Promise<number>((resolve) =>
  child.stdout.once("data", (chunk: Buffer) => resolve(Number(chunk.toString().trim()))),
);
const driverHome = mkdtempSync(join(tmpdir(), "io-cpu-"));
const driver = startDriver(["--capacity=1Pi"], driverHome);

type Costs = { request: number; watchEvent: number; createVolume: number };
type Condition = "burst" | "paced";
const conditions = { burst: n, paced: Math.max(100, Math.round(n / 5)) } as const;
const rounds = 3;
const keys = (count: number) => [...Array(count).keys()];
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `count` calls of `op`: 20 at a time, or one at a time a millisecond apart. */
const drive = async (condition: Condition, count: number, op: (i: number) => Promise<unknown>) => {
  if (condition === "burst") return pool(keys(count), concurrency, op);
  for (let i = 0; i < count; i++) {
    await op(i);
    await sleep(1);
  }
};

// Raw and ours take turns, operation by operation, for a few rounds; each cell is the median of
// its rounds, which keeps a noisy machine's drift out of the comparison.
const measured = await Effect.gen(function* () {
  const rest = yield* makeKubeRestWith(
    { server: `https://127.0.0.1:${port}`, ca, headers: {}, skipTLSVerify: false, refresh: false },
    // The rate limiter is on the path but never waits: this measures CPU, not the limit.
    { kubeconfig: "", master: "", qps: 1e6, burst: 1e6, disableHttp2: false },
  );
  const kube = makeKubeService(rest);
  const csi: CsiGrpcHandle = yield* makeCsiGrpc({ address: driver.socket, timeout: "30 seconds" });
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca });
  yield* Effect.addFinalizer(() => Effect.sync(() => session.close()));
  const proto = loadCsiProto();
  const client = new proto.csi.v1.Controller(
    `unix:${driver.socket}`,
    grpc.credentials.createInsecure(),
  );
  yield* Effect.addFinalizer(() => Effect.sync(() => client.close()));

  const ops = {
    rawPatch: (i: number) => rawRequest(session, i),
    oursPatch: (i: number) =>
      Effect.runPromise(
        kube.patchPersistentVolumeClaim(
          { namespace: "bench", name: `pvc-${i}` },
          { addFinalizers: ["x/y"] },
        ),
      ),
    rawCreate: (tag: string) => (i: number) =>
      new Promise((resolve, reject) =>
        client.CreateVolume(
          { ...createRequest(`raw-${tag}-${i}`), capacity_range: { required_bytes: "1073741824" } },
          { deadline: Date.now() + 30_000 },
          (error, response) => (error ? reject(error) : resolve(response)),
        ),
      ),
    oursCreate: (tag: string) => (i: number) =>
      Effect.runPromise(csi.service.createVolume(createRequest(`ours-${tag}-${i}`))),
  };
  // Watch events through the informer cache into the work queue, whose workers do nothing.
  const oursWatch = (count: number) =>
    Effect.scoped(
      Effect.gen(function* () {
        const queue = yield* makeWorkQueue(retryBackoff("1 second", "5 minutes"));
        yield* queue.run(100, () => Effect.void).pipe(Effect.forkScoped);
        const all = yield* Deferred.make<void>();
        let seen = 0;
        const before = process.cpuUsage();
        yield* makeInformer(
          "PersistentVolumeClaims",
          kube.watchPersistentVolumeClaims,
          (claim) => claim.metadata.uid,
          (uid) => {
            queue.unsafeAdd(uid);
            if (++seen === count) Deferred.unsafeDone(all, Effect.void);
          },
        );
        yield* Deferred.await(all);
        const used = process.cpuUsage(before);
        return (used.user + used.system) / count;
      }),
    );

  yield* Effect.promise(() =>
    Promise.all([
      pool(keys(200), concurrency, ops.rawPatch),
      pool(keys(200), concurrency, ops.oursPatch),
      pool(keys(200), concurrency, ops.rawCreate("warm")),
      pool(keys(200), concurrency, ops.oursCreate("warm")),
    ]),
  );
  const results: Array<Record<Condition, { raw: Costs; ours: Costs }>> = [];
  for (let round = 0; round < rounds; round++) {
    const inRound = {} as Record<Condition, { raw: Costs; ours: Costs }>;
    for (const condition of ["burst", "paced"] as const) {
      const count = conditions[condition];
      const time = (op: (i: number) => Promise<unknown>) =>
        Effect.promise(() => cpuPerOp(count, () => drive(condition, count, op)));
      const tag = `${condition}${round}`;
      const rawRequestCost = yield* time(ops.rawPatch);
      const oursRequestCost = yield* time(ops.oursPatch);
      yield* Effect.promise(() => configureWatches(session, count, condition === "paced"));
      const rawWatchCost = yield* Effect.promise(() =>
        cpuPerOp(count, () => rawWatch(session, count)),
      );
      const oursWatchCost = yield* oursWatch(count);
      const rawCreateCost = yield* time(ops.rawCreate(tag));
      const oursCreateCost = yield* time(ops.oursCreate(tag));
      inRound[condition] = {
        raw: { request: rawRequestCost, watchEvent: rawWatchCost, createVolume: rawCreateCost },
        ours: { request: oursRequestCost, watchEvent: oursWatchCost, createVolume: oursCreateCost },
      };
    }
    results.push(inRound);
  }
  return results;
}).pipe(
  Effect.scoped,
  Effect.provide(layerNoop),
  Logger.withMinimumLogLevel(LogLevel.Warning),
  Effect.runPromise,
);

const median = (values: Array<number>) => percentile(values, 50);
const medians = (condition: Condition, side: "raw" | "ours"): Costs => ({
  request: median(measured.map((r) => r[condition][side].request)),
  watchEvent: median(measured.map((r) => r[condition][side].watchEvent)),
  createVolume: median(measured.map((r) => r[condition][side].createVolume)),
});
const costs = {
  burst: { raw: medians("burst", "raw"), ours: medians("burst", "ours") },
  paced: { raw: medians("paced", "raw"), ours: medians("paced", "ours") },
};

child.kill();
await driver.stop("SIGKILL");
rmSync(driverHome, { recursive: true, force: true });

// What one provisioned claim did in the latest provisioning run by our sidecar.
const outDir = join(process.cwd(), "bench/out");
mkdirSync(outDir, { recursive: true });
const latestRun = readdirSync(outDir)
  .filter((f) => f.startsWith("provision-") && f.endsWith(".json"))
  .sort()
  .reverse()
  .flatMap(
    (f) =>
      JSON.parse(readFileSync(join(outDir, f), "utf8")) as Array<{
        mode: string;
        apiRequestsPerPvc?: number;
        watchEventsPerPvc?: number;
      }>,
  )
  .find((r) => r.mode === "ours" && r.apiRequestsPerPvc && r.watchEventsPerPvc);
const perClaim = {
  requests: latestRun?.apiRequestsPerPvc ?? 5,
  watchEvents: latestRun?.watchEventsPerPvc ?? 10,
  createVolumes: 1,
};
const msPerClaim = (costs: Costs) =>
  (perClaim.requests * costs.request +
    perClaim.watchEvents * costs.watchEvent +
    perClaim.createVolumes * costs.createVolume) /
  1000;

const perClaimMs = (condition: Condition, side: "raw" | "ours") =>
  msPerClaim(costs[condition][side]);
const result = {
  at: new Date().toISOString(),
  operations: conditions,
  microsecondsPerOperation: costs,
  perClaim,
  ioMsPerClaim: {
    burst: { raw: perClaimMs("burst", "raw"), ours: perClaimMs("burst", "ours") },
    paced: { raw: perClaimMs("paced", "raw"), ours: perClaimMs("paced", "ours") },
  },
};
writeFileSync(join(outDir, "io-cpu.json"), `${JSON.stringify(result, null, 2)}\n`);

const cell = (value: number) => value.toFixed(0).padStart(7);
const row = (name: string, key: keyof Costs) =>
  `${name.padEnd(28)}${cell(costs.burst.raw[key])}${cell(costs.burst.ours[key])}${cell(costs.paced.raw[key])}${cell(costs.paced.ours[key])}`;
console.log(
  `CPU µs per operation            burst (${conditions.burst})   paced (${conditions.paced})`,
);
console.log(`${"".padEnd(28)}    raw   ours    raw   ours`);
console.log(row("API request (PATCH + reply)", "request"));
console.log(row("watch event", "watchEvent"));
console.log(row("CreateVolume", "createVolume"));
const ms = (value: number) => `${value.toFixed(2)} ms`;
console.log(
  `per claim (${perClaim.requests.toFixed(1)} requests, ${perClaim.watchEvents.toFixed(1)} watch events, 1 CreateVolume): ` +
    `burst raw ${ms(result.ioMsPerClaim.burst.raw)}, ours ${ms(result.ioMsPerClaim.burst.ours)}; ` +
    `paced raw ${ms(result.ioMsPerClaim.paced.raw)}, ours ${ms(result.ioMsPerClaim.paced.ours)}`,
);
