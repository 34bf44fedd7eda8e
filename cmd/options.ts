/**
 * Command-line flags: the old egress.sh flags (same letters, names, defaults)
 * plus the new ones, declared once for every command and validated by zod.
 * A bad flag is a usage error naming the flag and the value.
 */
import { BACKEND_CHOICES } from "./backend.ts";
import { z } from "zod";
import {
  advertInterval,
  nodeName,
  preemptDelay,
  vridOffset,
  VRRP_DEFAULTS,
} from "../core/keepalived.ts";
import {
  DATAPATH_DEFAULTS,
  DatapathConfig,
  describeIssues,
  interfaceName,
  ipv4,
} from "../core/schema.ts";

/** A flag every command shares: letters, description, default. */
export interface FlagSpec {
  readonly flags: string;
  readonly description: string;
  readonly defaultValue?: string | boolean | string[];
  /** Repeatable and comma-separated: "-p a -p b" or "-p a,b". */
  readonly list?: boolean;
}

export const DEFAULT_PODIP_VIP_DIR = "/etc/kube-egress/podip_vip_mapping/";
export const DEFAULT_VIP_ROUTEID_DIR = "/etc/kube-egress/vip_routeid_mapping/";

/** Flags that shape the datapath and name the inputs (every command). */
export const DATAPATH_FLAGS: readonly FlagSpec[] = [
  {
    flags: "-i, --interface <name>",
    description: "LAN interface that holds the VIPs",
    defaultValue: DATAPATH_DEFAULTS.interface,
  },
  {
    flags: "-p, --pod-subnet <cidr>",
    description: "pod range(s); repeat or comma-separate",
    defaultValue: [...DATAPATH_DEFAULTS.podCidrs],
    list: true,
  },
  {
    flags: "-s, --service-subnet <cidr>",
    description: "service range(s); repeat or comma-separate",
    defaultValue: [...DATAPATH_DEFAULTS.serviceCidrs],
    list: true,
  },
  {
    flags: "-v, --podip-vip-mappings <dir>",
    description: "directory of files named <pod IP> containing <VIP>",
    defaultValue: DEFAULT_PODIP_VIP_DIR,
  },
  {
    flags: "-r, --vip-routeid-mappings <dir>",
    description: "directory of files named <VIP> containing <route id 1-252>",
    defaultValue: DEFAULT_VIP_ROUTEID_DIR,
  },
  {
    flags: "--exclude-cidr <cidr>",
    description:
      "destination(s) never steered, besides pod and service ranges; repeat or comma-separate",
    defaultValue: [],
    list: true,
  },
  {
    flags: "--fail-closed",
    description:
      "a mapped pod's traffic to a steered destination leaves as its VIP or is dropped: never with another source, also while no node holds the VIP or the VIP's route id file is gone (files source; with --source kubernetes: the EgressPolicy's spec.failClosed)",
    defaultValue: false,
  },
  {
    flags: "--mark-mask <mask>",
    description:
      "fwmark bits we may use (8 consecutive bits; default keeps clear of kube-proxy, Calico, Cilium)",
    defaultValue: DATAPATH_DEFAULTS.markMask,
  },
  {
    flags: "--rule-priority <n>",
    description: "priority of our ip rules",
    defaultValue: String(DATAPATH_DEFAULTS.rulePriority),
  },
  {
    flags: "--route-protocol <n>",
    description: "route protocol number tagging our ip rules and routes",
    defaultValue: String(DATAPATH_DEFAULTS.routeProtocol),
  },
  {
    flags: "--backend <backend>",
    description:
      "datapath: auto (nftables where kube-proxy runs in nftables mode or no iptables is installed, else what the node uses), nftables or iptables",
    defaultValue: "auto",
  },
  { flags: "--log-format <format>", description: "text or json", defaultValue: "text" },
  {
    flags: "--source <source>",
    description:
      "where mappings come from: files (the -v/-r directories) or kubernetes (EgressVIP/EgressPolicy objects)",
    defaultValue: "files",
  },
  {
    flags: "--kubeconfig <path>",
    description:
      "kubeconfig for --source kubernetes (default: in-cluster service account, else $KUBECONFIG or ~/.kube/config)",
  },
  {
    flags: "--lease-namespace <namespace>",
    description:
      "--kube-selection agent: namespace of the agents' leader-election Lease (default: the pod's or kubeconfig context's, else kube-egress)",
  },
  {
    flags: "--kube-selection <where>",
    description:
      "controller (default): read the selection the controller Deployment publishes (EgressSlices); agent: the design before it, every agent watches every Pod, Namespace, Node and ReplicaSet and selects itself, one elected agent writes statuses (needs the controller's RBAC on the agents; kept for `bench kube` and clusters without the controller)",
    defaultValue: "controller",
  },
];

