/**
 * The simulated cluster as plain data: which namespaces exist, which
 * addresses they have, and the CNI routes and kube-proxy rules each node
 * gets. Pure (no I/O), so it is unit-tested without root, and a later command
 * (`sim status`, `sim down`) can recompute the whole layout of a running
 * cluster from its spec and run id alone.
 *
 *   pods ─ cni0 ─ node (<iface>) ─┐
 *   pods ─ cni0 ─ node (<iface>) ─┼─ lan (br0) ─┬─ router ─ outside 198.51.100.10
 *   pods ─ cni0 ─ node (<iface>) ─┘             └─ lanhost 192.0.2.100
 *
 * Addresses: LAN 192.0.2.0/24 (router .1, nodes .11+, VIPs .50-.59, lanhost
 * .100), outside 198.51.100.0/24, pods 10.244.<node>.0/24 (gateway .1, pods
 * .11+, the service backend .250; vxlan VTEP .0), ClusterIP 10.96.0.10.
 *
 * With `family: "dual"` (`--family dual`) every host but the service backend
 * also gets an IPv6 address: LAN 2001:db8:1::/64 (router ::1, nodes ::11+,
 * VIPs ::50-::59, lanhost ::100), outside 2001:db8:2::/64 (router ::1,
 * outside ::10), pods fd00:10:244:<node>::/64 (gateway ::1, pods ::11+).
 * Every IPv6 address is added `nodad`, so none sits tentative while the story
 * runs; the service stays IPv4 (its check is the IPv4 one).
 */
import { z } from "zod";
import { interfaceName } from "../core/schema.ts";

export const LAN_PREFIX = "192.0.2";
export const ROUTER_LAN_IP = `${LAN_PREFIX}.1`;
export const LAN_HOST_IP = `${LAN_PREFIX}.100`;
export const ROUTER_OUTSIDE_IP = "198.51.100.1";
export const OUTSIDE_IP = "198.51.100.10";
export const POD_CIDR = "10.244.0.0/16";
export const SERVICE_CIDR = "10.96.0.0/12";
export const SERVICE_IP = "10.96.0.10";
export const LAN6_PREFIX = "2001:db8:1:";
export const ROUTER_LAN_IP6 = `${LAN6_PREFIX}:1`;
export const LAN_HOST_IP6 = `${LAN6_PREFIX}:100`;
export const ROUTER_OUTSIDE_IP6 = "2001:db8:2::1";
export const OUTSIDE_IP6 = "2001:db8:2::10";
export const POD_CIDR6 = "fd00:10:244::/48";
export const TCP_PORT = 7000;
export const UDP_PORT = 7001;
/** The vxlan device, id and port (flannel's defaults, with our own device name). */
export const VXLAN_DEVICE = "vxlan0";
export const VXLAN_ID = 1;
export const VXLAN_PORT = 8472;
export const MAX_NODES = 30;
export const MAX_PODS_PER_NODE = 50;

/** How pods on different nodes reach each other. */
export const CniMode = z.enum(["host-gw", "vxlan"]);
export type CniMode = z.output<typeof CniMode>;

/** What to build; every field has a default (`deno task sim` with no flags). */
export const ClusterSpec = z.object({
  /** Number of nodes. */
  nodes: z.int().min(1).max(MAX_NODES).default(3),
  /** Pods per node (besides the service backend on node 1). */
  podsPerNode: z.int().min(1).max(MAX_PODS_PER_NODE).default(2),
  /** Name of each node's LAN interface (not always eth0 in real clusters). */
  iface: interfaceName.default("eth0"),
  /** host-gw: routes via the other nodes' LAN addresses; vxlan: an overlay device. */
  cni: CniMode.default("host-gw"),
  /**
   * The nodes' net.ipv4.conf.{all,default}.rp_filter, set before any interface
   * exists: 1 (strict) is what most distributions ship, and what the agent must
   * cope with.
   */
  rpFilter: z.union([z.literal(0), z.literal(1), z.literal(2)]).default(1),
  /** The agents' datapath backend (`--backend`). */
  backend: z.enum(["iptables", "nftables"]).default("iptables"),
  /**
   * "dual": LAN, outside hosts, nodes and pods get an IPv6 address too
   * (`--family dual`). Absent: IPv4 only, as before.
   */
  family: z.enum(["ipv4", "dual"]).optional(),
}).refine((s) => s.family !== "dual" || s.cni === "host-gw", {
  path: ["cni"],
  error: "a dual-stack cluster (--family dual) routes pods host-gw (no IPv6 vxlan overlay)",
});
export type ClusterSpec = z.output<typeof ClusterSpec>;
export type ClusterSpecInput = z.input<typeof ClusterSpec>;

