import { describe, expect, it } from "@effect/vitest";
import { Effect, TestClock } from "effect";
import {
  defaultControllerCapabilities,
  MemoryDriver,
  type MemoryDriverOptions,
} from "../src/layers/CsiMemory.js";
import { MemoryCluster } from "../src/layers/KubeMemory.js";
import type { ProvisionerConfig } from "../src/schemas/Config.js";
import {
  type ClaimOptions,
  claim,
  csiNode,
  node,
  secret,
  storageClass,
} from "./support/Fixtures.js";
import { eventsOf, getRaw, harness, startProvisioner } from "./support/Harness.js";

interface Scenario {
  readonly classParameters?: Record<string, string>;
  readonly classExtra?: Parameters<typeof storageClass>[1];
  readonly claim?: ClaimOptions;
  readonly config?: Partial<ProvisionerConfig>;
  readonly driver?: MemoryDriverOptions;
  readonly setup?: Effect.Effect<unknown, unknown, MemoryCluster>;
}

/** Provisions one claim `a` and returns what CreateVolume received (undefined when not called). */
const firstRequest = (scenario: Scenario = {}) =>
  Effect.gen(function* () {
    const cluster = yield* MemoryCluster;
    const driver = yield* MemoryDriver;
    yield* cluster.create(
      "storageclasses",
      storageClass("fast", { ...scenario.classExtra, parameters: scenario.classParameters ?? {} }),
    );
    if (scenario.setup) yield* scenario.setup;
    yield* startProvisioner;
    const created = yield* cluster.create("persistentvolumeclaims", claim("a", scenario.claim));
    yield* TestClock.adjust(0);
    const calls = yield* driver.callsTo("CreateVolume");
    const uid = (created.metadata as { uid: string }).uid;
    return {
      uid,
      request: calls[0]?.request,
      events: yield* eventsOf("a"),
      pv: yield* getRaw("persistentvolumes", `pvc-${uid}`),
    };
  }).pipe(
    Effect.provide(
      harness({
        ...(scenario.config ? { config: scenario.config } : {}),
        ...(scenario.driver ? { driver: scenario.driver } : {}),
      }),
    ),
  );

