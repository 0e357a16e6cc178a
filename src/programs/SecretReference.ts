import { Either } from "effect";
import type { StringMap } from "../schemas/Field.js";
import type { SecretReference } from "../schemas/PersistentVolume.js";
import { csiParameterPrefix } from "./Names.js";

interface SecretParameters {
  readonly label: string;
  readonly nameKey: string;
  readonly namespaceKey: string;
  readonly deprecatedNameKey?: string;
  readonly deprecatedNamespaceKey?: string;
}

const prefixed = (label: string, stem: string, deprecated?: string): SecretParameters => ({
  label,
  nameKey: `${csiParameterPrefix}${stem}-name`,
  namespaceKey: `${csiParameterPrefix}${stem}-namespace`,
  ...(deprecated
    ? { deprecatedNameKey: `${deprecated}Name`, deprecatedNamespaceKey: `${deprecated}Namespace` }
    : {}),
});

/** Every secret a StorageClass can name, with its StorageClass parameter keys. */
export const SecretKind = {
  provisioner: prefixed("Provisioner", "provisioner-secret", "csiProvisionerSecret"),
  controllerPublish: prefixed(
    "ControllerPublish",
    "controller-publish-secret",
    "csiControllerPublishSecret",
  ),
  nodeStage: prefixed("NodeStage", "node-stage-secret", "csiNodeStageSecret"),
  nodePublish: prefixed("NodePublish", "node-publish-secret", "csiNodePublishSecret"),
  controllerExpand: prefixed("ControllerExpand", "controller-expand-secret"),
  nodeExpand: prefixed("NodeExpand", "node-expand-secret"),
} as const;
export type SecretKind = keyof typeof SecretKind;

const defaultSecret = prefixed("Default", "secret");

/** The reserved parameter keys the provisioner consumes (never passed to the driver). */
export const reservedSecretKeys: ReadonlySet<string> = new Set(
  [...Object.values(SecretKind), defaultSecret].flatMap((p) => [p.nameKey, p.namespaceKey]),
);

/** The claim fields templates may use; deletion resolves with name and namespace only. */
export interface TemplateClaim {
  readonly name: string;
  readonly namespace: string;
  readonly annotations?: Readonly<Record<string, string>> | undefined;
}

const templates = (
  secret: SecretParameters,
  parameters: StringMap,
): Either.Either<{ name: string; namespace: string } | undefined, string> => {
  const names = [secret.deprecatedNameKey, secret.nameKey].filter(
    (k) => k !== undefined && k in parameters,
  );
  const namespaces = [secret.deprecatedNamespaceKey, secret.namespaceKey].filter(
    (k) => k !== undefined && k in parameters,
  );
  if (names.length > 1 || namespaces.length > 1) {
    return Either.left(
      `${secret.label} secrets specified in parameters with both "csi" and "${csiParameterPrefix}" keys`,
    );
  }
  if (names.length !== namespaces.length) {
    return Either.left(
      `either name and namespace for ${secret.label} secrets specified, Both must be specified`,
    );
  }
  if (names.length === 0) return Either.right(undefined);
  const name = parameters[names[0] as string] as string;
  const namespace = parameters[namespaces[0] as string] as string;
  if (name === "" || namespace === "") {
    return Either.left(
      `${secret.label} secrets specified in parameters but value of either namespace or name is empty`,
    );
  }
  return Either.right({ name, namespace });
};

/** Go's os.Expand: `${token}` and `$token`; every token must be known. */
const expand = (
  template: string,
  values: ReadonlyMap<string, string>,
): Either.Either<string, string> => {
  const missing = new Set<string>();
  const resolved = template.replace(
    /\$\{([^}]*)\}|\$([A-Za-z0-9_]+)/g,
    (_, braced?: string, bare?: string) => {
      const token = (braced ?? bare) as string;
      const value = values.get(token);
      if (value === undefined) missing.add(token);
      return value ?? "";
    },
  );
  if (missing.size === 0) return Either.right(resolved);
  const list = [...missing].sort().map((t) => JSON.stringify(t));
  return Either.left(
    `error resolving value ${JSON.stringify(template)}: invalid tokens: [${list.join(" ")}]`,
  );
};

const dnsLabel = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const isDnsLabel = (s: string) => s.length <= 63 && dnsLabel.test(s);
const isDnsSubdomain = (s: string) => s.length <= 253 && s.split(".").every(isDnsLabel);

const validated = (
  template: string,
  resolved: string,
  valid: (s: string) => boolean,
  what: string,
): Either.Either<string, string> => {
  if (valid(resolved)) return Either.right(resolved);
  return Either.left(
    template === resolved
      ? `${JSON.stringify(template)} is not a valid ${what}`
      : `${JSON.stringify(template)} resolved to ${JSON.stringify(resolved)} which is not a valid ${what}`,
  );
};

/**
 * Resolves the secret a StorageClass names for `kind`, falling back to the class's default
 * `csi.storage.k8s.io/secret-name`/`-namespace`. `undefined` when the class names no secret.
 * The error strings are upstream's, because they reach users in ProvisioningFailed events.
 */
export const resolveSecretReference = (
  kind: SecretKind,
  parameters: StringMap,
  pvName: string,
  claim: TemplateClaim,
): Either.Either<SecretReference | undefined, string> =>
  Either.gen(function* () {
    let found = yield* Either.mapLeft(
      templates(SecretKind[kind], parameters),
      (e) => `failed to get name and namespace template from params: ${e}`,
    );
    if (found === undefined) {
      found = yield* Either.mapLeft(
        templates(defaultSecret, parameters),
        (e) => `failed to get default name and namespace template from params: ${e}`,
      );
    }
    if (found === undefined) return undefined;

    // The namespace may only use values the PVC's author does not control.
    const namespaceValues = new Map([
      ["pv.name", pvName],
      ["pvc.namespace", claim.namespace],
    ]);
    const namespace = yield* expand(found.namespace, namespaceValues);
    const nameValues = new Map([...namespaceValues, ["pvc.name", claim.name]]);
    for (const [key, value] of Object.entries(claim.annotations ?? {})) {
      nameValues.set(`pvc.annotations['${key}']`, value);
    }
    const name = yield* expand(found.name, nameValues);
    return {
      namespace: yield* validated(found.namespace, namespace, isDnsLabel, "namespace name"),
      name: yield* validated(found.name, name, isDnsSubdomain, "secret name"),
    };
  });
