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
