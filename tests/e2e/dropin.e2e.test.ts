/**
 * Drop-in: the command lines that kube-egress (egress.sh 0.4, the multi-VIP
 * version egress-mapper drove) documented, unchanged, on our program, with
 * the old stack's keepalived-vip placing the VIPs (sim/keepalived_vip.ts).
 * The old contract: each VIP is placed by something else on exactly one node;
 * egress.sh only followed. Sources of the command lines: its README (usage,
 * `--help`), its daemonset.yaml (`args`), egress-mapper's generated DaemonSet
 * (getArgsForKubeEgressDS), and getopt's forms (short flags with attached
 * values, clusters, abbreviations, empty values). They are given as the
 * image's entrypoint (mod.ts) gets a DaemonSet's `args`: with no command.
 */
import assert from "node:assert/strict";
import {
  agentCommand,
  type AgentProcess,
  modCommandLine,
  nodeEnvironment,
  spawnAgent,
  stateDirOf,
} from "../../sim/agents.ts";
import { type Cluster, OUTSIDE_IP, type SimNode } from "../../sim/cluster.ts";
import { KeepalivedVip } from "../../sim/keepalived_vip.ts";
import { POD_CIDR, SERVICE_CIDR } from "../../sim/layout.ts";
import { egressMapperArgs, oldDaemonSetArgs } from "../../sim/old_stack.ts";
import { sourceSeenRetry } from "../../sim/probe.ts";
import { vipHolders } from "../../sim/vip.ts";
import { e2e, withCluster } from "./cluster.ts";

const VIP_A = "192.0.2.50";
const VIP_B = "192.0.2.51";
const vipOf = (podName: string) => (podName.endsWith("-1") ? VIP_A : VIP_B);

/** Runs a command line once in a node's namespace, as that node's agent container would. */
function once(cluster: Cluster, node: SimNode, args: readonly string[]) {
  return node.ns.exec([...nodeEnvironment(cluster, node), ...modCommandLine(args)], {
    timeoutMs: 60_000,
  });
}

/** Waits (bounded) until exactly one node holds every VIP; returns it (keepalived-vip puts all on one). */
async function singleHolder(cluster: Cluster, vips: readonly string[], not?: SimNode) {
  const deadline = performance.now() + 30_000;
  let last = "";
  while (performance.now() < deadline) {
    const holders = await vipHolders(cluster.nodes, vips, cluster.spec.iface);
    const all = [...holders.values()];
    if (all.every((n) => n.length === 1 && n[0] === all[0][0] && n[0] !== not)) return all[0][0];
    last = [...holders].map(([v, n]) => `${v}: ${n.map((x) => x.name).join(",")}`).join("; ");
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`no single holder of ${vips.join(", ")} within 30 s: ${last}`);
}

/** Every pod's TCP and UDP traffic leaves as its VIP. */
async function leaveAsTheirVip(cluster: Cluster, when: string) {
  for (const pod of cluster.pods) {
    for (const proto of ["tcp", "udp"] as const) {
      assert.equal(
        await sourceSeenRetry(pod.ns, OUTSIDE_IP, proto),
        vipOf(pod.name),
        `${when}: ${pod.name} ${proto}`,
      );
    }
  }
}

/** No agent started a keepalived: none logged it, no configuration was written. */
async function placedNothing(cluster: Cluster, logs: readonly string[]) {
  assert.ok(!logs.some((l) => /keepalived/.test(l)), logs.join("\n"));
  for (const node of cluster.nodes) {
    const conf = await Deno.stat(`${stateDirOf(cluster, node)}/keepalived.conf`).catch(() => null);
    assert.equal(conf, null, `${node.name}: no keepalived.conf`);
  }
}

