/**
 * A bare-metal cluster in network namespaces: a LAN switch, N nodes with a pod
 * bridge each and host-gw routes between them, a CNI-like masquerade, M pods
 * per node, a router to a routed outside network, and two outside hosts (one
 * on the LAN, one behind the router) that report the source they see.
 *
 *   pods ─ cni0 ─ node (eth0) ─┐
 *   pods ─ cni0 ─ node (eth0) ─┼─ lan (br0) ─┬─ router ─ outside 198.51.100.10
 *   pods ─ cni0 ─ node (eth0) ─┘             └─ lanhost 192.0.2.100
 *
 * Addresses: LAN 192.0.2.0/24 (router .1, nodes .11+, lanhost .100, VIPs
 * .50-.59), outside 198.51.100.0/24, pods 10.244.<node>.0/24, services
 * 10.96.0.0/12. Nothing is connected to the root namespace.
 */
import { join } from "node:path";
import { type Netns, NetnsSet, newRunId } from "./netns.ts";

export const LAN_PREFIX = "192.0.2";
export const ROUTER_LAN_IP = `${LAN_PREFIX}.1`;
export const LAN_HOST_IP = `${LAN_PREFIX}.100`;
export const OUTSIDE_IP = "198.51.100.10";
export const POD_CIDR = "10.244.0.0/16";
export const SERVICE_CIDR = "10.96.0.0/12";
export const TCP_PORT = 7000;
export const UDP_PORT = 7001;

export interface ClusterSpec {
  readonly nodes: number;
  readonly podsPerNode: number;
  /** Name of each node's LAN interface (not always eth0 in real clusters). */
  readonly iface: string;
}

export const DEFAULT_SPEC: ClusterSpec = { nodes: 3, podsPerNode: 2, iface: "eth0" };

export interface SimNode {
  readonly name: string;
  readonly index: number;
  readonly ns: Netns;
  readonly ip: string;
  readonly podCidr: string;
}

export interface SimPod {
  readonly name: string;
  readonly node: SimNode;
  readonly ns: Netns;
  readonly ip: string;
}

export interface OutsideHost {
  readonly name: string;
  readonly ns: Netns;
  readonly ip: string;
  /** Every TCP connection / UDP datagram seen, in arrival order. */
  readonly events: ReporterEvent[];
}

export interface ReporterEvent {
  readonly t: number;
  readonly proto: string;
  readonly src: string;
  readonly data: string;
}

/** The CNI's own masquerade, as flannel and friends install it. */
export const CNI_MASQUERADE =
  `-s ${POD_CIDR} ! -d ${POD_CIDR} -m comment --comment "cni masquerade" -j MASQUERADE`;

const REPORTER = new URL("./reporter.ts", import.meta.url).pathname;

export class Cluster {
  readonly nodes: SimNode[] = [];
  readonly pods: SimPod[] = [];
  readonly outsideHosts: OutsideHost[] = [];
  readonly #reporters: Deno.ChildProcess[] = [];
  #lan!: Netns;
  #router!: Netns;

  private constructor(
    readonly spec: ClusterSpec,
    readonly namespaces: NetnsSet,
    readonly workDir: string,
    readonly progress: (line: string) => void,
  ) {}

  get runId(): string {
    return this.namespaces.runId;
  }

  /** The outside host behind the router (a routed network, not the LAN). */
  get outside(): OutsideHost {
    return this.outsideHosts.find((h) => h.ip === OUTSIDE_IP)!;
  }

  /** The outside host on the LAN itself. */
  get lanHost(): OutsideHost {
    return this.outsideHosts.find((h) => h.ip === LAN_HOST_IP)!;
  }

  get router(): Netns {
    return this.#router;
  }

  /**
   * Builds the cluster. On any failure everything created so far is removed
   * before the error is rethrown.
   */
  static async create(
    spec: Partial<ClusterSpec> = {},
    options: { runId?: string; progress?: (line: string) => void } = {},
  ): Promise<Cluster> {
    const full = { ...DEFAULT_SPEC, ...spec };
    const runId = options.runId ?? newRunId();
    const workDir = await Deno.makeTempDir({ prefix: `${runId}-` });
    const cluster = new Cluster(full, new NetnsSet(runId), workDir, options.progress ?? (() => {}));
    try {
      await cluster.#build();
      return cluster;
    } catch (error) {
      await cluster.destroy();
      throw error;
    }
  }

