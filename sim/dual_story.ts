/**
 * The dual-stack story (`deno task sim --family dual`, issue 13's proof): a
 * dual-stack cluster, a dual-stack VIP (an address of each family, one route
 * id) and an IPv6-only VIP, the sources the outside hosts see for every pod
 * over TCP, UDP and ICMP/ICMPv6 in each family, a failover of the dual-stack
 * VIP with the gap measured per family, and `delete` returning every node to
 * its baseline (both families' rules, routes, sets, nftables and sysctls)
 * byte for byte.
 *
 * Nothing here knows what the product supports: every row is what the
 * outside hosts reported, so a family the agents do not serve yet shows as
 * ✗ (a wrong source, a timeout) and fails the story, and a VIP address the
 * agents never place is named in a problem line.
 */
import { LAN6_PREFIX, LAN_PREFIX, type Layout } from "./layout.ts";
import type { Cluster, OutsideHost, SimNode, SimPod } from "./cluster.ts";
import { agentCommand, type AgentProcess, startAgent } from "./agents.ts";
import { checkPod, type PodCheck } from "./check.ts";
import { type Proto, sourceSeenRetry } from "./probe.ts";
import { lastRole, rankNodes } from "./placement.ts";
import { measureFailover } from "./stream.ts";
import { type VipDriver, vipHolders } from "./vip.ts";
import { compareWithBaseline } from "./story.ts";
import { table } from "../core/status.ts";
import { errorMessage } from "../core/errors.ts";

export type Family = "IPv4" | "IPv6";
export const FAMILIES: readonly Family[] = ["IPv4", "IPv6"];

/** The dual-stack VIP: one address of each family, one route id. */
export const DUAL_VIP4 = `${LAN_PREFIX}.50`;
export const DUAL_VIP6 = `${LAN6_PREFIX}:50`;
/** The IPv6-only VIP. */
export const V6_VIP = `${LAN6_PREFIX}:51`;
const DUAL_ROUTE_ID = 5;
const V6_ROUTE_ID = 6;

/** Per pod and family, the VIP it leaves with (absent: unmapped, it leaves as its node). */
export interface DualPlan {
  /** VIP address → route id (the files of `<VIP>` → route id). */
  readonly vips: Readonly<Record<string, number>>;
  /** Pod name → per family its VIP address. */
  readonly mappings: ReadonlyMap<string, Partial<Record<Family, string>>>;
}

/**
 * Pod k=1 of every node uses the dual-stack VIP in both families; pod k=2
 * uses the IPv6-only VIP over IPv6 and leaves as its node over IPv4, except
 * on the last node, where it stays unmapped in both families; further pods
 * are unmapped.
 */
export function dualStoryPlan(layout: Layout): DualPlan {
  const last = layout.nodes.length;
  const mappings = new Map<string, Partial<Record<Family, string>>>();
  for (const pod of layout.pods) {
    if (pod.k === 1) mappings.set(pod.name, { IPv4: DUAL_VIP4, IPv6: DUAL_VIP6 });
    else if (pod.k === 2 && (pod.nodeIndex < last || last === 1)) {
      mappings.set(pod.name, { IPv6: V6_VIP });
    }
  }
  return {
    vips: { [DUAL_VIP4]: DUAL_ROUTE_ID, [DUAL_VIP6]: DUAL_ROUTE_ID, [V6_VIP]: V6_ROUTE_ID },
    mappings,
  };
}

/** The mapping files: `<pod IPv4>` → VIP4 and `<pod IPv6>` → VIP6. */
export function dualMappingsByIp(
  pods: readonly SimPod[],
  mappings: DualPlan["mappings"],
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pod of pods) {
    const m = mappings.get(pod.name);
    if (m?.IPv4) out[pod.ip] = m.IPv4;
    if (m?.IPv6 && pod.ip6) out[pod.ip6] = m.IPv6;
  }
  return out;
}

/** One pod's sources in one family. */
export interface FamilyCheck {
  readonly pod: string;
  readonly node: string;
  readonly family: Family;
  readonly expected: string;
  /** Per outside host, per protocol: what it saw. */
  readonly outside: Readonly<Record<string, Readonly<Record<Proto, string>>>>;
  /** What the ClusterIP backend saw over TCP/UDP (IPv4 rows; the service is IPv4). */
  readonly service?: string;
  readonly ok: boolean;
}

