/**
 * End-to-end, the datapath alone: the one-shot agent (`mod.ts run`, files
 * source, VIPs placed by hand as the agent would place them) on a dual-stack
 * cluster, each backend. An IPv6 pod's traffic leaves with its IPv6 VIP from
 * the holder and from another node, beside the IPv4 VIP of the same route id
 * (one mark, one table number, in each family); an unmapped pod leaves as its
 * node (the CNI's IPv6 masquerade); `delete` gives back ip6tables-save,
 * `ip -6 rule`, every IPv6 routing table, the ipsets and the nft ruleset byte
 * for byte. (The whole dual-stack story with keepalived and a failover is
 * tests/e2e/dualstack.e2e.test.ts.) Needs root; reported as skipped otherwise.
 */
import assert from "node:assert/strict";
import { agentCommand, applyOnAllNodes, EXTERNAL } from "../../sim/agents.ts";
import { OUTSIDE_IP } from "../../sim/cluster.ts";
import { OUTSIDE_IP6 } from "../../sim/layout.ts";
import { sourceSeenRetry } from "../../sim/probe.ts";
import { e2e, withCluster } from "./cluster.ts";

const VIP4 = "192.0.2.50";
const VIP6 = "2001:db8:1::50";

for (const backend of ["iptables", "nftables"] as const) {
  Deno.test({
    name:
      `e2e ipv6, ${backend}: IPv6 pods leave as their IPv6 VIP beside an IPv4 VIP of the same route id; delete gives the baseline`,
    ...e2e,
    fn: () =>
      withCluster(async (cluster) => {
        const [n1, n2] = cluster.nodes;
        const iface = cluster.spec.iface;
        const [p11, p12, p21] = [cluster.pod(1, 1), cluster.pod(1, 2), cluster.pod(2, 1)];
        // Placed as the agent places IPv6 VIPs: no DAD, and deprecated, so that the node's own
        // traffic keeps the node's address (RFC 6724 would pick the /128 otherwise).
        await n1.ns.run([
          "ip",
          "-6",
          "addr",
          "add",
          `${VIP6}/128`,
          "dev",
          iface,
          "nodad",
          "preferred_lft",
          "0",
        ]);
        await n1.ns.run(["ip", "addr", "add", `${VIP4}/32`, "dev", iface]);
        const baselines = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
        await cluster.writeMappings(
          {
            [p11.ip6!]: VIP6, // on the holder
            [p21.ip6!]: VIP6, // on another node: routed to the holder by ip -6 rule/route
            [p21.ip]: VIP4,
            [p12.ip]: VIP6, // across families: rejected, must not stop the others
          },
          { [VIP6]: 5, [VIP4]: 5 },
        );
        await applyOnAllNodes(cluster, EXTERNAL);
        const seen = async (pod: typeof p11, target: string) =>
          await Promise.all([
            sourceSeenRetry(pod.ns, target, "tcp"),
            sourceSeenRetry(pod.ns, target, "udp"),
          ]);
        assert.deepEqual(await seen(p11, OUTSIDE_IP6), [VIP6, VIP6], "pod1-1 on the holder");
        assert.deepEqual(await seen(p21, OUTSIDE_IP6), [VIP6, VIP6], "pod2-1 on another node");
        assert.deepEqual(await seen(p21, OUTSIDE_IP), [VIP4, VIP4], "pod2-1's IPv4 half");
        assert.deepEqual(await seen(p12, OUTSIDE_IP6), [n1.ip6, n1.ip6], "unmapped: its node");
        assert.deepEqual(await seen(p11, OUTSIDE_IP), [n1.ip, n1.ip], "pod1-1's IPv4: unmapped");

        // A second run finds nothing to do.
        const again = await agentCommand(cluster, n2, "plan", EXTERNAL);
        assert.equal(again.code, 0, again.stderr);
        assert.match(again.stdout, /no changes/);

        for (const node of cluster.nodes) {
          const r = await agentCommand(cluster, node, "delete", EXTERNAL);
          assert.equal(r.code, 0, r.stderr);
        }
        const after = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
        after.forEach((text, i) => assert.equal(text, baselines[i], `node${i + 1}'s baseline`));
      }, { family: "dual", cni: "host-gw", nodes: 2, backend }),
  });
}
