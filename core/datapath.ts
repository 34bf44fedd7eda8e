/**
 * A datapath backend, as the planner sees it: given the intent (core/intent.ts)
 * and what it read of its own objects, the typed steps that make them match;
 * the steps that remove them; and the role each VIP's mark has in force now,
 * read from its objects as data. `planApply` (core/plan.ts) wraps a backend's
 * steps in the routes that must exist before and go only after, so every
 * backend keeps the same safety order.
 */
import { type Family, type Intent, intentOfFamily, type VipRole } from "./intent.ts";
import type { LiveSets } from "./ipset.ts";
import type { LiveNftables } from "./nftables.ts";
import type { Step } from "./operation.ts";
import type { LiveFamily, LiveState } from "./plan.ts";
import type { DatapathConfig } from "./schema.ts";

/** The backends: iptables + ipset, or native nftables. */
export const BACKENDS = ["iptables", "nftables"] as const;
export type Backend = (typeof BACKENDS)[number];

export interface DatapathPlanner {
  readonly backend: Backend;
  /** Steps that turn this backend's live objects into the intent's, before any conntrack flush. */
  plan(intent: Intent, live: LiveState, config: DatapathConfig): Step[];
  /** Steps that remove every object of this backend in `live`, and nothing else. */
  remove(live: LiveState): Step[];
  /**
   * Mark → role of one family's VIP rules in force (those written under `mask`
   * only). The families' marks are apart: an IPv4 and an IPv6 VIP may share a
   * route id, and so a mark, each with its own role.
   */
  rolesInForce(
    live: LiveState,
    mask: number,
    family?: Family,
  ): ReadonlyMap<number, VipRole["role"]>;
  /**
   * The pod addresses of one family that this backend's objects map now
   * (unrestricted and destination-scoped): a desired pod not among them
   * becomes mapped with this pass (see `unmappedFlushes`, core/conntrack.ts).
   */
  podsInForce(live: LiveState, family?: Family): ReadonlySet<string>;
  /**
   * This backend's objects as a transaction planned from `live` leaves them
   * once applied in full: the next quick pass confirms them cheaply instead of
   * listing them again (see `ReadOptions` in cmd/system.ts).
   */
  afterApply(live: LiveState, intent: Intent): Known;
}

/** What a backend knows of its objects after a pass it applied in full. */
export interface Known {
  /** iptables backend: our ipsets. */
  readonly sets?: LiveSets;
  /** nftables backend: our table. */
  readonly nft?: LiveNftables;
  /**
   * nftables backend: the ruleset generation at which `nft` is exact (read in
   * full, or written by a transaction nobody else committed alongside).
   */
  readonly nftGeneration?: number;
}

/** What `--backend auto` looks at on the node. */
export interface BackendFacts {
  /** `nft list tables`: the tables' "family name"s; undefined when nft is not installed. */
  readonly nftTables?: readonly string[];
  /** An `iptables` binary is installed. */
  readonly iptablesInstalled: boolean;
  /** Our iptables chains exist (a node the iptables backend already programs). */
  readonly ourIptablesChains: boolean;
}

/**
 * `--backend auto`: nftables where kube-proxy runs in nftables mode (its
 * `kube-proxy` tables) or no iptables is installed; otherwise what the node
 * already uses (our nftables table, else iptables). The reason is logged.
 */
export function chooseBackend(facts: BackendFacts): { backend: Backend; reason: string } {
  const tables = facts.nftTables ?? [];
  if (tables.some((t) => /^ip6? kube-proxy$/.test(t))) {
    return { backend: "nftables", reason: "kube-proxy runs in nftables mode" };
  }
  if (!facts.iptablesInstalled && facts.nftTables !== undefined) {
    return { backend: "nftables", reason: "no iptables is installed" };
  }
  if (tables.includes("inet kube-egress") && !facts.ourIptablesChains) {
    return { backend: "nftables", reason: "the node already uses our nftables table" };
  }
  return {
    backend: "iptables",
    reason: facts.ourIptablesChains
      ? "the node already uses our iptables chains"
      : "iptables is installed and kube-proxy does not run in nftables mode",
  };
}

/** The objects of one family in `live`, or undefined when that family was not read. */
export function liveFamily(live: LiveState, family: Family): LiveFamily | undefined {
  return family === "ipv4" ? live : live.ipv6;
}

/**
 * One family's part of the intent when that family is on (the cluster has a
 * pod range of it), else the empty intent: a family without pod ranges gets
 * none of our objects, and what we left of it before is removed.
 */
export function enabledPart(intent: Intent, family: Family): Intent {
  const part = intentOfFamily(intent, family);
  return part.podCidrs.length > 0 ? part : emptyOf(part);
}

const empties = new WeakMap<Intent, Intent>();
function emptyOf(part: Intent): Intent {
  let empty = empties.get(part);
  if (empty === undefined) {
    empty = {
      ...part,
      roles: [],
      podMarks: new Map(),
      scoped: [],
      noSteer: [],
      podCidrs: [],
      rules: [],
      routes: [],
      failClosed: [],
    };
    empties.set(part, empty);
  }
  return empty;
}
