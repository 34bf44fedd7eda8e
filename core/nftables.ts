/**
 * Backend 2: native nftables. Everything lives in one table of our own,
 * `inet kube-egress`, so `delete` is one `delete table` and nothing else is
 * touched:
 *
 *   map pods            pod IP → goto vip-<id>          (unrestricted pods, O(1))
 *   set nosteer         interval set of never-steered destinations
 *   map scoped          pod . destination range → goto vip-<id>   (classes, one lookup)
 *   set scoped-excluded pod . excluded range                         (one lookup)
 *   map roles           mark → goto snat-<id>           (the role in force, as data)
 *   set failclosed      pods that fail closed (core/fail_closed.ts; only while there are any)
 *   chain vip-<id>      sets the VIP's mark under our mask (and the ct mark); on the
 *                       holder first drops INVALID packets (they would leave un-NATed)
 *   chain snat-<id>     holder: snat to the VIP; forwarder: a null binding (snat to
 *                       the packet's own source) so no later masquerade rewrites it
 *   chain prerouting    filter hook, priority mangle: nosteer, exclusions, the two maps
 *   chain postrouting   nat hook, priority srcnat - 10: `oifname <if> mark vmap @roles`
 *
 * The static chains change only when VIPs or roles do; a pod added or removed
 * is one element. A pass is one `nft -f` transaction of typed operations
 * (`NftOp`), rendered to nft syntax by `renderNft` only. Every rule we write
 * carries a comment with a hash of its own text, so the rules read back (JSON)
 * are compared by those comments, never re-parsed.
 */
import { cidrContains, compareCidr, formatCidr, parseCidr } from "./ip.ts";
import { enabledPart } from "./datapath.ts";
import type { Family, Intent, VipRole } from "./intent.ts";
import { hex, pickedUpMark } from "./marks.ts";

/** Our table's family and name. */
export const NFT_FAMILY = "inet";
export const NFT_TABLE = "kube-egress";

/** Our table as read back: empty when it does not exist. */
export interface LiveNftables {
  readonly present: boolean;
  /** Chain name → the hash comments of its rules, in order ("" for a rule without ours). */
  readonly chains: ReadonlyMap<string, readonly string[]>;
  /** Sets and maps that exist, by name. */
  readonly sets: ReadonlySet<string>;
  /** pods map: pod IP → target chain. */
  readonly pods: ReadonlyMap<string, string>;
  /** nosteer set: ranges as "a.b.c.d/n". */
  readonly nosteer: ReadonlySet<string>;
  /** scoped map: "pod . range" → target chain. */
  readonly scoped: ReadonlyMap<string, string>;
  /** scoped-excluded set: "pod . range". */
  readonly excluded: ReadonlySet<string>;
  /** roles map: mark → target chain. */
  readonly roles: ReadonlyMap<number, string>;
  /** The SNAT address of each holder chain (snat-<id> → VIP), for status. */
  readonly snatTo: ReadonlyMap<string, string>;
  /** failclosed set: pod IPs (absent: empty or no such set). */
  readonly failClosed?: ReadonlySet<string>;
  /**
   * How each set, map and base chain is declared ("type|data|interval" for
   * sets, "type|hook|priority" for base chains), as read; absent: as we
   * declare them (the agent's own copy).
   */
  readonly declarations?: ReadonlyMap<string, string>;
  /** Packets/bytes of each chain's counter (vip-<id>: steered; snat-<id>: new connections). */
  readonly counters: ReadonlyMap<string, { readonly packets: number; readonly bytes: number }>;
  /**
   * The IPv6 sets' and maps' elements (pods6, nosteer6, scoped6,
   * scoped-excluded6, roles6, failclosed6), absent when none exists. Their
   * chains (vip6-<id>, snat6-<id>) are in `chains` and `snatTo`.
   */
  readonly ipv6?: NftFamilyElements;
}

/** One family's elements, as read or wanted. */
export interface NftFamilyElements {
  readonly pods: ReadonlyMap<string, string>;
  readonly nosteer: ReadonlySet<string>;
  readonly scoped: ReadonlyMap<string, string>;
  readonly excluded: ReadonlySet<string>;
  readonly roles: ReadonlyMap<number, string>;
  readonly failClosed?: ReadonlySet<string>;
}

/**
 * How one family is written in our one `inet` table: its match prefix (`ip`,
 * `ip6`), its element types, and the suffix of its sets' and chains' names
 * (IPv4's have none, as before IPv6; IPv6's end in "6": pods6, vip6-<id>).
 */
