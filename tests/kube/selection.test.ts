import assert from "node:assert/strict";
import fc from "fast-check";
import { podRecord } from "../../core/kube/objects.ts";
import { selectorMatches } from "../../core/kube/selector.ts";
import { type ClusterView, podsOwningIps, selectEgress } from "../../core/kube/selection.ts";
import { validateSnapshot } from "../../core/snapshot.ts";
import { testConfig } from "../helpers.ts";
import { pod, podObject, policyObject, record, tick, vipObject } from "./fixtures.ts";

const VIP = vipObject("office", { ip: "192.0.2.50" }, { status: { routeId: 5 } });

function view(parts: Partial<ClusterView>): ClusterView {
  return {
    vips: [record(VIP)],
    policies: [],
    pods: [],
    namespaces: new Map([["default", { name: "default", labels: {} }]]),
    replicaSets: new Map(),
    ...parts,
  };
}

function mapped(selection: ReturnType<typeof selectEgress>) {
  const { snapshot } = validateSnapshot(selection.raw, testConfig());
  return Object.fromEntries(snapshot.pods.map((p) => [p.podIp, p.vip]));
}

Deno.test("selector: matchLabels and every expression operator", () => {
  const labels = { app: "web", tier: "front" };
  assert.equal(selectorMatches({}, labels), true);
  assert.equal(selectorMatches({ matchLabels: { app: "web" } }, labels), true);
  assert.equal(selectorMatches({ matchLabels: { app: "db" } }, labels), false);
  const expr = (operator: "In" | "NotIn" | "Exists" | "DoesNotExist", values?: string[]) => ({
    matchExpressions: [{ key: "tier", operator, values }],
  });
  assert.equal(selectorMatches(expr("In", ["front", "x"]), labels), true);
  assert.equal(selectorMatches(expr("In", ["back"]), labels), false);
  assert.equal(selectorMatches(expr("NotIn", ["front"]), labels), false);
  assert.equal(selectorMatches(expr("NotIn", ["front"]), {}), true);
  assert.equal(selectorMatches(expr("Exists"), labels), true);
  assert.equal(selectorMatches(expr("DoesNotExist"), labels), false);
});

Deno.test("objects: a Pod object is reduced to the fields selection needs", () => {
  const object = podObject("ns", "p", "10.244.1.5", {
    labels: { app: "x" },
    owner: { kind: "ReplicaSet", name: "web-abc" },
  });
  const rec = podRecord(object)!;
  assert.deepEqual(
    { ...rec, created: "" },
    {
      namespace: "ns",
      name: "p",
      labels: { app: "x" },
      owner: { kind: "ReplicaSet", name: "web-abc" },
      ip: "10.244.1.5",
      node: "node1",
      hostNetwork: false,
      finished: false,
      created: "",
    },
  );
  assert.equal(podRecord({ metadata: {} }), undefined, "an unreadable pod is absent");
  assert.equal(podRecord(podObject("ns", "q", "fd00::1"))!.ip, undefined, "IPv6 only: no IPv4");
});

