/**
 * End-to-end with the Kubernetes source: the test API server runs in its own
 * namespace on the simulated LAN (HTTPS, token), the real agents run
 * `mod.ts run --source kubernetes` in the node namespaces, and outside hosts
 * report the source address they see. Needs root; skipped otherwise.
 */
import assert from "node:assert/strict";
import {
  agentCommand,
  type AgentProcess,
  EXTERNAL,
  KEEPALIVED,
  stateDirOf,
} from "../../sim/agents.ts";
import { type Cluster, LAN_HOST_IP, OUTSIDE_IP, type SimNode } from "../../sim/cluster.ts";
import { createCluster, withCluster } from "./cluster.ts";
import { applyOfficeGateways } from "./office_gateways.ts";
import { eventually } from "./eventually.ts";
import {
  egressPolicy,
  egressVip,
  nodeObject,
  podObject,
  podToRulesLatency,
  type SimApiServer,
  startApiWithNodes,
  startKubeAgents,
  startKubeController,
} from "../../sim/kube_sim.ts";
import type { Netns } from "../../sim/netns.ts";
import { sourceSeen } from "../../sim/probe.ts";
import { parseNftJson } from "../../core/nftables.ts";
import { placeVip } from "../../sim/vip.ts";
import {
  dropVrrpMulticast,
  multicastAdvertsDropped,
  rankNodes,
  waitForPlacement,
} from "../../sim/placement.ts";
import {
  AGENT_PERMISSIONS,
  CONTROLLER_PERMISSIONS,
  resourceName,
} from "../../core/kube/resources.ts";
import { runKubeStory } from "../../sim/kube_story.ts";
import { isRoot } from "../helpers.ts";

const VIP = "192.0.2.50";
const e2e = { ignore: !isRoot, sanitizeOps: false, sanitizeResources: false };

