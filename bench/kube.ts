/**
 * The Kubernetes source at scale, both designs side by side in one run: the
 * test API server (its own namespace on the LAN, HTTPS) holds `pods`
 * synthetic pods in 50 namespaces, policies select those of 5 namespaces (10 %);
 * three real agents program the nodes and a simulated fleet of watchers
 * (bench/kube_fleet_worker.ts, one process) counts what the API server sends
 * each of them.
 * - `watch-all`: the design before the controller (`--kube-selection agent`):
 *   every agent watches every Pod, Namespace, Node and ReplicaSet and selects.
 * - `slices`: `mod.ts controller` publishes EgressSlices; agents watch those,
 *   the EgressVIPs and their own Node.
 * Measured: agent RSS and CPU per pod change; pod created / IP changed /
 * deleted → rules in force on every real node (p50, p99); bytes sent per pod
 * change per watcher; the fleet's initial sync; the controller (or the
 * elected agent) at 100 pod changes per second.
 */
import { parse } from "yaml";
import { join } from "node:path";
import type { AgentProcess } from "../sim/agents.ts";
import { Cluster, type SimPod } from "../sim/cluster.ts";
import {
  egressPolicy,
  egressVip,
  podObject,
  type SimApiServer,
  startApiWithNodes,
  startKubeAgents,
  startKubeController,
} from "../sim/kube_sim.ts";
import { placeVip } from "../sim/vip.ts";
import { table } from "../core/status.ts";
import { onInterrupt, type RuntimeEnv, withEnvironment } from "./lib.ts";
import { AGENT_RUNTIME } from "./agent.ts";

const VIP = "192.0.2.50";
const NAMESPACES = 50;
const SELECTED_NAMESPACES = 5;
const SET = "kube-egress-pods";
/** Unanswered changes at most while the churn sends them. */
const MAX_PENDING = 10;
const WORKER = new URL("./kube_fleet_worker.ts", import.meta.url).pathname;

export type Design = "watch-all" | "slices";

export interface KubeFigures {
  readonly pods: number;
  readonly design: Design;
  readonly watchers: number;
  readonly convergeMs: number;
  readonly rssMiB: number[];
  readonly peakMiB: number[];
  /** CPU ms per pod change, per agent (during the 100/s churn). */
  readonly agentCpuMsPerChange: number[];
  readonly createMs: number[];
  readonly ipChangeMs: number[];
  readonly deleteMs: number[];
  /** The fleet: from the API storing a new pod until the last watcher has its event. */
  readonly fleetCreateMs: number[];
  /**
   * Where a pod creation's time goes, per sample (ms after the API stored the pod): the first
   * and the last watcher of the fleet has the change, the real agents' passes start (the
   * latest of the three) and last (the longest).
   */
  readonly createSteps: {
    firstWatcher: number[];
    lastWatcher: number[];
    passStart: number[];
    passMs: number[];
    /** The longest pass's parts (its log line's inputs_ms, validate_ms, read_ms, ...), per sample. */
    passParts: Record<string, number[]>;
  };
  /** Bytes the API server sent the fleet per pod change, divided by the watchers (churn). */
  readonly bytesPerChangePerWatcher: number;
  readonly fleetSync: { seconds: number; bytes: number; measured: number };
  /** The controller (watch-all: the elected agent) at the churn rate. */
  readonly controller: {
    cpuPercent: number;
    rssMiB: number;
    changesPerSecond: number;
    /** The churn's last change (a pod kept) → rules on every node: the backlog left. */
    lastChangeMs: number;
    /** Churn changes the test API server did not answer within 10 s. */
    unanswered: number;
  };
}

function procStat(pid: number): { cpuMs: number; rssMiB: number; peakMiB: number } {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]); // utime + stime
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kib = (name: string) =>
      Number(status.split("\n").find((l) => l.startsWith(`${name}:`))?.split(/\s+/)[1] ?? NaN);
    return { cpuMs: ticks * 10, rssMiB: kib("VmRSS") / 1024, peakMiB: kib("VmHWM") / 1024 };
  } catch {
    return { cpuMs: NaN, rssMiB: NaN, peakMiB: NaN };
  }
}

async function inSetCount(cluster: Cluster): Promise<number[]> {
  return await Promise.all(cluster.nodes.map(async (n) => {
    const out = await n.ns.exec(["ipset", "list", "-t", SET]);
    return Number(/Number of entries: (\d+)/.exec(out.stdout)?.[1] ?? 0);
  }));
}

