/**
 * The story `deno task sim` tells (and the end-to-end suite asserts): agents
 * on every node, pods mapped to two VIPs held by different nodes, the sources
 * the outside world sees, a failover of one VIP, a mapping removed, and
 * `delete` returning every node to its baseline ruleset.
 */
import type { Layout } from "./layout.ts";
import type { Cluster, SimNode, SimPod } from "./cluster.ts";
import { agentCommand, type AgentProcess, startAgent } from "./agents.ts";
import { checkPods, checksLegend, type PodCheck, renderChecks } from "./check.ts";
import { type VipDriver, vipHolders } from "./vip.ts";

/** The story's two VIPs and their route ids. */
export const STORY_VIPS: Readonly<Record<string, number>> = { "192.0.2.50": 5, "192.0.2.51": 6 };

/** Who is mapped where, which VIP sits where first, which VIP fails over, what gets unmapped. */
export interface StoryPlan {
  /** Pod name → VIP. Pods not listed leave as their node. */
  readonly mappings: ReadonlyMap<string, string>;
  /** VIP → index of the node that holds it first. */
  readonly holders: ReadonlyMap<string, number>;
  /** The VIP whose holder fails. */
  readonly failoverVip: string;
  /** The pod removed from the mappings at the end. */
  readonly unmap: string;
}

/**
 * The plan for a layout: pod k=1 of every node uses VIP A (held by node 1),
 * pod k=2 uses VIP B (held by node 2) except on the last node, where it stays
 * unmapped to show the difference; further pods are unmapped. A fails over;
 * the first pod of B is unmapped at the end.
 */
export function storyPlan(layout: Layout): StoryPlan {
  const [vipA, vipB] = Object.keys(STORY_VIPS);
  const last = layout.nodes.length;
  const mappings = new Map<string, string>();
  for (const pod of layout.pods) {
    if (pod.k === 1) mappings.set(pod.name, vipA);
    else if (pod.k === 2 && (pod.nodeIndex < last || last === 1)) mappings.set(pod.name, vipB);
  }
  const unmap = [...mappings].find(([, vip]) => vip === vipB)?.[0] ??
    [...mappings.keys()].at(-1)!;
  return {
    mappings,
    holders: new Map([[vipA, 1], [vipB, Math.min(2, last)]]),
    failoverVip: vipA,
    unmap,
  };
}

/** Pod → expected source: its VIP if mapped, else its node's address. */
export function expectedSources(
  pods: readonly SimPod[],
  mappings: ReadonlyMap<string, string>,
): Map<SimPod, string> {
  return new Map(pods.map((p) => [p, mappings.get(p.name) ?? p.node.ip]));
}

export interface StoryPhase {
  readonly title: string;
  readonly checks: readonly PodCheck[];
}

export interface StoryResult {
  readonly ok: boolean;
  readonly phases: readonly StoryPhase[];
  readonly failover?: { readonly vip: string; readonly from: string; readonly to: string };
  /** Per node: the ruleset after `delete` equals the one before the agents started. */
  readonly baseline: readonly { readonly node: string; readonly equal: boolean }[];
  /** Lines where the nodes' rulesets differ from the baseline (empty when equal). */
  readonly baselineDiff: readonly string[];
}

export interface StoryOptions {
  readonly driver: VipDriver;
  /** Where the story is told (console.log for `deno task sim`, nothing in tests). */
  readonly say?: (line: string) => void;
}

function mark(ok: boolean): string {
  return ok ? "✓" : "✗";
}

/** Lines present in only one of two texts, prefixed "-" (before) / "+" (after). */
export function lineDiff(before: string, after: string): string[] {
  const a = before.split("\n");
  const b = after.split("\n");
  return [
    ...a.filter((l) => !b.includes(l)).map((l) => `- ${l}`),
    ...b.filter((l) => !a.includes(l)).map((l) => `+ ${l}`),
  ];
}

