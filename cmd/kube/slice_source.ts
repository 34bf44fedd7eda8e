/**
 * The agent's Kubernetes source: the selection the controller published
 * (EgressSlices), the EgressVIPs and this node's own Node, nothing else. What
 * an agent holds grows with the pods that policies select, not with the
 * cluster. Changes trigger a pass at once; the caches survive API outages.
 *
 * A slice deleted while it still listed addresses was not deleted by the
 * controller (it empties a slice first): by hand, or by the garbage collector.
 * Its addresses stay in force until a live slice lists them again (the
 * controller republishes within a round) or HOLD_MS passes, so an agent never
 * reads such a deletion as "these pods left".
 *
 * A pod change rewrites one slice; the snapshot after it is the last one with
 * the addresses of that slice looked at again, and says so (a `PodDelta`), so
 * that the agent validates those addresses, not every selected pod
 * (core/snapshot_delta.ts). VIP and Node changes, slices held after a deletion
 * and fail-closed slices rebuild it in full.
 */
import { EGRESS_SLICES, EGRESS_VIPS, NODES } from "../../core/kube/resources.ts";
import {
  type CustomRecord,
  customRecord,
  type NodeRecord,
  nodeRecord,
  sameForSelection,
  sameRecord,
} from "../../core/kube/objects.ts";
import { EgressVIPStatus, vipAddresses } from "../../core/kube/api.ts";
import { readVip } from "../../core/kube/selection.ts";
import { type SliceRecord, sliceRecord } from "../../core/kube/slices.ts";
import { eligibleVips } from "../../core/kube/placement.ts";
import { compareIp } from "../../core/ip.ts";
import type { RawGuard, RawPod, RawVip } from "../../core/snapshot.ts";
import type { DeltaSnapshot } from "../../core/snapshot_delta.ts";
import type { Logger } from "../log.ts";
import type { KubeClient } from "./client.ts";
import { Reflector } from "./reflector.ts";
import { reflectorsProblem, waitForReflectors } from "./readiness.ts";

/** How long the addresses of a slice deleted by someone else stay in force at most. */
export const HOLD_MS = 120_000;

export interface SliceSourceOptions {
  /** This node's name: its Node object says which VIPs it may hold. */
  readonly nodeName?: string;
  /** VRRP over unicast: each VIP lists the addresses of the nodes that may hold it (its status.nodes). */
  readonly vrrpPeers?: boolean;
  readonly syncTimeoutMs?: number;
  readonly watchTimeoutSeconds?: number;
  readonly watchIdleMs?: number;
  /** Default HOLD_MS. */
  readonly holdMs?: number;
}

const nameOf = (o: unknown) => (o as { metadata?: { name?: string } })?.metadata?.name;

/** VIP records that agents read alike: selection's fields plus the published nodes. */
function sameVip(a: CustomRecord, b: CustomRecord): boolean {
  const nodes = (r: CustomRecord) =>
    JSON.stringify((r.status as { nodes?: unknown } | undefined)?.nodes);
  return sameForSelection(a, b) && nodes(a) === nodes(b);
}

/** A pod IP's entry as a slice steers it. */
function podEntry(slice: SliceRecord, podIp: string, vip: string): RawPod {
  return {
    origin: `EgressSlice ${slice.name}`,
    podIp,
    vip,
    ...(slice.egress.destinations ? { destinations: slice.egress.destinations } : {}),
    ...(slice.egress.excluded ? { excluded: slice.egress.excluded } : {}),
  };
}

/** Entries that steer alike, from the same slice (so that problems name the same origin). */
function sameEntry(a: RawPod | undefined, b: RawPod | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.origin === b.origin && a.vip === b.vip &&
    JSON.stringify(a.destinations) === JSON.stringify(b.destinations) &&
    JSON.stringify(a.excluded) === JSON.stringify(b.excluded);
}

export class SliceSource {
  readonly slices: Reflector<SliceRecord>;
  readonly vips: Reflector<CustomRecord>;
  readonly nodes: Reflector<NodeRecord>;
  /** Slices deleted with addresses in them: kept until republished or expired. */
  readonly #held = new Map<string, { slice: SliceRecord; until: number }>();
  readonly #listeners = new Set<() => void>();
  readonly #syncTimeoutMs: number;
  readonly #holdMs: number;
  #version = 0;
  #inputs?: { version: number; value: DeltaSnapshot };
  #holdTimer?: ReturnType<typeof setTimeout>;
  /** Pod IP → the live slices that steer it (not guard-only): a name, or the sorted names. */
  readonly #steering = new Map<string, string | string[]>();
  /** Pod IPs whose slices changed since the last snapshot. */
  readonly #changedIps = new Set<string>();
  /** The next snapshot is built in full (VIPs or the Node changed, slices held, guards). */
  #rebuild = true;
  /** The last snapshot, its entries by pod IP and the VIP addresses it used. */
  #last?: { raw: DeltaSnapshot; byIp: Map<string, RawPod>; vipIps: Map<string, string> };

