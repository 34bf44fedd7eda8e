/**
 * The cluster snapshot: which VIPs exist (with their route ids) and which pod
 * is mapped to which VIP. Sources (mapping directories, the Kubernetes API)
 * produce raw entries tagged with where they came from; `validateSnapshot`
 * checks each entry and the cross-entry rules, rejects what is wrong with a
 * message naming the origin and field, and keeps every valid entry.
 */
import { z } from "zod";
import {
  type Address,
  cidrContains,
  compareAddress,
  compareCidr,
  compareIp,
  formatCidr,
  formatIp,
  parseCidr,
  parseIp,
} from "./ip.ts";
import { cidr, type DatapathConfig, describeIssues, ipAddress, routeId } from "./schema.ts";

/** A VIP as a source read it: origin is a file path or an object reference. */
export interface RawVip {
  readonly origin: string;
  readonly ip: unknown;
  readonly routeId: unknown;
  /**
   * Whether this node may hold the VIP (placement modes only). Sources that know
   * better set false: a drained or cordoned node, a node the VIP does not select.
   * Absent = eligible.
   */
  readonly eligible?: unknown;
  /** VRRP over unicast: the addresses of the nodes that may hold it (absent: the flag's list or multicast). */
  readonly peers?: unknown;
  /** The LAN addresses of the nodes that may hold it (the guard: core/guard.ts); absent: unknown. */
  readonly nodes?: unknown;
}

/** A pod → VIP mapping as a source read it. */
export interface RawPod {
  readonly origin: string;
  readonly podIp: unknown;
  readonly vip: unknown;
  /** Steer only traffic to these ranges (absent: every destination outside the cluster). */
  readonly destinations?: unknown;
  /** Never steer traffic to these ranges, besides the cluster's own. */
  readonly excluded?: unknown;
}

/**
 * A pod whose traffic must fail closed (opt-in): to a steered destination it
 * leaves as its VIP or not at all, also while its VIP is unknown, unready or
 * deleted. Sources list these apart from the mappings, since a guarded pod
 * may have no usable mapping at all.
 */
export interface RawGuard {
  readonly origin: string;
  readonly podIp: unknown;
}

/** A rejected input: where it came from and why. */
export interface Problem {
  readonly origin: string;
  readonly reason: string;
}

/** What a source hands to validation. `problems` are source-level (e.g. unreadable files). */
export interface RawSnapshot {
  readonly vips: readonly RawVip[];
  readonly pods: readonly RawPod[];
  readonly problems: readonly Problem[];
  /** Pods that fail closed (absent: none). */
  readonly failClosed?: readonly RawGuard[];
}

export interface Vip {
  readonly ip: string;
  readonly routeId: number;
  /** false: this node must not hold the VIP (it still forwards to whoever does). Absent = eligible. */
  readonly eligible?: boolean;
  /** VRRP unicast peers for this VIP's instance, sorted. */
  readonly peers?: readonly string[];
  /** The LAN addresses of the nodes that may hold it, sorted; absent: the source does not know. */
  readonly nodes?: readonly string[];
}

export interface PodMapping {
  readonly podIp: string;
  readonly vip: string;
  /** Normalized (canonical, sorted, unique); absent = every destination. */
  readonly destinations?: readonly string[];
  /** Normalized; absent = none besides the cluster ranges. */
  readonly excluded?: readonly string[];
}

/** A validated snapshot; both lists sorted by address so equal inputs give equal snapshots. */
export interface Snapshot {
  readonly vips: readonly Vip[];
  readonly pods: readonly PodMapping[];
  /** Pod IPs that fail closed, sorted, unique (absent: none). */
  readonly failClosed?: readonly string[];
}

/** Route ids from files arrive as text; from the API as numbers. Both meet the same rule. */
const routeIdInput = z.preprocess(
  (value) => (typeof value === "string" && /^\s*[0-9]+\s*$/.test(value) ? Number(value) : value),
  routeId,
);

