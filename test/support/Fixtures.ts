import type { JsonObject } from "../../src/layers/KubeMemory.js";

export const driverName = "memory.csi.example.com";

export const storageClass = (
  name: string,
  extra: {
    provisioner?: string;
    parameters?: Record<string, string>;
    reclaimPolicy?: string;
    volumeBindingMode?: string;
    mountOptions?: Array<string>;
    allowedTopologies?: Array<unknown>;
  } = {},
): JsonObject => ({
  apiVersion: "storage.k8s.io/v1",
  kind: "StorageClass",
  metadata: { name },
  provisioner: extra.provisioner ?? driverName,
  reclaimPolicy: extra.reclaimPolicy ?? "Delete",
  volumeBindingMode: extra.volumeBindingMode ?? "Immediate",
  ...(extra.parameters ? { parameters: extra.parameters } : {}),
  ...(extra.mountOptions ? { mountOptions: extra.mountOptions } : {}),
  ...(extra.allowedTopologies ? { allowedTopologies: extra.allowedTopologies } : {}),
});

export interface ClaimOptions {
  namespace?: string;
  storageClassName?: string;
  size?: string;
  accessModes?: Array<string>;
  volumeMode?: string;
  annotations?: Record<string, string>;
  dataSource?: Record<string, string>;
  selector?: unknown;
  uid?: string;
  volumeAttributesClassName?: string;
}

export const claim = (name: string, options: ClaimOptions = {}): JsonObject => ({
  apiVersion: "v1",
  kind: "PersistentVolumeClaim",
  metadata: {
    name,
    namespace: options.namespace ?? "default",
    ...(options.uid ? { uid: options.uid } : {}),
    ...(options.annotations ? { annotations: options.annotations } : {}),
  },
  spec: {
    storageClassName: options.storageClassName ?? "fast",
    accessModes: options.accessModes ?? ["ReadWriteOnce"],
    resources: { requests: { storage: options.size ?? "1Gi" } },
    ...(options.volumeMode ? { volumeMode: options.volumeMode } : {}),
    ...(options.dataSource ? { dataSource: options.dataSource } : {}),
    ...(options.selector ? { selector: options.selector } : {}),
    ...(options.volumeAttributesClassName
      ? { volumeAttributesClassName: options.volumeAttributesClassName }
      : {}),
  },
});

export const secret = (
  namespace: string,
  name: string,
  data: Record<string, string>,
): JsonObject => ({
  apiVersion: "v1",
  kind: "Secret",
  metadata: { name, namespace },
  data: Object.fromEntries(
    Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")]),
  ),
});

export const node = (name: string, labels: Record<string, string>): JsonObject => ({
  apiVersion: "v1",
  kind: "Node",
  metadata: { name, labels },
});

export const csiNode = (
  name: string,
  topologyKeys: Array<string>,
  driver = driverName,
): JsonObject => ({
  apiVersion: "storage.k8s.io/v1",
  kind: "CSINode",
  metadata: { name },
  spec: { drivers: [{ name: driver, nodeID: name, topologyKeys }] },
});
