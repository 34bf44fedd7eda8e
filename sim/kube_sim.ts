/**
 * The test Kubernetes API server inside a simulated cluster: a process in its
 * own namespace of the run, on the LAN at 192.0.2.5:6443 over HTTPS (a CA and
 * a server certificate made for the run), reachable from the node namespaces
 * and from nothing else. The test drives it over the process's stdin/stdout
 * (sim/kube_api.ts `serveControl`), so no link to the root namespace is needed.
 * Agents get a kubeconfig (CA + bearer token) and `--source kubernetes`.
 */
import { join } from "node:path";
import type { Cluster, SimNode, SimPod } from "./cluster.ts";
import { kubeconfigFor } from "./kube_api.ts";
import { makeCertificates } from "./kube_api_local.ts";
import { API_VERSION } from "../core/kube/api.ts";
import { type AgentProcess, EXTERNAL, modArgv, startAgent, watchAgent } from "./agents.ts";
import type { Netns } from "./netns.ts";

export const API_IP = "192.0.2.5";
export const API_PORT = 6443;
const SERVER = new URL("./kube_api.ts", import.meta.url).pathname;

export interface Reply {
  readonly ok: boolean;
  /** When the server handled the command (ms since the epoch). */
  readonly t: number;
  readonly result?: unknown;
  readonly error?: string;
}

export class SimApiServer {
  #next = 1;
  readonly #waiting = new Map<number, (reply: Reply) => void>();
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;

  private constructor(
    readonly ns: Netns,
    readonly url: string,
    readonly kubeconfigPath: string,
    readonly child: Deno.ChildProcess,
  ) {
    this.#writer = child.stdin.getWriter();
  }

  /** Starts the server in a new LAN namespace of the cluster and writes the agents' kubeconfig. */
  static async start(
    cluster: Cluster,
    options: { token?: string; pods?: number; firstPodIp?: string } = {},
  ): Promise<SimApiServer> {
    const ns = await cluster.addLanHost("api", API_IP);
    const tlsDir = join(cluster.workDir, "api-tls");
    const { ca } = await makeCertificates(tlsDir, `IP:${API_IP}`);
    const token = options.token ?? crypto.randomUUID();
    const child = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        ns.name,
        Deno.execPath(),
        "run",
        "-A",
        "--cached-only",
        SERVER,
        "--listen",
        `${API_IP}:${API_PORT}`,
        "--token",
        token,
        "--tls-dir",
        tlsDir,
        "--pods",
        String(options.pods ?? 0),
        ...(options.firstPodIp ? ["--first-pod-ip", options.firstPodIp] : []),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const url = `https://${API_IP}:${API_PORT}`;
    const kubeconfigPath = join(cluster.workDir, "kubeconfig");
    await Deno.writeTextFile(kubeconfigPath, kubeconfigFor(url, token, ca));
    const server = new SimApiServer(ns, url, kubeconfigPath, child);
    // Generating the synthetic pods takes a while on a loaded machine (100,000: about a minute).
    await server.#readReplies(30_000 + (options.pods ?? 0));
    return server;
  }

  /** Reads reply lines; resolves once the server says it listens (bounded: `startMs`). */
  #readReplies(startMs: number): Promise<void> {
    let ready!: () => void;
    let failed!: (e: Error) => void;
    const started = new Promise<void>((resolve, reject) => {
      ready = resolve;
      failed = reject;
    });
    const timer = setTimeout(
      () => failed(new Error(`test API server did not start within ${startMs} ms`)),
      startMs,
    );
    (async () => {
      let buffer = "";
      for await (const chunk of this.child.stdout.pipeThrough(new TextDecoderStream())) {
        buffer += chunk;
        const lines = buffer.split("\n");
        buffer = lines.pop()!;
        for (const line of lines) {
          const message = JSON.parse(line);
          if (message.ready) {
            clearTimeout(timer);
            ready();
          } else {
            this.#waiting.get(message.id)?.(message);
            this.#waiting.delete(message.id);
          }
        }
      }
      failed(new Error("test API server exited"));
    })().catch((e) => failed(e));
    return started;
  }

  /** Sends one control command and waits for its reply (bounded: 10 s). */
  async command(op: string, args: Record<string, unknown> = {}): Promise<Reply> {
    const id = this.#next++;
    const reply = new Promise<Reply>((resolve, reject) => {
      this.#waiting.set(id, resolve);
      setTimeout(() => reject(new Error(`no reply to ${op}`)), 10_000);
    });
    await this.#writer.write(new TextEncoder().encode(JSON.stringify({ id, op, ...args }) + "\n"));
    const result = await reply;
    if (!result.ok) throw new Error(`test API server: ${op} failed: ${result.error}`);
    return result;
  }

  apply(object: Record<string, unknown>): Promise<Reply> {
    return this.command("apply", { object });
  }

  delete(kind: string, name: string, namespace?: string): Promise<Reply> {
    return this.command("delete", { kind, name, namespace });
  }

  async get<T = Record<string, unknown>>(kind: string, name: string, namespace?: string) {
    return (await this.command("get", { kind, name, namespace })).result as T | null;
  }

  async list<T = Record<string, unknown>>(kind: string, namespace?: string): Promise<T[]> {
    return (await this.command("list", { kind, namespace })).result as T[];
  }

  /** "group/plural verb" of every request the server has served. */
  async requests(userAgent?: string): Promise<string[]> {
    return (await this.command("requests", { userAgent })).result as string[];
  }

  async stop(): Promise<void> {
    await this.#writer.close().catch(() => {});
    try {
      this.child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    await this.child.status;
  }
}

