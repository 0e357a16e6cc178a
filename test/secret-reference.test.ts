import { Either } from "effect";
import { describe, expect, it } from "vitest";
import { resolveSecretReference } from "../src/programs/SecretReference.js";

const claim = { name: "db", namespace: "team-a", annotations: { "example.com/secret": "custom" } };
const resolve = (
  kind: Parameters<typeof resolveSecretReference>[0],
  parameters: Record<string, string>,
) => resolveSecretReference(kind, parameters, "pvc-123", claim);

describe("SPEC §3 secret references and their templates", () => {
  it("resolves ${pv.name}, ${pvc.namespace}, ${pvc.name} and ${pvc.annotations['key']} in names", () => {
    expect(
      resolve("nodeStage", {
        "csi.storage.k8s.io/node-stage-secret-name":
          "${pvc.name}-${pvc.annotations['example.com/secret']}-${pv.name}",
        "csi.storage.k8s.io/node-stage-secret-namespace": "${pvc.namespace}",
      }),
    ).toEqual(Either.right({ name: "db-custom-pvc-123", namespace: "team-a" }));
  });

  it("namespaces may not use values the PVC's author controls", () => {
    expect(
      resolve("provisioner", {
        "csi.storage.k8s.io/provisioner-secret-name": "s",
        "csi.storage.k8s.io/provisioner-secret-namespace": "${pvc.name}",
      }),
    ).toEqual(Either.left('error resolving value "${pvc.name}": invalid tokens: ["pvc.name"]'));
  });

  it("the deprecated csi* keys still work but not together with the prefixed ones", () => {
    expect(
      resolve("provisioner", {
        csiProvisionerSecretName: "s",
        csiProvisionerSecretNamespace: "ns",
      }),
    ).toEqual(Either.right({ name: "s", namespace: "ns" }));
    expect(
      resolve("provisioner", {
        csiProvisionerSecretName: "s",
        csiProvisionerSecretNamespace: "ns",
        "csi.storage.k8s.io/provisioner-secret-name": "t",
        "csi.storage.k8s.io/provisioner-secret-namespace": "ns",
      }),
    ).toEqual(
      Either.left(
        'failed to get name and namespace template from params: Provisioner secrets specified in parameters with both "csi" and "csi.storage.k8s.io/" keys',
      ),
    );
  });

  it("falls back to the class's default secret, and is absent when none is named", () => {
    expect(
      resolve("controllerExpand", {
        "csi.storage.k8s.io/secret-name": "shared",
        "csi.storage.k8s.io/secret-namespace": "kube-system",
      }),
    ).toEqual(Either.right({ name: "shared", namespace: "kube-system" }));
    expect(resolve("nodePublish", {})).toEqual(Either.right(undefined));
  });

  it("rejects names and namespaces that are not valid DNS names, and empty values", () => {
    expect(
      resolve("provisioner", {
        "csi.storage.k8s.io/provisioner-secret-name": "${pvc.annotations['example.com/secret']}_X",
        "csi.storage.k8s.io/provisioner-secret-namespace": "ns",
      }),
    ).toEqual(
      Either.left(
        `"\${pvc.annotations['example.com/secret']}_X" resolved to "custom_X" which is not a valid secret name`,
      ),
    );
    expect(
      resolve("provisioner", {
        "csi.storage.k8s.io/provisioner-secret-name": "s",
        "csi.storage.k8s.io/provisioner-secret-namespace": "Not.A.Label",
      }),
    ).toEqual(Either.left('"Not.A.Label" is not a valid namespace name'));
    expect(
      resolve("provisioner", {
        "csi.storage.k8s.io/provisioner-secret-name": "",
        "csi.storage.k8s.io/provisioner-secret-namespace": "ns",
      }),
    ).toEqual(
      Either.left(
        "failed to get name and namespace template from params: Provisioner secrets specified in parameters but value of either namespace or name is empty",
      ),
    );
  });
});