export const DEFAULT_SPEC: ClusterSpec = ClusterSpec.parse({});

/** True for a dual-stack cluster (`--family dual`). */
export function isDual(spec: ClusterSpec): boolean {
  return spec.family === "dual";
}

export interface NodeLayout {
  readonly name: string;
  readonly index: number;
  /** Namespace name suffix (after "<runId>-"). */
  readonly suffix: string;
  readonly ip: string;
  readonly podCidr: string;
  /** The pod bridge's address: the pods' default gateway. */
  readonly gateway: string;
  /** The vxlan device's address and MAC (vxlan mode). */
  readonly vtepIp: string;
  readonly vtepMac: string;
  /** IPv6 (dual stack only): LAN address, pod range, pod bridge address. */
  readonly ip6?: string;
  readonly podCidr6?: string;
  readonly gateway6?: string;
}

export interface PodLayout {
  readonly name: string;
  readonly nodeIndex: number;
  /** Position on its node (1..podsPerNode); 0 for the service backend. */
  readonly k: number;
  readonly suffix: string;
  readonly ip: string;
  /** The pod's IPv6 address (dual stack; not the service backend). */
  readonly ip6?: string;
  /** The node-side end of the pod's veth. */
  readonly veth: string;
}

export interface HostLayout {
  readonly name: string;
  readonly suffix: string;
  readonly ip: string;
  /** IPv6 address (dual stack). */
  readonly ip6?: string;
}

export interface Layout {
  readonly spec: ClusterSpec;
  readonly nodes: readonly NodeLayout[];
  /** Client pods, node by node. */
  readonly pods: readonly PodLayout[];
  /**
   * The pod behind the ClusterIP service, on node 1 with a routed veth (not
   * on the bridge), so replies to node 1's own pods pass the node's conntrack
   * (un-DNAT) without needing br_netfilter.
   */
  readonly serviceBackend: PodLayout;
  /** Outside hosts: behind the router, and on the LAN. */
  readonly hosts: readonly HostLayout[];
}

function nodeLayout(index: number, dual: boolean): NodeLayout {
  return {
    ...(dual
      ? {
        ip6: `${LAN6_PREFIX}:${10 + index}`,
        podCidr6: `fd00:10:244:${index}::/64`,
        gateway6: `fd00:10:244:${index}::1`,
      }
      : {}),
    name: `node${index}`,
    index,
    suffix: `n${index}`,
    ip: `${LAN_PREFIX}.${10 + index}`,
    podCidr: `10.244.${index}.0/24`,
    gateway: `10.244.${index}.1`,
    vtepIp: `10.244.${index}.0`,
    vtepMac: `0e:6b:65:00:00:${index.toString(16).padStart(2, "0")}`,
  };
}

/** The whole cluster for a spec. */
export function clusterLayout(spec: ClusterSpec): Layout {
  const dual = isDual(spec);
  const nodes = Array.from({ length: spec.nodes }, (_, i) => nodeLayout(i + 1, dual));
  const pods = nodes.flatMap((node) =>
    Array.from({ length: spec.podsPerNode }, (_, i): PodLayout => ({
      name: `pod${node.index}-${i + 1}`,
      nodeIndex: node.index,
      k: i + 1,
      suffix: `${node.suffix}p${i + 1}`,
      ip: `10.244.${node.index}.${11 + i}`,
      ...(dual ? { ip6: `fd00:10:244:${node.index}::${11 + i}` } : {}),
      veth: `veth${i + 1}`,
    }))
  );
  return {
    spec,
    nodes,
    pods,
    serviceBackend: {
      name: "svc-backend",
      nodeIndex: 1,
      k: 0,
      suffix: "n1svc",
      ip: "10.244.1.250",
      veth: "vethsvc",
    },
    hosts: [
      { name: "outside", suffix: "out", ip: OUTSIDE_IP, ...(dual ? { ip6: OUTSIDE_IP6 } : {}) },
      {
        name: "lanhost",
        suffix: "lanhost",
        ip: LAN_HOST_IP,
        ...(dual ? { ip6: LAN_HOST_IP6 } : {}),
      },
    ],
  };
}

