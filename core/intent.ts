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

/** Both families, IPv4 first: the order backends program them in. */
export const FAMILIES: readonly Family[] = ["ipv4", "ipv6"];

/** The family of an address or range in text form. */
export function familyOf(address: string): Family {
  return address.indexOf(":") < 0 ? "ipv4" : "ipv6";
}

/** `ip rule ... fwmark mark/mask lookup table` on nodes that do not hold the VIP. */
export interface PolicyRule {
  /** `ip -4 rule` or `ip -6 rule` (absent: IPv4, as `ip rule` lists them). */
  readonly family?: Family;
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
      family: r.family,
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

/** One family's part of a class: its pods and ranges; undefined when nothing of it is steered. */
function classOfFamily(cls: ScopedClass, family: Family): ScopedClass | undefined {
  const podMarks = new Map([...cls.podMarks].filter(([ip]) => familyOf(ip) === family));
  if (podMarks.size === 0) return undefined;
  const destinations = cls.destinations?.filter((c) => familyOf(c) === family);
  // Restricted to ranges of the other family only: nothing of this family is steered.
  if (destinations !== undefined && destinations.length === 0) return undefined;
  const excluded = cls.excluded?.filter((c) => familyOf(c) === family);
  return {
    id: cls.id,
    ...(destinations ? { destinations } : {}),
    ...(excluded && excluded.length > 0 ? { excluded } : {}),
    podMarks,
  };
}

const byFamily = new WeakMap<Intent, Readonly<Record<Family, Intent>>>();

/**
 * The intent of one family: what its backend objects (iptables or ip6tables,
 * `ip -4` or `ip -6`, IPv4 or IPv6 sets) must do. Each family's is the intent
 * an IPv4-only (or IPv6-only) cluster with just those addresses would have
 * (as kube-proxy runs one proxier per family): nothing in one family depends
 * on the other. Computed once per intent.
 */
export function intentOfFamily(intent: Intent, family: Family): Intent {
  let split = byFamily.get(intent);
  if (split === undefined) {
    // One scan of the pods (the big part); a single-family intent keeps its map uncopied.
    const marks: Record<Family, Map<string, number>> = { ipv4: new Map(), ipv6: new Map() };
    let v6 = 0;
    for (const ip of intent.podMarks.keys()) if (ip.indexOf(":") >= 0) v6++;
    const size = intent.podMarks.size;
    if (v6 > 0 && v6 < size) {
      for (const [ip, mark] of intent.podMarks) marks[familyOf(ip)].set(ip, mark);
    }
    const podMarksOf = (f: Family): ReadonlyMap<string, number> =>
      v6 > 0 && v6 < size ? marks[f] : (f === "ipv6") === (v6 > 0) ? intent.podMarks : new Map();
    split = {
      ipv4: splitFamily(intent, "ipv4", podMarksOf("ipv4")),
      ipv6: splitFamily(intent, "ipv6", podMarksOf("ipv6")),
    };
    byFamily.set(intent, split);
  }
  return split[family];
}

function splitFamily(
  intent: Intent,
  family: Family,
  podMarks: ReadonlyMap<string, number>,
): Intent {
  const of = (text: string) => familyOf(text) === family;
  return {
    ...intent,
    roles: intent.roles.filter((r) => of(r.ip)),
    podMarks,
    scoped: intent.scoped.flatMap((cls) => classOfFamily(cls, family) ?? []),
    noSteer: intent.noSteer.filter(of),
    podCidrs: intent.podCidrs.filter(of),
    rules: intent.rules.filter((r) => (r.family ?? "ipv4") === family),
    routes: intent.routes.filter((r) => of(r.gateway)),
    failClosed: intent.failClosed.filter(of),
  };
}
