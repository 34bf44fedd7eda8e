/**
 * Agent benchmark: the real CLI (`mod.ts run`) running in a throwaway
 * namespace with 10,000 pods mapped: its memory (RSS) after the first pass and
 * after a while of resyncs and events, and the time from a pod event (a new
 * mapping appearing in the source) until the agent reports the transaction
 * that puts it in force, checked in the kernel afterwards. Figures, not
 * pass/fail.
 */
import { join } from "node:path";
import { NetnsSet, newRunId } from "../sim/netns.ts";
import { AgentLog, benchNode, fileAgentArgv } from "./file_agent.ts";
import { table } from "../core/status.ts";
import { podAddress, vipAddress } from "./inputs.ts";
import {
  describeEnv,
  formatStats,
  onInterrupt,
  type RuntimeEnv,
  type Stats,
  stats,
  withEnvironment,
} from "./lib.ts";

/**
 * How the agent is meant to run (Dockerfile ENTRYPOINT, deno.json task "run",
 * README "Memory"): small V8 semi-spaces, an old generation that grows by 1.5×
 * (not up to V8's default 2-4×) between collections; glibc returning freed
 * memory to the system instead of keeping it (blocks of 16 KiB and more in
 * mappings of their own, returned when freed) is the agent's own doing
 * (cmd/malloc.ts), so it is not in this environment.
 */
export const AGENT_RUNTIME: RuntimeEnv = {
  DENO_V8_FLAGS: "--max-semi-space-size=2,--heap-growing-percent=50",
};

/** Deno's and glibc's defaults: an empty GLIBC_TUNABLES keeps the agent from setting malloc's. */
export const DEFAULT_RUNTIME: RuntimeEnv = { GLIBC_TUNABLES: "" };

/** AGENT_RUNTIME with V8's memory saver mode: smaller heap, more GC work per pass. */
export const MEMORY_SAVER_RUNTIME: RuntimeEnv = {
  ...AGENT_RUNTIME,
  DENO_V8_FLAGS: `${AGENT_RUNTIME.DENO_V8_FLAGS},--memory-saver-mode`,
};

export const MEMORY_SAVER_NOTE =
  "--memory-saver-mode is not the default: it makes each pass ~1.5× slower (e.g. one pod added at 10,000: ip netns exec <ns> env DENO_V8_FLAGS=--max-semi-space-size=2,--heap-growing-percent=50,--memory-saver-mode deno run -A bench/apply_worker.ts 10000 16 3), for nodes where memory matters more than pass time.";

export interface AgentFigure {
  readonly source: string;
  /** The environment the agent ran with ({} = Deno's and glibc's defaults). */
  readonly runtime: RuntimeEnv;
  readonly pods: number;
  /** From starting the process to the first pass applied. */
  readonly startMs: number;
  readonly rssAfterStartMiB: number;
  readonly rssAfterEventsMiB: number;
  readonly peakRssMiB: number;
  /** Pod event → transaction applied (log line), per event. */
  readonly eventToRules: Stats;
  readonly resyncs: number;
}

function rssOf(pid: number): { rss: number; peak: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(status)?.[1]) / 1024;
  return { rss: field("VmRSS"), peak: field("VmHWM") };
}

async function writeFiles(dir: string, files: Record<string, string>) {
  await Deno.mkdir(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) {
    await Deno.writeTextFile(join(dir, name), `${content}\n`);
  }
}

/**
 * The file source: 16 VIPs and `pods` mapping files; each event writes one
 * more file. Runs for `seconds` with a resync every `interval` seconds.
 */
