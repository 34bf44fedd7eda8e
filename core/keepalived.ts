/**
 * VIP placement with keepalived, decided here and rendered as text: one VRRPv3
 * instance per VIP, its virtual router id taken from the VIP's route id (unique
 * per VIP by validation), and this node's priority for it from a stable hash of
 * (VIP, node name). Every node computes its own priorities alone, with no
 * coordination, yet all nodes agree on the ranking; the node ranked first for a
 * VIP holds it, so VIPs spread over the nodes instead of piling up on one.
 */
import { z } from "zod";
import { canonicalIp } from "./ip.ts";

/** VRRP timers and placement knobs shared by every instance. */
export interface VrrpTimers {
  /** Seconds between adverts (VRRPv3 allows centiseconds). Backups take over after 3 missed adverts. */
  readonly advertInterval: number;
  /** Seconds a node that comes back waits before taking its VIPs back from a lower-priority holder. */
  readonly preemptDelay: number;
}

export interface KeepalivedSettings extends VrrpTimers {
  /** The LAN interface that carries the VIPs and the adverts. */
  readonly interface: string;
  /** This node's name: the second half of the priority hash. */
  readonly nodeName: string;
  /**
   * The nodes' LAN addresses, for VRRP over unicast where the LAN drops
   * multicast (some switches, cloud-like bare metal). Empty: multicast.
   * The same list serves every node (its own address included: tested).
   */
  readonly unicastPeers?: readonly string[];
  /** Shifts the virtual router ids (see `vrrpRouterId`); 0 by default. */
  readonly vridOffset?: number;
  /**
   * This node's addresses on the interface. They are left out of every
   * `unicast_peer` list (a node that sends to itself sees its own adverts). An
   * IPv6 instance over unicast sends from the one of them that is among its
   * peers (`unicast_src_ip`): keepalived would send from the link-local
   * address, which its peers do not list, and they drop the adverts (measured:
   * both nodes then hold the VIP).
   */
  readonly localAddresses?: readonly string[];
}

/** A VIP offered to placement. `eligible: false` = this node must not hold it (drained, cordoned, not selected). */
export interface PlacementVip {
  readonly ip: string;
  readonly routeId: number;
  readonly eligible?: boolean;
  /** Unicast peers for this VIP's instance (the Kubernetes source's `auto`); overrides the settings' list. */
  readonly peers?: readonly string[];
}

/** One VRRP instance in this node's keepalived configuration. */
export interface VrrpInstance {
  readonly name: string;
  readonly vip: string;
  readonly routeId: number;
  readonly vrid: number;
  readonly priority: number;
  readonly peers?: readonly string[];
  /**
   * The VIP's address of the other family (a dual-stack VIP: two addresses,
   * one route id). A VRRP instance advertises one family only, so this one
   * rides along in `virtual_ipaddress_excluded`: added and removed with `vip`
   * on the same holder, in the same transition, announced with it (unsolicited
   * neighbour advertisements), never advertised.
   */
  readonly excluded?: readonly string[];
}

/** An IPv6 address (as opposed to IPv4), by its text. */
export const isV6 = (ip: string): boolean => ip.includes(":");

/** Defaults: 100 ms adverts (takeover after ~0.3-0.4 s), 5 s before a returning node preempts. */
export const VRRP_DEFAULTS: VrrpTimers = { advertInterval: 0.1, preemptDelay: 5 };

/** Advert interval: VRRPv3 counts centiseconds in 12 bits, so 0.01 s to 40.95 s. */
export const advertInterval = z.number({ error: "must be a number of seconds" })
  .min(0.01, { error: "must be at least 0.01 s (VRRPv3 counts centiseconds)" })
  .max(40.95, { error: "must be at most 40.95 s (VRRPv3 limit)" });

/** keepalived accepts 0 to 1000 seconds of preemption delay. */
export const preemptDelay = z.number({ error: "must be a number of seconds" })
  .min(0, { error: "must be between 0 and 1000 seconds" })
  .max(1000, { error: "must be between 0 and 1000 seconds" });

/** A node name as Kubernetes and hostnames spell it; it goes into keepalived's config verbatim. */
export const nodeName = z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})$/, {
  error: "must be a node name of letters, digits, '.', '-' or '_' (at most 253)",
});

/** The instance name of a route id; keepalived logs state changes under it. */
export function instanceName(routeId: number): string {
  return `kube_egress_${routeId}`;
}

/** The route id behind an instance name, or undefined for names that are not ours. */
export function routeIdOfInstance(name: string): number | undefined {
  const match = /^kube_egress_([0-9]{1,3})$/.exec(name);
  return match ? Number(match[1]) : undefined;
}

