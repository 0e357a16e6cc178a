import { Data, Effect, Option } from "effect";
import { Kube, type KubeError, type KubeService } from "../layers/Kube.js";
import type { Topology, TopologyRequirement } from "../schemas/Csi.js";
import { topologyKeysOf } from "../schemas/Node.js";
import type { NewPersistentVolume } from "../schemas/PersistentVolume.js";
import type { TopologySelectorTerm } from "../schemas/StorageClass.js";

/**
 * CSI accessibility requirements and PV node affinity, with the semantics of upstream
 * external-provisioner's pkg/controller/topology.go (README "Topology support" table).
 */

export interface Segment {
  readonly key: string;
  readonly value: string;
}

/** Segments AND'ed together, kept sorted by key so that comparison and subset checks are linear. */
export type TopologyTerm = ReadonlyArray<Segment>;

export interface TopologyInput {
  readonly driver: string;
  readonly pvcName: string;
  readonly allowedTopologies: ReadonlyArray<TopologySelectorTerm> | undefined;
  /** From `volume.kubernetes.io/selected-node`; empty counts as absent. */
  readonly selectedNode: string | undefined;
  readonly strictTopology: boolean;
  readonly immediateTopology: boolean;
}

/** Topology could not be determined; `message` is upstream's wording. */
export class TopologyError extends Data.TaggedError("TopologyError")<{
  readonly message: string;
  /** The selected Node or its CSINode does not exist: the scheduler should pick another node. */
  readonly selectedNodeNotFound: boolean;
}> {}

const fail = (message: string, selectedNodeNotFound = false) =>
  Effect.fail(new TopologyError({ message, selectedNodeNotFound }));

// Byte-wise like Go's strings.Compare for the ASCII that label keys and values are limited to.
const compareStrings = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export const sortTerm = (term: TopologyTerm): TopologyTerm =>
  [...term].sort((a, b) => compareStrings(a.key, b.key) || compareStrings(a.value, b.value));

/** Shorter terms first, then segment by segment. */
export const compareTerms = (a: TopologyTerm, b: TopologyTerm): number => {
  if (a.length !== b.length) return a.length - b.length;
  for (let i = 0; i < a.length; i++) {
    const c = compareStrings(a[i].key, b[i].key) || compareStrings(a[i].value, b[i].value);
    if (c !== 0) return c;
  }
  return 0;
};

/** Whether every segment of `term` is in `other` (both sorted), walking them as upstream does. */
export const isSubset = (term: TopologyTerm, other: TopologyTerm): boolean => {
  if (term.length === 0) return true;
  let j = 0;
  for (const segment of other) {
    if (segment.key !== term[j].key) continue;
    if (segment.value !== term[j].value) return false;
    if (++j === term.length) return true;
  }
  return false;
};

/**
 * Distributes each selector term's value lists over its expressions ({zone:[a,b], rack:[x]} →
 * {zone:a,rack:x} OR {zone:b,rack:x}); the terms stay OR'ed. An expression without values
 * restarts the product, as upstream's does.
 */
export const flatten = (allowed: ReadonlyArray<TopologySelectorTerm>): Array<TopologyTerm> =>
  allowed.flatMap((selector) => {
    let terms: Array<TopologyTerm> = [];
    for (const { key, values } of selector.matchLabelExpressions ?? []) {
      terms = values.flatMap((value) =>
        terms.length === 0 ? [[{ key, value }]] : terms.map((term) => [...term, { key, value }]),
      );
    }
    return terms.map(sortTerm);
  });

/** 32-bit FNV-1 (Go's `fnv.New32`, multiply before xor) over the UTF-8 bytes. */
export const fnv1Hash32 = (text: string): number => {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    hash = (Math.imul(hash, 0x01000193) ^ byte) >>> 0;
  }
  return hash;
};

/**
 * The offset by which immediate-binding requisites are rotated into `preferred`. StatefulSet
 * claims are named `<claim>-<set>-<ordinal>`: hashing only `<set>` and adding the ordinal puts
 * consecutive replicas in consecutive topologies while a replica's claims stay together.
 */
export const statefulSetOffset = (pvcName: string, termCount: number): number => {
  let hashed = pvcName;
  let index = 0;
  const dash = pvcName.lastIndexOf("-");
  const ordinal = pvcName.slice(dash + 1);
  // Go's strconv.ParseUint(s, 10, 32): digits only, at most 2^32-1.
  if (dash !== -1 && /^[0-9]+$/.test(ordinal) && Number(ordinal) <= 0xffffffff) {
    index = Number(ordinal);
    hashed = pvcName.slice(0, dash);
    hashed = hashed.slice(hashed.lastIndexOf("-") + 1);
  }
  return ((fnv1Hash32(hashed) + index) >>> 0) % termCount;
};

const rotate = <A>(items: ReadonlyArray<A>, start: number): Array<A> => [
  ...items.slice(start),
  ...items.slice(0, start),
];

/** The node's term for `keys`, none when a key is missing from its labels. */
const termOf = (
  labels: Readonly<Record<string, string>>,
  keys: ReadonlyArray<string>,
): Option.Option<TopologyTerm> =>
  keys.every((key) => Object.hasOwn(labels, key))
    ? Option.some(sortTerm(keys.map((key) => ({ key, value: labels[key] }))))
    : Option.none();

// Error messages print terms the way Go's %v prints upstream's []topologySegment.
const showTerm = (term: TopologyTerm) =>
  `[${term.map(({ key, value }) => `{${key} ${value}}`).join(" ")}]`;
const showTerms = (terms: ReadonlyArray<TopologyTerm>) => `[${terms.map(showTerm).join(" ")}]`;
const showKeys = (keys: ReadonlyArray<string>) => `[${keys.join(" ")}]`;

