/**
 * Apply benchmark: real passes of the agent against the kernel, in a
 * throwaway network namespace, for 1,000 and 10,000 mappings, each backend
 * with an IPv4 cluster and with an IPv6 one. Figures, not pass/fail.
 */
import { join } from "node:path";
import type { Backend } from "../core/datapath.ts";
import { modArgv } from "../sim/agents.ts";
import { AGENT_RUNTIME } from "./agent.ts";
import { NetnsSet, newRunId } from "../sim/netns.ts";
import { benchNode, mappingFlags } from "./file_agent.ts";
import { type BenchFamily, syntheticSnapshot } from "./inputs.ts";
import { table } from "../core/status.ts";
import { formatStats, onInterrupt, runWorker, type Stats, stats } from "./lib.ts";

interface Sample {
  op: string;
  backend: Backend;
  family: BenchFamily;
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
  backend: Backend;
  /** The cluster's family: IPv4, or IPv6 alone (pods, VIPs and ranges). */
  family: BenchFamily;
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
  readonly backend: Backend;
  readonly mappings: number;
  readonly foreignServices: number;
  /** IPv4 unless given. */
  readonly family?: BenchFamily;
}

/**
 * Both backends side by side at 1,000 and 10,000 mappings, IPv4 then IPv6;
 * kube-proxy-like nat rules on iptables (IPv4).
 */
const CASES: readonly ApplyCase[] = [
  { backend: "iptables", mappings: 1_000, foreignServices: 0 },
  { backend: "nftables", mappings: 1_000, foreignServices: 0 },
  { backend: "iptables", mappings: 10_000, foreignServices: 0 },
  { backend: "nftables", mappings: 10_000, foreignServices: 0 },
  { backend: "iptables", mappings: 10_000, foreignServices: 2_000 },
  { backend: "iptables", mappings: 1_000, foreignServices: 0, family: "ipv6" },
  { backend: "nftables", mappings: 1_000, foreignServices: 0, family: "ipv6" },
  { backend: "iptables", mappings: 10_000, foreignServices: 0, family: "ipv6" },
  { backend: "nftables", mappings: 10_000, foreignServices: 0, family: "ipv6" },
];

