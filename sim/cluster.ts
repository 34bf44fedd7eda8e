/**
 * A bare-metal cluster in network namespaces, built from `layout.ts`: a LAN
 * switch, N nodes with a pod bridge each and host-gw or vxlan routes between
 * them, a CNI masquerade and a kube-proxy-style ClusterIP service on every
 * node, M pods per node, a router to a routed outside network, and two
 * outside hosts (one on the LAN, one behind the router) that report the
 * source they see over TCP, UDP and ICMP. Nothing is connected to the root
 * namespace; `destroy` removes every namespace, process and file of the run.
 */
import { join } from "node:path";
import { eachLine, readyWithin } from "./children.ts";
import { Netns, NetnsSet, newRunId } from "./netns.ts";
import {
  clusterLayout,
  ClusterSpec,
  type ClusterSpecInput,
  cniRouteLines,
  type HostLayout,
  IPV6_HOST_SYSCTLS,
  isDual,
  type Layout,
  nodeNatRules,
  nodeNatRules6,
  nodeSysctls,
  POD_CIDR,
  POD_CIDR6,
  type PodLayout,
  podMtu,
  ROUTER_LAN_IP,
  ROUTER_LAN_IP6,
  ROUTER_OUTSIDE_IP,
  ROUTER_OUTSIDE_IP6,
  SERVICE_CIDR,
  TCP_PORT,
  UDP_PORT,
  vxlanFdbLines,
} from "./layout.ts";
import { IcmpWitness } from "./witness.ts";
import type { AgentRuntime } from "./agents.ts";

export {
  type ClusterSpec,
  CNI_MASQUERADE,
  DEFAULT_SPEC,
  LAN_HOST_IP,
  LAN_PREFIX,
  OUTSIDE_IP,
  POD_CIDR,
  ROUTER_LAN_IP,
  SERVICE_CIDR,
  SERVICE_IP,
  TCP_PORT,
  UDP_PORT,
} from "./layout.ts";

export interface SimNode {
  readonly name: string;
  readonly index: number;
  readonly ns: Netns;
  readonly ip: string;
  readonly podCidr: string;
  /** The node's IPv6 LAN address (dual stack). */
  readonly ip6?: string;
}

export interface SimPod {
  readonly name: string;
  readonly node: SimNode;
  readonly ns: Netns;
  readonly ip: string;
  /** The pod's IPv6 address (dual stack). */
  readonly ip6?: string;
}

/** A host that reports the source it sees (outside hosts, or a pod used as a server). */
export interface OutsideHost {
  readonly name: string;
  readonly ns: Netns;
  readonly ip: string;
  /** Its IPv6 address (outside hosts of a dual-stack cluster). */
  readonly ip6?: string;
  /** Every TCP connection / UDP datagram seen, in arrival order (empty for detached reporters). */
  readonly events: ReporterEvent[];
  /** Who saw which ICMP echo request (outside hosts of a cluster built in this process). */
  readonly icmp?: IcmpWitness;
}

export interface ReporterEvent {
  /** Arrival time, ms since the epoch (Date.now() of the reporter). */
  readonly t: number;
  readonly proto: string;
  readonly src: string;
  /** Source port as seen by the reporter (after any NAT). */
  readonly port?: number;
  readonly data: string;
}

export interface CreateOptions {
  /** Use this run id instead of a fresh one. */
  readonly runId?: string;
  /** Told about each building step. */
  readonly progress?: (line: string) => void;
  /**
   * Long-running processes outlive this program (`sim up`): reporters run
   * detached, and no ICMP witness is kept (`sim status` starts its own).
   */
  readonly detached?: boolean;
  /**
   * Called with the cluster before anything is built, so that a caller can
   * tear it down from a signal handler while it is still being built.
   */
  readonly onCreate?: (cluster: Cluster) => void;
  /**
   * Where the agents run (default: processes in the node namespaces); an
   * image runtime also makes each node's namespace (sim/image_agents.ts).
   * The cluster tears it down first in `destroy`.
   */
  readonly agents?: AgentRuntime;
}

const REPORTER = new URL("./reporter.ts", import.meta.url).pathname;

