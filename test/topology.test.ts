import { describe, expect, it } from "@effect/vitest";
import { Effect, Layer, Option } from "effect";
import { Kube, KubeError, type KubeService } from "../src/layers/Kube.js";
import {
  accessibilityRequirements,
  compareTerms,
  flatten,
  fnv1Hash32,
  isSubset,
  statefulSetOffset,
  type TopologyInput,
  volumeNodeAffinity,
} from "../src/programs/Topology.js";
import type { CsiNode, Node } from "../src/schemas/Node.js";
import type { TopologySelectorTerm } from "../src/schemas/StorageClass.js";

const driver = "csi.example.com";
const zone = "topology.example.com/zone";
const rack = "topology.example.com/rack";

const node = (name: string, labels: Record<string, string>): Node => ({
  metadata: { name, labels },
});
const csiNode = (name: string, keys: ReadonlyArray<string> | undefined): CsiNode => ({
  metadata: { name },
  spec: {
    drivers: [
      { name: "other.example.com", topologyKeys: ["other/key"] },
      { name: driver, topologyKeys: keys },
    ],
  },
});

/** Three nodes over two zones, and node-x where the driver registered no topology. */
const cluster = {
  nodes: [
    node("node-a", { [zone]: "zone-1", "kubernetes.io/os": "linux" }),
    node("node-b", { [zone]: "zone-2" }),
    node("node-c", { [zone]: "zone-2" }),
    node("node-x", {}),
  ],
  csiNodes: [
    csiNode("node-b", [zone]),
    csiNode("node-a", [zone]),
    csiNode("node-c", [zone]),
    csiNode("node-x", undefined),
  ],
};

type Cluster = { readonly nodes: ReadonlyArray<Node>; readonly csiNodes: ReadonlyArray<CsiNode> };

/** Only the reads topology needs; any other use of the API is a bug in the code under test. */
const fakeKube = (
  { nodes, csiNodes }: Cluster,
  overrides: Partial<KubeService> = {},
): Layer.Layer<Kube> => {
  const used: Partial<KubeService> = {
    getNode: (name) =>
      Effect.succeed(Option.fromNullable(nodes.find((n) => n.metadata.name === name))),
    listNodes: Effect.succeed(nodes),
    getCsiNode: (name) =>
      Effect.succeed(Option.fromNullable(csiNodes.find((n) => n.metadata.name === name))),
    listCsiNodes: Effect.succeed(csiNodes),
    ...overrides,
  };
  const service = new Proxy(used, {
    get: (target, prop) =>
      typeof prop === "string" && !(prop in target)
        ? () => Effect.dieMessage(`unexpected Kube.${prop}`)
        : target[prop as keyof KubeService],
  });
  return Layer.succeed(Kube, service as KubeService);
};

/** A cluster whose API must not be touched at all. */
const noApi = fakeKube(cluster, {
  getNode: () => Effect.dieMessage("unexpected getNode"),
  listNodes: Effect.dieMessage("unexpected listNodes"),
  getCsiNode: () => Effect.dieMessage("unexpected getCsiNode"),
  listCsiNodes: Effect.dieMessage("unexpected listCsiNodes"),
});

const base: TopologyInput = {
  driver,
  pvcName: "claim",
  allowedTopologies: undefined,
  selectedNode: undefined,
  strictTopology: false,
  immediateTopology: true,
};

const zones = (...values: Array<string>): ReadonlyArray<TopologySelectorTerm> => [
  { matchLabelExpressions: [{ key: zone, values }] },
];
const z = (value: string) => ({ segments: { [zone]: value } });

const run = (input: Partial<TopologyInput>, layer: Layer.Layer<Kube> = fakeKube(cluster)) =>
  accessibilityRequirements({ ...base, ...input }).pipe(Effect.provide(layer));

const requirement = (input: Partial<TopologyInput>, layer?: Layer.Layer<Kube>) =>
  run(input, layer).pipe(Effect.map(Option.getOrUndefined));

const failure = (input: Partial<TopologyInput>, layer?: Layer.Layer<Kube>) =>
  run(input, layer).pipe(
    Effect.flip,
    Effect.map((e) =>
      e._tag === "TopologyError"
        ? { message: e.message, selectedNodeNotFound: e.selectedNodeNotFound }
        : e,
    ),
  );

