/**
 * Forwarding benchmark, in the simulator: TCP throughput (iperf3) and
 * new-connection rate from a mapped and an unmapped pod to the outside host,
 * with kube-egress absent, with one mapping (the mapped pod's) and with 10,000
 * mappings installed. The mapped pod runs on node1 and its VIP is held by
 * node2, so its traffic takes the whole steered path (mark, policy route,
 * holder, SNAT). Configurations are interleaved round by round so that drift
 * in the machine's load hits all of them alike. Figures, not pass/fail.
 */
import { applyOnAllNodes, EXTERNAL } from "../sim/agents.ts";
import { Cluster, OUTSIDE_IP, type SimPod } from "../sim/cluster.ts";
import type { Netns } from "../sim/netns.ts";
import { sourceSeenRetry } from "../sim/probe.ts";
import { placeVip } from "../sim/vip.ts";
import { table } from "../core/status.ts";
import { formatStats, onInterrupt, type Stats, stats } from "./lib.ts";

const ACCEPT_SERVER = new URL("./accept_server.ts", import.meta.url).pathname;
const CONNECT_WORKER = new URL("./connect_worker.ts", import.meta.url).pathname;
const ACCEPT_PORT = 7100;

/** The VIPs: the mapped pod's (held by node2) and 15 more that the filler pods use. */
const VIPS = Object.fromEntries(
  Array.from({ length: 16 }, (_, i) => [`192.0.2.${50 + i}`, 5 + i]),
);
const MAPPED_VIP = "192.0.2.50";

export type Config = "absent" | "1 mapping" | "10,000 mappings";
const CONFIGS: readonly Config[] = ["absent", "1 mapping", "10,000 mappings"];

export interface Trial {
  round: number;
  pod: "mapped" | "unmapped";
  config: Config;
  gbps: number;
  connPerSec: number;
}

export interface ForwardingFigure {
  pod: "mapped" | "unmapped";
  config: Config;
  gbps: Stats;
  connPerSec: Stats;
}

/** One configuration against another for one pod, paired round by round. */
export interface ForwardingRatio {
  pod: "mapped" | "unmapped";
  config: Config;
  base: Config;
  gbps: Stats;
  connPerSec: Stats;
}

export interface ForwardingResult {
  figures: ForwardingFigure[];
  ratios: ForwardingRatio[];
}

/** The comparisons the issue asks for, and the cost of the steered path itself. */
const COMPARISONS: readonly [ForwardingRatio["pod"], Config, Config][] = [
  ["mapped", "10,000 mappings", "1 mapping"],
  ["unmapped", "10,000 mappings", "1 mapping"],
  ["unmapped", "10,000 mappings", "absent"],
  ["unmapped", "1 mapping", "absent"],
  ["mapped", "1 mapping", "absent"],
];

export interface ForwardingOptions {
  rounds: number;
  /** Seconds per iperf3 run (after a 1 s omitted warm-up) and per connection-rate run. */
  seconds: number;
  progress: (line: string) => void;
  /** The agents' datapath backend (default iptables). */
  backend?: "iptables" | "nftables";
}

/** 9,999 pod IPs that no real pod has, spread over the VIPs, plus the mapped pod. */
function mappings(config: Config, mapped: SimPod): Record<string, string> {
  if (config === "absent") return {};
  const pods: Record<string, string> = { [mapped.ip]: MAPPED_VIP };
  if (config === "1 mapping") return pods;
  const vips = Object.keys(VIPS);
  for (let i = 0; i < 9_999; i++) {
    pods[`10.244.${100 + (i >> 8)}.${i & 255}`] = vips[i % vips.length];
  }
  return pods;
}

async function configure(cluster: Cluster, config: Config, mapped: SimPod) {
  await cluster.writeMappings(mappings(config, mapped), VIPS);
  // "absent": kube-egress deleted from every node, as if never installed.
  await applyOnAllNodes(cluster, config === "absent" ? [...EXTERNAL, "-d"] : EXTERNAL);
  // Measure the path we mean to measure: the mapped pod leaves as the VIP only when mapped.
  const expected = config === "absent" ? mapped.node.ip : MAPPED_VIP;
  const seen = await sourceSeenRetry(mapped.ns, OUTSIDE_IP, "tcp");
  if (seen !== expected) {
    throw new Error(`with ${config}: the mapped pod left as ${seen}, expected ${expected}`);
  }
}