export class Cluster {
  readonly spec: ClusterSpec;
  readonly layout: Layout;
  readonly nodes: SimNode[] = [];
  readonly pods: SimPod[] = [];
  /** The pod behind the ClusterIP service (node 1); not one of `pods`. */
  readonly serviceBackend: SimPod;
  readonly outsideHosts: OutsideHost[] = [];
  readonly #children: Deno.ChildProcess[] = [];
  readonly #witnesses: IcmpWitness[] = [];

  private constructor(
    spec: ClusterSpec,
    readonly namespaces: NetnsSet,
    readonly workDir: string,
    readonly progress: (line: string) => void = () => {},
    /** Where the agents run; undefined: as processes in the node namespaces (sim/agents.ts). */
    readonly agents?: AgentRuntime,
  ) {
    this.spec = spec;
    this.layout = clusterLayout(spec);
    const ns = (suffix: string) => this.#ns(suffix);
    for (const node of this.layout.nodes) {
      this.nodes.push({ ...pick(node), ns: ns(node.suffix) });
    }
    const pod = (p: PodLayout): SimPod => ({
      name: p.name,
      node: this.node(p.nodeIndex),
      ns: ns(p.suffix),
      ip: p.ip,
      ...(p.ip6 ? { ip6: p.ip6 } : {}),
    });
    this.pods.push(...this.layout.pods.map(pod));
    this.serviceBackend = pod(this.layout.serviceBackend);
  }

  get runId(): string {
    return this.namespaces.runId;
  }

