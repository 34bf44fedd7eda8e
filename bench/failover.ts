/**
 * Failover benchmark (issues 5 and 17): a 3-node simulated cluster with agents
 * in keepalived mode with NAT state replication (`--conntrack-sync on`).
 * Mapped pods on the two non-holder nodes stream to the outside host (UDP
 * every 10 ms on one flow, a new TCP connection every 50 ms) and keep 10
 * long-lived TCP connections each (8 bytes every 10 ms, echoed); then the
 * holder is broken — its keepalived SIGKILLed, its cable pulled, its agent
 * stopped (SIGTERM, as in a rolling update), or the whole node powered off
 * (every process of the node killed and its link down at once) — and we record
 * the gap between the last good packet via the old holder and the first good
 * packet (source = the VIP) via the new one, every packet that reached the
 * outside host with another source (reporter log + packet capture), and how
 * many connections lasted. Between runs the holder is repaired and takes the
 * VIP back.
 *
 * The cluster is dual-stack (sim --family dual): the VIP has an IPv6 address
 * too (one route id), every pod is mapped in both families, and each sending
 * pod streams over IPv6 beside IPv4 through the same failovers. The IPv4
 * figures (table and lines) are the IPv4 streams alone, as before; the IPv6
 * ones follow in their own table (issue 13).
 */
import { startAgent } from "../sim/agents.ts";
import type { AgentProcess } from "../sim/agents.ts";
import { Cluster } from "../sim/cluster.ts";
import {
  dropVrrpMulticast,
  holdersOf,
  killKeepalived,
  ranking,
  waitForPlacement,
} from "../sim/placement.ts";
import { measureFailover, startCapture, type WirePacket } from "../sim/stream.ts";
import {
  connectionsLine,
  type ConnectionsSummary,
  ECHO_PORT,
  startConnections,
  startEchoServer,
  summarizeConnections,
  wrongSourcePackets,
} from "../sim/connections.ts";
import { Rogue } from "../sim/rogue.ts";
import { table } from "../core/status.ts";
import { onInterrupt, stats } from "./lib.ts";

const VIP = "192.0.2.50";
/** The VIP's IPv6 address (the same route id). */
const VIP6 = "2001:db8:1::50";
/** A sender's IPv6 stream tag: its IPv4 tag and this. */
const V6_TAG = "-v6";

export type Fault =
  | "keepalived killed"
  | "link down"
  | "agent SIGTERM"
  | "power off"
  | "link down (holder frozen)"
  | "link down (holder agent frozen)";

export interface FailoverFigure {
  readonly fault: Fault;
  readonly run: number;
  /** Worst stream's gap, ms (undefined: some stream never resumed). */
  readonly gapMs: number | undefined;
  /** Per stream: tag → gap ms. */
  readonly gaps: Readonly<Record<string, number | undefined>>;
  /** Packets with a wrong source at the outside host (wire capture). */
  readonly wrongSource: number;
  /** Those packets summed up by flow (`wrongFlows`), IPv4 and IPv6. */
  readonly wrongFlows?: readonly string[];
  readonly newHolder: string;
  /** The long-lived connections of the run. */
  readonly connections: ConnectionsSummary;
  /**
   * The holder node's own pod's long-lived connections (BENCH_HOLDER_POD=1;
   * not after a power off, where the pod dies with its node). Its entries are
   * not replicated (core/conntrackd.ts), so this measures what that costs.
   */
  readonly holderPodConnections?: ConnectionsSummary;
  /** Where the gap went, from the new holder agent's log (undefined: not seen). */
  readonly timeline?: FailoverTimeline;
  /** The same failover's IPv6 streams (to the VIP's IPv6 address). */
  readonly ipv6?: FamilyFigure;
}

/** One family's streams of a failover. */
export interface FamilyFigure {
  /** Worst stream's gap, ms (undefined: some stream never resumed). */
  readonly gapMs: number | undefined;
  readonly gaps: Readonly<Record<string, number | undefined>>;
  /** Packets of this family with a wrong source at the outside host (wire capture). */
  readonly wrongSource: number;
  /** Who holds the VIP's address of this family after the fault. */
  readonly newHolder: string;
}