/** The flags that point an agent at the simulated API server. */
export function kubeFlags(api: SimApiServer): string[] {
  return [
    "--source",
    "kubernetes",
    "--kubeconfig",
    api.kubeconfigPath,
    "--lease-namespace",
    "kube-egress",
  ];
}

/** The Node object of a simulated node. */
export function nodeObject(node: SimNode, labels: Record<string, string> = {}) {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: node.name, labels: { "kubernetes.io/hostname": node.name, ...labels } },
    spec: {},
    status: { addresses: [{ type: "InternalIP", address: node.ip }] },
  };
}

/** A Pod object for a simulated pod's namespace (its IP and node), under any name and labels. */
export function podObject(
  pod: SimPod,
  name: string,
  options: { namespace?: string; labels?: Record<string, string> } = {},
) {
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: options.namespace ?? "default", labels: options.labels ?? {} },
    spec: { nodeName: pod.node.name, containers: [{ name: "app", image: "busybox" }] },
    status: { phase: "Running", podIP: pod.ip, podIPs: [{ ip: pod.ip }] },
  };
}

/**
 * Polls until the pod IP is in our pods set (iptables backend) or map
 * (nftables) on a node; ms epoch when first seen (bounded).
 */
async function inForceAt(
  node: SimNode,
  podIp: string,
  backend: "iptables" | "nftables",
  timeoutMs: number,
) {
  const deadline = Date.now() + timeoutMs;
  const test = backend === "nftables"
    ? ["nft", "get", "element", "inet", "kube-egress", "pods", `{ ${podIp} }`]
    : ["ipset", "test", "kube-egress-pods", podIp];
  while (Date.now() < deadline) {
    const r = await node.ns.exec(test, { timeoutMs: 5000 });
    if (r.code === 0) return Date.now();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(
    `${podIp} not in the pods ${backend} objects on ${node.name} within ${timeoutMs} ms`,
  );
}

/**
 * Creates a Pod object for `pod` (selected by `labels`) and measures the time
 * from the API server storing it to its IP being in the pods set (map) on
 * every node. Resolution: one `ipset test` (`nft get element`) per poll (a few ms).
 */
export async function podToRulesLatency(
  api: SimApiServer,
  nodes: readonly SimNode[],
  pod: SimPod,
  name: string,
  labels: Record<string, string>,
  backend: "iptables" | "nftables" = "iptables",
): Promise<{ totalMs: number; perNodeMs: number[] }> {
  const polls = nodes.map((n) => inForceAt(n, pod.ip, backend, 15_000));
  const { t } = await api.apply(podObject(pod, name, { labels }));
  const seen = await Promise.all(polls);
  const perNodeMs = seen.map((s) => Math.max(0, s - t));
  return { totalMs: Math.max(...perNodeMs), perNodeMs };
}

/** An EgressVIP object. */
export function egressVip(name: string, spec: Record<string, unknown>) {
  return { apiVersion: API_VERSION, kind: "EgressVIP", metadata: { name }, spec };
}

/** An EgressPolicy object. */
export function egressPolicy(namespace: string, name: string, spec: Record<string, unknown>) {
  return { apiVersion: API_VERSION, kind: "EgressPolicy", metadata: { name, namespace }, spec };
}

/** Starts the API server in the cluster with a Node object for every simulated node. */
export async function startApiWithNodes(
  cluster: Cluster,
  options: Parameters<typeof SimApiServer.start>[1] = {},
): Promise<SimApiServer> {
  const api = await SimApiServer.start(cluster, options);
  try {
    for (const node of cluster.nodes) await api.apply(nodeObject(node));
    return api;
  } catch (error) {
    await api.stop();
    throw error;
  }
}

/** `mod.ts run --source kubernetes --vip-mode external` on every node (VIPs placed by the test). */
export function startKubeAgents(
  cluster: Cluster,
  api: SimApiServer,
  extra: readonly string[] = [],
): AgentProcess[] {
  return cluster.nodes.map((node) =>
    startAgent(cluster, node, [...EXTERNAL, ...kubeFlags(api), ...extra], 300)
  );
}

/**
 * `mod.ts controller` (the Deployment's process) in the API server's own
 * namespace: the elected one selects and publishes EgressSlices for the
 * agents. `identity` names the replica in the Lease.
 */
export function startKubeController(
  cluster: Cluster,
  api: SimApiServer,
  identity = "controller-0",
  extra: readonly string[] = [],
): AgentProcess {
  const argv = modArgv("controller", [
    "--kubeconfig",
    api.kubeconfigPath,
    "--lease-namespace",
    "kube-egress",
    "--identity",
    identity,
    ...extra,
  ]);
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", api.ns.name, ...argv],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  // An AgentProcess (its node only names it in messages).
  return watchAgent(cluster.node(1), child, (signal) => child.kill(signal));
}
