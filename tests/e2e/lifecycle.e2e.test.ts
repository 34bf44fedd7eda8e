/**
 * End-to-end: the agent's life on running nodes (VIPs placed by the test:
 * `--vip-mode external`): a pod remapped to another
 * VIP, a VIP removed, the holder's agent restarted under traffic, and an agent
 * killed with SIGKILL in the middle of a pass. Agents are the real `mod.ts run`
 * processes in the node namespaces. Needs root; reported as skipped otherwise.
 * It reads the iptables backend's objects directly (ipset, iptables-save), so
 * it pins that backend (KE_BACKEND does not apply).
 */
import assert from "node:assert/strict";
import { agentCommand, type AgentProcess, EXTERNAL, startAgent } from "../../sim/agents.ts";
import { checkPod, renderChecks } from "../../sim/check.ts";
import type { Cluster, SimNode, SimPod } from "../../sim/cluster.ts";
import { OUTSIDE_IP } from "../../sim/layout.ts";
import { sourceSeen } from "../../sim/probe.ts";
import { placeVip } from "../../sim/vip.ts";
import { e2e, withCluster } from "./cluster.ts";

const VIP_A = "192.0.2.50";
const VIP_B = "192.0.2.51";
const VIPS = { [VIP_A]: 5, [VIP_B]: 6 };
/** The objects read below are the iptables backend's. */
const IPTABLES = { backend: "iptables" } as const;

/** Starts an agent on every node and waits for each one's first pass. */
async function startAgents(cluster: Cluster): Promise<AgentProcess[]> {
  const agents = cluster.nodes.map((node) => startAgent(cluster, node, EXTERNAL));
  await Promise.all(agents.map((a) => a.waitFor(/pass (applied|failed)/, 60_000)));
  return agents;
}

async function stopAll(agents: readonly AgentProcess[]) {
  for (const agent of agents) await agent.stop("SIGKILL");
}

/** Runs `change`, then waits until every agent has applied a pass because of it. */
async function changeAndWait(agents: readonly AgentProcess[], change: () => Promise<void>) {
  const since = agents.map((a) => a.lines.length);
  await change();
  await Promise.all(agents.map((a, i) => a.waitFor(/pass applied/, 30_000, since[i])));
}

async function assertLeavesAs(cluster: Cluster, pod: SimPod, source: string) {
  const check = await checkPod(cluster, pod, source);
  assert.ok(check.ok, renderChecks([check]));
}

/** The mark each pod IP has in a node's pods set. */
async function podMarks(node: SimNode): Promise<Record<string, string>> {
  const save = await node.ns.run(["ipset", "save", "kube-egress-pods"]);
  return Object.fromEntries(
    [...save.matchAll(/^add kube-egress-pods (\S+) .*skbmark (\S+)/gm)].map((m) => [m[1], m[2]]),
  );
}

/** Our objects on a node, each listed once per copy so duplicates show. */
async function ourObjects(node: SimNode) {
  const [iptables, rules, routes] = await Promise.all([
    node.ns.run(["iptables-save"]),
    node.ns.run(["ip", "-4", "rule", "show"]),
    node.ns.run(["ip", "-4", "route", "show", "table", "all", "proto", "233"]),
  ]);
  return {
    jumps: iptables.split("\n").filter((l) =>
      /^-A (PREROUTING|POSTROUTING) .*-j KUBE-EGRESS/.test(l)
    ),
    rules: rules.split("\n").filter((l) => l.includes("proto 233")),
    routes: routes.split("\n").filter(Boolean),
    iptables,
  };
}

function assertNoDuplicates(objects: Awaited<ReturnType<typeof ourObjects>>, node: string) {
  for (const list of [objects.jumps, objects.rules, objects.routes]) {
    assert.equal(new Set(list).size, list.length, `${node} has duplicates:\n${list.join("\n")}`);
  }
  assert.equal(objects.jumps.length, 2, `${node}: one jump from mangle and one from nat`);
}

