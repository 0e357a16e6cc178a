/**
 * CPU the sidecar spends per watch event, through the live Kube layer (HTTP/2, JSON, Schema
 * decoding, the informer cache and the work queue), against a stand-in API server in a child
 * process that streams N PVC events shaped like kube-apiserver's (managedFields included).
 * Usage: npm run bench:watch -- [N] (default 20000). Prints µs of sidecar CPU per event.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as v8 from "node:v8";
import { Deferred, Effect, Logger, LogLevel } from "effect";
import { makeKubeRestWith } from "../src/layers/KubeHttp.js";
import { makeKubeService } from "../src/layers/KubeLive.js";
import { layerNoop } from "../src/layers/Metrics.js";
import { makeInformer } from "../src/programs/Informer.js";
import { retryBackoff } from "../src/programs/RetryPolicy.js";
import { makeWorkQueue } from "../src/programs/WorkQueue.js";

// As the sidecar runs (src/main.ts sets it the same way).
v8.setFlagsFromString("--optimize-for-size");

const n =
  process.argv
    .slice(2)
    .map(Number)
    .find((x) => x > 0) ?? 20_000;
const tls = join(process.cwd(), "test/fixtures/tls");

// One event per DATA frame, a few per socket read, as a busy apiserver sends them.
const server = `
import * as http2 from "node:http2";
import { readFileSync } from "node:fs";
const n = ${n};
const claim = (i) => JSON.stringify({ type: "MODIFIED", object: {
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
  status: { phase: "Bound", accessModes: ["ReadWriteOnce"], capacity: { storage: "1Gi" } } } }) + "\\n";
const server = http2.createSecureServer({ cert: readFileSync(${JSON.stringify(join(tls, "localhost.crt"))}), key: readFileSync(${JSON.stringify(join(tls, "localhost.key"))}) }, (request, response) => {
  response.setHeader("content-type", "application/json");
  if (!request.url.includes("watch=1")) return response.end(JSON.stringify({ items: [], metadata: { resourceVersion: "1" } }));
  let i = 0;
  const next = () => {
    for (let k = 0; k < 4 && i < n; k++) response.write(claim(i++));
    if (i < n) setImmediate(next); else response.end();
  };
  next();
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
`;

const child = spawn(process.execPath, ["--input-type=module", "-e", server], {
  stdio: ["ignore", "pipe", "inherit"],
});
const port = await new Promise<number>((resolve) =>
  child.stdout.once("data", (chunk: Buffer) => resolve(Number(chunk.toString().trim()))),
);

const program = Effect.gen(function* () {
  const rest = yield* makeKubeRestWith(
    {
      server: `https://127.0.0.1:${port}`,
      ca: readFileSync(join(tls, "localhost.crt"), "utf8"),
      headers: {},
      skipTLSVerify: false,
      refresh: false,
    },
    { kubeconfig: "", master: "", qps: 1000, burst: 1000, disableHttp2: false },
  );
  const kube = makeKubeService(rest);
  const queue = yield* makeWorkQueue(retryBackoff("1 second", "5 minutes"));
  let seen = 0;
  const all = yield* Deferred.make<void>();
  yield* queue.run(100, () => Effect.void).pipe(Effect.forkScoped);
  const before = process.cpuUsage();
  const start = Date.now();
  yield* makeInformer(
    "PersistentVolumeClaims",
    kube.watchPersistentVolumeClaims,
    (claim) => claim.metadata.uid,
    (uid) => {
      queue.unsafeAdd(uid);
      if (++seen === n) Deferred.unsafeDone(all, Effect.void);
    },
  );
  yield* Deferred.await(all);
  const used = process.cpuUsage(before);
  console.log(
    `${n} PVC watch events: ${((used.user + used.system) / n).toFixed(1)} µs of CPU each (${Date.now() - start} ms wall)`,
  );
});

await program.pipe(
  Effect.scoped,
  Effect.provide(layerNoop),
  Logger.withMinimumLogLevel(LogLevel.Warning),
  Effect.runPromise,
);
child.kill();