const VipSchema = z.object({
  ip: ipAddress,
  routeId: routeIdInput,
  eligible: z.boolean({ error: "must be true or false" }).optional(),
  peers: z.array(ipAddress).optional(),
  nodes: z.array(ipAddress).optional(),
});
/**
 * Canonical, sorted, unique ranges, so equal restrictions compare equal. An
 * empty list restricts nothing, the same as an absent one.
 */
const cidrList = z.array(cidr).transform((list) =>
  list.length === 0
    ? undefined
    : [...new Set(list.map((c) => formatCidr(parseCidr(c)!)))].sort(compareCidr)
);
const PodSchema = z.object({
  podIp: ipAddress,
  vip: ipAddress,
  destinations: cidrList.optional(),
  excluded: cidrList.optional(),
});

type ParsedPod =
  | { readonly ok: true; readonly data: z.output<typeof PodSchema> }
  | { readonly ok: false; readonly reason: string };

/** One pod entry through its schema (the message names fields as the operator does). */
function parsePodEntry(entry: RawPod): ParsedPod {
  const parsed = PodSchema.safeParse(entry);
  return parsed.success
    ? { ok: true, data: parsed.data }
    : { ok: false, reason: describeIssues(parsed.error, FIELD_LABELS) };
}

/**
 * The schema results of a validation's plain pod entries (pod IP and VIP
 * only), kept for the next one: a pass that re-reads 10,000 mappings with
 * one changed parses one entry, not 10,000 (~8 ms). Results are the schema's
 * own, keyed by the exact input; entries not seen in a call are forgotten.
 */
export class ValidationMemo {
  #previous = new Map<string, ParsedPod>();

  /** A parser for one validation; what it parsed becomes the memo for the next. */
  parser(): (entry: RawPod) => ParsedPod {
    const previous = this.#previous;
    const current = new Map<string, ParsedPod>();
    this.#previous = current;
    return (entry) => {
      const plain = typeof entry.podIp === "string" && typeof entry.vip === "string" &&
        entry.destinations === undefined && entry.excluded === undefined;
      if (!plain) return parsePodEntry(entry);
      const key = `${(entry.podIp as string).length}:${entry.podIp}${entry.vip}`;
      let parsed = previous.get(key) ?? current.get(key);
      if (parsed === undefined) parsed = parsePodEntry(entry);
      current.set(key, parsed);
      return parsed;
    };
  }
}

/** How fields are named in messages: the words an operator uses, not our property names. */
const FIELD_LABELS = {
  podIp: "pod IP",
  vip: "VIP",
  ip: "VIP",
  routeId: "route id",
  eligible: "eligible",
  peers: "VRRP peers",
  nodes: "node addresses",
  destinations: "destination CIDRs",
  excluded: "excluded CIDRs",
};

/** What a mapping does with a pod's traffic, as one comparable string. */
function egressOf(pod: PodMapping): string {
  return pod.destinations === undefined && pod.excluded === undefined
    ? pod.vip
    : [pod.vip, pod.destinations?.join(",") ?? "*", pod.excluded?.join(",") ?? ""].join("|");
}

/** Formats a problem for logs: "origin: reason". */
export function formatProblem(problem: Problem): string {
  return `${problem.origin}: ${problem.reason}`;
}

interface PodCandidate extends PodMapping {
  readonly origin: string;
  /** The pod IP as a number (IPv4) or bigint (IPv6). */
  readonly address: Address;
}

/**
 * Pod candidates by pod IP, in order of first appearance: the first candidate
 * of each IP, and the whole group for the rare IP listed more than once (one
 * array per pod would be wasted on every pass).
 */
function podsByIp(candidates: readonly PodCandidate[]) {
  const first = new Map<string, PodCandidate>();
  const repeated = new Map<string, PodCandidate[]>();
  for (const candidate of candidates) {
    const seen = first.get(candidate.podIp);
    if (seen === undefined) first.set(candidate.podIp, candidate);
    else {
      const group = repeated.get(candidate.podIp);
      if (group) group.push(candidate);
      else repeated.set(candidate.podIp, [seen, candidate]);
    }
  }
  return { first, repeated };
}

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const group = groups.get(k);
    if (group) group.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}