  constructor(
    readonly client: KubeClient,
    readonly log: Logger,
    readonly options: SliceSourceOptions = {},
  ) {
    this.#syncTimeoutMs = options.syncTimeoutMs ?? 15_000;
    this.#holdMs = options.holdMs ?? HOLD_MS;
    const common = {
      key: nameOf,
      watchTimeoutSeconds: options.watchTimeoutSeconds,
      watchIdleMs: options.watchIdleMs,
      onChange: (significant: boolean) => {
        if (!significant) return;
        this.#version++;
        for (const listener of this.#listeners) listener();
      },
    };
    // Everything but the slices' addresses: the snapshot is rebuilt.
    const rebuilding = {
      ...common,
      onChange: (significant: boolean) => {
        if (significant) this.#rebuild = true;
        common.onChange(significant);
      },
    };
    this.slices = new Reflector<SliceRecord>(client, log, {
      ...common,
      resource: EGRESS_SLICES,
      reduce: sliceRecord,
      onItem: (name, before, after) => this.#sliceChanged(name, before, after),
    });
    this.vips = new Reflector<CustomRecord>(client, log, {
      ...rebuilding,
      resource: EGRESS_VIPS,
      reduce: customRecord,
      equivalent: sameVip,
    });
    // Only this node's object: a field selector on its name.
    this.nodes = new Reflector<NodeRecord>(client, log, {
      ...rebuilding,
      resource: NODES,
      reduce: nodeRecord,
      equivalent: sameRecord,
      fieldSelector: options.nodeName ? `metadata.name=${options.nodeName}` : undefined,
    });
  }

  get #reflectors(): Reflector<unknown>[] {
    return [this.slices, this.vips, this.nodes];
  }

