/**
 * Neighbour caches after a VIP's role changes on this node. The LAN learns
 * where a VIP lives from ARP, and caches it: a node whose entry still names
 * the old holder sends there (transit traffic then passes, see
 * `markInvalidRule`), and a router whose entry is stale sends the replies
 * there. So, when this node's role for a VIP changes:
 * - the node taking it announces it with gratuitous ARP, a few times over a
 *   few seconds (as keepalived does: one announcement can be lost, or ignored
 *   by a neighbour whose entry changed within its `locktime`); keepalived
 *   announces its own VIPs, so only where something else places them;
 * - the node refreshes its own neighbour entry for it: an entry learned
 *   before this node held the VIP survives the time it held it, and would
 *   send this node's traffic for the VIP to a node that no longer has it
 *   (two such nodes send it to each other). Entries pinned by an operator
 *   (`nud permanent`) are theirs and stay.
 */
import type { VipRole } from "./desired.ts";

/** One VIP whose role on this node changes with a pass. */
export interface RoleChange {
  readonly vip: string;
  /** "none": no rule of ours for it yet (a new VIP, or the first pass on this node). */
  readonly from: VipRole["role"] | "none";
  readonly to: VipRole["role"];
}

/** When gratuitous ARP is sent after a takeover, in ms from the pass: three rounds over two seconds. */
export const ANNOUNCE_SCHEDULE_MS: readonly number[] = [0, 1000, 2000];

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

/** What to do about neighbours after `changes`: entries to refresh, VIPs to announce. */
export function neighbourActions(
  changes: readonly RoleChange[],
  announceTakeovers: boolean,
): { refresh: string[]; announce: string[] } {
  return {
    refresh: changes.map((c) => c.vip),
    announce: announceTakeovers ? changes.filter((c) => c.to === "holder").map((c) => c.vip) : [],
  };
}
