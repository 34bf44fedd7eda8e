/**
 * Carries out core/announce.ts: flushes this node's own neighbour entry for
 * each VIP whose role changed (`ip neigh flush to <vip> dev <iface>`, which
 * leaves permanent entries alone), and announces each VIP this node took at
 * ANNOUNCE_SCHEDULE_MS: gratuitous ARP (arping) for IPv4, unsolicited
 * neighbour advertisements (na6, ipv6toolkit) for IPv6. Later rounds run on
 * timers; `stop` cancels them and `settled` waits for them (a one-shot run
 * waits before it exits). Failures are logged, never fatal: traffic does not
 * depend on them.
 */
import { type ExecResult, systemExec, which } from "./exec.ts";
import {
  ANNOUNCE_SCHEDULE_MS,
  type Announcement,
  ANNOUNCEMENTS_PER_ROUND,
  type ArpingFlavour,
  gratuitousArpArgv,
  neighbourActions,
  type RoleChange,
  unsolicitedNaArgv,
} from "../core/announce.ts";
import { errorMessage } from "../core/errors.ts";
import type { Logger } from "./log.ts";

export class NeighbourAnnouncer {
  readonly #iface: string;
  readonly #log: Logger;
  readonly #announceTakeovers: boolean;
  readonly #timers = new Map<string, Set<ReturnType<typeof setTimeout>>>();
  readonly #pending = new Set<Promise<void>>();
  #arping: Promise<ArpingFlavour | undefined> | undefined;
  readonly #warnedMissing = new Set<Announcement["kind"]>();

  /**
   * `announceTakeovers`: announce the VIPs this node takes (false where
   * keepalived places them: it announces its own).
   */
  constructor(iface: string, log: Logger, announceTakeovers: boolean) {
    this.#iface = iface;
    this.#log = log;
    this.#announceTakeovers = announceTakeovers;
  }

  /** After a pass applied `changes`: refreshes at once, announces the first round at once. */
  async after(changes: readonly RoleChange[]): Promise<void> {
    if (changes.length === 0) return;
    const { refresh, announce } = neighbourActions(changes, this.#announceTakeovers);
    for (const vip of refresh) this.#cancel(vip);
    await Promise.all(refresh.map((vip) => this.#refresh(vip)));
    for (const announcement of announce) {
      const { vip } = announcement;
      const [first, ...later] = ANNOUNCE_SCHEDULE_MS;
      const timers = new Set<ReturnType<typeof setTimeout>>();
      for (const ms of later) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          if (timers.size === 0) this.#timers.delete(vip);
          const round = this.#announce(announcement).finally(() => this.#pending.delete(round));
          this.#pending.add(round);
        }, ms - first);
        timers.add(timer);
      }
      if (timers.size > 0) this.#timers.set(vip, timers);
      await this.#announce(announcement);
    }
  }

  /** Resolves when every scheduled round has been sent (or cancelled). */
  async settled(): Promise<void> {
    while (this.#timers.size > 0 || this.#pending.size > 0) {
      if (this.#pending.size > 0) await Promise.all(this.#pending);
      else await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Cancels the rounds not sent yet. */
  stop(): void {
    for (const vip of [...this.#timers.keys()]) this.#cancel(vip);
  }

  #cancel(vip: string) {
    for (const timer of this.#timers.get(vip) ?? []) clearTimeout(timer);
    this.#timers.delete(vip);
  }

  async #refresh(vip: string) {
    const r = await quietly(["ip", "neigh", "flush", "to", vip, "dev", this.#iface]);
    if (r.code !== 0) {
      this.#log.warn("could not refresh the neighbour entry of a VIP", {
        vip,
        error: r.stderr.trim(),
      });
    }
  }

  async #announce(announcement: Announcement) {
    const { vip, kind } = announcement;
    const what = kind === "arp" ? "gratuitous ARP" : "unsolicited neighbour advertisement";
    try {
      const rounds = await this.#commands(announcement);
      if (rounds === undefined) {
        if (!this.#warnedMissing.has(kind)) {
          this.#log.warn(
            kind === "arp"
              ? "arping not found: IPv4 VIPs taken are not announced"
              : "na6 not found (package ipv6toolkit): IPv6 VIPs taken are not announced",
            { vip },
          );
          this.#warnedMissing.add(kind);
        }
        return;
      }
      for (const args of rounds) {
        const r = await quietly(args);
        // Exit 1 is arping's "no replies": normal for unsolicited ARP.
        if (r.code > (kind === "arp" ? 1 : 0) || r.stderr.trim()) {
          this.#log.warn(`${what} failed`, { vip, error: r.stderr.trim() || `exit ${r.code}` });
          return;
        }
      }
    } catch (error) {
      this.#log.warn(`${what} failed`, { vip, error: errorMessage(error) });
    }
  }

  /** The processes of one round, in order; undefined when the tool is missing. */
  async #commands({ vip, kind }: Announcement): Promise<string[][] | undefined> {
    if (kind === "arp") {
      const flavour = await (this.#arping ??= arpingFlavour());
      return flavour && [gratuitousArpArgv(vip, this.#iface, flavour)];
    }
    if (which("na6") === undefined) return undefined;
    const router = await forwardsIPv6(this.#iface);
    return Array(ANNOUNCEMENTS_PER_ROUND).fill(unsolicitedNaArgv(vip, this.#iface, router));
  }
}

/** Which arping the node has, if any. */
async function arpingFlavour(): Promise<ArpingFlavour | undefined> {
  try {
    const help = await quietly(["arping", "--help"]);
    if (help.code === 127) return undefined;
    return /Habets/.test(help.stdout + help.stderr) ? "habets" : "iputils";
  } catch {
    return undefined;
  }
}

/** True when the interface forwards IPv6 (the kernel then sets the NA's router flag too). */
async function forwardsIPv6(iface: string): Promise<boolean> {
  try {
    return (await Deno.readTextFile(`/proc/sys/net/ipv6/conf/${iface}/forwarding`)).trim() === "1";
  } catch {
    return false;
  }
}

/** Runs a tool for at most 5 s; a missing tool reads as exit 127, a timeout as exit 124. */
async function quietly(args: string[]): Promise<ExecResult> {
  try {
    return await systemExec(args, { timeoutMs: 5_000 });
  } catch (error) {
    const kind = (error as { kind?: string }).kind;
    return { code: kind === "timeout" ? 124 : 127, stdout: "", stderr: errorMessage(error) };
  }
}