describe("accessibility requirements, one test per row of upstream's README table", () => {
  it.effect("delayed + strict: requisite = preferred = the selected node's topology", () =>
    Effect.gen(function* () {
      const expected = { requisite: [z("zone-2")], preferred: [z("zone-2")] };
      const strict = { selectedNode: "node-b", strictTopology: true };
      expect(yield* requirement(strict)).toEqual(expected);
      // allowedTopologies only has to admit the node; it is not passed on.
      expect(
        yield* requirement({ ...strict, allowedTopologies: zones("zone-1", "zone-2") }),
      ).toEqual(expected);
    }),
  );

  it.effect("delayed, no allowedTopologies: aggregated cluster, selected node's first", () =>
    Effect.gen(function* () {
      expect(yield* requirement({ selectedNode: "node-b", immediateTopology: false })).toEqual({
        requisite: [z("zone-1"), z("zone-2")],
        preferred: [z("zone-2"), z("zone-1")],
      });
    }),
  );

  it.effect("delayed with allowedTopologies: those, rotated to the selected node's", () =>
    Effect.gen(function* () {
      const allowedTopologies = zones("zone-3", "zone-2", "zone-1");
      expect(yield* requirement({ selectedNode: "node-b", allowedTopologies })).toEqual({
        requisite: [z("zone-1"), z("zone-2"), z("zone-3")],
        preferred: [z("zone-2"), z("zone-3"), z("zone-1")],
      });
    }),
  );

  it.effect("immediate with allowedTopologies: those, rotated by the claim name's hash", () =>
    Effect.gen(function* () {
      const allowedTopologies = zones("zone-3", "zone-2", "zone-1");
      const requisite = [z("zone-1"), z("zone-2"), z("zone-3")];
      // fnv1("claim") % 3 = 2; the class alone decides, so the API is not read.
      expect(yield* requirement({ allowedTopologies, immediateTopology: false }, noApi)).toEqual({
        requisite,
        preferred: [z("zone-3"), z("zone-1"), z("zone-2")],
      });
      expect(yield* requirement({ allowedTopologies, strictTopology: true }, noApi)).toEqual({
        requisite,
        preferred: [z("zone-3"), z("zone-1"), z("zone-2")],
      });
    }),
  );

  it.effect("immediate, no allowedTopologies, --immediate-topology: aggregated cluster", () =>
    Effect.gen(function* () {
      // fnv1("claim") % 2 = 1
      expect(yield* requirement({})).toEqual({
        requisite: [z("zone-1"), z("zone-2")],
        preferred: [z("zone-2"), z("zone-1")],
      });
    }),
  );

  it.effect("immediate, no allowedTopologies, --immediate-topology=false: none, no API reads", () =>
    Effect.gen(function* () {
      expect(yield* run({ immediateTopology: false, strictTopology: true }, noApi)).toEqual(
        Option.none(),
      );
    }),
  );
});

describe("requisite", () => {
  it.effect("is sorted by length, key, value and deduplicated", () =>
    Effect.gen(function* () {
      const allowedTopologies: ReadonlyArray<TopologySelectorTerm> = [
        { matchLabelExpressions: [{ key: zone, values: ["zone-2"] }] },
        {
          matchLabelExpressions: [
            { key: zone, values: ["zone-1"] },
            { key: rack, values: ["r1"] },
          ],
        },
        { matchLabelExpressions: [{ key: zone, values: ["zone-1", "zone-2"] }] },
      ];
      const result = yield* requirement({ allowedTopologies, pvcName: "my-claim" });
      // fnv1("my-claim") % 3 = 0: preferred is the requisite as is.
      const expected = [z("zone-1"), z("zone-2"), { segments: { [rack]: "r1", [zone]: "zone-1" } }];
      expect(result).toEqual({ requisite: expected, preferred: expected });
    }),
  );

  it.effect("allowedTopologies of empty terms means no requirement", () =>
    Effect.gen(function* () {
      expect(yield* run({ allowedTopologies: [{}, { matchLabelExpressions: [] }] })).toEqual(
        Option.none(),
      );
    }),
  );

  it.effect("immediate binding takes the keys of the first CSINode by name", () =>
    Effect.gen(function* () {
      const layer = fakeKube({
        nodes: [node("n1", { [zone]: "zone-1", [rack]: "r1" }), node("n2", { [zone]: "zone-2" })],
        csiNodes: [csiNode("n2", [zone]), csiNode("n1", [zone, rack]), csiNode("n0", [])],
      });
      const topology = { segments: { [rack]: "r1", [zone]: "zone-1" } };
      expect(yield* requirement({}, layer)).toEqual({
        requisite: [topology],
        preferred: [topology],
      });
    }),
  );
});