/**
 * iperf3's CPU affinity: the client (whose CPU also runs the forwarding, as
 * veth delivery is synchronous) on one CPU, the server on another, so that
 * the two ends do not trade places between runs. Nothing on a single CPU.
 */
function affinity(cpu: number): string[] {
  return navigator.hardwareConcurrency >= 2 ? ["-A", String(cpu)] : [];
}

async function throughputGbps(pod: Netns, seconds: number): Promise<number> {
  const out = await pod.run(
    [
      "iperf3",
      ...affinity(0),
      "-c",
      OUTSIDE_IP,
      "-t",
      String(seconds),
      "-O",
      "1",
      "-J",
      "--connect-timeout",
      "3000",
    ],
    { timeoutMs: (seconds + 15) * 1000 },
  );
  const report = JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } };
  return report.end.sum_received.bits_per_second / 1e9;
}

async function connectionsPerSecond(pod: Netns, seconds: number): Promise<number> {
  const out = await pod.run(
    [
      Deno.execPath(),
      "run",
      "--allow-net",
      "--cached-only",
      CONNECT_WORKER,
      OUTSIDE_IP,
      String(ACCEPT_PORT),
      String(seconds),
    ],
    { timeoutMs: (seconds + 20) * 1000 },
  );
  const r = JSON.parse(out) as { connections: number; seconds: number; failures: number };
  if (r.failures > 0) throw new Error(`${r.failures} connection(s) failed from ${pod.name}`);
  return r.connections / r.seconds;
}

/**
 * Starts a long-running server in a namespace and waits until its output
 * matches `ready`; its output is drained afterwards so it never blocks.
 */