/**
 * `ip -batch` lines that give `node` its routes to the other nodes' pods.
 * host-gw: a route via each node's LAN address. vxlan: the overlay device
 * (flannel style: a /32 VTEP address, static neighbours, routes via each VTEP
 * onlink); its forwarding entries are in `vxlanFdbLines`.
 */
export function cniRouteLines(layout: Layout, node: NodeLayout): string[] {
  const others = layout.nodes.filter((n) => n !== node);
  const iface = layout.spec.iface;
  if (layout.spec.cni === "host-gw") {
    return [
      ...others.map((o) => `route add ${o.podCidr} via ${o.ip} dev ${iface}`),
      ...others.filter((o) => o.podCidr6).map((o) =>
        `route add ${o.podCidr6} via ${o.ip6} dev ${iface}`
      ),
    ];
  }
  return [
    `link add ${VXLAN_DEVICE} type vxlan id ${VXLAN_ID} local ${node.ip} dev ${iface} ` +
    `dstport ${VXLAN_PORT} nolearning`,
    `link set ${VXLAN_DEVICE} address ${node.vtepMac}`,
    `addr add ${node.vtepIp}/32 dev ${VXLAN_DEVICE}`,
    `link set ${VXLAN_DEVICE} up`,
    ...others.flatMap((o) => [
      `neigh add ${o.vtepIp} lladdr ${o.vtepMac} dev ${VXLAN_DEVICE} nud permanent`,
      `route add ${o.podCidr} via ${o.vtepIp} dev ${VXLAN_DEVICE} onlink`,
    ]),
  ];
}

/** `bridge -batch` lines: where to send each other node's VTEP MAC (vxlan mode only). */
export function vxlanFdbLines(layout: Layout, node: NodeLayout): string[] {
  if (layout.spec.cni !== "vxlan") return [];
  return layout.nodes.filter((n) => n !== node).map((o) =>
    `fdb append ${o.vtepMac} dev ${VXLAN_DEVICE} dst ${o.ip}`
  );
}

/** The pods' MTU: the overlay costs 50 bytes of vxlan header. */
export function podMtu(spec: ClusterSpec): number {
  return spec.cni === "vxlan" ? 1450 : 1500;
}

/** The CNI's own masquerade of pod traffic leaving the cluster, as flannel installs it. */
export const CNI_MASQUERADE =
  `-s ${POD_CIDR} ! -d ${POD_CIDR} -m comment --comment "cni masquerade" -j MASQUERADE`;

/**
 * An `iptables-restore --noflush` payload for the nat table, in kube-proxy's
 * shape: KUBE-SERVICES jumped to from PREROUTING and OUTPUT, a DNAT of the
 * ClusterIP to the backend pod (TCP and UDP), kube-proxy's masquerade mark
 * (0x4000) for traffic from outside the pod range, and KUBE-POSTROUTING. Also
 * the CNI masquerade. These are the "other components" sharing our tables.
 */