Deno.test({
  name:
    "e2e drop-in: egress.sh's documented command lines work unchanged next to keepalived-vip; the agent places no VIP",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const [node1, node2, node3] = cluster.nodes;
      const { iface } = cluster.spec;
      const [pv, vr] = [cluster.podVipDir, cluster.vipRouteDir];
      await cluster.writeMappings(
        Object.fromEntries(cluster.pods.map((p) => [p.ip, vipOf(p.name)])),
        { [VIP_A]: 5, [VIP_B]: 6 },
      );
      const old = new KeepalivedVip(cluster, [VIP_A, VIP_B]);
      const agents: AgentProcess[] = [];
      try {
        await old.start();
        const holder = await singleHolder(cluster, [VIP_A, VIP_B]);
        const baseline = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));

        // Applied once and exited, as egress.sh without -u: the form (with `run`),
        // egress.sh's short flags with attached values, and abbreviations with an empty -u.
        const forms: [SimNode, string[]][] = [
          [node1, ["run", "-i", iface, "-p", POD_CIDR, "-v", pv, "-r", vr]],
          [node2, [`-i${iface}`, `-p${POD_CIDR}`, `-s${SERVICE_CIDR}`, `-v${pv}`, `-r${vr}`]],
          [node3, [
            "--inter",
            iface,
            "--pod-sub",
            POD_CIDR,
            "--podip",
            pv,
            "--vip-r",
            vr,
            "-u",
            "",
          ]],
        ];
        const logs: string[] = [];
        for (const [node, args] of forms) {
          const r = await once(cluster, node, args);
          assert.equal(r.code, 0, `${node.name} ${args.join(" ")}: ${r.stderr}`);
          assert.match(r.stderr, /pass applied/, args.join(" "));
          logs.push(r.stderr);
        }
        await placedNothing(cluster, logs);
        await leaveAsTheirVip(cluster, "one-shot passes, keepalived-vip placing");

        // -d / --delete, alone and in a cluster: every node as it was.
        const deletes: [SimNode, string[]][] = [
          [node1, ["-d", `-i${iface}`, `-p${POD_CIDR}`]],
          [node2, ["--delete", "--interface", iface, "--pod-subnet", POD_CIDR]],
          [node3, ["-di", iface, "-p", POD_CIDR]],
        ];
        for (const [node, args] of deletes) {
          const r = await once(cluster, node, args);
          assert.equal(r.code, 0, `${node.name} ${args.join(" ")}: ${r.stderr}`);
        }
        const after = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
        cluster.nodes.forEach((n, i) => assert.equal(after[i], baseline[i], `${n.name} after -d`));

        // -h, as `docker run ssheehy/kube-egress --help` in the old README.
        for (const flag of ["-h", "--help"]) {
          const help = await once(cluster, node1, [flag]);
          assert.equal(help.code, 0, help.stderr);
          for (const text of ["-u, --update-interval", "-d, --delete", "Defaults, as egress.sh"]) {
            assert.ok(help.stdout.includes(text), `${flag} shows ${text}`);
          }
        }

        // Running agents: kube-egress's daemonset.yaml args, egress.sh's short flags with
        // attached values (-u5), and the args of egress-mapper's DaemonSet.
        const running = new Map<SimNode, string[]>([
          [node1, oldDaemonSetArgs(cluster)],
          [node2, [
            "-u5",
            `-i${iface}`,
            `-p${POD_CIDR}`,
            `-s${SERVICE_CIDR}`,
            `-v${pv}`,
            `-r${vr}`,
          ]],
          [node3, egressMapperArgs(cluster)],
        ]);
        for (const [node, args] of running) {
          agents.push(
            spawnAgent(node, [...nodeEnvironment(cluster, node), ...modCommandLine(args)]),
          );
        }
        for (const agent of agents) await agent.waitFor(/pass applied/, 60_000);
        await leaveAsTheirVip(cluster, "agents, keepalived-vip placing");

        // keepalived-vip fails over (its holder's pod is deleted): the agents follow.
        await old.stop([holder]);
        const next = await singleHolder(cluster, [VIP_A, VIP_B], holder);
        await old.start([holder]); // back as a backup: keepalived-vip does not preempt
        await leaveAsTheirVip(cluster, `keepalived-vip moved the VIPs to ${next.name}`);
        await placedNothing(cluster, agents.flatMap((a) => a.lines));

        // SIGTERM leaves the rules in place (egress.sh removed them: the one change on purpose).
        for (const agent of agents.splice(0)) assert.equal(await agent.stop(), 0);
        for (const node of cluster.nodes) {
          const plan = await agentCommand(cluster, node, "plan");
          assert.match(plan.stdout, /no changes/, `${node.name} kept its rules`);
        }
      } finally {
        for (const agent of agents) await agent.stop().catch(() => {});
        await old.stop();
      }
    }, { backend: "iptables" }), // egress.sh command lines carry no --backend: auto picks iptables here
});