export const DEFAULT_STATE_DIR = "/run/kube-egress";
/** Overrides the default state directory (a node's own /run when several share a machine: tests). */
export const STATE_DIR_ENV = "KUBE_EGRESS_STATE_DIR";

/** `--state-dir`'s default: $KUBE_EGRESS_STATE_DIR, else /run/kube-egress. */
export function defaultStateDir(): string {
  return Deno.env.get(STATE_DIR_ENV) || DEFAULT_STATE_DIR;
}

/**
 * `--vip-mode`'s default. The mapping directories are egress.sh's inputs, and
 * egress.sh expected each VIP to be placed by something else: the files
 * source follows. The Kubernetes source is new and places its VIPs.
 */
export function defaultVipMode(source: unknown): "keepalived" | "external" {
  return source === "kubernetes" ? "keepalived" : "external";
}

/** Flags that choose who places the VIPs, and how (every command, so command lines can be reused). */
export const PLACEMENT_FLAGS: readonly FlagSpec[] = [
  {
    flags: "--vip-mode <mode>",
    description:
      "who places the VIPs. external (default with --source files, as for egress.sh): something else " +
      "(keepalived-vip, kube-vip, MetalLB, a router) puts each VIP on exactly one node and the agent " +
      "follows; keepalived (default with --source kubernetes): the agent places them with a keepalived " +
      "child (VRRPv3, one instance per VIP; with --source files it needs -u)",
  },
  {
    flags: "--node-name <name>",
    description:
      "this node's name for the VIP priority hash (default: $NODE_NAME, else the hostname)",
  },
  {
    flags: "--state-dir <dir>",
    description:
      "where the agent keeps its lock, keepalived.conf, pid files, vips.json and the rp_filter values it loosened; " +
      `one per node: one agent at a time owns it (default: $${STATE_DIR_ENV}, else ${DEFAULT_STATE_DIR})`,
  },
  {
    flags: "--vrrp-advert-interval <seconds>",
    description: "VRRP advert interval; a holder that falls silent is replaced after ~3.5 of them",
    defaultValue: String(VRRP_DEFAULTS.advertInterval),
  },
  {
    flags: "--vrrp-preempt-delay <seconds>",
    description: "how long a node that comes back waits before taking its VIPs back",
    defaultValue: String(VRRP_DEFAULTS.preemptDelay),
  },
  {
    flags: "--vrrp-vrid-offset <n>",
    description:
      "shift the VRRP virtual router ids (route id + n, wrapping within 1-255) where the LAN already runs VRRP with those ids",
    defaultValue: "0",
  },
  {
    flags: "--vrrp-unicast-peers <ip>",
    description:
      'the nodes\' LAN addresses: send VRRP adverts to each instead of multicast (for LANs that drop multicast); the same list on every node, repeat or comma-separate; "auto" with --source kubernetes: the InternalIPs of the Nodes that may hold each VIP',
    defaultValue: [],
    list: true,
  },
  {
    flags: "--conntrack-sync <off|on>",
    description:
      "replicate the NAT state of the VIPs' connections to the other nodes with conntrackd (FTFW), so established connections survive a failover: multicast on the interface, or one conntrackd per peer with --vrrp-unicast-peers",
    defaultValue: "off",
  },
  {
    flags: "--conntrack-sync-interface <name>",
    description: "the interface conntrackd syncs over (default: --interface)",
  },
  {
    flags: "--conntrack-sync-address <ip>",
    description:
      "this node's address on that interface (default: its first IPv4 address that is not a /32)",
  },
  {
    flags: "--conntrack-sync-peers <ip>",
    description:
      "the nodes' addresses for NAT state sync: one acknowledged (FTFW) conntrackd per peer; the same list on every node, repeat or comma-separate (default: --vrrp-unicast-peers; none: multicast, unacknowledged)",
    defaultValue: [],
    list: true,
  },
  {
    flags: "--guard <mode>",
    description:
      "on (default): only nodes that may hold a VIP attract its traffic, advertise it by VRRP or claim it by ARP " +
      "(an nftables table of our own; refusals are counted and reported, the holder defends its VIPs); off: no guard table",
    defaultValue: "on",
  },
  {
    flags: "--node-addresses <ip>",
    description:
      "the nodes' LAN addresses, for the guard with --source files (default: the --vrrp-unicast-peers list); " +
      "repeat or comma-separate",
    defaultValue: [],
    list: true,
  },
];