const PROTOS: readonly Proto[] = ["tcp", "udp", "icmp"];

function fromPodCheck(c: PodCheck): FamilyCheck {
  return {
    pod: c.pod,
    node: c.node,
    family: "IPv4",
    expected: c.expected,
    outside: c.outside,
    service: c.service.tcp === c.service.udp
      ? c.service.tcp
      : `${c.service.tcp} / ${c.service.udp}`,
    ok: c.ok,
  };
}

/** Probes one pod over IPv6 against every outside host's IPv6 address. */
/** Probes from `from` (a pod or a node) in one family against every outside host. */
async function checkFrom(
  from: { readonly pod: string; readonly node: string; readonly ns: SimPod["ns"] },
  family: Family,
  expected: string,
  hosts: readonly OutsideHost[],
): Promise<FamilyCheck> {
  const outside = await Promise.all(hosts.map(async (h) => {
    const target = family === "IPv6" ? h.ip6! : h.ip;
    const seen = await Promise.all(
      PROTOS.map((p) => sourceSeenRetry(from.ns, target, p, { witness: h.icmp })),
    );
    return [h.name, { tcp: seen[0], udp: seen[1], icmp: seen[2] }] as const;
  }));
  return {
    pod: from.pod,
    node: from.node,
    family,
    expected,
    outside: Object.fromEntries(outside),
    ok: outside.every(([, s]) => PROTOS.every((p) => s[p] === expected)),
  };
}

/** The POD column of a node's own traffic. */
export const NODE_ITSELF = "(the node)";

/**
 * Every pod in both families, against `mappings` (empty: every pod leaves as
 * its node), then every node's own traffic in both families, which must leave
 * with the node's address even while the node holds VIPs (an IPv6 VIP added
 * the plain way would win the source address selection, RFC 6724 rule 8).
 */
export async function checkDual(
  cluster: Cluster,
  mappings: DualPlan["mappings"],
  parallel = 3,
): Promise<FamilyCheck[]> {
  const hosts = [cluster.outside, cluster.lanHost];
  const jobs = cluster.pods.flatMap((pod) => [
    () =>
      checkPod(cluster, pod, mappings.get(pod.name)?.IPv4 ?? pod.node.ip, hosts).then(
        fromPodCheck,
      ),
    () =>
      checkFrom(
        { pod: pod.name, node: pod.node.name, ns: pod.ns },
        "IPv6",
        mappings.get(pod.name)?.IPv6 ?? nodeIp6(pod.node),
        hosts,
      ),
  ]).concat(cluster.nodes.flatMap((node) => {
    const from = { pod: NODE_ITSELF, node: node.name, ns: node.ns };
    return [
      () => checkFrom(from, "IPv4", node.ip, hosts),
      () => checkFrom(from, "IPv6", nodeIp6(node), hosts),
    ];
  }));
  const results: FamilyCheck[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      results[i] = await jobs[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, jobs.length) }, worker));
  return results;
}

function nodeIp6(node: SimNode): string {
  if (!node.ip6) throw new Error(`${node.name} has no IPv6 address: not a dual-stack cluster`);
  return node.ip6;
}

function cell(check: FamilyCheck, proto: Proto): string {
  const seen = Object.entries(check.outside).map(([host, s]) => [host, s[proto]] as const);
  const values = new Set(seen.map(([, v]) => v));
  return values.size === 1 ? seen[0][1] : seen.map(([host, v]) => `${host}: ${v}`).join(", ");
}

/** The table: per pod a row per family, the sources seen over TCP, UDP and ICMP/ICMPv6. */
export function renderDualChecks(checks: readonly FamilyCheck[]): string {
  return table(
    ["POD", "NODE", "FAMILY", "SHOULD LEAVE AS", "TCP", "UDP", "ICMP/ICMPV6", "SERVICE SAW", ""],
    checks.map((c) => [
      c.pod,
      c.node,
      c.family,
      c.expected,
      cell(c, "tcp"),
      cell(c, "udp"),
      cell(c, "icmp"),
      c.service ?? "-",
      c.ok ? "✓" : "✗",
    ]),
  );
}