interface NftFamily {
  readonly family: Family;
  readonly ip: "ip" | "ip6";
  readonly addr: "ipv4_addr" | "ipv6_addr";
  readonly suffix: "" | "6";
  /** Every address: a class without destination ranges steers towards it. */
  readonly all: string;
  /** The interval sets print a one-host element without its prefix length. */
  readonly host: 32 | 128;
}

const NFT_V4: NftFamily = {
  family: "ipv4",
  ip: "ip",
  addr: "ipv4_addr",
  suffix: "",
  all: "0.0.0.0/0",
  host: 32,
};
const NFT_V6: NftFamily = {
  family: "ipv6",
  ip: "ip6",
  addr: "ipv6_addr",
  suffix: "6",
  all: "::/0",
  host: 128,
};

/** No table of ours. */
export const NO_NFTABLES: LiveNftables = {
  present: false,
  chains: new Map(),
  sets: new Set(),
  pods: new Map(),
  nosteer: new Set(),
  scoped: new Map(),
  excluded: new Set(),
  roles: new Map(),
  snatTo: new Map(),
  counters: new Map(),
};

/** A set or map of ours, as declared. */
export interface NftSetDecl {
  readonly name: string;
  /** The key's type ("ipv4_addr"), or `typeof <expression>`. */
  readonly type: string;
  /** Maps: the data type ("verdict"). */
  readonly map?: string;
  readonly interval?: boolean;
  /** At most this many elements. */
  readonly size?: number;
  /** Filled by the datapath (`update @set`), each element dropped after this many seconds. */
  readonly timeout?: number;
  /** Each element counts its packets. */
  readonly counter?: boolean;
}

/** A base chain's hook. */
export interface NftHook {
  readonly type: "filter" | "nat";
  readonly hook: "prerouting" | "postrouting" | "ingress" | "egress";
  /** netdev hooks: the device the chain is bound to. */
  readonly device?: string;
  readonly priority: string;
}

/** One operation of a transaction: typed data, rendered by `renderNft`. */
export type NftOp =
  | { readonly op: "add table" }
  /**
   * Ours, or (`table`) a table of iptables-nft's that only our chains used
   * (the iptables backend's removal, core/datapath_iptables.ts).
   */
  | {
    readonly op: "delete table";
    readonly table?: { readonly family: "ip" | "ip6"; readonly name: string };
  }
  | { readonly op: "add set"; readonly set: NftSetDecl }
  | { readonly op: "flush set"; readonly set: string }
  | { readonly op: "add counter"; readonly counter: string }
  | { readonly op: "delete set"; readonly set: string }
  | { readonly op: "add chain"; readonly chain: string; readonly hook?: NftHook }
  | { readonly op: "flush chain"; readonly chain: string }
  | { readonly op: "delete chain"; readonly chain: string }
  | {
    readonly op: "add rule";
    readonly chain: string;
    readonly rule: string;
    /** Written without our hash comment (a table whose rules are compared by count: the guard's). */
    readonly unhashed?: boolean;
  }
  | {
    readonly op: "add element" | "delete element";
    readonly set: string;
    readonly key: string;
    /** Maps: the element's data (e.g. "goto vip-5"). */
    readonly value?: string;
  };

/** A family's sets and maps (nft sets are typed: ipv4_addr or ipv6_addr). */
function setsOf(f: NftFamily): readonly NftSetDecl[] {
  const x = f.suffix;
  return [
    { name: `pods${x}`, type: f.addr, map: "verdict" },
    { name: `nosteer${x}`, type: f.addr, interval: true },
    { name: `scoped${x}`, type: `${f.addr} . ${f.addr}`, map: "verdict", interval: true },
    { name: `scoped-excluded${x}`, type: `${f.addr} . ${f.addr}`, interval: true },
    { name: `roles${x}`, type: "mark", map: "verdict" },
  ];
}

const SETS = setsOf(NFT_V4);
const SETS_V6 = setsOf(NFT_V6);

/** Declared only while some pod of the family fails closed. */
function failClosedSetOf(f: NftFamily): NftSetDecl {
  return { name: `failclosed${f.suffix}`, type: f.addr };
}

/** A set's declaration as compared: type, data type, interval. */
function setSignature(set: NftSetDecl): string {
  return `${set.type}|${set.map ?? ""}|${set.interval === true}`;
}

/** The priorities `HOOKS` name, as nft prints them. */
const HOOK_PRIORITIES: Readonly<Record<string, number>> = { prerouting: -150, postrouting: 90 };