interface SelectedNode {
  readonly name: string;
  readonly keys: ReadonlyArray<string>;
  readonly term: TopologyTerm;
}

const selectedNodeTopology = (kube: KubeService, driver: string, name: string) =>
  Effect.gen(function* () {
    const csiNode = yield* kube.getCsiNode(name);
    if (Option.isNone(csiNode)) {
      return yield* fail(
        `failed to get selected CSINode ${name}: csinode.storage.k8s.io "${name}" not found`,
        true,
      );
    }
    const keys = topologyKeysOf(csiNode.value, driver);
    if (keys.length === 0) return yield* fail(`no topology key found for node ${name}`);
    const node = yield* kube.getNode(name);
    const term = Option.flatMap(node, (n) => termOf(n.metadata.labels, keys));
    if (Option.isNone(term)) {
      // Upstream discards the labels before formatting them, so its message always shows map[].
      return yield* fail(
        `topology labels from selected node map[] does not match topology keys from CSINode ${showKeys(keys)}`,
        Option.isNone(node),
      );
    }
    return { name, keys, term: term.value } satisfies SelectedNode;
  });

/**
 * Every distinct term of the nodes that carry all topology keys: those of the selected node, or
 * in immediate binding those of the first CSINode (by name) on which the driver registered any.
 * Upstream picks a random CSINode; by name keeps retries of one claim stable.
 */
const aggregateTopologies = (
  kube: KubeService,
  driver: string,
  selected: SelectedNode | undefined,
) =>
  Effect.gen(function* () {
    let keys = selected?.keys ?? [];
    if (selected === undefined) {
      const csiNodes = yield* kube.listCsiNodes;
      const registered = [...csiNodes]
        .sort((a, b) => compareStrings(a.metadata.name, b.metadata.name))
        .map((csiNode) => topologyKeysOf(csiNode, driver))
        .find((found) => found.length > 0);
      if (registered === undefined) return [];
      keys = registered;
    }
    const nodes = yield* kube.listNodes;
    const terms = nodes.flatMap((node) => Option.toArray(termOf(node.metadata.labels, keys)));
    if (terms.length === 0) {
      return yield* fail(`topologyKeys ${showKeys(keys)} were not found on any nodes`);
    }
    return terms;
  });

const toCsi = (terms: ReadonlyArray<TopologyTerm>): Array<Topology> =>
  terms
    .filter((term) => term.length > 0)
    .map((term) => ({ segments: Object.fromEntries(term.map(({ key, value }) => [key, value])) }));

/**
 * `accessibility_requirements` for CreateVolume; none when neither the class nor the cluster
 * constrains where the volume may live.
 */
export const accessibilityRequirements = (
  input: TopologyInput,
): Effect.Effect<Option.Option<TopologyRequirement>, TopologyError | KubeError, Kube> =>
  Effect.gen(function* () {
    const kube = yield* Kube;
    const allowed = input.allowedTopologies ?? [];
    const selected = input.selectedNode
      ? yield* selectedNodeTopology(kube, input.driver, input.selectedNode)
      : undefined;

    let requisite: Array<TopologyTerm> = [];
    if (selected && input.strictTopology) {
      if (allowed.length > 0) {
        const flat = flatten(allowed);
        if (!flat.some((term) => isSubset(term, selected.term))) {
          return yield* fail(
            `selected node '${JSON.stringify(selected.name)}' topology '${showTerm(selected.term)}' is not in allowed topologies: ${showTerms(flat)}`,
          );
        }
      }
      requisite = [selected.term];
    } else if (allowed.length > 0) {
      requisite = flatten(allowed);
    } else {
      if (!selected && !input.immediateTopology) return Option.none();
      requisite = yield* aggregateTopologies(kube, input.driver, selected);
      // The driver has not registered topology on any node yet: wait rather than guess.
      if (requisite.length === 0) return yield* fail("no available topology found");
    }
    // allowedTopologies made only of empty terms means no constraint at all.
    if (requisite.length === 0) return Option.none();

    const sorted = [...requisite]
      .sort(compareTerms)
      .filter((term, i, all) => i === 0 || compareTerms(all[i - 1], term) !== 0);

    let preferred: Array<TopologyTerm>;
    if (!selected) {
      preferred = rotate(sorted, statefulSetOffset(input.pvcName, sorted.length));
    } else if (input.strictTopology) {
      preferred = sorted;
    } else {
      const first = sorted.findIndex((term) => isSubset(term, selected.term));
      if (first === -1) {
        return yield* fail(
          `topology ${showTerm(selected.term)} from selected node ${JSON.stringify(selected.name)} is not in requisite: ${showTerms(sorted)}`,
        );
      }
      preferred = rotate(sorted, first);
    }
    return Option.some({ requisite: toCsi(sorted), preferred: toCsi(preferred) });
  });

export type VolumeNodeAffinity = NonNullable<NewPersistentVolume["spec"]["nodeAffinity"]>;

/**
 * The PV's node affinity from the volume's `accessible_topology`: one term per topology, one `In`
 * per segment (keys sorted, so that the PV is the same on every retry).
 */
export const volumeNodeAffinity = (
  accessibleTopology: ReadonlyArray<Topology>,
): VolumeNodeAffinity | undefined => {
  const nodeSelectorTerms = accessibleTopology
    .map(({ segments }) =>
      sortTerm(Object.entries(segments).map(([key, value]) => ({ key, value }))),
    )
    .filter((term) => term.length > 0)
    .map((term) => ({
      matchExpressions: term.map(({ key, value }) => ({
        key,
        operator: "In" as const,
        values: [value],
      })),
    }));
  // The API server rejects a required node selector without terms.
  return nodeSelectorTerms.length === 0 ? undefined : { required: { nodeSelectorTerms } };
};