/** Runs the worker for each case in a fresh namespace and returns its figures. */
export async function benchApply(cases = CASES, vips = 16): Promise<ApplyFigure[]> {
  const figures: ApplyFigure[] = [];
  for (const { backend, mappings: size, foreignServices, family = "ipv4" } of cases) {
    const namespaces = new NetnsSet(newRunId());
    const unregister = onInterrupt(() => namespaces.destroy());
    try {
      const ns = await benchNode(namespaces, "bench");
      // The node's own IPv6 address puts the VIPs on link (a route via one needs it).
      if (family === "ipv6") await ns.ip(["addr add 2001:db8::11/64 dev eth0 nodad"]);
      const samples = await runWorker<Sample>(WORKER, [
        size,
        vips,
        cyclesFor(size),
        foreignServices,
        backend,
        family,
      ], {
        prefix: ["ip", "netns", "exec", ns.name],
      });
      const ops = [...new Set(samples.map((s) => s.op))];
      for (const op of ops) {
        const of = samples.filter((s) => s.op === op);
        const pick = (key: "ms" | "processes" | "bytes" | "lines") => stats(of.map((s) => s[key]));
        figures.push({
          op,
          backend,
          family,
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
      "BACKEND",
      "FAMILY",
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
      f.backend,
      f.family,
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

/**
 * The lines, one per backend and size (no foreign rules):
 * `apply <backend> <n>: first <X> ms, unchanged <Y> ms, one pod added <Z> ms`
 * (medians: first apply; unchanged pass with a full read, as on an interval
 * resync; one pod added, as on an event), each followed by the IPv6 cluster's
 * `apply <backend> <n> ipv6: ...` where it was measured.
 */
export function applyLines(figures: readonly ApplyFigure[]): string[] {
  const lines: string[] = [];
  const sizes = [...new Set(figures.map((f) => f.mappings))].sort((a, b) => a - b);
  for (const mappings of sizes) {
    for (const backend of ["iptables", "nftables"] as const) {
      for (const family of ["ipv4", "ipv6"] as const) {
        const of = (op: string) =>
          figures.find((f) =>
            f.backend === backend && f.family === family && f.mappings === mappings &&
            f.foreignServices === 0 && f.op === op
          )?.time.median;
        const first = of("first apply");
        const unchanged = of("unchanged pass, full check (resync)");
        const added = of("one pod added (event)");
        if (first === undefined || unchanged === undefined || added === undefined) continue;
        const ms = (x: number) => x.toFixed(1);
        const label = family === "ipv6" ? `${mappings} ipv6` : String(mappings);
        lines.push(
          `apply ${backend} ${label}: first ${ms(first)} ms, unchanged ${
            ms(unchanged)
          } ms, one pod added ${ms(added)} ms`,
        );
      }
    }
  }
  return lines;
}

/** Whole-process one-shot runs (`mod.ts run` without -u), per backend. */
export interface OneShotFigure {
  readonly backend: Backend;
  readonly mappings: number;
  /** On a node without our objects. */
  readonly first: Stats;
  /** On a node already in sync (what a cron job or the old DaemonSet's loop pays each time). */
  readonly unchanged: Stats;
}

/**
 * `mod.ts <command> <flags>` as the image's ENTRYPOINT starts it: `deno run
 * --cached-only` with the shipped V8 flags (Dockerfile, deno.json task "run"),
 * nothing else in its environment.
 */
export function imageArgv(command: string, flags: readonly string[]): string[] {
  const argv = modArgv(command, flags);
  const at = argv.indexOf("--cached-only") + 1;
  return [...argv.slice(0, at), `--v8-flags=${AGENT_RUNTIME.DENO_V8_FLAGS}`, ...argv.slice(at)];
}

/**
 * `mod.ts run` as a whole process, from exec to exit, with 1,000 mappings
 * from the mapping directories: what one-shot users pay, module loading
 * included.
 */
export async function benchOneShot(mappings = 1_000, runs = 7): Promise<OneShotFigure[]> {
  const figures: OneShotFigure[] = [];
  for (const backend of ["iptables", "nftables"] as const) {
    const namespaces = new NetnsSet(newRunId());
    const unregister = onInterrupt(() => namespaces.destroy());
    const dir = await Deno.makeTempDir({ prefix: "ke-oneshot-" });
    try {
      const ns = await benchNode(namespaces, "oneshot");
      const snapshot = syntheticSnapshot(mappings, 16);
      await Deno.mkdir(join(dir, "pods"));
      await Deno.mkdir(join(dir, "vips"));
      for (const v of snapshot.vips) {
        await Deno.writeTextFile(join(dir, "vips", String(v.ip)), `${v.routeId}\n`);
      }
      for (const p of snapshot.pods) {
        await Deno.writeTextFile(join(dir, "pods", String(p.podIp)), `${p.vip}\n`);
      }
      const flags = [
        ...mappingFlags(dir),
        "--state-dir",
        join(dir, "state"),
        "--backend",
        backend,
      ];
      // Started with Deno.Command, not dax (ns.exec): its command building and timers
      // were ~7-15 ms of each figure, which is meant to be the process's own, exec to exit.
      const timed = async (command: string) => {
        const started = performance.now();
        const r = await new Deno.Command("ip", {
          args: ["netns", "exec", ns.name, ...imageArgv(command, flags)],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
          signal: AbortSignal.timeout(60_000),
        }).output();
        const ms = performance.now() - started;
        if (r.code !== 0) {
          throw new Error(`${command} (${backend}): ${new TextDecoder().decode(r.stderr)}`);
        }
        return ms;
      };
      // Not timed: V8's code cache (DENO_DIR) is written by a module's first run, as on a
      // node that ran the agent before; a fresh container's first run pays it (~+100 ms).
      await timed("run");
      await timed("delete");
      const first: number[] = [];
      const unchanged: number[] = [];
      for (let i = 0; i < runs; i++) {
        first.push(await timed("run"));
        unchanged.push(await timed("run"));
        await timed("delete");
      }
      figures.push({ backend, mappings, first: stats(first), unchanged: stats(unchanged) });
    } finally {
      await namespaces.destroy();
      await Deno.remove(dir, { recursive: true });
      unregister();
    }
  }
  return figures;
}

export function renderOneShot(figures: readonly OneShotFigure[]): string {
  return table(
    [
      "ONE-SHOT `mod.ts run` (whole process)",
      "BACKEND",
      "MAPPINGS",
      "TIME ms median (min–max)",
      "N",
    ],
    figures.flatMap((f) => [
      [
        "first (no objects of ours)",
        f.backend,
        String(f.mappings),
        formatStats(f.first),
        String(f.first.n),
      ],
      [
        "unchanged (in sync)",
        f.backend,
        String(f.mappings),
        formatStats(f.unchanged),
        String(f.unchanged.n),
      ],
    ]),
  );
}

export const APPLY_NOTES = [
  "One agent pass (Agent.pass) each: read inputs (in memory), validate, read the node, plan, apply; 16 VIPs; the node holds none of them except while one 'moves here'.",
  "PROCESSES: every process the pass started, reads included: ip -batch, iptables -S of our chain and its hook chain per table (4), ipset save of our 2 sets (full check) or ipset list -t (quick check); then one per write step. The first pass also asks iptables --version; delete reads whole tables (iptables-save).",
  "SETS READ: entries = our ipsets listed in full (`ipset save`); summary = the agent's copy confirmed by `ipset list -t` (quick check).",
  "FOREIGN NAT: the nat table also holds kube-proxy-like service chains (a KUBE-SVC chain with 4 DNAT rules per service, 2,000 services), as on a node of a cluster with that many services.",
  "One case: ip netns exec <ns with eth0 192.0.2.11/24> deno run -A bench/apply_worker.ts <mappings> 16 <cycles> <services> <backend> <family> (JSON lines).",
  "FAMILY ipv6 (lines `apply <backend> <n> ipv6: ...`): the same passes for a cluster of IPv6 alone, as many pods (fd00:10::/64) over 16 VIPs (2001:db8::50-65), eth0 also 2001:db8::11/64: ip6tables and `inet6` ipsets, or the nftables table's IPv6 sets and chains (pods6, vip6-<id>), `ip -6` rules and routes; the moving VIP is placed /128 nodad.",
  "nftables: reads are `ip -batch` and the nf_tables ruleset generation (one netlink request, cmd/nft_generation.ts); while it is the one the agent's last read or write left, nothing was committed since and the agent's copy of our table is exact (SETS READ generation, no nft process). Otherwise `nft -j list table inet kube-egress` (full check; entries) or `nft -j list chains inet` against the agent's copy (quick check; summary). Every write is one `nft -f`. Its first pass also looks for the iptables backend's leftovers (iptables -S of our chains, ipset list -n).",
  "nftables, 'another table changed': a foreign commit (`nft add table ip ke-bench-other`, then `delete`) before each pass moves the generation: the resync lists our table in full. 'element deleted by hand': `nft delete element ... pods` before the pass; the resync puts it back (the worker fails otherwise).",
];