/** True when one of our sets or base chains exists with another declaration than ours. */
function misdeclared(live: LiveNftables): boolean {
  const have = live.declarations;
  if (!have) return false;
  for (const set of [...SETS, FAIL_CLOSED_SET, ...SETS_V6, FAIL_CLOSED_SET_V6]) {
    const found = have.get(set.name);
    if (found !== undefined && found !== setSignature(set)) return true;
  }
  for (const [chain, hook] of Object.entries(HOOKS)) {
    const found = have.get(`chain ${chain}`);
    const want = `${hook.type}|${hook.hook}|${HOOK_PRIORITIES[chain]}`;
    if (found !== undefined && found !== want) return true;
  }
  return false;
}

/** Declared only while some pod fails closed, so a node without any has exactly the sets above. */
const FAIL_CLOSED_SET: NftSetDecl = failClosedSetOf(NFT_V4);
const FAIL_CLOSED_SET_V6: NftSetDecl = failClosedSetOf(NFT_V6);

const HOOKS: Readonly<Record<string, NftHook>> = {
  prerouting: { type: "filter", hook: "prerouting", priority: "mangle" },
  postrouting: { type: "nat", hook: "postrouting", priority: "srcnat - 10" },
};

/** FNV-1a of a rule's text: the comment it is written with, compared when read back. */
export function ruleHash(rule: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < rule.length; i++) {
    h ^= rule.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return `ke:${h.toString(16).padStart(8, "0")}`;
}

const familyOfRole = (role: VipRole) => (role.ip.includes(":") ? NFT_V6 : NFT_V4);
const vipChain = (role: VipRole) => `vip${familyOfRole(role).suffix}-${role.routeId}`;
const snatChain = (role: VipRole) => `snat${familyOfRole(role).suffix}-${role.routeId}`;

/** Packets to a VIP that start no connection and belong to none are dropped (no reset from this node). */
function nftVipGuard(role: VipRole): string[] {
  const ip = familyOfRole(role).ip;
  return [
    `${ip} daddr ${role.ip} tcp flags & (fin | syn | rst | ack) != syn ct state { new, invalid } drop`,
    `${ip} daddr ${role.ip} meta l4proto udp ct state { new, invalid } drop`,
  ];
}

/** IPv6 is programmed when the cluster has an IPv6 pod range (`enabledPart`). */
function ipv6On(intent: Intent): boolean {
  return enabledPart(intent, "ipv6").podCidrs.length > 0;
}

/**
 * Our chains and their rules for an intent (nft syntax, without the hash
 * comments). Each family's rules match its own packets (`ip`, `ip6`); IPv6's
 * come after IPv4's, before the rules both families share.
 */