/** `run`'s own flags, after the shared ones. */
export const RUN_ONLY_FLAGS: readonly FlagSpec[] = [
  {
    flags: "-u, --update-interval <seconds>",
    description:
      "re-apply every N seconds and react to VIP moves at once; absent or empty = apply once and exit, as egress.sh (--source kubernetes: always runs, default 60)",
  },
  {
    flags: "-d, --delete",
    description: "remove everything kube-egress created on this node, then exit",
  },
  { flags: "--dry-run", description: "print what each pass would write instead of writing it" },
  {
    flags: "--cleanup-on-exit",
    description:
      "on SIGTERM/SIGINT remove our rules (default: leave them, so rolling updates keep egress working)",
  },
  {
    flags: "--metrics-addr <host:port>",
    description:
      "serve Prometheus /metrics, /healthz and /readyz here (e.g. 0.0.0.0:9479); off by default",
  },
];

/** Every flag of `run`, in the order its help lists them. */
export const RUN_FLAGS: readonly FlagSpec[] = [
  ...DATAPATH_FLAGS,
  ...PLACEMENT_FLAGS,
  ...RUN_ONLY_FLAGS,
];

/** Flag labels for error messages, keyed by the config field they feed. */
const LABELS: Record<string, string> = {
  interface: "--interface",
  podCidrs: "--pod-subnet",
  serviceCidrs: "--service-subnet",
  excludeCidrs: "--exclude-cidr",
  markMask: "--mark-mask",
  rulePriority: "--rule-priority",
  routeProtocol: "--route-protocol",
  podVipDir: "--podip-vip-mappings",
  failClosed: "--fail-closed",
  vipRouteDir: "--vip-routeid-mappings",
  config: "",
  updateInterval: "--update-interval",
  logFormat: "--log-format",
  metricsAddr: "--metrics-addr",
  placement: "",
  mode: "--vip-mode",
  nodeName: "--node-name",
  stateDir: "--state-dir",
  advertInterval: "--vrrp-advert-interval",
  preemptDelay: "--vrrp-preempt-delay",
  unicastPeers: "--vrrp-unicast-peers",
  vridOffset: "--vrrp-vrid-offset",
  conntrackSync: "",
  syncMode: "--conntrack-sync",
  syncInterface: "--conntrack-sync-interface",
  syncAddress: "--conntrack-sync-address",
  syncPeers: "--conntrack-sync-peers",
  guard: "--guard",
  nodeAddresses: "--node-addresses",
  source: "--source",
  kubeconfig: "--kubeconfig",
  leaseNamespace: "--lease-namespace",
  kubeSelection: "--kube-selection",
  backend: "--backend",
};

/** Whole numbers arrive from the command line as text. */
const integerText = (schema: z.ZodInt) =>
  z.string().regex(/^[0-9]+$/, { error: "must be a whole number" }).transform(Number).pipe(schema);

/** Seconds from the command line: a plain decimal number. */
const secondsText = (schema: z.ZodNumber) =>
  z.string().regex(/^[0-9]+(\.[0-9]+)?$/, { error: "must be a number of seconds such as 0.1" })
    .transform(Number).pipe(schema);

