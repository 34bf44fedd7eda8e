/**
 * Conntrack entries pinned to an old role. NAT is decided on a connection's
 * first packet and then kept in its conntrack entry: after a VIP moves, a
 * long-lived flow (a UDP stream) would keep the old decision for as long as
 * it keeps sending — SNAT to a VIP this node no longer holds, or no SNAT on
 * the new holder. When this node's role for a VIP changes, the entries carrying
 * that VIP's mark (saved into the connection mark under our mask, see
 * `saveMarkRule`) are deleted, so the next packet starts a new entry that takes
 * the new role. Other VIPs' connections and everything unmarked are untouched.
 */
import type { Family, VipRole } from "./intent.ts";
import { cidrContains, parseCidr, parseIp } from "./ip.ts";
import type { PodRoute } from "./iproute.ts";
import type { ConntrackdCommit, ConntrackFlush, Operation, Step } from "./operation.ts";
import type { Transaction } from "./plan.ts";

/** The flush of one VIP's connections (by its mark under our mask). */
export function roleFlush(
  mark: number,
  mask: number,
  family: Family = "ipv4",
): Extract<ConntrackFlush, { why: "role" }> {
  return { why: "role", family, mark, mask };
}

/**
 * Flushes needed because a VIP's role on this node changes with this pass:
 * the role in force for its mark (read by the backend from its own objects,
 * see `DatapathPlanner.rolesInForce`) is holder and the desired one forwarder,
 * or the reverse; or the VIP is removed (its mark has a role in force and no
 * desired one). A new VIP needs none (nothing was pinned to a role of it).
 * A removed VIP's connections must go too: a forwarder's are null bindings,
 * and without the mark their packets take the main route out with the pod's
 * own address (until flushed they are dropped, `dropUnnatedRule`).
 */
export function conntrackFlushes(
  liveRole: ReadonlyMap<number, VipRole["role"]>,
  desiredRoles: readonly VipRole[],
  mask: number,
): ConntrackFlush[] {
  return [
    ...desiredRoles
      .filter((r) => liveRole.has(r.mark) && liveRole.get(r.mark) !== r.role)
      .map((r) => r.mark),
    ...removedMarks(liveRole, desiredRoles),
  ].map((mark) => roleFlush(mark, mask));
}

/** Marks with a role in force and none desired: their VIPs are removed with this pass. */
function removedMarks(
  liveRole: ReadonlyMap<number, VipRole["role"]>,
  desiredRoles: readonly VipRole[],
): number[] {
  const desired = new Set(desiredRoles.map((r) => r.mark));
  return [...liveRole.keys()].filter((mark) => !desired.has(mark)).sort((a, b) => a - b);
}

/** This node's own pod ranges: the pod routes to a local device (the CNI's bridge), not via a next hop. */
export function localPodRanges(podRoutes: readonly PodRoute[], iface: string): string[] {
  return podRoutes.filter((r) => r.gateway === undefined && r.dev !== iface).map((r) => r.dst);
}

/**
 * Flushes of the connections a pod made before it was mapped. A pod's flow
 * that started before our rules mapped it (the node booting, its pods running
 * before its agent; or the pod mapped while it streams) was masqueraded on its
 * first packet, and that entry outlives our new rules: a UDP flow would keep
 * leaving with the node's address for as long as it keeps sending. So each
 * desired pod of `family` that our objects do not map yet (`inForce`, read
 * from the backend's sets) and that runs on this node (in `localRanges`) gets
 * its entries translated to each of the node's own addresses (`nodeAddresses`:
 * the interface's, without VIPs or link-local ones) deleted, after the rule
 * step: its next packet starts an entry our rules decide. Not by connection
 * mark: once our rules are in, every packet of the old flow sets our mark on
 * its entry too, before the flush runs. Connections our rules translated (to a
 * VIP: established or synced entries) and un-NATed ones (to pods, to services
 * through kube-proxy's DNAT, a forwarder's null bindings) are kept. Other
 * nodes' pods are not flushed here (one process per pod: a holder's first
 * pass would run one per pod of the cluster); with no local pod range known,
 * no pod is.
 */