export function nftChains(intent: Intent): Map<string, string[]> {
  const { mask } = intent;
  const keep = hex((~mask) >>> 0);
  const v4 = enabledPart(intent, "ipv4");
  const v6 = ipv6On(intent) ? enabledPart(intent, "ipv6") : undefined;
  const chains = new Map<string, string[]>();
  const steer = (part: Intent, f: NftFamily): string[] => {
    const x = f.suffix;
    return [
      // A VIP no longer here: its translated connections' replies are not passed on to the pods
      // (`vipGoneRule`, core/desired.ts).
      ...part.roles.map((role) =>
        `${f.ip} daddr ${role.ip} fib daddr type != local` +
        " ct direction reply ct status & snat == snat drop"
      ),
      // Replicated NAT state: see `vipGuardRules` (core/desired.ts) for why.
      ...(part.guardVips ? part.roles.flatMap(nftVipGuard) : []),
      // A pod's TCP connection picked up from the server's side (its entry deleted here while the
      // server's segments still came through the holder): tagged, so the VIP chain takes the
      // pod's packets of it, replies to conntrack. See `pickedUpRule` (core/desired.ts).
      ...(part.podCidrs.length > 0
        ? [
          `${f.ip} daddr { ${part.podCidrs.join(", ")} } ${f.ip} saddr != @nosteer${x}` +
          ` tcp flags & (fin | syn | rst | ack) != syn ct state new` +
          ` ct mark set ct mark & ${keep} | ${hex(pickedUpMark(mask))}`,
        ]
        : []),
      `${f.ip} daddr @nosteer${x} return`,
      ...(part.scoped.some((c) => c.excluded)
        ? [`${f.ip} saddr . ${f.ip} daddr @scoped-excluded${x} return`]
        : []),
      `${f.ip} saddr vmap @pods${x}`,
      ...(part.scoped.length > 0 ? [`${f.ip} saddr . ${f.ip} daddr vmap @scoped${x}`] : []),
      // Still here: no VIP chain took the packet (core/fail_closed.ts).
      ...(part.failClosed.length > 0
        ? [
          `${f.ip} saddr @failclosed${x} ct direction original drop`,
          `${f.ip} saddr @failclosed${x} ct state invalid drop`,
        ]
        : []),
    ];
  };
  // A pod's INVALID packet no VIP took: NAT never sees it (`dropInvalidUnsteeredRule`).
  const invalid = (part: Intent, f: NftFamily): string[] =>
    part.podCidrs.length > 0
      ? [`${f.ip} saddr { ${part.podCidrs.join(", ")} } ct state invalid drop`]
      : [];
  chains.set("prerouting", [
    ...steer(v4, NFT_V4),
    ...(v6 ? steer(v6, NFT_V6) : []),
    // A connection we steered, now unmarked and never translated (a forwarder's null
    // binding whose pod or VIP went): it would leave with the pod's own address.
    // See `dropUnnatedRule` (core/desired.ts).
    `ct direction original ct mark & ${
      hex(mask)
    } != 0 ct status & (confirmed | snat) == confirmed drop`,
    ...invalid(v4, NFT_V4),
    ...(v6 ? invalid(v6, NFT_V6) : []),
  ]);
  const roles = `oifname "${intent.interface}" meta mark & ${hex(mask)} vmap @roles`;
  // The families' marks are apart (an IPv4 and an IPv6 VIP may share a route id): each family's
  // packets go by its own roles map. (A snat of the other family would do nothing at all.)
  chains.set(
    "postrouting",
    v6 ? [`meta nfproto ipv4 ${roles}`, `meta nfproto ipv6 ${roles}6`] : [roles],
  );
  for (const role of [...v4.roles, ...(v6?.roles ?? [])]) {
    const { ip } = familyOfRole(role);
    chains.set(vipChain(role), [
      // On the holder an INVALID packet would leave un-NATed; elsewhere it goes to the holder.
      ...(role.role === "holder" ? ["ct state invalid drop"] : []),
      // Replicated NAT state: see `holderDropMidstreamRule` (core/desired.ts).
      ...(role.role === "holder" && intent.guardVips
        ? ["ct state new tcp flags & (fin | syn | rst | ack) != syn drop"]
        : []),
      // Replies of connections the pod did not originate return the way they came; not those
      // of a connection picked up from the server's side (tagged in prerouting).
      `ct direction reply ct mark & ${hex(mask)} == 0 return`,
      // On the holder such a packet cannot be translated (`holderDropReplyRule`).
      ...(role.role === "holder" ? ["ct direction reply drop"] : []),
      // On the holder a connection in the table without source NAT would leave with the
      // pod's own address (`holderDropUnnatedRule`, core/desired.ts).
      ...(role.role === "holder" ? ["ct status & (confirmed | snat) == confirmed drop"] : []),
      `counter meta mark set meta mark & ${keep} | ${hex(role.mark)}`,
      `ct mark set ct mark & ${keep} | ${hex(role.mark)}`,
    ]);
    chains.set(snatChain(role), [
      // The nat hook sees a connection's first packet only: the counter counts connections.
      role.role === "holder"
        ? `counter snat ${ip} to ${role.ip} fully-random`
        : `counter snat ${ip} to ${ip} saddr`,
    ]);
  }
  return chains;
}

/** Ranges with those inside another dropped: an interval set refuses overlapping elements. */
export function outermost(cidrs: readonly string[]): string[] {
  const parsed = [...new Set(cidrs.map((c) => formatCidr(parseCidr(c)!)))].sort(compareCidr)
    .map((text) => ({ text, cidr: parseCidr(text)! }));
  return parsed.filter(({ cidr }) =>
    !parsed.some((o) => o.cidr.prefix < cidr.prefix && cidrContains(o.cidr, cidr.base))
  ).map((p) => p.text);
}

/** The elements each IPv4 (or IPv6) set or map must hold for an intent. */
export function nftElements(intent: Intent, family: Family = "ipv4"): NftElements {
  const part = enabledPart(intent, family);
  let elements = elementsOf.get(part);
  if (elements === undefined) {
    elementsOf.set(part, elements = computeElements(part, family === "ipv4" ? NFT_V4 : NFT_V6));
  }
  return elements;
}

