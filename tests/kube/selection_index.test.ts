import assert from "node:assert/strict";
import fc from "fast-check";
import type {
  CustomRecord,
  NamespaceRecord,
  OwnerRecord,
  PodRecord,
} from "../../core/kube/objects.ts";
import { normalized, selectEgress, type Selection } from "../../core/kube/selection.ts";
import { SelectionIndex } from "../../core/kube/selection_index.ts";
import { pod, policyObject, record, vipObject } from "./fixtures.ts";

/** The cluster a test builds, as plain maps; the index follows it change by change. */
interface World {
  vips: Map<string, CustomRecord>;
  policies: Map<string, CustomRecord>;
  pods: Map<string, PodRecord>;
  namespaces: Map<string, NamespaceRecord>;
  replicaSets: Map<string, OwnerRecord>;
}

const at = (second: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString();

type Op =
  | { kind: "vip"; name: string; ip?: string; routeId?: number; team?: boolean }
  | {
    kind: "policy";
    ns: string;
    name: string;
    vip?: string;
    app?: string;
    deployment?: string;
    dest?: string;
    closed: boolean;
    created: number;
  }
  | {
    kind: "pod";
    ns: string;
    name: string;
    ip?: string;
    app: string;
    rs?: string;
    host: boolean;
    finished: boolean;
    created: number;
  }
  | { kind: "namespace"; name: string; team?: boolean }
  | { kind: "rs"; ns: string; name: string; deployment?: string };

const NS = ["a", "b"];
const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant("vip" as const),
    name: fc.constantFrom("v0", "v1"),
    ip: fc.option(fc.constantFrom("192.0.2.50", "192.0.2.51", "not-an-ip"), { nil: undefined }),
    routeId: fc.option(fc.constantFrom(5, 6), { nil: undefined, freq: 4 }),
    team: fc.option(fc.boolean(), { nil: undefined }),
  }),
  fc.record({
    kind: fc.constant("policy" as const),
    ns: fc.constantFrom(...NS),
    name: fc.constantFrom("p0", "p1", "p2"),
    vip: fc.option(fc.constantFrom("v0", "v1", "v9", "BAD"), { nil: undefined }),
    app: fc.option(fc.constantFrom("x", "y"), { nil: undefined }),
    deployment: fc.option(fc.constantFrom("d0", "d1"), { nil: undefined }),
    dest: fc.option(fc.constantFrom("203.0.113.0/24", "198.51.100.0/24"), { nil: undefined }),
    closed: fc.boolean(),
    created: fc.integer({ min: 0, max: 5 }),
  }),
  fc.record({
    kind: fc.constant("pod" as const),
    ns: fc.constantFrom(...NS),
    name: fc.constantFrom("q0", "q1", "q2", "q3", "q4"),
    ip: fc.option(fc.constantFrom("10.244.1.1", "10.244.1.2", "10.244.1.3"), { nil: undefined }),
    app: fc.constantFrom("x", "y"),
    rs: fc.option(fc.constantFrom("r0", "r1"), { nil: undefined }),
    host: fc.boolean(),
    finished: fc.boolean(),
    created: fc.integer({ min: 0, max: 5 }),
  }),
  fc.record({
    kind: fc.constant("namespace" as const),
    name: fc.constantFrom(...NS),
    team: fc.option(fc.boolean(), { nil: undefined }),
  }),
  fc.record({
    kind: fc.constant("rs" as const),
    ns: fc.constantFrom(...NS),
    name: fc.constantFrom("r0", "r1"),
    deployment: fc.option(fc.constantFrom("d0", "d1"), { nil: undefined }),
  }),
);

/** Applies one op to the world and the index; `remove` deletes the object instead. */
function apply(world: World, index: SelectionIndex, o: Op, remove: boolean) {
  switch (o.kind) {
    case "vip": {
      const value = remove ? undefined : record(vipObject(o.name, {
        ip: o.ip ?? "192.0.2.50",
        ...(o.team !== undefined
          ? { namespaceSelector: { matchLabels: { team: String(o.team) } } }
          : {}),
      }, { status: o.routeId ? { routeId: o.routeId } : {} }));
      if (value) world.vips.set(o.name, value);
      else world.vips.delete(o.name);
      index.setVip(o.name, value);
      return;
    }
    case "policy": {
      const key = `${o.ns}/${o.name}`;
      const spec = o.vip === "BAD" ? { vip: "v0" } : {
        vip: o.vip ?? "v0",
        ...(o.app ? { podSelector: { matchLabels: { app: o.app } } } : {}),
        ...(o.deployment ? { targets: [{ kind: "Deployment", name: o.deployment }] } : {}),
        ...(!o.app && !o.deployment ? { podSelector: {} } : {}),
        ...(o.dest ? { destinationCIDRs: [o.dest] } : {}),
        ...(o.closed ? { failClosed: true } : {}),
      };
      const value = remove
        ? undefined
        : record(policyObject(o.ns, o.name, spec, { created: at(o.created) }));
      if (value) world.policies.set(key, value);
      else world.policies.delete(key);
      index.setPolicy(key, value);
      return;
    }
    case "pod": {
      const key = `${o.ns}/${o.name}`;
      const value = remove ? undefined : pod(o.ns, o.name, o.ip, {
        labels: { app: o.app },
        ...(o.rs ? { owner: { kind: "ReplicaSet", name: o.rs } } : {}),
        hostNetwork: o.host,
        finished: o.finished,
        created: at(o.created),
      });
      if (value) world.pods.set(key, value);
      else world.pods.delete(key);
      index.setPod(key, value);
      return;
    }
    case "namespace": {
      const labels: Record<string, string> = o.team === undefined ? {} : { team: String(o.team) };
      const value = remove ? undefined : { name: o.name, labels };
      if (value) world.namespaces.set(o.name, value);
      else world.namespaces.delete(o.name);
      index.setNamespace(o.name, value);
      return;
    }
    case "rs": {
      const key = `${o.ns}/${o.name}`;
      const value = remove ? undefined : {
        namespace: o.ns,
        name: o.name,
        ...(o.deployment ? { owner: { kind: "Deployment", name: o.deployment } } : {}),
      };
      if (value) world.replicaSets.set(key, value);
      else world.replicaSets.delete(key);
      index.setReplicaSet(key, value);
    }
  }
}