/** Splits a run's streams and wire by family: IPv6 streams carry the tag suffix "-v6". */
export function splitFamilies(
  streams: readonly { readonly tag: string; readonly gapMs: number | undefined }[],
  wireSources: readonly string[],
): Record<"ipv4" | "ipv6", Omit<FamilyFigure, "newHolder">> {
  const of = (six: boolean) => {
    const mine = streams.filter((s) => s.tag.endsWith(V6_TAG) === six);
    const gaps = mine.map((s) => s.gapMs);
    return {
      gapMs: gaps.length === 0 || gaps.some((g) => g === undefined)
        ? undefined
        : Math.max(...(gaps as number[])),
      gaps: Object.fromEntries(mine.map((s) => [s.tag, s.gapMs])),
      wrongSource: wireSources.filter((src) => src.includes(":") === six).length,
    };
  };
  return { ipv4: of(false), ipv6: of(true) };
}

/**
 * Wrong-source packets by flow, "udp 10.244.3.5:40000 > 203.0.113.10:9000 x86
 * at +120..+980 ms" (ms after the fault), most packets first: where they came
 * from and when, for finding out why.
 */
export function wrongFlows(packets: readonly WirePacket[], faultAt: number): string[] {
  const flows = new Map<string, { n: number; first: number; last: number }>();
  for (const p of packets) {
    const key = `${p.proto} ${p.src}:${p.sport} > ${p.dst}:${p.dport}`;
    const flow = flows.get(key);
    if (flow) {
      flow.n++;
      flow.first = Math.min(flow.first, p.t);
      flow.last = Math.max(flow.last, p.t);
    } else flows.set(key, { n: 1, first: p.t, last: p.t });
  }
  return [...flows].sort((a, b) => b[1].n - a[1].n).map(([key, f]) =>
    `${key} x${f.n} at +${f.first - faultAt}${f.n > 1 ? `..+${f.last - faultAt}` : ""} ms`
  );
}

/**
 * One failover taken apart, in ms after the fault: the new holder's keepalived
 * entering MASTER (detection: missed adverts + skew), its agent's pass having
 * made it the holder (the datapath's role change), and the first good packet
 * at the outside host (GARP, neighbour caches, the sending pod's next packet).
 */
export interface FailoverTimeline {
  readonly masterMs?: number;
  readonly holderMs?: number;
  readonly firstPacketMs?: number;
  /**
   * The takeover pass taken apart (its "pass applied" line, the first at or
   * after MASTER): reading the node, then each step, "read 8 ms; nft 10, ip 3,
   * conntrack 7, conntrackd 9 ms".
   */
  readonly pass?: string;
}

/** The time of an agent log line (text or JSON format), ms since the epoch. */
export function logLineTime(line: string): number | undefined {
  const iso = line.startsWith("{")
    ? (() => {
      try {
        return String(JSON.parse(line).time);
      } catch {
        return "";
      }
    })()
    : line.split(" ", 1)[0];
  const t = Date.parse(iso);
  return Number.isNaN(t) ? undefined : t;
}

/**
 * The timeline of a failover at `faultAt` from the new holder agent's log
 * lines: the first `VRRP state` MASTER and the first `VIP role` to the
 * holder for `vip` logged after the fault.
 */
