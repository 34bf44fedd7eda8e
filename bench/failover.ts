/**
 * Failover benchmark (issue 5): a 3-node simulated cluster with agents in
 * keepalived mode (the defaults: 100 ms adverts). Mapped pods on the two
 * non-holder nodes stream to the outside host (UDP every 10 ms on one flow,
 * a new TCP connection every 50 ms); then the holder is broken — its
 * keepalived SIGKILLed, or its cable pulled — and we record the gap between
 * the last good packet via the old holder and the first good packet (source =
 * the VIP) via the new one, and every packet that reached the outside host
 * with another source (reporter log + packet capture). Between runs the
 * holder is repaired and takes the VIP back.
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
import { measureFailover } from "../sim/stream.ts";
import { table } from "../core/status.ts";
import { onInterrupt, stats } from "./lib.ts";

const VIP = "192.0.2.50";

export type Fault = "keepalived killed" | "link down";

export interface FailoverFigure {
  readonly fault: Fault;
  readonly run: number;
  /** Worst stream's gap, ms (undefined: some stream never resumed). */
  readonly gapMs: number | undefined;
  /** Per stream: tag → gap ms. */
  readonly gaps: Readonly<Record<string, number | undefined>>;
  /** Packets with a wrong source at the outside host (wire capture). */
  readonly wrongSource: number;
  readonly newHolder: string;
}

export interface FailoverOptions {
  readonly runs: number;
  /** VRRP adverts by unicast to every node, on a LAN that drops multicast (BENCH_VRRP=unicast). */
  readonly unicast?: boolean;
  readonly progress: (line: string) => void;
}

const FAULTS: readonly Fault[] = ["keepalived killed", "link down"];

/** Builds the cluster, runs every fault `runs` times, tears everything down. */
export async function benchFailover(options: FailoverOptions): Promise<FailoverFigure[]> {
  const cluster = await Cluster.create({ nodes: 3, podsPerNode: 1 }, {
    progress: options.progress,
  });
  const agents: AgentProcess[] = [];
  const unregister = onInterrupt(async () => {
    for (const agent of agents) await agent.stop("SIGKILL").catch(() => {});
    await cluster.destroy();
  });
  const figures: FailoverFigure[] = [];
  try {
    const [holder, ...others] = ranking(cluster, VIP);
    await cluster.writeMappings(Object.fromEntries(cluster.pods.map((p) => [p.ip, VIP])), {
      [VIP]: 5,
    });
    const flags: string[] = [];
    if (options.unicast) {
      await dropVrrpMulticast(cluster);
      flags.push("--vrrp-unicast-peers", cluster.nodes.map((n) => n.ip).join(","));
    }
    options.progress(
      `starting an agent (keepalived mode, VRRP by ${
        options.unicast ? "unicast" : "multicast"
      }) on every node`,
    );
    for (const node of cluster.nodes) agents.push(startAgent(cluster, node, flags, 300));
    const senders = others.map((node) => ({
      tag: `pod${node.index}`,
      ns: cluster.pod(node.index, 1).ns,
    }));
    for (const fault of FAULTS) {
      for (let run = 1; run <= options.runs; run++) {
        await waitForPlacement(cluster, agents, VIP, holder, 60_000);
        options.progress(`${fault}, run ${run}/${options.runs}: holder ${holder.name}`);
        const result = await measureFailover(cluster.outside, {
          vip: VIP,
          senders,
          fault: () =>
            fault === "link down"
              ? cluster.setLanLink(holder, false)
              : killKeepalived(cluster, holder),
        });
        const newHolder = (await holdersOf(cluster, VIP)).join(",") || "none";
        figures.push({
          fault,
          run,
          gapMs: result.gapMs,
          gaps: Object.fromEntries(result.streams.map((s) => [s.tag, s.analysis.gapMs])),
          wrongSource: result.wrongSource,
          newHolder,
        });
        options.progress(
          `  gap ${
            result.gapMs ?? "never resumed"
          } ms, wrong source ${result.wrongSource}, now on ${newHolder}`,
        );
        // Repair: the holder gets its cable back, or its agent restarts keepalived; then it
        // takes the VIP back after the preemption delay (next run's waitForPlacement).
        if (fault === "link down") await cluster.setLanLink(holder, true);
      }
    }
    await waitForPlacement(cluster, agents, VIP, holder, 60_000);
  } finally {
    for (const agent of agents) await agent.stop().catch(() => {});
    await cluster.destroy();
    unregister();
  }
  return figures;
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
    FAULTS.map((fault) => {
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

/** How to read the table, with every run's figures and the targets. */
export function failoverNotes(
  figures: readonly FailoverFigure[],
  unicast = false,
): string[] {
  const notes = [
    unicast
      ? "VRRP by unicast: every node drops what it sends to the multicast group 224.0.0.18, and the agents run with --vrrp-unicast-peers <the 3 node addresses> (BENCH_VRRP=unicast)."
      : "VRRP by multicast (the default; BENCH_VRRP=unicast measures unicast adverts).",
    "Gap: per run, the worst of the two streams (mapped pods on the two non-holder nodes: the one that becomes the holder, whose flow must switch from forwarding to SNAT, and the other one); from the last packet that reached the outside host with the VIP source before the new holder took over to the first one after. Wrong source: packets that reached the outside host with any other source (packet capture), all runs. Targets: median < 1000 ms, wrong source 0.",
    "Agents with default timers (--vrrp-advert-interval 0.1, --vrrp-preempt-delay 5). keepalived killed = SIGKILL of its parent and VRRP child (no goodbye): peers wait for 3 missed adverts + skew. Link down = the holder's switch port down.",
  ];
  for (const fault of FAULTS) {
    const runs = figures.filter((f) => f.fault === fault);
    notes.push(
      `${fault}: ${
        runs.map((f) =>
          `run ${f.run} ${f.gapMs ?? "∞"} ms (${
            Object.entries(f.gaps).map(([tag, g]) => `${tag} ${g ?? "∞"}`).join(", ")
          }; new holder ${f.newHolder}; wrong ${f.wrongSource})`
        ).join("; ")
      }`,
    );
    const gaps = runs.flatMap((f) => (f.gapMs === undefined ? [] : [f.gapMs]));
    const median = stats(gaps).median;
    const wrong = runs.reduce((n, f) => n + f.wrongSource, 0);
    notes.push(
      `${fault}: median ${median} ms ${
        median < 1000 ? "meets" : "MISSES"
      } the 1 s target; ${wrong} wrong-source packet(s) ${
        wrong === 0 ? "(target met)" : "(target MISSED)"
      }`,
    );
  }
  return notes;
}