/** Polls until `test(ip)` holds on every node; ms epoch when it held everywhere (bounded). */
async function everywhere(
  cluster: Cluster,
  ip: string,
  present: boolean,
  timeoutMs = 20_000,
): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  const done = new Set<string>();
  let last = 0;
  while (Date.now() < deadline) {
    await Promise.all(
      cluster.nodes.filter((n) => !done.has(n.name)).map(async (n) => {
        const r = await n.ns.exec(["ipset", "test", SET, ip], { timeoutMs: 5000 });
        if ((r.code === 0) === present) {
          done.add(n.name);
          last = Date.now();
        }
      }),
    );
    if (done.size === cluster.nodes.length) return last;
    await new Promise((r) => setTimeout(r, 5));
  }
  return NaN;
}

/** The fleet worker, driven over its stdin/stdout. */
class Fleet {
  #next = 1;
  readonly #waiting = new Map<number, (reply: Record<string, unknown>) => void>();
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  ready: Promise<void>;

  constructor(readonly child: Deno.ChildProcess) {
    this.#writer = child.stdin.getWriter();
    let resolveReady!: () => void;
    this.ready = new Promise((r) => (resolveReady = r));
    void (async () => {
      let buffer = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        buffer += chunk;
        let nl: number;
        while ((nl = buffer.indexOf("\n")) >= 0) {
          const reply = JSON.parse(buffer.slice(0, nl));
          buffer = buffer.slice(nl + 1);
          if (reply.ready) resolveReady();
          else this.#waiting.get(reply.id)?.(reply);
        }
      }
    })();
  }

  static async start(api: SimApiServer, design: Design, watchers: number): Promise<Fleet> {
    const config = parse(await Deno.readTextFile(api.kubeconfigPath));
    const caPath = join(api.kubeconfigPath + ".ca.pem");
    await Deno.writeTextFile(
      caPath,
      atob(config.clusters[0].cluster["certificate-authority-data"]),
    );
    const child = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        api.ns.name,
        Deno.execPath(),
        "run",
        "-A",
        "--cached-only",
        "--v8-flags=--max-old-space-size=4096",
        WORKER,
        "--server",
        api.url,
        "--token",
        config.users[0].user.token,
        "--ca",
        caPath,
        "--watchers",
        String(watchers),
        "--design",
        design,
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const fleet = new Fleet(child);
    await fleet.ready;
    return fleet;
  }

  command(op: string, args: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.#next++;
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve);
      void this.#writer.write(new TextEncoder().encode(JSON.stringify({ id, op, ...args }) + "\n"));
    });
  }

  async stop() {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // Gone already.
    }
    await this.child.status;
  }
}

/**
 * The first "pass applied" an agent logged (JSON lines) that ended after `after`: when it started
 * (its end less its duration, ms since the epoch) and how long it took; NaN when none did.
 */
export function firstPassApplied(
  lines: readonly string[],
  after: number,
): { start: number; durationMs: number; parts: Record<string, number> } {
  for (const line of lines) {
    if (!line.includes('"pass applied"')) continue;
    try {
      const entry = JSON.parse(line) as Record<string, unknown>;
      const end = Date.parse(String(entry.time));
      const durationMs = Number(entry.duration_ms);
      if (end < after || !Number.isFinite(durationMs)) continue;
      const parts: Record<string, number> = {};
      for (const part of ["inputs", "validate", "read", "plan", "apply"]) {
        const ms = Number(entry[`${part}_ms`]);
        if (Number.isFinite(ms)) parts[part] = ms;
      }
      return { start: end - durationMs, durationMs, parts };
    } catch {
      // Not a JSON line.
    }
  }
  return { start: NaN, durationMs: NaN, parts: {} };
}

