/**
 * End-to-end: the simulator's story as assertions, in both CNI modes, the
 * reverse-path filter on the overlay, and the `sim` CLI (up, status, exec,
 * down). Needs root; reported as skipped otherwise.
 */
import assert from "node:assert/strict";
import $ from "dax";
import { agentCommand, applyOnAllNodes, EXTERNAL, stateDirOf } from "../../sim/agents.ts";
import { checkPod, renderChecks } from "../../sim/check.ts";
import type { Cluster } from "../../sim/cluster.ts";
import { runNamespaces } from "../../sim/netns.ts";
import { runStory, type StoryResult } from "../../sim/story.ts";
import { keepalivedVips, manualVips, placeVip, type VipMode } from "../../sim/vip.ts";
import { e2e, withCluster } from "./cluster.ts";
import { overUnicast } from "../../sim/placement.ts";

const VIP_A = "192.0.2.50";
const VIP_B = "192.0.2.51";

function explain(result: StoryResult): string {
  return [
    ...result.phases.map((p) => `${p.title}\n${renderChecks(p.checks)}`),
    ...result.baselineDiff,
  ].join("\n");
}

/** The story's assertions, whatever the CNI and the VIP mode. */
async function assertStory(
  cluster: Cluster,
  mode: VipMode,
  vrrp: "multicast" | "unicast" = "multicast",
) {
  let driver = mode === "manual"
    ? manualVips(cluster.nodes, cluster.spec.iface)
    : keepalivedVips(cluster.nodes, cluster.spec.iface, (n) => stateDirOf(cluster, n));
  // A LAN without multicast: VRRP adverts and the NAT state sync (FTFW per peer) by unicast.
  if (vrrp === "unicast") driver = await overUnicast(cluster, driver);
  const result = await runStory(cluster, { driver });
  assert.ok(result.ok, explain(result));
  assert.deepEqual(result.phases.map((p) => p.checks.length), [6, 6, 1, 6]);
  const [initial, afterFailover, unmapped, afterDelete] = result.phases;
  const expected = (phase: typeof initial) =>
    Object.fromEntries(phase.checks.map((c) => [c.pod, c.expected]));
  const mapped = {
    "pod1-1": VIP_A,
    "pod1-2": VIP_B,
    "pod2-1": VIP_A,
    "pod2-2": VIP_B,
    "pod3-1": VIP_A,
    "pod3-2": cluster.node(3).ip,
  };
  assert.deepEqual(expected(initial), mapped);
  assert.deepEqual(expected(afterFailover), mapped);
  // keepalived's ranking for .50 is node2, node3, node1: A fails over from node2 to node3
  // while pod1-1 (node1, neither side) streams; nothing may leave with another source.
  const failover = result.failover!;
  assert.deepEqual(
    [failover.vip, failover.from, failover.to, failover.streamer],
    [VIP_A, "node2", "node3", "pod1-1"],
  );
  assert.equal(failover.wrongSource, 0);
  assert.ok(failover.gapMs !== undefined, "the stream resumed through the new holder");
  // pod1-1 and pod3-1 (the new holder's own pod) keep 5 connections each through it (issue 17).
  const c = failover.connections!;
  assert.deepEqual(
    [c.survived, c.total, c.resets, c.wrongSource],
    [10, 10, 0, 0],
    `established connections: ${JSON.stringify(c)}`,
  );
  assert.deepEqual(unmapped.checks.map((c) => [c.pod, c.expected]), [[
    "pod1-2",
    cluster.node(1).ip,
  ]]);
  assert.deepEqual(
    expected(afterDelete),
    Object.fromEntries(cluster.pods.map((p) => [p.name, p.node.ip])),
  );
  // Every observation is in the table: two outside hosts, three protocols, the service.
  for (const check of result.phases.flatMap((p) => p.checks)) {
    assert.deepEqual(Object.keys(check.outside).sort(), ["lanhost", "outside"]);
    assert.equal(check.service.tcp, check.podIp);
  }
  assert.deepEqual(result.baseline.map((b) => b.equal), [true, true, true]);
}

Deno.test({
  name:
    "e2e sim: the story holds with host-gw routes and keepalived (TCP, UDP, ICMP, service, failover under a stream, delete)",
  ...e2e,
  fn: () => withCluster((c) => assertStory(c, "keepalived"), { cni: "host-gw" }),
});

Deno.test({
  name:
    "e2e sim: the story holds on a vxlan overlay with strict rp_filter, keepalived and an interface named bond0",
  ...e2e,
  fn: () =>
    withCluster((c) => assertStory(c, "keepalived"), { cni: "vxlan", iface: "bond0", rpFilter: 1 }),
});

Deno.test({
  name:
    "e2e sim: the story holds on the nftables backend (host-gw, keepalived; the CNI's iptables masquerade runs after our table)",
  ...e2e,
  fn: () =>
    withCluster((c) => assertStory(c, "keepalived"), { cni: "host-gw", backend: "nftables" }),
});

Deno.test({
  name:
    "e2e sim: established connections survive the failover with VRRP and the NAT state sync by unicast peers",
  ...e2e,
  fn: () => withCluster((c) => assertStory(c, "keepalived", "unicast"), { cni: "host-gw" }),
});

