/**
 * End-to-end: the real agent (`mod.ts run`) programs simulated nodes in
 * network namespaces, and outside hosts report the source address they see.
 * Needs root; reported as skipped otherwise.
 */
import assert from "node:assert/strict";
import { agentCommand, applyOnAllNodes, EXTERNAL, startAgent } from "../../sim/agents.ts";
import { type Cluster, LAN_HOST_IP, OUTSIDE_IP } from "../../sim/cluster.ts";
import { sourceSeenRetry } from "../../sim/probe.ts";
import { placeVip } from "../../sim/vip.ts";
import { e2e, withCluster } from "./cluster.ts";

const VIP_A = "192.0.2.50";
const VIP_B = "192.0.2.51";

/** Sources seen outside for each pod, TCP and UDP, to the routed host and the LAN host. */
async function sources(cluster: Cluster, podNames: string[]) {
  const seen: Record<string, string[]> = {};
  for (const name of podNames) {
    const pod = cluster.pods.find((p) => p.name === name)!;
    seen[name] = await Promise.all([
      sourceSeenRetry(pod.ns, OUTSIDE_IP, "tcp"),
      sourceSeenRetry(pod.ns, OUTSIDE_IP, "udp"),
      sourceSeenRetry(pod.ns, LAN_HOST_IP, "tcp"),
    ]);
  }
  return seen;
}

function expectAll(seen: Record<string, string[]>, expected: Record<string, string>) {
  for (const [pod, source] of Object.entries(expected)) {
    assert.deepEqual(
      seen[pod],
      [source, source, source],
      `${pod} should leave as ${source} (tcp/udp to outside, tcp to LAN host)`,
    );
  }
}

Deno.test({
  name:
    "e2e agent: mapped pods leave as their VIP from holder and non-holder nodes; others as their node",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const [p11, p12, p21, p22, p31] = ["pod1-1", "pod1-2", "pod2-1", "pod2-2", "pod3-1"].map((
        n,
      ) => cluster.pods.find((p) => p.name === n)!);
      await cluster.writeMappings(
        {
          [p11.ip]: VIP_A, // on the holder itself
          [p21.ip]: VIP_A, // on a non-holder
          [p31.ip]: VIP_A,
          "10.99.0.1": VIP_A, // bad: outside the pod range, must not stop the others
          [p22.ip]: "192.0.2.77", // bad: VIP without route id
        },
        { [VIP_A]: 5, "192.0.2.52": 400 },
      );
      await placeVip(cluster.nodes, VIP_A, cluster.node(1), cluster.spec.iface);
      await applyOnAllNodes(cluster, EXTERNAL);
      const seen = await sources(cluster, ["pod1-1", "pod2-1", "pod3-1", "pod1-2", "pod2-2"]);
      expectAll(seen, {
        "pod1-1": VIP_A,
        "pod2-1": VIP_A,
        "pod3-1": VIP_A,
        "pod1-2": p12.node.ip,
        "pod2-2": p22.node.ip,
      });
    }),
});

Deno.test({
  name: "e2e agent: pod-to-pod traffic keeps the pod source",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const client = cluster.pod(2, 1);
      const server = cluster.pod(1, 2);
      const witness = await cluster.startReporter("pod-witness", server.ns, server.ip);
      await cluster.writeMappings({ [client.ip]: VIP_A }, { [VIP_A]: 5 });
      await placeVip(cluster.nodes, VIP_A, cluster.node(1), cluster.spec.iface);
      await applyOnAllNodes(cluster, EXTERNAL);
      assert.equal(await sourceSeenRetry(client.ns, witness.ip, "tcp"), client.ip);
      assert.equal(await sourceSeenRetry(client.ns, witness.ip, "udp"), client.ip);
      assert.equal(await sourceSeenRetry(client.ns, OUTSIDE_IP, "tcp"), VIP_A);
    }),
});