/** Selection's outcomes in a form that does not depend on iteration order. */
function comparable(selection: Pick<Selection, "policies" | "vips">) {
  return JSON.parse(JSON.stringify({
    policies: [...selection.policies].sort().map(([key, o]) => [key, {
      ...o,
      conflicts: [...o.conflicts].sort((a, b) => (a.pod < b.pod ? -1 : 1)),
    }]),
    vips: [...selection.vips].sort(),
  }));
}

function check(world: World, index: SelectionIndex) {
  const full = selectEgress({
    vips: world.vips.values(),
    policies: world.policies.values(),
    pods: world.pods.values(),
    namespaces: world.namespaces,
    replicaSets: world.replicaSets,
  });
  const fullPods = Object.fromEntries(
    full.raw.pods.map((p) => [
      p.podIp,
      `${p.vip}|${normalized(p.destinations as string[]).join(",")}|${
        normalized(p.excluded as string[]).join(",")
      }`,
    ]),
  );
  const ipOf = (name: string) => (world.vips.get(name)!.spec as { ip: string }).ip;
  const indexed = Object.fromEntries(
    [...index.selected()].filter(([, e]) => !e.guardOnly).map(([ip, e]) => [
      ip,
      `${ipOf(e.vip)}|${(e.destinations ?? []).join(",")}|${(e.excluded ?? []).join(",")}`,
    ]),
  );
  assert.deepEqual(indexed, fullPods);
  const guarded = [...index.selected()].filter(([, e]) => e.failClosed).map(([ip]) => ip).sort();
  assert.deepEqual(guarded, [...new Set((full.raw.failClosed ?? []).map((g) => g.podIp))].sort());
  assert.deepEqual(comparable(index.outcomes()), comparable(full));
}

Deno.test("selection index: after any sequence of changes, the same as a full selection", () => {
  // Removals one time in five; a valid VIP and both namespaces first, so policies are in force.
  const step = fc.tuple(op, fc.integer({ min: 0, max: 4 }).map((n) => n === 0));
  const start: [Op, boolean][] = [
    [{ kind: "vip", name: "v0", routeId: 5 }, false],
    [{ kind: "namespace", name: "a" }, false],
    [{ kind: "namespace", name: "b" }, false],
  ];
  fc.assert(
    fc.property(fc.array(step, { minLength: 1, maxLength: 60 }), (steps) => {
      const ops = [...start, ...steps];
      const world: World = {
        vips: new Map(),
        policies: new Map(),
        pods: new Map(),
        namespaces: new Map(),
        replicaSets: new Map(),
      };
      const index = new SelectionIndex();
      for (const [o, remove] of ops) {
        apply(world, index, o, remove);
        check(world, index);
      }
    }),
    { numRuns: 1500 },
  );
});

Deno.test("selection index: a pod change reports that pod's address only", () => {
  const index = new SelectionIndex();
  index.setVip("v0", record(vipObject("v0", { ip: "192.0.2.50" }, { status: { routeId: 5 } })));
  index.setPolicy("a/all", record(policyObject("a", "all", { vip: "v0", podSelector: {} })));
  for (let i = 1; i <= 100; i++) {
    index.setPod(`a/p${i}`, pod("a", `p${i}`, `10.244.0.${i}`));
  }
  index.takeChanged();
  index.setPod("a/p7", pod("a", "p7", "10.244.1.7"));
  assert.deepEqual([...index.takeChanged()].sort(), ["10.244.0.7", "10.244.1.7"]);
  assert.equal(index.egressOf("10.244.0.7"), undefined);
  assert.deepEqual(index.egressOf("10.244.1.7"), { vip: "v0" });
  assert.equal(index.outcomes().vips.get("v0")!.pods, 100);
});

Deno.test("selection index: a pod that loses its address to a newer pod no longer counts (found by the property test)", () => {
  const at = (second: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, second)).toISOString();
  const index = new SelectionIndex();
  index.setVip("v0", record(vipObject("v0", { ip: "192.0.2.50" }, { status: { routeId: 5 } })));
  index.setPolicy(
    "a/p0",
    record(policyObject("a", "p0", { vip: "v0", podSelector: {} }, { created: at(0) })),
  );
  index.setPod("a/q0", pod("a", "q0", "10.244.1.2", { created: at(0) }));
  // Same address, same age: q1 owns it by name (as selectEgress decides).
  index.setPod("a/q1", pod("a", "q1", "10.244.1.2", { created: at(0) }));
  assert.equal(index.outcomes().policies.get("a/p0")!.pods, 1);
  assert.equal(index.outcomes().vips.get("v0")!.pods, 1);
});
