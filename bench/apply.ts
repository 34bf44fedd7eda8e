/**
 * Apply benchmark: real passes of the agent against the kernel, in a
 * throwaway network namespace, for 1,000 and 10,000 mappings. Figures, not
 * pass/fail.
 */
import { NetnsSet, newRunId } from "../sim/netns.ts";
import { benchNode } from "./file_agent.ts";
import { table } from "../core/status.ts";
import { formatStats, onInterrupt, runWorker, type Stats, stats } from "./lib.ts";

interface Sample {
  op: string;
  mappings: number;
  foreignServices: number;
  vips: number;
  ms: number;
  processes: number;
  bytes: number;
  lines: number;
  setsRead?: string;
}

export interface ApplyFigure {
  op: string;
  mappings: number;
  /** Foreign service chains in the nat table (kube-proxy-like), 0 = none. */
  foreignServices: number;
  vips: number;
  time: Stats;
  processes: Stats;
  bytes: Stats;
  lines: Stats;
  setsRead: string;
}

const WORKER = new URL("./apply_worker.ts", import.meta.url).pathname;

/** Full cycles per size: more for the fast size. */
function cyclesFor(mappings: number): number {
  return mappings >= 10_000 ? 3 : 5;
}

/** A node: how many mappings, and how many foreign (kube-proxy-like) services in its nat table. */
export interface ApplyCase {
  readonly mappings: number;
  readonly foreignServices: number;
}

const CASES: readonly ApplyCase[] = [
  { mappings: 1_000, foreignServices: 0 },
  { mappings: 10_000, foreignServices: 0 },
  { mappings: 10_000, foreignServices: 2_000 },
];

/** Runs the worker for each case in a fresh namespace and returns its figures. */
export async function benchApply(cases = CASES, vips = 16): Promise<ApplyFigure[]> {
  const figures: ApplyFigure[] = [];
  for (const { mappings: size, foreignServices } of cases) {
    const namespaces = new NetnsSet(newRunId());
    const unregister = onInterrupt(() => namespaces.destroy());
    try {
      const ns = await benchNode(namespaces, "bench");
      const samples = await runWorker<Sample>(WORKER, [
        size,
        vips,
        cyclesFor(size),
        foreignServices,
      ], {
        prefix: ["ip", "netns", "exec", ns.name],
      });
      const ops = [...new Set(samples.map((s) => s.op))];
      for (const op of ops) {
        const of = samples.filter((s) => s.op === op);
        const pick = (key: "ms" | "processes" | "bytes" | "lines") => stats(of.map((s) => s[key]));
        figures.push({
          op,
          mappings: size,
          foreignServices,
          vips,
          time: pick("ms"),
          processes: pick("processes"),
          bytes: pick("bytes"),
          lines: pick("lines"),
          setsRead: [...new Set(of.map((s) => s.setsRead ?? "–"))].join("/"),
        });
      }
    } finally {
      await namespaces.destroy();
      unregister();
    }
  }
  return figures;
}

export function renderApply(figures: readonly ApplyFigure[]): string {
  const exact = (s: Stats) => s.min === s.max ? String(s.median) : formatStats(s, 0);
  return table(
    [
      "OPERATION",
      "MAPPINGS",
      "FOREIGN NAT",
      "TIME ms median (min–max)",
      "N",
      "PROCESSES",
      "BYTES WRITTEN",
      "LINES",
      "SETS READ",
    ],
    figures.map((f) => [
      f.op,
      String(f.mappings),
      f.foreignServices > 0 ? `${f.foreignServices * 5 + 2} rules` : "–",
      formatStats(f.time),
      String(f.time.n),
      exact(f.processes),
      exact(f.bytes),
      exact(f.lines),
      f.setsRead,
    ]),
  );
}

export const APPLY_NOTES = [
  "One agent pass (Agent.pass) each: read inputs (in memory), validate, read the node, plan, apply; 16 VIPs; the node holds none of them except while one 'moves here'.",
  "PROCESSES: every process the pass started, reads included: ip -batch, iptables -S of our chain and its hook chain per table (4), ipset save of our 2 sets (full check) or ipset list -t (quick check); then one per write step. The first pass also asks iptables --version; delete reads whole tables (iptables-save).",
  "SETS READ: entries = our ipsets listed in full (`ipset save`); summary = the agent's copy confirmed by `ipset list -t` (quick check).",
  "FOREIGN NAT: the nat table also holds kube-proxy-like service chains (a KUBE-SVC chain with 4 DNAT rules per service, 2,000 services), as on a node of a cluster with that many services.",
  "One case: ip netns exec <ns with eth0 192.0.2.11/24> deno run -A bench/apply_worker.ts <mappings> 16 <cycles> [services] (JSON lines).",
];