Deno.test({
  name: "e2e agent: a VIP moved to another node is followed after one pass; two VIPs on two nodes",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const [a1, b1, a2] = [cluster.pod(1, 1), cluster.pod(2, 1), cluster.pod(3, 1)];
      await cluster.writeMappings({ [a1.ip]: VIP_A, [a2.ip]: VIP_A, [b1.ip]: VIP_B }, {
        [VIP_A]: 5,
        [VIP_B]: 6,
      });
      await placeVip(cluster.nodes, VIP_A, cluster.node(1), cluster.spec.iface);
      await placeVip(cluster.nodes, VIP_B, cluster.node(2), cluster.spec.iface);
      await applyOnAllNodes(cluster, EXTERNAL);
      expectAll(await sources(cluster, ["pod1-1", "pod3-1", "pod2-1"]), {
        "pod1-1": VIP_A,
        "pod3-1": VIP_A,
        "pod2-1": VIP_B,
      });

      // Move A from node1 to node3, run one pass everywhere: traffic follows.
      await placeVip(cluster.nodes, VIP_A, cluster.node(3), cluster.spec.iface);
      await applyOnAllNodes(cluster, EXTERNAL);
      expectAll(await sources(cluster, ["pod1-1", "pod3-1", "pod2-1"]), {
        "pod1-1": VIP_A,
        "pod3-1": VIP_A,
        "pod2-1": VIP_B,
      });
      const status = JSON.parse(
        (await agentCommand(cluster, cluster.node(3), "status", [...EXTERNAL, "--json"])).stdout,
      );
      assert.deepEqual(status.vips.map((v: { vip: string; role: string }) => [v.vip, v.role]), [[
        VIP_A,
        "holder",
      ], [VIP_B, "forwarder"]]);
      assert.ok(status.vips[0].packets > 0, "the holder's counters saw the VIP's traffic");

      // A second pass with nothing changed writes nothing.
      const again = await agentCommand(cluster, cluster.node(3), "plan", EXTERNAL);
      assert.match(again.stdout, /no changes: the node already matches the desired state/);
    }),
});

/** Things "another component" owns in the same tables as kube-egress. */
const FOREIGN = {
  mangle: [
    "-t",
    "mangle",
    "-A",
    "PREROUTING",
    "-m",
    "comment",
    "--comment",
    "other component",
    "-j",
    "MARK",
    "--set-xmark",
    "0x4000/0x4000",
  ],
  nat: [
    "-t",
    "nat",
    "-I",
    "POSTROUTING",
    "1",
    "-d",
    "203.0.113.0/24",
    "-m",
    "comment",
    "--comment",
    "other component",
    "-j",
    "RETURN",
  ],
  rule: ["ip", "rule", "add", "pref", "1000", "fwmark", "0x8000/0x8000", "lookup", "100"],
  route: ["ip", "route", "add", "default", "via", "192.0.2.1", "table", "100"],
  ipset: ["ipset", "create", "other-component", "hash:ip"],
};

Deno.test({
  name:
    "e2e agent: foreign rules in the same tables survive apply and delete; delete restores node addresses and the byte-exact baseline",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const pod = cluster.pod(2, 1);
      // Besides the CNI masquerade and kube-proxy's chains every node already has:
      // a mangle mark, a nat rule ahead of everything, an ip rule at our own
      // priority, a route in another table, and an ipset.
      for (const node of cluster.nodes) {
        await node.ns.run(["iptables", ...FOREIGN.mangle]);
        await node.ns.run(["iptables", ...FOREIGN.nat]);
        await node.ns.run(FOREIGN.rule);
        await node.ns.run(FOREIGN.route);
        await node.ns.run(FOREIGN.ipset);
      }
      await placeVip(cluster.nodes, VIP_A, cluster.node(1), cluster.spec.iface);
      const baseline = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
      await cluster.writeMappings({ [pod.ip]: VIP_A }, { [VIP_A]: 5 });
      await applyOnAllNodes(cluster, EXTERNAL);
      assert.equal(await sourceSeenRetry(pod.ns, OUTSIDE_IP, "tcp"), VIP_A);
      for (const [i, node] of cluster.nodes.entries()) {
        const now = await cluster.ruleset(node);
        // Every baseline line stays, but the reverse-path filters the agent loosens by design.
        const kept = baseline[i].split("\n").filter((line) =>
          !now.split("\n").includes(line) && !line.endsWith("/rp_filter:1")
        );
        assert.deepEqual(kept, [], `${node.name}: lines of the baseline gone after apply`);
        assert.match(now, /KUBE-EGRESS|table inet kube-egress/, `${node.name} has our objects`);
      }
      await applyOnAllNodes(cluster, [...EXTERNAL, "-d"]);
      assert.equal(await sourceSeenRetry(pod.ns, OUTSIDE_IP, "tcp"), pod.node.ip);
      const after = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
      for (let i = 0; i < after.length; i++) {
        assert.equal(after[i], baseline[i], `node${i + 1} ruleset differs from its baseline`);
        assert.match(after[i], /other component/);
        assert.match(after[i], /1000:\s+from all fwmark 0x8000\/0x8000 lookup 100/);
        assert.match(after[i], /default via 192\.0\.2\.1 dev \S+ table 100/);
        assert.match(after[i], /ipsets: other-component/);
      }
    }),
});

