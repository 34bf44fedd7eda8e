import assert from "node:assert/strict";
import { podCheckOk, renderChecks } from "../sim/check.ts";
import { clusterLayout, ClusterSpec } from "../sim/layout.ts";
import { lineDiff, storyPlan } from "../sim/story.ts";

Deno.test("sim story: default plan maps five pods to two VIPs on two nodes and leaves one unmapped", () => {
  const plan = storyPlan(clusterLayout(ClusterSpec.parse({})));
  assert.deepEqual(Object.fromEntries(plan.mappings), {
    "pod1-1": "192.0.2.50",
    "pod2-1": "192.0.2.50",
    "pod3-1": "192.0.2.50",
    "pod1-2": "192.0.2.51",
    "pod2-2": "192.0.2.51",
  });
  // keepalived's ranking (core/keepalived.ts priorities): .50 node2 > node3 > node1, .51 node1 first.
  assert.deepEqual(plan.vips, { "192.0.2.50": 5, "192.0.2.51": 6 });
  assert.deepEqual(Object.fromEntries(plan.holders), { "192.0.2.50": 2, "192.0.2.51": 1 });
  assert.equal(plan.failoverVip, "192.0.2.50");
  assert.equal(plan.failoverTo, 3);
  assert.equal(plan.streamer, "pod1-1", "a pod of .50 on the node that neither loses nor gains it");
  assert.equal(plan.unmap, "pod1-2");
});

Deno.test("sim story: the two VIPs always start on different nodes when there are two", () => {
  for (let nodes = 2; nodes <= 8; nodes++) {
    const plan = storyPlan(clusterLayout(ClusterSpec.parse({ nodes })));
    const [a, b] = Object.keys(plan.vips);
    assert.notEqual(plan.holders.get(a), plan.holders.get(b), `${nodes} nodes`);
    assert.notEqual(plan.failoverTo, plan.holders.get(a));
    const streamer = plan.streamer!;
    assert.equal(plan.mappings.get(streamer), a);
    assert.notEqual(Number(streamer.slice(3).split("-")[0]), plan.holders.get(a));
  }
});

Deno.test("sim story: plans for one node and one pod per node stay consistent", () => {
  const single = storyPlan(clusterLayout(ClusterSpec.parse({ nodes: 1 })));
  assert.deepEqual(Object.fromEntries(single.holders), { "192.0.2.50": 1, "192.0.2.51": 1 });
  assert.equal(single.failoverTo, undefined);
  assert.equal(single.streamer, undefined);
  assert.deepEqual(Object.fromEntries(single.mappings), {
    "pod1-1": "192.0.2.50",
    "pod1-2": "192.0.2.51",
  });
  const onePod = storyPlan(clusterLayout(ClusterSpec.parse({ podsPerNode: 1 })));
  assert.deepEqual([...onePod.mappings.values()], ["192.0.2.50", "192.0.2.50", "192.0.2.50"]);
  assert.ok(onePod.mappings.has(onePod.unmap));
});

Deno.test("sim story: line diff names lines only before (-) and only after (+)", () => {
  assert.deepEqual(lineDiff("a\nb\nc", "a\nc\nd"), ["- b", "+ d"]);
  assert.deepEqual(lineDiff("same", "same"), []);
});

const base = {
  pod: "pod2-1",
  podIp: "10.244.2.11",
  node: "node2",
  expected: "192.0.2.50",
  outside: {
    outside: { tcp: "192.0.2.50", udp: "192.0.2.50", icmp: "192.0.2.50" },
    lanhost: { tcp: "192.0.2.50", udp: "192.0.2.50", icmp: "192.0.2.50" },
  },
  service: { tcp: "10.244.2.11", udp: "10.244.2.11" },
};

Deno.test("sim check: a row holds only if every host, protocol and the service agree", () => {
  assert.equal(podCheckOk(base), true);
  assert.equal(
    podCheckOk({
      ...base,
      outside: {
        ...base.outside,
        lanhost: { ...base.outside.lanhost, icmp: "192.0.2.50 (no reply)" },
      },
    }),
    false,
  );
  assert.equal(podCheckOk({ ...base, service: { tcp: "192.0.2.50", udp: "10.244.2.11" } }), false);
});

Deno.test("sim check: the table collapses agreeing hosts and shows each host when they differ", () => {
  const differing = {
    ...base,
    outside: { ...base.outside, lanhost: { ...base.outside.lanhost, udp: "192.0.2.12" } },
  };
  const text = renderChecks([
    { ...base, ok: true },
    { ...differing, ok: podCheckOk(differing) },
  ]);
  const [header, good, bad] = text.split("\n");
  assert.match(header, /^POD\s+NODE\s+SHOULD LEAVE AS\s+TCP\s+UDP\s+ICMP\s+SERVICE SAW$/);
  assert.match(
    good,
    /^pod2-1\s+node2\s+192\.0\.2\.50\s+192\.0\.2\.50\s+192\.0\.2\.50\s+192\.0\.2\.50\s+10\.244\.2\.11\s+✓$/,
  );
  assert.match(bad, /outside: 192\.0\.2\.50, lanhost: 192\.0\.2\.12/);
  assert.match(bad, /✗$/);
});