/** Waits (bounded) until the pod's TCP traffic reaches the outside host with `expected` as source. */
async function leavesAs(from: Netns, expected: string, what: string) {
  let last = "";
  for (let i = 0; i < 40; i++) {
    last = await sourceSeen(from, OUTSIDE_IP, "tcp");
    if (last === expected) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.fail(`${what}: expected source ${expected}, last seen ${last}`);
}

type Obj = {
  status?: {
    holder?: string;
    routeId?: number;
    pods?: number;
    conditions?: { type: string; status: string }[];
  };
};
const ready = (o: Obj | null) => o?.status?.conditions?.find((c) => c.type === "Ready")?.status;

/**
 * A cluster, the test API server (a Node object per node) and the controller
 * (`mod.ts controller`, as its Deployment runs it); `agents` are stopped; all torn down.
 */
async function withKubeCluster(
  spec: { nodes: number; podsPerNode: number; backend?: "iptables" | "nftables" },
  fn: (
    cluster: Cluster,
    api: SimApiServer,
    agents: AgentProcess[],
    controllers: AgentProcess[],
  ) => Promise<void>,
) {
  const cluster = await createCluster(spec);
  let api: SimApiServer | undefined;
  const controllers: AgentProcess[] = [];
  const agents: AgentProcess[] = [];
  try {
    api = await startApiWithNodes(cluster);
    // Two replicas, as the Deployment runs them: one leads, the standby watches the Lease.
    for (const identity of ["controller-0", "controller-1"]) {
      controllers.push(startKubeController(cluster, api, identity));
    }
    await fn(cluster, api, agents, controllers);
  } finally {
    for (const agent of agents) await agent.stop();
    for (const controller of controllers) await controller.stop();
    await api?.stop();
    await cluster.destroy();
  }
}

Deno.test({
  name:
    "e2e kube: VIP + policy steer a pod within a second; a reused IP of an unselected pod leaves as its node",
  ...e2e,
  fn: () =>
    withKubeCluster({ nodes: 3, podsPerNode: 2 }, async (cluster, api, agents, controllers) => {
      await api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: "default" } });
      // The old README's flow: a VIP, a policy for pod1, a test pod.
      await api.apply(egressVip("office", { ip: VIP }));
      await api.apply(egressPolicy("default", "pod1", {
        vip: "office",
        targets: [{ kind: "Pod", name: "pod1" }],
        podSelector: { matchLabels: { egress: "office" } },
      }));
      await placeVip(cluster.nodes, VIP, cluster.node(1), cluster.spec.iface);
      agents.push(...startKubeAgents(cluster, api));
      await Promise.all(agents.map((a) => a.waitFor(/agent running/, 30_000)));

      // Start "pod1" on node2: its traffic leaves as the VIP, through the holder node1.
      const pod = cluster.pod(2, 1);
      await api.apply(podObject(pod, "pod1"));
      await leavesAs(pod.ns, VIP, "pod1 selected by the policy");
      const vip = await eventually(
        () => api.get<Obj>("EgressVIP", "office"),
        (v) => v?.status?.holder === "node1" && v.status.pods === 1,
        "VIP status",
      );
      assert.equal(vip!.status!.routeId, 1, "route id assigned by the elected agent");
      assert.equal(ready(vip), "True");
      const policy = await eventually(
        () => api.get<Obj>("EgressPolicy", "pod1", "default"),
        (p) => ready(p) === "True",
        "policy Ready",
      );
      assert.equal(policy!.status!.pods, 1);
      // One controller replica was elected and did the cluster-wide writes; no agent elects any more.
      const elected = controllers.filter((c) =>
        c.lines.some((l) => l.includes("elected: this replica does"))
      );
      assert.equal(elected.length, 1, "exactly one controller replica is elected");
      assert.ok(!agents.some((a) => a.lines.some((l) => l.includes("elected"))));

      // Delete pod1; its IP is reused by an unselected pod: it leaves as its node again.
      await api.delete("Pod", "pod1", "default");
      await api.apply(podObject(pod, "someone-else"));
      await leavesAs(pod.ns, pod.node.ip, "the unselected pod with pod1's old IP");

      // Pod IP appearing in the API → rules in force on every node (a figure, not an assertion).
      const figures: number[] = [];
      const candidates = [cluster.pod(3, 1), cluster.pod(1, 2), cluster.pod(3, 2)];
      for (const [i, p] of candidates.entries()) {
        const { totalMs, perNodeMs } = await podToRulesLatency(
          api,
          cluster.nodes,
          p,
          `measured-${i}`,
          { egress: "office" },
          cluster.spec.backend,
        );
        figures.push(totalMs);
        console.log(
          `pod IP in the API → rules in force on all ${cluster.nodes.length} nodes: ${totalMs} ms (per node: ${
            perNodeMs.join(", ")
          } ms)`,
        );
      }
      await leavesAs(candidates[0].ns, VIP, "a pod selected by label");

      // The API server goes away: every agent notices, and working rules stay in force.
      await api.command("available", { value: false });
      await Promise.all(
        agents.map((a) => a.waitFor(/keeping the last known objects and retrying/, 20_000)),
      );
      await leavesAs(candidates[0].ns, VIP, "with the API server gone, the rules stay");
      await api.command("available", { value: true });
      await Promise.all(agents.map((a) => a.waitFor(/watch resumed/, 30_000)));
      // The agents and the controllers used exactly what they are granted (deploy/rbac.yaml is
      // tested against the same tables): nothing more, and, once the leader has renewed its
      // lease (and the standby watched it), nothing less. No agent asked for Pods, Namespaces or
      // ReplicaSets.
      const granted = [
        ...new Set(
          [...AGENT_PERMISSIONS, ...CONTROLLER_PERMISSIONS].flatMap((p) =>
            p.verbs.map((v) => `${resourceName(p.resource)} ${v}`)
          ),
        ),
      ].sort();
      const used = await eventually(
        async () => [...await api.requests()].sort(),
        (u) =>
          u.includes("coordination.k8s.io/leases update") &&
          u.includes("coordination.k8s.io/leases watch"),
        "a lease renewal and the standby's watch",
      );
      assert.deepEqual(used, granted);
      // The agents' own: within their table (Events only come from the guard's alerts).
      const agentUsed = [...await api.requests("kube-egress-agent")].sort();
      const agentGranted = AGENT_PERMISSIONS.flatMap((p) =>
        p.verbs.map((v) => `${resourceName(p.resource)} ${v}`)
      );
      assert.deepEqual(agentUsed, agentGranted.filter((g) => g !== "core/events create").sort());
    }),
});