function legend(cluster: Cluster): string {
  const o = cluster.outside;
  const l = cluster.lanHost;
  return `sources seen by ${o.ip} / ${o.ip6} (behind the router) and ${l.ip} / ${l.ip6} ` +
    `(on the LAN); SERVICE SAW: what the IPv4 ClusterIP's backend saw (must be the pod itself)`;
}

export interface DualPhase {
  readonly title: string;
  readonly checks: readonly FamilyCheck[];
}

/** The dual-stack VIP's failover, per family. */
export interface DualFailover {
  readonly from: string;
  readonly to?: string;
  readonly streamer: string;
  /** Per family: last packet via the old holder to first via the new one (undefined: never resumed). */
  readonly gapMs: Readonly<Record<Family, number | undefined>>;
  /** Per family: packets on the wire with another source than the VIP's address of that family. */
  readonly wrongSource: Readonly<Record<Family, number>>;
  readonly ok: boolean;
}

export interface DualStoryResult {
  readonly ok: boolean;
  readonly phases: readonly DualPhase[];
  readonly failover?: DualFailover;
  /** What did not happen as it should, each naming its family (a VIP never placed, ...). */
  readonly problems: readonly string[];
  readonly baseline: readonly { readonly node: string; readonly equal: boolean }[];
  readonly baselineDiff: readonly string[];
}

/** Per family: pod checks that held, of all. */
export function familyCounts(phases: readonly DualPhase[]): Record<Family, [number, number]> {
  const all = phases.flatMap((p) => p.checks);
  const count = (f: Family) => {
    const of = all.filter((c) => c.family === f);
    return [of.filter((c) => c.ok).length, of.length] as [number, number];
  };
  return { IPv4: count("IPv4"), IPv6: count("IPv6") };
}

/** The summary line of `deno task sim --family dual`. */
export function dualSummaryLine(result: DualStoryResult): string {
  const counts = familyCounts(result.phases);
  const f = result.failover;
  const gap = (family: Family) => {
    const g = f?.gapMs[family];
    return `${family} gap ${g === undefined ? "∞" : `${g} ms`}`;
  };
  return `${result.ok ? "all checks ✓" : "some checks ✗"}: pod checks held: ` +
    FAMILIES.map((fam) => `${fam} ${counts[fam][0]}/${counts[fam][1]}`).join(", ") +
    (f
      ? `; failover of ${DUAL_VIP4} + ${DUAL_VIP6} ${f.from} → ${f.to ?? "?"}: ` +
        FAMILIES.map(gap).join(", ") +
        `, wrong source IPv4 ${f.wrongSource.IPv4} / IPv6 ${f.wrongSource.IPv6}`
      : "") +
    `; ${result.problems.length} problem(s)` +
    `; rulesets equal to the baseline on ${
      result.baseline.filter((b) => b.equal).length
    }/${result.baseline.length} nodes`;
}

function mark(ok: boolean): string {
  return ok ? "✓" : "✗";
}

/** Which node holds each address now (one name, "none", or "a+b"). */
async function holdersNow(cluster: Cluster, vips: readonly string[]): Promise<Map<string, string>> {
  const holders = await vipHolders(cluster.nodes, vips, cluster.spec.iface);
  return new Map(
    [...holders].map(([v, n]) => [v, n.map((x) => x.name).join("+") || "none"]),
  );
}

/**
 * Waits (bounded) until `done` accepts the holders; resolves with them, or
 * with an error text that says what was seen.
 */