/** The elements of an intent, as sets and maps. */
export interface NftElements {
  readonly pods: ReadonlyMap<string, string>;
  readonly nosteer: ReadonlySet<string>;
  readonly scoped: ReadonlyMap<string, string>;
  readonly excluded: ReadonlySet<string>;
  readonly roles: ReadonlyMap<number, string>;
  readonly failClosed: ReadonlySet<string>;
}

/** A pass plans and then records what it applied from one intent: its elements are built once. */
const elementsOf = new WeakMap<Intent, NftElements>();

function computeElements(intent: Intent, f: NftFamily): NftElements {
  const chainOfMark = new Map(intent.roles.map((r) => [r.mark, vipChain(r)]));
  const pods = new Map<string, string>();
  for (const [ip, mark] of intent.podMarks) pods.set(ip, `goto ${chainOfMark.get(mark)}`);
  const scoped = new Map<string, string>();
  const excluded = new Set<string>();
  for (const cls of intent.scoped) {
    const destinations = outermost(cls.destinations ?? [f.all]);
    const exclusions = cls.excluded ? outermost(cls.excluded) : [];
    for (const [ip, mark] of cls.podMarks) {
      for (const range of destinations) {
        scoped.set(`${ip} . ${range}`, `goto ${chainOfMark.get(mark)}`);
      }
      for (const range of exclusions) excluded.add(`${ip} . ${range}`);
    }
  }
  return {
    pods,
    nosteer: new Set(outermost(intent.noSteer)),
    scoped,
    excluded,
    roles: new Map(intent.roles.map((r) => [r.mark, `goto ${snatChain(r)}`])),
    failClosed: new Set(intent.failClosed),
  };
}

const NO_ELEMENTS: NftFamilyElements = {
  pods: new Map(),
  nosteer: new Set(),
  scoped: new Map(),
  excluded: new Set(),
  roles: new Map(),
};

/**
 * The operations that turn our live table into the intent's, or [] when
 * nothing differs. Declarations are idempotent (`add`), chains are rewritten
 * only when their rules differ, elements are added and deleted one by one,
 * and chains no longer wanted go last, once nothing refers to them. The IPv6
 * sets and maps exist while the cluster has an IPv6 pod range.
 */
export function planNftables(intent: Intent, live: LiveNftables): NftOp[] {
  // A set or base chain of ours declared otherwise (another type, hook or priority) cannot be
  // changed in place: the table is replaced whole, in the same atomic transaction.
  if (live.present && misdeclared(live)) {
    return [{ op: "delete table" }, ...planNftables(intent, NO_NFTABLES)];
  }
  const chains = nftChains(intent);
  const v6 = ipv6On(intent);
  const families = v6 ? [NFT_V4, NFT_V6] : [NFT_V4];
  const body: NftOp[] = [];
  const setOps: NftOp[] = [];
  const guarded = (f: NftFamily) => enabledPart(intent, f.family).failClosed.length > 0;
  for (const f of families) {
    for (const set of setsOf(f)) if (!live.sets.has(set.name)) setOps.push({ op: "add set", set });
    const failClosed = failClosedSetOf(f);
    if (guarded(f) && !live.sets.has(failClosed.name)) {
      setOps.push({ op: "add set", set: failClosed });
    }
  }
  const chainOps: NftOp[] = [];
  for (const [chain, rules] of chains) {
    const have = live.chains.get(chain);
    const hashes = rules.map(ruleHash);
    if (have && have.length === hashes.length && have.every((h, i) => h === hashes[i])) continue;
    chainOps.push(
      have ? { op: "flush chain", chain } : { op: "add chain", chain, hook: HOOKS[chain] },
    );
    for (const rule of rules) chainOps.push({ op: "add rule", chain, rule });
  }
  // Element changes; a changed map entry is deleted and added again in the same transaction.
  const elementOps: NftOp[] = [];
  const diffMap = <K>(
    set: string,
    have: ReadonlyMap<K, string>,
    wantMap: ReadonlyMap<K, string>,
    key: (k: K) => string,
  ) => {
    for (const [k, value] of have) {
      if (wantMap.get(k) !== value) elementOps.push({ op: "delete element", set, key: key(k) });
    }
    for (const [k, value] of wantMap) {
      if (have.get(k) !== value) elementOps.push({ op: "add element", set, key: key(k), value });
    }
  };
  const diffSet = (set: string, have: ReadonlySet<string>, wantSet: ReadonlySet<string>) => {
    for (const k of have) {
      if (!wantSet.has(k)) elementOps.push({ op: "delete element", set, key: k });
    }
    for (const k of wantSet) if (!have.has(k)) elementOps.push({ op: "add element", set, key: k });
  };
  const text = (k: string) => k;
  for (const f of families) {
    const want = nftElements(intent, f.family);
    const have: NftFamilyElements = f.family === "ipv4" ? live : live.ipv6 ?? NO_ELEMENTS;
    const x = f.suffix;
    diffMap(`pods${x}`, have.pods, want.pods, text);
    diffSet(`nosteer${x}`, have.nosteer, want.nosteer);
    diffMap(`scoped${x}`, have.scoped, want.scoped, text);
    diffSet(`scoped-excluded${x}`, have.excluded, want.excluded);
    diffMap(`roles${x}`, have.roles, want.roles, hex);
    if (guarded(f)) {
      diffSet(failClosedSetOf(f).name, have.failClosed ?? new Set(), want.failClosed);
    }
  }
  const staleChains: NftOp[] = [...live.chains.keys()].filter((c) => !chains.has(c)).sort()
    .flatMap((chain) => [{ op: "flush chain", chain }, { op: "delete chain", chain }] as NftOp[]);
  // A set goes once the rules that use it are rewritten without it (same transaction, after).
  const staleSets: NftOp[] = [
    ...(!guarded(NFT_V4) ? [FAIL_CLOSED_SET] : []),
    ...(!v6 ? SETS_V6 : []),
    ...(!v6 || !guarded(NFT_V6) ? [FAIL_CLOSED_SET_V6] : []),
  ].filter((set) => live.sets.has(set.name)).map((set) => ({ op: "delete set", set: set.name }));
  body.push(...setOps, ...chainOps, ...elementOps, ...staleChains, ...staleSets);
  if (body.length === 0) return [];
  return [{ op: "add table" }, ...body];
}

