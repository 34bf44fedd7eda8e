/**
 * Migration from kube-egress + keepalived-vip to the agent's own placement,
 * in the README's order ("Migration"), proven on the wire and in the kernel:
 * every node's address notifications show who held each VIP at every
 * moment, and mapped pods stream to the outside host throughout, which
 * captures every packet's source.
 *
 * The two VRRP systems never see each other: keepalived-vip runs one
 * instance for all VIPs on router id 50, ours one per VIP on its route id
 * (5 and 6 here). Whenever both place a VIP, each elects its own master, so
 * the order must stop keepalived-vip everywhere before any agent places:
 * then the VIPs are never on two nodes (beyond keepalived's own handover when
 * a node preempts), and egress pauses (nothing leaves, nothing leaves wrong)
 * from the old holder's release to the first new holder. The test also runs
 * the wrong order and sees the split brain.
 */
import assert from "node:assert/strict";
import {
  type AgentProcess,
  modCommandLine,
  nodeEnvironment,
  spawnAgent,
} from "../../sim/agents.ts";
import { type Cluster, OUTSIDE_IP, type SimNode } from "../../sim/cluster.ts";
import { type HolderHistory, watchHolders } from "../../sim/holder_watch.ts";
import { KEEPALIVED_VIP_VRID, KeepalivedVip } from "../../sim/keepalived_vip.ts";
import { oldDaemonSetArgs } from "../../sim/old_stack.ts";
import { ranking, waitForPlacement } from "../../sim/placement.ts";
import { sourceSeenRetry } from "../../sim/probe.ts";
import { measureFailover } from "../../sim/stream.ts";
import { vipHolders } from "../../sim/vip.ts";
import { e2e, withCluster } from "./cluster.ts";

/**
 * The longest two nodes may both hold a VIP in the right order: a VRRP
 * preemption, where the old master steps down on the first advert of the new
 * one, sent the moment it takes over (measured: about 10 ms, when a node that
 * restarted takes its VIP back; graceful handovers leave a few ms with no
 * holder instead). Two systems that do not know each other overlap for as
 * long as both run.
 */
const HANDOVER_MS = 500;

/**
 * Two VIPs whose holders under our placement are two different nodes:
 * keepalived-vip puts both on one node, so in the wrong order at least one of
 * them is on two.
 */
function pickVips(cluster: Cluster): [string, string] {
  const candidates = Array.from({ length: 9 }, (_, i) => `192.0.2.${50 + i}`);
  const a = candidates[0];
  const b = candidates.find((b) => ranking(cluster, b)[0] !== ranking(cluster, a)[0]);
  if (!b) throw new Error("no two VIPs in 192.0.2.50-58 with distinct holders");
  return [a, b];
}