/** Who places VIPs on this node and with which timers. */
const PlacementSettingsSchema = z.object({
  mode: z.enum(["keepalived", "external"], { error: 'must be "keepalived" or "external"' }),
  nodeName,
  stateDir: z.string().min(1, { error: "must name a directory" }),
  advertInterval: secondsText(advertInterval),
  preemptDelay: secondsText(preemptDelay),
  vridOffset: integerText(vridOffset),
  unicastPeers: z.union([
    z.tuple([z.literal("auto")]).transform(() => "auto" as const),
    z.array(ipv4, { error: 'must be IPv4 addresses or "auto"' }).refine(
      (ips) => new Set(ips).size === ips.length,
      { error: "lists an address twice" },
    ),
  ], { error: 'must be IPv4 addresses or "auto"' }),
});
export type PlacementSettings = z.output<typeof PlacementSettingsSchema>;

/** The default node name: the downward API's NODE_NAME in a DaemonSet, else the hostname. */
export function defaultNodeName(): string {
  return Deno.env.get("NODE_NAME") || Deno.hostname();
}

/** Every shared flag, checked in one pass so that all bad flags are named at once. */
const CommonSettingsSchema = z.object({
  config: DatapathConfig.extend({
    rulePriority: integerText(DatapathConfig.shape.rulePriority),
    routeProtocol: integerText(DatapathConfig.shape.routeProtocol),
  }),
  podVipDir: z.string().min(1, { error: "must name a directory" }),
  vipRouteDir: z.string().min(1, { error: "must name a directory" }),
  failClosed: z.boolean(),
  logFormat: z.enum(["text", "json"], { error: 'must be "text" or "json"' }),
  backend: z.enum(BACKEND_CHOICES, { error: 'must be "auto", "nftables" or "iptables"' }),
  placement: PlacementSettingsSchema,
  conntrackSync: z.object({
    syncMode: z.enum(["off", "on"], { error: 'must be "off" or "on"' }),
    syncInterface: interfaceName.optional(),
    syncAddress: ipv4.optional(),
    syncPeers: z.array(ipv4, { error: "must be IPv4 addresses" }),
  }),
  guard: z.enum(["on", "off"], { error: 'must be "on" or "off"' }),
  nodeAddresses: z.array(ipv4, { error: "must be IPv4 addresses" }),
  source: z.enum(["files", "kubernetes"], { error: 'must be "files" or "kubernetes"' }),
  kubeconfig: z.string().min(1).optional(),
  leaseNamespace: z.string().regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, {
    error: "must be a namespace name",
  }).optional(),
  kubeSelection: z.enum(["controller", "agent"], { error: 'must be "controller" or "agent"' }),
}).refine((s) => s.placement.unicastPeers !== "auto" || s.source === "kubernetes", {
  error: '"auto" needs --source kubernetes (the peers are the Nodes\' InternalIPs)',
  path: ["placement", "unicastPeers"],
});
export type CommonSettings = z.output<typeof CommonSettingsSchema>;

/** Turns commander's options (camel-cased flag names) into validated settings. */
export function commonSettings(flags: Record<string, unknown>): ParseResult<CommonSettings> {
  return parseFlags(CommonSettingsSchema, {
    config: {
      interface: flags.interface,
      podCidrs: flags.podSubnet,
      serviceCidrs: flags.serviceSubnet,
      excludeCidrs: flags.excludeCidr,
      markMask: flags.markMask,
      rulePriority: flags.rulePriority,
      routeProtocol: flags.routeProtocol,
    },
    podVipDir: flags.podipVipMappings,
    vipRouteDir: flags.vipRouteidMappings,
    failClosed: flags.failClosed === true,
    logFormat: flags.logFormat,
    backend: flags.backend ?? "auto",
    placement: {
      mode: flags.vipMode ?? defaultVipMode(flags.source ?? "files"),
      nodeName: flags.nodeName ?? defaultNodeName(),
      stateDir: flags.stateDir ?? defaultStateDir(),
      advertInterval: flags.vrrpAdvertInterval ?? String(VRRP_DEFAULTS.advertInterval),
      preemptDelay: flags.vrrpPreemptDelay ?? String(VRRP_DEFAULTS.preemptDelay),
      unicastPeers: flags.vrrpUnicastPeers ?? [],
      vridOffset: flags.vrrpVridOffset ?? "0",
    },
    conntrackSync: {
      syncMode: flags.conntrackSync ?? "off",
      syncInterface: flags.conntrackSyncInterface,
      syncAddress: flags.conntrackSyncAddress,
      syncPeers: flags.conntrackSyncPeers ?? [],
    },
    guard: flags.guard ?? "on",
    nodeAddresses: flags.nodeAddresses ?? [],
    source: flags.source ?? "files",
    kubeconfig: flags.kubeconfig,
    leaseNamespace: flags.leaseNamespace,
    kubeSelection: flags.kubeSelection ?? "controller",
  });
}

