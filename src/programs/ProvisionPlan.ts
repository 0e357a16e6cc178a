import { Data, Effect, Either, Option } from "effect";
import { Config } from "../layers/Config.js";
import { Kube } from "../layers/Kube.js";
import type { AccessMode, CreateVolumeRequest, VolumeCapability } from "../schemas/Csi.js";
import type { StringMap } from "../schemas/Field.js";
import type { SecretReference } from "../schemas/PersistentVolume.js";
import type {
  PersistentVolumeClaim,
  TypedObjectReference,
} from "../schemas/PersistentVolumeClaim.js";
import type { StorageClass } from "../schemas/StorageClass.js";
import { dataSourceOf, isBlock, requestedBytes, volumeNameFor } from "./Claims.js";
import { dataSourceKind, volumeContentSource } from "./ContentSource.js";
import { Driver, supportsTopology } from "./Driver.js";
import { csiParameterPrefix, Parameter } from "./Names.js";
import { reservedSecretKeys, resolveSecretReference, type SecretKind } from "./SecretReference.js";
import { accessibilityRequirements } from "./Topology.js";

/**
 * Why an attempt could not go ahead. `state` says what it means for a volume the driver may be
 * creating: `Final` (nothing runs there), `Reschedule` (ask the scheduler for another node),
 * `NoChange` (a transient problem before CreateVolume: whatever was true still is).
 */
export class ProvisionFailure extends Data.TaggedError("ProvisionFailure")<{
  readonly message: string;
  readonly state: "Final" | "NoChange" | "Reschedule" | "InBackground";
}> {}

const final = (message: string) => new ProvisionFailure({ message, state: "Final" });
const noChange = (message: string) => new ProvisionFailure({ message, state: "NoChange" });

export type PvSecretKind = Exclude<SecretKind, "provisioner">;

/** Everything an attempt needs, computed before CreateVolume and reused to build the PV. */
export interface ProvisionPlan {
  readonly request: CreateVolumeRequest;
  readonly pvName: string;
  readonly fsType: string;
  readonly requestedBytes: bigint;
  readonly provisionerSecret: SecretReference | undefined;
  readonly pvSecrets: Readonly<Partial<Record<PvSecretKind, SecretReference>>>;
  readonly dataSource: TypedObjectReference | undefined;
  readonly topology: boolean;
}

const csiAccessMode = (mode: string, singleNodeMultiWriter: boolean): AccessMode | undefined => {
  switch (mode) {
    case "ReadWriteOnce":
      return singleNodeMultiWriter ? "SINGLE_NODE_MULTI_WRITER" : "SINGLE_NODE_WRITER";
    case "ReadWriteOncePod":
      return singleNodeMultiWriter ? "SINGLE_NODE_SINGLE_WRITER" : "SINGLE_NODE_WRITER";
    case "ReadOnlyMany":
      return "MULTI_NODE_READER_ONLY";
    case "ReadWriteMany":
      return "MULTI_NODE_MULTI_WRITER";
    default:
      return undefined;
  }
};

/** fs_type from `csi.storage.k8s.io/fstype` or the deprecated `fstype` (any case), never both. */
const fsTypeOf = (parameters: StringMap, defaultFsType: string): Either.Either<string, string> => {
  const keys = Object.keys(parameters).filter(
    (k) => k === Parameter.fsType || k.toLowerCase() === "fstype",
  );
  if (keys.length > 1) {
    return Either.left(
      `fstype specified in parameters with both "fstype" and "${Parameter.fsType}" keys`,
    );
  }
  return Either.right((keys[0] === undefined ? "" : parameters[keys[0]]) || defaultFsType);
};

/** StorageClass parameters minus the keys the provisioner consumes; an unknown reserved key is an error. */
const driverParameters = (parameters: StringMap): Either.Either<Record<string, string>, string> => {
  const result: Record<string, string> = {};
  for (const [key, value] of Object.entries(parameters)) {
    if (!key.startsWith(csiParameterPrefix)) result[key] = value;
    else if (key !== Parameter.fsType && !reservedSecretKeys.has(key)) {
      return Either.left(
        `failed to strip CSI Parameters of prefixed keys: found unknown parameter key "${key}" with reserved namespace ${csiParameterPrefix}`,
      );
    }
  }
  return Either.right(result);
};

const requireCapability = (capabilities: ReadonlySet<string>, capability: string, what: string) =>
  capabilities.has(capability)
    ? Effect.void
    : Effect.fail(
        final(
          `CSI driver does not support ${what}: controller ${capability} capability is not reported`,
        ),
      );

/** The secret's data, or an error naming it. */
const readSecret = (ref: SecretReference) =>
  Effect.flatMap(Kube, (kube) => kube.getSecret(ref)).pipe(
    Effect.mapError((e) => e.message),
    Effect.flatMap(
      Option.match({
        onNone: () => Effect.fail(`secrets "${ref.name}" not found`),
        onSome: (secret) => Effect.succeed(secret.data),
      }),
    ),
    Effect.mapError((e) =>
      noChange(`error getting secret ${ref.name} in namespace ${ref.namespace}: ${e}`),
    ),
  );