Deno.test("selection: label selector and named targets of every kind, via owner chains", () => {
  const p = policyObject("default", "pol", {
    vip: "office",
    podSelector: { matchLabels: { app: "web" } },
    targets: [
      { kind: "Pod", name: "named" },
      { kind: "Deployment", name: "api" },
      { kind: "StatefulSet", name: "db" },
      { kind: "DaemonSet", name: "agent" },
      { kind: "ReplicaSet", name: "bare" },
      { kind: "Job", name: "batch" },
    ],
  });
  const pods = [
    pod("default", "web-1", "10.244.1.1", { labels: { app: "web" } }),
    pod("default", "named", "10.244.1.2"),
    pod("default", "api-1", "10.244.1.3", { owner: { kind: "ReplicaSet", name: "api-7f9" } }),
    pod("default", "db-0", "10.244.1.4", { owner: { kind: "StatefulSet", name: "db" } }),
    pod("default", "agent-x", "10.244.1.5", { owner: { kind: "DaemonSet", name: "agent" } }),
    pod("default", "bare-1", "10.244.1.6", { owner: { kind: "ReplicaSet", name: "bare" } }),
    pod("default", "batch-1", "10.244.1.7", { owner: { kind: "Job", name: "batch" } }),
    // Not selected: other labels, other owners, another namespace, no IP, host network, finished.
    pod("default", "other", "10.244.2.1", { labels: { app: "db" } }),
    pod("default", "other-rs", "10.244.2.2", { owner: { kind: "ReplicaSet", name: "x-1" } }),
    pod("team", "named", "10.244.2.3"),
    pod("default", "web-pending", undefined, { labels: { app: "web" } }),
    pod("default", "web-host", "192.0.2.11", { labels: { app: "web" }, hostNetwork: true }),
    pod("default", "web-done", "10.244.2.4", { labels: { app: "web" }, finished: true }),
  ];
  const replicaSets = new Map([
    ["default/api-7f9", {
      namespace: "default",
      name: "api-7f9",
      owner: { kind: "Deployment", name: "api" },
    }],
    ["default/x-1", {
      namespace: "default",
      name: "x-1",
      owner: { kind: "Deployment", name: "x" },
    }],
  ]);
  const selection = selectEgress(view({ policies: [record(p)], pods, replicaSets }));
  assert.deepEqual(
    Object.keys(mapped(selection)).sort(),
    [
      "10.244.1.1",
      "10.244.1.2",
      "10.244.1.3",
      "10.244.1.4",
      "10.244.1.5",
      "10.244.1.6",
      "10.244.1.7",
    ],
  );
  const outcome = selection.policies.get("default/pol")!;
  assert.equal(outcome.pods, 7);
  assert.deepEqual(outcome.state, { ok: true });
  assert.equal(selection.vips.get("office")!.pods, 7);
  assert.match(selection.raw.pods[0].origin, /^EgressPolicy default\/pol \(pod /);
});

Deno.test("selection: VIP missing, not admitting the namespace, without route id, invalid spec", () => {
  const tenantVip = vipObject("tenant-a", {
    ip: "192.0.2.51",
    namespaceSelector: { matchLabels: { tenant: "a" } },
  }, { status: { routeId: 6 } });
  const fresh = vipObject("fresh", { ip: "192.0.2.52" });
  const pods = [pod("default", "p", "10.244.1.1", { labels: { app: "x" } })];
  const sel = { podSelector: { matchLabels: { app: "x" } } };
  const selection = selectEgress(view({
    vips: [record(VIP), record(tenantVip), record(fresh)],
    policies: [
      record(policyObject("default", "missing", { vip: "nope", ...sel })),
      record(policyObject("default", "borrow", { vip: "tenant-a", ...sel })),
      record(policyObject("default", "early", { vip: "fresh", ...sel })),
      record(policyObject("default", "broken", { vip: "office" })),
      record(
        policyObject("default", "bad-cidr", {
          vip: "office",
          ...sel,
          excludedCIDRs: ["10.0.0.1/8"],
        }),
      ),
    ],
    pods,
  }));
  const state = (name: string) => selection.policies.get(`default/${name}`)!.state;
  assert.deepEqual(state("missing"), {
    ok: false,
    reason: "VIPNotFound",
    message: "EgressVIP nope does not exist",
  });
  assert.equal((state("borrow") as { reason: string }).reason, "NotAllowed");
  assert.equal((state("early") as { reason: string }).reason, "VIPNotReady");
  assert.match(
    (state("broken") as { message: string }).message,
    /needs a podSelector or at least one target/,
  );
  assert.match((state("bad-cidr") as { message: string }).message, /host bits/);
  assert.deepEqual(mapped(selection), {});
  assert.equal(selection.raw.problems.length, 2, "invalid specs are reported as input problems");

  // The tenant's own namespace is admitted.
  const admitted = selectEgress(view({
    vips: [record(tenantVip)],
    policies: [record(policyObject("team-a", "mine", { vip: "tenant-a", podSelector: {} }))],
    pods: [pod("team-a", "p", "10.244.1.9")],
    namespaces: new Map([["team-a", { name: "team-a", labels: { tenant: "a" } }]]),
  }));
  assert.deepEqual(mapped(admitted), { "10.244.1.9": "192.0.2.51" });
});

Deno.test("selection: the oldest policy wins a pod; a younger one with another VIP reports the conflict", () => {
  const other = vipObject("other", { ip: "192.0.2.51" }, { status: { routeId: 6 } });
  const older = policyObject("default", "zz-older", { vip: "office", podSelector: {} });
  const same = policyObject("default", "aa-same", { vip: "office", podSelector: {} });
  const younger = policyObject("default", "aa-younger", {
    vip: "other",
    targets: [{ kind: "Pod", name: "p1" }],
  });
  const pods = [pod("default", "p1", "10.244.1.1"), pod("default", "p2", "10.244.1.2")];
  // Input order must not matter.
  for (const policies of [[younger, same, older], [older, younger, same]]) {
    const selection = selectEgress(view({
      vips: [record(VIP), record(other)],
      policies: policies.map(record),
      pods,
    }));
    assert.deepEqual(mapped(selection), { "10.244.1.1": "192.0.2.50", "10.244.1.2": "192.0.2.50" });
    const young = selection.policies.get("default/aa-younger")!;
    assert.deepEqual(young.conflicts, [{ pod: "default/p1", olderPolicy: "default/zz-older" }]);
    assert.equal(young.pods, 0);
    assert.deepEqual(selection.policies.get("default/aa-same")!.conflicts, []);
    assert.equal(selection.policies.get("default/aa-same")!.pods, 2);
  }
});

Deno.test("selection: a reused IP belongs to the newest pod; finished pods give theirs up", () => {
  const p = policyObject("default", "pol", {
    vip: "office",
    podSelector: { matchLabels: { egress: "yes" } },
  });
  const old = pod("default", "old", "10.244.1.1", { labels: { egress: "yes" } });
  const reused = pod("default", "new", "10.244.1.1", { labels: {} });
  assert.deepEqual(podsOwningIps([old, reused]).map((x) => x.name), ["new"]);
  assert.deepEqual(podsOwningIps([reused, old]).map((x) => x.name), ["new"]);
  assert.deepEqual(mapped(selectEgress(view({ policies: [record(p)], pods: [old, reused] }))), {});
  const done = pod("default", "done", "10.244.1.2", { labels: { egress: "yes" }, finished: true });
  const next = pod("default", "next", "10.244.1.2", {
    labels: { egress: "yes" },
    created: "2020-01-01T00:00:00Z",
  });
  assert.deepEqual(podsOwningIps([done, next]).map((x) => x.name), ["next"]);
});

Deno.test("selection: destination and excluded ranges reach the snapshot, normalized", () => {
  const p = policyObject("default", "pol", {
    vip: "office",
    podSelector: {},
    destinationCIDRs: ["203.0.113.0/24", "198.51.100.0/24", "203.0.113.0/24"],
    excludedCIDRs: [],
  });
  const selection = selectEgress(
    view({ policies: [record(p)], pods: [pod("default", "p", "10.244.1.1")] }),
  );
  const { snapshot } = validateSnapshot(selection.raw, testConfig());
  assert.deepEqual(snapshot.pods, [{
    podIp: "10.244.1.1",
    vip: "192.0.2.50",
    destinations: ["198.51.100.0/24", "203.0.113.0/24"],
  }]);
});

Deno.test("property: selection is deterministic, each pod follows the oldest policy in force", () => {
  const names = ["a", "b", "c", "d"];
  const arb = fc.record({
    pods: fc.array(
      fc.record({
        name: fc.constantFrom(...names),
        ip: fc.integer({ min: 1, max: 6 }),
        app: fc.constantFrom("x", "y"),
      }),
      { maxLength: 8 },
    ),
    policies: fc.array(
      fc.record({
        vip: fc.constantFrom("office", "other", "missing"),
        app: fc.constantFrom("x", "y", "*"),
      }),
      { maxLength: 4 },
    ),
    seed: fc.integer(),
  });
  const other = vipObject("other", { ip: "192.0.2.51" }, { status: { routeId: 6 } });
  fc.assert(
    fc.property(arb, ({ pods, policies, seed }) => {
      const podRecords = pods.map((p, i) =>
        pod("default", `${p.name}${i}`, `10.244.1.${p.ip}`, { labels: { app: p.app } })
      );
      const policyRecords = policies.map((p, i) =>
        record(policyObject("default", `p${i}`, {
          vip: p.vip,
          podSelector: p.app === "*" ? {} : { matchLabels: { app: p.app } },
        }))
      );
      const shuffled = [...policyRecords].sort((a, b) =>
        ((a.metadata.name.charCodeAt(1) * seed) % 7) - ((b.metadata.name.charCodeAt(1) * seed) % 7)
      );
      const one = selectEgress(
        view({ vips: [record(VIP), record(other)], policies: policyRecords, pods: podRecords }),
      );
      const two = selectEgress(
        view({
          vips: [record(other), record(VIP)],
          policies: shuffled,
          pods: [...podRecords].reverse(),
        }),
      );
      assert.deepEqual(mapped(one), mapped(two));
      // Every mapped pod follows the oldest in-force policy selecting it.
      const owners = podsOwningIps(podRecords);
      const expected: Record<string, string> = {};
      for (const owner of owners) {
        const first = policies.findIndex((p) =>
          p.vip !== "missing" && (p.app === "*" || p.app === owner.labels.app)
        );
        if (first >= 0) {
          expected[owner.ip!] = policies[first].vip === "office" ? "192.0.2.50" : "192.0.2.51";
        }
      }
      assert.deepEqual(mapped(one), expected);
      tick();
    }),
    { numRuns: 200 },
  );
});

Deno.test("selection: a failClosed policy guards its pods, also while its VIP is missing; the guard follows the pod, not the IP", () => {
  const web = pod("default", "web", "10.244.1.5", { labels: { app: "web" } });
  const policy = (vip: string) =>
    record(
      policyObject("default", "p", {
        vip,
        podSelector: { matchLabels: { app: "web" } },
        failClosed: true,
      }),
    );
  const guardsOf = (v: ClusterView) =>
    validateSnapshot(selectEgress(v).raw, testConfig()).snapshot.failClosed ?? [];
  const ready = view({ policies: [policy("office")], pods: [web] });
  assert.deepEqual(mapped(selectEgress(ready)), { "10.244.1.5": "192.0.2.50" });
  assert.deepEqual(guardsOf(ready), ["10.244.1.5"]);
  // The EgressVIP gone (or never there): no mapping, the guard stays.
  const gone = view({ vips: [], policies: [policy("office")], pods: [web] });
  assert.deepEqual(mapped(selectEgress(gone)), {});
  assert.deepEqual(guardsOf(gone), ["10.244.1.5"]);
  // The pod finished and an unmapped pod got its IP: neither mapped nor guarded.
  const done = { ...web, finished: true };
  const other = pod("default", "other", "10.244.1.5", { labels: { app: "db" } });
  const reused = view({ policies: [policy("office")], pods: [done, other] });
  assert.deepEqual(mapped(selectEgress(reused)), {});
  assert.deepEqual(guardsOf(reused), []);
  // Default off: no guard at all.
  const plain = record(policyObject("default", "q", { vip: "office", podSelector: {} }));
  assert.equal(selectEgress(view({ policies: [plain], pods: [web] })).raw.failClosed, undefined);
});