Deno.test({
  name: "e2e sim: the story holds on a vxlan overlay with VIPs moved by hand",
  ...e2e,
  fn: () => withCluster((c) => assertStory(c, "manual"), { cni: "vxlan" }),
});

Deno.test({
  name:
    "e2e sim: on vxlan, a strict overlay device drops the holder's replies until the agent loosens it",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const pod = cluster.pod(2, 1);
      const node2 = cluster.node(2);
      await cluster.writeMappings({ [pod.ip]: VIP_A }, { [VIP_A]: 5 });
      await placeVip(cluster.nodes, VIP_A, cluster.node(1), cluster.spec.iface);
      await applyOnAllNodes(cluster, EXTERNAL);
      const works = await checkPod(cluster, pod, VIP_A);
      assert.ok(works.ok, renderChecks([works]));

      // Undo the agent's fix on node2's overlay device: the requests still leave as
      // the VIP, but the replies, which come back over vxlan0, are dropped.
      await node2.ns.sysctl("net.ipv4.conf.vxlan0.rp_filter=1");
      const broken = await checkPod(cluster, pod, VIP_A);
      assert.equal(broken.ok, false);
      assert.equal(broken.outside.outside.icmp, `${VIP_A} (no reply)`);
      assert.notEqual(broken.outside.outside.tcp, VIP_A);

      const plan = await agentCommand(cluster, node2, "plan", EXTERNAL);
      assert.match(
        plan.stdout,
        /loose reverse-path filter[^\n]*\n[^\n]*\nnet\.ipv4\.conf\.vxlan0\.rp_filter=2/,
      );
      assert.doesNotMatch(plan.stdout, /cni0/, "the pod bridge keeps its anti-spoofing filter");
      assert.equal((await agentCommand(cluster, node2, "run", EXTERNAL)).code, 0);
      const fixed = await checkPod(cluster, pod, VIP_A);
      assert.ok(fixed.ok, renderChecks([fixed]));
    }, { cni: "vxlan" }),
});

const SIM = new URL("../../sim/main.ts", import.meta.url).pathname;

Deno.test({
  name: "e2e sim CLI: up, status, exec and down find the same run and leave nothing behind",
  ...e2e,
  fn: async () => {
    const stateDir = await Deno.makeTempDir({ prefix: "ke-sim-state-" });
    const sim = (...args: string[]) =>
      $`${Deno.execPath()} run -A ${SIM} ${args}`.env({ KE_SIM_STATE_DIR: stateDir })
        .stdout("piped").stderr("piped").noThrow().timeout(120_000);
    let runId: string | undefined;
    try {
      const up = await sim("up", "--nodes", "2", "--pods", "1", "--cni", "vxlan", "-i", "ens3");
      runId = /run (ke[0-9a-f]{6}) is up/.exec(up.stdout)?.[1];
      assert.equal(up.code, 0, up.stdout + up.stderr);
      assert.ok(runId, up.stdout);
      const workDir = /(\S+)\/podip_vip_mapping/.exec(up.stdout)?.[1];
      assert.ok(workDir && Deno.statSync(workDir).isDirectory, up.stdout);
      assert.match(
        up.stdout,
        new RegExp(`${runId}-n2p1\\s+pod2-1\\s+pod 10\\.244\\.2\\.11 on node2`),
      );

      const status = await sim("status");
      assert.equal(status.code, 0, status.stdout + status.stderr);
      // keepalived (the default VIP mode) puts .51 on node1 and .50 on node2.
      assert.match(
        status.stdout,
        /node1\s+\S+-n1\s+192\.0\.2\.11\s+192\.0\.2\.51\s+running \(pid \d+\)/,
      );
      assert.match(status.stdout, /node2\s+\S+-n2\s+192\.0\.2\.12\s+192\.0\.2\.50\s+running/);
      assert.match(
        status.stdout,
        /pod2-1\s+node2\s+192\.0\.2\.50(\s+192\.0\.2\.50){3}\s+10\.244\.2\.11\s+✓/,
      );

      const exec = await sim("exec", "pod2-1", "ip", "-4", "-o", "addr", "show", "dev", "eth0");
      assert.equal(exec.code, 0, exec.stderr);
      assert.match(exec.stdout, /inet 10\.244\.2\.11\/24/);
      assert.equal((await sim("exec", "node1", "sh", "-c", "exit 7")).code, 7);
      const unknown = await sim("exec", "node9", "true");
      assert.equal(unknown.code, 2);
      assert.match(unknown.stderr, /no namespace "node9"/);

      const down = await sim("down");
      assert.equal(down.code, 0, down.stderr);
      assert.match(down.stdout, new RegExp(`run ${runId}: removed 9 namespace\\(s\\)`));
      assert.deepEqual(await runNamespaces(runId), []);
      assert.deepEqual([...Deno.readDirSync(stateDir)], []);
      assert.throws(() => Deno.statSync(workDir), Deno.errors.NotFound);
      const again = await sim("status");
      assert.equal(again.code, 1);
      assert.match(again.stderr, /no simulated cluster is up/);
    } finally {
      if (runId) await sim("down", "--run", runId);
      await Deno.remove(stateDir, { recursive: true });
    }
  },
});
