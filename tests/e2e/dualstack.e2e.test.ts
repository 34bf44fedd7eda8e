/**
 * End-to-end: the dual-stack story (issue 13's proof) on both datapath
 * backends: a dual-stack cluster, a dual-stack VIP and an IPv6-only VIP,
 * every pod's source seen outside over TCP, UDP and ICMP/ICMPv6 in each
 * family, the dual-stack VIP's failover with a gap in each family, and
 * `delete` back to the baseline of both families byte for byte. Needs root;
 * reported as skipped otherwise.
 */
import assert from "node:assert/strict";
import { stateDirOf } from "../../sim/agents.ts";
import type { Cluster } from "../../sim/cluster.ts";
import {
  DUAL_VIP4,
  DUAL_VIP6,
  type DualStoryResult,
  dualSummaryLine,
  renderDualChecks,
  runDualStory,
  V6_VIP,
} from "../../sim/dual_story.ts";
import { keepalivedVips } from "../../sim/vip.ts";
import { e2e, withCluster } from "./cluster.ts";

function explain(result: DualStoryResult): string {
  return [
    dualSummaryLine(result),
    ...result.problems,
    ...result.phases.map((p) => `${p.title}\n${renderDualChecks(p.checks)}`),
    ...result.baselineDiff,
  ].join("\n");
}

async function assertDualStory(cluster: Cluster) {
  const driver = keepalivedVips(cluster.nodes, cluster.spec.iface, (n) => stateDirOf(cluster, n));
  const result = await runDualStory(cluster, { driver });
  assert.ok(result.ok, explain(result));
  // Three phases (mapped, after the failover, after delete), a row per pod and family.
  assert.deepEqual(result.phases.map((p) => p.checks.length), [12, 12, 12]);
  const expected = (i: number) =>
    Object.fromEntries(result.phases[i].checks.map((c) => [`${c.pod} ${c.family}`, c.expected]));
  const [n1, n2, n3] = cluster.nodes;
  const mapped = {
    "pod1-1 IPv4": DUAL_VIP4,
    "pod1-1 IPv6": DUAL_VIP6,
    "pod1-2 IPv4": n1.ip,
    "pod1-2 IPv6": V6_VIP,
    "pod2-1 IPv4": DUAL_VIP4,
    "pod2-1 IPv6": DUAL_VIP6,
    "pod2-2 IPv4": n2.ip,
    "pod2-2 IPv6": V6_VIP,
    "pod3-1 IPv4": DUAL_VIP4,
    "pod3-1 IPv6": DUAL_VIP6,
    "pod3-2 IPv4": n3.ip,
    "pod3-2 IPv6": n3.ip6,
  };
  assert.deepEqual(expected(0), mapped);
  assert.deepEqual(expected(1), mapped);
  assert.deepEqual(
    expected(2),
    Object.fromEntries(cluster.pods.flatMap((p) => [
      [`${p.name} IPv4`, p.node.ip],
      [`${p.name} IPv6`, p.node.ip6],
    ])),
  );
  for (const check of result.phases.flatMap((p) => p.checks)) {
    assert.deepEqual(Object.keys(check.outside).sort(), ["lanhost", "outside"]);
  }
  const f = result.failover!;
  assert.ok(f.to !== undefined && f.to !== f.from, `the dual VIP moved: ${JSON.stringify(f)}`);
  assert.ok(f.gapMs.IPv4 !== undefined && f.gapMs.IPv6 !== undefined, JSON.stringify(f));
  assert.deepEqual(f.wrongSource, { IPv4: 0, IPv6: 0 });
  assert.deepEqual(result.baseline.map((b) => b.equal), [true, true, true]);
  console.log(dualSummaryLine(result));
}

for (const backend of ["iptables", "nftables"] as const) {
  Deno.test(
    `e2e: dual stack, ${backend}: each family leaves with its VIP's address, fails over, deletes to the baseline`,
    e2e,
    () => withCluster(assertDualStory, { family: "dual", backend }),
  );
}