async function noHolder(cluster: Cluster, vips: readonly string[]) {
  const deadline = performance.now() + 20_000;
  while (performance.now() < deadline) {
    const holders = await vipHolders(cluster.nodes, vips, cluster.spec.iface);
    if ([...holders.values()].every((n) => n.length === 0)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${vips.join(", ")} still held 20 s after keepalived-vip stopped`);
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

function describe(history: HolderHistory, vip: string, since?: number) {
  const { splits, outages } = history.periods(vip, since);
  const show = (p: { from: number; to: number; nodes: readonly string[] }) =>
    `${seconds(p.to - p.from)}${p.nodes.length ? ` on ${p.nodes.join("+")}` : ""}`;
  return { splits, outages, text: `splits [${splits.map(show)}], outages [${outages.map(show)}]` };
}

Deno.test({
  name:
    "e2e migration: keepalived-vip to built-in placement in the README's order never puts a VIP on two nodes; the wrong order does",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const [vipA, vipB] = pickVips(cluster);
      const vipOf = (podName: string) => (podName.endsWith("-1") ? vipA : vipB);
      await cluster.writeMappings(
        Object.fromEntries(cluster.pods.map((p) => [p.ip, vipOf(p.name)])),
        { [vipA]: 5, [vipB]: 6 },
      );
      const old = new KeepalivedVip(cluster, [vipA, vipB]);
      const agents = new Map<SimNode, AgentProcess>();
      const start = (node: SimNode, extra: string[] = []) => {
        const argv = [
          ...nodeEnvironment(cluster, node),
          ...modCommandLine([...oldDaemonSetArgs(cluster), ...extra]),
        ];
        const agent = spawnAgent(node, argv);
        agents.set(node, agent);
        return agent;
      };
      try {
        // Step 1 done: our image in the old DaemonSet, args unchanged, keepalived-vip placing.
        await old.start();
        for (const node of cluster.nodes) start(node);
        for (const agent of agents.values()) await agent.waitFor(/pass applied/, 60_000);

        const watch = await watchHolders(cluster, [vipA, vipB]);
        const senders = [cluster.pod(1, 1), cluster.pod(2, 2)].map((pod) => ({
          tag: pod.name,
          ns: pod.ns,
          vip: vipOf(pod.name),
        }));
        let stoppedAt = 0;
        const run = await measureFailover(cluster.outside, {
          vip: vipA,
          senders,
          afterMs: 2000,
          fault: async () => {
            // Step 2: delete keepalived-vip's DaemonSet; wait until no node holds a VIP.
            stoppedAt = Date.now();
            await old.stop();
            await noHolder(cluster, [vipA, vipB]);
            // Step 3: add --vip-mode keepalived to the DaemonSet's args; it rolls node by node.
            for (const node of cluster.nodes) {
              assert.equal(await agents.get(node)!.stop(), 0);
              await start(node, ["--vip-mode", "keepalived"]).waitFor(/agent running/, 60_000);
            }
            const all = [...agents.values()];
            await waitForPlacement(cluster, all, vipA, ranking(cluster, vipA)[0], 60_000);
            await waitForPlacement(cluster, all, vipB, ranking(cluster, vipB)[0], 60_000);
          },
        });
        const history = await watch.stop();
        for (const vip of [vipA, vipB]) {
          const { splits, outages, text } = describe(history, vip, stoppedAt);
          const pause = outages[0];
          console.log(
            `migration ${vip}: ${text}; egress paused ${
              pause ? seconds(pause.to - pause.from) : "never"
            } from keepalived-vip's release to our first holder (agents restarted node by node)`,
          );
          for (const split of splits) {
            assert.ok(split.to - split.from <= HANDOVER_MS, `${vip} on two nodes: ${text}`);
          }
        }
        for (const stream of run.streams) {
          console.log(`migration stream ${stream.tag}: gap ${stream.analysis.gapMs} ms`);
          assert.notEqual(stream.analysis.gapMs, undefined, `${stream.tag} never resumed`);
          assert.equal(stream.analysis.wrongSource, 0, JSON.stringify(stream.analysis));
        }
        assert.equal(run.wire.count, 0, `wrong source on the wire: ${JSON.stringify(run.wire)}`);
        for (const pod of cluster.pods) {
          assert.equal(await sourceSeenRetry(pod.ns, OUTSIDE_IP, "tcp"), vipOf(pod.name), pod.name);
        }

        // The wrong order: keepalived-vip placing while the agents do (its DaemonSet left in
        // place, or re-created by egress-mapper's operator): two masters, two holders.
        const bothPlacing = async (label: string) => {
          const watch = await watchHolders(cluster, [vipA, vipB]);
          await old.start();
          const deadline = performance.now() + 20_000;
          while (performance.now() < deadline) {
            const holders = await vipHolders(cluster.nodes, [vipA, vipB], cluster.spec.iface);
            if ([...holders.values()].some((n) => n.length > 1)) break;
            await new Promise((r) => setTimeout(r, 100));
          }
          await new Promise((r) => setTimeout(r, 2000));
          await old.stop();
          const history = await watch.stop();
          const longest = Math.max(
            ...[vipA, vipB].flatMap((v) => history.periods(v).splits.map((p) => p.to - p.from)),
            0,
          );
          const text = [vipA, vipB].map((v) => `${v} ${describe(history, v).text}`).join("; ");
          console.log(`${label}: ${text}`);
          assert.ok(longest >= 2000, `${label}: a VIP on two nodes for ${longest} ms: ${text}`);
        };
        await bothPlacing("wrong order, other router ids");
        // Sharing keepalived-vip's router id is no handover either: our instance for vipA (route
        // id 5 + offset = 50) joins keepalived-vip's election with other addresses; each side's
        // masters keep their addresses, and the mixed election restarts every few seconds.
        for (const node of cluster.nodes) {
          assert.equal(await agents.get(node)!.stop(), 0);
          start(node, [
            "--vip-mode",
            "keepalived",
            "--vrrp-vrid-offset",
            String(KEEPALIVED_VIP_VRID - 5),
          ]);
        }
        for (const agent of agents.values()) await agent.waitFor(/agent running/, 60_000);
        const all = [...agents.values()];
        await waitForPlacement(cluster, all, vipA, ranking(cluster, vipA)[0], 60_000);
        await bothPlacing("wrong order, vipA on keepalived-vip's router id");
      } finally {
        for (const agent of agents.values()) await agent.stop().catch(() => {});
        await old.stop();
      }
    }),
});
