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
  NODE_ITSELF,
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
  // Three phases (mapped, after the failover, after delete), a row per pod and family, and
  // per node and family the node's own traffic.
  assert.deepEqual(result.phases.map((p) => p.checks.length), [18, 18, 18]);
  const expected = (i: number) =>
    Object.fromEntries(
      result.phases[i].checks.filter((c) => c.pod !== NODE_ITSELF).map((
        c,
      ) => [`${c.pod} ${c.family}`, c.expected]),
    );
  // The holders' own traffic leaves as the node in both families: no VIP wins the source
  // address selection.
  for (const phase of result.phases) {
    assert.deepEqual(
      phase.checks.filter((c) => c.pod === NODE_ITSELF).map((c) => `${c.node} ${c.expected}`),
      cluster.nodes.flatMap((n) => [`${n.name} ${n.ip}`, `${n.name} ${n.ip6}`]),
    );
  }
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

Deno.test(
  "e2e: dual stack: the baseline sees every IPv6 piece (ip6tables, ip -6 rule and routes, inet6 sets, nft, sysctls)",
  e2e,
  () =>
    withCluster(async (cluster) => {
      const node = cluster.node(1);
      const iface = cluster.spec.iface;
      const baseline = await cluster.ruleset(node);
      const rule6 = "POSTROUTING -s fd00:10:244:1::11 -j ACCEPT";
      const changes: [string, string, string][] = [
        ["ip6tables", `ip6tables -t nat -A ${rule6}`, `ip6tables -t nat -D ${rule6}`],
        [
          "ip -6 rule",
          "ip -6 rule add fwmark 0x5 table 105",
          "ip -6 rule del fwmark 0x5 table 105",
        ],
        [
          "IPv6 table",
          `ip -6 route add default via 2001:db8:1::1 dev ${iface} table 105`,
          "ip -6 route del default table 105",
        ],
        ["inet6 set", "ipset create ke-test6 hash:ip family inet6", "ipset destroy ke-test6"],
        ["nft inet table", "nft add table inet ke_test", "nft delete table inet ke_test"],
        [
          "IPv6 sysctl",
          `sysctl -qw net.ipv6.conf.${iface}.proxy_ndp=1`,
          `sysctl -qw net.ipv6.conf.${iface}.proxy_ndp=0`,
        ],
        [
          "IPv6 address",
          `ip addr add 2001:db8:1::59/128 dev ${iface} nodad`,
          `ip addr del 2001:db8:1::59/128 dev ${iface}`,
        ],
      ];
      // (The ip6tables change goes to the nat table the CNI made: with iptables-nft a rule in
      // another table creates that table, which outlives the rule, and rightly shows.)
      for (const [what, change, undo] of changes) {
        await node.ns.run(change.split(" "));
        const changed = await cluster.ruleset(node);
        await node.ns.run(undo.split(" "));
        assert.notEqual(changed, baseline, `the baseline does not see a changed ${what}`);
        assert.equal(await cluster.ruleset(node), baseline, `undoing the ${what} change`);
      }
    }, { family: "dual", nodes: 1, podsPerNode: 1 }),
);