async function startServer(ns: Netns, argv: string[], ready: RegExp) {
  const child = ns.spawn(argv, { stdout: "piped" });
  const lines = child.stdout.pipeThrough(new TextDecoderStream());
  const seen = new Promise<void>((resolve, reject) => {
    let text = "";
    (async () => {
      for await (const chunk of lines) {
        text += chunk;
        if (ready.test(text)) resolve();
      }
      reject(new Error(`${argv[0]} exited in ${ns.name}: ${text}`));
    })().catch(reject);
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${argv[0]} did not start in ${ns.name}`)), 20_000);
  });
  await Promise.race([seen, timeout]).finally(() => clearTimeout(timer));
}

/** Builds a 2-node cluster, runs the rounds, tears everything down. */
export async function benchForwarding(options: ForwardingOptions): Promise<ForwardingResult> {
  const cluster = await Cluster.create({
    nodes: 2,
    podsPerNode: 2,
    backend: options.backend ?? "iptables",
  }, {
    progress: options.progress,
  });
  const unregister = onInterrupt(() => cluster.destroy());
  const trials: Trial[] = [];
  try {
    const mapped = cluster.pod(1, 1);
    const unmapped = cluster.pod(1, 2);
    for (const pod of [mapped, unmapped]) {
      // Thousands of short connections: reuse the pods' TIME_WAIT ports (per-namespace sysctls).
      await pod.ns.sysctl("net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000");
    }
    await placeVip(cluster.nodes, MAPPED_VIP, cluster.node(2), cluster.spec.iface);
    const outside = cluster.outside.ns;
    await startServer(outside, ["iperf3", ...affinity(1), "-s", "--forceflush"], /listening/i);
    await startServer(
      outside,
      [Deno.execPath(), "run", "--allow-net", "--cached-only", ACCEPT_SERVER, String(ACCEPT_PORT)],
      /ready/,
    );
    for (let round = 0; round < options.rounds; round++) {
      // Rotate the order so no configuration always runs first or last.
      const order = CONFIGS.map((_, i) => CONFIGS[(i + round) % CONFIGS.length]);
      for (const config of order) {
        options.progress(`round ${round + 1}/${options.rounds}: ${config}`);
        await configure(cluster, config, mapped);
        for (const [name, pod] of [["mapped", mapped], ["unmapped", unmapped]] as const) {
          trials.push({
            round,
            pod: name,
            config,
            gbps: await throughputGbps(pod.ns, options.seconds),
            connPerSec: await connectionsPerSecond(pod.ns, options.seconds),
          });
        }
      }
    }
  } finally {
    await cluster.destroy();
    unregister();
  }
  return summarize(trials);
}

/** Medians per pod and configuration, and per-round paired ratios (drift cancels within a round). */
export function summarize(trials: readonly Trial[]): ForwardingResult {
  const figures: ForwardingFigure[] = [];
  for (const pod of ["mapped", "unmapped"] as const) {
    for (const config of CONFIGS) {
      const of = trials.filter((t) => t.pod === pod && t.config === config);
      figures.push({
        pod,
        config,
        gbps: stats(of.map((t) => t.gbps)),
        connPerSec: stats(of.map((t) => t.connPerSec)),
      });
    }
  }
  const ratios = COMPARISONS.map(([pod, config, base]) => {
    const pairs = [...new Set(trials.map((t) => t.round))].flatMap((round) => {
      const find = (c: Config) =>
        trials.find((t) => t.round === round && t.pod === pod && t.config === c);
      const [a, b] = [find(config), find(base)];
      return a && b ? [{ gbps: a.gbps / b.gbps, conn: a.connPerSec / b.connPerSec }] : [];
    });
    return {
      pod,
      config,
      base,
      gbps: stats(pairs.map((p) => p.gbps)),
      connPerSec: stats(pairs.map((p) => p.conn)),
    };
  });
  return { figures, ratios };
}

function spread(s: Stats): string {
  return s.n < 2 ? "–" : `±${(((s.max - s.min) / 2 / s.median) * 100).toFixed(0)}%`;
}

export function renderForwarding({ figures, ratios }: ForwardingResult): string {
  const measured = table(
    [
      "POD",
      "KUBE-EGRESS",
      "THROUGHPUT Gbit/s median (min–max)",
      "SPREAD",
      "NEW CONN/s median (min–max)",
      "SPREAD",
      "N",
    ],
    figures.map((f) => [
      f.pod,
      f.config,
      formatStats(f.gbps, 2),
      spread(f.gbps),
      formatStats(f.connPerSec, 0),
      spread(f.connPerSec),
      String(f.gbps.n),
    ]),
  );
  const paired = table(
    ["RATIO (paired per round)", "THROUGHPUT median (min–max)", "NEW CONN/s median (min–max)"],
    ratios.map((r) => [
      `${r.pod}: ${r.config} / ${r.base}`,
      formatStats(r.gbps, 3),
      formatStats(r.connPerSec, 3),
    ]),
  );
  return `${measured}\n\n${paired}`;
}

export function forwardingNotes({ figures }: ForwardingResult, options: ForwardingOptions) {
  const spreads = figures.flatMap((f) => [f.gbps, f.connPerSec])
    .map((s) => ((s.max - s.min) / 2 / s.median) * 100);
  return [
    `Backend: ${
      options.backend ?? "iptables"
    } (BENCH_BACKEND=nftables for the other). Cluster: 2 nodes, LAN bridge, router, outside host 198.51.100.10 (sim/cluster.ts). Mapped pod pod1-1 on node1, its VIP ${MAPPED_VIP} on node2; unmapped pod pod1-2 on node1 (CNI masquerade). 16 VIPs; the 9,999 other mappings are pod IPs with no pod.`,
    `Each round (${options.rounds} in all) applies each configuration in turn (rotated order) with the real agent (mod.ts run / run -d), checks the mapped pod's source address, then runs per pod: iperf3 -A 0 -c -t ${options.seconds} -O 1 (one TCP stream; server -A 1) and ${options.seconds} s of sequential connect + close (bench/connect_worker.ts; tcp_tw_reuse in the pods).`,
    `Noise: on this 2-core VM both ends of iperf3 and the forwarding run on the same two CPUs, so a run is CPU-bound and shares them with whatever else runs; the half-range spread of a cell reaches ±${
      Math.max(...spreads).toFixed(0)
    }% (median cell ±${
      stats(spreads).median.toFixed(0)
    }%). A ratio inside that spread cannot be told from 1.`,
    "RATIO (paired per round): each round's figure over the same round's baseline, so that slow drift in the machine's load cancels; median and range over the rounds. The 5 % target is about 10,000 mappings against 1 (what the number of mappings costs) and, for the unmapped pod, against kube-egress absent (what being installed costs).",
    "'absent' = kube-egress deleted from every node; the mapped pod then leaves through the CNI masquerade like the unmapped one. 'mapped: 1 mapping / absent' includes the extra hop through the holder.",
  ];
}
