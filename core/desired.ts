/**
 * The iptables + ipset backend's rendering of the intent (core/intent.ts):
 * the rules of our two chains in iptables-save form and the destination
 * classes' ipsets. Nothing outside the iptables backend reads this syntax;
 * `desiredState` is the intent with this rendering beside it.
 */
import { failClosedRules, failClosedSet, failClosedSetName } from "./fail_closed.ts";
import { type Intent, intentOf, intentOfFamily, type VipRole } from "./intent.ts";
import { hex, pickedUpMark } from "./marks.ts";
import { IPSET_V4, type IpsetFamily, MARK_CHAIN, SNAT_CHAIN, type TableName } from "./names.ts";
import type { DatapathConfig } from "./schema.ts";
import type { Snapshot } from "./snapshot.ts";
import {
  scopedMarkInvalidRule,
  scopedMarkReplyRule,
  scopedRule,
  wantedScopedSets,
  type WantedSet,
} from "./scoped.ts";

export type { PolicyRule, TableRoute, VipRole } from "./intent.ts";

/** What the iptables backend writes for an intent: its chains' rules and the classes' sets. */
export interface IptablesRendering {
  /** The sets the destination classes need, by name. */
  readonly scopedSets: ReadonlyMap<string, WantedSet>;
  /** Rules of our chains, in iptables-save form ("-A CHAIN ..."). */
  readonly chains: Readonly<Record<TableName, readonly string[]>>;
}

/** The intent with the iptables backend's rendering of it. */
export interface DesiredState extends Intent, IptablesRendering {}

/**
 * The one mangle rule: O(1) per packet whatever the number of pods or VIPs.
 * The pods set is matched first: for every packet not from a mapped pod (most
 * of a node's traffic) one hash lookup ends the rule, before the nosteer
 * lookup (one per prefix length) and conntrack.
 */
export function markRule(f: IpsetFamily = IPSET_V4): string {
  return `-A ${MARK_CHAIN} -m set --match-set ${f.pods} src -m set ! --match-set ${f.nosteer} dst` +
    ` -m conntrack --ctdir ORIGINAL -j SET --map-set ${f.pods} src --map-mark`;
}

/**
 * Marks a mapped pod's packet to a steerable destination that conntrack calls
 * INVALID (a FIN or stray ACK of a connection whose entry is gone, e.g.
 * flushed when the VIP moved, or a connection seen here in one direction only
 * because another node's neighbour entry still points at this old holder).
 * `markRule` does not see it (no entry, no direction). Marked, it takes the
 * VIP's route: on a node that does not hold the VIP it is forwarded to the
 * holder, whose own conntrack decides; on the holder `holderDropInvalidRule`
 * drops it, because NAT never sees such a packet and it would leave with the
 * pod's own address (kube-proxy drops forwarded INVALID packets for the same
 * reason).
 */
export function markInvalidRule(f: IpsetFamily = IPSET_V4): string {
  return `-A ${MARK_CHAIN} -m set --match-set ${f.pods} src -m set ! --match-set ${f.nosteer} dst` +
    ` -m conntrack --ctstate INVALID -j SET --map-set ${f.pods} src --map-mark`;
}

/**
 * On every node, for every VIP: a server's packet to the VIP that this node
 * would translate back to a pod (the reply direction of a connection it
 * source-NATed) while the VIP is no longer on it is dropped. The node held
 * the VIP a moment ago and keeps the connection's entry until its pass
 * flushes it (with NAT state sync it keeps other nodes' pods' entries for
 * good); a router whose neighbour entry still points here (no gratuitous ARP
 * reached it yet, or it ignores them) sends it the server's packets. Passed
 * on, they would reach the pod's node, which may have deleted its own entry
 * of the connection (the new holder flushes its pods' entries when it takes
 * the VIP over): conntrack there would pick the connection up from the
 * server's side, reversed, and the pod's next packets, replies to it, would
 * leave by the main route with the pod's own address (TCP and UDP; measured
 * in tests/e2e/vip.e2e.test.ts's three moves). Dropped, the server's packet
 * is retransmitted (or the next one sent) to the VIP's new holder once the
 * router follows. `addrtype` reads the node's addresses when the packet
 * arrives, so this holds from the moment the address goes, before any pass.
 */