// On both backends in CI: the classes are ipsets of their own on iptables and concatenated
// interval maps on nftables, and only this test steers real traffic through them.
for (const backend of ["iptables", "nftables"] as const) {
  Deno.test({
    name:
      `e2e kube (${backend}): destinationCIDRs steer only those destinations; excludedCIDRs keep theirs on the node; delete is the baseline`,
    ...e2e,
    fn: () =>
      withKubeCluster({ nodes: 2, podsPerNode: 2, backend }, async (cluster, api, agents) => {
        await api.apply(egressVip("office", { ip: VIP, routeId: 7 }));
        const only = cluster.pod(2, 1);
        const except = cluster.pod(2, 2);
        const plain = cluster.pod(1, 1);
        await api.apply(podObject(only, "only-outside", { labels: { egress: "only" } }));
        await api.apply(podObject(except, "not-outside", { labels: { egress: "except" } }));
        await api.apply(podObject(plain, "plain", { labels: { egress: "all" } }));
        const policy = (name: string, spec: Record<string, unknown>) =>
          egressPolicy("default", name, {
            vip: "office",
            podSelector: { matchLabels: { egress: name } },
            ...spec,
          });
        await api.apply(policy("only", { destinationCIDRs: ["198.51.100.0/24"] }));
        await api.apply(policy("except", { excludedCIDRs: ["198.51.100.0/24"] }));
        await api.apply(policy("all", {}));
        await placeVip(cluster.nodes, VIP, cluster.node(1), cluster.spec.iface);
        const baseline = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
        agents.push(...startKubeAgents(cluster, api));
        await leavesAs(only.ns, VIP, "destinationCIDRs: the outside network leaves as the VIP");
        await leavesAs(
          except.ns,
          except.node.ip,
          "excludedCIDRs: the outside network leaves as the node",
        );
        await leavesAs(plain.ns, VIP, "no restriction");
        assert.equal(
          await sourceSeen(only.ns, LAN_HOST_IP, "tcp"),
          only.node.ip,
          "destinationCIDRs: the LAN host is not steered",
        );
        assert.equal(
          await sourceSeen(except.ns, LAN_HOST_IP, "tcp"),
          VIP,
          "excludedCIDRs: everything else is steered",
        );
        // `status` counts the scoped pods' traffic: per pod from their own sets (iptables); per VIP
        // from its chain's counter (nftables: its maps keep no per-element counters).
        const status = JSON.parse(
          (await agentCommand(cluster, only.node, "status", [...EXTERNAL, "--json"])).stdout,
        ) as {
          vips: { vip: string; packets: number }[];
          mappings: { podIp: string; packets: number; bytes: number }[];
        };
        const nftables = cluster.spec.backend === "nftables";
        for (const pod of [only, except]) {
          const row = status.mappings.find((m) => m.podIp === pod.ip);
          assert.ok(
            row && (nftables || (row.packets > 0 && row.bytes > 0)),
            `${pod.ip}: ${JSON.stringify(row)}`,
          );
        }
        if (nftables) {
          const row = status.vips.find((v) => v.vip === VIP);
          assert.ok(row && row.packets > 0, `${VIP}: ${JSON.stringify(row)}`);
        }
        // Lifting the restriction moves the pod to the plain pods set (map); its class's go.
        await api.apply(policy("only", {}));
        await eventually(
          () => sourceSeen(only.ns, LAN_HOST_IP, "tcp"),
          (s) => s === VIP,
          "the LAN host steered once unrestricted",
        );
        // iptables: a class is two sets of its own; nftables: its pods' elements in the scoped map.
        const scoped = async () =>
          nftables
            ? [
              ...new Set(
                [
                  ...parseNftJson(
                    await only.node.ns.run(["nft", "-j", "list", "table", "inet", "kube-egress"]),
                  ).scoped.keys(),
                ].map((k) => k.split(" . ")[0]),
              ),
            ].join(",")
            : String(
              (await only.node.ns.run(["ipset", "list", "-n"])).split("\n").filter((n) =>
                n.startsWith("kube-egress-s")
              ).length,
            );
        await eventually(
          scoped,
          (found) => found === (nftables ? except.ip : "2"),
          "only the excluded class's objects",
        );
        for (const agent of agents.splice(0)) await agent.stop();
        for (const node of cluster.nodes) {
          // With the node's state directory, where its agent remembered the reverse-path filters
          // it loosened.
          const r = await agentCommand(cluster, node, "delete", EXTERNAL);
          assert.equal(r.code, 0, r.stderr);
        }
        const after = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
        assert.deepEqual(after, baseline);
      }),
  });
}

