/**
 * The guard: only nodes of the cluster may attract a VIP's traffic. One
 * nftables table of our own (`netdev kube-egress-guard`, bound to the LAN
 * interface), apart from the datapath's chains and sets whichever backend
 * writes those, so that it never conflicts with them:
 *
 * - ingress, ARP: a packet that claims a VIP (ARP sender address = the VIP)
 *   from a MAC that is neither ours nor one of the MACs of the nodes that may
 *   hold the VIP is recorded (address and MAC, with a per-claim counter); for
 *   a VIP whose nodes are known it is also dropped, so the neighbour table of
 *   a forwarder never points the VIP at it.
 * - ingress, VRRP: an advert for one of our router ids from an address that
 *   is not a node that may hold that VIP is recorded and dropped (multicast
 *   and unicast alike), so keepalived never sees it.
 * - egress: a forwarded packet of a mapped pod (our mark, source not a VIP:
 *   the holder SNATs its own) leaves only towards the MAC of a node that may
 *   hold its VIP; anything else is recorded and dropped, never sent.
 *
 * Whatever claims, adverts or next hops were refused stay in dynamic sets for
 * an hour with their packet counts: the agent reads them for metrics,
 * alerts, Events and the holder's defence (cmd/guard.ts), `doctor` for its
 * report. Pure: typed nft operations (rendered in core/render.ts), parsing
 * and comparing; no I/O.
 */
import { compareIPv4 } from "./ip.ts";
import { hex } from "./marks.ts";
import type { NftOp } from "./nftables.ts";
import type { NftOperation } from "./operation.ts";

/** The table's family and name: `nft list table netdev kube-egress-guard`. */
export const GUARD_FAMILY = "netdev";
export const GUARD_TABLE = "kube-egress-guard";
/** How long a refused claim, advert or next hop stays listed (seconds). */
export const GUARD_SEEN_TIMEOUT_S = 3600;
/** At most this many of each are remembered (a rogue cycling MACs cannot grow it further). */
export const GUARD_SEEN_SIZE = 4096;

/** One VIP as the guard needs it. */
export interface GuardVip {
  readonly ip: string;
  /** VRRP router id of its instance (keepalived mode). */
  readonly vrid: number;
  /** Its fwmark (under the mask). */
  readonly mark: number;
  /**
   * The LAN addresses of the nodes that may hold it (EgressVIP nodeSelector, or
   * the operator's node list); absent: not known, so only watched, not enforced.
   */
  readonly nodes?: readonly string[];
}

export interface GuardInput {
  readonly iface: string;
  /** This node's MAC on the interface. */
  readonly ownMac: string;
  readonly mask: number;
  readonly vips: readonly GuardVip[];
  /** Node address → its MAC (learned from the neighbour table or arping). */
  readonly macs: ReadonlyMap<string, string>;
  /** Filter VRRP adverts for our router ids (only when our keepalived places the VIPs). */
  readonly vrrp: boolean;
}

/** What the table must hold: every set's elements, sorted, as nft writes them. */
export interface GuardIntent {
  readonly iface: string;
  readonly ownMac: string;
  readonly mask: number;
  /** VIPs whose foreign claims are recorded. */
  readonly watched: readonly string[];
  /** VIPs whose foreign claims, adverts and next hops are dropped. */
  readonly guarded: readonly string[];
  /** `vip . mac`: who may claim a guarded VIP. */
  readonly claims: readonly string[];
  /** Router ids whose adverts are filtered. */
  readonly vrids: readonly number[];
  /** `address . vrid`: who may advertise them. */
  readonly adverts: readonly string[];
  /** Marks of guarded VIPs. */
  readonly marks: readonly number[];
  /** `mark . mac`: where a guarded VIP's forwarded traffic may go. */
  readonly nextHops: readonly string[];
  /** Node addresses of guarded VIPs whose MAC is not known yet (they cannot attract traffic). */
  readonly unresolved: readonly string[];
}

const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The guard's contents for this node. */
export function guardIntent(input: GuardInput): GuardIntent {
  const claims = new Set<string>();
  const adverts = new Set<string>();
  const nextHops = new Set<string>();
  const unresolved = new Set<string>();
  const guarded: string[] = [];
  const vrids = new Set<number>();
  const marks = new Set<number>();
  const ownMac = input.ownMac.toLowerCase();
  for (const vip of input.vips) {
    if (vip.nodes === undefined) continue;
    guarded.push(vip.ip);
    marks.add(vip.mark);
    claims.add(`${vip.ip} . ${ownMac}`);
    if (input.vrrp) vrids.add(vip.vrid);
    for (const node of vip.nodes) {
      if (input.vrrp) adverts.add(`${node} . ${vip.vrid}`);
      const mac = input.macs.get(node)?.toLowerCase();
      if (mac === undefined) {
        unresolved.add(node);
        continue;
      }
      claims.add(`${vip.ip} . ${mac}`);
      nextHops.add(`${hex(vip.mark)} . ${mac}`);
    }
  }
  return {
    iface: input.iface,
    ownMac,
    mask: input.mask,
    watched: input.vips.map((v) => v.ip).sort(compareIPv4),
    guarded: guarded.sort(compareIPv4),
    claims: [...claims].sort(byText),
    vrids: [...vrids].sort((a, b) => a - b),
    adverts: [...adverts].sort(byText),
    marks: [...marks].sort((a, b) => a - b),
    nextHops: [...nextHops].sort(byText),
    unresolved: [...unresolved].sort(compareIPv4),
  };
}