export async function benchAgentFiles(
  runtime: RuntimeEnv = {},
  pods = 10_000,
  events = 10,
  interval = 5,
): Promise<AgentFigure> {
  const namespaces = new NetnsSet(newRunId());
  const dir = await Deno.makeTempDir({ prefix: `${namespaces.runId}-agent-` });
  let child: Deno.ChildProcess | undefined;
  const cleanup = async () => {
    try {
      child?.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child?.status;
    await namespaces.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const unregister = onInterrupt(cleanup);
  try {
    const vips = Object.fromEntries(
      Array.from({ length: 16 }, (_, i) => [vipAddress(i), `${i + 1}`]),
    );
    const mappings = Object.fromEntries(
      Array.from({ length: pods }, (_, i) => [podAddress(i), vipAddress(i % 16)]),
    );
    await writeFiles(join(dir, "vips"), vips);
    await writeFiles(join(dir, "pods"), mappings);
    const ns = await benchNode(namespaces, "agent");
    const started = performance.now();
    child = withEnvironment(runtime, () => ns.spawn(fileAgentArgv(dir, interval)));
    const log = new AgentLog(child.stderr);
    const applied = (e: Record<string, unknown>) => e.msg === "pass applied";
    const first = await log.waitFor(applied, started, 60_000);
    const afterStart = rssOf(child.pid);
    const latencies: number[] = [];
    for (let i = 0; i < events; i++) {
      // Past the debounce of the previous event, and between resyncs as they come.
      await new Promise((r) => setTimeout(r, 400));
      const ip = podAddress(pods + i);
      const since = performance.now();
      await Deno.writeTextFile(join(dir, "pods", ip), `${vipAddress(i % 16)}\n`);
      const hit = await log.waitFor((e) => applied(e) && e.mappings === pods + i + 1, since);
      latencies.push(hit.at - since);
      const inForce = await ns.exec(["ipset", "test", "kube-egress-pods", ip]);
      if (inForce.code !== 0) {
        throw new Error(`pod ${ip} was reported applied but is not in the set`);
      }
    }
    // Let at least one more resync (a full check) run before the last reading.
    await new Promise((r) => setTimeout(r, interval * 1000 + 500));
    const afterEvents = rssOf(child.pid);
    return {
      source: "files",
      runtime,
      pods,
      startMs: first.at - started,
      rssAfterStartMiB: afterStart.rss,
      rssAfterEventsMiB: afterEvents.rss,
      peakRssMiB: afterEvents.peak,
      eventToRules: stats(latencies),
      resyncs: log.lines.filter((l) => l.entry.trigger === "resync").length,
    };
  } finally {
    await cleanup();
    unregister();
  }
}

export function renderAgent(figures: readonly AgentFigure[]): string {
  return table(
    [
      "SOURCE",
      "RUNTIME",
      "PODS",
      "FIRST PASS ms",
      "RSS AFTER START MiB",
      "RSS LATER MiB",
      "PEAK RSS MiB",
      "POD EVENT → RULES ms median (min–max)",
      "N",
    ],
    figures.map((f) => [
      f.source,
      describeEnv(f.runtime),
      String(f.pods),
      f.startMs.toFixed(0),
      f.rssAfterStartMiB.toFixed(0),
      f.rssAfterEventsMiB.toFixed(0),
      f.peakRssMiB.toFixed(0),
      formatStats(f.eventToRules),
      String(f.eventToRules.n),
    ]),
  );
}

export const AGENT_NOTES = [
  "The real CLI: deno run -A mod.ts run --vip-mode external -u 5 --log-format json ... in a namespace (eth0 192.0.2.11/24), 16 VIPs.",
  "RUNTIME: the environment the agent started with. After a pass the live heap is ~15 MiB at 10,000 pods (files); the rest of the RSS is Deno and the modules (~75 MiB before the first pass: Deno 34, dax 26, zod/commander), heap V8 keeps for reuse (by default up to 3 × 16 MiB of young generation: DENO_V8_FLAGS=--max-semi-space-size=2 caps it), old generation grown ahead of need (--heap-growing-percent=50 limits the growth to 1.5× the live size), and memory glibc keeps after freeing it (the agent's own mallopt, cmd/malloc.ts, makes it give it back; an empty GLIBC_TUNABLES keeps glibc's defaults). Neither costs measurable time per pass.",
  "FIRST PASS: from starting the process (Deno start-up, reading the source) to its first 'pass applied' log line. RSS: VmRSS of the agent process right after that, and again after the events and one more resync (a full check); PEAK: its VmHWM.",
  "POD EVENT → RULES: from the new mapping appearing in the source (files: a new file written; the watcher debounces 100 ms) to the 'pass applied' line of the pass that wrote it (logged after the transaction is in the kernel); each is then checked with ipset test.",
];