Deno.test({
  name:
    "e2e agent: a running agent reacts to the VIP arriving and leaving without waiting for its interval",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const pod = cluster.pod(2, 1);
      await cluster.writeMappings({ [pod.ip]: VIP_A }, { [VIP_A]: 5 });
      await placeVip(cluster.nodes, VIP_A, cluster.node(1), cluster.spec.iface);
      // A 300 s interval: anything that happens within seconds came from the address monitor.
      const agents = cluster.nodes.map((node) => startAgent(cluster, node, EXTERNAL, 300));
      try {
        await Promise.all(agents.map((a) => a.waitFor(/VIP role vip=192.0.2.50 from=none/)));
        assert.equal(await sourceSeenRetry(pod.ns, OUTSIDE_IP, "tcp"), VIP_A);
        const moved = performance.now();
        await placeVip(cluster.nodes, VIP_A, cluster.node(2), cluster.spec.iface);
        await agents[1].waitFor(/VIP role vip=192.0.2.50 from=forwarder to=holder/, 5000);
        await agents[0].waitFor(/VIP role vip=192.0.2.50 from=holder to=forwarder/, 5000);
        const reacted = performance.now() - moved;
        assert.ok(reacted < 5000, `reacted in ${reacted} ms`);
        assert.equal(await sourceSeenRetry(pod.ns, OUTSIDE_IP, "tcp"), VIP_A);
        assert.equal(
          await sourceSeenRetry(cluster.pod(1, 1).ns, OUTSIDE_IP, "tcp"),
          cluster.node(1).ip,
        );
      } finally {
        for (const agent of agents) await agent.stop();
      }
    }),
});

Deno.test({
  name: "e2e agent: SIGTERM leaves egress working; --cleanup-on-exit removes everything",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const pod = cluster.pod(2, 1);
      const node2 = cluster.node(2);
      await placeVip(cluster.nodes, VIP_A, cluster.node(1), cluster.spec.iface);
      const baseline = await cluster.ruleset(node2);
      await cluster.writeMappings({ [pod.ip]: VIP_A }, { [VIP_A]: 5 });
      await agentCommand(cluster, cluster.node(1), "run", EXTERNAL);

      const plain = startAgent(cluster, node2, EXTERNAL);
      await plain.waitFor(/pass applied/);
      assert.equal(await plain.stop("SIGTERM"), 0);
      assert.ok(plain.lines.some((l) => l.includes("rules stay in place")));
      assert.equal(
        await sourceSeenRetry(pod.ns, OUTSIDE_IP, "tcp"),
        VIP_A,
        "egress keeps working after the agent stopped",
      );

      const cleaning = startAgent(cluster, node2, [...EXTERNAL, "--cleanup-on-exit"]);
      await cleaning.waitFor(/agent running/);
      assert.equal(await cleaning.stop("SIGTERM"), 0);
      assert.equal(await cluster.ruleset(node2), baseline);
    }),
});

Deno.test({
  name: "e2e agent: a missing interface is a clear fatal error and nothing is changed",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const node = cluster.node(1);
      const baseline = await cluster.ruleset(node);
      const result = await agentCommand(cluster, node, "run", [...EXTERNAL, "-i", "bond0"]);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /interface bond0 does not exist on this node/);
      assert.equal(await cluster.ruleset(node), baseline);
    }),
});