/** True when the guard has nothing to do (no VIP): the table is not wanted. */
export function guardIsEmpty(intent: GuardIntent): boolean {
  return intent.watched.length === 0;
}

/** The sets whose elements the intent decides, and their nft types. */
const CONTENT_SETS = {
  watched: "ipv4_addr",
  guarded: "ipv4_addr",
  claims: "ipv4_addr . ether_addr",
  vrids: "typeof @th,8,8",
  adverts: "typeof ip saddr . @th,8,8",
  marks: "typeof meta mark",
  nextHops: "typeof meta mark . ether daddr",
} as const;
type ContentSet = keyof typeof CONTENT_SETS;

/** The sets the datapath fills (refused claims, adverts and next hops). */
const SEEN_SETS = {
  seen_claims: "ipv4_addr . ether_addr",
  seen_adverts: "typeof ip saddr . @th,8,8",
  seen_next_hops: "typeof meta mark . ether daddr",
} as const;

/** Named counters: survive every update (only `delete` resets them). */
export const GUARD_COUNTERS = ["claims_refused", "adverts_refused", "next_hops_refused"] as const;
export type GuardCounter = typeof GUARD_COUNTERS[number];

function setName(key: ContentSet): string {
  return key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function elementsOf(intent: GuardIntent, key: ContentSet): string[] {
  const values = intent[key] as readonly (string | number)[];
  return values.map((v) => (typeof v === "number" && key === "marks" ? hex(v) : String(v)));
}

/** The rules of both chains, in order, as nft lists them back (for comparison). */
export function guardRules(intent: GuardIntent): { ingress: string[]; egress: string[] } {
  const m = hex(intent.mask);
  return {
    ingress: [
      // Claims from foreign MACs: recorded for every VIP, dropped for guarded ones.
      // nftrace: the agent's `nft monitor trace` wakes at once (the holder defends within ms).
      `arp saddr ip @watched arp saddr ether != ${intent.ownMac} ` +
      `arp saddr ip . arp saddr ether != @claims ` +
      `update @seen_claims { arp saddr ip . arp saddr ether } meta nftrace set 1`,
      `arp saddr ip @guarded arp saddr ip . arp saddr ether != @claims ` +
      `counter name "claims_refused" drop`,
      `ip protocol vrrp @th,8,8 @vrids ip saddr . @th,8,8 != @adverts ` +
      `update @seen_adverts { ip saddr . @th,8,8 } counter name "adverts_refused" drop`,
    ],
    egress: [
      `meta mark & ${m} @marks ip saddr != @guarded ` +
      `meta mark & ${m} . ether daddr != @next_hops ` +
      `update @seen_next_hops { meta mark & ${m} . ether daddr } ` +
      `counter name "next_hops_refused" drop`,
    ],
  };
}

/** The guard table as it is on the node (what `nft -j list table` says). */
export interface LiveGuard {
  /** Elements of each set, as nft -f would write them. */
  readonly sets: Readonly<Record<string, readonly string[]>>;
  /** Per chain: its device and rules (nft's listing of each rule's expressions, normalized). */
  readonly chains: Readonly<Record<string, { rules: number }>>;
  readonly counters: Readonly<Record<string, number>>;
  /** Refused claims: VIP, MAC, packets. */
  readonly claims: readonly SeenClaim[];
  /** Refused adverts: source address, router id, packets. */
  readonly adverts: readonly SeenAdvert[];
  /** Refused next hops: mark, MAC, packets. */
  readonly nextHops: readonly SeenNextHop[];
}

export interface SeenClaim {
  readonly vip: string;
  readonly mac: string;
  readonly packets: number;
}
export interface SeenAdvert {
  readonly source: string;
  readonly vrid: number;
  readonly packets: number;
}
export interface SeenNextHop {
  readonly mark: number;
  readonly mac: string;
  readonly packets: number;
}

/**
 * The `nft -f` transaction that makes the table match the intent; no
 * operations when it already does. Creating is idempotent (`add`), contents
 * are flushed and written again in the same transaction: all or nothing, and
 * the counters and the refused lists survive.
 */
export function planGuard(intent: GuardIntent, live: LiveGuard | undefined): NftOperation {
  if (guardIsEmpty(intent)) return live ? deleteGuard() : guardOperation([]);
  const rules = guardRules(intent);
  const sameSets = live !== undefined && (Object.keys(CONTENT_SETS) as ContentSet[]).every((k) => {
    const want = elementsOf(intent, k);
    const have = live.sets[setName(k)];
    return have !== undefined && have.length === want.length &&
      have.every((e, i) => normalizeElement(e) === normalizeElement(want[i]));
  });
  // nft's JSON does not show a netdev chain's device: a one-element set remembers it.
  const sameChains = live !== undefined &&
    live.chains.ingress?.rules === rules.ingress.length &&
    live.chains.egress?.rules === rules.egress.length &&
    live.sets["own_mac"]?.[0] === intent.ownMac &&
    live.sets["iface"]?.[0] === intent.iface;
  if (sameSets && sameChains) return guardOperation([]);
  const ops: NftOp[] = [{ op: "add table" }];
  // Chains bound to another device (another --interface) are replaced.
  if (live !== undefined && live.sets["iface"]?.[0] !== intent.iface) {
    for (const chain of ["ingress", "egress"]) {
      if (live.chains[chain]) ops.push({ op: "delete chain", chain });
    }
  }
  for (const counter of GUARD_COUNTERS) ops.push({ op: "add counter", counter });
  for (const key of Object.keys(CONTENT_SETS) as ContentSet[]) {
    ops.push({ op: "add set", set: { name: setName(key), type: CONTENT_SETS[key] } });
  }
  // The own MAC as a one-element set, so that a changed MAC is seen by comparing sets.
  ops.push(
    { op: "add set", set: { name: "own_mac", type: "ether_addr" } },
    { op: "add set", set: { name: "iface", type: "ifname" } },
  );
  for (const [name, type] of Object.entries(SEEN_SETS)) {
    ops.push({
      op: "add set",
      set: { name, type, size: GUARD_SEEN_SIZE, timeout: GUARD_SEEN_TIMEOUT_S, counter: true },
    });
  }
  const device = intent.iface;
  ops.push(
    {
      op: "add chain",
      chain: "ingress",
      hook: { ...HOOK, hook: "ingress", device, priority: "-500" },
    },
    {
      op: "add chain",
      chain: "egress",
      hook: { ...HOOK, hook: "egress", device, priority: "500" },
    },
    { op: "flush chain", chain: "ingress" },
    { op: "flush chain", chain: "egress" },
  );
  const fill = (set: string, keys: readonly string[]) => {
    ops.push(
      { op: "flush set", set },
      ...keys.map((key): NftOp => ({ op: "add element", set, key })),
    );
  };
  for (const key of Object.keys(CONTENT_SETS) as ContentSet[]) {
    fill(setName(key), elementsOf(intent, key));
  }
  fill("own_mac", [intent.ownMac]);
  fill("iface", [`"${intent.iface}"`]);
  for (const chain of ["ingress", "egress"] as const) {
    for (const rule of rules[chain]) ops.push({ op: "add rule", chain, rule, unhashed: true });
  }
  return guardOperation(ops);
}

const HOOK = { type: "filter" } as const;

/** Operations on the guard table (rendered by core/render.ts). */
function guardOperation(ops: NftOp[]): NftOperation {
  return { tool: "nft", table: { family: GUARD_FAMILY, name: GUARD_TABLE }, ops };
}

/** Removes the table with everything in it. */
export function deleteGuard(): NftOperation {
  return guardOperation([{ op: "delete table" }]);
}

/** Marks print as 0x00000007 in listings and 0x7 in our payload: compare them as numbers. */
function normalizeElement(element: string): string {
  return element.split(" . ").map((part) =>
    /^0x[0-9a-f]+$/i.test(part) ? String(parseInt(part, 16)) : part.toLowerCase()
  ).join(" . ");
}

type Json = Record<string, unknown>;

function valueText(value: unknown): string {
  if (typeof value === "object" && value !== null && "concat" in value) {
    return (value as { concat: unknown[] }).concat.map(valueText).join(" . ");
  }
  return String(value);
}

function seenEntries(set: Json | undefined): { key: string[]; packets: number }[] {
  const elem = (set?.elem ?? []) as unknown[];
  return elem.map((e) => {
    const inner = (e as Json).elem as Json | undefined;
    const value = inner ? inner.val : e;
    const counter = (inner?.counter ?? {}) as { packets?: number };
    return { key: valueText(value).split(" . "), packets: counter.packets ?? 0 };
  });
}

/**
 * Reads `nft -j list table netdev kube-egress-guard`; undefined when the
 * output holds no such table.
 */
export function parseGuard(json: string): LiveGuard | undefined {
  const items = (JSON.parse(json) as { nftables?: Json[] }).nftables ?? [];
  let found = false;
  const sets: Record<string, string[]> = {};
  const rawSets: Record<string, Json> = {};
  const chains: Record<string, { rules: number }> = {};
  const counters: Record<string, number> = {};
  // A whole ruleset (`nft -j list ruleset`, doctor) holds other tables too: only ours counts.
  const ours = (o: Json) =>
    (o.table === undefined || o.table === GUARD_TABLE) &&
    (o.family === undefined || o.family === GUARD_FAMILY);
  for (const raw of items) {
    const kind = Object.keys(raw).find((k) => k !== "metainfo");
    if (kind === undefined || !ours(raw[kind] as Json)) continue;
    const item = raw;
    const table = item.table as Json | undefined;
    if (table && table.name === GUARD_TABLE && (table.family ?? GUARD_FAMILY) === GUARD_FAMILY) {
      found = true;
    }
    const set = item.set as Json | undefined;
    if (set) {
      rawSets[String(set.name)] = set;
      sets[String(set.name)] = seenEntries(set).map((e) => e.key.join(" . "));
    }
    const chain = item.chain as Json | undefined;
    if (chain) chains[String(chain.name)] = { rules: chains[String(chain.name)]?.rules ?? 0 };
    const rule = item.rule as Json | undefined;
    if (rule) chains[String(rule.chain)] = { rules: (chains[String(rule.chain)]?.rules ?? 0) + 1 };
    const counter = item.counter as Json | undefined;
    if (counter && counter.name) counters[String(counter.name)] = Number(counter.packets ?? 0);
  }
  if (!found) return undefined;
  return {
    sets,
    chains,
    counters,
    claims: seenEntries(rawSets.seen_claims).map((e) => ({
      vip: e.key[0],
      mac: e.key[1]?.toLowerCase() ?? "",
      packets: e.packets,
    })),
    adverts: seenEntries(rawSets.seen_adverts).map((e) => ({
      source: e.key[0],
      vrid: Number(e.key[1]),
      packets: e.packets,
    })),
    nextHops: seenEntries(rawSets.seen_next_hops).map((e) => ({
      mark: Number(e.key[0]),
      mac: e.key[1]?.toLowerCase() ?? "",
      packets: e.packets,
    })),
  };
}

/** A refusal the guard reports: one per (kind, who) whose packet count grew. */
export interface GuardAlert {
  readonly kind: "claim" | "advert" | "next-hop";
  /** The VIP concerned. */
  readonly vip: string;
  /** The offending MAC (claims, next hops) or address (adverts). */
  readonly from: string;
  /** Packets refused since the last reading (all of them at the first sighting). */
  readonly packets: number;
  /** A claim on a VIP this node holds that it re-announces (only VIPs with a node list). */
  readonly defended?: boolean;
}

/** What grew between two readings of the table, as alerts; `vipOf` maps marks and router ids to VIPs. */
export function guardAlerts(
  before: LiveGuard | undefined,
  now: LiveGuard,
  vipOf: { mark(mark: number): string | undefined; vrid(vrid: number): string | undefined },
): GuardAlert[] {
  const alerts: GuardAlert[] = [];
  const grown = <T>(
    list: readonly T[],
    old: readonly T[] | undefined,
    key: (x: T) => string,
    packets: (x: T) => number,
    make: (x: T, n: number) => GuardAlert | undefined,
  ) => {
    const previous = new Map((old ?? []).map((x) => [key(x), packets(x)]));
    for (const x of list) {
      const n = packets(x) - (previous.get(key(x)) ?? 0);
      // A counter that went down is a new entry (the old one timed out): all of it is new.
      const fresh = n > 0 ? n : n < 0 ? packets(x) : 0;
      if (fresh <= 0) continue;
      const alert = make(x, fresh);
      if (alert) alerts.push(alert);
    }
  };
  grown(now.claims, before?.claims, (c) => `${c.vip} ${c.mac}`, (c) => c.packets, (c, n) => ({
    kind: "claim",
    vip: c.vip,
    from: c.mac,
    packets: n,
  }));
  grown(now.adverts, before?.adverts, (a) => `${a.source} ${a.vrid}`, (a) => a.packets, (a, n) => {
    const vip = vipOf.vrid(a.vrid);
    return vip ? { kind: "advert", vip, from: a.source, packets: n } : undefined;
  });
  grown(now.nextHops, before?.nextHops, (h) => `${h.mark} ${h.mac}`, (h) => h.packets, (h, n) => {
    const vip = vipOf.mark(h.mark);
    return vip ? { kind: "next-hop", vip, from: h.mac, packets: n } : undefined;
  });
  return alerts;
}
