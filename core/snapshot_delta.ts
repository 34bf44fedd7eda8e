/**
 * Validation that follows a source pod by pod. A source that knows what
 * changed since its last snapshot (the EgressSlice source: one slice rewrite
 * touches a few addresses) hands the agent a snapshot with a `PodDelta`: the
 * pod IPs whose entries changed and their entries now. Validating it costs the
 * changed entries, not every selected pod: each pod IP's entries are validated
 * against the VIPs on their own (`validateSnapshot` of the VIPs and those
 * entries), and the result is spliced into the last snapshot's sorted list.
 *
 * That is exact because every rule that spans entries is either about the VIPs
 * (the same objects: the delta requires it) or about entries of one pod IP (one
 * IP, one egress). What the delta path does not follow it hands to the full
 * validation: another base, other VIPs or settings, any pod problem before or
 * now (problems are kept per snapshot, not per pod), fail-closed pods next to
 * destination-scoped mappings that change, and keys that are not canonical
 * addresses. Either way the result equals `validateSnapshot`'s (the property
 * test in tests/snapshot_delta.test.ts holds it to that).
 */
import { type Address, canonicalIp, compareAddress, parseIp } from "./ip.ts";
import type { DatapathConfig } from "./schema.ts";
import {
  type PodMapping,
  type Problem,
  type RawPod,
  type RawSnapshot,
  type Snapshot,
  validateSnapshot,
  ValidationMemo,
} from "./snapshot.ts";

/** What changed since the snapshot `since` names: every other pod entry is that one's. */
export interface PodDelta {
  /**
   * The `version` of the snapshot this one was derived from (a token, not the snapshot: a
   * chain of snapshots, each holding the one before, would keep them all).
   */
  readonly since: object;
  /**
   * Pod IP (canonical) → its entries now (none: it has no entry any more), for
   * every pod IP whose entries differ from base's.
   */
  readonly pods: ReadonlyMap<string, readonly RawPod[]>;
}

/** A raw snapshot that may say what changed since an earlier one. */
export interface DeltaSnapshot extends RawSnapshot {
  /** Names this snapshot for the delta of the next one (any object, compared by identity). */
  readonly version?: object;
  readonly delta?: PodDelta;
}

type Settings = Pick<DatapathConfig, "podCidrs" | "serviceCidrs">;

interface Entry {
  readonly address: Address;
  readonly mapping: PodMapping;
}

interface State {
  readonly raw: DeltaSnapshot;
  readonly config: Settings;
  readonly snapshot: Snapshot;
  readonly problems: readonly Problem[];
  /** Kept mappings sorted by address, as snapshot.pods. */
  readonly sorted: Entry[];
  /** Kept mappings with destination ranges (they change what fails closed). */
  scoped: number;
}

const isScoped = (p: { destinations?: unknown; excluded?: unknown }) =>
  p.destinations !== undefined || p.excluded !== undefined;

/** The same source-level problems: the same list, or none in both. */
const sameProblems = (a: readonly Problem[], b: readonly Problem[]) =>
  a === b || (a.length === 0 && b.length === 0);

/** Index of the first entry whose address is not below `address`. */
function lowerBound(sorted: readonly Entry[], address: Address): number {
  let low = 0;
  let high = sorted.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (compareAddress(sorted[mid].address, address) < 0) low = mid + 1;
    else high = mid;
  }
  return low;
}

/** The agent's validation: incremental where the source says what changed, full otherwise. */
export class DeltaValidation {
  readonly #memo = new ValidationMemo();
  #state?: State;
  /** How the last call validated (tests, logs). */
  last: "full" | "delta" = "full";

  validate(raw: DeltaSnapshot, config: Settings): { snapshot: Snapshot; problems: Problem[] } {
    const delta = this.#state ? this.#delta(raw, config, this.#state) : undefined;
    if (delta) {
      this.last = "delta";
      return delta;
    }
    this.last = "full";
    const result = validateSnapshot(raw, config, this.#memo);
    // Followed pod by pod from here only while no pod entry has a problem.
    const vipProblems = validateSnapshot({ ...raw, pods: [] }, config).problems.length;
    this.#state = result.problems.length === vipProblems
      ? {
        raw,
        config,
        snapshot: result.snapshot,
        problems: result.problems,
        sorted: result.snapshot.pods.map((mapping) => ({
          address: parseIp(mapping.podIp)!,
          mapping,
        })),
        scoped: result.snapshot.pods.filter(isScoped).length,
      }
      : undefined;
    return result;
  }

  #delta(
    raw: DeltaSnapshot,
    config: Settings,
    state: State,
  ): { snapshot: Snapshot; problems: Problem[] } | undefined {
    const delta = raw.delta;
    if (
      delta === undefined || state.raw.version === undefined ||
      delta.since !== state.raw.version || config !== state.config ||
      raw.vips !== state.raw.vips || !sameProblems(raw.problems, state.raw.problems) ||
      raw.failClosed !== state.raw.failClosed
    ) return undefined;
    // Fail-closed pods exclude the destination-scoped mappings in force: followed here only
    // while there are none (what fails closed then stays what it was).
    const guarded = (raw.failClosed?.length ?? 0) > 0;
    if (guarded && state.scoped > 0) return undefined;
    const entries: RawPod[] = [];
    for (const [ip, list] of delta.pods) {
      if (canonicalIp(ip) !== ip) return undefined;
      for (const entry of list) {
        if (entry.podIp !== ip) return undefined;
        if (guarded && isScoped(entry)) return undefined;
        entries.push(entry);
      }
    }
    // The changed pod IPs alone, against the same VIPs: what they keep, and no problem.
    const changed = validateSnapshot({ ...raw, pods: entries, failClosed: undefined }, config);
    if (changed.problems.length !== state.problems.length) return undefined;
    const sorted = state.sorted;
    let scoped = state.scoped;
    for (const ip of delta.pods.keys()) {
      const address = parseIp(ip)!;
      const at = lowerBound(sorted, address);
      if (at < sorted.length && compareAddress(sorted[at].address, address) === 0) {
        if (isScoped(sorted[at].mapping)) scoped--;
        sorted.splice(at, 1);
      }
    }
    for (const mapping of changed.snapshot.pods) {
      const address = parseIp(mapping.podIp)!;
      sorted.splice(lowerBound(sorted, address), 0, { address, mapping });
      if (isScoped(mapping)) scoped++;
    }
    const pods = sorted.map((e) => e.mapping);
    const failClosed = state.snapshot.failClosed;
    const snapshot: Snapshot = failClosed ? { vips: state.snapshot.vips, pods, failClosed } : {
      vips: state.snapshot.vips,
      pods,
    };
    this.#state = { raw, config, snapshot, problems: state.problems, sorted, scoped };
    return { snapshot, problems: [...state.problems] };
  }
}
