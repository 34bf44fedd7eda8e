/**
 * Per-VIP traffic counters for metrics, from the kernel's own counters: the
 * pods set's per-entry packets/bytes (traffic of mapped pods marked on this
 * node) and our nat rules' counters (new connections SNATed or passed on).
 *
 * Kernel counters restart from zero when an entry is re-created or our chain
 * is rewritten, and a removed pod takes its count with it; a Prometheus
 * counter must never go down. So each scrape reads the kernel, and the
 * accumulator adds what each entry grew since the previous read to the total
 * of the VIP and the role this node had for it at the time of the read.
 */
import { type NatSaves, nodeStatus } from "./status.ts";
import type { LiveState } from "./plan.ts";

/** One kernel counter: its identity, the total it feeds, and its current value. */
export interface Sample {
  readonly key: string;
  readonly group: string;
  readonly value: number;
}

/**
 * Monotonic totals per group from counters that may reset or vanish. The
 * first update only takes a baseline (totals start at zero with the process,
 * as every counter of a fresh exporter); after that a counter that went down
 * was reset, so its whole value is new.
 */
export class CounterAccumulator {
  readonly #last = new Map<string, number>();
  readonly #totals = new Map<string, number>();
  #primed = false;

  update(samples: Iterable<Sample>): void {
    const seen = new Map<string, number>();
    for (const { key, group, value } of samples) {
      seen.set(key, value);
      const before = this.#last.get(key);
      const delta = !this.#primed
        ? 0
        : before === undefined || value < before
        ? value
        : value - before;
      this.#totals.set(group, (this.#totals.get(group) ?? 0) + delta);
    }
    // Entries gone from the kernel are forgotten; their totals stay.
    this.#last.clear();
    for (const [key, value] of seen) this.#last.set(key, value);
    this.#primed = true;
  }

  /** Group → total since the first update. */
  get totals(): ReadonlyMap<string, number> {
    return this.#totals;
  }
}

export type Role = "holder" | "forwarder";

/** A VIP as our rules program it on this node right now. */
export interface VipFigure {
  readonly vip: string;
  readonly role: Role;
  /** The exact address is on the interface. */
  readonly held: boolean;
  /** Mapped pods (pods set entries) using the VIP. */
  readonly pods: number;
}

/** Kernel objects of ours, counted as read back (not as meant to be written). */
export interface Programmed {
  readonly podSetEntries: number;
  readonly nosteerSetEntries: number;
  readonly natRules: number;
  readonly ipRules: number;
  readonly routes: number;
}

export interface KernelFigures {
  readonly vips: readonly VipFigure[];
  readonly programmed: Programmed;
  /** Per pod entry: packets and bytes, grouped "<vip>|<role>". */
  readonly packets: readonly Sample[];
  readonly bytes: readonly Sample[];
  /** Per nat rule: new connections, grouped "<vip>|<role>". */
  readonly connections: readonly Sample[];
}

/** The group name of a VIP in a role. */
export function groupOf(vip: string, role: Role): string {
  return `${vip}|${role}`;
}

/** Reads the figures out of a live state read with counters. */
export function kernelFigures(
  live: LiveState,
  natSaves: NatSaves,
  iface: string,
): KernelFigures {
  const status = nodeStatus(live, natSaves, iface);
  const roleOf = new Map(status.vips.map((v) => [v.vip, v.role]));
  const packets: Sample[] = [];
  const bytes: Sample[] = [];
  for (const m of status.mappings) {
    const group = groupOf(m.vip, roleOf.get(m.vip)!);
    const key = `${m.podIp}>${m.vip}`;
    packets.push({ key, group, value: m.packets });
    bytes.push({ key, group, value: m.bytes });
  }
  return {
    vips: status.vips.map((v) => ({ vip: v.vip, role: v.role, held: v.held, pods: v.pods })),
    // The nftables backend's pods map, nosteer set and roles map count as the same objects.
    programmed: live.nft.present
      ? {
        podSetEntries: live.nft.pods.size,
        nosteerSetEntries: live.nft.nosteer.size,
        natRules: live.nft.roles.size,
        ipRules: live.routes.rules.length,
        routes: live.routes.routes.length,
      }
      : {
        podSetEntries: live.sets.pods.size,
        nosteerSetEntries: live.sets.nosteer.size,
        natRules: live.iptables.nat.rules.length,
        ipRules: live.routes.rules.length,
        routes: live.routes.routes.length,
      },
    packets,
    bytes,
    connections: status.vips.map((v) => ({
      key: groupOf(v.vip, v.role),
      group: groupOf(v.vip, v.role),
      value: v.connections,
    })),
  };
}
