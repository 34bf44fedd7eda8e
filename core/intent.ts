/**
 * Snapshot + node view → what this node's datapath must do, with no backend
 * syntax in it: the roles of the VIPs, which pod's traffic gets which mark,
 * the destinations never steered, the destination classes of restricted pods,
 * and the policy rules and routes of forwarders. Every backend (iptables +
 * ipset, nftables) renders this same intent into its own objects, so the two
 * cannot drift apart in what they decide, only in how they write it.
 */
import { compareCidr, formatCidr, parseCidr } from "./ip.ts";
import { markFor } from "./marks.ts";
import type { DatapathConfig } from "./schema.ts";
import type { PodMapping, Snapshot } from "./snapshot.ts";

/** An address family. Every address of the intent carries one, so a backend never guesses. */
export type Family = "ipv4" | "ipv6";

/** The family of an address or range in text form. */
export function familyOf(address: string): Family {
  return address.includes(":") ? "ipv6" : "ipv4";
}

/** `ip rule ... fwmark mark/mask lookup table` on nodes that do not hold the VIP. */
export interface PolicyRule {
  readonly priority: number;
  readonly mark: number;
  readonly mask: number;
  readonly table: number;
}

/** `default via gateway dev dev onlink` in a VIP's routing table. */
export interface TableRoute {
  readonly table: number;
  readonly gateway: string;
  readonly dev: string;
}

/** One VIP's role on this node. */
export interface VipRole {
  /** The VIP. */
  readonly ip: string;
  /** Its address family. */
  readonly family?: Family;
  /** Its route id: the routing table of forwarders, and the mark. */
  readonly routeId: number;
  /** `routeId` shifted into the mark mask. */
  readonly mark: number;
  /** holder: the VIP is on this node's interface (SNAT here); forwarder: route to the holder. */
  readonly role: "holder" | "forwarder";
}

/** Pods whose policy restricts where their traffic is steered, grouped by (destinations, excluded). */
export interface ScopedClass {
  /** A stable hash of the class: every node and every pass names it alike. */
  readonly id: string;
  /** Steered only towards these ranges (absent: everywhere steerable). */
  readonly destinations?: readonly string[];
  /** Never steered towards these ranges. */
  readonly excluded?: readonly string[];
  /** Pod IP → mark of its VIP. */
  readonly podMarks: ReadonlyMap<string, number>;
}

/** What the node must do, in no tool's terms. */
export interface Intent {
  /** The fwmark bits we own. */
  readonly mask: number;
  /** The LAN interface holders SNAT on. */
  readonly interface: string;
  /** Every valid VIP's role on this node, sorted by address. */
  readonly roles: readonly VipRole[];
  /** Pod IP → mark of its VIP, sorted by address (unrestricted pods). */
  readonly podMarks: ReadonlyMap<string, number>;
  /** Pods restricted to or from some destinations, by class, sorted by id. */
  readonly scoped: readonly ScopedClass[];
  /** Destinations never steered: canonical, sorted, no duplicates. */
  readonly noSteer: readonly string[];
  /**
   * The cluster's pod ranges (canonical, sorted): their INVALID packets to a
   * steered destination that no VIP took are dropped (NAT never sees them).
   */
  readonly podCidrs: readonly string[];
  /** Forwarders' `ip rule` entries. */
  readonly rules: readonly PolicyRule[];
  /** Forwarders' default routes towards the VIP. */
  readonly routes: readonly TableRoute[];
  /**
   * Pods that fail closed (core/fail_closed.ts): their unmarked traffic to a
   * steered destination is dropped. Sorted; empty unless asked for.
   */
  readonly failClosed: readonly string[];
  /**
   * NAT state is replicated (core/conntrackd.ts): a packet from outside to a
   * VIP that belongs to no connection this node knows (a reply of a connection
   * whose synced entry is not committed yet, on the new holder) is dropped,
   * so the node's own stack never answers it with a reset and the sender
   * retransmits into the committed entry.
   */
  readonly guardVips?: boolean;
}

/** FNV-1a, 32 bits, as 8 hex digits: a short stable id for a class. */
function shortHash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/** True for a mapping restricted by destination or exclusion. */
export function isScoped(pod: PodMapping): boolean {
  return pod.destinations !== undefined || pod.excluded !== undefined;
}

/** Groups restricted pods into classes, sorted by id. */
export function scopedClasses(
  pods: readonly PodMapping[],
  markOfVip: ReadonlyMap<string, number>,
): ScopedClass[] {
  const classes = new Map<string, ScopedClass & { podMarks: Map<string, number> }>();
  for (const pod of pods) {
    if (!isScoped(pod)) continue;
    const mark = markOfVip.get(pod.vip);
    if (mark === undefined) continue;
    const key = `${pod.destinations?.join(",") ?? "*"}|${pod.excluded?.join(",") ?? ""}`;
    const id = shortHash(key);
    let cls = classes.get(id);
    if (!cls) {
      cls = {
        id,
        ...(pod.destinations ? { destinations: pod.destinations } : {}),
        ...(pod.excluded ? { excluded: pod.excluded } : {}),
        podMarks: new Map(),
      };
      classes.set(id, cls);
    }
    cls.podMarks.set(pod.podIp, mark);
  }
  return [...classes.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
}

function normalizeCidrs(list: readonly string[]): string[] {
  const unique = new Set(list.map((text) => formatCidr(parseCidr(text)!)));
  return [...unique].sort(compareCidr);
}

/**
 * Computes the intent. `localAddresses` are the addresses on the interface:
 * a VIP is held exactly when it is one of them.
 */
export function intentOf(
  snapshot: Snapshot,
  config: DatapathConfig,
  localAddresses: readonly string[],
  options: { readonly guardVips?: boolean } = {},
): Intent {
  const local = new Set(localAddresses);
  const mask = config.markMask;
  const roles: VipRole[] = snapshot.vips.map((vip) => ({
    ip: vip.ip,
    family: familyOf(vip.ip),
    routeId: vip.routeId,
    mark: markFor(vip.routeId, mask),
    role: local.has(vip.ip) ? "holder" : "forwarder",
  }));
  const markOfVip = new Map(roles.map((r) => [r.ip, r.mark]));
  const podMarks = new Map<string, number>();
  let anyScoped = false;
  for (const pod of snapshot.pods) {
    if (isScoped(pod)) {
      anyScoped = true;
      continue;
    }
    const mark = markOfVip.get(pod.vip);
    if (mark !== undefined) podMarks.set(pod.podIp, mark);
  }
  const forwarders = roles.filter((r) => r.role === "forwarder");
  return {
    mask,
    interface: config.interface,
    roles,
    podMarks,
    scoped: anyScoped ? scopedClasses(snapshot.pods, markOfVip) : [],
    noSteer: normalizeCidrs([...config.podCidrs, ...config.serviceCidrs, ...config.excludeCidrs]),
    podCidrs: normalizeCidrs(config.podCidrs),
    rules: forwarders.map((r) => ({
      priority: config.rulePriority,
      mark: r.mark,
      mask,
      table: r.routeId,
    })),
    routes: forwarders.map((r) => ({ table: r.routeId, gateway: r.ip, dev: config.interface })),
    failClosed: snapshot.failClosed ?? [],
    ...(options.guardVips ? { guardVips: true } : {}),
  };
}