describe("StatefulSet spreading", () => {
  it("is FNV-1 (not 1a) over UTF-8 bytes", () => {
    expect(fnv1Hash32("")).toBe(0x811c9dc5);
    expect(fnv1Hash32("a")).toBe(0x050c5d7e);
    expect(fnv1Hash32("foobar")).toBe(0x31f0b262);
    expect(fnv1Hash32("web")).toBe(1181096325);
  });

  it("hashes the set name and adds the ordinal", () => {
    const web = fnv1Hash32("web");
    expect(statefulSetOffset("www-web-0", 1000)).toBe(web % 1000);
    expect(statefulSetOffset("www-web-12", 1000)).toBe((web + 12) % 1000);
    expect(statefulSetOffset("web-12", 1000)).toBe((web + 12) % 1000);
    expect(statefulSetOffset("claim-a-b-web-012", 1000)).toBe((web + 12) % 1000);
    expect(statefulSetOffset("claim", 1000)).toBe(fnv1Hash32("claim") % 1000);
    expect(statefulSetOffset("a-b-x", 1000)).toBe(fnv1Hash32("a-b-x") % 1000);
    // Not a uint32 ordinal: the whole name is hashed.
    expect(statefulSetOffset("web-+1", 1000)).toBe(fnv1Hash32("web-+1") % 1000);
    expect(statefulSetOffset("web-4294967296", 1000)).toBe(fnv1Hash32("web-4294967296") % 1000);
    // uint32 arithmetic wraps: (web + 2^32 - 1) mod 2^32 = web - 1.
    expect(statefulSetOffset("web-4294967295", 1000)).toBe((web - 1) % 1000);
  });

  it.effect("puts consecutive replicas in different zones and a replica's claims together", () =>
    Effect.gen(function* () {
      const first = (pvcName: string) =>
        requirement({ pvcName }).pipe(Effect.map((r) => r?.preferred[0]));
      expect(yield* first("www-web-0")).toEqual(z("zone-2"));
      expect(yield* first("www-web-1")).toEqual(z("zone-1"));
      expect(yield* first("www-web-2")).toEqual(z("zone-2"));
      expect(yield* first("data-web-1")).toEqual(z("zone-1"));
    }),
  );
});

describe("errors", () => {
  it.effect("a missing CSINode asks for rescheduling", () =>
    Effect.gen(function* () {
      expect(yield* failure({ selectedNode: "node-z" })).toEqual({
        message: 'failed to get selected CSINode node-z: csinode.storage.k8s.io "node-z" not found',
        selectedNodeNotFound: true,
      });
    }),
  );

  it.effect("a missing Node counts as missing topology labels, and asks for rescheduling", () =>
    Effect.gen(function* () {
      const layer = fakeKube({ nodes: [], csiNodes: cluster.csiNodes });
      expect(yield* failure({ selectedNode: "node-a" }, layer)).toEqual({
        message: `topology labels from selected node map[] does not match topology keys from CSINode [${zone}]`,
        selectedNodeNotFound: true,
      });
    }),
  );

  it.effect("selected node without keys or without the labels", () =>
    Effect.gen(function* () {
      expect(yield* failure({ selectedNode: "node-x" })).toEqual({
        message: "no topology key found for node node-x",
        selectedNodeNotFound: false,
      });
      const layer = fakeKube({
        nodes: [node("node-a", { [zone]: "zone-1" })],
        csiNodes: [csiNode("node-a", [zone, rack])],
      });
      expect(yield* failure({ selectedNode: "node-a" }, layer)).toEqual({
        message: `topology labels from selected node map[] does not match topology keys from CSINode [${zone} ${rack}]`,
        selectedNodeNotFound: false,
      });
    }),
  );

  it.effect("strict topology: the selected node must be allowed", () =>
    Effect.gen(function* () {
      const input = {
        selectedNode: "node-a",
        strictTopology: true,
        allowedTopologies: zones("zone-2", "zone-3"),
      };
      expect(yield* failure(input)).toEqual({
        message: `selected node '"node-a"' topology '[{${zone} zone-1}]' is not in allowed topologies: [[{${zone} zone-2}] [{${zone} zone-3}]]`,
        selectedNodeNotFound: false,
      });
    }),
  );

  it.effect("not strict: the selected node must be in the requisite", () =>
    Effect.gen(function* () {
      expect(
        yield* failure({ selectedNode: "node-a", allowedTopologies: zones("zone-2") }),
      ).toEqual({
        message: `topology [{${zone} zone-1}] from selected node "node-a" is not in requisite: [[{${zone} zone-2}]]`,
        selectedNodeNotFound: false,
      });
    }),
  );

  it.effect("immediate binding: keys on no node, or no keys at all", () =>
    Effect.gen(function* () {
      const unlabelled = fakeKube({ nodes: [node("n1", {})], csiNodes: [csiNode("n1", [rack])] });
      expect(yield* failure({}, unlabelled)).toEqual({
        message: `topologyKeys [${rack}] were not found on any nodes`,
        selectedNodeNotFound: false,
      });
      const unregistered = fakeKube({ nodes: cluster.nodes, csiNodes: [csiNode("node-x", [])] });
      expect(yield* failure({}, unregistered)).toEqual({
        message: "no available topology found",
        selectedNodeNotFound: false,
      });
    }),
  );

  it.effect("Kubernetes API failures pass through unchanged", () =>
    Effect.gen(function* () {
      const apiError = new KubeError({
        reason: "Unavailable",
        verb: "get",
        resource: "csinodes",
        object: "node-a",
        message: "connection refused",
      });
      const layer = fakeKube(cluster, { getCsiNode: () => Effect.fail(apiError) });
      expect(yield* Effect.flip(run({ selectedNode: "node-a" }, layer))).toBe(apiError);
    }),
  );
});