/** Runs the story on a freshly built cluster; the caller destroys the cluster. */
export async function runStory(cluster: Cluster, options: StoryOptions): Promise<StoryResult> {
  const say = options.say ?? (() => {});
  const { driver } = options;
  const iface = cluster.spec.iface;
  const plan = storyPlan(cluster.layout);
  const vips = Object.keys(STORY_VIPS);
  const phases: StoryPhase[] = [];
  const check = async (title: string, mappings: ReadonlyMap<string, string>) => {
    const started = performance.now();
    const checks = await checkPods(cluster, expectedSources(cluster.pods, mappings));
    phases.push({ title, checks });
    say(`\n${title} (${Math.round(performance.now() - started)} ms)`);
    say(checksLegend(cluster));
    say(renderChecks(checks));
  };

  const baseline = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
  await cluster.writeMappings(
    Object.fromEntries(
      [...plan.mappings].map(([pod, vip]) => [cluster.pods.find((p) => p.name === pod)!.ip, vip]),
    ),
    STORY_VIPS,
  );
  const holderOf = (vip: string) => cluster.node(plan.holders.get(vip)!);
  say(
    `\nmapping ${plan.mappings.size} pods to two VIPs: ` +
      vips.map((v) => `${v} (route ${STORY_VIPS[v]}, on ${holderOf(v).name})`).join(", "),
  );
  await driver.place(new Map(vips.map((v) => [v, holderOf(v)])));

  say(`starting the agent (mod.ts run) in every node namespace`);
  const agents: AgentProcess[] = cluster.nodes.map((node) =>
    startAgent(cluster, node, driver.agentFlags)
  );
  let failover: StoryResult["failover"];
  try {
    await Promise.all(
      agents.flatMap((a) =>
        vips.map((vip) =>
          a.waitFor(new RegExp(`VIP role vip=${vip.replaceAll(".", "\\.")} `), 60_000)
        )
      ),
    );
    await check("every pod, as seen from outside:", plan.mappings);

    if (cluster.nodes.length >= 2) {
      const vip = plan.failoverVip;
      const [from] = (await vipHolders(cluster.nodes, [vip], iface)).get(vip)!;
      const since = agents.map((a) => a.lines.length);
      say(`\nfailover: ${vip} leaves ${from.name} (${driver.mode})`);
      const to = await driver.failover(vip, from);
      const role = (node: SimNode, change: string) =>
        agents[node.index - 1].waitFor(
          new RegExp(`VIP role vip=${vip.replaceAll(".", "\\.")} ${change}`),
          30_000,
          since[node.index - 1],
        );
      await Promise.all([
        role(from, "from=holder to=forwarder"),
        role(to, "from=forwarder to=holder"),
      ]);
      failover = { vip, from: from.name, to: to.name };
      say(`${vip} is now on ${to.name}; both agents switched roles`);
      await check(`after the failover of ${vip} to ${to.name}:`, plan.mappings);
    }

    const remaining = new Map([...plan.mappings].filter(([pod]) => pod !== plan.unmap));
    const since = agents.map((a) => a.lines.length);
    say(`\nremoving the mapping of ${plan.unmap}; the agents see the file change`);
    await cluster.writeMappings(
      Object.fromEntries(
        [...remaining].map(([pod, vip]) => [cluster.pods.find((p) => p.name === pod)!.ip, vip]),
      ),
      STORY_VIPS,
    );
    await Promise.all(agents.map((a, i) => a.waitFor(/pass applied/, 30_000, since[i])));
    const unmapped = cluster.pods.find((p) => p.name === plan.unmap)!;
    const [after] = await checkPods(cluster, new Map([[unmapped, unmapped.node.ip]]));
    phases.push({ title: `after removing ${plan.unmap}'s mapping`, checks: [after] });
    say(renderChecks([after]));
  } finally {
    say(`\nstopping the agents (SIGTERM: rules stay in place) and running delete on every node`);
    for (const agent of agents) await agent.stop("SIGTERM");
  }
  const deleted = await Promise.all(
    cluster.nodes.map((n) => agentCommand(cluster, n, "delete", driver.agentFlags)),
  );
  deleted.forEach((r, i) => {
    if (r.code !== 0) throw new Error(`delete on node${i + 1} failed: ${r.stderr}`);
  });
  await driver.release(vips);
  await check("after delete, every pod leaves as its node again:", new Map());

  const after = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
  const baselineResult = cluster.nodes.map((n, i) => ({
    node: n.name,
    equal: after[i] === baseline[i],
  }));
  const baselineDiff = cluster.nodes.flatMap((n, i) =>
    lineDiff(baseline[i], after[i]).map((l) => `${n.name}: ${l}`)
  );
  say(
    "rulesets (iptables-save, ip rule, every routing table, ipsets) equal the baseline: " +
      baselineResult.map((b) => `${b.node} ${mark(b.equal)}`).join("  "),
  );
  for (const line of baselineDiff) say(`  ${line}`);
  const ok = phases.every((p) => p.checks.every((c) => c.ok)) &&
    baselineResult.every((b) => b.equal);
  return { ok, phases, failover, baseline: baselineResult, baselineDiff };
}
