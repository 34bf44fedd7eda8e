/**
 * The names of everything this product creates in the kernel. Anything not
 * named here (or tagged with our route protocol) belongs to someone else and is
 * never touched.
 */

/** mangle chain: marks traffic of mapped pods (jumped to first from PREROUTING). */
export const MARK_CHAIN = "KUBE-EGRESS-MARK";
/** nat chain: SNAT on the holder, skip-masquerade on the others (jumped to first from POSTROUTING). */
export const SNAT_CHAIN = "KUBE-EGRESS-SNAT";
/** ipset hash:ip with skbinfo: pod IP → fwmark of its VIP, with per-pod counters. */
export const PODS_SET = "kube-egress-pods";
/** ipset hash:net: destinations that are never steered (pod, service, excluded ranges). */
export const NOSTEER_SET = "kube-egress-nosteer";
/** Suffix of the scratch set used to rebuild a set whose type changed, then swapped in. */
export const SCRATCH_SUFFIX = "-new";

/** Our chains, the built-in chain each is jumped to from, and the table. */
export const CHAINS = [
  { table: "mangle", chain: MARK_CHAIN, hook: "PREROUTING" },
  { table: "nat", chain: SNAT_CHAIN, hook: "POSTROUTING" },
] as const;
export type TableName = (typeof CHAINS)[number]["table"];

/** Capacity of the pods set; hash sets grow up to this many entries. */
export const PODS_SET_MAXELEM = 1048576;

/**
 * The ipsets of one address family. An ipset holds one family only, and set
 * names share one namespace, so IPv6 has sets of its own beside the IPv4 ones
 * (as ip6tables has tables of its own beside iptables'); the names of one
 * family never start like the other's.
 */
export interface IpsetFamily {
  readonly family: "ipv4" | "ipv6";
  /** The pods set (hash:ip skbinfo). */
  readonly pods: string;
  /** The nosteer set (hash:net). */
  readonly nosteer: string;
  /** Every destination-scoped (and fail-closed) set's name starts with this. */
  readonly scopedPrefix: string;
  /** ipset's `family` option. */
  readonly inet: "inet" | "inet6";
  /** The prefix length of one host. */
  readonly host: 32 | 128;
}

/** IPv4: the names kube-egress always used. */
export const IPSET_V4: IpsetFamily = {
  family: "ipv4",
  pods: PODS_SET,
  nosteer: NOSTEER_SET,
  scopedPrefix: "kube-egress-s",
  inet: "inet",
  host: 32,
};

/** IPv6: the same sets, "kube-egress6-" instead of "kube-egress-". */
export const IPSET_V6: IpsetFamily = {
  family: "ipv6",
  pods: "kube-egress6-pods",
  nosteer: "kube-egress6-nosteer",
  scopedPrefix: "kube-egress6-s",
  inet: "inet6",
  host: 128,
};

/** Each family's sets. */
export const IPSETS: Readonly<Record<IpsetFamily["family"], IpsetFamily>> = {
  ipv4: IPSET_V4,
  ipv6: IPSET_V6,
};