  /** A namespace of this run by its suffix ("n1", "n1p2", "out", ...). */
  #ns(suffix: string): Netns {
    return new Netns(`${this.runId}-${suffix}`);
  }

  /** The outside host behind the router (a routed network, not the LAN). */
  get outside(): OutsideHost {
    return this.host("outside");
  }

  /** The outside host on the LAN itself. */
  get lanHost(): OutsideHost {
    return this.host("lanhost");
  }

  get router(): Netns {
    return this.#ns("rt");
  }

  get lan(): Netns {
    return this.#ns("lan");
  }

  host(name: string): OutsideHost {
    const host = this.outsideHosts.find((h) => h.name === name);
    if (!host) throw new Error(`no reporter named ${name} in run ${this.runId}`);
    return host;
  }

  /**
   * Builds the cluster. On any failure everything created so far is removed
   * before the error is rethrown.
   */
  static async create(spec: ClusterSpecInput = {}, options: CreateOptions = {}): Promise<Cluster> {
    const full = ClusterSpec.parse(spec);
    const runId = options.runId ?? newRunId();
    const workDir = await Deno.makeTempDir({ prefix: `${runId}-` });
    const cluster = new Cluster(
      full,
      new NetnsSet(runId),
      workDir,
      options.progress,
      options.agents,
    );
    options.onCreate?.(cluster);
    try {
      await cluster.#build(options.detached === true);
      return cluster;
    } catch (error) {
      await cluster.destroy();
      throw error;
    }
  }

  /**
   * A cluster built earlier by `create` (in another process, for `sim status`
   * and `sim down`): the same layout over the run's existing namespaces.
   * Reporters are reached over the network; no process is started.
   */
  static async attach(runId: string, spec: ClusterSpecInput, workDir: string): Promise<Cluster> {
    const cluster = new Cluster(ClusterSpec.parse(spec), await NetnsSet.adopt(runId), workDir);
    for (const host of cluster.layout.hosts) {
      cluster.outsideHosts.push({
        name: host.name,
        ns: cluster.#ns(host.suffix),
        ip: host.ip,
        ...(host.ip6 ? { ip6: host.ip6 } : {}),
        events: [],
      });
    }
    return cluster;
  }

  async #build(detached: boolean) {
    const { spec, layout } = this;
    const create = (suffix: string) => this.namespaces.create(suffix);
    this.progress(
      `run ${this.runId}: LAN switch, router and outside hosts (${spec.nodes} nodes, ` +
        `${spec.podsPerNode} pods each, CNI ${spec.cni}, interface ${spec.iface}, rp_filter ${spec.rpFilter})`,
    );
    const lan = await create("lan");
    await lan.ip(["link add br0 type bridge", "link set br0 up"]);

    const dual = isDual(spec);
    // Before any interface exists, so that `default` applies to every one of them.
    const v6 = async (ns: Netns) => dual && await ns.sysctl(...IPV6_HOST_SYSCTLS);
    const router = await create("rt");
    await v6(router);
    await this.#plugIntoLan(router, "eth0", "rt");
    const outside = await create("out");
    await v6(outside);
    await router.ip([
      `addr add ${ROUTER_LAN_IP}/24 dev eth0`,
      `link add eth1 type veth peer name eth0 netns ${outside.name}`,
      `addr add ${ROUTER_OUTSIDE_IP}/24 dev eth1`,
      "link set eth1 up",
    ]);
    await router.sysctl("net.ipv4.ip_forward=1");
    const [outsideLayout, lanHostLayout] = layout.hosts;
    await outside.ip([
      `addr add ${outsideLayout.ip}/24 dev eth0`,
      "link set eth0 up",
      `route add default via ${ROUTER_OUTSIDE_IP}`,
    ]);
    const lanHost = await create("lanhost");
    await v6(lanHost);
    await this.#plugIntoLan(lanHost, "eth0", "lh");
    await lanHost.ip([
      `addr add ${lanHostLayout.ip}/24 dev eth0`,
      `route add default via ${ROUTER_LAN_IP}`,
    ]);
    if (dual) {
      await router.sysctl("net.ipv6.conf.all.forwarding=1");
      await router.ip([
        `addr add ${ROUTER_LAN_IP6}/64 dev eth0 nodad`,
        `addr add ${ROUTER_OUTSIDE_IP6}/64 dev eth1 nodad`,
      ]);
      // The reporters listen on 0.0.0.0 and on :: apart (IPv4 sources stay a.b.c.d).
      for (const ns of [outside, lanHost]) await ns.sysctl("net.ipv6.bindv6only=1");
      await outside.ip([
        `addr add ${outsideLayout.ip6}/64 dev eth0 nodad`,
        `route add default via ${ROUTER_OUTSIDE_IP6}`,
      ]);
      await lanHost.ip([
        `addr add ${lanHostLayout.ip6}/64 dev eth0 nodad`,
        `route add default via ${ROUTER_LAN_IP6}`,
      ]);
    }

    for (const node of this.nodes) {
      this.progress(
        `node ${node.index}/${spec.nodes}: interface ${spec.iface}, cni0, ${spec.podsPerNode} pod(s)`,
      );
      await this.#buildNode(node, create);
    }
    this.progress(`CNI ${spec.cni}: routes between the nodes' pod ranges`);
    for (const [i, node] of this.nodes.entries()) {
      await node.ns.ip(cniRouteLines(layout, layout.nodes[i]));
      const fdb = vxlanFdbLines(layout, layout.nodes[i]);
      if (fdb.length > 0) {
        await node.ns.run(["bridge", "-batch", "-"], { stdin: fdb.join("\n") + "\n" });
      }
    }

    this.progress("reporters: outside hosts and the service backend say which source they see");
    await Deno.mkdir(this.logDir, { recursive: true });
    const reporters: { host: HostLayout; ns: Netns }[] = [
      ...layout.hosts.map((h) => ({ host: h, ns: this.#ns(h.suffix) })),
      {
        host: {
          name: "svc-backend",
          suffix: layout.serviceBackend.suffix,
          ip: layout.serviceBackend.ip,
        },
        ns: this.serviceBackend.ns,
      },
    ];
    await Promise.all(reporters.map(({ host, ns }) => this.#startHost(host, ns, detached)));
    await Deno.mkdir(this.podVipDir, { recursive: true });
    await Deno.mkdir(this.vipRouteDir, { recursive: true });
  }

  async #buildNode(node: SimNode, create: (suffix: string) => Promise<Netns>) {
    const { spec, layout } = this;
    const nodeLayout = layout.nodes[node.index - 1];
    const ns = this.agents
      ? await this.agents.nodeNamespace(this, nodeLayout.suffix)
      : await create(nodeLayout.suffix);
    // Before any interface exists, so that `default` applies to every one of them.
    await ns.sysctl(...nodeSysctls(spec));
    await this.#plugIntoLan(ns, spec.iface, nodeLayout.suffix);
    await ns.ip([
      `addr add ${node.ip}/24 dev ${spec.iface}`,
      "link add cni0 type bridge",
      `addr add ${nodeLayout.gateway}/24 dev cni0`,
      "link set cni0 up",
      `route add default via ${ROUTER_LAN_IP}`,
    ]);
    await ns.run(["iptables-restore", "--noflush"], {
      stdin: nodeNatRules(layout).join("\n") + "\n",
    });
    const dual = isDual(spec);
    if (dual) {
      await ns.ip([
        `addr add ${nodeLayout.ip6}/64 dev ${spec.iface} nodad`,
        `addr add ${nodeLayout.gateway6}/64 dev cni0 nodad`,
        `route add default via ${ROUTER_LAN_IP6}`,
      ]);
      await ns.run(["ip6tables-restore", "--noflush"], {
        stdin: nodeNatRules6().join("\n") + "\n",
      });
    }
    const mtu = podMtu(spec);
    for (const pod of layout.pods.filter((p) => p.nodeIndex === node.index)) {
      const podNs = await create(pod.suffix);
      if (dual) await podNs.sysctl(...IPV6_HOST_SYSCTLS);
      await podNs.ip([
        `link add eth0 type veth peer name ${pod.veth} netns ${ns.name}`,
        `addr add ${pod.ip}/24 dev eth0`,
        `link set eth0 mtu ${mtu} up`,
        `route add default via ${nodeLayout.gateway}`,
        ...(dual
          ? [
            `addr add ${pod.ip6}/64 dev eth0 nodad`,
            `route add default via ${nodeLayout.gateway6}`,
          ]
          : []),
      ]);
      await ns.ip([`link set ${pod.veth} master cni0`, `link set ${pod.veth} mtu ${mtu} up`]);
    }
    const backend = layout.serviceBackend;
    if (backend.nodeIndex === node.index) {
      // A routed veth (Calico style): the node's stack sees every packet, so
      // service replies to this node's own pods are un-DNATed.
      const podNs = await create(backend.suffix);
      await podNs.ip([
        `link add eth0 type veth peer name ${backend.veth} netns ${ns.name}`,
        `addr add ${backend.ip}/32 dev eth0`,
        `link set eth0 mtu ${mtu} up`,
        `route add ${nodeLayout.gateway} dev eth0 scope link`,
        `route add default via ${nodeLayout.gateway} dev eth0`,
      ]);
      await ns.ip([
        `link set ${backend.veth} mtu ${mtu} up`,
        `route add ${backend.ip}/32 dev ${backend.veth} scope link`,
      ]);
    }
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
      `link add ${iface} type veth peer name ${port} netns ${this.lan.name}`,
      `link set ${iface} up`,
    ]);
    await this.lan.ip([`link set ${port} master br0`, `link set ${port} up`]);
  }

  async #startHost(host: HostLayout, ns: Netns, detached: boolean) {
    const v6 = host.ip6 ? { ip6: host.ip6 } : {};
    if (detached) {
      ns.spawnDetached(reporterArgv(host.ip6 !== undefined));
      this.outsideHosts.push({ name: host.name, ns, ip: host.ip, ...v6, events: [] });
      await waitForListener(ns);
      return;
    }
    const isOutside = this.layout.hosts.some((h) => h.name === host.name);
    const icmp = isOutside
      ? await IcmpWitness.start(ns, "eth0", 20_000, { ipv6: host.ip6 !== undefined })
      : undefined;
    if (icmp) this.#witnesses.push(icmp);
    await this.startReporter(host.name, ns, host.ip, icmp, host.ip6);
  }

  /** Starts a source reporter in any namespace of the run (outside hosts, or a pod for pod-to-pod checks). */
  async startReporter(
    name: string,
    ns: Netns,
    ip: string,
    icmp?: IcmpWitness,
    ip6?: string,
  ): Promise<OutsideHost> {
    const child = ns.spawn(reporterArgv(ip6 !== undefined), { stdout: "piped" });
    this.#children.push(child);
    const host: OutsideHost = { name, ns, ip, ...(ip6 ? { ip6 } : {}), events: [], icmp };
    this.outsideHosts.push(host);
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    eachLine(child.stdout, (line) => {
      const event = JSON.parse(line) as ReporterEvent;
      if (event.proto === "ready") ready();
      else host.events.push(event);
    }).catch(() => {});
    await readyWithin(child, isReady, 30_000, () => `reporter on ${name} did not start`);
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

  /** Where detached processes (agents of `sim up`) write their logs. */
  get logDir(): string {
    return join(this.workDir, "logs");
  }

  /**
   * Replaces the mapping directories' contents. Files are written before
   * stale ones are removed, each with one write, so an agent watching the
   * directories never sees a mapping vanish and come back.
   */
  async writeMappings(pods: Record<string, string>, vips: Record<string, number | string>) {
    const write = async (dir: string, entries: Record<string, string | number>) => {
      for (const [name, value] of Object.entries(entries)) {
        const path = join(dir, name);
        const text = `${value}\n`;
        const old = await Deno.readTextFile(path).catch(() => undefined);
        if (old !== text) {
          // Write aside and rename, so a reader never sees a half-written file.
          await Deno.writeTextFile(`${path}.tmp`, text);
          await Deno.rename(`${path}.tmp`, path);
        }
      }
      for await (const entry of Deno.readDir(dir)) {
        if (!(entry.name in entries)) await Deno.remove(join(dir, entry.name));
      }
    };
    await write(this.vipRouteDir, vips);
    await write(this.podVipDir, pods);
  }

  /** The current mappings, read back from the directories. */
  async readMappings(): Promise<{ pods: Record<string, string>; vips: Record<string, string> }> {
    const read = async (dir: string) => {
      const out: Record<string, string> = {};
      for await (const entry of Deno.readDir(dir)) {
        out[entry.name] = (await Deno.readTextFile(join(dir, entry.name))).trim();
      }
      return out;
    };
    return { pods: await read(this.podVipDir), vips: await read(this.vipRouteDir) };
  }

  /** The agent flags matching this cluster (dual stack: both pod ranges). */
  agentFlags(): string[] {
    return [
      "-i",
      this.spec.iface,
      "-p",
      isDual(this.spec) ? `${POD_CIDR},${POD_CIDR6}` : POD_CIDR,
      "-s",
      SERVICE_CIDR,
      "-v",
      this.podVipDir,
      "-r",
      this.vipRouteDir,
      "--backend",
      this.spec.backend,
    ];
  }

  /**
   * A node's whole networking configuration as text, for byte-exact
   * before/after comparisons: iptables-save (minus its timestamp comments),
   * IPv4 rules, every IPv4 routing table, the ipset names and every
   * interface's rp_filter, and the nftables tables (the nftables backend's
   * own table must be gone too). (IPv6 is left out of an IPv4 cluster: the
   * kernel adds link-local routes on its own schedule; a dual-stack cluster's
   * nodes have no DAD, so `ruleset6` holds still and is added.)
   */
  async ruleset(node: SimNode): Promise<string> {
    if (isDual(this.spec)) {
      const [four, six] = await Promise.all([this.#ruleset4(node), this.ruleset6(node)]);
      return `${four}\n--\n${six}`;
    }
    return await this.#ruleset4(node);
  }

  /**
   * A dual-stack node's IPv6 configuration and what both families share, as
   * text: ip6tables-save (minus its comments), IPv6 rules, every IPv6 routing
   * table, the ipsets with their members (`inet6` sets among them), the whole
   * nftables ruleset without counters (`nft -s`: the nftables backend's
   * `inet` table and iptables-nft's tables), and the IPv6 sysctls of every
   * interface (forwarding, DAD, proxy NDP, ...). `stable_secret` cannot be
   * read until set and is left out.
   */
  async ruleset6(node: SimNode): Promise<string> {
    const [ip6tables, rules, routes, sets, nft, sysctls] = await Promise.all([
      node.ns.run(["ip6tables-save"]),
      node.ns.run(["ip", "-6", "rule", "show"]),
      node.ns.run(["ip", "-6", "route", "show", "table", "all"]),
      node.ns.run(["ipset", "save"]),
      node.ns.run(["nft", "-s", "list", "ruleset"]),
      node.ns.run([
        "sh",
        "-c",
        "grep -Hrs . /proc/sys/net/ipv6/conf /proc/sys/net/ipv6/ip_nonlocal_bind | " +
        "grep -v /stable_secret: || true",
      ]),
    ]);
    const save = ip6tables.split("\n").filter((l) => !l.startsWith("#")).join("\n");
    return [save, rules, routes, `ipsets:\n${sets.trim()}`, nft.trim(), sysctls.trim()]
      .join("\n--\n");
  }

  async #ruleset4(node: SimNode): Promise<string> {
    const [iptables, rules, routes, sets, rpFilters, tables] = await Promise.all([
      node.ns.run(["iptables-save"]),
      node.ns.run(["ip", "-4", "rule", "show"]),
      node.ns.run(["ip", "-4", "route", "show", "table", "all"]),
      node.ns.run(["ipset", "list", "-n"]),
      // The agent loosens some; delete must give them back.
      node.ns.run(["sh", "-c", "grep -H . /proc/sys/net/ipv4/conf/*/rp_filter"]),
      node.ns.run(["nft", "list", "tables"]),
    ]);
    const save = iptables.split("\n").filter((l) => !l.startsWith("#")).join("\n");
    return [save, rules, routes, `ipsets: ${sets.trim()}`, rpFilters.trim(), tables.trim()]
      .join("\n--\n");
  }

  /**
   * Plugs a node's cable in or out: sets the node's port on the LAN switch up
   * or down, so the node's interface loses its carrier as with a pulled cable.
   */
  async setLanLink(node: SimNode, up: boolean): Promise<void> {
    await this.lan.ip([
      `link set ${this.layout.nodes[node.index - 1].suffix} ${up ? "up" : "down"}`,
    ]);
  }

  node(index: number): SimNode {
    const node = this.nodes[index - 1];
    if (!node) throw new Error(`no node${index} (the cluster has ${this.nodes.length})`);
    return node;
  }

  pod(nodeIndex: number, k: number): SimPod {
    const pod = this.pods.find((p) => p.name === `pod${nodeIndex}-${k}`);
    if (!pod) throw new Error(`no pod${nodeIndex}-${k} in run ${this.runId}`);
    return pod;
  }

  #destroyed: Promise<void> | undefined;

  /**
   * Removes every namespace, process and file of this run. Safe to call more
   * than once, also concurrently (a second Ctrl-C): every caller waits for the
   * one teardown to finish.
   */
  destroy(): Promise<void> {
    this.#destroyed ??= this.#destroy();
    return this.#destroyed;
  }

  async #destroy(): Promise<void> {
    // Containers first (the agents, and what holds the node namespaces).
    await this.agents?.destroy();
    for (const witness of this.#witnesses.splice(0)) await witness.stop();
    for (const child of this.#children.splice(0)) {
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

function pick(node: { name: string; index: number; ip: string; podCidr: string; ip6?: string }) {
  return {
    name: node.name,
    index: node.index,
    ip: node.ip,
    podCidr: node.podCidr,
    ...(node.ip6 ? { ip6: node.ip6 } : {}),
  };
}

function reporterArgv(dual = false): string[] {
  return [
    Deno.execPath(),
    "run",
    "--cached-only",
    "--allow-net",
    REPORTER,
    String(TCP_PORT),
    String(UDP_PORT),
    ...(dual ? ["dual"] : []),
  ];
}

/** Waits (bounded) until something listens on the reporter's TCP port in `ns`. */
async function waitForListener(ns: Netns, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const out = await ns.exec(["ss", "-Htln", `sport = :${TCP_PORT}`]);
    if (out.stdout.trim()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`reporter in ${ns.name} did not start within ${timeoutMs} ms`);
}