/** The operations that remove our table (and with it everything of ours). */
export function removeNftables(live: LiveNftables): NftOp[] {
  return live.present ? [{ op: "delete table" }] : [];
}

/**
 * The one renderer: typed operations → an `nft -f` script. Consecutive
 * element operations on one set are written as one line (10,000 pods: one
 * `add element` of 10,000 elements, which nft parses far faster than lines).
 */
export function renderNft(
  ops: readonly NftOp[],
  /** The table, "family name": ours unless given (the guard's). */
  t = `${NFT_FAMILY} ${NFT_TABLE}`,
): string[] {
  const lines: string[] = [];
  let batch: { head: string; elements: string[] } | undefined;
  const flush = () => {
    if (batch) lines.push(`${batch.head} { ${batch.elements.join(", ")} }`);
    batch = undefined;
  };
  for (const o of ops) {
    if (o.op === "add element" || o.op === "delete element") {
      const verb = o.op === "add element" ? "add" : "delete";
      const head = `${verb} element ${t} ${o.set}`;
      const element = o.value !== undefined && verb === "add" ? `${o.key} : ${o.value}` : o.key;
      if (batch?.head !== head) {
        flush();
        batch = { head, elements: [] };
      }
      batch.elements.push(element);
      continue;
    }
    flush();
    lines.push(renderOne(t, o as Exclude<NftOp, { op: "add element" | "delete element" }>));
  }
  flush();
  return lines;
}

function renderOne(t: string, o: Exclude<NftOp, { op: "add element" | "delete element" }>): string {
  {
    switch (o.op) {
      case "add table":
        return `add table ${t}`;
      case "delete table":
        return `delete table ${o.table ? `${o.table.family} ${o.table.name}` : t}`;
      case "add set": {
        const set = o.set;
        const kind = set.map ? "map" : "set";
        const type = set.map ? `${set.type} : ${set.map}` : set.type;
        const options = [
          type.startsWith("typeof ") ? type : `type ${type}`,
          ...(set.interval ? ["flags interval"] : []),
          ...(set.size !== undefined ? [`size ${set.size}`] : []),
          ...(set.timeout !== undefined
            ? ["flags dynamic,timeout", `timeout ${set.timeout}s`]
            : []),
          ...(set.counter ? ["counter"] : []),
        ];
        return `add ${kind} ${t} ${set.name} { ${options.join("; ")}; }`;
      }
      case "flush set":
        return `flush set ${t} ${o.set}`;
      case "add counter":
        return `add counter ${t} ${o.counter}`;
      case "delete set":
        return `delete set ${t} ${o.set}`;
      case "add chain":
        return o.hook
          ? `add chain ${t} ${o.chain} { type ${o.hook.type} hook ${o.hook.hook}${
            o.hook.device === undefined ? "" : ` device "${o.hook.device}"`
          } priority ${o.hook.priority}; policy accept; }`
          : `add chain ${t} ${o.chain}`;
      case "flush chain":
        return `flush chain ${t} ${o.chain}`;
      case "delete chain":
        return `delete chain ${t} ${o.chain}`;
      case "add rule":
        return o.unhashed
          ? `add rule ${t} ${o.chain} ${o.rule}`
          : `add rule ${t} ${o.chain} ${o.rule} comment "${ruleHash(o.rule)}"`;
    }
  }
}