export function unmappedFlushes(
  desiredPods: Iterable<string>,
  inForce: ReadonlySet<string>,
  localRanges: readonly string[],
  nodeAddresses: readonly string[],
  family: Family = "ipv4",
): ConntrackFlush[] {
  const version = family === "ipv4" ? 4 : 6;
  const ranges = localRanges.flatMap((text) => {
    const cidr = parseCidr(text);
    return cidr === undefined || cidr.family !== version ? [] : [cidr];
  });
  // Masquerade never picks a link-local source for a routed destination.
  const linkLocal = parseCidr("fe80::/10")!;
  const addresses = nodeAddresses.filter((text) => {
    const address = parseIp(text);
    if (address === undefined || (typeof address === "number") !== (family === "ipv4")) {
      return false;
    }
    return typeof address === "number" || !cidrContains(linkLocal, address);
  });
  if (ranges.length === 0 || addresses.length === 0) return [];
  const flushes: ConntrackFlush[] = [];
  for (const pod of desiredPods) {
    if (inForce.has(pod)) continue;
    const address = parseIp(pod);
    if (address === undefined || !ranges.some((r) => cidrContains(r, address))) continue;
    // The address is one our rules never translate to (they SNAT to VIPs only): the CNI's masquerade.
    flushes.push(
      ...addresses.map((srcNat): ConntrackFlush => ({ why: "mapped", family, pod, srcNat })),
    );
  }
  return flushes;
}

/**
 * The flushes of a pass's role changes, and the commit of replicated NAT
 * state (core/conntrackd.ts) when this node takes a VIP over. Both run after
 * the backend's rule step (the new roles are in force) and before the
 * forwarding routes of the VIPs taken over are removed.
 *
 * Without replication (`sync` absent) every VIP whose role flips is flushed,
 * as `conntrackFlushes` says.
 *
 * With it, a VIP taken over is flushed whole (this node's own entries are
 * un-NATed, made while it forwarded to the old holder, and would leave with
 * the pod's address once the forwarding route goes), then the synced entries
 * are committed, so a connection the old holder translated keeps its VIP port
 * (a synced entry replaces any entry of the same connection made meanwhile).
 * Until the commit, a packet of such a connection starts an entry that leaves
 * as the VIP on another port (the server's answer to it is dropped by the
 * VIP's guard, core/desired.ts `vipGuardRules`), never with a wrong source.
 * A VIP given up is flushed only for this node's own pods (`-s` each local pod
 * range): their NATed entries would send them to the new holder with the VIP
 * as source. The other nodes' connections keep their NAT here, so a packet
 * still routed here leaves as the VIP, and no deletion reaches the peers'
 * caches (conntrackd replicates deletions) before they commit. With no local
 * pod range known, the whole VIP is flushed, as without replication.
 */
export function takeoverSteps(
  liveRole: ReadonlyMap<number, VipRole["role"]>,
  desiredRoles: readonly VipRole[],
  mask: number,
  sync?: {
    readonly commits: readonly ConntrackdCommit[];
    readonly localPodCidrs: readonly string[];
  },
  family: Family = "ipv4",
): { flushes: ConntrackFlush[]; commits: ConntrackdCommit[] } {
  const flush = (mark: number) => roleFlush(mark, mask, family);
  const changed = desiredRoles.filter((r) =>
    liveRole.has(r.mark) && liveRole.get(r.mark) !== r.role
  );
  // A VIP removed is flushed whole, with or without replication (`conntrackFlushes`).
  const removed = removedMarks(liveRole, desiredRoles).map((mark) => flush(mark));
  // `conntrack -f ipv6 -s <IPv4 range>` is an error: each family's flush names its own ranges.
  const localCidrs = (sync?.localPodCidrs ?? []).filter((c) =>
    c.includes(":") === (family === "ipv6")
  );
  if (sync === undefined) {
    return { flushes: [...changed.map((r) => flush(r.mark)), ...removed], commits: [] };
  }
  return {
    flushes: [
      ...changed.flatMap((r) =>
        r.role === "holder" || localCidrs.length === 0
          ? [flush(r.mark)]
          : localCidrs.map((source): ConntrackFlush => ({ ...flush(r.mark), source }))
      ),
      ...removed,
    ],
    commits: changed.some((r) => r.role === "holder") ? [...sync.commits] : [],
  };
}

/**
 * The backend's first step that maps pods: its sets (ipset restore, before
 * the rules; a new pod may change nothing else), else its rule step; -1: none.
 */
function podsStep(transaction: Transaction): number {
  const sets = transaction.steps.findIndex((s) => s.op.tool === "ipset");
  return sets >= 0 ? sets : rulesStep(transaction);
}

/** Two flushes delete the same connections. */
export function sameFlush(a: ConntrackFlush, b: ConntrackFlush): boolean {
  if (a.family !== b.family) return false;
  if (a.why === "mapped") return b.why === "mapped" && a.pod === b.pod && a.srcNat === b.srcNat;
  return b.why === "role" && a.mark === b.mark && a.mask === b.mask && a.source === b.source;
}

/** The flushes of a conntrack step (none for any other step). */
function flushesOf(step: Step): readonly ConntrackFlush[] {
  return step.op.tool === "conntrack" ? step.op.flushes : [];
}

/** The conntrack step after the rule step; -1: none. */
function flushStep(transaction: Transaction): number {
  const rulesAt = rulesStep(transaction);
  return transaction.steps.findIndex((s, i) => s.op.tool === "conntrack" && i > rulesAt);
}