describe("pure helpers", () => {
  const seg = (key: string, value: string) => ({ key, value });

  it("flattens by distributing value lists over expressions, terms OR'ed", () => {
    expect(
      flatten([
        {
          matchLabelExpressions: [
            { key: "zone", values: ["a", "b"] },
            { key: "rack", values: ["x"] },
          ],
        },
        { matchLabelExpressions: [{ key: "zone", values: ["c"] }] },
      ]),
    ).toEqual([
      [seg("rack", "x"), seg("zone", "a")],
      [seg("rack", "x"), seg("zone", "b")],
      [seg("zone", "c")],
    ]);
    expect(
      flatten([
        {
          matchLabelExpressions: [
            { key: "zone", values: ["z1", "z2"] },
            { key: "rack", values: ["rA", "rB"] },
          ],
        },
      ]),
    ).toEqual([
      [seg("rack", "rA"), seg("zone", "z1")],
      [seg("rack", "rA"), seg("zone", "z2")],
      [seg("rack", "rB"), seg("zone", "z1")],
      [seg("rack", "rB"), seg("zone", "z2")],
    ]);
    // As upstream: an expression without values drops what came before it.
    expect(
      flatten([
        {
          matchLabelExpressions: [
            { key: "zone", values: ["a"] },
            { key: "rack", values: [] },
            { key: "row", values: ["1"] },
          ],
        },
      ]),
    ).toEqual([[seg("row", "1")]]);
  });

  it("compares by length, then key, then value", () => {
    expect(compareTerms([seg("z", "1")], [seg("a", "1"), seg("b", "1")])).toBeLessThan(0);
    expect(compareTerms([seg("a", "2")], [seg("b", "1")])).toBeLessThan(0);
    expect(compareTerms([seg("a", "2")], [seg("a", "1")])).toBeGreaterThan(0);
    expect(compareTerms([seg("a", "1")], [seg("a", "1")])).toBe(0);
  });

  it("checks subsets of sorted terms", () => {
    const nodeTerm = [seg("rack", "r1"), seg("zone", "z1")];
    expect(isSubset([], nodeTerm)).toBe(true);
    expect(isSubset([seg("zone", "z1")], nodeTerm)).toBe(true);
    expect(isSubset(nodeTerm, nodeTerm)).toBe(true);
    expect(isSubset([seg("zone", "z2")], nodeTerm)).toBe(false);
    expect(isSubset([seg("aisle", "1"), seg("zone", "z1")], nodeTerm)).toBe(false);
    expect(isSubset(nodeTerm, [seg("zone", "z1")])).toBe(false);
  });
});

describe("volume node affinity", () => {
  it("is absent without topology", () => {
    expect(volumeNodeAffinity([])).toBeUndefined();
    expect(volumeNodeAffinity([{ segments: {} }])).toBeUndefined();
  });

  it("has one term per topology and one In expression per segment, keys sorted", () => {
    expect(
      volumeNodeAffinity([
        { segments: { [zone]: "zone-1", [rack]: "r2" } },
        { segments: {} },
        { segments: { [zone]: "zone-2" } },
      ]),
    ).toEqual({
      required: {
        nodeSelectorTerms: [
          {
            matchExpressions: [
              { key: rack, operator: "In", values: ["r2"] },
              { key: zone, operator: "In", values: ["zone-1"] },
            ],
          },
          { matchExpressions: [{ key: zone, operator: "In", values: ["zone-2"] }] },
        ],
      },
    });
  });
});
