import assert from "node:assert/strict";
import { clusterLayout, ClusterSpec } from "../sim/layout.ts";
import {
  dualMappingsByIp,
  dualStoryPlan,
  dualSummaryLine,
  type FamilyCheck,
  renderDualChecks,
} from "../sim/dual_story.ts";
import { isAddress } from "../sim/probe.ts";
import type { SimNode, SimPod } from "../sim/cluster.ts";

const layout = clusterLayout(ClusterSpec.parse({ family: "dual" }));

Deno.test("sim dual story: a dual-stack VIP (one route id) and an IPv6-only VIP", () => {
  const plan = dualStoryPlan(layout);
  assert.deepEqual(plan.vips, { "192.0.2.50": 5, "2001:db8:1::50": 5, "2001:db8:1::51": 6 });
  assert.deepEqual(Object.fromEntries(plan.mappings), {
    "pod1-1": { IPv4: "192.0.2.50", IPv6: "2001:db8:1::50" },
    "pod2-1": { IPv4: "192.0.2.50", IPv6: "2001:db8:1::50" },
    "pod3-1": { IPv4: "192.0.2.50", IPv6: "2001:db8:1::50" },
    "pod1-2": { IPv6: "2001:db8:1::51" },
    "pod2-2": { IPv6: "2001:db8:1::51" },
  });
});

Deno.test("sim dual story: the mapping files key each family's pod address", () => {
  const node = { name: "node1", index: 1, ip: "192.0.2.11", ip6: "2001:db8:1::11" } as SimNode;
  const pods = layout.pods.slice(0, 2).map((p) => ({ ...p, node }) as unknown as SimPod);
  assert.deepEqual(dualMappingsByIp(pods, dualStoryPlan(layout).mappings), {
    "10.244.1.11": "192.0.2.50",
    "fd00:10:244:1::11": "2001:db8:1::50",
    "fd00:10:244:1::12": "2001:db8:1::51",
  });
});

Deno.test("sim dual story: IPv6 answers are addresses, timeouts and errors are not", () => {
  assert.ok(isAddress("2001:db8:1::50"));
  assert.ok(isAddress("192.0.2.50"));
  for (const bad of ["timeout", "error: Connection refused", "2001:db8:1::50 (no reply)", ""]) {
    assert.equal(isAddress(bad), false, bad);
  }
});

Deno.test("sim dual story: a row per pod and family; the summary counts each family", () => {
  const row = (family: "IPv4" | "IPv6", expected: string, seen: string): FamilyCheck => ({
    pod: "pod1-1",
    node: "node1",
    family,
    expected,
    outside: { outside: { tcp: seen, udp: seen, icmp: seen } },
    ...(family === "IPv4" ? { service: "10.244.1.11" } : {}),
    ok: seen === expected,
  });
  const checks = [
    row("IPv4", "192.0.2.50", "192.0.2.50"),
    row("IPv6", "2001:db8:1::50", "timeout"),
  ];
  const text = renderDualChecks(checks);
  assert.match(text, /pod1-1\s+node1\s+IPv4\s+192\.0\.2\.50\s+192\.0\.2\.50.*✓/);
  assert.match(
    text,
    /pod1-1\s+node1\s+IPv6\s+2001:db8:1::50\s+timeout\s+timeout\s+timeout\s+-\s+✗/,
  );
  const line = dualSummaryLine({
    ok: false,
    phases: [{ title: "t", checks }],
    failover: {
      from: "node1",
      to: "node2",
      streamer: "pod2-1",
      gapMs: { IPv4: 310, IPv6: undefined },
      wrongSource: { IPv4: 0, IPv6: 0 },
      ok: false,
    },
    problems: ["IPv6: never placed"],
    baseline: [{ node: "node1", equal: true }],
    baselineDiff: [],
  });
  assert.equal(
    line,
    "some checks ✗: pod checks held: IPv4 1/1, IPv6 0/1; failover of 192.0.2.50 + " +
      "2001:db8:1::50 node1 → node2: IPv4 gap 310 ms, IPv6 gap ∞, wrong source IPv4 0 / IPv6 0; " +
      "1 problem(s); rulesets equal to the baseline on 1/1 nodes",
  );
});
