/**
 * The guard on a node (core/guard.ts decides what the table holds): after
 * every pass the agent hands it the VIPs and which of them this node holds;
 * it learns the eligible nodes' MACs, writes the `netdev kube-egress-guard`
 * table in one `nft -f` when it differs, and reads the table back every
 * `pollMs` for what it refused. Each refusal is reported once per reading
 * (log, metrics, Events through the observers), and a foreign claim on a VIP
 * this node holds is answered at once with a gratuitous ARP of our own (RFC
 * 5227's defence), at most one per VIP per `defendIntervalMs`, so that two
 * defenders can never storm the LAN: the last word after a burst is ours,
 * since a defence held back by the bound is sent when the bound allows.
 */
import type { NftOperation } from "../core/operation.ts";
import { render } from "../core/render.ts";
import { systemExec, which } from "./exec.ts";
import {
  deleteGuard,
  GUARD_FAMILY,
  GUARD_TABLE,
  type GuardAlert,
  guardAlerts,
  type GuardIntent,
  guardIntent,
  type GuardVip,
  type LiveGuard,
  parseGuard,
  planGuard,
} from "../core/guard.ts";
import { parseArpReplies } from "../core/doctor.ts";
import { markFor } from "../core/marks.ts";
import { vrrpRouterId } from "../core/keepalived.ts";
import type { Snapshot } from "../core/snapshot.ts";
import { errorMessage } from "../core/errors.ts";
import type { Logger } from "./log.ts";

/** Told what the guard refused and did (metrics, Kubernetes Events). */
export interface GuardObserver {
  /** Something the guard refused since its last reading. */
  guardAlert?(alert: GuardAlert): void;
  /** This node re-announced a VIP it holds after a foreign claim. */
  guardDefence?(vip: string): void;
  /** The table's counters after a reading (packets refused so far). */
  guardCounters?(counters: Readonly<Record<string, number>>): void;
}

export interface GuardOptions {
  readonly iface: string;
  readonly mask: number;
  /** Our keepalived places the VIPs: filter adverts for its router ids. */
  readonly vrrp: boolean;
  readonly vridOffset: number;
  /**
   * The nodes' LAN addresses for VIPs whose source knows none (the files
   * source: `--node-addresses`, else `--vrrp-unicast-peers`); absent: such VIPs
   * are watched (conflicts on the holder) but not enforced.
   */
  readonly nodes?: readonly string[];
  readonly log: Logger;
  readonly observers?: readonly GuardObserver[];
  /** How often the table is read for refusals (ms). */
  readonly pollMs?: number;
  /** At most one defence per VIP per this many ms. */
  readonly defendIntervalMs?: number;
}

type Result = { code: number; stdout: string; stderr: string };

/** Through the one runner (cmd/exec.ts); a tool that is missing or too slow reads as a failure. */
async function run(args: string[], stdin?: string, timeoutMs = 10_000): Promise<Result> {
  try {
    return await systemExec(args, { timeoutMs, ...(stdin === undefined ? {} : { stdin }) });
  } catch (error) {
    return {
      code: 127,
      stdout: "",
      stderr: error instanceof Error ? error.message : String(error),
    };
  }
}

/** Reads the guard table; undefined when it does not exist. */
export async function readGuard(): Promise<LiveGuard | undefined> {
  const r = await run(["nft", "-j", "list", "table", GUARD_FAMILY, GUARD_TABLE]);
  if (r.code !== 0) {
    if (/No such file|does not exist/i.test(r.stderr)) return undefined;
    throw new Error(`nft list table ${GUARD_FAMILY} ${GUARD_TABLE} failed: ${r.stderr.trim()}`);
  }
  return parseGuard(r.stdout);
}

/** The `nft -f` input of the guard's operations. */
function payload(op: NftOperation): string {
  return render(op).lines.join("\n") + "\n";
}