/** `-u` as in egress.sh: seconds between passes; absent or empty = apply once and exit. */
export const updateInterval = z.union([z.undefined(), z.literal(""), z.string()]).transform(
  (text, ctx) => {
    if (text === undefined || text === "") return undefined;
    const seconds = Number(text);
    if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 86400) {
      ctx.addIssue({
        code: "custom",
        input: text,
        message: "must be a number of seconds between 0 and 86400",
      });
      return z.NEVER;
    }
    return seconds;
  },
);

/** Where the metrics and health endpoint listens. */
export interface ListenAddress {
  readonly hostname: string;
  readonly port: number;
  /** As given on the command line, for messages. */
  readonly text: string;
}

/**
 * `--metrics-addr`: "host:port", ":port" (every address) or "[v6]:port".
 * Port 0 picks a free port (tests).
 */
export const listenAddress = z.string().transform((text, ctx): ListenAddress => {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]*)):([0-9]{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    ctx.addIssue({
      code: "custom",
      input: text,
      message: "must be host:port, :port or [ipv6]:port, e.g. 0.0.0.0:9479",
    });
    return z.NEVER;
  }
  return { hostname: match[1] ?? (match[2] || "0.0.0.0"), port, text };
});

/** A validated value, or the message naming every bad flag. */
export type ParseResult<T> = { ok: true; value: T } | { ok: false; message: string };

/** `run`'s settings: the shared ones plus the interval, all checked before any error is shown. */
export function runSettings(
  flags: Record<string, unknown>,
): ParseResult<
  CommonSettings & { intervalSeconds: number | undefined; metricsAddr: ListenAddress | undefined }
> {
  const common = commonSettings(flags);
  const interval = parseFlags(
    z.object({ updateInterval, metricsAddr: listenAddress.optional() }),
    { updateInterval: flags.updateInterval, metricsAddr: flags.metricsAddr },
  );
  if (common.ok && interval.ok) {
    return {
      ok: true,
      value: {
        ...common.value,
        intervalSeconds: interval.value.updateInterval,
        metricsAddr: interval.value.metricsAddr,
      },
    };
  }
  const messages = [common, interval].flatMap((r) => (r.ok ? [] : [r.message]));
  return { ok: false, message: messages.join("; ") };
}

/** Validates flags; on failure returns one message naming each bad flag. */
export function parseFlags<T extends z.ZodType>(
  schema: T,
  flags: unknown,
): ParseResult<z.output<T>> {
  // Parsed once per process: zod's compiled fast path (new Function, never in V8's code
  // cache) costs a one-shot run more to build (~3 ms) than it could ever save here.
  const parsed = schema.safeParse(flags, { reportInput: true, jitless: true });
  if (parsed.success) return { ok: true, value: parsed.data };
  return { ok: false, message: describeIssues(parsed.error, LABELS) };
}

/** Splits repeated, comma-separated list flags into one list. */
export function collectList(
  value: string,
  previous: string[] | undefined,
  defaults: readonly string[],
): string[] {
  const base = previous === undefined || previous === defaults ? [] : previous;
  return [...base, ...value.split(",").map((v) => v.trim()).filter(Boolean)];
}