type Json = Record<string, unknown>;

/** One set element's key as we write it: "a.b.c.d", "a.b.c.d/n", "a . b/n", or a mark number. */
function elementKey(value: unknown, interval: boolean): string {
  if (typeof value === "string") {
    return interval && !value.includes("/")
      ? `${value}/${value.includes(":") ? NFT_V6.host : NFT_V4.host}`
      : value;
  }
  if (typeof value === "number") return String(value);
  const v = value as Json;
  if (v.prefix) {
    const p = v.prefix as { addr: string; len: number };
    return `${p.addr}/${p.len}`;
  }
  if (v.range) {
    // nft prints a range that is not a prefix as such; ours are prefixes, so this is foreign.
    const [a, b] = v.range as string[];
    return `${a}-${b}`;
  }
  if (v.concat) {
    const [pod, range] = v.concat as unknown[];
    return `${elementKey(pod, false)} . ${elementKey(range, true)}`;
  }
  if (v.elem) return elementKey((v.elem as Json).val, interval);
  return JSON.stringify(value);
}

function verdictOf(value: unknown): string {
  const v = value as Json;
  if (v.goto) return `goto ${(v.goto as Json).target}`;
  if (v.jump) return `jump ${(v.jump as Json).target}`;
  return JSON.stringify(value);
}

/** Parses `nft -j list table inet kube-egress`; an absent table reads as `NO_NFTABLES`. */
export function parseNftJson(text: string): LiveNftables {
  if (text.trim() === "") return NO_NFTABLES;
  const items = (JSON.parse(text) as { nftables: Json[] }).nftables;
  const chains = new Map<string, string[]>();
  const sets = new Set<string>();
  const pods = new Map<string, string>();
  const nosteer = new Set<string>();
  const scoped = new Map<string, string>();
  const excluded = new Set<string>();
  const roles = new Map<number, string>();
  const snatTo = new Map<string, string>();
  const failClosed = new Set<string>();
  const counters = new Map<string, { packets: number; bytes: number }>();
  const declarations = new Map<string, string>();
  const v6 = {
    pods: new Map<string, string>(),
    nosteer: new Set<string>(),
    scoped: new Map<string, string>(),
    excluded: new Set<string>(),
    roles: new Map<number, string>(),
    failClosed: new Set<string>(),
  };
  let present = false;
  for (const item of items) {
    // `nft list chains inet` lists every inet table's chains: only ours count.
    const object = Object.values(item)[0] as Json;
    const table = item.table ? object.name : object.table;
    if (table !== NFT_TABLE || item.metainfo) continue;
    if (item.table) present = true;
    else if (item.chain) {
      const chain = item.chain as Json;
      chains.set(String(chain.name), []);
      const hooked = chain.hook !== undefined || chain.type !== undefined;
      if (hooked) {
        declarations.set(`chain ${chain.name}`, `${chain.type}|${chain.hook}|${chain.prio}`);
      }
    } else if (item.rule) {
      const rule = item.rule as Json;
      const chain = String(rule.chain);
      if (!chains.has(chain)) chains.set(chain, []);
      chains.get(chain)!.push(typeof rule.comment === "string" ? rule.comment : "");
      const expr = (rule.expr as Json[] | undefined) ?? [];
      const snat = expr.find((e) => e.snat)?.snat as Json | undefined;
      if (snat && typeof snat.addr === "string") snatTo.set(chain, snat.addr);
      const counter = expr.find((e) => e.counter)?.counter as Json | undefined;
      if (counter && !counters.has(chain)) {
        counters.set(chain, { packets: Number(counter.packets), bytes: Number(counter.bytes) });
      }
    } else if (item.set || item.map) {
      const set = (item.set ?? item.map) as Json;
      const name = String(set.name);
      sets.add(name);
      const interval = Array.isArray(set.flags) && set.flags.includes("interval");
      const type = Array.isArray(set.type) ? set.type.join(" . ") : String(set.type);
      declarations.set(name, `${type}|${item.map ? String(set.map) : ""}|${interval}`);
      for (const elem of (set.elem as unknown[] | undefined) ?? []) {
        if (item.map) {
          const [key, value] = elem as [unknown, unknown];
          const k = elementKey(key, interval);
          const target = verdictOf(value);
          if (name === "pods") pods.set(k, target);
          else if (name === "scoped") scoped.set(k, target);
          else if (name === "roles") roles.set(Number(k), target);
          else if (name === "pods6") v6.pods.set(k, target);
          else if (name === "scoped6") v6.scoped.set(k, target);
          else if (name === "roles6") v6.roles.set(Number(k), target);
        } else {
          const k = elementKey(elem, interval);
          if (name === "nosteer") nosteer.add(k);
          else if (name === "scoped-excluded") excluded.add(k);
          else if (name === FAIL_CLOSED_SET.name) failClosed.add(k);
          else if (name === "nosteer6") v6.nosteer.add(k);
          else if (name === "scoped-excluded6") v6.excluded.add(k);
          else if (name === FAIL_CLOSED_SET_V6.name) v6.failClosed.add(k);
        }
      }
    }
  }
  return {
    present,
    chains,
    sets,
    pods,
    nosteer,
    scoped,
    excluded,
    roles,
    snatTo,
    counters,
    declarations,
    ...(failClosed.size > 0 ? { failClosed } : {}),
    ...(SETS_V6.some((d) => sets.has(d.name))
      ? {
        ipv6: {
          pods: v6.pods,
          nosteer: v6.nosteer,
          scoped: v6.scoped,
          excluded: v6.excluded,
          roles: v6.roles,
          ...(v6.failClosed.size > 0 ? { failClosed: v6.failClosed } : {}),
        },
      }
      : {}),
  };
}