describe("SPEC §3 the CreateVolume request", () => {
  it.scoped(
    "§3 name is <prefix>-<PVC UID>; the size is spec.resources.requests.storage in bytes",
    () =>
      Effect.gen(function* () {
        const { uid, request } = yield* firstRequest({ claim: { size: "5Gi" } });
        expect(request?.name).toBe(`pvc-${uid}`);
        expect(request?.capacity_range).toEqual({
          required_bytes: 5_368_709_120n,
          limit_bytes: 0n,
        });
      }),
  );

  it.scoped("§3 --volume-name-prefix and --volume-name-uuid-length shape the name", () =>
    Effect.gen(function* () {
      const { request } = yield* firstRequest({
        claim: { uid: "0a1b2c3d-4e5f-6789-abcd-ef0123456789" },
        config: { volumeNamePrefix: "vol", volumeNameUuidLength: 8 },
      });
      expect(request?.name).toBe("vol-0a1b2c3d");
    }),
  );

  it.scoped(
    "§3 one mount capability per access mode, with fs type and the class's mountOptions",
    () =>
      Effect.gen(function* () {
        const { request } = yield* firstRequest({
          classParameters: { "csi.storage.k8s.io/fstype": "xfs" },
          classExtra: { mountOptions: ["noatime"] },
          claim: {
            accessModes: ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"],
          },
        });
        expect(request?.volume_capabilities).toEqual(
          [
            "SINGLE_NODE_WRITER",
            "MULTI_NODE_READER_ONLY",
            "MULTI_NODE_MULTI_WRITER",
            "SINGLE_NODE_WRITER",
          ].map((mode) => ({
            mount: { fs_type: "xfs", mount_flags: ["noatime"] },
            access_mode: { mode },
          })),
        );
      }),
  );

  it.scoped(
    "§3 with SINGLE_NODE_MULTI_WRITER, RWO and RWOP map to the single-node multi/single writer modes; Block has no fs",
    () =>
      Effect.gen(function* () {
        const { request } = yield* firstRequest({
          claim: { accessModes: ["ReadWriteOnce", "ReadWriteOncePod"], volumeMode: "Block" },
          driver: {
            controllerCapabilities: [...defaultControllerCapabilities, "SINGLE_NODE_MULTI_WRITER"],
          },
        });
        expect(request?.volume_capabilities).toEqual([
          { block: {}, access_mode: { mode: "SINGLE_NODE_MULTI_WRITER" } },
          { block: {}, access_mode: { mode: "SINGLE_NODE_SINGLE_WRITER" } },
        ]);
      }),
  );

  it.scoped(
    "§3 fs type: the deprecated `fstype` works, --default-fstype fills in, both keys is a final error",
    () =>
      Effect.gen(function* () {
        const deprecated = yield* firstRequest({ classParameters: { fsType: "ext3" } });
        expect(deprecated.request?.volume_capabilities[0]?.mount?.fs_type).toBe("ext3");
        // Not reserved, so it also reaches the driver, as upstream.
        expect(deprecated.request?.parameters).toEqual({ fsType: "ext3" });
        const fallback = yield* firstRequest({ config: { defaultFstype: "ext4" } });
        expect(fallback.request?.volume_capabilities[0]?.mount?.fs_type).toBe("ext4");
        const both = yield* firstRequest({
          classParameters: { fstype: "ext3", "csi.storage.k8s.io/fstype": "xfs" },
        });
        expect(both.request).toBeUndefined();
        expect(both.events[1]).toBe(
          'Warning ProvisioningFailed: failed to provision volume with StorageClass "fast": fstype specified in parameters with both "fstype" and "csi.storage.k8s.io/fstype" keys',
        );
      }),
  );

  it.scoped(
    "§3 parameters reach the driver without reserved keys; --extra-create-metadata adds PVC/PV names",
    () =>
      Effect.gen(function* () {
        const { uid, request } = yield* firstRequest({
          classParameters: {
            type: "ssd",
            "csi.storage.k8s.io/fstype": "xfs",
            "csi.storage.k8s.io/provisioner-secret-name": "creds",
            "csi.storage.k8s.io/provisioner-secret-namespace": "default",
          },
          config: { extraCreateMetadata: true },
          setup: Effect.flatMap(MemoryCluster, (c) =>
            c.create("secrets", secret("default", "creds", { token: "t0p" })),
          ),
        });
        expect(request?.parameters).toEqual({
          type: "ssd",
          "csi.storage.k8s.io/pvc/name": "a",
          "csi.storage.k8s.io/pvc/namespace": "default",
          "csi.storage.k8s.io/pv/name": `pvc-${uid}`,
        });
      }),
  );

  it.scoped("§3 an unknown reserved key is a final error", () =>
    Effect.gen(function* () {
      const { request, events } = yield* firstRequest({
        classParameters: { "csi.storage.k8s.io/pvc/name": "x" },
      });
      expect(request).toBeUndefined();
      expect(events[1]).toBe(
        'Warning ProvisioningFailed: failed to provision volume with StorageClass "fast": failed to strip CSI Parameters of prefixed keys: found unknown parameter key "csi.storage.k8s.io/pvc/name" with reserved namespace csi.storage.k8s.io/',
      );
    }),
  );

  it.scoped(
    "§3 provisioner secrets come from the templated Secret; the PV gets the other secret references",
    () =>
      Effect.gen(function* () {
        const { uid, request, pv } = yield* firstRequest({
          classParameters: {
            "csi.storage.k8s.io/provisioner-secret-name": "${pvc.name}-creds",
            "csi.storage.k8s.io/provisioner-secret-namespace": "${pvc.namespace}",
            "csi.storage.k8s.io/node-publish-secret-name": "${pvc.annotations['team']}-mount",
            "csi.storage.k8s.io/node-publish-secret-namespace": "storage",
            "csi.storage.k8s.io/secret-name": "shared",
            "csi.storage.k8s.io/secret-namespace": "${pv.name}",
          },
          claim: { annotations: { team: "blue" } },
          setup: Effect.flatMap(MemoryCluster, (c) =>
            c.create("secrets", secret("default", "a-creds", { user: "u", pass: "p" })),
          ),
        });
        expect(request?.secrets).toEqual({ user: "u", pass: "p" });
        expect(
          pv.metadata.annotations["volume.kubernetes.io/provisioner-deletion-secret-name"],
        ).toBe("a-creds");
        expect(
          pv.metadata.annotations["volume.kubernetes.io/provisioner-deletion-secret-namespace"],
        ).toBe("default");
        expect(pv.spec.csi.nodePublishSecretRef).toEqual({
          name: "blue-mount",
          namespace: "storage",
        });
        // The class-wide default fills the kinds it does not name.
        expect(pv.spec.csi.controllerPublishSecretRef).toEqual({
          name: "shared",
          namespace: `pvc-${uid}`,
        });
      }),
  );

  it.scoped(
    "§3 secret templates: only a name is an error, an unknown token is an error, a missing Secret is retried",
    () =>
      Effect.gen(function* () {
        const half = yield* firstRequest({
          classParameters: { "csi.storage.k8s.io/provisioner-secret-name": "x" },
        });
        expect(half.events[1]).toContain(
          "failed to get name and namespace template from params: either name and namespace for Provisioner secrets specified, Both must be specified",
        );
        const token = yield* firstRequest({
          classParameters: {
            "csi.storage.k8s.io/provisioner-secret-name": "${pvc.labels}",
            "csi.storage.k8s.io/provisioner-secret-namespace": "default",
          },
        });
        expect(token.events[1]).toContain(
          'error resolving value "${pvc.labels}": invalid tokens: ["pvc.labels"]',
        );
        const missing = yield* firstRequest({
          classParameters: {
            "csi.storage.k8s.io/provisioner-secret-name": "absent",
            "csi.storage.k8s.io/provisioner-secret-namespace": "default",
          },
        });
        expect(missing.events[1]).toContain(
          'error getting secret absent in namespace default: secrets "absent" not found',
        );
        expect([half.request, token.request, missing.request]).toEqual([
          undefined,
          undefined,
          undefined,
        ]);
      }),
  );

  it.scoped(
    "§3 topology: requisite and preferred from the selected node's CSINode keys and labels",
    () =>
      Effect.gen(function* () {
        const zones = Effect.flatMap(MemoryCluster, (c) =>
          Effect.all([
            c.create("nodes", node("n1", { "topology.example.com/zone": "z1" })),
            c.create("nodes", node("n2", { "topology.example.com/zone": "z2" })),
            c.create("csinodes", csiNode("n1", ["topology.example.com/zone"])),
            c.create("csinodes", csiNode("n2", ["topology.example.com/zone"])),
          ]),
        );
        const { request } = yield* firstRequest({
          classExtra: { volumeBindingMode: "WaitForFirstConsumer" },
          claim: { annotations: { "volume.kubernetes.io/selected-node": "n2" } },
          driver: {
            pluginCapabilities: ["CONTROLLER_SERVICE", "VOLUME_ACCESSIBILITY_CONSTRAINTS"],
            accessibleTopology: [{ segments: { "topology.example.com/zone": "z2" } }],
          },
          setup: zones,
        });
        expect(request?.accessibility_requirements).toEqual({
          requisite: [
            { segments: { "topology.example.com/zone": "z1" } },
            { segments: { "topology.example.com/zone": "z2" } },
          ],
          preferred: [
            { segments: { "topology.example.com/zone": "z2" } },
            { segments: { "topology.example.com/zone": "z1" } },
          ],
        });
      }),
  );

  it.scoped("§3 without VOLUME_ACCESSIBILITY_CONSTRAINTS no topology is sent", () =>
    Effect.gen(function* () {
      const { request } = yield* firstRequest({
        setup: Effect.flatMap(MemoryCluster, (c) => c.create("csinodes", csiNode("n1", ["zone"]))),
      });
      expect(request?.accessibility_requirements).toBeUndefined();
    }),
  );

  it.scoped(
    "§3 a VolumeAttributesClass's parameters become mutable_parameters (MODIFY_VOLUME)",
    () =>
      Effect.gen(function* () {
        const vac = Effect.flatMap(MemoryCluster, (c) =>
          c.create("volumeattributesclasses", {
            metadata: { name: "gold" },
            driverName: "memory.csi.example.com",
            parameters: { iops: "3000" },
          }),
        );
        const { request } = yield* firstRequest({
          claim: { volumeAttributesClassName: "gold" },
          driver: { controllerCapabilities: [...defaultControllerCapabilities, "MODIFY_VOLUME"] },
          setup: vac,
        });
        expect(request?.mutable_parameters).toEqual({ iops: "3000" });
        const unsupported = yield* firstRequest({
          claim: { volumeAttributesClassName: "gold" },
          setup: vac,
        });
        expect(unsupported.events[1]).toContain(
          "controller MODIFY_VOLUME capability is not reported",
        );
      }),
  );

  it.scoped("§3 every CSI call runs under --timeout", () =>
    Effect.gen(function* () {
      const cluster = yield* MemoryCluster;
      const driver = yield* MemoryDriver;
      yield* cluster.create("storageclasses", storageClass("fast"));
      yield* startProvisioner;
      yield* driver.script("CreateVolume", { _tag: "Hang" });
      yield* cluster.create("persistentvolumeclaims", claim("a"));
      yield* TestClock.adjust("3 seconds");
      const [call] = yield* driver.callsTo("CreateVolume");
      expect(call?.abandonedAt).toBe(3_000);
      expect((yield* eventsOf("a"))[1]).toBe(
        'Warning ProvisioningFailed: failed to provision volume with StorageClass "fast": rpc error: code = DeadlineExceeded desc = context deadline exceeded',
      );
    }).pipe(Effect.provide(harness({ config: { timeout: "3 seconds" as never } }))),
  );
});