Deno.test({
  name: "e2e lifecycle: a pod remapped from one VIP to another follows on every node",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const pod = cluster.pod(3, 1);
      await placeVip(cluster.nodes, VIP_A, cluster.node(1), cluster.spec.iface);
      await placeVip(cluster.nodes, VIP_B, cluster.node(2), cluster.spec.iface);
      await cluster.writeMappings({ [pod.ip]: VIP_A }, VIPS);
      const agents = await startAgents(cluster);
      try {
        await assertLeavesAs(cluster, pod, VIP_A);
        await changeAndWait(agents, () => cluster.writeMappings({ [pod.ip]: VIP_B }, VIPS));
        await assertLeavesAs(cluster, pod, VIP_B);
        for (const node of cluster.nodes) {
          assert.deepEqual(await podMarks(node), { [pod.ip]: "0x6/0xff" }, node.name);
        }
        // Back again, through the holder of A this time from a pod on A's node.
        const local = cluster.pod(1, 1);
        await changeAndWait(
          agents,
          () => cluster.writeMappings({ [pod.ip]: VIP_A, [local.ip]: VIP_B }, VIPS),
        );
        await assertLeavesAs(cluster, pod, VIP_A);
        await assertLeavesAs(cluster, local, VIP_B);
      } finally {
        await stopAll(agents);
      }
    }, IPTABLES),
});

Deno.test({
  name: "e2e lifecycle: a VIP removed from the mappings leaves no rule, route or entry behind",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const [a, b] = [cluster.pod(2, 1), cluster.pod(3, 1)];
      await placeVip(cluster.nodes, VIP_A, cluster.node(1), cluster.spec.iface);
      await placeVip(cluster.nodes, VIP_B, cluster.node(2), cluster.spec.iface);
      await cluster.writeMappings({ [a.ip]: VIP_A, [b.ip]: VIP_B }, VIPS);
      const agents = await startAgents(cluster);
      try {
        await assertLeavesAs(cluster, b, VIP_B);
        const node3 = await ourObjects(cluster.node(3));
        assert.ok(node3.rules.some((r) => r.includes("lookup 6")), node3.rules.join("\n"));

        // The operator deletes VIP B: its route id file and its pods' mappings go.
        await changeAndWait(agents, () => cluster.writeMappings({ [a.ip]: VIP_A }, { [VIP_A]: 5 }));
        await assertLeavesAs(cluster, b, b.node.ip);
        await assertLeavesAs(cluster, a, VIP_A);
        for (const node of cluster.nodes) {
          const objects = await ourObjects(node);
          assert.ok(!objects.rules.some((r) => r.includes("lookup 6")), `${node.name} rule for B`);
          assert.ok(!objects.routes.some((r) => r.includes("table 6")), `${node.name} route for B`);
          assert.doesNotMatch(objects.iptables, /192\.0\.2\.51/, `${node.name} nat rule for B`);
          assert.deepEqual(await podMarks(node), { [a.ip]: "0x5/0xff" }, node.name);
          assertNoDuplicates(objects, node.name);
        }
      } finally {
        await stopAll(agents);
      }
    }, IPTABLES),
});

Deno.test({
  name: "e2e lifecycle: restarting the holder's agent interrupts no traffic and duplicates no rule",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const pod = cluster.pod(2, 1);
      const holder = cluster.node(1);
      await placeVip(cluster.nodes, VIP_A, holder, cluster.spec.iface);
      await cluster.writeMappings({ [pod.ip]: VIP_A, [cluster.pod(1, 1).ip]: VIP_A }, VIPS);
      const agents = await startAgents(cluster);
      try {
        await assertLeavesAs(cluster, pod, VIP_A);
        const before = await ourObjects(holder);

        // A steady probe (a TCP connection and a UDP datagram every ~100 ms) runs
        // while the holder's agent stops (SIGTERM, as in a rolling update) and a
        // new one starts and runs its first pass.
        let probing = true;
        const answers: string[] = [];
        const prober = (async () => {
          while (probing && answers.length < 2000) {
            answers.push(
              ...(await Promise.all([
                sourceSeen(pod.ns, OUTSIDE_IP, "tcp", "restart"),
                sourceSeen(pod.ns, OUTSIDE_IP, "udp", "restart"),
              ])),
            );
            await new Promise((r) => setTimeout(r, 100));
          }
        })();
        try {
          await new Promise((r) => setTimeout(r, 300));
          assert.equal(await agents[0].stop("SIGTERM"), 0);
          assert.ok(agents[0].lines.some((l) => l.includes("rules stay in place")));
          await new Promise((r) => setTimeout(r, 300));
          agents[0] = startAgent(cluster, holder, EXTERNAL);
          await agents[0].waitFor(/agent running/, 60_000);
          // Its first pass found nothing to do: it reports roles, but writes nothing.
          await agents[0].waitFor(/VIP role vip=192\.0\.2\.50 from=none to=holder/, 30_000);
          // Probe on after the new agent's first pass: at least 3 rounds in all, however fast
          // the restart was (a one-second restart leaves only 2 rounds otherwise).
          const until = Date.now() + 10_000;
          await new Promise((r) => setTimeout(r, 500));
          while (answers.length < 6 && Date.now() < until) {
            await new Promise((r) => setTimeout(r, 100));
          }
        } finally {
          probing = false;
          await prober;
        }
        const wrong = answers.filter((a) => a !== VIP_A);
        assert.deepEqual(
          wrong,
          [],
          `${wrong.length} of ${answers.length} probes did not leave as the VIP`,
        );
        assert.ok(answers.length >= 6, `only ${answers.length} probes ran`);
        assert.ok(
          !agents[0].lines.some((l) => l.includes("pass applied")),
          `the restarted agent wrote something:\n${agents[0].lines.join("\n")}`,
        );
        const after = await ourObjects(holder);
        assertNoDuplicates(after, holder.name);
        assert.deepEqual(after.jumps, before.jumps);
        assert.deepEqual(after.rules, before.rules);
        assert.match((await agentCommand(cluster, holder, "plan", EXTERNAL)).stdout, /no changes/);
      } finally {
        await stopAll(agents);
      }
    }, IPTABLES),
});