/** Mark → role of the roles map's elements (marks under other masks are ignored). */
export function nftRolesInForce(
  live: LiveNftables,
  mask: number,
  family: Family = "ipv4",
): Map<number, VipRole["role"]> {
  const roles = new Map<number, VipRole["role"]>();
  const map = family === "ipv4" ? live.roles : live.ipv6?.roles ?? new Map<number, string>();
  for (const [mark, target] of map) {
    if ((mark & ~mask) !== 0) continue;
    const chain = target.replace(/^goto /, "");
    roles.set(mark, live.snatTo.has(chain) ? "holder" : "forwarder");
  }
  return roles;
}

/** Our table as a transaction planned from `live` leaves it once applied (hashes included). */
export function nftAfterApply(intent: Intent): LiveNftables {
  const want = nftElements(intent);
  const chains = nftChains(intent);
  const v6 = ipv6On(intent);
  const snatTo = new Map<string, string>();
  const roles = [
    ...enabledPart(intent, "ipv4").roles,
    ...(v6 ? enabledPart(intent, "ipv6").roles : []),
  ];
  for (const r of roles) if (r.role === "holder") snatTo.set(snatChain(r), r.ip);
  const want6 = v6 ? nftElements(intent, "ipv6") : undefined;
  return {
    present: true,
    chains: new Map([...chains].map(([c, rules]) => [c, rules.map(ruleHash)])),
    sets: new Set([
      ...SETS.map((s) => s.name),
      ...(want.failClosed.size > 0 ? [FAIL_CLOSED_SET.name] : []),
      ...(want6 ? SETS_V6.map((s) => s.name) : []),
      ...(want6 && want6.failClosed.size > 0 ? [FAIL_CLOSED_SET_V6.name] : []),
    ]),
    pods: want.pods,
    nosteer: want.nosteer,
    scoped: want.scoped,
    excluded: want.excluded,
    roles: want.roles,
    snatTo,
    ...(want.failClosed.size > 0 ? { failClosed: want.failClosed } : {}),
    counters: new Map(),
    ...(want6
      ? {
        ipv6: {
          pods: want6.pods,
          nosteer: want6.nosteer,
          scoped: want6.scoped,
          excluded: want6.excluded,
          roles: want6.roles,
          ...(want6.failClosed.size > 0 ? { failClosed: want6.failClosed } : {}),
        },
      }
      : {}),
  };
}

/** True when `listed` (a chain listing) shows our table with exactly the chains `known` has. */
export function sameChains(known: LiveNftables, listed: LiveNftables): boolean {
  if (!known.present) return false;
  const names = [...listed.chains.keys()];
  return names.length === known.chains.size && names.every((n) => known.chains.has(n));
}
