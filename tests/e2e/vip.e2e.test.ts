/**
 * End-to-end VIP placement: real agents in keepalived mode (the default) on
 * simulated nodes place the VIPs themselves, spread over the nodes by
 * priority, and move them on failures; mapped pods stream to an outside host
 * that reports (and captures) the source it sees. Needs root; reported as
 * skipped otherwise. Timings are never asserted (the machine is shared): only
 * where the VIPs end up, who holds them, and that nothing leaves with a wrong
 * source.
 */
import assert from "node:assert/strict";
import {
  agentCommand,
  type AgentProcess,
  EXTERNAL,
  KEEPALIVED,
  startAgent,
  stateDirOf,
} from "../../sim/agents.ts";
import { Cluster, OUTSIDE_IP, type SimNode } from "../../sim/cluster.ts";
import {
  dropVrrpMulticast,
  holdersOf,
  killKeepalived,
  lastRole,
  multicastAdvertsDropped,
  ranking,
  waitForPlacement,
} from "../../sim/placement.ts";
import { sourceSeenRetry } from "../../sim/probe.ts";
import { type FailoverRun, measureFailover } from "../../sim/stream.ts";
import { placeVip } from "../../sim/vip.ts";
import { clusterLayout, DEFAULT_SPEC } from "../../sim/layout.ts";
import { vrrpPriority } from "../../core/keepalived.ts";
import { isRoot } from "../helpers.ts";

const VIP_A = "192.0.2.50";
const VIP_B = "192.0.2.51";
const e2e = { ignore: !isRoot, sanitizeOps: false, sanitizeResources: false };

/** First pods of every node are mapped to A, second pods to B. */
function vipOf(podName: string): string {
  return podName.endsWith("-1") ? VIP_A : VIP_B;
}

/** A cluster with agents (keepalived mode unless `extra` says otherwise) on every node; always torn down. */
async function withAgents(
  fn: (cluster: Cluster, agents: AgentProcess[]) => Promise<void>,
  extra: readonly string[] = [],
  before?: (cluster: Cluster) => Promise<void>,
) {
  const cluster = await Cluster.create();
  const agents: AgentProcess[] = [];
  try {
    await cluster.writeMappings(
      Object.fromEntries(cluster.pods.map((p) => [p.ip, vipOf(p.name)])),
      { [VIP_A]: 5, [VIP_B]: 6 },
    );
    await before?.(cluster);
    for (const node of cluster.nodes) agents.push(startAgent(cluster, node, extra, 300));
    await fn(cluster, agents);
  } finally {
    for (const agent of agents) await agent.stop().catch(() => {});
    await cluster.destroy();
  }
}

interface StatusJson {
  readonly placement: { readonly running: boolean; readonly node: string };
  readonly vips: readonly {
    vip: string;
    vrrp: string;
    priority: number;
    role: string;
    vrid: number;
    peers?: string[];
  }[];
}

/**
 * `status --json` of a node once `settled` holds (10 s at most; then the last
 * one, for the caller's assertions to name what differs). keepalived's state
 * reaches the agent through its log, which may lag the address on a loaded
 * machine.
 */