  async #build() {
    const { nodes, podsPerNode, iface } = this.spec;
    const ns = this.namespaces;
    this.progress(`run ${this.runId}: LAN switch, router and outside hosts`);
    this.#lan = await ns.create("lan");
    await this.#lan.ip(["link add br0 type bridge", "link set br0 up"]);

    this.#router = await ns.create("rt");
    await this.#plugIntoLan(this.#router, "eth0", "rt");
    const outside = await ns.create("out");
    await this.#router.ip([
      `addr add ${ROUTER_LAN_IP}/24 dev eth0`,
      `link add eth1 type veth peer name eth0 netns ${outside.name}`,
      "addr add 198.51.100.1/24 dev eth1",
      "link set eth1 up",
    ]);
    await this.#router.sysctl("net.ipv4.ip_forward=1");
    await outside.ip([
      `addr add ${OUTSIDE_IP}/24 dev eth0`,
      "link set eth0 up",
      "route add default via 198.51.100.1",
    ]);

    const lanHost = await ns.create("lanhost");
    await this.#plugIntoLan(lanHost, "eth0", "lh");
    await lanHost.ip([
      `addr add ${LAN_HOST_IP}/24 dev eth0`,
      `route add default via ${ROUTER_LAN_IP}`,
    ]);

    for (let i = 1; i <= nodes; i++) {
      this.progress(`node ${i}/${nodes} with ${podsPerNode} pod(s)`);
      const node = await this.#addNode(i, iface);
      for (let k = 1; k <= podsPerNode; k++) await this.#addPod(node, k);
    }
    // host-gw: every node routes every other node's pod range via that node.
    for (const node of this.nodes) {
      await node.ns.ip(
        this.nodes.filter((other) => other !== node).map((other) =>
          `route add ${other.podCidr} via ${other.ip} dev ${iface}`
        ),
      );
    }
    this.progress("outside hosts: starting source reporters");
    await this.startReporter("out", outside, OUTSIDE_IP);
    await this.startReporter("lanhost", lanHost, LAN_HOST_IP);
    await Deno.mkdir(this.podVipDir, { recursive: true });
    await Deno.mkdir(this.vipRouteDir, { recursive: true });
  }

  /**
   * Adds a host on the LAN (e.g. the test Kubernetes API server): its own
   * namespace of the run, plugged into the switch, `ip`/24, default route via
   * the router. No link to the root namespace.
   */
  async addLanHost(suffix: string, ip: string): Promise<Netns> {
    const host = await this.namespaces.create(suffix);
    await this.#plugIntoLan(host, "eth0", suffix.slice(0, 12));
    await host.ip([`addr add ${ip}/24 dev eth0`, `route add default via ${ROUTER_LAN_IP}`]);
    return host;
  }

  /** Connects a namespace to the LAN bridge with a veth created inside the two namespaces. */
  async #plugIntoLan(host: Netns, iface: string, port: string) {
    await host.ip([
      `link add ${iface} type veth peer name ${port} netns ${this.#lan.name}`,
      `link set ${iface} up`,
    ]);
    await this.#lan.ip([`link set ${port} master br0`, `link set ${port} up`]);
  }

  async #addNode(index: number, iface: string): Promise<SimNode> {
    const ns = await this.namespaces.create(`n${index}`);
    const node: SimNode = {
      name: `node${index}`,
      index,
      ns,
      ip: `${LAN_PREFIX}.${10 + index}`,
      podCidr: `10.244.${index}.0/24`,
    };
    await this.#plugIntoLan(ns, iface, `n${index}`);
    await ns.ip([
      `addr add ${node.ip}/24 dev ${iface}`,
      "link add cni0 type bridge",
      `addr add 10.244.${index}.1/24 dev cni0`,
      "link set cni0 up",
      `route add default via ${ROUTER_LAN_IP}`,
    ]);
    await ns.sysctl("net.ipv4.ip_forward=1");
    await ns.run(["iptables", "-t", "nat", "-A", "POSTROUTING", ...splitArgs(CNI_MASQUERADE)]);
    this.nodes.push(node);
    return node;
  }

  async #addPod(node: SimNode, k: number): Promise<SimPod> {
    const ns = await this.namespaces.create(`n${node.index}p${k}`);
    const pod: SimPod = {
      name: `pod${node.index}-${k}`,
      node,
      ns,
      ip: `10.244.${node.index}.${10 + k}`,
    };
    await ns.ip([
      `link add eth0 type veth peer name veth${k} netns ${node.ns.name}`,
      `addr add ${pod.ip}/24 dev eth0`,
      "link set eth0 up",
      `route add default via 10.244.${node.index}.1`,
    ]);
    await node.ns.ip([`link set veth${k} master cni0`, `link set veth${k} up`]);
    this.pods.push(pod);
    return pod;
  }

  /** Starts a source reporter in any namespace of the run (outside hosts, or a pod for pod-to-pod checks). */
  async startReporter(name: string, ns: Netns, ip: string): Promise<OutsideHost> {
    const child = ns.spawn([
      Deno.execPath(),
      "run",
      "--allow-net",
      REPORTER,
      String(TCP_PORT),
      String(UDP_PORT),
    ], { stdout: "piped" });
    this.#reporters.push(child);
    const host: OutsideHost = { name, ns, ip, events: [] };
    this.outsideHosts.push(host);
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    (async () => {
      let buffer = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        buffer += chunk;
        const lines = buffer.split("\n");
        buffer = lines.pop()!;
        for (const line of lines) {
          const event = JSON.parse(line) as ReporterEvent;
          if (event.proto === "ready") ready();
          else host.events.push(event);
        }
      }
    })().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`reporter on ${name} did not start`)), 20_000);
    });
    await Promise.race([isReady, timeout]).finally(() => clearTimeout(timer));
    return host;
  }

  /** Directory of files <pod IP> → <VIP> shared by every node's agent (like a ConfigMap). */
  get podVipDir(): string {
    return join(this.workDir, "podip_vip_mapping");
  }

  /** Directory of files <VIP> → <route id>. */
  get vipRouteDir(): string {
    return join(this.workDir, "vip_routeid_mapping");
  }

  /** Replaces the mapping directories' contents. */
  async writeMappings(pods: Record<string, string>, vips: Record<string, number | string>) {
    for (const dir of [this.podVipDir, this.vipRouteDir]) {
      for await (const entry of Deno.readDir(dir)) await Deno.remove(join(dir, entry.name));
    }
    for (const [podIp, vip] of Object.entries(pods)) {
      await Deno.writeTextFile(join(this.podVipDir, podIp), `${vip}\n`);
    }
    for (const [vip, id] of Object.entries(vips)) {
      await Deno.writeTextFile(join(this.vipRouteDir, vip), `${id}\n`);
    }
  }

  /** The agent flags matching this cluster. */
  agentFlags(): string[] {
    return [
      "-i",
      this.spec.iface,
      "-p",
      POD_CIDR,
      "-s",
      SERVICE_CIDR,
      "-v",
      this.podVipDir,
      "-r",
      this.vipRouteDir,
    ];
  }

  /**
   * A node's whole networking configuration as text, for byte-exact
   * before/after comparisons: iptables-save (minus its timestamp comments),
   * IPv4 rules, every IPv4 routing table, and the ipset names. (IPv6 is left
   * out: the kernel adds link-local routes on its own schedule.)
   */
  async ruleset(node: SimNode): Promise<string> {
    const [iptables, rules, routes, sets] = await Promise.all([
      node.ns.run(["iptables-save"]),
      node.ns.run(["ip", "-4", "rule", "show"]),
      node.ns.run(["ip", "-4", "route", "show", "table", "all"]),
      node.ns.run(["ipset", "list", "-n"]),
    ]);
    const save = iptables.split("\n").filter((l) => !l.startsWith("#")).join("\n");
    return [save, rules, routes, `ipsets: ${sets.trim()}`].join("\n--\n");
  }

  /**
   * Plugs a node's cable in or out: sets the node's port on the LAN switch up
   * or down, so the node's interface loses its carrier as with a pulled cable.
   */
  async setLanLink(node: SimNode, up: boolean): Promise<void> {
    await this.#lan.ip([`link set n${node.index} ${up ? "up" : "down"}`]);
  }

  node(index: number): SimNode {
    return this.nodes[index - 1];
  }

  pod(nodeIndex: number, k: number): SimPod {
    return this.pods.find((p) => p.node.index === nodeIndex && p.name === `pod${nodeIndex}-${k}`)!;
  }

  /** Removes every namespace, process and file of this run. */
  async destroy(): Promise<void> {
    for (const child of this.#reporters.splice(0)) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
      await child.status.catch(() => {});
    }
    await this.namespaces.destroy();
    await Deno.remove(this.workDir, { recursive: true }).catch(() => {});
  }
}

/** Splits a rule written as one string into argv, keeping quoted words together. */
export function splitArgs(text: string): string[] {
  return [...text.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]);
}