async function waitHolders(
  cluster: Cluster,
  vips: readonly string[],
  done: (h: Map<string, string>) => boolean,
  timeoutMs: number,
): Promise<{ holders: Map<string, string>; error?: string }> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const holders = await holdersNow(cluster, vips);
    if (done(holders)) return { holders };
    if (Date.now() >= deadline) {
      return {
        holders,
        error: `within ${timeoutMs / 1000} s: ` +
          [...holders].map(([v, n]) => `${v} on ${n}`).join(", "),
      };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every agent's last logged role for `vip` agrees with `holder` (bounded wait); an error text otherwise. */
async function rolesAgree(
  agents: readonly AgentProcess[],
  vip: string,
  holder: string,
  timeoutMs: number,
): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const roles = agents.map((a) => [a.node.name, lastRole(a, vip)] as const);
    if (roles.every(([n, r]) => r === (n === holder ? "holder" : "forwarder"))) return undefined;
    if (Date.now() >= deadline) {
      return `the agents' roles for ${vip} (holder ${holder}) within ${timeoutMs / 1000} s: ` +
        roles.map(([n, r]) => `${n}=${r ?? "none logged"}`).join(" ");
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface DualStoryOptions {
  /** The agents' keepalived places the VIPs (manual placement has no IPv6 here). */
  readonly driver: VipDriver;
  readonly say?: (line: string) => void;
}

/** Runs the dual-stack story on a freshly built dual-stack cluster; the caller destroys it. */
export async function runDualStory(
  cluster: Cluster,
  options: DualStoryOptions,
): Promise<DualStoryResult> {
  const say = options.say ?? (() => {});
  const { driver } = options;
  if (cluster.spec.family !== "dual") throw new Error("runDualStory needs a --family dual cluster");
  if (driver.mode !== "keepalived") {
    throw new Error("the dual-stack story places VIPs with the agents' keepalived");
  }
  const plan = dualStoryPlan(cluster.layout);
  const vips = Object.keys(plan.vips);
  const phases: DualPhase[] = [];
  const problems: string[] = [];
  const problem = (family: Family | "both", text: string) => {
    problems.push(`${family}: ${text}`);
    say(`✗ ${family}: ${text}`);
  };
  const check = async (title: string, mappings: DualPlan["mappings"]) => {
    const started = performance.now();
    const checks = await checkDual(cluster, mappings);
    phases.push({ title, checks });
    say(`\n${title} (${Math.round(performance.now() - started)} ms)`);
    say(legend(cluster));
    say(renderDualChecks(checks));
  };
  const familyOf = (vip: string): Family => vip.includes(":") ? "IPv6" : "IPv4";

  const baseline = await Promise.all(cluster.nodes.map((n) => cluster.ruleset(n)));
  const agentFlags = [...driver.agentFlags];
  say(
    `\nstarting the agent (mod.ts run ${cluster.agentFlags().join(" ")} ${
      agentFlags.join(" ")
    }) in every node namespace`,
  );
  const agents = cluster.nodes.map((node) => startAgent(cluster, node, agentFlags));
  let failover: DualFailover | undefined;
  try {
    await Promise.all(agents.map((a) => a.waitFor(/agent running/, 60_000)));
    await cluster.writeMappings(dualMappingsByIp(cluster.pods, plan.mappings), plan.vips);
    const who = (vip: string, f: Family) =>
      [...plan.mappings].filter(([, m]) => m[f] === vip).map(([p]) => p).join(", ");
    say(
      `mapping pods: dual-stack VIP ${DUAL_VIP4} + ${DUAL_VIP6} (route ${DUAL_ROUTE_ID}: IPv4 ` +
        `${who(DUAL_VIP4, "IPv4")}; IPv6 ${who(DUAL_VIP6, "IPv6")}), IPv6-only VIP ${V6_VIP} ` +
        `(route ${V6_ROUTE_ID}: ${
          who(V6_VIP, "IPv6")
        }); the other pods' families leave as their node`,
    );
    const started = performance.now();
    // keepalived's choice: the VRRP priority of the instance's own address (a dual-stack
    // VIP's IPv4 one; its IPv6 address rides along), so the dual VIP's two addresses sit
    // on one node. Waiting for exactly that, not any first holder: a lower node that won
    // the first election would hand the VIP over after the preempt delay, mid-check.
    const rankDual = rankNodes(DUAL_VIP4, cluster.nodes);
    const wanted = new Map([
      [DUAL_VIP4, rankDual[0].name],
      [DUAL_VIP6, rankDual[0].name],
      [V6_VIP, rankNodes(V6_VIP, cluster.nodes)[0].name],
    ]);
    // Exactly one holder per address, the dual VIP's two addresses on one node.
    const placed = (h: Map<string, string>, which: readonly string[]) =>
      which.every((v) => h.get(v) !== "none" && !h.get(v)!.includes("+")) &&
      (!which.includes(DUAL_VIP6) || h.get(DUAL_VIP6) === h.get(DUAL_VIP4));
    const where = (h: Map<string, string>, which: readonly string[]) =>
      which.every((v) => h.get(v) === wanted.get(v));
    const four = await waitHolders(cluster, [DUAL_VIP4], (h) => where(h, [DUAL_VIP4]), 40_000);
    if (four.error) {
      problem(
        "IPv4",
        `keepalived did not place ${DUAL_VIP4} on ${wanted.get(DUAL_VIP4)} ${four.error}`,
      );
    }
    const six = await waitHolders(cluster, vips, (h) => where(h, vips), 10_000);
    if (six.error) {
      problem(
        "IPv6",
        `keepalived did not place ${DUAL_VIP6} with ${DUAL_VIP4} on ${wanted.get(DUAL_VIP6)} ` +
          `and ${V6_VIP} on ${wanted.get(V6_VIP)} ${six.error}`,
      );
    }
    let holders = six.holders;
    say(
      `keepalived placed: ${vips.map((v) => `${v} on ${holders.get(v)}`).join(", ")} (${
        ((performance.now() - started) / 1000).toFixed(1)
      } s after the mappings appeared)`,
    );
    for (const vip of vips) {
      const holder = holders.get(vip)!;
      if (holder === "none" || holder.includes("+")) continue;
      const error = await rolesAgree(agents, vip, holder, 20_000);
      if (error) problem(familyOf(vip), error);
    }
    await check("every pod, in both families, as seen from outside:", plan.mappings);

    const fromName = holders.get(DUAL_VIP4)!;
    const from = cluster.nodes.find((n) => n.name === fromName);
    const next = rankDual.find((n) => n !== from);
    const onDual = cluster.pods.filter((p) => plan.mappings.get(p.name)?.IPv4 === DUAL_VIP4);
    // A pod on a node that neither loses nor gains the VIP, if there is one.
    const streamer = onDual.find((p) => p.node !== from && p.node !== next) ??
      onDual.find((p) => p.node !== from);
    if (from && next && streamer) {
      const target = next;
      say(
        `\nfailover of the dual-stack VIP: stopping keepalived on ${from.name} (SIGTERM), while ` +
          `${streamer.name} on ${streamer.node.name} streams over IPv4 to ${cluster.outside.ip} ` +
          `and over IPv6 to ${cluster.outside.ip6} (UDP every 10 ms on one flow, a new TCP ` +
          `connection every 50 ms, in each family)`,
      );
      let to: SimNode | undefined;
      let faultError: string | undefined;
      const tags: Record<Family, string> = {
        IPv4: `${streamer.name}-v4`,
        IPv6: `${streamer.name}-v6`,
      };
      const run = await measureFailover(cluster.outside, {
        vip: DUAL_VIP4,
        senders: [
          { tag: tags.IPv4, ns: streamer.ns, vip: DUAL_VIP4, target: cluster.outside.ip },
          { tag: tags.IPv6, ns: streamer.ns, vip: DUAL_VIP6, target: cluster.outside.ip6 },
        ],
        fault: async () => {
          try {
            to = await driver.failover(DUAL_VIP4, from, target);
          } catch (error) {
            faultError = errorMessage(error);
          }
        },
      });
      if (faultError) problem("IPv4", `failover: ${faultError}`);
      const gapMs = {
        IPv4: run.streams[0].analysis.gapMs,
        IPv6: run.streams[1].analysis.gapMs,
      };
      const wrongSource = {
        IPv4: run.wire.packets.filter((p) => !p.src.includes(":")).length,
        IPv6: run.wire.packets.filter((p) => p.src.includes(":")).length,
      };
      for (const family of FAMILIES) {
        const a = run.streams[family === "IPv4" ? 0 : 1].analysis;
        const wrong = Object.entries(a.wrongSources).map(([s, n]) => `${n} from ${s}`);
        say(
          `${family}: gap ${
            gapMs[family] === undefined ? "traffic never resumed" : `${gapMs[family]} ms`
          } from the last packet via ${from.name} to the first via ${to?.name ?? "?"}; ` +
            `${a.received.udp} UDP datagrams and ${a.received.tcp} TCP connections arrived, ` +
            `${a.udpLost} datagrams lost; packets with a wrong source: ${wrongSource[family]}` +
            (wrong.length ? ` (reporter: ${wrong.join(", ")})` : "") +
            ` ${mark(gapMs[family] !== undefined && wrongSource[family] === 0)}`,
        );
      }
      failover = {
        from: from.name,
        ...(to ? { to: to.name } : {}),
        streamer: streamer.name,
        gapMs,
        wrongSource,
        ok: faultError === undefined &&
          FAMILIES.every((f) => gapMs[f] !== undefined && wrongSource[f] === 0),
      };
      if (to) {
        const moved = await waitHolders(
          cluster,
          vips,
          (h) => h.get(DUAL_VIP4) === to!.name && placed(h, vips),
          10_000,
        );
        if (moved.error) {
          problem("IPv6", `${DUAL_VIP6} did not follow ${DUAL_VIP4} to ${to.name} ${moved.error}`);
        }
        holders = moved.holders;
        for (const vip of [DUAL_VIP4, DUAL_VIP6]) {
          if (holders.get(vip) !== to.name) continue;
          const error = await rolesAgree(agents, vip, to.name, 20_000);
          if (error) problem(familyOf(vip), error);
        }
        say(
          `${DUAL_VIP4} + ${DUAL_VIP6} are now on ${holders.get(DUAL_VIP4)} / ${
            holders.get(DUAL_VIP6)
          }`,
        );
        await check(`after the failover to ${to.name}, in both families:`, plan.mappings);
        try {
          const after = await driver.afterFailover(DUAL_VIP4, from);
          if (after) say(after);
        } catch (error) {
          problem("IPv4", errorMessage(error));
        }
        const back = await waitHolders(cluster, vips, (h) => placed(h, vips), 10_000);
        if (back.error) problem("IPv6", `after the VIP went back: ${back.error}`);
      }
    } else say("\n(no other node, or no streaming pod: no failover)");
  } finally {
    say(`\nstopping the agents (SIGTERM: rules stay in place) and running delete on every node`);
    for (const agent of agents) await agent.stop("SIGTERM");
  }
  const deleted = await Promise.all(
    cluster.nodes.map((n) => agentCommand(cluster, n, "delete", driver.agentFlags)),
  );
  // A failed delete is told and the story goes on: the table and the baseline show what it left.
  deleted.forEach((r, i) => {
    if (r.code !== 0) {
      const family = /IPv6/.test(r.stderr) ? "IPv6" : /IPv4/.test(r.stderr) ? "IPv4" : "both";
      problem(
        family,
        `delete on node${i + 1} failed (exit ${r.code}): ${
          r.stderr.trim().split("\n").join(" / ")
        }`,
      );
    }
  });
  const gone = await waitHolders(
    cluster,
    vips,
    (h) => [...h.values()].every((n) => n === "none"),
    10_000,
  );
  if (gone.error) problem("both", `VIPs still on a node after the agents stopped ${gone.error}`);
  await check("after delete, every pod leaves as its node again, in both families:", new Map());

  const { result: baselineResult, diff: baselineDiff } = await compareWithBaseline(
    cluster,
    baseline,
  );
  say(
    "rulesets (iptables-save, ip6tables-save, ip rule and ip -6 rule, every IPv4 and IPv6 " +
      "routing table, ipsets, nft ruleset, rp_filter and IPv6 sysctls) equal the baseline: " +
      baselineResult.map((b) => `${b.node} ${mark(b.equal)}`).join("  "),
  );
  for (const line of baselineDiff) say(`  ${line}`);
  for (const p of problems) say(`problem: ${p}`);
  const ok = phases.every((p) => p.checks.every((c) => c.ok)) && problems.length === 0 &&
    baselineResult.every((b) => b.equal) && (failover?.ok ?? true);
  return { ok, phases, failover, problems, baseline: baselineResult, baselineDiff };
}