export function vipGoneRule(role: VipRole): string {
  const prefix = role.ip.includes(":") ? 128 : 32;
  return `-A ${MARK_CHAIN} -d ${role.ip}/${prefix} -m addrtype ! --dst-type LOCAL` +
    ` -m conntrack --ctstate SNAT --ctdir REPLY` +
    ` -m comment --comment "kube-egress ${role.ip} gone" -j DROP`;
}

/**
 * A pod's TCP connection that conntrack picked up from the server's side: a
 * segment from a steerable source to a pod, not a SYN, that starts a new
 * entry. It happens when this node deleted the pod's entry (a role change's
 * flush) while the server's segments still reach the pod through the holder
 * that translated the connection (the router's neighbour entry still points
 * there, or it keeps its entries for NAT state sync): the new entry is
 * reversed, its original direction server → pod, so the pod's own packets
 * are replies, which the mark rule leaves alone, and they would take the
 * main route out with the pod's own address. The entry is tagged (only in
 * the connection mark, with a mark no VIP has) so that `markReplyRule` marks
 * the pod's packets of it. A connection opened from outside starts with a
 * SYN and is never tagged.
 */
export function pickedUpRule(podCidr: string, mask: number, f: IpsetFamily = IPSET_V4): string {
  return `-A ${MARK_CHAIN} -d ${podCidr} -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN` +
    ` -m set ! --match-set ${f.nosteer} src -m conntrack --ctstate NEW` +
    ` -m comment --comment "kube-egress picked up" -j CONNMARK --set-xmark ${
      hex(pickedUpMark(mask))
    }/${hex(mask)}`;
}

/**
 * A mapped pod's packet in the reply direction of a connection we tagged
 * (`pickedUpRule`) is marked with its VIP's mark: on a forwarder it goes to
 * the holder, whose entry of the connection translates it; on the holder
 * `holderDropReplyRule` drops it (nothing here can translate it).
 */
export function markReplyRule(mask: number, f: IpsetFamily = IPSET_V4): string {
  return `-A ${MARK_CHAIN} -m set --match-set ${f.pods} src -m set ! --match-set ${f.nosteer} dst` +
    ` -m conntrack --ctdir REPLY -m connmark ! --mark 0x0/${
      hex(mask)
    } -j SET --map-set ${f.pods} src --map-mark`;
}

/**
 * On the holder: a packet with the VIP's mark in the reply direction (a pod's
 * packet of a connection picked up from the server's side, `pickedUpRule`)
 * has no source NAT here and never will: NAT is decided on an entry's first
 * packet, which was the server's. It would leave with the pod's own address,
 * so it is dropped.
 */
export function holderDropReplyRule(role: VipRole, mask: number): string {
  return `-A ${MARK_CHAIN} -m mark --mark ${hex(role.mark)}/${
    hex(mask)
  } -m conntrack --ctdir REPLY` +
    ` -m comment --comment "kube-egress ${role.ip} reversed" -j DROP`;
}

/**
 * On the holder only: INVALID packets carrying the VIP's mark would leave
 * un-NATed, so they are dropped. Transit traffic elsewhere passes, whatever
 * its conntrack state.
 */
export function holderDropInvalidRule(role: VipRole, mask: number): string {
  return `-A ${MARK_CHAIN} -m mark --mark ${hex(role.mark)}/${
    hex(mask)
  } -m conntrack --ctstate INVALID` +
    ` -m comment --comment "kube-egress ${role.ip} invalid" -j DROP`;
}

/**
 * On the holder: a packet of the VIP whose connection is in the table with no
 * source NAT (a null binding made while this node forwarded to another
 * holder, or kept from before the VIP moved here) would leave with the pod's
 * own address: NAT is decided only on a connection's first packet, so the
 * SNAT rule never sees it. It is dropped until the takeover's flush removes
 * the entry; the connection's next packet then starts a new, translated one.
 * A connection's first packet (its entry not yet confirmed) passes to NAT.
 */