/** Removes the guard table if it is there (`delete`). */
export async function deleteGuardTable(): Promise<boolean> {
  if (which("nft") === undefined) return false;
  const live = await readGuard().catch(() => undefined);
  if (!live) return false;
  const r = await run(["nft", "-f", "-"], payload(deleteGuard()));
  if (r.code !== 0) throw new Error(`nft: removing the guard table failed: ${r.stderr.trim()}`);
  return true;
}

interface LinkFacts {
  readonly mac: string;
  readonly addresses: readonly string[];
  readonly neighbours: ReadonlyMap<string, string>;
}

async function linkFacts(iface: string): Promise<LinkFacts> {
  // Two processes: `ip -batch` leaves addr_info out of `address show`.
  const [addr, neigh] = await Promise.all([
    run(["ip", "-j", "address", "show", "dev", iface]),
    run(["ip", "-j", "neigh", "show", "dev", iface]),
  ]);
  for (const r of [addr, neigh]) {
    if (r.code !== 0) throw new Error(`ip: reading ${iface} failed: ${r.stderr.trim()}`);
  }
  const links = JSON.parse(addr.stdout) as {
    address?: string;
    addr_info?: { family: string; local: string }[];
  }[];
  const neighbours = new Map<string, string>();
  for (const n of JSON.parse(neigh.stdout || "[]") as { dst: string; lladdr?: string }[]) {
    if (n.lladdr) neighbours.set(n.dst, n.lladdr.toLowerCase());
  }
  return {
    mac: String(links[0]?.address ?? "").toLowerCase(),
    addresses: links.flatMap((l) => l.addr_info ?? []).filter((a) => a.family === "inet")
      .map((a) => a.local),
    neighbours,
  };
}

/** Tells Habets' arping (Debian's `arping`) from iputils' (their flags differ). */
let habets: boolean | undefined;
async function isHabets(): Promise<boolean> {
  if (habets === undefined) {
    const help = await run(["arping", "--help"]);
    habets = /Habets/i.test(help.stdout + help.stderr);
  }
  return habets;
}

/** One gratuitous ARP for `vip` (sender and target the VIP), as keepalived sends on takeover. */
async function announce(iface: string, vip: string): Promise<void> {
  const args = (await isHabets())
    ? ["arping", "-q", "-U", "-c", "1", "-W", "0.01", "-i", iface, "-S", vip, vip]
    : ["arping", "-q", "-U", "-c", "1", "-I", iface, "-s", vip, vip];
  const r = await run(args, undefined, 5_000);
  // Habets' arping exits 1 when nobody answers, which a gratuitous ARP never expects.
  if (r.code > 1) throw new Error(`arping -U ${vip} failed: ${r.stderr.trim()}`);
}

/** Asks `address` for its MAC (one ARP request); undefined when nobody answered. */
async function resolve(iface: string, address: string): Promise<string | undefined> {
  const args = (await isHabets())
    ? ["arping", "-c", "1", "-w", "1", "-i", iface, address]
    : ["arping", "-c", "1", "-w", "1", "-I", iface, address];
  const r = await run(args, undefined, 5_000);
  const macs = parseArpReplies(r.stdout);
  // Two MACs for one node address: trust neither.
  return macs.length === 1 ? macs[0] : undefined;
}

/** An offender that keeps sending is logged again after this long (ms). */
const ALERT_LOG_INTERVAL_MS = 60_000;

/** How long an unanswered node address waits before it is asked again (ms). */
const RESOLVE_RETRY_MS = 2_000;

/** The guard of one node. */
export class Guard {
  readonly #options: GuardOptions;
  readonly #pollMs: number;
  readonly #defendMs: number;
  /** Node address → MAC, as first learned (a later different answer is not taken). */
  readonly #macs = new Map<string, string>();
  readonly #asked = new Map<string, number>();
  #vips: GuardVip[] = [];
  /** The VIPs (address, route id, nodes) the table was last written for. */
  #key: string | undefined;
  #held = new Set<string>();
  #intent: GuardIntent | undefined;
  #live: LiveGuard | undefined;
  #lastDefence = new Map<string, number>();
  #pendingDefence = new Map<string, ReturnType<typeof setTimeout>>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #polling = false;
  #again = false;
  #trace: { kill(): void } | undefined;
  /** When each (kind, VIP, offender) was last logged, and what it refused since. */
  readonly #logged = new Map<string, { at: number; packets: number }>();
  #stopped = false;
  #lastError: string | undefined;
  /** Everything refused so far, per kind (for status and tests). */
  readonly alerts: GuardAlert[] = [];
  defences = 0;

