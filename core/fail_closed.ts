/**
 * Fail closed (opt-in): a guarded pod's packet to a steered destination
 * leaves as its VIP or not at all. The mark rules send a mapped pod's
 * traffic to its VIP (SNAT on the holder, routed to the holder elsewhere,
 * where it is lost when nobody holds the VIP); what would leave otherwise is
 * exactly a guarded pod's packet that carries no mark of ours: its VIP is
 * unknown, unready or deleted, its mapping is gone while the guard stays, or
 * conntrack calls it INVALID and no mapping marked it. Those are dropped here,
 * in the mark chain, so the rules that stay in the kernel when the agent dies
 * keep failing closed. Reply packets of connections made to the pod are left
 * alone (a pod serving clients keeps answering them).
 *
 * The guarded pods live in a set of their own (a hash:net of /32s, managed
 * like the destination-scoped sets), apart from the pods set: a pod stays
 * guarded while its VIP is missing, when it is in no other set at all.
 */
import { hex } from "./marks.ts";
import { IPSET_V4, IPSET_V6, type IpsetFamily, MARK_CHAIN } from "./names.ts";
import { scopedNetsOptions, type WantedSet } from "./scoped.ts";

/** The guarded pods' set of a family (its name keeps the scoped sets' prefix, so it is read and pruned with them). */
export function failClosedSetName(f: IpsetFamily = IPSET_V4): string {
  return `${f.scopedPrefix}g-failclosed`;
}

/** The IPv4 guarded pods' set. */
export const FAIL_CLOSED_SET = failClosedSetName(IPSET_V4);

/** The set as wanted: one /32 (/128) per guarded pod (hash:net prints them without the prefix length). */
export function failClosedSet(pods: readonly string[], f: IpsetFamily = IPSET_V4): WantedSet {
  return {
    options: scopedNetsOptions(f),
    entries: new Map(pods.map((ip) => [`${ip}/${f.host}`, `${ip}/${f.host}`])),
  };
}

/**
 * The two drop rules, after every mark rule: a guarded pod's unmarked packet
 * to a steered destination, whether conntrack saw it originate a connection
 * or calls it INVALID (no connection, no direction).
 */
export function failClosedRules(mask: number, f: IpsetFamily = IPSET_V4): string[] {
  const match = `-A ${MARK_CHAIN} -m set --match-set ${failClosedSetName(f)} src` +
    ` -m set ! --match-set ${f.nosteer} dst -m mark --mark 0x0/${hex(mask)}`;
  const comment = '-m comment --comment "kube-egress fail closed" -j DROP';
  return [
    `${match} -m conntrack --ctdir ORIGINAL ${comment}`,
    `${match} -m conntrack --ctstate INVALID ${comment}`,
  ];
}

/** How many pods the guard in `live` holds (either backend's set): what `delete` is about to open. */
export function guardedInKernel(live: {
  readonly sets: {
    readonly scoped?: ReadonlyMap<string, { readonly entries: ReadonlyMap<string, string> }>;
  };
  readonly nft: {
    readonly failClosed?: ReadonlySet<string>;
    readonly failClosed6?: ReadonlySet<string>;
  };
  readonly ipv6?: {
    readonly sets: {
      readonly scoped?: ReadonlyMap<string, { readonly entries: ReadonlyMap<string, string> }>;
    };
  };
}): number {
  return (live.sets.scoped?.get(FAIL_CLOSED_SET)?.entries.size ?? 0) +
    (live.ipv6?.sets.scoped?.get(failClosedSetName(IPSET_V6))?.entries.size ?? 0) +
    (live.nft.failClosed?.size ?? 0) + (live.nft.failClosed6?.size ?? 0);
}