/**
 * Validates a raw snapshot against the datapath settings. Never throws on bad
 * input: every bad entry becomes a Problem and every good one is kept.
 */
export function validateSnapshot(
  raw: RawSnapshot,
  config: Pick<DatapathConfig, "podCidrs" | "serviceCidrs">,
  /** Per-entry results of the previous call, reused for entries that are the same (agents). */
  memo?: ValidationMemo,
): { snapshot: Snapshot; problems: Problem[] } {
  const problems: Problem[] = [...raw.problems];
  const podRanges = config.podCidrs.map((text) => ({ text, cidr: parseCidr(text)! }));
  const serviceRanges = config.serviceCidrs.map((text) => ({ text, cidr: parseCidr(text)! }));
  const rangeHolding = (ranges: typeof podRanges, address: Address) =>
    ranges.find((range) => cidrContains(range.cidr, address));

  // 1. VIP entries on their own.
  const vipCandidates: (Vip & { origin: string })[] = [];
  for (const entry of raw.vips) {
    const parsed = VipSchema.safeParse(entry);
    if (!parsed.success) {
      problems.push({ origin: entry.origin, reason: describeIssues(parsed.error, FIELD_LABELS) });
      continue;
    }
    const address = parseIp(parsed.data.ip)!;
    const inside = rangeHolding(podRanges, address) ?? rangeHolding(serviceRanges, address);
    if (inside) {
      problems.push({
        origin: entry.origin,
        reason: `VIP ${parsed.data.ip} lies inside the cluster range ${inside.text}`,
      });
      continue;
    }
    vipCandidates.push({ origin: entry.origin, ...parsed.data });
  }

  // 2. VIPs across entries: one address once, one route id once per family (an
  //    IPv4 and an IPv6 VIP may share one: a dual-stack VIP's two addresses do,
  //    each family has its own rules and tables). On a clash nobody can tell
  //    which entry is right, so all clashing entries are rejected.
  const rejectedVips = new Map<string, string>();
  for (const [ip, group] of groupBy(vipCandidates, (v) => v.ip)) {
    if (group.length < 2) continue;
    for (const vip of group) {
      const others = group.filter((o) => o !== vip).map((o) => o.origin).join(", ");
      problems.push({ origin: vip.origin, reason: `VIP ${ip} is also defined by ${others}` });
      rejectedVips.set(ip, `VIP ${ip} is defined more than once`);
    }
  }
  const uniqueVips = vipCandidates.filter((v) => !rejectedVips.has(v.ip));
  const familyOfVip = (ip: string) => (ip.indexOf(":") < 0 ? "IPv4" : "IPv6");
  for (const [, group] of groupBy(uniqueVips, (v) => `${v.routeId} ${familyOfVip(v.ip)}`)) {
    if (group.length < 2) continue;
    const id = group[0].routeId;
    for (const vip of group) {
      const others = group.filter((o) => o !== vip).map((o) => `${o.ip} (${o.origin})`).join(", ");
      problems.push({
        origin: vip.origin,
        reason: `route id ${id} of VIP ${vip.ip} is also used by ${others}`,
      });
      rejectedVips.set(vip.ip, `VIP ${vip.ip} shares route id ${id} with another VIP`);
    }
  }
  const vips = uniqueVips.filter((v) => !rejectedVips.has(v.ip))
    .map(({ ip, routeId, eligible, peers, nodes }) => ({
      ip,
      routeId,
      ...(eligible === undefined ? {} : { eligible }),
      ...(peers === undefined ? {} : { peers }),
      ...(nodes === undefined ? {} : { nodes }),
    }))
    .sort((a, b) => compareIp(a.ip, b.ip));
  const knownVips = new Set(vips.map((v) => v.ip));

  // 3. Pod entries on their own and against the VIPs. Each address is parsed
  //    once and kept as a number for the range test and the final sort.
  const podCandidates: PodCandidate[] = [];
  const parsePod = memo ? memo.parser() : parsePodEntry;
  for (const entry of raw.pods) {
    const parsed = parsePod(entry);
    if (!parsed.ok) {
      problems.push({ origin: entry.origin, reason: parsed.reason });
      continue;
    }
    const { podIp, vip, destinations, excluded } = parsed.data;
    const address = parseIp(podIp)!;
    if (typeof address !== typeof parseIp(vip)) {
      // A pod's packets leave with an address of their own family: a VIP of the other can never be their source.
      problems.push({
        origin: entry.origin,
        reason: `VIP ${vip} is ${familyOfVip(vip)} but pod IP ${podIp} is ${
          familyOfVip(podIp)
        }: a pod's traffic can only leave with a VIP of its own family`,
      });
      continue;
    }
    if (!rangeHolding(podRanges, address)) {
      problems.push({
        origin: entry.origin,
        reason: `pod IP ${podIp} is outside the pod ranges (${config.podCidrs.join(", ")})`,
      });
      continue;
    }
    if (!knownVips.has(vip)) {
      problems.push({
        origin: entry.origin,
        reason: rejectedVips.has(vip)
          ? `pod ${podIp} is mapped to a rejected VIP: ${rejectedVips.get(vip)}`
          : `pod ${podIp} is mapped to VIP ${vip}, which has no route id`,
      });
      continue;
    }
    podCandidates.push({
      origin: entry.origin,
      podIp,
      vip,
      address,
      ...(destinations ? { destinations } : {}),
      ...(excluded ? { excluded } : {}),
    });
  }

  // 4. One pod IP, one egress: a pod listed twice with different VIPs (or
  //    different destination ranges) is ambiguous.
  const kept: PodCandidate[] = [];
  const { first, repeated } = podsByIp(podCandidates);
  for (const [podIp, candidate] of first) {
    const group = repeated.get(podIp);
    if (group === undefined || group.every((p) => egressOf(p) === egressOf(candidate))) {
      kept.push(candidate);
      continue;
    }
    const distinct = [...new Set(group.map((p) => p.vip))].sort(compareIp);
    for (const pod of group) {
      problems.push({
        origin: pod.origin,
        reason: distinct.length > 1
          ? `pod ${podIp} is mapped to several VIPs (${distinct.join(", ")})`
          : `pod ${podIp} is mapped to VIP ${pod.vip} with different destination ranges`,
      });
    }
  }
  kept.sort((a, b) => compareAddress(a.address, b.address));
  const pods = kept.map(({ podIp, vip, destinations, excluded }) =>
    destinations === undefined && excluded === undefined ? { podIp, vip } : {
      podIp,
      vip,
      ...(destinations ? { destinations } : {}),
      ...(excluded ? { excluded } : {}),
    }
  );
  // A destination-scoped mapping in force guards itself: only its own ranges are steered, and
  // the mark rules mark everything to them. Its pod stays out of the guard, which would drop
  // its traffic to every other destination. (Once the mapping is gone, the whole guard applies.)
  const scopedInForce = new Set(
    kept.filter((p) => p.destinations || p.excluded).map((p) => p.address),
  );
  const failClosed = guardedPods(
    raw.failClosed ?? [],
    (address) => !scopedInForce.has(address) && rangeHolding(podRanges, address) !== undefined,
  );
  return {
    snapshot: failClosed.length > 0 ? { vips, pods, failClosed } : { vips, pods },
    problems,
  };
}

/**
 * The pod IPs to fail closed: valid addresses `wanted` accepts, sorted, once
 * each. Anything else is left out without a problem of its own: the
 * pod's mapping (if any) reports what is wrong with it.
 */
function guardedPods(
  guards: readonly RawGuard[],
  wanted: (address: Address) => boolean,
): string[] {
  const addresses = new Set<Address>();
  for (const guard of guards) {
    const address = typeof guard.podIp === "string" ? parseIp(guard.podIp) : undefined;
    if (address !== undefined && wanted(address)) addresses.add(address);
  }
  return [...addresses].sort(compareAddress).map(formatIp);
}
