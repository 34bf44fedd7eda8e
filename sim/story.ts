/**
 * The story `deno task sim` tells (and the end-to-end suite asserts): agents
 * on every node, pods mapped to two VIPs held by different nodes, the sources
 * the outside world sees, a failover of one VIP, a mapping removed, and
 * `delete` returning every node to its baseline ruleset.
 */
import { LAN_PREFIX, type Layout } from "./layout.ts";
import { rankNodes, waitForPlacement } from "./placement.ts";
import { measureFailover, startCapture } from "./stream.ts";
import {
  type ConnectionsSummary,
  ECHO_PORT,
  startConnections,
  startEchoServer,
  storyConnectionsLine,
  summarizeConnections,
  wrongSourcePackets,
} from "./connections.ts";
import type { Cluster, SimNode, SimPod } from "./cluster.ts";
import { agentCommand, type AgentProcess, startAgent } from "./agents.ts";
import { checkPods, checksLegend, type PodCheck, renderChecks } from "./check.ts";
import type { VipDriver } from "./vip.ts";
import { analyzeDefence, type DefenceFigures, Rogue, ROGUE_IP } from "./rogue.ts";
import { errorMessage } from "../core/errors.ts";
import { GUARD_FAMILY, GUARD_TABLE, parseGuard } from "../core/guard.ts";

/** Long-lived connections each of the failing VIP's pods on the surviving nodes keeps open. */
const CONNECTIONS_PER_POD = 5;

/**
 * What every agent of the story adds to its VIP driver's flags: NAT state
 * replication, so the established connections survive the failover.
 */
export const STORY_AGENT_FLAGS: readonly string[] = ["--conntrack-sync", "on"];

/** VIPs the story may use: 192.0.2.50-59, route id = last octet - 45 (5-14). */
const CANDIDATE_VIPS = Array.from({ length: 10 }, (_, i) => `${LAN_PREFIX}.${50 + i}`);

function routeIdOf(vip: string): number {
  return Number(vip.split(".")[3]) - 45;
}

/** Who is mapped where, which VIP sits where first, which VIP fails over, what gets unmapped. */
export interface StoryPlan {
  /** The two VIPs (A, then B) and their route ids. */
  readonly vips: Readonly<Record<string, number>>;
  /** Pod name → VIP. Pods not listed leave as their node. */
  readonly mappings: ReadonlyMap<string, string>;
  /** VIP → index of the node that holds it first (keepalived's choice, also used in manual mode). */
  readonly holders: ReadonlyMap<string, number>;
  /** The VIP whose holder fails. */
  readonly failoverVip: string;
  /** Index of the node that takes it over (the next in its ranking); undefined with one node. */
  readonly failoverTo?: number;
  /** A pod mapped to the failing VIP on a node that neither loses nor gains it, if there is one. */
  readonly streamer?: string;
  /** The pod removed from the mappings at the end. */
  readonly unmap: string;
}

/**
 * The plan for a layout: VIP A is 192.0.2.50, VIP B the next candidate that
 * keepalived puts on another node than A (so the two sit on different nodes
 * in both VIP modes). Pod k=1 of every node uses A, pod k=2 uses B except on
 * the last node, where it stays unmapped to show the difference; further pods
 * are unmapped. A fails over to the next node of its ranking; the first pod
 * of B is unmapped at the end.
 */