/** 32-bit FNV-1a of the UTF-8 bytes, then murmur3's finalizer so that near-equal names spread. */
export function stableHash(text: string): number {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * This node's VRRP priority for a VIP: 1..254 (255 is reserved for an address
 * owner). Rendezvous hashing: for each VIP every node draws an independent
 * pseudo-random priority, so each node is first for about 1/N of the VIPs, and
 * when a node leaves only its VIPs move. Equal priorities are broken by VRRP
 * itself (the higher primary address wins).
 */
export function vrrpPriority(vip: string, node: string): number {
  return 1 + (stableHash(`${vip}\u0000${node}`) % 254);
}

/**
 * The VRRP virtual router id of a route id: the route id itself, or shifted by
 * `offset` within 1-255 (wrapping) where the LAN already runs VRRP with those
 * ids. Route ids are 1-252 and unique, so the ids stay unique for any offset.
 */
export function vrrpRouterId(routeId: number, offset = 0): number {
  return ((routeId - 1 + offset) % 255) + 1;
}

/** `--vrrp-vrid-offset`: 0 (ids = route ids) to 254. */
export const vridOffset = z.int({ error: "must be a whole number" })
  .min(0, { error: "must be between 0 and 254" })
  .max(254, { error: "must be between 0 and 254" });

/**
 * The instances this node runs: one per route id of the eligible VIPs,
 * ordered by route id; `offset` shifts the router ids. The addresses of one
 * route id are one VIP's families (at most one each: the snapshot's rule). Its
 * IPv4 address, where it has one, is the instance's own (adverts, peers and
 * priority, as for a single-stack IPv4 VIP); the IPv6 one is `excluded`. An
 * IPv6-only VIP gets an IPv6 instance (VRRPv3 over IPv6).
 */
export function vrrpInstances(
  vips: readonly PlacementVip[],
  node: string,
  offset = 0,
): VrrpInstance[] {
  const byRoute = new Map<number, PlacementVip[]>();
  for (const v of vips) byRoute.set(v.routeId, [...(byRoute.get(v.routeId) ?? []), v]);
  const instances: VrrpInstance[] = [];
  for (const [routeId, group] of byRoute) {
    if (group.some((v) => v.eligible === false)) continue;
    const ordered = [...group].sort((a, b) => Number(isV6(a.ip)) - Number(isV6(b.ip)));
    const [v, ...rest] = ordered;
    const excluded = rest.filter((r) => isV6(r.ip) !== isV6(v.ip)).slice(0, 1).map((r) => r.ip);
    instances.push({
      name: instanceName(routeId),
      vip: v.ip,
      routeId,
      vrid: vrrpRouterId(routeId, offset),
      priority: vrrpPriority(v.ip, node),
      ...(v.peers ? { peers: v.peers } : {}),
      ...(excluded.length > 0 ? { excluded } : {}),
    });
  }
  return instances.sort((a, b) => a.routeId - b.routeId);
}

/**
 * One address line of `virtual_ipaddress`: IPv4 /32, IPv6 /128 deprecated
 * (`preferred_lft 0`: RFC 6724 source selection never picks it, so neither the
 * node's own traffic nor masqueraded pods leave with the VIP; measured, a
 * plain /128 wins over the node's address). keepalived 2.2.7 adds IPv6 VIPs
 * with `nodad` by itself (never "tentative" on the new holder; measured, DAD
 * would hold a plain address back 1-2 s); its `-nodad` keyword turns DAD back
 * on (measured), so it is never written.
 */
export function vipAddressLine(ip: string, iface: string): string {
  return isV6(ip) ? `${ip}/128 dev ${iface} preferred_lft 0` : `${ip}/32 dev ${iface}`;
}

/** Seconds as keepalived reads them: at most two decimals, no float noise. */
function seconds(value: number): string {
  return String(Math.round(value * 100) / 100);
}

/**
 * The whole keepalived.conf for this node. Equal inputs give byte-equal text,
 * so the caller reloads keepalived only when something really changed.
 *
 * - `state BACKUP` everywhere: nobody claims a VIP before hearing the others
 *   for 3 adverts, and the highest priority wins (preemption, after
 *   `preempt_delay` for a node that comes back).
 * - VIPs are /32 (IPv4) or deprecated /128 (IPv6, `vipAddressLine`) on the
 *   interface: the node's own subnet route is untouched.
 * - A dual-stack VIP is one instance: IPv4 advertised, IPv6 excluded, so both
 *   addresses always sit on one holder (`vrrpInstances`).
 * - GARP, and for IPv6 unsolicited neighbour advertisements (override flag,
 *   to ff02::1; measured with tcpdump, excluded addresses too): a burst at
 *   takeover and one more a second later (for neighbours that missed the
 *   first); no periodic refresh needed since adverts keep switches' MAC tables
 *   fresh.
 * - `dynamic_interfaces`: an interface that disappears puts the instances in
 *   FAULT (VIPs released) and is picked up again when it comes back.
 * - No `vrrp_strict`: keepalived then never touches iptables/nftables.
 */