export function holderDropUnnatedRule(role: VipRole, mask: number): string {
  return `-A ${MARK_CHAIN} -m mark --mark ${hex(role.mark)}/${hex(mask)}` +
    ` -m conntrack ! --ctstate SNAT --ctstatus CONFIRMED --ctdir ORIGINAL` +
    ` -m comment --comment "kube-egress ${role.ip} unnated" -j DROP`;
}

/**
 * On every node: a packet that no VIP marked (its pod unmapped, its VIP
 * deleted) of a connection we steered (our mark in its connection mark) and
 * that has no source NAT would leave with the pod's own address: it was a
 * forwarder's null binding, and without the mark it takes the main route out.
 * Dropped until the entry is flushed (a VIP removed is flushed, see
 * core/conntrack.ts); the next packet starts a new entry that the CNI's
 * masquerade (or fail closed) decides. A connection picked up from the
 * server's side (`pickedUpRule`) is not one: its original direction is the
 * server's.
 */
export function dropUnnatedRule(mask: number): string {
  return `-A ${MARK_CHAIN} -m mark --mark 0x0/${hex(mask)} -m connmark ! --mark 0x0/${hex(mask)}` +
    ` -m connmark ! --mark ${hex(pickedUpMark(mask))}/${hex(mask)}` +
    ` -m conntrack ! --ctstate SNAT --ctstatus CONFIRMED --ctdir ORIGINAL` +
    ` -m comment --comment "kube-egress unnated" -j DROP`;
}

/**
 * On every node: a pod's INVALID packet to a steerable destination that no
 * VIP marked (a FIN of a connection flushed when its VIP was deleted or its
 * pod unmapped) would leave with the pod's own address: NAT never sees
 * INVALID packets. Marked ones are handled by the VIP's role
 * (`markInvalidRule`).
 */
export function dropInvalidUnsteeredRule(
  podCidr: string,
  mask: number,
  f: IpsetFamily = IPSET_V4,
): string {
  return `-A ${MARK_CHAIN} -s ${podCidr} -m set ! --match-set ${f.nosteer} dst` +
    ` -m mark --mark 0x0/${hex(mask)} -m conntrack --ctstate INVALID` +
    ` -m comment --comment "kube-egress invalid unsteered" -j DROP`;
}

/**
 * Copies our mark bits (only ours, under the mask) into the connection's mark,
 * so the connections of one VIP can be found later: when this node's role for
 * the VIP changes, exactly those conntrack entries are flushed
 * (`conntrack -D --mark m/mask`), and nothing else's. Only in the original
 * direction: a picked-up connection (`pickedUpRule`) keeps its tag.
 */
export function saveMarkRule(mask: number): string {
  return `-A ${MARK_CHAIN} -m mark ! --mark 0x0/${hex(mask)} -m conntrack --ctdir ORIGINAL` +
    ` -j CONNMARK --save-mark --nfmask ${hex(mask)} --ctmask ${hex(mask)}`;
}

/** On the holder: rewrite the source of the VIP's traffic to the VIP, before any masquerade. */
export function snatRule(iface: string, role: VipRole, mask: number): string {
  return `-A ${SNAT_CHAIN} -o ${iface} -m mark --mark ${hex(role.mark)}/${hex(mask)}` +
    ` -m comment --comment "kube-egress ${role.ip} holder" -j SNAT --to-source ${role.ip} --random-fully`;
}

/** Elsewhere: keep the pod source so the holder can SNAT it (skips the CNI's masquerade). */
export function forwardRule(iface: string, role: VipRole, mask: number): string {
  return `-A ${SNAT_CHAIN} -o ${iface} -m mark --mark ${hex(role.mark)}/${hex(mask)}` +
    ` -m comment --comment "kube-egress ${role.ip} forward" -j ACCEPT`;
}

const NAT_RULE_ROLE =
  /--mark (0x[0-9a-f]+)\/(0x[0-9a-f]+) .*--comment "kube-egress ([0-9a-f.:]+) (holder|forward)"/;

/** Reads back a rule written by snatRule/forwardRule: its VIP, mark, mask and role; undefined for others. */
export function parseRoleRule(
  rule: string,
): { ip: string; mark: number; mask: number; role: VipRole["role"] } | undefined {
  const match = NAT_RULE_ROLE.exec(rule);
  if (!match) return undefined;
  return {
    ip: match[3],
    mark: parseInt(match[1], 16),
    mask: parseInt(match[2], 16),
    role: match[4] === "holder" ? "holder" : "forwarder",
  };
}

