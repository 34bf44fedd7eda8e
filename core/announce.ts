/**
 * Neighbour caches after a VIP's role changes on this node. The LAN learns
 * where a VIP lives from ARP, and caches it: a node whose entry still names
 * the old holder sends there (transit traffic then passes, see
 * `markInvalidRule`), and a router whose entry is stale sends the replies
 * there. So, when this node's role for a VIP changes:
 * - the node taking it announces it, a few times over a few seconds (as
 *   keepalived does: one announcement can be lost, or ignored by a neighbour
 *   whose entry changed within its `locktime`): an IPv4 VIP with gratuitous
 *   ARP, an IPv6 VIP with unsolicited neighbour advertisements (RFC 4861
 *   §7.2.6: to all nodes, override flag, target link-layer address; the
 *   kernel sends none for an address added `nodad`, even with
 *   `ndisc_notify`, measured). keepalived announces its own VIPs, so only
 *   where something else places them;
 * - the node refreshes its own neighbour entry for it: an entry learned
 *   before this node held the VIP survives the time it held it, and would
 *   send this node's traffic for the VIP to a node that no longer has it
 *   (two such nodes send it to each other). Entries pinned by an operator
 *   (`nud permanent`) are theirs and stay.
 */
import type { VipRole } from "./desired.ts";
import { isIPv6 } from "./ip.ts";

/** One VIP whose role on this node changes with a pass. */
export interface RoleChange {
  readonly vip: string;
  /** "none": no rule of ours for it yet (a new VIP, or the first pass on this node). */
  readonly from: VipRole["role"] | "none";
  readonly to: VipRole["role"];
}

/** When a takeover is announced, in ms from the pass: three rounds over two seconds. */
export const ANNOUNCE_SCHEDULE_MS: readonly number[] = [0, 1000, 2000];

/** Packets per round and VIP (two, so that one lost on the wire is not a lost round). */
export const ANNOUNCEMENTS_PER_ROUND = 2;

/** How a VIP this node took is announced: gratuitous ARP, or an unsolicited neighbour advertisement. */
export interface Announcement {
  readonly vip: string;
  readonly kind: "arp" | "na";
}

/** The two arpings on Debian: Habets' (package `arping`) and iputils' (`iputils-arping`). */
export type ArpingFlavour = "habets" | "iputils";

/**
 * One round of gratuitous ARP for `vip` (sender and target address the VIP,
 * ANNOUNCEMENTS_PER_ROUND packets): one arping process.
 */
export function gratuitousArpArgv(vip: string, iface: string, flavour: ArpingFlavour): string[] {
  const count = String(ANNOUNCEMENTS_PER_ROUND);
  return flavour === "habets"
    ? ["arping", "-q", "-U", "-c", count, "-W", "0.05", "-i", iface, "-S", vip, vip]
    : ["arping", "-q", "-U", "-c", count, "-I", iface, "-s", vip, vip];
}

/**
 * One unsolicited neighbour advertisement for `vip` with na6 (ipv6toolkit):
 * from the VIP to all nodes (ff02::1), target the VIP, override flag, the
 * interface's MAC as target link-layer address option; the router flag as
 * the kernel would set it (the interface forwards), so that a neighbour
 * that routes through the VIP keeps it as a router. One packet per process.
 */
export function unsolicitedNaArgv(vip: string, iface: string, router: boolean): string[] {
  return ["na6", "-i", iface, "-s", vip, "-d", "ff02::1", "-t", vip, "-o", "-e"].concat(
    router ? ["-r"] : [],
  );
}

/**
 * The VIPs whose role changes from the one in force (mark → role, as the
 * backend reads it from its own objects: `DatapathPlanner.rolesInForce`) to
 * `desiredRoles`.
 */
export function roleChanges(
  inForce: ReadonlyMap<number, VipRole["role"]>,
  desiredRoles: readonly VipRole[],
): RoleChange[] {
  return desiredRoles
    .filter((r) => inForce.get(r.mark) !== r.role)
    .map((r) => ({ vip: r.ip, from: inForce.get(r.mark) ?? "none", to: r.role }));
}

/**
 * What to do about neighbours after `changes`: entries to refresh, VIPs to
 * announce (each by its family's means).
 */
export function neighbourActions(
  changes: readonly RoleChange[],
  announceTakeovers: boolean,
): { refresh: string[]; announce: Announcement[] } {
  return {
    refresh: changes.map((c) => c.vip),
    announce: announceTakeovers
      ? changes.filter((c) => c.to === "holder").map((c) => ({
        vip: c.vip,
        kind: isIPv6(c.vip) ? "na" : "arp",
      }))
      : [],
  };
}