  constructor(options: GuardOptions) {
    this.#options = options;
    this.#pollMs = options.pollMs ?? 1000;
    this.#defendMs = options.defendIntervalMs ?? 250;
  }

  /** What the table holds now (undefined before the first update). */
  get intent(): GuardIntent | undefined {
    return this.#intent;
  }

  /**
   * After a pass: the VIPs and the ones this node holds. Writes the table
   * when it differs; never throws (a failed write is logged and tried again
   * at the next pass).
   */
  async update(snapshot: Snapshot, held: readonly string[], trigger = "resync"): Promise<void> {
    const { iface, mask, vridOffset } = this.#options;
    this.#held = new Set(held);
    // The table does not depend on roles: a VIP moving (the pass that must be
    // quick) costs nothing here. Resyncs and changed inputs check it again.
    // Pod changes (the frequent events) do not concern it either: only the VIPs do.
    const key = JSON.stringify(snapshot.vips.map((v) => [v.ip, v.routeId, v.nodes]));
    if (
      key === this.#key && trigger !== "resync" && this.#lastError === undefined &&
      this.#intent?.unresolved.length === 0
    ) return;
    this.#key = key;
    try {
      const facts = await linkFacts(iface);
      this.#vips = snapshot.vips.map((v) => {
        const nodes = v.nodes ?? this.#options.nodes;
        return {
          ip: v.ip,
          vrid: vrrpRouterId(v.routeId, vridOffset),
          mark: markFor(v.routeId, mask),
          ...(nodes ? { nodes } : {}),
        };
      });
      for (const vip of this.#vips) {
        for (const node of vip.nodes ?? []) {
          if (facts.addresses.includes(node)) this.#macs.set(node, facts.mac);
          else if (!this.#macs.has(node) && facts.neighbours.has(node)) {
            this.#macs.set(node, facts.neighbours.get(node)!);
          }
        }
      }
      const live = await readGuard();
      // Before the first write, wait for the nodes' answers (at most ~1 s): a
      // table written without them would refuse the nodes themselves.
      if (live === undefined) {
        const missing = [...new Set(this.#vips.flatMap((v) => v.nodes ?? []))]
          .filter((n) => !this.#macs.has(n));
        await Promise.all(missing.map(async (address) => {
          this.#asked.set(address, Date.now());
          const mac = await resolve(iface, address).catch(() => undefined);
          if (mac !== undefined && !this.#macs.has(address)) this.#macs.set(address, mac);
        }));
      }
      const intent = guardIntent({
        iface,
        ownMac: facts.mac,
        mask,
        vips: this.#vips,
        macs: this.#macs,
        vrrp: this.#options.vrrp,
      });
      this.#intent = intent;
      const op = planGuard(intent, live);
      if (op.ops.length > 0) {
        const r = await run(["nft", "-f", "-"], payload(op));
        if (r.code !== 0) throw new Error(`nft -f (guard table) failed: ${r.stderr.trim()}`);
        this.#options.log.info("guard table written", {
          guarded: intent.guarded.length,
          watched: intent.watched.length,
          node_macs: new Set(intent.claims.map((c) => c.split(" . ")[1])).size,
          unresolved: intent.unresolved.join(",") || undefined,
        });
      }
      this.#resolveMissing(intent.unresolved);
      if (this.#lastError !== undefined) this.#options.log.info("guard works again");
      this.#lastError = undefined;
    } catch (error) {
      const message = errorMessage(error);
      if (message !== this.#lastError) {
        this.#options.log.error("guard update failed", { error: message });
      }
      this.#lastError = message;
    }
  }

  /** Asks the node addresses without a known MAC, in the background; a found one rewrites the table. */
  #resolveMissing(addresses: readonly string[]) {
    const now = Date.now();
    for (const address of addresses) {
      if (now - (this.#asked.get(address) ?? -Infinity) < RESOLVE_RETRY_MS) continue;
      this.#asked.set(address, now);
      void resolve(this.#options.iface, address).then(async (mac) => {
        if (mac === undefined || this.#stopped || this.#macs.has(address)) return;
        this.#macs.set(address, mac);
        this.#options.log.info("node MAC learned", { address, mac });
        if (this.#intent) await this.#rewrite();
      }).catch(() => {});
    }
  }

  async #rewrite() {
    const facts = await linkFacts(this.#options.iface);
    const intent = guardIntent({
      iface: this.#options.iface,
      ownMac: facts.mac,
      mask: this.#options.mask,
      vips: this.#vips,
      macs: this.#macs,
      vrrp: this.#options.vrrp,
    });
    this.#intent = intent;
    const op = planGuard(intent, await readGuard());
    if (op.ops.length > 0) await run(["nft", "-f", "-"], payload(op));
  }

  /** Removes the table (`delete`); true when there was one. */
  delete(): Promise<boolean> {
    this.stop();
    return deleteGuardTable();
  }

  /**
   * Starts reading the table every pollMs, and at once whenever a foreign
   * claim is traced (`nft monitor trace`: the claim rule sets nftrace), so the
   * holder's defence does not wait for the next reading.
   */
  start(): this {
    this.#timer = setInterval(() => this.#wake(), this.#pollMs);
    void this.#traceLoop();
    return this;
  }

  /** A reading now; one more after it when woken meanwhile (wake-ups coalesce). */
  #wake() {
    if (this.#polling) {
      this.#again = true;
      return;
    }
    void this.poll().then(() => {
      if (this.#again) {
        this.#again = false;
        this.#wake();
      }
    });
  }

  async #traceLoop() {
    while (!this.#stopped) {
      const decoder = new TextDecoder();
      try {
        const child = new Deno.Command("nft", {
          args: ["monitor", "trace"],
          stdin: "null",
          stdout: "piped",
          stderr: "null",
        }).spawn();
        this.#trace = child;
        for await (const chunk of child.stdout) {
          if (decoder.decode(chunk).includes(GUARD_TABLE)) this.#wake();
        }
        await child.status;
      } catch {
        // Killed or failed: restarted below; the timer keeps reading meanwhile.
      }
      if (this.#stopped) break;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  /** Stops polling and any defence still owed. The table stays (traffic stays guarded). */
  stop() {
    this.#stopped = true;
    clearInterval(this.#timer);
    try {
      this.#trace?.kill();
    } catch {
      // Already gone.
    }
    for (const t of this.#pendingDefence.values()) clearTimeout(t);
    this.#pendingDefence.clear();
  }

  /** One reading: reports what was refused since the last one and defends held VIPs. */
  async poll(): Promise<GuardAlert[]> {
    if (this.#polling || this.#stopped || this.#intent === undefined) return [];
    this.#polling = true;
    try {
      const live = await readGuard();
      if (!live) return [];
      const byMark = new Map(this.#vips.map((v) => [v.mark, v.ip]));
      const byVrid = new Map(this.#vips.map((v) => [v.vrid, v.ip]));
      const alerts = guardAlerts(this.#live, live, {
        mark: (m) => byMark.get(m),
        vrid: (v) => byVrid.get(v),
      });
      this.#live = live;
      for (const o of this.#options.observers ?? []) o.guardCounters?.(live.counters);
      for (const alert of alerts) this.#report(alert);
      return alerts;
    } catch (error) {
      const message = errorMessage(error);
      if (message !== this.#lastError) {
        this.#options.log.warn("guard read failed", { error: message });
      }
      this.#lastError = message;
      return [];
    } finally {
      this.#polling = false;
    }
  }

  /**
   * Metrics and observers hear of every reading that found more; the log and
   * `alerts` only of the first sighting of an offender, then once per
   * ALERT_LOG_INTERVAL_MS with what it kept sending (a rogue sending ten
   * packets a second must not write ten lines a second).
   */
  #report(alert: GuardAlert) {
    const held = this.#held.has(alert.vip);
    // Without a node list another node's claim looks foreign too (a takeover): a forwarder
    // says nothing, and the holder reports but does not defend (it might fight a node).
    const guarded = this.#intent?.guarded.includes(alert.vip) ?? false;
    if (alert.kind === "claim" && !guarded && !held) return;
    const defended = alert.kind === "claim" && held && guarded;
    for (const o of this.#options.observers ?? []) {
      o.guardAlert?.(defended ? { ...alert, defended } : alert);
    }
    if (defended) this.#defend(alert.vip);
    if (alert.kind === "next-hop") void this.#forgetNeighbour(alert.vip, alert.from);
    const key = `${alert.kind} ${alert.vip} ${alert.from} ${held}`;
    const now = Date.now();
    const last = this.#logged.get(key);
    if (last && now - last.at < ALERT_LOG_INTERVAL_MS) {
      last.packets += alert.packets;
      return;
    }
    this.#logged.set(key, { at: now, packets: 0 });
    const packets = alert.packets + (last?.packets ?? 0);
    const what = alert.kind === "claim"
      ? held
        ? guarded
          ? "guard: another MAC claims a VIP this node holds; defending it"
          : "guard: another MAC claims a VIP this node holds (no node list: not defended)"
        : "guard: a MAC that is no node claimed a VIP; refused"
      : alert.kind === "advert"
      ? "guard: VRRP advert from an address that is no node of the VIP; refused"
      : "guard: a mapped pod's traffic to a next hop that is no node of the VIP; dropped";
    this.#options.log.warn(what, {
      vip: alert.vip,
      [alert.kind === "advert" ? "address" : "mac"]: alert.from,
      packets,
      ...(last ? { since_s: Math.round((now - last.at) / 1000) } : {}),
    });
    this.alerts.push({ ...alert, packets });
  }

  /**
   * The forwarder's neighbour entry for the VIP points at a MAC that is no
   * node (learned before the guard was there): removed, so the next packet
   * asks again and only a node's answer passes. Entries someone set by hand
   * (permanent, noarp) are left alone; their traffic stays dropped.
   */
  async #forgetNeighbour(vip: string, mac: string) {
    const { iface } = this.#options;
    const r = await run(["ip", "-j", "neigh", "show", vip, "dev", iface]);
    if (r.code !== 0) return;
    const entries = JSON.parse(r.stdout || "[]") as { lladdr?: string; state?: string[] }[];
    const entry = entries.find((e) => e.lladdr?.toLowerCase() === mac);
    if (!entry || (entry.state ?? []).some((s) => s === "PERMANENT" || s === "NOARP")) return;
    const del = await run(["ip", "neigh", "del", vip, "dev", iface]);
    if (del.code === 0) {
      this.#options.log.info("removed the neighbour entry that pointed the VIP at a non-node", {
        vip,
        mac,
      });
    }
  }

  /** A gratuitous ARP now, or when the bound allows (one is owed at most). */
  #defend(vip: string) {
    if (this.#pendingDefence.has(vip)) return;
    const wait = (this.#lastDefence.get(vip) ?? -Infinity) + this.#defendMs - Date.now();
    const send = async () => {
      this.#pendingDefence.delete(vip);
      if (this.#stopped || !this.#held.has(vip)) return;
      // Still ours right now (the pass that tells us may not have run yet)?
      const facts = await linkFacts(this.#options.iface).catch(() => undefined);
      if (!facts?.addresses.includes(vip)) return;
      this.#lastDefence.set(vip, Date.now());
      try {
        await announce(this.#options.iface, vip);
        this.defences++;
        for (const o of this.#options.observers ?? []) o.guardDefence?.(vip);
      } catch (error) {
        this.#options.log.warn("defence failed", { vip, error: errorMessage(error) });
      }
    };
    if (wait <= 0) void send();
    else this.#pendingDefence.set(vip, setTimeout(() => void send(), wait));
  }
}
