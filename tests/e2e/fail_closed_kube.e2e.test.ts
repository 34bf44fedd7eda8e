/**
 * End-to-end: fail closed with the Kubernetes source (EgressPolicy
 * `spec.failClosed`), against the test API server and real agents. Mapped
 * pods stream to the outside host while nobody holds their VIP: the capture
 * outside sees no other source than the VIP. Then the guarded pod finishes
 * and an unmapped pod gets its IP: the guard follows the pod, not the
 * address, so the new pod leaves as its node (not dropped, not steered).
 * Needs root; reported as skipped otherwise.
 */
import assert from "node:assert/strict";
import type { AgentProcess } from "../../sim/agents.ts";
import {
  egressPolicy,
  egressVip,
  podObject,
  type SimApiServer,
  startApiWithNodes,
  startKubeAgents,
  startKubeController,
} from "../../sim/kube_sim.ts";
import { sourceSeenRetry } from "../../sim/probe.ts";
import { measureFailover } from "../../sim/stream.ts";
import { placeVip } from "../../sim/vip.ts";
import { OUTSIDE_IP } from "../../sim/cluster.ts";
import { createCluster, e2e } from "./cluster.ts";
import { tally } from "./tally.ts";

const VIP = "192.0.2.50";

/** Waits (bounded) until `probe` answers `want`. */
async function until(probe: () => Promise<string>, want: string, what: string) {
  let last = "";
  for (let i = 0; i < 60; i++) {
    last = await probe();
    if (last === want) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.fail(`${what}: want ${want}, last ${last}`);
}

Deno.test({
  name:
    "e2e fail closed, Kubernetes source: nobody holds the VIP: 0 wrong-source packets; a reused IP of an unmapped pod is not guarded",
  ...e2e,
  fn: async () => {
    const cluster = await createCluster({ nodes: 3, podsPerNode: 1 });
    let api: SimApiServer | undefined;
    const agents: AgentProcess[] = [];
    try {
      api = await startApiWithNodes(cluster);
      await api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: "default" } });
      await api.apply(egressVip("office", { ip: VIP }));
      await api.apply(egressPolicy("default", "strict", {
        vip: "office",
        podSelector: { matchLabels: { egress: "strict" } },
        failClosed: true,
      }));
      const pods = cluster.nodes.map((n) => cluster.pod(n.index, 1));
      for (const [i, pod] of pods.entries()) {
        await api.apply(podObject(pod, `web-${i + 1}`, { labels: { egress: "strict" } }));
      }
      await placeVip(cluster.nodes, VIP, cluster.node(1), cluster.spec.iface);
      // The controller publishes the selection (fail closed included); the agents apply it.
      agents.push(startKubeController(cluster, api));
      agents.push(...startKubeAgents(cluster, api));
      for (const pod of pods) {
        await until(
          () => sourceSeenRetry(pod.ns, OUTSIDE_IP, "tcp"),
          VIP,
          `${pod.name} as the VIP`,
        );
      }

      // Nobody holds the VIP: every mapped pod's traffic is dropped, none leaves as a node.
      const senders = pods.map((p) => ({ tag: `${p.name}-noholder`, ns: p.ns }));
      const noHolder = await measureFailover(cluster.outside, {
        vip: VIP,
        senders,
        fault: () => placeVip(cluster.nodes, VIP, null, cluster.spec.iface),
        beforeMs: 600,
        afterMs: 2000,
      });
      const { sent, dropped } = tally(noHolder);
      console.log(
        `fail closed (kubernetes): no node holds the VIP: wrong source ${noHolder.wrongSource}, ` +
          `dropped ${dropped} of ${sent} sent`,
      );
      assert.equal(noHolder.wrongSource, 0, JSON.stringify(noHolder.wire.sources));
      assert.ok(dropped > 0);

      // web-2 finishes; an unmapped pod gets its IP (nobody holds the VIP still). The guard
      // follows the pod: once the agents saw the change, new flows from that address leave as
      // the node, neither dropped nor steered. (The old pod's own connections are not the new
      // pod's: the stream starts after the change.)
      const reused = pods[1];
      const done = podObject(reused, "web-2", { labels: { egress: "strict" } });
      const { t: switchedAt } = await api.apply({
        ...done,
        status: { ...done.status, phase: "Succeeded" },
      });
      await api.apply(podObject(reused, "someone-else"));
      let unguardedAt = 0;
      for (let i = 0; i < 100 && !unguardedAt; i++) {
        const tests = await Promise.all(
          cluster.nodes.map((n) =>
            n.ns.exec(["ipset", "test", "kube-egress-sg-failclosed", reused.ip])
          ),
        );
        if (tests.every((r) => r.code !== 0)) unguardedAt = Date.now();
        else await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(unguardedAt, "the finished pod's address left the guard on every node");
      const after = await measureFailover(cluster.outside, {
        vip: reused.node.ip,
        senders: [{ tag: "reused", ns: reused.ns }],
        fault: () => Promise.resolve(),
        beforeMs: 500,
        afterMs: 1000,
      });
      const arrived = after.streams[0].analysis.received;
      console.log(
        `fail closed (kubernetes): pod IP reused by an unmapped pod: out of the guard on every ` +
          `node ${unguardedAt - switchedAt} ms after the API stored the change; its new flows: ` +
          `${
            arrived.udp + arrived.tcp
          } packets as ${reused.node.ip}, ${after.wrongSource} otherwise`,
      );
      assert.equal(after.wrongSource, 0, JSON.stringify(after.wire.sources));
      assert.ok(arrived.udp + arrived.tcp > 0, "the unmapped pod's traffic is not dropped");

      // The EgressVIP deleted while its policy still uses it. Its finalizer keeps it while in
      // use (deletion waits); taken off by hand, the object is gone at once: the policy's pods
      // stay guarded (their slices say so), nothing leaves as a node.
      await placeVip(cluster.nodes, VIP, cluster.node(1), cluster.spec.iface);
      await until(() => sourceSeenRetry(pods[0].ns, OUTSIDE_IP, "tcp"), VIP, "web-1 as the VIP");
      const gone = await measureFailover(cluster.outside, {
        vip: VIP,
        senders: [pods[0], pods[2]].map((p) => ({ tag: `${p.name}-vipgone`, ns: p.ns })),
        fault: async () => {
          await api!.delete("EgressVIP", "office");
          // The controller writes the VIP's status meanwhile: retry on a conflict (bounded).
          for (let attempt = 0; attempt < 20; attempt++) {
            const held = await api!.get<{ metadata: Record<string, unknown> }>(
              "EgressVIP",
              "office",
            );
            if (!held) break;
            try {
              await api!.command("update", {
                object: { ...held, metadata: { ...held.metadata, finalizers: [] } },
              });
              break;
            } catch (error) {
              if (!/has been modified/.test(String(error)) || attempt === 19) throw error;
            }
          }
          for (let i = 0; i < 100 && await api!.get("EgressVIP", "office"); i++) {
            await new Promise((r) => setTimeout(r, 50));
          }
        },
        beforeMs: 600,
        afterMs: 2500,
      });
      const goneTally = tally(gone);
      console.log(
        `fail closed (kubernetes): the EgressVIP deleted while in use: wrong source ` +
          `${gone.wrongSource}, dropped ${goneTally.dropped} of ${goneTally.sent} sent`,
      );
      assert.equal(gone.wrongSource, 0, JSON.stringify(gone.wire.sources));
      assert.equal(await api.get("EgressVIP", "office"), null, "the EgressVIP is gone");
      assert.ok(goneTally.dropped > 0, "its pods' traffic is dropped");
    } finally {
      for (const agent of agents) await agent.stop();
      await api?.stop();
      await cluster.destroy();
    }
  },
});