/** SPEC §3: everything CreateVolume gets, with upstream's checks and error texts, in upstream's order. */
export const planCreateVolume = (
  claim: PersistentVolumeClaim,
  sc: StorageClass,
  selectedNode: string,
) =>
  Effect.gen(function* () {
    const config = yield* Config;
    const driver = yield* Driver;
    const kube = yield* Kube;
    const caps = driver.controllerCapabilities;
    const namespace = claim.metadata.namespace ?? "";

    const dataSource = dataSourceOf(claim);
    if (dataSource) {
      if (dataSource.name === "")
        return yield* final(`the PVC source not found for PVC ${claim.metadata.name}`);
      if (dataSource.namespace && dataSource.namespace !== namespace) {
        return yield* final(
          "dataSourceRef namespace specified but the CrossNamespaceVolumeDataSource feature is disabled",
        );
      }
      const kind = dataSourceKind(dataSource);
      if (kind === "Snapshot") {
        if (dataSource.apiGroup !== "snapshot.storage.k8s.io") {
          return yield* final(
            `the PVC source does not belong to the right APIGroup. Expected snapshot.storage.k8s.io, Got ${dataSource.apiGroup ?? ""}`,
          );
        }
        yield* requireCapability(caps, "CREATE_DELETE_SNAPSHOT", "snapshot restore");
      }
      if (kind === "Clone") yield* requireCapability(caps, "CLONE_VOLUME", "clone operations");
    }
    const vacName = claim.spec.volumeAttributesClassName ?? "";
    if (vacName) yield* requireCapability(caps, "MODIFY_VOLUME", "VolumeAttributesClass");
    if (claim.spec.selector !== undefined) return yield* final("claim Selector is not supported");

    const pvName = volumeNameFor(
      config.volumeNamePrefix,
      claim.metadata.uid,
      config.volumeNameUuidLength,
    );
    const parameters = sc.parameters ?? {};
    const fsType = yield* Either.mapLeft(fsTypeOf(parameters, config.defaultFstype), final);
    const bytes = yield* Either.mapLeft(requestedBytes(claim), final);

    const singleNodeMultiWriter = caps.has("SINGLE_NODE_MULTI_WRITER");
    const capabilities: Array<VolumeCapability> = [];
    for (const mode of claim.spec.accessModes ?? []) {
      const csiMode = csiAccessMode(mode, singleNodeMultiWriter);
      if (!csiMode) return yield* final(`unknown access mode: ${mode}`);
      capabilities.push(
        isBlock(claim)
          ? { block: {}, access_mode: { mode: csiMode } }
          : {
              mount: { fs_type: fsType, mount_flags: sc.mountOptions ?? [] },
              access_mode: { mode: csiMode },
            },
      );
    }

    const contentSource =
      dataSource && dataSourceKind(dataSource) !== "Populator"
        ? yield* Effect.mapError(volumeContentSource(claim, sc, dataSource), noChange)
        : undefined;

    const topology = supportsTopology(driver, config.featureGates);
    const requirements = topology
      ? yield* accessibilityRequirements({
          driver: driver.name,
          pvcName: claim.metadata.name,
          allowedTopologies: sc.allowedTopologies,
          selectedNode,
          strictTopology: config.strictTopology,
          immediateTopology: config.immediateTopology,
        }).pipe(
          Effect.mapError((error) =>
            error._tag === "TopologyError" && error.selectedNodeNotFound
              ? new ProvisionFailure({ message: error.message, state: "Reschedule" })
              : noChange(`error generating accessibility requirements: ${error.message}`),
          ),
          Effect.map(Option.getOrUndefined),
        )
      : undefined;

    const claimForTemplates = {
      name: claim.metadata.name,
      namespace,
      annotations: claim.metadata.annotations,
    };
    const secretRef = (kind: SecretKind) =>
      Either.mapLeft(resolveSecretReference(kind, parameters, pvName, claimForTemplates), noChange);
    const provisionerSecret = yield* secretRef("provisioner");
    const secrets = provisionerSecret ? yield* readSecret(provisionerSecret) : {};
    const pvSecrets: Partial<Record<PvSecretKind, SecretReference>> = {};
    for (const kind of [
      "controllerPublish",
      "nodeStage",
      "nodePublish",
      "controllerExpand",
      "nodeExpand",
    ] as const) {
      const ref = yield* secretRef(kind);
      if (ref) pvSecrets[kind] = ref;
    }

    const driverParams = yield* Either.mapLeft(driverParameters(parameters), final);
    if (config.extraCreateMetadata) {
      driverParams[Parameter.pvcName] = claim.metadata.name;
      driverParams[Parameter.pvcNamespace] = namespace;
      driverParams[Parameter.pvName] = pvName;
    }

    let mutableParameters: StringMap = {};
    if (vacName) {
      const vac = yield* kube.getVolumeAttributesClass(vacName).pipe(
        Effect.mapError((e) => noChange(e.message)),
        Effect.flatMap(
          Option.match({
            onNone: () =>
              Effect.fail(
                noChange(`volumeattributesclasses.storage.k8s.io "${vacName}" not found`),
              ),
            onSome: Effect.succeed,
          }),
        ),
      );
      if (vac.driverName !== driver.name) {
        return yield* final(
          `VAC ${vacName} referenced in PVC is for driver ${vac.driverName} which does not match driver name ${driver.name}`,
        );
      }
      mutableParameters = vac.parameters ?? {};
    }

    const request: CreateVolumeRequest = {
      name: pvName,
      capacity_range: { required_bytes: bytes, limit_bytes: 0n },
      volume_capabilities: capabilities,
      parameters: driverParams,
      secrets,
      mutable_parameters: mutableParameters,
      ...(contentSource ? { volume_content_source: contentSource } : {}),
      ...(requirements ? { accessibility_requirements: requirements } : {}),
    };
    return {
      request,
      pvName,
      fsType,
      requestedBytes: bytes,
      provisionerSecret,
      pvSecrets,
      dataSource,
      topology,
    } satisfies ProvisionPlan;
  });