async function statusWhen(
  cluster: Cluster,
  node: SimNode,
  settled: (status: StatusJson) => boolean,
): Promise<StatusJson> {
  for (let i = 0;; i++) {
    const status: StatusJson = JSON.parse(
      (await agentCommand(cluster, node, "status", [...KEEPALIVED, "--json"])).stdout,
    );
    if (i >= 50 || settled(status)) return status;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Every pod's TCP and UDP traffic (or that of the pods on `nodes`) leaves as its VIP. */
async function leaveAsTheirVip(cluster: Cluster, nodes: readonly SimNode[] = cluster.nodes) {
  for (const pod of cluster.pods.filter((p) => nodes.includes(p.node))) {
    for (const proto of ["tcp", "udp"] as const) {
      assert.equal(
        await sourceSeenRetry(pod.ns, OUTSIDE_IP, proto),
        vipOf(pod.name),
        `${pod.name} ${proto}`,
      );
    }
  }
}

/** Streams from the first pod of each of `nodes` (mapped to A) through `fault`. */
function streamThrough(
  cluster: Cluster,
  nodes: readonly SimNode[],
  fault: () => Promise<unknown>,
): Promise<FailoverRun> {
  return measureFailover(cluster.outside, {
    vip: VIP_A,
    senders: nodes.map((n) => ({ tag: `pod${n.index}-1`, ns: cluster.pod(n.index, 1).ns })),
    fault,
  });
}

/** The stream resumed through the new holder and nothing left with a wrong source. */
function assertCleanFailover(run: FailoverRun) {
  for (const stream of run.streams) {
    assert.notEqual(stream.analysis.gapMs, undefined, `${stream.tag} never resumed`);
    assert.equal(
      stream.analysis.wrongSource,
      0,
      `${stream.tag}: ${JSON.stringify(stream.analysis)}`,
    );
  }
  assert.equal(run.wire.count, 0, `leaked on the wire: ${JSON.stringify(run.wire.packets)}`);
}

Deno.test({
  name: "e2e vip: keepalived spreads the VIPs over the nodes by priority; status shows it",
  ...e2e,
  fn: () =>
    withAgents(async (cluster, agents) => {
      const [firstA] = ranking(cluster, VIP_A);
      const [firstB] = ranking(cluster, VIP_B);
      assert.notEqual(firstA, firstB, "the two VIPs rank different nodes first");
      await waitForPlacement(cluster, agents, VIP_A, firstA);
      await waitForPlacement(cluster, agents, VIP_B, firstB);
      for (const node of cluster.nodes) {
        const expected = (first: SimNode) => node === first ? "MASTER" : "BACKUP";
        const status = await statusWhen(cluster, node, (s) =>
          s.vips.every((v) =>
            v.vrrp === expected(v.vip === VIP_A ? firstA : firstB)
          ));
        assert.equal(status.placement.running, true);
        assert.equal(status.placement.node, node.name);
        for (const vip of [VIP_A, VIP_B]) {
          const row = status.vips.find((v) => v.vip === vip);
          assert.ok(row, `${node.name} status lists ${vip}`);
          const first = vip === VIP_A ? firstA : firstB;
          assert.equal(row.priority, vrrpPriority(vip, node.name));
          assert.equal(row.role, node === first ? "holder" : "forwarder");
          assert.equal(row.vrrp, expected(first), `${node.name} ${vip}`);
        }
      }
      const text = (await agentCommand(cluster, firstA, "status", KEEPALIVED)).stdout;
      assert.match(text, new RegExp(`placement: keepalived as node ${firstA.name}, running`));
      assert.match(
        text,
        new RegExp(`192\\.0\\.2\\.50\\s+5\\s+0x5\\s+holder\\s+yes\\s+\\d+\\s+MASTER`),
      );
      await leaveAsTheirVip(cluster);
      // The agent's lock, keepalived's files, and the rp_filter values the agent
      // loosened (the simulated nodes start strict) live in the node's own state directory.
      const files = [...Deno.readDirSync(stateDirOf(cluster, firstA))].map((e) => e.name).sort();
      assert.deepEqual(files, [
        "agent.lock",
        "keepalived.conf",
        "keepalived.pid",
        "rp_filter.json",
        "vips.json",
        "vrrp.pid",
      ]);
    }),
});

Deno.test({
  name:
    "e2e vip: takeover when the holder's keepalived dies; streams resume via the next node, nothing leaks",
  ...e2e,
  fn: () =>
    withAgents(async (cluster, agents) => {
      const [first, second, third] = ranking(cluster, VIP_A);
      await waitForPlacement(cluster, agents, VIP_A, first);
      await waitForPlacement(cluster, agents, VIP_B, ranking(cluster, VIP_B)[0]);
      // Streams from the node that takes over (its flow turns from forwarded to SNATed) and the third.
      const run = await streamThrough(
        cluster,
        [second, third],
        () => killKeepalived(cluster, first),
      );
      assertCleanFailover(run);
      await waitForPlacement(cluster, agents, VIP_A, second);
      const agent = agents[first.index - 1];
      await agent.waitFor(/keepalived exited; its VIPs were released, restarting/);
      assert.ok(
        agent.lines.some((l) => /VIP role vip=192.0.2.50 from=holder to=forwarder/.test(l)),
      );
      await leaveAsTheirVip(cluster);
      // The restarted keepalived takes the VIP back after the preemption delay.
      await waitForPlacement(cluster, agents, VIP_A, first, 30_000);
      await leaveAsTheirVip(cluster);
    }),
});

Deno.test({
  name:
    "e2e vip: loss when the holder's link goes down; streams resume, nothing leaks; the VIP comes back with the link",
  ...e2e,
  fn: () =>
    withAgents(async (cluster, agents) => {
      const [first, second, third] = ranking(cluster, VIP_A);
      const [firstB] = ranking(cluster, VIP_B);
      await waitForPlacement(cluster, agents, VIP_A, first);
      await waitForPlacement(cluster, agents, VIP_B, firstB);
      const run = await streamThrough(
        cluster,
        [second, third],
        () => cluster.setLanLink(first, false),
      );
      assertCleanFailover(run);
      await waitForPlacement(cluster, agents, VIP_A, second);
      const stranded = agents[first.index - 1];
      assert.ok(stranded.lines.some((l) => /VRRP state vip=192.0.2.50 state=FAULT/.test(l)));
      await leaveAsTheirVip(cluster, [second, third]);
      await cluster.setLanLink(first, true);
      await waitForPlacement(cluster, agents, VIP_A, first, 30_000);
      await waitForPlacement(cluster, agents, VIP_B, firstB);
      await leaveAsTheirVip(cluster);
    }),
});

Deno.test({
  name:
    "e2e vip: two VIPs fail over independently; the other VIP's holder and traffic are untouched",
  ...e2e,
  fn: () =>
    withAgents(async (cluster, agents) => {
      const [firstA, secondA] = ranking(cluster, VIP_A);
      const [firstB] = ranking(cluster, VIP_B);
      await waitForPlacement(cluster, agents, VIP_A, firstA);
      await waitForPlacement(cluster, agents, VIP_B, firstB);
      const linesBefore = agents.map((a) => a.lines.length);
      const others = cluster.nodes.filter((n) => n !== firstA);
      // Both VIPs' traffic streams while A's holder loses its keepalived.
      const run = await measureFailover(cluster.outside, {
        vip: VIP_A,
        senders: others.flatMap((n) => [
          { tag: `pod${n.index}-1`, ns: cluster.pod(n.index, 1).ns },
          { tag: `pod${n.index}-2`, ns: cluster.pod(n.index, 2).ns, vip: VIP_B },
        ]),
        fault: () => killKeepalived(cluster, firstA),
      });
      assertCleanFailover(run);
      await waitForPlacement(cluster, agents, VIP_A, secondA);
      // B never moved: still on its node, and no agent changed its role for B meanwhile (the
      // restarted keepalived on A's old holder reports BACKUP for B again, as before).
      assert.deepEqual(await holdersOf(cluster, VIP_B), [firstB.name]);
      agents.forEach((agent, i) => {
        const during = agent.lines.slice(linesBefore[i]).filter((l) =>
          l.includes(`VIP role vip=${VIP_B}`) || l.includes(`vip=${VIP_B} state=MASTER`)
        );
        assert.deepEqual(during, [], `${agent.node.name} changed ${VIP_B}`);
      });
      await leaveAsTheirVip(cluster, others);
    }),
});

Deno.test({
  name:
    "e2e vip: flapping — the holder's link down, up, down within two seconds ends in the right state",
  ...e2e,
  fn: () =>
    withAgents(
      async (cluster, agents) => {
        const [first, second, third] = ranking(cluster, VIP_A);
        await waitForPlacement(cluster, agents, VIP_A, first);
        const firstAgent = agents[first.index - 1];
        const before = firstAgent.lines.length;
        const flap = async () => {
          const pause = () => new Promise((r) => setTimeout(r, 650));
          await cluster.setLanLink(first, false);
          await pause();
          await cluster.setLanLink(first, true);
          await pause();
          await cluster.setLanLink(first, false);
        };
        const run = await streamThrough(cluster, [second, third], flap);
        assertCleanFailover(run);
        await waitForPlacement(cluster, agents, VIP_A, second);
        const moves = firstAgent.lines.slice(before).filter((l) =>
          /VIP role vip=192.0.2.50 from=\S+ to=/.test(l)
        );
        console.log(`  ${first.name} role changes during the flaps: ${moves.length}`);
        assert.ok(moves.length >= 1);
        assert.equal(lastRole(firstAgent, VIP_A), "forwarder");
        await leaveAsTheirVip(cluster, [second, third]);
        await cluster.setLanLink(first, true);
        await waitForPlacement(cluster, agents, VIP_A, first);
        await leaveAsTheirVip(cluster);
      },
      // No preemption delay: the node takes its VIP back as soon as its link is up again.
      ["--vrrp-preempt-delay", "0"],
    ),
});

Deno.test({
  name: "e2e vip: three moves of a VIP placed by hand within two seconds end in the right state",
  ...e2e,
  fn: () =>
    withAgents(
      async (cluster, agents) => {
        const [n1, n2, n3] = cluster.nodes;
        await waitForPlacement(cluster, agents, VIP_A, n1);
        const run = await streamThrough(cluster, [n2, n3], async () => {
          const started = performance.now();
          for (const node of [n2, n3, n1]) {
            await placeVip(cluster.nodes, VIP_A, node, cluster.spec.iface);
          }
          console.log(`  three moves in ${Math.round(performance.now() - started)} ms`);
        });
        assertCleanFailover(run);
        await waitForPlacement(cluster, agents, VIP_A, n1);
        await leaveAsTheirVip(cluster);
      },
      EXTERNAL,
      async (cluster) => {
        // Control: before any agent runs, the mapped pod leaves as its node, and both the
        // reporter and the capture say so (the measurement can see a leak).
        const control = await measureFailover(cluster.outside, {
          vip: VIP_A,
          senders: [{ tag: "control", ns: cluster.pod(2, 1).ns }],
          fault: () => Promise.resolve(),
          beforeMs: 300,
          afterMs: 300,
        });
        assert.ok(control.streams[0].analysis.wrongSources[cluster.node(2).ip] > 0);
        assert.ok(control.wire.sources[cluster.node(2).ip] > 0);
        await placeVip(cluster.nodes, VIP_A, cluster.node(1), cluster.spec.iface);
        await placeVip(cluster.nodes, VIP_B, cluster.node(2), cluster.spec.iface);
      },
    ),
});

Deno.test({
  name: "e2e vip: a new VIP reloads keepalived without dropping the VIPs that did not change",
  ...e2e,
  fn: () =>
    withAgents(async (cluster, agents) => {
      const [firstA] = ranking(cluster, VIP_A);
      await waitForPlacement(cluster, agents, VIP_A, firstA);
      const monitor = firstA.ns.spawn(["ip", "-o", "monitor", "address"], { stdout: "piped" });
      const output = new Response(monitor.stdout).text();
      const VIP_C = "192.0.2.52";
      await cluster.writeMappings(
        {
          ...Object.fromEntries(cluster.pods.map((p) => [p.ip, vipOf(p.name)])),
          [cluster.pod(1, 2).ip]: VIP_C,
        },
        { [VIP_A]: 5, [VIP_B]: 6, [VIP_C]: 7 },
      );
      await Promise.all(agents.map((a) => a.waitFor(/keepalived reloaded instances=3/)));
      await waitForPlacement(cluster, agents, VIP_C, ranking(cluster, VIP_C)[0]);
      monitor.kill("SIGTERM");
      const events = await output;
      assert.doesNotMatch(events, /Deleted.*192\.0\.2\.50/, "the unchanged VIP stayed put");
      assert.deepEqual(await holdersOf(cluster, VIP_A), [firstA.name]);
      assert.equal(await sourceSeenRetry(cluster.pod(1, 2).ns, OUTSIDE_IP, "tcp"), VIP_C);
    }),
});

Deno.test({
  name:
    "e2e vip: SIGTERM of the holder's agent hands its VIPs over at once; its pods keep egress; restart takes them back",
  ...e2e,
  fn: () =>
    withAgents(async (cluster, agents) => {
      const [first, second] = ranking(cluster, VIP_A);
      await waitForPlacement(cluster, agents, VIP_A, first);
      const index = first.index - 1;
      assert.equal(await agents[index].stop("SIGTERM"), 0);
      assert.ok(agents[index].lines.some((l) => l.includes("keepalived stopped")));
      assert.ok(agents[index].lines.some((l) => l.includes("rules stay in place")));
      // The VIP was released before the agent exited: the peer took it over.
      assert.deepEqual(await holdersOf(cluster, VIP_A), [second.name]);
      // The stopped node was turned into a forwarder on the way out: its pod still leaves as the VIP.
      assert.equal(await sourceSeenRetry(cluster.pod(first.index, 1).ns, OUTSIDE_IP, "udp"), VIP_A);
      agents[index] = startAgent(cluster, first, [], 300);
      await waitForPlacement(cluster, agents, VIP_A, first, 30_000);
      await leaveAsTheirVip(cluster);
    }),
});

Deno.test({
  name:
    "e2e vip: VRRP over unicast where the LAN drops multicast, router ids shifted: one holder per VIP, takeover on a crash",
  ...e2e,
  fn: () => {
    const nodeIps = clusterLayout(DEFAULT_SPEC).nodes.map((n) => n.ip);
    return withAgents(
      async (cluster, agents) => {
        const [first, second] = ranking(cluster, VIP_A);
        await waitForPlacement(cluster, agents, VIP_A, first);
        await waitForPlacement(cluster, agents, VIP_B, ranking(cluster, VIP_B)[0]);
        await killKeepalived(cluster, first);
        await waitForPlacement(cluster, agents, VIP_A, second);
        for (const node of cluster.nodes) {
          // 0, not undefined: the drop is in place and nothing was sent to the group.
          assert.equal(await multicastAdvertsDropped(node), 0, `${node.name} multicast adverts`);
        }
        await leaveAsTheirVip(cluster, cluster.nodes.filter((n) => n !== first));
        const status = await statusWhen(
          cluster,
          second,
          (s) => s.vips.every((v) => v.vrid !== undefined),
        );
        assert.deepEqual(status.vips.map((v) => [v.vip, v.vrid]), [[VIP_A, 105], [VIP_B, 106]]);
        assert.deepEqual(status.vips.map((v) => v.peers), [nodeIps, nodeIps]);
      },
      ["--vrrp-unicast-peers", nodeIps.join(","), "--vrrp-vrid-offset", "100"],
      // Adverts sent to the multicast group would be lost: each node would claim every VIP.
      dropVrrpMulticast,
    );
  },
});
