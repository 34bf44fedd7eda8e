/**
 * End-to-end VIP placement: real agents in keepalived mode (the default) on
 * simulated nodes place the VIPs themselves, spread over the nodes by
 * priority, and move them on failures; outside hosts report the source they
 * see. Needs root; reported as skipped otherwise.
 */
import assert from "node:assert/strict";
import { agentCommand, type AgentProcess, startAgent, stateDirOf } from "../../sim/agents.ts";
import { Cluster, OUTSIDE_IP, type SimNode } from "../../sim/cluster.ts";
import { sourceSeenRetry } from "../../sim/probe.ts";
import { vrrpPriority } from "../../core/keepalived.ts";
import { isRoot } from "../helpers.ts";

const VIP_A = "192.0.2.50";
const VIP_B = "192.0.2.51";
const e2e = { ignore: !isRoot, sanitizeOps: false, sanitizeResources: false };

/** Builds a cluster with agents in keepalived mode on every node; always tears everything down. */
async function withAgents(
  fn: (cluster: Cluster, agents: AgentProcess[]) => Promise<void>,
  extra: readonly string[] = [],
) {
  const cluster = await Cluster.create();
  const agents: AgentProcess[] = [];
  try {
    await cluster.writeMappings(
      {
        [cluster.pod(1, 1).ip]: VIP_A,
        [cluster.pod(2, 1).ip]: VIP_A,
        [cluster.pod(3, 1).ip]: VIP_A,
        [cluster.pod(1, 2).ip]: VIP_B,
        [cluster.pod(2, 2).ip]: VIP_B,
        [cluster.pod(3, 2).ip]: VIP_B,
      },
      { [VIP_A]: 5, [VIP_B]: 6 },
    );
    for (const node of cluster.nodes) agents.push(startAgent(cluster, node, extra, 300));
    await fn(cluster, agents);
  } finally {
    for (const agent of agents) await agent.stop().catch(() => {});
    await cluster.destroy();
  }
}

/** Nodes ordered by their priority for a VIP: where VRRP should put it, then who follows. */
function ranking(cluster: Cluster, vip: string): SimNode[] {
  return [...cluster.nodes].sort((a, b) => vrrpPriority(vip, b.name) - vrrpPriority(vip, a.name));
}

/** The nodes that have the VIP on their interface right now. */
async function holders(cluster: Cluster, vip: string): Promise<string[]> {
  const found: string[] = [];
  for (const node of cluster.nodes) {
    const out = await node.ns.run(["ip", "-4", "-o", "address", "show", "dev", cluster.spec.iface]);
    if (out.split(/\s+/).includes(`${vip}/32`)) found.push(node.name);
  }
  return found;
}