/**
 * The flushes still owed after `transaction` failed at step `failedAt`
 * (undefined: where is unknown). Deleting by mark is idempotent, so owing too
 * much costs nothing and owing too little leaves flows pinned: once the
 * backend's rule step changed the roles, the next pass sees nothing left to
 * flip and would never flush. Owed are the flushes of the conntrack step after
 * the rule step that did not run, if the roles changed before it; those
 * `owedBefore` stay owed either way.
 */
export function owedFlushes(
  transaction: Transaction,
  failedAt: number | undefined,
  owedBefore: readonly ConntrackFlush[],
  /** Steps after `failedAt` that still ran and succeeded (`stillRunAfter`). */
  ranAfter: readonly number[] = [],
): ConntrackFlush[] {
  const steps = transaction.steps;
  const rulesAt = rulesStep(transaction);
  const flushAt = flushStep(transaction);
  const at = failedAt ?? flushAt;
  if (flushAt < 0 || at > flushAt || ranAfter.includes(flushAt)) return [];
  const rolesChanged = rulesAt >= 0 && rulesAt < at;
  // A newly mapped pod's flush is owed once its sets changed: the next pass sees it mapped.
  const podsAt = podsStep(transaction);
  const podsChanged = podsAt >= 0 && podsAt < at;
  return flushesOf(steps[flushAt]).filter((flush) =>
    rolesChanged || (podsChanged && flush.why === "mapped") ||
    owedBefore.some((owed) => sameFlush(owed, flush))
  );
}

/** `transaction` with the owed flushes added to its conntrack step after the rule step (or a new last one). */
export function withOwedFlushes(
  transaction: Transaction,
  owed: readonly ConntrackFlush[],
): Transaction {
  if (owed.length === 0) return transaction;
  const steps = [...transaction.steps];
  const flushAt = flushStep(transaction);
  if (flushAt < 0) {
    steps.push({
      purpose: "flush connections owed by a failed pass",
      op: { tool: "conntrack", flushes: owed },
    });
  } else {
    const flushes = flushesOf(steps[flushAt]);
    steps[flushAt] = {
      ...steps[flushAt],
      op: {
        tool: "conntrack",
        flushes: [...flushes, ...owed.filter((o) => !flushes.some((f) => sameFlush(f, o)))],
      },
    };
  }
  return { steps };
}

/**
 * `transaction` with the commits of a takeover that stopped before them (its
 * VIP left the interface meanwhile, cmd/system.ts `TakeoverAbandoned`) as its
 * last step, those it does not run already: the VIP is back, the holder role
 * is in force since then, so this pass sees no role change and would not
 * commit. Only for a pass that holds the VIPs again (the caller's check).
 */
export function withOwedCommits(
  transaction: Transaction,
  commits: readonly ConntrackdCommit[],
): Transaction {
  const running = transaction.steps.flatMap((s) => s.op.tool === "conntrackd" ? s.op.commits : []);
  const owed = commits.filter((c) => !running.some((r) => r.config === c.config));
  if (owed.length === 0) return transaction;
  return {
    steps: [...transaction.steps, {
      purpose: "commit the NAT state replicated from the old holder (owed by a stopped takeover)",
      op: { tool: "conntrackd", commits: owed },
    }],
  };
}

/** The backend's rule step (iptables-restore or nft -f): the roles change with it; -1: none. */
function rulesStep(transaction: Transaction): number {
  return transaction.steps.findIndex((s) => s.op.tool === "iptables" || s.op.tool === "nft");
}

/** The operations that still run after a failure once the roles changed. */
function runsAfterFailure(op: Operation): boolean {
  return op.tool === "conntrack" || op.tool === "conntrackd";
}

/**
 * The steps that still run after step `failedAt` failed: once the rule step
 * has changed the roles, the conntrack flush and the commit of replicated NAT
 * state after it. Skipping them would cost every synced connection of a VIP
 * taken over (its packets stay dropped as mid-stream, core/desired.ts) for a
 * step that has nothing to do with them (a stale route that was already gone,
 * a reverse-path filter), and the next pass sees no role change, so it would
 * never commit. A failure before or at the rule step changed no role: nothing
 * runs after it.
 */
export function stillRunAfter(transaction: Transaction, failedAt: number): number[] {
  if (!rolesChangedBefore(transaction, failedAt)) return [];
  return transaction.steps.flatMap((s, i) => i > failedAt && runsAfterFailure(s.op) ? [i] : []);
}

/** Whether the roles had changed (the rule step ran) when step `failedAt` failed. */
export function rolesChangedBefore(transaction: Transaction, failedAt: number): boolean {
  const rulesAt = rulesStep(transaction);
  return rulesAt >= 0 && failedAt > rulesAt;
}