Deno.test({
  name:
    "e2e kube: VRRP unicast peers (the eligible nodes the controller publishes) where the LAN drops multicast: one holder among the selected nodes; a cordon moves it",
  ...e2e,
  fn: () =>
    withKubeCluster({ nodes: 3, podsPerNode: 1 }, async (cluster, api, agents) => {
      await dropVrrpMulticast(cluster);
      // Only node1 and node2 may hold the VIP; node3's pod uses it.
      const { gateways, pod } = await applyOfficeGateways(cluster, api, VIP);
      const [eligibleFirst, eligibleSecond] = rankNodes(VIP, gateways);
      agents.push(
        ...startKubeAgents(cluster, api, [
          "--vip-mode",
          "keepalived",
          "--vrrp-unicast-peers",
          "auto",
        ]),
      );
      await waitForPlacement(cluster, agents, VIP, eligibleFirst);
      // Each instance advertises to the other selected node only; node3 runs none.
      const conf = (node: SimNode) =>
        Deno.readTextFileSync(`${stateDirOf(cluster, node)}/keepalived.conf`);
      const peers = (node: SimNode) =>
        /unicast_peer \{([^}]*)\}/.exec(conf(node))?.[1].trim().split(/\s+/);
      assert.deepEqual(peers(eligibleFirst), [eligibleSecond.ip]);
      assert.deepEqual(peers(eligibleSecond), [eligibleFirst.ip]);
      assert.doesNotMatch(conf(cluster.node(3)), /vrrp_instance/);
      await leavesAs(pod.ns, VIP, "node3's pod, through the holder");

      // Cordon the holder: it gives the VIP up, the other selected node takes it.
      await api.apply({
        ...nodeObject(eligibleFirst, { "egress.kube-egress.io/gateway": "true" }),
        spec: { unschedulable: true },
      });
      await waitForPlacement(cluster, agents, VIP, eligibleSecond);
      // The peers come from the VIP's status.nodes, which the controller rewrites: this node
      // alone now, a list kept as it is (an empty one would mean multicast).
      for (let i = 0; i < 40 && peers(eligibleSecond)?.[0] !== eligibleSecond.ip; i++) {
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.deepEqual(peers(eligibleSecond), [eligibleSecond.ip]);
      const status = JSON.parse(
        (await agentCommand(cluster, eligibleSecond, "status", [...KEEPALIVED, "--json"])).stdout,
      );
      assert.deepEqual(status.vips[0].peers, [eligibleSecond.ip], "status shows the peers");
      await leavesAs(pod.ns, VIP, "node3's pod, through the new holder");
      await eventually(
        () => api.get<Obj>("EgressVIP", "office"),
        (v) => v?.status?.holder === eligibleSecond.name,
        "the new holder in the VIP's status",
      );
      for (const node of cluster.nodes) {
        assert.equal(
          await multicastAdvertsDropped(node),
          0,
          `${node.name} sent no multicast advert`,
        );
      }
    }),
});

Deno.test({
  name:
    "e2e kube: the story with real kubectl (`sim --source kubernetes`): install, VIP held and Ready, pods leave as it, a namespace refused, deletion waits, uninstall, baseline",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const lines: string[] = [];
      const result = await runKubeStory(cluster, { say: (l) => lines.push(l) });
      assert.ok(result.ok, lines.join("\n"));
      const output = lines.join("\n");
      assert.match(
        output,
        /egressvip\.egress\.kube-egress\.io\/office\s+192\.0\.2\.50\s+1\s+node\d\s+3\s+True/,
      );
      assert.match(
        output,
        /NotAllowed=True NamespaceNotAdmitted: EgressVIP office does not admit namespace batch/,
      );
      assert.match(output, /DeletionBlocked/);
    }, { nodes: 3, podsPerNode: 2 }),
});