/**
 * With replicated NAT state, on every node for every VIP: packets from
 * outside to the VIP that start no connection and belong to none (TCP other
 * than a SYN, UDP, with no conntrack entry) are dropped. On a new holder the
 * server's next segment can arrive before the synced entry is committed; the
 * node's own stack would answer it with a reset, killing the connection the
 * commit is about to save. Dropped, it is retransmitted into the committed
 * entry.
 */
export function vipGuardRules(role: VipRole): string[] {
  const guard = (match: string) =>
    `-A ${MARK_CHAIN} -d ${role.ip}/${role.ip.includes(":") ? 128 : 32} ${match}` +
    ` -m conntrack --ctstate NEW,INVALID` +
    ` -m comment --comment "kube-egress ${role.ip} guard" -j DROP`;
  return [guard("-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN"), guard("-p udp")];
}

/**
 * With replicated NAT state, on the holder: a mapped pod's TCP packet other
 * than a SYN that starts a new conntrack entry (its connection's entry is not
 * here: flushed at the takeover and not yet committed, or never synced) is
 * dropped. NAT would give it a new random VIP port; the server would answer
 * that port with a reset, and the reset, translated back, would kill the very
 * connection the commit is about to restore. Dropped, it is retransmitted into
 * the committed entry.
 */
export function holderDropMidstreamRule(role: VipRole, mask: number): string {
  return `-A ${MARK_CHAIN} -m mark --mark ${hex(role.mark)}/${hex(mask)}` +
    ` -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW` +
    ` -m comment --comment "kube-egress ${role.ip} midstream" -j DROP`;
}

/**
 * The iptables backend's chains and sets for one family's intent
 * (`intentOfFamily`): iptables and the IPv4 sets, or ip6tables and the IPv6
 * sets (`IPSET_V6`), with the same rules.
 */
export function renderIptables(intent: Intent, f: IpsetFamily = IPSET_V4): IptablesRendering {
  const { mask, scoped } = intent;
  const guarded = intent.failClosed.length > 0;
  const scopedSets = wantedScopedSets(scoped, mask, f);
  if (guarded) scopedSets.set(failClosedSetName(f), failClosedSet(intent.failClosed, f));
  return {
    scopedSets,
    chains: {
      mangle: [
        ...intent.roles.map(vipGoneRule),
        ...intent.podCidrs.map((cidr) => pickedUpRule(cidr, mask, f)),
        markRule(f),
        markInvalidRule(f),
        markReplyRule(mask, f),
        ...scoped.flatMap((cls) => [
          scopedRule(cls, f),
          scopedMarkInvalidRule(cls, f),
          scopedMarkReplyRule(cls, mask, f),
        ]),
        ...(guarded ? failClosedRules(mask, f) : []),
        ...intent.roles.filter((r) => r.role === "holder").flatMap((r) => [
          holderDropInvalidRule(r, mask),
          holderDropUnnatedRule(r, mask),
          holderDropReplyRule(r, mask),
        ]),
        ...(intent.guardVips ? intent.roles.flatMap(vipGuardRules) : []),
        ...(intent.guardVips
          ? intent.roles.filter((r) => r.role === "holder").map((r) =>
            holderDropMidstreamRule(r, mask)
          )
          : []),
        saveMarkRule(mask),
        dropUnnatedRule(mask),
        ...intent.podCidrs.map((cidr) => dropInvalidUnsteeredRule(cidr, mask, f)),
      ],
      nat: intent.roles.map((r) =>
        r.role === "holder"
          ? snatRule(intent.interface, r, mask)
          : forwardRule(intent.interface, r, mask)
      ),
    },
  };
}

/**
 * The intent and its iptables rendering. `localAddresses` are the IPv4
 * addresses on the interface: a VIP is held exactly when it is one of them.
 */
export function desiredState(
  snapshot: Snapshot,
  config: DatapathConfig,
  localAddresses: readonly string[],
): DesiredState {
  const intent = intentOf(snapshot, config, localAddresses);
  return { ...intent, ...renderIptables(intentOfFamily(intent, "ipv4")) };
}