  start(): this {
    for (const r of this.#reflectors) r.start();
    return this;
  }

  async stop(): Promise<void> {
    clearTimeout(this.#holdTimer);
    await Promise.all(this.#reflectors.map((r) => r.stop()));
  }

  get synced(): boolean {
    return this.#reflectors.every((r) => r.synced);
  }

  /** Addresses kept from slices deleted by someone else (for tests and logs). */
  get held(): number {
    let n = 0;
    for (const { slice } of this.#held.values()) n += slice.pods.length;
    return n;
  }

  #sliceChanged(name: string, before: SliceRecord | undefined, after: SliceRecord | undefined) {
    this.#follow(name, before, after);
    if (after && !after.deleting) {
      // Republished under its name: nothing to hold any more.
      if (this.#held.delete(name)) this.#rebuild = true;
      return;
    }
    if (before && before.pods.length > 0) {
      this.#rebuild = true;
      this.#held.set(name, { slice: before, until: Date.now() + this.#holdMs });
      this.log.warn("EgressSlice deleted with pods in it; keeping them until republished", {
        slice: name,
        pods: before.pods.length,
        hold_ms: this.#holdMs,
      });
      this.#armHoldTimer();
    }
  }

  /** Keeps #steering as the live slices are; notes the addresses they changed. */
  #follow(name: string, before: SliceRecord | undefined, after: SliceRecord | undefined) {
    if (before?.egress.failClosed || after?.egress.failClosed) this.#rebuild = true;
    const steers = (s: SliceRecord | undefined) =>
      s && !s.deleting && !s.egress.guardOnly ? s.pods : [];
    for (const ip of steers(before)) {
      const names = this.#steering.get(ip);
      if (names === name) this.#steering.delete(ip);
      else if (Array.isArray(names)) {
        const rest = names.filter((n) => n !== name);
        this.#steering.set(ip, rest.length === 1 ? rest[0] : rest);
      }
      this.#changedIps.add(ip);
    }
    for (const ip of steers(after)) {
      const names = this.#steering.get(ip);
      if (names === undefined) this.#steering.set(ip, name);
      else if (names !== name && !(Array.isArray(names) && names.includes(name))) {
        this.#steering.set(ip, [...(Array.isArray(names) ? names : [names]), name].sort());
      }
      this.#changedIps.add(ip);
    }
  }

  /** The entry of a pod IP: from the first live slice by name that steers it to a known VIP. */
  #entry(ip: string, vipIps: ReadonlyMap<string, string>): RawPod | undefined {
    const names = this.#steering.get(ip);
    for (const name of names === undefined ? [] : Array.isArray(names) ? names : [names]) {
      const slice = this.slices.store.get(name);
      const vip = slice && vipIps.get(slice.egress.vip);
      if (vip !== undefined) return podEntry(slice!, ip, vip);
    }
    return undefined;
  }

  #armHoldTimer() {
    clearTimeout(this.#holdTimer);
    const next = Math.min(...[...this.#held.values()].map((h) => h.until));
    if (!Number.isFinite(next)) return;
    this.#holdTimer = setTimeout(() => {
      this.#version++;
      for (const listener of this.#listeners) listener();
    }, Math.max(0, next - Date.now()) + 10);
  }

  problem(): string | undefined {
    return reflectorsProblem(this.#reflectors);
  }

  waitForSync(timeoutMs = this.#syncTimeoutMs): Promise<void> {
    return waitForReflectors(this.#reflectors, this.client.server, timeoutMs);
  }

  /** The agent's readInputs: the published selection as a RawSnapshot for this node. */
  readInputs = async (): Promise<DeltaSnapshot> => {
    await this.waitForSync();
    if (this.#inputs?.version !== this.#version) {
      this.#inputs = { version: this.#version, value: this.snapshot(Date.now()) };
    }
    return this.#inputs.value;
  };

  /**
   * The snapshot now (`now` decides which held slices expired): the last one with the changed
   * addresses looked at again (and a delta saying which), or built in full.
   */
  snapshot(now: number): DeltaSnapshot {
    const last = this.#last;
    if (this.#rebuild || last === undefined || this.#held.size > 0) return this.#full(now);
    const { byIp, vipIps } = last;
    const changed = new Map<string, RawPod[]>();
    for (const ip of this.#changedIps) {
      const before = byIp.get(ip);
      const entry = this.#entry(ip, vipIps);
      if (entry) byIp.set(ip, entry);
      else byIp.delete(ip);
      if (!sameEntry(before, entry)) changed.set(ip, entry ? [entry] : []);
    }
    this.#changedIps.clear();
    const raw: DeltaSnapshot = {
      ...last.raw,
      pods: [...byIp.values()],
      version: {},
      delta: { since: last.raw.version!, pods: changed },
    };
    this.#last = { raw, byIp, vipIps };
    return raw;
  }

  /** Builds the snapshot from every slice, VIP and held slice. */
  #full(now: number): DeltaSnapshot {
    this.#rebuild = false;
    this.#changedIps.clear();
    const node = this.options.nodeName ? this.nodes.store.get(this.options.nodeName) : undefined;
    const eligible = node ? eligibleVips(this.vips.store.values(), node) : undefined;
    const vipIps = new Map<string, string>();
    const vips: RawVip[] = [];
    for (const record of this.vips.store.values()) {
      const info = readVip(record);
      if (!info.spec || info.routeId === undefined) continue;
      vipIps.set(info.name, info.spec.ip);
      const status = EgressVIPStatus.safeParse(record.status ?? {});
      const selected = status.success ? status.data.nodes : undefined;
      // Peers: the selected nodes that may hold it; the guard trusts the cordoned ones too.
      const peers = (selected ?? []).filter((n) => !n.cordoned).map((n) => n.ip)
        .sort(compareIp);
      const nodes = (selected ?? []).map((n) => n.ip).sort(compareIp);
      // VRRP by unicast needs the peers: until the controller has published them (an upgrade
      // from a version without status.nodes), this node does not hold the VIP rather than
      // advertise to nobody and become a second holder.
      const waitingForPeers = this.options.vrrpPeers === true && selected === undefined;
      // A dual-stack VIP: one entry per family, one route id (one VRRP instance).
      for (const ip of vipAddresses(info.spec)) {
        vips.push({
          origin: `EgressVIP ${info.name}`,
          ip,
          routeId: info.routeId,
          ...(eligible ? { eligible: eligible.has(ip) && !waitingForPeers } : {}),
          ...(this.options.vrrpPeers && eligible ? { peers } : {}),
          ...(eligible && selected ? { nodes } : {}),
        });
      }
    }
    const byIp = new Map<string, RawPod>();
    const guards = new Map<string, RawGuard>();
    const add = (slice: SliceRecord) => {
      if (slice.egress.failClosed) {
        for (const podIp of slice.pods) {
          if (!guards.has(podIp)) guards.set(podIp, { origin: `EgressSlice ${slice.name}`, podIp });
        }
      }
      if (slice.egress.guardOnly) return;
      const vip = vipIps.get(slice.egress.vip);
      // A slice may arrive before its VIP, or name one not ready: nothing to steer yet.
      if (vip === undefined) return;
      for (const podIp of slice.pods) {
        // An address in two slices (a move under way): the first by name, never both.
        if (byIp.has(podIp)) continue;
        byIp.set(podIp, podEntry(slice, podIp, vip));
      }
    };
    const live = [...this.slices.store.values()].filter((s) => !s.deleting)
      .sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const slice of live) add(slice);
    for (const [name, { slice, until }] of this.#held) {
      const republished = slice.pods.every((ip) =>
        slice.egress.guardOnly ? guards.has(ip) : byIp.has(ip)
      );
      if (republished || until <= now) {
        this.#held.delete(name);
        continue;
      }
      add(slice);
    }
    const raw: DeltaSnapshot = {
      vips,
      pods: [...byIp.values()],
      problems: [],
      ...(guards.size > 0 ? { failClosed: [...guards.values()] } : {}),
      version: {},
    };
    this.#last = { raw, byIp, vipIps };
    return raw;
  }

  watchInputs = (onChange: () => void): { stop(): void } => {
    this.#listeners.add(onChange);
    return { stop: () => this.#listeners.delete(onChange) };
  };
}