function percentile(samples: readonly number[], p: number): number {
  const sorted = samples.filter((s) => !Number.isNaN(s)).sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** Runs one size with one design. */
export async function benchKubeDesign(
  pods: number,
  design: Design,
  options: { watchers?: number; samples?: number; runtime?: RuntimeEnv } = {},
): Promise<KubeFigures> {
  const watchers = options.watchers ?? 500;
  const samples = options.samples ?? 20;
  const cluster = await Cluster.create({ nodes: 3, podsPerNode: 4 });
  const unregister = onInterrupt(() => cluster.destroy());
  let api: SimApiServer | undefined;
  let fleet: Fleet | undefined;
  const processes: AgentProcess[] = [];
  try {
    // Synthetic pods in 10.32.0.0/12 (100,000 do not fit a /16); the simulated pods are 10.244.x.
    api = await startApiWithNodes(cluster, { pods, firstPodIp: "10.32.0.1" });
    await api.apply(egressVip("office", { ip: VIP, routeId: 5 }));
    for (let k = 0; k < SELECTED_NAMESPACES; k++) {
      await api.apply(egressPolicy(`team-${k}`, "all", { vip: "office", podSelector: {} }));
    }
    await api.apply(egressPolicy("default", "measured", {
      vip: "office",
      podSelector: { matchLabels: { measured: "yes" } },
    }));
    const selected = Math.floor(pods / NAMESPACES) * SELECTED_NAMESPACES +
      Math.min(pods % NAMESPACES, SELECTED_NAMESPACES);
    await placeVip(cluster.nodes, VIP, cluster.node(1), cluster.spec.iface);
    const started = performance.now();
    const server = api;
    const flags = [
      "--pod-subnet",
      "10.32.0.0/12,10.244.0.0/16",
      "--log-format",
      "json",
      ...(design === "watch-all" ? ["--kube-selection", "agent"] : []),
    ];
    // The controller runs from the same image as the agents: the same runtime flags.
    const runtime = options.runtime ?? AGENT_RUNTIME;
    const controller = design === "slices"
      ? withEnvironment(runtime, () => startKubeController(cluster, server))
      : undefined;
    if (controller) processes.push(controller);
    const agents = withEnvironment(runtime, () => startKubeAgents(cluster, server, flags));
    processes.push(...agents);
    let convergeMs = NaN;
    for (let i = 0; i < 2400; i++) {
      if ((await inSetCount(cluster)).every((s) => s >= selected)) {
        convergeMs = performance.now() - started;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    // Status writes and the first resyncs settle.
    await new Promise((r) => setTimeout(r, 3000));
    fleet = await Fleet.start(api, design, watchers);

    const simPods = cluster.pods;
    const createMs: number[] = [];
    const ipChangeMs: number[] = [];
    const deleteMs: number[] = [];
    const fleetCreateMs: number[] = [];
    const createSteps = {
      firstWatcher: [],
      lastWatcher: [],
      passStart: [],
      passMs: [],
      passParts: {},
    } as KubeFigures["createSteps"];
    for (let i = 0; i < samples; i++) {
      const pod = simPods[(2 * i) % simPods.length];
      const other: SimPod = simPods[(2 * i + 1) % simPods.length];
      const name = `measured-${i}`;
      const labels = { measured: "yes" };
      await fleet.command("await", { marker: pod.ip });
      const since = agents.map((a) => a.lines.length);
      const { t } = await api.apply(podObject(pod, name, { labels }));
      const inForce = await everywhere(cluster, pod.ip, true);
      createMs.push(inForce - t);
      for (let k = 0; k < 100; k++) {
        const seen = await fleet.command("seen") as { count: number; times: number[] };
        if (seen.count >= watchers) {
          fleetCreateMs.push(Math.max(...seen.times) - t);
          createSteps.firstWatcher.push(Math.min(...seen.times) - t);
          createSteps.lastWatcher.push(Math.max(...seen.times) - t);
          break;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      const passes = agents.map((a, k) => firstPassApplied(a.lines.slice(since[k]), t));
      createSteps.passStart.push(Math.max(...passes.map((p) => p.start - t)));
      const longest = passes.reduce((a, b) => (b.durationMs > a.durationMs ? b : a));
      createSteps.passMs.push(longest.durationMs);
      for (const [part, ms] of Object.entries(longest.parts)) {
        (createSteps.passParts[part] ??= []).push(ms);
      }
      // Its IP changes (as a sandbox recreated on the node would).
      const moved = podObject(other, name, { labels });
      const { t: tMove } = await api.apply(moved);
      ipChangeMs.push(await everywhere(cluster, other.ip, true) - tMove);
      await everywhere(cluster, pod.ip, false);
      const { t: tDelete } = await api.delete("Pod", name, "default");
      deleteMs.push(await everywhere(cluster, other.ip, false) - tDelete);
    }

    // 100 pod changes per second for 10 s: a new selected pod (a copy of a synthetic one, so
    // as large as a real Pod), then its deletion.
    const template = await api.get<Record<string, unknown> & { metadata: object; status: object }>(
      "Pod",
      "app-0",
      "team-0",
    );
    const churnSeconds = 10;
    const rate = 100;
    const beforeBytes = (await fleet.command("bytes")).bytes as number;
    const agentsBefore = agents.map((a) => procStat(a.pid).cpuMs);
    const elected = controller ?? agents.find((a) => a.lines.some((l) => l.includes("elected")));
    const controllerBefore = elected ? procStat(elected.pid).cpuMs : NaN;
    const churnStart = performance.now();
    const pod = (i: number) => {
      const ip = `10.40.${(i >> 8) & 255}.${i & 255}`;
      const object = template ?? podObject(simPods[0], `churn-${i}`, { namespace: "team-0" });
      return {
        ip,
        object: {
          ...object,
          metadata: {
            ...object.metadata,
            name: `churn-${i}`,
            uid: undefined,
            resourceVersion: undefined,
          },
          status: { ...object.status, podIP: ip, podIPs: [{ ip }] },
        },
      };
    };
    // Open loop: each change is sent when due, not when the one before was answered (waiting
    // for each reply held the rate to the control channel's round trip, 17-59/s); at most
    // MAX_PENDING unanswered, so a server that falls behind shows as a lower rate, not a queue.
    const pending = new Set<Promise<void>>();
    let changes = 0;
    let unanswered = 0;
    const pairs = churnSeconds * rate / 2;
    for (let i = 0; i < pairs; i++) {
      const { object } = pod(i);
      while (pending.size >= MAX_PENDING) await Promise.race(pending);
      // A change the server did not answer in time is counted, not fatal: the rate shows it.
      const sent: Promise<void> = api.apply(object)
        .then(() => api!.delete("Pod", `churn-${i}`, "team-0"))
        .then(() => {}, () => void unanswered++)
        .finally(() => pending.delete(sent));
      pending.add(sent);
      changes += 2;
      const wait = churnStart + (changes / rate) * 1000 - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    await Promise.all(pending);
    // The last change stays: its time to rules on every node includes whatever backlog the
    // churn left in the controller (watch-all: in every agent).
    const last = pod(pairs);
    const { t: tLast } = await api.apply(last.object);
    changes += 1;
    const churnMs = performance.now() - churnStart;
    const afterChurnMs = await everywhere(cluster, last.ip, true) - tLast;
    await api.delete("Pod", last.object.metadata.name, "team-0");
    await everywhere(cluster, last.ip, false);
    // Let the last events reach everyone.
    await new Promise((r) => setTimeout(r, 2000));
    const afterBytes = (await fleet.command("bytes")).bytes as number;
    const controllerAfter = elected ? procStat(elected.pid) : undefined;
    const agentCpuMsPerChange = agents.map((a, k) =>
      (procStat(a.pid).cpuMs - agentsBefore[k]) / changes
    );

    // Initial sync of the fleet (as after a DaemonSet rollout): every watcher lists what an
    // agent lists at start. watch-all: 10 lists measured (500 would move ~100 GB at 100,000).
    const sample = design === "slices" ? watchers : Math.min(10, watchers);
    const sync = await fleet.command("sync", { sample, concurrency: 10 }) as {
      bytes: number;
      ms: number;
    };
    const scale = watchers / sample;
    const memory = agents.map((a) => procStat(a.pid));
    return {
      pods,
      design,
      watchers,
      convergeMs,
      rssMiB: memory.map((m) => m.rssMiB),
      peakMiB: memory.map((m) => m.peakMiB),
      agentCpuMsPerChange,
      createMs,
      ipChangeMs,
      deleteMs,
      fleetCreateMs,
      createSteps,
      bytesPerChangePerWatcher: (afterBytes - beforeBytes) / changes / watchers,
      fleetSync: { seconds: (sync.ms * scale) / 1000, bytes: sync.bytes * scale, measured: sample },
      controller: {
        cpuPercent: controllerAfter
          ? ((controllerAfter.cpuMs - controllerBefore) / churnMs) * 100
          : NaN,
        rssMiB: controllerAfter?.rssMiB ?? NaN,
        changesPerSecond: changes / (churnMs / 1000),
        lastChangeMs: afterChurnMs,
        unanswered,
      },
    };
  } finally {
    await fleet?.stop();
    for (const p of processes) await p.stop();
    await api?.stop();
    await cluster.destroy();
    unregister();
  }
}

const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : "NaN");

/** The issue's line, one per size and design. */
export function kubeLine(f: KubeFigures): string {
  const rss = Math.max(...f.peakMiB);
  return `kube ${f.design} ${f.pods} pods: agent RSS max ${f0(rss)} MiB, pod to rules p50 ${
    f0(percentile(f.createMs, 50))
  } ms p99 ${f0(percentile(f.createMs, 99))} ms, bytes per change per watcher ${
    f0(f.bytesPerChangePerWatcher)
  }`;
}

export function renderKube(figures: readonly KubeFigures[]): string {
  const pair = (s: readonly number[]) => `${f0(percentile(s, 50))} / ${f0(percentile(s, 99))}`;
  return table(
    [
      "pods in API",
      "design",
      "all nodes in sync (ms)",
      "agent RSS MiB now (peak)",
      "agent CPU ms per pod change",
      "pod created → rules, p50 / p99 ms",
      "pod IP changed → rules",
      "pod deleted → rules",
      "fleet has the new pod, p50 / p99 ms",
      "bytes per change per watcher",
      "fleet initial sync",
      "controller at 100 changes/s",
    ],
    figures.map((f) => [
      String(f.pods),
      f.design,
      f0(f.convergeMs),
      f.rssMiB.map((v, k) => `${f0(v)} (${f0(f.peakMiB[k])})`).join(" / "),
      f.agentCpuMsPerChange.map((v) => v.toFixed(1)).join(" / "),
      pair(f.createMs),
      pair(f.ipChangeMs),
      pair(f.deleteMs),
      pair(f.fleetCreateMs),
      f0(f.bytesPerChangePerWatcher),
      `${f.fleetSync.seconds.toFixed(1)} s, ${(f.fleetSync.bytes / 2 ** 20).toFixed(0)} MiB${
        f.fleetSync.measured < f.watchers
          ? ` (${f.fleetSync.measured} lists ×${f.watchers / f.fleetSync.measured})`
          : ""
      }`,
      `${f.controller.cpuPercent.toFixed(0)} % CPU, ${f0(f.controller.rssMiB)} MiB, ${
        f.controller.changesPerSecond.toFixed(0)
      }/s${
        f.controller.unanswered ? ` (${f.controller.unanswered} unanswered)` : ""
      }, last change → rules ${f0(f.controller.lastChangeMs)} ms`,
    ]),
  );
}

/** Where a pod creation's time went (p50 of the samples), one note per size and design. */
export function createStepsNote(f: KubeFigures): string {
  const p = (s: readonly number[]) => f0(percentile(s, 50));
  const c = f.createSteps;
  return `${f.design} ${f.pods} pods, pod created → rules, where the time goes (p50, ms after the API stored the pod): first watcher of the fleet has the change ${
    p(c.firstWatcher)
  }, last watcher ${p(c.lastWatcher)}; the three agents' passes start by ${
    p(c.passStart)
  } and take ${p(c.passMs)} (the longest: ${
    Object.entries(c.passParts).map(([part, ms]) => `${part} ${p(ms)}`).join(", ")
  }); rules seen on every node ${p(f.createMs)}`;
}

export const KUBE_NOTES = [
  "Test API server (sim/kube_api.ts) in its own namespace on the LAN, HTTPS with a token; synthetic pods in 50 namespaces, policies select those of 5 (10 %); 3 real agents (`mod.ts run --source kubernetes --vip-mode external`, the shipped runtime flags) in the node namespaces.",
  "watch-all = `--kube-selection agent` (every agent watches every Pod, Namespace, Node and ReplicaSet and selects; the elected agent writes statuses; the design before the controller). slices = `mod.ts controller` in the API server's namespace publishes EgressSlices; agents watch EgressSlices, EgressVIPs and their own Node.",
  "Fleet: 500 simulated agents in one process (bench/kube_fleet_worker.ts), each watching what an agent of the design watches first (watch-all: pods and VIPs; slices: slices and VIPs), counting bytes and when the new pod's address reaches it.",
  "Latencies: from the API server storing the change until `ipset test` agrees on every real node (polled, a few ms resolution); 20 samples each; IP change = the same Pod with another address.",
  "Bytes per change per watcher: everything the API server sent the fleet during 10 s of 100 pod changes per second (a new selected pod, then its deletion), divided by the changes and the watchers; status writes are rate-limited (a round per 0.5 s) and included.",
  "Initial sync: every watcher lists what an agent lists at start, 10 at a time; watch-all: 10 lists measured and scaled to 500 (500 full lists at 100,000 pods would move ~100 GB through a test server on 2 cores).",
  "Churn: changes sent open loop when due (at most 10 create/delete pairs unanswered; the rate shown is what the test API server took), 1,000 changes then one pod kept; `last change → rules` is that pod's time to rules on every node, the backlog the churn left. The test server encodes each event once for all watches (encoding it per watch held it to 33-59 changes/s).",
  "Controller: CPU (utime+stime over the churn) and RSS of `mod.ts controller`; watch-all: of the elected agent, which selects as the others do and writes the statuses.",
  "Agent CPU per pod change: each agent's utime+stime over the churn divided by the changes.",
];