export function storyPlan(layout: Layout): StoryPlan {
  const nodes = layout.nodes;
  const vipA = CANDIDATE_VIPS[0];
  const rankA = rankNodes(vipA, nodes);
  const vipB = CANDIDATE_VIPS.slice(1).find((v) =>
    nodes.length < 2 || rankNodes(v, nodes)[0] !== rankA[0]
  )!;
  const last = nodes.length;
  const mappings = new Map<string, string>();
  for (const pod of layout.pods) {
    if (pod.k === 1) mappings.set(pod.name, vipA);
    else if (pod.k === 2 && (pod.nodeIndex < last || last === 1)) mappings.set(pod.name, vipB);
  }
  const unmap = [...mappings].find(([, vip]) => vip === vipB)?.[0] ??
    [...mappings.keys()].at(-1)!;
  const holderA = rankA[0].index;
  const failoverTo = rankA[1]?.index;
  const onA = layout.pods.filter((p) => mappings.get(p.name) === vipA);
  const streamer = onA.find((p) => p.nodeIndex !== holderA && p.nodeIndex !== failoverTo) ??
    onA.find((p) => p.nodeIndex !== holderA);
  return {
    vips: { [vipA]: routeIdOf(vipA), [vipB]: routeIdOf(vipB) },
    mappings,
    holders: new Map([[vipA, holderA], [vipB, rankNodes(vipB, nodes)[0].index]]),
    failoverVip: vipA,
    failoverTo,
    streamer: streamer?.name,
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
  /**
   * Shown, not counted: the replies to the VIP while a rogue floods the LAN
   * with gratuitous ARPs follow whichever ARP the router heard last (README,
   * "Only nodes attract egress traffic").
   */
  readonly informational?: boolean;
}

/** The failover, and what the streaming pod's traffic saw during it. */
export interface StoryFailover {
  readonly vip: string;
  readonly from: string;
  readonly to: string;
  /** The pod that streamed while the VIP moved (none when every mapped pod sits on a moving node). */
  readonly streamer?: string;
  /** Last packet via the old holder to first via the new one (ms); undefined if it never resumed. */
  readonly gapMs?: number;
  /** Packets that reached the outside host with another source than the VIP (wire capture). */
  readonly wrongSource?: number;
  /** Those packets, each as "udp 192.0.2.12:4000 > 203.0.113.10:7000 at 120 ms" (from the fault). */
  readonly wrongPackets?: readonly string[];
  /** The stream's UDP datagrams that never arrived. */
  readonly udpLost?: number;
  /** Long-lived TCP connections of the VIP's pods on the other nodes through the failover. */
  readonly connections?: ConnectionsSummary;
  /** True when traffic resumed, nothing left with a wrong source and every connection lasted. */
  readonly ok: boolean;
}

/** What the rogue got (`sim --rogue`). */
export interface StoryRogue {
  /** Packets of mapped pods that reached the rogue (target 0). */
  readonly attracted: number;
  /** VRRP adverts the nodes' guards refused. */
  readonly advertsRefused: number;
  /** Alerts the agents raised (each a log line, a metric and, with Kubernetes, an Event). */
  readonly alerts: number;
  /** The holders' answers to the rogue's claims, as the LAN host saw them. */
  readonly defence?: DefenceFigures;
  /** The pod checks while the rogue was present that got their replies, of all of them. */
  readonly repliedChecks: readonly [number, number];
  readonly ok: boolean;
}

export interface StoryResult {
  readonly ok: boolean;
  readonly rogue?: StoryRogue;
  readonly phases: readonly StoryPhase[];
  readonly failover?: StoryFailover;
  /** Per node: the ruleset after `delete` equals the one before the agents started. */
  readonly baseline: readonly { readonly node: string; readonly equal: boolean }[];
  /** Lines where the nodes' rulesets differ from the baseline (empty when equal). */
  readonly baselineDiff: readonly string[];
}

export interface StoryOptions {
  readonly driver: VipDriver;
  /** Where the story is told (console.log for `deno task sim`, nothing in tests). */
  readonly say?: (line: string) => void;
  /** Add a rogue LAN host after the first check, present through the failover (sim/rogue.ts). */
  readonly rogue?: boolean;
}

/** The rogue line, exactly as issue 15 asks for it. */
export function rogueLine(r: Pick<StoryRogue, "attracted" | "advertsRefused" | "alerts">): string {
  return `rogue: packets attracted ${r.attracted}, adverts refused ${r.advertsRefused}, alerts ${r.alerts}`;
}

/** Adverts the node's guard refused so far (0 without a guard table). */
async function advertsRefused(node: SimNode): Promise<number> {
  const r = await node.ns.exec(["nft", "-j", "list", "table", GUARD_FAMILY, GUARD_TABLE]);
  return r.code === 0 ? (parseGuard(r.stdout)?.counters.adverts_refused ?? 0) : 0;
}

/** Where the agents send VRRP adverts by unicast (none: multicast). */
function unicastPeersOf(flags: readonly string[]): string[] | undefined {
  const i = flags.indexOf("--vrrp-unicast-peers");
  return i >= 0 ? flags[i + 1].split(",") : undefined;
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

/** One node's rulesets compared with its baseline. */
export interface BaselineResult {
  readonly node: string;
  readonly equal: boolean;
}

/**
 * Reads every node's rulesets again and compares each with its baseline:
 * per node equal or not, and the differing lines prefixed with the node's name.
 */
export async function compareWithBaseline(
  cluster: Cluster,
  baseline: readonly string[],
): Promise<{ result: BaselineResult[]; diff: string[] }> {
  const after = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
  return {
    result: cluster.nodes.map((n, i) => ({ node: n.name, equal: after[i] === baseline[i] })),
    diff: cluster.nodes.flatMap((n, i) =>
      lineDiff(baseline[i], after[i]).map((l) => `${n.name}: ${l}`)
    ),
  };
}

/** Waits (bounded) until each VIP sits on its holder alone and every agent agrees. */
function settled(
  cluster: Cluster,
  agents: readonly AgentProcess[],
  holders: ReadonlyMap<string, SimNode>,
  timeoutMs = 30_000,
): Promise<void[]> {
  return Promise.all(
    [...holders].map(([vip, node]) => waitForPlacement(cluster, agents, vip, node, timeoutMs)),
  );
}

/** Pod name → VIP, as the mapping files want it: pod IP → VIP. */
export function mappingsByIp(
  cluster: Cluster,
  mappings: ReadonlyMap<string, string>,
): Record<string, string> {
  return Object.fromEntries(
    [...mappings].map(([pod, vip]) => [cluster.pods.find((p) => p.name === pod)!.ip, vip]),
  );
}

/** Runs the story on a freshly built cluster; the caller destroys the cluster. */
export async function runStory(cluster: Cluster, options: StoryOptions): Promise<StoryResult> {
  const say = options.say ?? (() => {});
  const { driver } = options;
  const plan = storyPlan(cluster.layout);
  const vips = Object.keys(plan.vips);
  const phases: StoryPhase[] = [];
  const check = async (
    title: string,
    mappings: ReadonlyMap<string, string>,
    informational = false,
  ) => {
    const started = performance.now();
    const checks = await checkPods(cluster, expectedSources(cluster.pods, mappings));
    phases.push({ title, checks, ...(informational ? { informational } : {}) });
    say(`\n${title} (${Math.round(performance.now() - started)} ms)`);
    say(checksLegend(cluster));
    say(renderChecks(checks));
  };

  const baseline = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
  const agentFlags = [...driver.agentFlags, ...STORY_AGENT_FLAGS];
  say(
    `\nstarting the agent (mod.ts run ${agentFlags.join(" ")}) ` +
      (cluster.agents ? cluster.agents.description : "in every node namespace"),
  );
  const agents: AgentProcess[] = cluster.nodes.map((node) => startAgent(cluster, node, agentFlags));
  let failover: StoryResult["failover"];
  let holders: Map<string, SimNode>;
  let rogue: Rogue | undefined;
  let rogueResult: StoryRogue | undefined;
  let defenceFigures: DefenceFigures | undefined;
  try {
    // The mappings appear once every agent runs, so that every keepalived starts
    // its VRRP instances at the same moment and the elected holders are the
    // highest priorities at once (a late node would wait out the preempt delay).
    await Promise.all(agents.map((a) => a.waitFor(/agent running/, 60_000)));
    await cluster.writeMappings(mappingsByIp(cluster, plan.mappings), plan.vips);
    say(
      `mapping ${plan.mappings.size} pods to two VIPs: ` +
        vips.map((v) =>
          `${v} (route ${plan.vips[v]}: ${
            [...plan.mappings].filter(([, x]) => x === v).map(([p]) => p).join(", ")
          })`
        ).join(", "),
    );
    const started = performance.now();
    holders = await driver.settle(
      new Map(vips.map((v) => [v, cluster.node(plan.holders.get(v)!)])),
    );
    await settled(cluster, agents, holders);
    say(
      (driver.mode === "keepalived" ? "keepalived elected: " : "placed by hand: ") +
        vips.map((v) => `${v} on ${holders.get(v)!.name}`).join(", ") +
        ` (${((performance.now() - started) / 1000).toFixed(1)} s after the mappings appeared)`,
    );
    await check("every pod, as seen from outside:", plan.mappings);

    /** Stops the rogue, reports what it got, and waits 2 s: the next check must find every pod well. */
    const finishRogue = async () => {
      if (!rogue || rogueResult) return;
      const attracted = await rogue.attracted();
      say(`\nthe rogue stops (keepalived killed, no priority-0 advert, unplugged)`);
      await rogue.stop();
      const refused = (await Promise.all(cluster.nodes.map(advertsRefused)))
        .reduce((a, b) => a + b, 0);
      const alerts = agents.flatMap((a) => a.lines).filter((l) => /guard: /.test(l)).length;
      const during = phases.filter((p) => p.informational).flatMap((p) => p.checks);
      rogueResult = {
        attracted,
        advertsRefused: refused,
        alerts,
        repliedChecks: [during.filter((c) => c.ok).length, during.length],
        ...(defenceFigures ? { defence: defenceFigures } : {}),
        ok: attracted === 0 && refused > 0 && alerts > 0,
      };
      say(rogueLine(rogueResult));
      await new Promise((r) => setTimeout(r, 2000));
    };

    if (options.rogue) {
      say(
        `\na rogue joins the LAN (${ROGUE_IP}, no node): VRRP priority 255 for the router ids of ` +
          `${vips.join(" and ")}${
            unicastPeersOf(driver.agentFlags) ? " (unicast to every node)" : ""
          }, ARP answers for them and a gratuitous ARP for each every 300 ms`,
      );
      rogue = await Rogue.start(cluster, {
        vips: plan.vips,
        unicastPeers: unicastPeersOf(driver.agentFlags),
      });
      // The LAN host's view of the claims and the holders' answers, meanwhile.
      const dump = cluster.lanHost.ns.spawn(
        ["timeout", "2", "tcpdump", "-l", "-n", "-e", "-tt", "-i", "eth0", "arp"],
        { stdout: "piped", stderr: "null" },
      );
      const dumped = new Response(dump.stdout).text();
      await new Promise((r) => setTimeout(r, 2000));
      const defence = analyzeDefence((await dumped).split("\n"), await rogue.mac(), vips);
      defenceFigures = defence;
      const d = defence.delaysMs;
      say(
        `on the LAN for 2 s: the rogue claimed the VIPs ${defence.claims} times; the holders ` +
          `re-announced after ${
            d.length
              ? `${d[0]}/${d[Math.floor(d.length / 2)]}/${d.at(-1)} ms (min/median/max)`
              : "–"
          }, ${defence.claims - d.length} claim(s) left unanswered (rate bound)`,
      );
      const held = await settled(cluster, agents, holders, 5_000).then(
        () => true,
        (error) => {
          say(`the VIPs left their holders: ${errorMessage(error)}`);
          return false;
        },
      );
      await check(
        "every pod, with the rogue on the LAN for 2 s (not counted: the replies follow the " +
          "router's last ARP, the holders re-announce):",
        plan.mappings,
        true,
      );
      if (!held) {
        // The rogue won VRRP: end it now, so that the failover below has holders again.
        await finishRogue();
        rogueResult = { ...rogueResult!, ok: false };
        await settled(cluster, agents, holders);
      }
    }

    if (plan.failoverTo !== undefined) {
      const vip = plan.failoverVip;
      const from = holders.get(vip)!;
      say(
        `\nfailover: ` +
          (driver.mode === "keepalived"
            ? `stopping keepalived on ${from.name} (SIGTERM), the holder of ${vip}`
            : `moving ${vip} from ${from.name} to ${cluster.node(plan.failoverTo).name}`),
      );
      const target = cluster.node(plan.failoverTo);
      let to = target;
      const fault = async () => (to = await driver.failover(vip, from, target));
      const streamer = cluster.pods.find((p) => p.name === plan.streamer);
      if (streamer) {
        // The VIP's pods on the nodes that survive the fault keep connections open through it;
        // not while a rogue is there: it takes the replies to the VIP (and resets them), which
        // the guard reports but cannot stop (README, the guard).
        const rogueThere = rogue !== undefined && rogueResult === undefined;
        const connectors = rogueThere
          ? []
          : cluster.pods.filter((p) =>
            plan.mappings.get(p.name) === vip && p.node.index !== from.index
          );
        say(
          `while ${streamer.name} on ${streamer.node.name} streams to ${cluster.outside.ip} ` +
            `(UDP every 10 ms on one flow, a new TCP connection every 50 ms)` +
            (rogueThere
              ? " (no long-lived connections: the rogue takes the replies to the VIP)"
              : `, and ${
                connectors.map((p) => p.name).join(" and ")
              } keep ${CONNECTIONS_PER_POD} ` +
                `established connections each (8 bytes every 10 ms, echoed)`),
        );
        const echo = await startEchoServer(cluster.outside.ns);
        const capture = await startCapture(cluster.outside.ns, { ports: [ECHO_PORT] });
        const conns = await Promise.all(
          connectors.map((p) => startConnections(p.ns, { count: CONNECTIONS_PER_POD })),
        );
        const run = await measureFailover(cluster.outside, {
          vip,
          senders: [{ tag: streamer.name, ns: streamer.ns }],
          fault,
        });
        const results = (await Promise.all(conns.map((c) => c.stop()))).flat();
        const wrong = wrongSourcePackets(await capture.stop(), vip) +
          echo.accepted.filter((src) => src !== vip).length;
        await echo.stop();
        const connections = summarizeConnections(results, wrong);
        const connectionsOk = connections.survived === connections.total &&
          connections.resets === 0 && connections.wrongSource === 0;
        const { analysis } = run.streams[0];
        failover = {
          vip,
          from: from.name,
          to: to.name,
          streamer: streamer.name,
          gapMs: run.gapMs,
          wrongSource: run.wrongSource,
          wrongPackets: run.wire.packets.map(({ proto, src, sport, dst, dport, flags, t }) =>
            `${proto} ${src}:${sport} > ${dst}:${dport}${flags ? ` [${flags}]` : ""} ` +
            `at ${t - run.faultAt} ms`
          ),
          udpLost: analysis.udpLost,
          connections,
          ok: run.gapMs !== undefined && run.wrongSource === 0 && connectionsOk,
        };
        say(
          `gap: ${run.gapMs === undefined ? "traffic never resumed" : `${run.gapMs} ms`} from ` +
            `the last packet via ${from.name} to the first via ${to.name}; ` +
            `${analysis.received.udp} UDP datagrams and ${analysis.received.tcp} TCP connections ` +
            `arrived, ${analysis.udpLost} datagrams lost; packets with a wrong source: ` +
            `${run.wrongSource} ${mark(run.gapMs !== undefined && run.wrongSource === 0)}`,
        );
        if (!rogueThere) {
          say(
            storyConnectionsLine(connections),
          );
          say(
            `  resets ${connections.resets}, packets with a wrong source ` +
              `${connections.wrongSource} ${mark(connectionsOk)}`,
          );
        }
      } else {
        await fault();
        failover = { vip, from: from.name, to: to.name, ok: true };
      }
      holders = new Map([...holders, [vip, to]]);
      await settled(cluster, agents, holders);
      say(`${vip} is now on ${to.name}; every agent follows`);
      const rogueStops = rogue !== undefined && rogueResult === undefined;
      await finishRogue();
      await check(
        `after the failover of ${vip} to ${to.name}${
          rogueStops ? ", 2 s after the rogue stopped" : ""
        }:`,
        plan.mappings,
      );
      const after = await driver.afterFailover(vip, from);
      if (after) {
        holders = new Map([...holders, [vip, from]]);
        await settled(cluster, agents, holders);
        say(after);
      }
    }

    if (plan.failoverTo === undefined) say("\n(one node: there is no other node to fail over to)");

    if (rogue && !rogueResult) {
      await finishRogue();
      await check("every pod, 2 s after the rogue stopped:", plan.mappings);
    }

    const remaining = new Map([...plan.mappings].filter(([pod]) => pod !== plan.unmap));
    const since = agents.map((a) => a.lines.length);
    say(`\nremoving the mapping of ${plan.unmap}; the agents see the file change`);
    await cluster.writeMappings(mappingsByIp(cluster, remaining), plan.vips);
    await Promise.all(agents.map((a, i) => a.waitFor(/pass applied/, 30_000, since[i])));
    const unmapped = cluster.pods.find((p) => p.name === plan.unmap)!;
    const [after] = await checkPods(cluster, new Map([[unmapped, unmapped.node.ip]]));
    phases.push({ title: `after removing ${plan.unmap}'s mapping`, checks: [after] });
    say(renderChecks([after]));
  } finally {
    await rogue?.stop();
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

  const { result: baselineResult, diff: baselineDiff } = await compareWithBaseline(
    cluster,
    baseline,
  );
  say(
    "rulesets (iptables-save, ip rule, every routing table, ipsets, rp_filter) equal the baseline: " +
      baselineResult.map((b) => `${b.node} ${mark(b.equal)}`).join("  "),
  );
  for (const line of baselineDiff) say(`  ${line}`);
  const ok = phases.every((p) => p.informational || p.checks.every((c) => c.ok)) &&
    baselineResult.every((b) => b.equal) && (failover?.ok ?? true) && (rogueResult?.ok ?? true);
  return {
    ok,
    phases,
    failover,
    baseline: baselineResult,
    baselineDiff,
    ...(rogueResult ? { rogue: rogueResult } : {}),
  };
}
