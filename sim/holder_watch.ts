/**
 * Who held each VIP, and when, from the kernel's own address notifications
 * on every node (`ip -ts -o monitor address` in each node's namespace), not
 * from polling: a split brain of a few milliseconds is seen as well as one
 * of minutes. `holderPeriods` (pure) turns the events into the periods when
 * two or more nodes held a VIP (never allowed beyond a VRRP handover) and
 * when none did (an egress pause).
 */
import type { Cluster, SimNode } from "./cluster.ts";
import { eachLine } from "./children.ts";
import { vipHolders } from "./vip.ts";

/** An address appearing on or leaving a node's interface. */
export interface HolderEvent {
  /** ms since the epoch (the monitor's timestamp). */
  readonly t: number;
  readonly node: string;
  readonly vip: string;
  readonly held: boolean;
}

/** A period of a VIP's history. */
export interface HolderPeriod {
  readonly vip: string;
  readonly from: number;
  readonly to: number;
  /** Who held it meanwhile (several: a split brain; none: nobody answered for it). */
  readonly nodes: readonly string[];
}

/** "[2026-12-01T23:06:35.630989] Deleted 3: eth0    inet 192.0.2.50/32 scope global ..." */
export function parseMonitorLine(
  line: string,
  node: string,
  vips: readonly string[],
): HolderEvent | undefined {
  const match =
    /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?\]\s+(Deleted\s+)?\d+:\s+\S+\s+inet\s+([\d.]+)\//
      .exec(line);
  if (!match || !vips.includes(match[4])) return undefined;
  // ip prints local time without a zone; Date.parse reads it as local time too.
  const t = Date.parse(match[1]) + Number(`0.${match[2] ?? "0"}`) * 1000;
  return { t, node, vip: match[4], held: match[3] === undefined };
}

/**
 * A VIP's split brains and outages between `from` and `to`, given who held
 * it at `from` and the events since (in any order; repeated events are
 * harmless).
 */
export function holderPeriods(
  vip: string,
  initial: readonly string[],
  events: readonly HolderEvent[],
  window: { from: number; to: number },
): { splits: HolderPeriod[]; outages: HolderPeriod[] } {
  const holders = new Set(initial);
  const splits: HolderPeriod[] = [];
  const outages: HolderPeriod[] = [];
  let since = window.from;
  const close = (until: number) => {
    if (holders.size !== 1 && until > since) {
      (holders.size === 0 ? outages : splits).push({
        vip,
        from: since,
        to: until,
        nodes: [...holders].sort(),
      });
    }
  };
  const mine = events.filter((e) => e.vip === vip && e.t >= window.from && e.t <= window.to)
    .sort((a, b) => a.t - b.t);
  for (const event of mine) {
    if (holders.has(event.node) === event.held) continue; // a repeat: nothing changed
    close(event.t);
    if (event.held) holders.add(event.node);
    else holders.delete(event.node);
    since = event.t;
  }
  close(window.to);
  return { splits, outages };
}

/** Who held a VIP at `t`, from who held it at the start and the events until `t`. */
export function holdersAt(
  vip: string,
  initial: readonly string[],
  events: readonly HolderEvent[],
  t: number,
): string[] {
  const holders = new Set(initial);
  for (const e of events.filter((e) => e.vip === vip && e.t < t).sort((a, b) => a.t - b.t)) {
    if (e.held) holders.add(e.node);
    else holders.delete(e.node);
  }
  return [...holders].sort();
}

/** A running watch over every node of a cluster. */
export interface HolderWatch {
  /** Stops the monitors; the history from the start of the watch until now. */
  stop(): Promise<HolderHistory>;
}

export interface HolderHistory {
  readonly from: number;
  readonly to: number;
  readonly initial: ReadonlyMap<string, readonly string[]>;
  readonly events: readonly HolderEvent[];
  /** Split brains and outages of a VIP over the watch (or the part of it from `since`). */
  periods(vip: string, since?: number): { splits: HolderPeriod[]; outages: HolderPeriod[] };
}

/** Starts watching the VIPs' addresses on every node of the cluster. */
export async function watchHolders(
  cluster: Cluster,
  vips: readonly string[],
): Promise<HolderWatch> {
  const events: HolderEvent[] = [];
  const monitors = cluster.nodes.map((node: SimNode) => {
    const child = node.ns.spawn(["ip", "-ts", "-o", "monitor", "address"], { stdout: "piped" });
    const done = eachLine(child.stdout!, (line) => {
      const event = parseMonitorLine(line, node.name, vips);
      if (event) events.push(event);
    }).catch(() => {});
    return { child, done };
  });
  // ip monitor prints nothing when it is ready: give it a moment before the snapshot.
  await new Promise((r) => setTimeout(r, 300));
  const from = Date.now();
  const snapshot = await vipHolders(cluster.nodes, vips, cluster.spec.iface);
  const initial = new Map([...snapshot].map(([vip, nodes]) => [vip, nodes.map((n) => n.name)]));
  return {
    async stop() {
      // Let the last notifications through before the monitors go.
      await new Promise((r) => setTimeout(r, 200));
      const to = Date.now();
      for (const { child, done } of monitors) {
        try {
          child.kill("SIGTERM");
        } catch {
          // Already gone.
        }
        await child.status;
        await done;
      }
      return {
        from,
        to,
        initial,
        events,
        periods: (vip, since = from) =>
          holderPeriods(vip, holdersAt(vip, initial.get(vip) ?? [], events, since), events, {
            from: since,
            to,
          }),
      };
    },
  };
}