/** Polls until `check` returns true (bounded); fails with the last value seen. */
async function eventually<T>(
  what: string,
  probe: () => Promise<T>,
  check: (value: T) => boolean,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  let last: T = await probe();
  while (!check(last)) {
    if (performance.now() > deadline) {
      throw new Error(`${what}: not reached in ${timeoutMs} ms; last ${JSON.stringify(last)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
    last = await probe();
  }
  return last;
}

/** Waits until exactly `node` holds the VIP and every agent has the matching role. */
async function settled(cluster: Cluster, vip: string, node: SimNode, timeoutMs = 20_000) {
  await eventually(
    `${vip} held by ${node.name} only`,
    () => holders(cluster, vip),
    (h) => h.length === 1 && h[0] === node.name,
    timeoutMs,
  );
  for (const other of cluster.nodes) {
    const want = other === node ? "holder" : "forwarder";
    await eventually(
      `${other.name} ${want} of ${vip}`,
      async () => {
        const status = JSON.parse(
          (await agentCommand(cluster, other, "status", ["--json"])).stdout,
        );
        return status.vips.find((v: { vip: string }) => v.vip === vip)?.role;
      },
      (role) => role === want,
      timeoutMs,
    );
  }
}

Deno.test({
  name: "e2e vip: keepalived spreads the VIPs over the nodes by priority; status shows it",
  ...e2e,
  fn: () =>
    withAgents(async (cluster) => {
      const [firstA] = ranking(cluster, VIP_A);
      const [firstB] = ranking(cluster, VIP_B);
      assert.notEqual(firstA, firstB, "the two VIPs rank different nodes first");
      await settled(cluster, VIP_A, firstA);
      await settled(cluster, VIP_B, firstB);
      const status = JSON.parse(
        (await agentCommand(cluster, firstA, "status", ["--json"])).stdout,
      );
      const a = status.vips.find((v: { vip: string }) => v.vip === VIP_A);
      assert.equal(a.priority, vrrpPriority(VIP_A, firstA.name));
      assert.equal(a.vrrp, "MASTER");
      assert.equal(status.placement.running, true);
      const text = (await agentCommand(cluster, firstA, "status")).stdout;
      assert.match(text, /placement: keepalived as node node\d, running/);
      for (const pod of cluster.pods) {
        const vip = pod.name.endsWith("-1") ? VIP_A : VIP_B;
        assert.equal(await sourceSeenRetry(pod.ns, OUTSIDE_IP, "tcp"), vip, pod.name);
      }
      // keepalived's files live in the node's own state directory.
      const files = [...Deno.readDirSync(stateDirOf(cluster, firstA))].map((e) => e.name).sort();
      assert.deepEqual(files, ["keepalived.conf", "keepalived.pid", "vips.json", "vrrp.pid"]);
    }),
});

/** SIGKILLs a node's keepalived (parent and VRRP child), as a crash would: no cleanup of its own. */
async function killKeepalived(cluster: Cluster, node: SimNode) {
  for (const file of ["vrrp.pid", "keepalived.pid"]) {
    const pid = Number((await Deno.readTextFile(`${stateDirOf(cluster, node)}/${file}`)).trim());
    Deno.kill(pid, "SIGKILL");
  }
}

/** Every pod's TCP and UDP traffic leaves as its VIP. */
async function allLeaveAsVip(cluster: Cluster) {
  for (const pod of cluster.pods) {
    const vip = pod.name.endsWith("-1") ? VIP_A : VIP_B;
    for (const proto of ["tcp", "udp"] as const) {
      assert.equal(await sourceSeenRetry(pod.ns, OUTSIDE_IP, proto), vip, `${pod.name} ${proto}`);
    }
  }
}

Deno.test({
  name:
    "e2e vip: takeover when the holder's keepalived dies; the old holder releases the VIP and forwards",
  ...e2e,
  fn: () =>
    withAgents(async (cluster, agents) => {
      const [first, second] = ranking(cluster, VIP_A);
      const [firstB] = ranking(cluster, VIP_B);
      await settled(cluster, VIP_A, first);
      await settled(cluster, VIP_B, firstB);
      await killKeepalived(cluster, first);
      await settled(cluster, VIP_A, second, 10_000);
      const agent = agents[first.index - 1];
      await agent.waitFor(/keepalived exited; its VIPs were released, restarting/);
      await agent.waitFor(/VIP role vip=192.0.2.50 from=holder to=forwarder/);
      await allLeaveAsVip(cluster);
      // The restarted keepalived takes the VIP back after the preemption delay.
      await settled(cluster, VIP_A, first, 20_000);
      await allLeaveAsVip(cluster);
    }),
});

Deno.test({
  name:
    "e2e vip: loss when the holder's link goes down; the VIP comes back with the link, other VIPs stay",
  ...e2e,
  fn: () =>
    withAgents(async (cluster) => {
      const [first, second] = ranking(cluster, VIP_A);
      const [firstB] = ranking(cluster, VIP_B);
      await settled(cluster, VIP_A, first);
      await settled(cluster, VIP_B, firstB);
      await cluster.setLanLink(first, false);
      await eventually("the VIP leaves the node without a link", () =>
        holders(cluster, VIP_A), (h) =>
        !h.includes(first.name), 5000);
      await settled(cluster, VIP_A, second, 10_000);
      // Pods on nodes with a link still leave as the VIP.
      for (
        const pod of cluster.pods.filter((p) =>
          p.node !== first
        )
      ) {
        const vip = pod.name.endsWith("-1") ? VIP_A : VIP_B;
        assert.equal(await sourceSeenRetry(pod.ns, OUTSIDE_IP, "udp"), vip, pod.name);
      }
      await cluster.setLanLink(first, true);
      await settled(cluster, VIP_A, first, 20_000);
      await settled(cluster, VIP_B, firstB);
      await allLeaveAsVip(cluster);
    }),
});

Deno.test({
  name:
    "e2e vip: SIGTERM of the holder's agent hands its VIPs over at once; its pods keep egress; restart takes them back",
  ...e2e,
  fn: () =>
    withAgents(async (cluster, agents) => {
      const [first, second] = ranking(cluster, VIP_A);
      await settled(cluster, VIP_A, first);
      const index = first.index - 1;
      assert.equal(await agents[index].stop("SIGTERM"), 0);
      assert.ok(agents[index].lines.some((l) => l.includes("keepalived stopped")));
      assert.ok(agents[index].lines.some((l) => l.includes("rules stay in place")));
      // The VIP was released before the agent exited: the peer took it over.
      assert.deepEqual(await holders(cluster, VIP_A), [second.name]);
      // The stopped node was turned into a forwarder on the way out: its pod still leaves as the VIP.
      assert.equal(await sourceSeenRetry(cluster.pod(first.index, 1).ns, OUTSIDE_IP, "udp"), VIP_A);
      agents[index] = startAgent(cluster, first, [], 300);
      await settled(cluster, VIP_A, first, 20_000);
      await allLeaveAsVip(cluster);
    }),
});