export function nodeNatRules(layout: Layout): string[] {
  const backend = layout.serviceBackend.ip;
  const svc = (proto: "tcp" | "udp", port: number) => [
    `-A KUBE-SERVICES ! -s ${POD_CIDR} -d ${SERVICE_IP}/32 -p ${proto} -m ${proto} --dport ${port} ` +
    `-j KUBE-MARK-MASQ`,
    `-A KUBE-SERVICES -d ${SERVICE_IP}/32 -p ${proto} -m ${proto} --dport ${port} ` +
    `-m comment --comment "default/egress-witness:${proto}" -j DNAT --to-destination ${backend}:${port}`,
  ];
  return [
    "*nat",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-MARK-MASQ - [0:0]",
    ":KUBE-POSTROUTING - [0:0]",
    `-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    `-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    `-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
    `-A POSTROUTING ${CNI_MASQUERADE}`,
    ...svc("tcp", TCP_PORT),
    ...svc("udp", UDP_PORT),
    "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
    "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
    "COMMIT",
  ];
}

/** The CNI's IPv6 masquerade (dual stack), for `ip6tables-restore --noflush`. */
export function nodeNatRules6(): string[] {
  return [
    "*nat",
    `-A POSTROUTING -s ${POD_CIDR6} ! -d ${POD_CIDR6} -m comment --comment "cni masquerade" ` +
    `-j MASQUERADE`,
    "COMMIT",
  ];
}

/**
 * IPv6 sysctls of every namespace of a dual-stack cluster with an IPv6
 * address, set before its interfaces exist: no Duplicate Address Detection
 * (nothing sits tentative, not even the link-local addresses, which would
 * otherwise change the routing tables behind the baseline's back) and no
 * router advertisements taken.
 */
export const IPV6_HOST_SYSCTLS: readonly string[] = [
  "net.ipv6.conf.all.accept_dad=0",
  "net.ipv6.conf.default.accept_dad=0",
  "net.ipv6.conf.all.accept_ra=0",
  "net.ipv6.conf.default.accept_ra=0",
];

/** Sysctls of a node, set before its interfaces exist so `default` applies to them. */
export function nodeSysctls(spec: ClusterSpec): string[] {
  return [
    "net.ipv4.ip_forward=1",
    `net.ipv4.conf.all.rp_filter=${spec.rpFilter}`,
    `net.ipv4.conf.default.rp_filter=${spec.rpFilter}`,
    ...(isDual(spec) ? [...IPV6_HOST_SYSCTLS, "net.ipv6.conf.all.forwarding=1"] : []),
  ];
}

/** A namespace of the cluster: its suffix, the names a user may call it by, and what it is. */
export interface NamespaceEntry {
  readonly suffix: string;
  readonly aliases: readonly string[];
  readonly what: string;
}

/** "a.b.c.d" or, with an IPv6 address, "a.b.c.d / x::y". */
function both(host: { readonly ip: string; readonly ip6?: string }): string {
  return host.ip6 ? `${host.ip} / ${host.ip6}` : host.ip;
}

/** Every namespace of a layout, in building order. */
export function namespaceEntries(layout: Layout): NamespaceEntry[] {
  const [outside, lanHost] = layout.hosts;
  return [
    { suffix: "lan", aliases: ["switch"], what: "the LAN switch (bridge br0)" },
    { suffix: "rt", aliases: ["router"], what: `router ${ROUTER_LAN_IP} / ${ROUTER_OUTSIDE_IP}` },
    { suffix: outside.suffix, aliases: [outside.name], what: `outside host ${both(outside)}` },
    { suffix: lanHost.suffix, aliases: [lanHost.name], what: `LAN host ${both(lanHost)}` },
    ...layout.nodes.flatMap((node) => [
      { suffix: node.suffix, aliases: [node.name], what: `${node.name} ${both(node)}` },
      ...[
        ...layout.pods.filter((p) => p.nodeIndex === node.index),
        ...(layout.serviceBackend.nodeIndex === node.index ? [layout.serviceBackend] : []),
      ].map((pod) => ({
        suffix: pod.suffix,
        aliases: [pod.name],
        what: `${pod.k === 0 ? "service backend" : "pod"} ${both(pod)} on ${node.name}`,
      })),
    ]),
  ];
}

/**
 * The namespace suffix a user means by `query`: a suffix ("n1p2"), an alias
 * ("pod1-2", "node1", "outside"), or the full name ("<runId>-n1p2").
 */
export function resolveNamespace(layout: Layout, runId: string, query: string): string | undefined {
  const bare = query.startsWith(`${runId}-`) ? query.slice(runId.length + 1) : query;
  return namespaceEntries(layout).find((e) => e.suffix === bare || e.aliases.includes(bare))
    ?.suffix;
}
