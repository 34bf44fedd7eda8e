/**
 * End-to-end: issue 15's rogue. A LAN host that is no node advertises every
 * VIP's router id with VRRP priority 255, answers ARP for the VIPs and sends
 * gratuitous ARPs for them (sim/rogue.ts), from after the first check through
 * a failover. With the guard (core/guard.ts) no packet of a mapped pod
 * reaches it, its adverts are refused and reported, the failover works while
 * it is there, and 2 s after it stops every pod leaves as its VIP. Without the
 * guard (`--guard off`, i.e. the code before it) the rogue becomes VRRP master
 * and attracts the pods' traffic: these assertions fail.
 */
import assert from "node:assert/strict";
import { stateDirOf } from "../../sim/agents.ts";
import { renderChecks } from "../../sim/check.ts";
import type { Cluster } from "../../sim/cluster.ts";
import { dropVrrpMulticast } from "../../sim/placement.ts";
import { rogueLine, runStory, type StoryResult } from "../../sim/story.ts";
import { keepalivedVips, type VipDriver } from "../../sim/vip.ts";
import { e2e, withCluster } from "./cluster.ts";

function explain(result: StoryResult): string {
  return [
    ...result.phases.map((p) => `${p.title}\n${renderChecks(p.checks)}`),
    ...result.baselineDiff,
    result.rogue ? rogueLine(result.rogue) : "no rogue result",
  ].join("\n");
}

async function assertRogueStory(cluster: Cluster, driver: VipDriver) {
  const result = await runStory(cluster, { driver, rogue: true });
  const rogue = result.rogue;
  assert.ok(rogue, explain(result));
  console.log(
    `${rogueLine(rogue)}; failover gap ${result.failover?.gapMs} ms, wrong source ` +
      `${result.failover?.wrongSource}; replies while present ${rogue.repliedChecks.join("/")}`,
  );
  assert.equal(rogue.attracted, 0, `the rogue attracted mapped pods' packets\n${explain(result)}`);
  assert.ok(rogue.advertsRefused > 0, `no advert refused\n${explain(result)}`);
  assert.ok(rogue.alerts > 0, `no alert raised\n${explain(result)}`);
  assert.ok(result.failover?.ok, `failover with the rogue present failed\n${explain(result)}`);
  assert.ok(result.ok, explain(result));
}

Deno.test(
  "e2e rogue: multicast VRRP, files source with --node-addresses: nothing attracted, adverts refused, failover works, pods recover 2 s after the rogue stops",
  e2e,
  () =>
    withCluster(async (cluster) => {
      const driver = keepalivedVips(
        cluster.nodes,
        cluster.spec.iface,
        (n) => stateDirOf(cluster, n),
      );
      await assertRogueStory(cluster, driver);
    }),
);

Deno.test(
  "e2e rogue: unicast VRRP, the unicast peer list is the node list (no --node-addresses): the same",
  e2e,
  () =>
    withCluster(async (cluster) => {
      await dropVrrpMulticast(cluster);
      const base = keepalivedVips(cluster.nodes, cluster.spec.iface, (n) => stateDirOf(cluster, n));
      const i = base.agentFlags.indexOf("--node-addresses");
      const flags = [...base.agentFlags.slice(0, i), ...base.agentFlags.slice(i + 2)];
      const driver: VipDriver = {
        ...base,
        agentFlags: [...flags, "--vrrp-unicast-peers", cluster.nodes.map((n) => n.ip).join(",")],
      };
      await assertRogueStory(cluster, driver);
    }),
);