export function failoverTimeline(
  lines: readonly string[],
  vip: string,
  faultAt: number,
  firstAfter: number | undefined,
): FailoverTimeline {
  const after = (pattern: RegExp) => {
    for (const line of lines) {
      if (!line.includes(vip) || !pattern.test(line)) continue;
      const t = logLineTime(line);
      if (t !== undefined && t >= faultAt) return t - faultAt;
    }
    return undefined;
  };
  const masterMs = after(/VRRP state.*MASTER/);
  const holderMs = after(/VIP role.*(to=holder|"to":"holder")/);
  const pass = masterMs === undefined ? undefined : lines.find((line) => {
    const t = logLineTime(line);
    return t !== undefined && t >= faultAt + masterMs && /pass applied.*read_ms/.test(line);
  });
  const read = pass && /read_ms[=":]+(\d+)/.exec(pass)?.[1];
  const steps = pass && /steps[=":]+"([^"]*)"/.exec(pass)?.[1];
  return {
    ...(masterMs !== undefined ? { masterMs } : {}),
    ...(holderMs !== undefined ? { holderMs } : {}),
    ...(read ? { pass: `read ${read} ms${steps ? `; ${steps}` : ""}` } : {}),
    ...(firstAfter !== undefined ? { firstPacketMs: firstAfter - faultAt } : {}),
  };
}

export interface FailoverOptions {
  readonly runs: number;
  /** VRRP adverts by unicast to every node, on a LAN that drops multicast (BENCH_VRRP=unicast). */
  readonly unicast?: boolean;
  /** `--vrrp-advert-interval` of the agents (default the agent's, 0.1 s). */
  readonly advertInterval?: number;
  /**
   * The guard (BENCH_GUARD): "nodes" gives the agents `--node-addresses` (it
   * enforces), "off" runs them with `--guard off`; default: neither (it only watches).
   */
  readonly guard?: "nodes" | "off";
  /** A rogue on the LAN through every run (BENCH_ROGUE=1, sim/rogue.ts). */
  readonly rogue?: boolean;
  /** NAT state sync by FTFW per peer also with multicast VRRP (BENCH_SYNC=peers). */
  readonly syncPeers?: boolean;
  /** `--backend` of the agents (BENCH_BACKEND); default the agent's (auto). */
  readonly backend?: "iptables" | "nftables";
  /** Only these faults (BENCH_FAULTS, comma-separated); default all. */
  readonly faults?: readonly Fault[];
  /** Long-lived connections from the holder's own pod too, reported apart (BENCH_HOLDER_POD=1). */
  readonly holderPod?: boolean;
  readonly progress: (line: string) => void;
}

export const FAULTS: readonly Fault[] = [
  "keepalived killed",
  "link down",
  "agent SIGTERM",
  "power off",
];
/**
 * Faults run only when BENCH_FAULTS names them: measurements, not faults a
 * real node has. "link down (holder frozen)" is a link down whose old holder
 * does nothing after it (every process of its namespace SIGSTOPped at once,
 * SIGCONTed at the repair): on this shared machine, what the old holder's
 * reaction to its own link failure costs the new holder. "link down (holder
 * agent frozen)" stops only its agent (keepalived still goes to FAULT and
 * drops the VIP, conntrackd runs on): the agent's pass apart from the rest.
 */
export const DIAGNOSTIC_FAULTS: readonly Fault[] = [
  "link down (holder frozen)",
  "link down (holder agent frozen)",
];
/** Every fault, in the order they run and are reported. */
const ALL_FAULTS: readonly Fault[] = [...FAULTS, ...DIAGNOSTIC_FAULTS];
/** Long-lived connections per sending pod (two pods: 20 per run). */
const CONNECTIONS_PER_POD = 10;

/**
 * "Power off": the node's link goes down and every process of its network
 * namespace (agent, keepalived, conntrackd) is SIGKILLed at once; nothing
 * says goodbye.
 */
async function powerOff(cluster: Cluster, node: Cluster["nodes"][number]): Promise<void> {
  const pids = await node.ns.pids();
  const unplugged = cluster.setLanLink(node, false);
  for (const pid of pids) signal(pid, "SIGKILL");
  await unplugged;
}

/**
 * The node's link goes down and every process of its namespace is SIGSTOPped
 * at once (as `powerOff` kills them), or only process `only`; returns them, to
 * be SIGCONTed at the repair.
 */
async function freeze(
  cluster: Cluster,
  node: Cluster["nodes"][number],
  only?: number,
): Promise<number[]> {
  const pids = only === undefined ? await node.ns.pids() : [only];
  const unplugged = cluster.setLanLink(node, false);
  for (const pid of pids) signal(pid, "SIGSTOP");
  await unplugged;
  return pids;
}

function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

/** Builds the cluster, runs every fault `runs` times, tears everything down. */
export async function benchFailover(options: FailoverOptions): Promise<FailoverFigure[]> {
  const cluster = await Cluster.create({ nodes: 3, podsPerNode: 1, family: "dual" }, {
    progress: options.progress,
  });
  const agents: AgentProcess[] = [];
  const unregister = onInterrupt(async () => {
    for (const agent of agents) await agent.stop("SIGKILL").catch(() => {});
    await cluster.destroy();
  });
  const figures: FailoverFigure[] = [];
  let rogue: Rogue | undefined;
  try {
    const [holder, ...others] = ranking(cluster, VIP);
    await cluster.writeMappings(
      Object.fromEntries(cluster.pods.flatMap((p) => [[p.ip, VIP], [p.ip6!, VIP6]])),
      { [VIP]: 5, [VIP6]: 5 },
    );
    const flags: string[] = ["--conntrack-sync", "on"];
    if (options.backend) flags.push("--backend", options.backend);
    if (options.syncPeers) {
      flags.push("--conntrack-sync-peers", cluster.nodes.map((n) => n.ip).join(","));
    }
    if (options.advertInterval !== undefined) {
      flags.push("--vrrp-advert-interval", String(options.advertInterval));
    }
    if (options.unicast) {
      await dropVrrpMulticast(cluster);
      flags.push("--vrrp-unicast-peers", cluster.nodes.map((n) => n.ip).join(","));
    }
    options.progress(
      `starting an agent (keepalived mode, VRRP by ${
        options.unicast ? "unicast" : "multicast"
      }) on every node`,
    );
    if (options.guard === "nodes") {
      flags.push("--node-addresses", cluster.nodes.map((n) => n.ip).join(","));
    } else if (options.guard === "off") flags.push("--guard", "off");
    for (const node of cluster.nodes) agents.push(startAgent(cluster, node, flags, 300));
    if (options.rogue) {
      await waitForPlacement(cluster, agents, VIP, holder, 60_000);
      options.progress("a rogue joins the LAN: VRRP priority 255, ARP answers, gratuitous ARPs");
      rogue = await Rogue.start(cluster, {
        vips: { [VIP]: 5 },
        ...(options.unicast ? { unicastPeers: cluster.nodes.map((n) => n.ip) } : {}),
      });
      await new Promise((r) => setTimeout(r, 2000));
    }
    const holderAt = cluster.nodes.indexOf(holder);
    const senders = others.map((node) => ({
      tag: `pod${node.index}`,
      ns: cluster.pod(node.index, 1).ns,
    }));
    const senders6 = senders.map((s) => ({
      ...s,
      tag: `${s.tag}${V6_TAG}`,
      vip: VIP6,
      target: cluster.outside.ip6!,
    }));
    const holderPod = options.holderPod ? cluster.pod(holder.index, 1) : undefined;
    const echo = await startEchoServer(cluster.outside.ns);
    let frozen: number[] = [];
    const faults: Record<Fault, () => Promise<unknown>> = {
      "keepalived killed": () => killKeepalived(cluster, holder),
      "link down": () => cluster.setLanLink(holder, false),
      "agent SIGTERM": () => agents[holderAt].stop("SIGTERM"),
      "power off": () => powerOff(cluster, holder),
      "link down (holder frozen)": async () => {
        frozen = await freeze(cluster, holder);
      },
      "link down (holder agent frozen)": async () => {
        frozen = await freeze(cluster, holder, agents[holderAt].pid);
      },
    };
    for (const fault of options.faults ?? FAULTS) {
      for (let run = 1; run <= options.runs; run++) {
        await waitForPlacement(cluster, agents, VIP, holder, 60_000);
        options.progress(`${fault}, run ${run}/${options.runs}: holder ${holder.name}`);
        const capture = await startCapture(cluster.outside.ns, { ports: [ECHO_PORT] });
        const accepted = echo.accepted.length;
        const conns = await Promise.all(
          senders.map((s) => startConnections(s.ns, { count: CONNECTIONS_PER_POD })),
        );
        // A pod on a powered-off node dies with it: nothing of it to keep.
        const holderPodConns = holderPod && fault !== "power off"
          ? await startConnections(holderPod.ns, { count: CONNECTIONS_PER_POD })
          : undefined;
        // The IPv6 address follows the IPv4 one (one keepalived instance): not waited for
        // beyond a few seconds, so that a missing IPv6 placement shows as a gap of ∞.
        await waitForPlacement(cluster, agents, VIP6, holder, 5_000).catch((error) =>
          options.progress(`  IPv6: ${error instanceof Error ? error.message : error}`)
        );
        const result = await measureFailover(cluster.outside, {
          vip: VIP,
          senders: [...senders, ...senders6],
          fault: faults[fault],
        });
        const families = splitFamilies(
          result.streams.map((s) => ({ tag: s.tag, gapMs: s.analysis.gapMs })),
          result.wire.packets.map((p) => p.src),
        );
        const [results, holderPodResults] = await Promise.all([
          Promise.all(conns.map((c) => c.stop())).then((r) => r.flat()),
          holderPodConns?.stop(),
        ]);
        const packets = await capture.stop();
        const sources = echo.accepted.slice(accepted);
        // The holder's own pod's wrong-source packets (its own address) are counted apart.
        const ofHolderPod = (src: string) => holderPodConns !== undefined && src === holderPod?.ip;
        const holderPodWrong = packets.filter((p) => p.dport === ECHO_PORT && ofHolderPod(p.src))
          .length + sources.filter(ofHolderPod).length;
        const connections = summarizeConnections(
          results,
          wrongSourcePackets(packets, VIP) +
            sources.filter((src) => src !== VIP).length - holderPodWrong,
        );
        const holderPodConnections = holderPodResults
          ? summarizeConnections(holderPodResults, holderPodWrong)
          : undefined;
        const newHolder = (await holdersOf(cluster, VIP)).join(",") || "none";
        const newAgent = agents.find((a) =>
          a.node !== holder && newHolder.split(",").includes(a.node.name)
        );
        const newHolder6 = (await holdersOf(cluster, VIP6)).join(",") || "none";
        const firstAfter = Math.max(
          ...result.streams.filter((s) => !s.tag.endsWith(V6_TAG)).map((s) =>
            s.analysis.firstAfter ?? result.faultAt
          ),
        );
        const timeline = newAgent
          ? failoverTimeline(newAgent.lines, VIP, result.faultAt, firstAfter)
          : undefined;
        const logDir = Deno.env.get("BENCH_AGENT_LOGS");
        if (logDir) {
          // Every agent's log around the fault (the new holder's as before, the others beside
          // it: the old holder's reaction runs at the same time), for taking a gap apart by hand.
          for (const agent of agents) {
            const near = agent.lines.filter((l) => {
              const t = logLineTime(l);
              return t !== undefined && t >= result.faultAt - 200 && t <= result.faultAt + 6000;
            });
            const role = agent === newAgent ? "" : agent.node === holder ? "-old" : "-other";
            await Deno.writeTextFile(
              `${logDir}/${fault.replace(/ /g, "-")}-${run}${role}${
                role ? `-${agent.node.name}` : ""
              }.log`,
              `fault at ${new Date(result.faultAt).toISOString()}\n${near.join("\n")}\n`,
            );
          }
        }
        figures.push({
          fault,
          run,
          gapMs: families.ipv4.gapMs,
          gaps: families.ipv4.gaps,
          wrongSource: families.ipv4.wrongSource,
          ...(result.wire.packets.length > 0
            ? { wrongFlows: wrongFlows(result.wire.packets, result.faultAt) }
            : {}),
          newHolder,
          connections,
          ...(holderPodConnections ? { holderPodConnections } : {}),
          ...(timeline ? { timeline } : {}),
          ipv6: { ...families.ipv6, newHolder: newHolder6 },
        });
        options.progress(
          `  gap ${
            families.ipv4.gapMs ?? "never resumed"
          } ms, wrong source ${families.ipv4.wrongSource}, now on ${newHolder}; ${
            connectionsLine(fault, connections)
          }; ${timelineText(timeline)}`,
        );
        if (holderPodConnections) {
          options.progress(
            `  ${connectionsLine(`${fault} (holder's own pod)`, holderPodConnections)}`,
          );
        }
        options.progress(
          `  IPv6: gap ${
            families.ipv6.gapMs === undefined ? "never resumed" : `${families.ipv6.gapMs} ms`
          }, wrong source ${families.ipv6.wrongSource}, ${VIP6} now on ${newHolder6}`,
        );
        // Repair: the holder gets its cable back, or its agent restarts keepalived, or its
        // agent is started again (after a power off: its VIP left on the unplugged interface
        // is removed first); then it takes the VIP back after the preemption delay (next
        // run's waitForPlacement).
        if (fault === "power off") {
          await holder.ns.exec(["ip", "addr", "del", `${VIP}/32`, "dev", cluster.spec.iface]);
          await holder.ns.exec(["ip", "addr", "del", `${VIP6}/128`, "dev", cluster.spec.iface]);
        }
        for (const pid of frozen) signal(pid, "SIGCONT");
        frozen = [];
        if (fault !== "keepalived killed" && fault !== "agent SIGTERM") {
          await cluster.setLanLink(holder, true);
        }
        if (fault === "agent SIGTERM" || fault === "power off") {
          agents[holderAt] = startAgent(cluster, holder, flags, 300);
        }
      }
    }
    await waitForPlacement(cluster, agents, VIP, holder, 60_000);
    await echo.stop();
  } finally {
    await rogue?.stop().catch(() => {});
    for (const agent of agents) await agent.stop().catch(() => {});
    await cluster.destroy();
    unregister();
  }
  return figures;
}

/** "MASTER +310 ms, holder +365 ms, first packet +372 ms (pass: read 8 ms; nft 10, ip 3 ms)" (after the fault). */
export function timelineText(t: FailoverTimeline | undefined): string {
  const at = (ms: number | undefined) => (ms === undefined ? "not seen" : `+${ms} ms`);
  return `MASTER ${at(t?.masterMs)}, holder ${at(t?.holderMs)}, first packet ${
    at(t?.firstPacketMs)
  }${t?.pass ? ` (pass: ${t.pass})` : ""}`;
}

/** One row per fault: min/median/max gap over the runs and the wrong-source total. */
export function renderFailover(figures: readonly FailoverFigure[]): string {
  return table(
    [
      "FAULT",
      "RUNS",
      "GAP MIN (ms)",
      "GAP MEDIAN (ms)",
      "GAP MAX (ms)",
      "NEVER RESUMED",
      "WRONG SOURCE",
    ],
    ALL_FAULTS.filter((fault) => figures.some((f) => f.fault === fault)).map((fault) => {
      const runs = figures.filter((f) => f.fault === fault);
      const gaps = runs.flatMap((f) => (f.gapMs === undefined ? [] : [f.gapMs]));
      const s = stats(gaps);
      return [
        fault,
        String(runs.length),
        s.n ? String(s.min) : "–",
        s.n ? String(s.median) : "–",
        s.n ? String(s.max) : "–",
        String(runs.length - gaps.length),
        String(runs.reduce((n, f) => n + f.wrongSource, 0)),
      ];
    }),
  );
}

/**
 * The IPv6 streams of the same failovers, one row per fault, after the IPv4
 * table (whose lines stay as they were).
 */
export function renderFailover6(figures: readonly FailoverFigure[]): string {
  return `IPv6 (the same failovers; streams to ${VIP6}, the VIP's IPv6 address):\n` + table(
    [
      "FAULT",
      "RUNS",
      "GAP MIN (ms)",
      "GAP MEDIAN (ms)",
      "GAP MAX (ms)",
      "NEVER RESUMED",
      "WRONG SOURCE",
    ],
    ALL_FAULTS.filter((fault) => figures.some((f) => f.fault === fault && f.ipv6)).map((fault) => {
      const runs = figures.filter((f) => f.fault === fault && f.ipv6).map((f) => f.ipv6!);
      const gaps = runs.flatMap((f) => (f.gapMs === undefined ? [] : [f.gapMs]));
      const s = stats(gaps);
      return [
        fault,
        String(runs.length),
        s.n ? String(s.min) : "–",
        s.n ? String(s.median) : "–",
        s.n ? String(s.max) : "–",
        String(runs.length - gaps.length),
        String(runs.reduce((n, f) => n + f.wrongSource, 0)),
      ];
    }),
  );
}

/** Per fault, the IPv6 line: every run's gap and the median against the same target. */
export function failoverNotes6(figures: readonly FailoverFigure[]): string[] {
  return ALL_FAULTS.filter((fault) => figures.some((f) => f.fault === fault && f.ipv6)).map(
    (fault) => {
      const runs = figures.filter((f) => f.fault === fault && f.ipv6);
      const gaps = runs.flatMap((f) => (f.ipv6!.gapMs === undefined ? [] : [f.ipv6!.gapMs]));
      const wrong = runs.reduce((n, f) => n + f.ipv6!.wrongSource, 0);
      const median = stats(gaps).median;
      return `IPv6 ${fault}: ${
        runs.map((f) => `run ${f.run} ${f.ipv6!.gapMs ?? "∞"} ms (new holder ${f.ipv6!.newHolder})`)
          .join("; ")
      }; median ${gaps.length ? `${median} ms` : "–"}${
        gaps.length < runs.length ? `, ${runs.length - gaps.length} never resumed` : ""
      }; ${wrong} wrong-source packet(s)`;
    },
  );
}

/** A fault's connections over all its runs (sums; the worst stall). */
export function faultConnections(
  figures: readonly FailoverFigure[],
  fault: Fault,
  holderPod = false,
): ConnectionsSummary {
  const runs = figures.filter((f) => f.fault === fault)
    .flatMap((f) =>
      holderPod ? (f.holderPodConnections ? [f.holderPodConnections] : []) : [f.connections]
    );
  return {
    survived: runs.reduce((n, c) => n + c.survived, 0),
    total: runs.reduce((n, c) => n + c.total, 0),
    resets: runs.reduce((n, c) => n + c.resets, 0),
    maxStallMs: runs.reduce((n, c) => Math.max(n, c.maxStallMs), 0),
    wrongSource: runs.reduce((n, c) => n + c.wrongSource, 0),
  };
}

/** The issue's line per fault: `<fault>: connections survived N/M, resets R, max stall S ms, wrong source W`. */
export function connectionLines(figures: readonly FailoverFigure[]): string[] {
  const faults = ALL_FAULTS.filter((fault) => figures.some((f) => f.fault === fault));
  return [
    ...faults.map((fault) => connectionsLine(fault, faultConnections(figures, fault))),
    // BENCH_HOLDER_POD=1: the holder's own pod apart (its entries are not replicated).
    ...faults.filter((fault) => figures.some((f) => f.fault === fault && f.holderPodConnections))
      .map((fault) =>
        connectionsLine(`${fault} (holder's own pod)`, faultConnections(figures, fault, true))
      ),
  ];
}

/** How to read the table, with every run's figures and the targets. */
export function failoverNotes(
  figures: readonly FailoverFigure[],
  unicast = false,
  advertInterval = 0.1,
  guard?: FailoverOptions["guard"],
  rogue = false,
  backend?: FailoverOptions["backend"],
): string[] {
  const notes = [
    (guard === "nodes"
      ? "Guard enforcing (--node-addresses <the 3 node addresses>, BENCH_GUARD=nodes)"
      : guard === "off"
      ? "No guard (--guard off, BENCH_GUARD=off)"
      : "Guard watching only (no node list; BENCH_GUARD=nodes enforces, BENCH_GUARD=off removes it)") +
    (rogue
      ? "; a rogue on the LAN through every run (BENCH_ROGUE=1: VRRP priority 255, ARP answers, gratuitous ARPs every 300 ms)."
      : "; no rogue (BENCH_ROGUE=1 adds one)."),
    unicast
      ? "VRRP by unicast: every node drops what it sends to the multicast group 224.0.0.18, and the agents run with --vrrp-unicast-peers <the 3 node addresses> (BENCH_VRRP=unicast)."
      : "VRRP by multicast (the default; BENCH_VRRP=unicast measures unicast adverts).",
    "Gap: per run, the worst of the two streams (mapped pods on the two non-holder nodes: the one that becomes the holder, whose flow must switch from forwarding to SNAT, and the other one); from the last packet that reached the outside host with the VIP source before the new holder took over to the first one after. Wrong source: packets that reached the outside host with any other source (packet capture), all runs. Targets: median < 1000 ms, wrong source 0.",
    `Agents with --conntrack-sync on, --backend ${
      backend ?? "auto"
    } (BENCH_BACKEND), --vrrp-advert-interval ${advertInterval} (BENCH_ADVERT), --vrrp-preempt-delay 5. keepalived killed = SIGKILL of its parent and VRRP child (no goodbye): peers wait for 3 missed adverts + skew. Link down = the holder's switch port down. Agent SIGTERM = the holder's agent stopped as in a rolling update (keepalived hands the VIP over with a priority-0 advert). Power off = the holder's link down and every process of its namespace SIGKILLed at once.`,
    `Connections: ${CONNECTIONS_PER_POD} long-lived TCP connections from each of the two pods per run (8 bytes every 10 ms, echoed by the outside host); survived = never reset and every byte echoed; max stall = the longest silence between two echoes of any connection; wrong source = packets on the echo port with another source than the VIP (capture) plus connections the echo server accepted from another source. Targets: M of M, 0 resets, 0 wrong source; gap median < 100 ms for keepalived killed and link down. "(holder's own pod)" lines (BENCH_HOLDER_POD=1): ${CONNECTIONS_PER_POD} more from the holder node's own pod, not after a power off (the pod dies with its node); its wrong source = its own address on the echo port.`,
  ];
  for (const fault of ALL_FAULTS.filter((f) => figures.some((x) => x.fault === f))) {
    const runs = figures.filter((f) => f.fault === fault);
    notes.push(
      `${fault}: ${
        runs.map((f) =>
          `run ${f.run} ${f.gapMs ?? "∞"} ms (${
            Object.entries(f.gaps).map(([tag, g]) => `${tag} ${g ?? "∞"}`).join(", ")
          }; new holder ${f.newHolder}; ${timelineText(f.timeline)}; wrong ${f.wrongSource}${
            f.wrongFlows ? ` (${f.wrongFlows.slice(0, 3).join("; ")})` : ""
          }; connections ${f.connections.survived}/${f.connections.total}, stall ${f.connections.maxStallMs} ms)`
        ).join("; ")
      }`,
    );
    const gaps = runs.flatMap((f) => (f.gapMs === undefined ? [] : [f.gapMs]));
    const median = stats(gaps).median;
    const wrong = runs.reduce((n, f) => n + f.wrongSource, 0);
    notes.push(
      `${fault}: median ${median} ms ${
        median < 100 ? "meets" : "MISSES"
      } the 100 ms target; ${wrong} wrong-source packet(s) ${
        wrong === 0 ? "(target met)" : "(target MISSED)"
      }`,
    );
  }
  return notes;
}