export function renderKeepalivedConf(
  instances: readonly VrrpInstance[],
  settings: KeepalivedSettings,
): string {
  const lines = [
    `# kube-egress: VIP placement for node ${settings.nodeName}.`,
    "# Rendered by the agent and rewritten on every change: do not edit.",
    "global_defs {",
    `  router_id ${settings.nodeName}`,
    "  vrrp_version 3",
    "  vrrp_garp_master_repeat 3",
    "  vrrp_garp_master_delay 1",
    "  vrrp_garp_lower_prio_repeat 1",
    "  vrrp_higher_prio_send_advert true",
    "  max_auto_priority -1",
    "  dynamic_interfaces",
    "}",
  ];
  for (const instance of instances) {
    lines.push(
      "",
      `vrrp_instance ${instance.name} {`,
      "  state BACKUP",
      `  interface ${settings.interface}`,
      `  virtual_router_id ${instance.vrid}`,
      `  priority ${instance.priority}`,
      `  advert_int ${seconds(settings.advertInterval)}`,
      `  preempt_delay ${seconds(settings.preemptDelay)}`,
      ...unicastPeerLines(instance, settings),
      "  virtual_ipaddress {",
      `    ${vipAddressLine(instance.vip, settings.interface)}`,
      "  }",
      ...(instance.excluded
        ? [
          "  virtual_ipaddress_excluded {",
          ...instance.excluded.map((ip) => `    ${vipAddressLine(ip, settings.interface)}`),
          "  }",
        ]
        : []),
      "}",
    );
  }
  return lines.join("\n") + "\n";
}

/** Where an instance's adverts go by unicast: its VIP's own peers, else the flag's list; none = multicast. */
export function instancePeers(
  instance: VrrpInstance,
  settings: KeepalivedSettings,
): readonly string[] {
  return instance.peers ?? settings.unicastPeers ?? [];
}

/**
 * `unicast_peer { ... }`: adverts sent to each peer instead of the VRRP
 * multicast group; an IPv6 instance also names its source (see
 * `KeepalivedSettings.localAddresses`).
 */
function unicastPeerLines(instance: VrrpInstance, settings: KeepalivedSettings): string[] {
  const peers = instancePeers(instance, settings);
  if (peers.length === 0) return [];
  const local = new Set((settings.localAddresses ?? []).map((a) => canonicalIp(a) ?? a));
  const own = (p: string) => local.has(canonicalIp(p) ?? p);
  const source = isV6(instance.vip) ? peers.find(own) : undefined;
  // Not to ourselves: keepalived takes each of its own adverts for a peer's and logs a
  // warning per advert (100 a second at 0.01 s), work in the middle of a takeover. A list
  // of ourselves alone stays: an empty one would turn the instance to multicast.
  const others = peers.filter((p) => !own(p));
  return [
    ...(source ? [`  unicast_src_ip ${source}`] : []),
    "  unicast_peer {",
    ...(others.length > 0 ? others : peers).map((ip) => `    ${ip}`),
    "  }",
  ];
}

/** The VRRP states keepalived reports for an instance. */
export type VrrpState = "MASTER" | "BACKUP" | "FAULT" | "STOP";

/** What `status` shows about placement, written to `<state dir>/vips.json`. */
export interface PlacementStatus {
  readonly mode: "keepalived";
  readonly node: string;
  /** The agent's keepalived is running (false after it stopped or while it restarts). */
  readonly running: boolean;
  readonly advertInterval: number;
  readonly preemptDelay: number;
  readonly vips: readonly {
    readonly vip: string;
    readonly routeId: number;
    readonly vrid: number;
    readonly priority: number;
    /** keepalived's state for the instance, "UNKNOWN" until it reports one. */
    readonly state: VrrpState | "UNKNOWN";
    /** Where its adverts go by unicast; absent: multicast. */
    readonly peers?: readonly string[];
    /** The VIP's address of the other family, placed with it (dual stack). */
    readonly excluded?: readonly string[];
  }[];
  /** VIPs this node must not hold (eligible: false). */
  readonly ineligible: readonly string[];
}

/**
 * Reads a state change from one line of keepalived's log ("... (kube_egress_5)
 * Entering MASTER STATE"); undefined for every other line.
 */
export function parseStateLine(line: string): { routeId: number; state: VrrpState } | undefined {
  const match = /\((kube_egress_[0-9]+)\):? [Ee]ntering (MASTER|BACKUP|FAULT|STOP) (STATE|state)/
    .exec(line);
  if (!match) return undefined;
  const routeId = routeIdOfInstance(match[1]);
  return routeId === undefined ? undefined : { routeId, state: match[2] as VrrpState };
}
