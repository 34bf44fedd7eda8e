/**
 * The Kubernetes source at scale, in the simulator: the test API server (in its
 * own LAN namespace, HTTPS) holds `pods` synthetic pods in 50 namespaces, each
 * namespace with a policy selecting all of its pods; three real agents
 * (`mod.ts run --source kubernetes`) program the nodes. Measured: time from
 * agent start until every node has every mapping, each agent's memory (RSS now
 * and peak), and the time from a pod's IP appearing in the API to its rules
 * being in force on every node.
 */
import type { AgentProcess } from "../sim/agents.ts";
import { Cluster } from "../sim/cluster.ts";
import {
  egressPolicy,
  egressVip,
  podToRulesLatency,
  type SimApiServer,
  startApiWithNodes,
  startKubeAgents,
  startKubeController,
} from "../sim/kube_sim.ts";
import { placeVip } from "../sim/vip.ts";
import { table } from "../core/status.ts";
import {
  describeEnv,
  formatStats,
  onInterrupt,
  type RuntimeEnv,
  stats,
  withEnvironment,
} from "./lib.ts";
import type { Netns } from "../sim/netns.ts";

const VIP = "192.0.2.50";
const NAMESPACES = 50;

export interface KubeFigures {
  readonly pods: number;
  /** The environment the agents ran with ({} = Deno's and glibc's defaults). */
  readonly runtime: RuntimeEnv;
  readonly convergeMs: number;
  readonly rssMiB: number[];
  readonly peakMiB: number[];
  readonly latencyMs: number[];
}

async function agentMemory(ns: Netns): Promise<{ rss: number; peak: number }> {
  const pids = (await ns.run(["ip", "netns", "pids", ns.name]).catch(() => "")).split("\n")
    .filter(Boolean);
  for (const pid of pids) {
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
    if (!cmdline.includes("mod.ts")) continue;
    const status = await Deno.readTextFile(`/proc/${pid}/status`);
    const field = (name: string) =>
      Number(status.split("\n").find((l) => l.startsWith(`${name}:`))?.split(/\s+/)[1] ?? NaN) /
      1024;
    return { rss: field("VmRSS"), peak: field("VmHWM") };
  }
  return { rss: NaN, peak: NaN };
}

async function setSize(ns: Netns): Promise<number> {
  const out = await ns.exec(["ipset", "list", "-t", "kube-egress-pods"]);
  return Number(/Number of entries: (\d+)/.exec(out.stdout)?.[1] ?? 0);
}

/** Runs the scenario with `pods` synthetic pods and `samples` latency samples. */
export async function benchKube(
  pods: number,
  runtime: RuntimeEnv = {},
  samples = 10,
): Promise<KubeFigures> {
  const cluster = await Cluster.create({ nodes: 3, podsPerNode: 4 });
  const unregister = onInterrupt(() => cluster.destroy());
  let api: SimApiServer | undefined;
  const agents: AgentProcess[] = [];
  try {
    api = await startApiWithNodes(cluster, { pods, firstPodIp: "10.244.100.1" });
    await api.apply(egressVip("office", { ip: VIP, routeId: 5 }));
    const namespaces = pods > 0 ? Math.min(NAMESPACES, pods) : 0;
    for (let k = 0; k < namespaces; k++) {
      await api.apply(egressPolicy(`team-${k}`, "all", { vip: "office", podSelector: {} }));
    }
    await api.apply(egressPolicy("default", "measured", {
      vip: "office",
      podSelector: { matchLabels: { measured: "yes" } },
    }));
    await placeVip(cluster.nodes, VIP, cluster.node(1), cluster.spec.iface);
    const started = performance.now();
    // The agents inherit the environment (DENO_V8_FLAGS, GLIBC_TUNABLES).
    const server = api;
    agents.push(startKubeController(cluster, server));
    agents.push(
      ...withEnvironment(
        runtime,
        () => startKubeAgents(cluster, server, ["--log-format", "json"]),
      ),
    );
    let convergeMs = NaN;
    for (let i = 0; i < 1200; i++) {
      const sizes = await Promise.all(cluster.nodes.map((n) => setSize(n.ns)));
      if (sizes.every((s) => s >= pods)) {
        convergeMs = performance.now() - started;
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    // Let the elected agent finish its status writes before measuring.
    await new Promise((r) => setTimeout(r, 3000));
    const latencyMs: number[] = [];
    const simPods = cluster.pods;
    for (let i = 0; i < samples; i++) {
      const pod = simPods[i % simPods.length];
      const name = `measured-${i}`;
      const { totalMs } = await podToRulesLatency(api, cluster.nodes, pod, name, {
        measured: "yes",
      });
      latencyMs.push(totalMs);
      await api.delete("Pod", name, "default");
      // Wait until the deletion is applied everywhere before reusing the IP.
      for (let k = 0; k < 200; k++) {
        const gone = await Promise.all(
          cluster.nodes.map(async (n) =>
            (await n.ns.exec(["ipset", "test", "kube-egress-pods", pod.ip])).code !== 0
          ),
        );
        if (gone.every(Boolean)) break;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const memory = await Promise.all(cluster.nodes.map((n) => agentMemory(n.ns)));
    return {
      pods,
      runtime,
      convergeMs,
      rssMiB: memory.map((m) => m.rss),
      peakMiB: memory.map((m) => m.peak),
      latencyMs,
    };
  } finally {
    for (const agent of agents) await agent.stop();
    await api?.stop();
    await cluster.destroy();
    unregister();
  }
}

export function renderKube(figures: readonly KubeFigures[]): string {
  return table(
    [
      "pods in API",
      "agent runtime",
      "all nodes in sync (ms)",
      "agent RSS MiB (3 nodes)",
      "peak MiB",
      "pod IP → rules on all nodes, ms median (min–max)",
    ],
    figures.map((f) => [
      String(f.pods),
      describeEnv(f.runtime),
      f.pods === 0 ? "–" : f.convergeMs.toFixed(0),
      f.rssMiB.map((v) => v.toFixed(0)).join(" / "),
      f.peakMiB.map((v) => v.toFixed(0)).join(" / "),
      formatStats(stats(f.latencyMs), 0),
    ]),
  );
}

export const KUBE_NOTES = [
  "Test API server (sim/kube_api.ts) in its own namespace on the LAN, HTTPS with a token; agents are `mod.ts run --source kubernetes --vip-mode external` in the node namespaces; every synthetic pod is selected (50 namespaces, one policy each), so each node's pods set holds them all.",
  "Latency: from the API server storing a new Pod (selected by label) until `ipset test` finds its IP on every node (polled, a few ms resolution); 10 samples.",
  "RSS: VmRSS/VmHWM of each agent's deno process after the samples; one of the three is the elected agent (it also writes statuses).",
];