/** `count` more pod IPs (no namespaces behind them) mapped alternately to A and B. */
function bulkMappings(count: number): Record<string, string> {
  return Object.fromEntries(
    Array.from(
      { length: count },
      (_, i) => [`10.244.${100 + Math.floor(i / 250)}.${1 + (i % 250)}`, i % 2 ? VIP_B : VIP_A],
    ),
  );
}

Deno.test({
  name: "e2e lifecycle: an agent killed with SIGKILL in the middle of a pass converges on restart",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const pod = cluster.pod(2, 1);
      const node2 = cluster.node(2);
      await placeVip(cluster.nodes, VIP_A, cluster.node(1), cluster.spec.iface);
      await placeVip(cluster.nodes, VIP_B, cluster.node(3), cluster.spec.iface);
      // 2,000 mappings make a pass long enough (a large ipset restore, then the
      // chains) to be cut in the middle.
      const mappings = { ...bulkMappings(2000), [pod.ip]: VIP_A };
      await cluster.writeMappings(mappings, VIPS);
      for (const node of [cluster.node(1), cluster.node(3)]) {
        assert.equal((await agentCommand(cluster, node, "run", EXTERNAL)).code, 0);
      }

      // Kill node2's agent the moment its first step (policy routes and rules)
      // reaches the kernel: the sets and chains are still to come.
      const monitor = node2.ns.spawn(["ip", "monitor", "route", "rule"], { stdout: "piped" });
      const firstEvent = (async () => {
        for await (const _ of monitor.stdout) return true;
        return false;
      })();
      const victim = startAgent(cluster, node2, EXTERNAL);
      let killedMidPass: boolean;
      try {
        assert.ok(await firstEvent, "ip monitor saw the agent's routes");
        await victim.stop("SIGKILL");
        killedMidPass = !victim.lines.some((l) => l.includes("pass applied"));
      } finally {
        try {
          monitor.kill("SIGKILL");
        } catch {
          // Already gone.
        }
        await monitor.status;
        await victim.stop("SIGKILL");
      }
      assert.ok(killedMidPass, `the agent finished before the kill:\n${victim.lines.join("\n")}`);
      // Tools the agent had started may still be finishing their input: let them.
      for (let i = 0; i < 100 && (await node2.ns.pids()).length > 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const partial = await ourObjects(node2);
      const marks = Object.keys(await podMarks(node2).catch(() => ({}))).length;
      assert.ok(
        partial.jumps.length < 2 || marks < 2001,
        `the node was complete at the kill: ${partial.jumps.length} jumps, ${marks} pods`,
      );

      // A restarted agent converges: everything present once, nothing pending, traffic right.
      const restarted = startAgent(cluster, node2, EXTERNAL);
      try {
        await restarted.waitFor(/pass applied/, 60_000);
        const objects = await ourObjects(node2);
        assertNoDuplicates(objects, node2.name);
        assert.equal(objects.rules.length, 2, objects.rules.join("\n"));
        assert.equal(Object.keys(await podMarks(node2)).length, 2001);
        assert.match((await agentCommand(cluster, node2, "plan", EXTERNAL)).stdout, /no changes/);
        await assertLeavesAs(cluster, pod, VIP_A);
      } finally {
        await restarted.stop("SIGKILL");
      }
    }, IPTABLES),
});
