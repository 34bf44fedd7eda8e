/**
 * Carries out core/announce.ts: flushes this node's own neighbour entry for
 * each VIP whose role changed (`ip neigh flush to <vip> dev <iface>`, which
 * leaves permanent entries alone), and sends gratuitous ARP for each VIP this
 * node took, at ANNOUNCE_SCHEDULE_MS. Later rounds run on timers; `stop`
 * cancels them and `settled` waits for them (a one-shot run waits before it
 * exits). Failures are logged, never fatal: traffic does not depend on them.
 */
import { type ExecResult, systemExec } from "./exec.ts";
import { ANNOUNCE_SCHEDULE_MS, neighbourActions, type RoleChange } from "../core/announce.ts";
import { errorMessage } from "../core/errors.ts";
import type { Logger } from "./log.ts";

export class NeighbourAnnouncer {
  readonly #iface: string;
  readonly #log: Logger;
  readonly #announceTakeovers: boolean;
  readonly #timers = new Map<string, Set<ReturnType<typeof setTimeout>>>();
  readonly #pending = new Set<Promise<void>>();
  #habets: Promise<boolean | undefined> | undefined;
  #warnedMissing = false;

  /**
   * `announceTakeovers`: send gratuitous ARP for VIPs this node takes (false
   * where keepalived places them: it announces its own).
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
    for (const vip of announce) {
      const [first, ...later] = ANNOUNCE_SCHEDULE_MS;
      const timers = new Set<ReturnType<typeof setTimeout>>();
      for (const ms of later) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          if (timers.size === 0) this.#timers.delete(vip);
          const round = this.#announce(vip).finally(() => this.#pending.delete(round));
          this.#pending.add(round);
        }, ms - first);
        timers.add(timer);
      }
      if (timers.size > 0) this.#timers.set(vip, timers);
      await this.#announce(vip);
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

  async #announce(vip: string) {
    try {
      const habets = await (this.#habets ??= whichArping());
      if (habets === undefined) {
        if (!this.#warnedMissing) {
          this.#log.warn("arping not found: VIPs taken are not announced", { vip });
          this.#warnedMissing = true;
        }
        return;
      }
      const args = habets
        ? ["arping", "-q", "-U", "-c", "2", "-W", "0.05", "-i", this.#iface, "-S", vip, vip]
        : ["arping", "-q", "-U", "-c", "2", "-I", this.#iface, "-s", vip, vip];
      const r = await quietly(args);
      // Exit 1 is "no replies": normal for unsolicited ARP.
      if (r.code > 1 || r.stderr.trim()) {
        this.#log.warn("gratuitous ARP failed", {
          vip,
          error: r.stderr.trim() || `exit ${r.code}`,
        });
      }
    } catch (error) {
      this.#log.warn("gratuitous ARP failed", { vip, error: errorMessage(error) });
    }
  }
}

/** true: Habets' arping; false: iputils'; undefined: none. */
async function whichArping(): Promise<boolean | undefined> {
  try {
    const help = await quietly(["arping", "--help"]);
    if (help.code === 127) return undefined;
    return /Habets/.test(help.stdout + help.stderr);
  } catch {
    return undefined;
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
