/**
 * The failover gap this node can measure when it takes a VIP over: from the
 * VIP's address appearing on the interface (the kernel's address
 * notification, as the agent's watch receives it) to the end of the pass that
 * made this node the VIP's holder, i.e. installed its SNAT rule and removed
 * its forwarding rule. During that time traffic for the VIP already reaches
 * this node but does not yet leave as the VIP.
 *
 * Not included: how long the VIP layer (keepalived's VRRP master-down
 * interval, a lease expiring) took to notice that the old holder was gone;
 * that happens before the address moves and is the VIP layer's to report.
 *
 * Resolution: address events are attributed to the pass after them; when the
 * watch reported nothing (the address was seen by a resync pass), the gap
 * starts at that pass's start, so it is then a lower bound.
 */

/** A takeover measured on this node. */
export interface Takeover {
  readonly vip: string;
  /** When the pass that programmed the holder role ended (ms). */
  readonly at: number;
  /** Address event (or pass start) to the end of that pass (ms). */
  readonly gapMs: number;
  /** Whether an address event started the clock (false: the pass start did). */
  readonly fromAddressEvent: boolean;
}

export class TakeoverTimer {
  #events: number[] = [];
  #currentStart: number | undefined;
  #pending = new Map<string, { start: number; fromAddressEvent: boolean }>();

  /** The interface's addresses changed (a VIP may have arrived). */
  addressEvent(at: number): void {
    this.#events.push(at);
  }

  passStarted(at: number): void {
    // Events before the previous pass started were seen by that pass's read.
    const horizon = this.#currentStart;
    if (horizon !== undefined) this.#events = this.#events.filter((t) => t >= horizon);
    this.#currentStart = at;
    this.#pending.clear();
  }

  /** A role change seen by the current pass; only forwarder → holder is a takeover. */
  transition(vip: string, from: string, to: string): void {
    if (from !== "forwarder" || to !== "holder") return;
    const start = this.#currentStart ?? 0;
    const earliest = this.#events.length > 0 ? Math.min(...this.#events) : undefined;
    this.#pending.set(
      vip,
      earliest !== undefined
        ? { start: earliest, fromAddressEvent: true }
        : { start, fromAddressEvent: false },
    );
  }

  /** The current pass ended; returns the takeovers it completed. */
  passEnded(ok: boolean, at: number): Takeover[] {
    if (!ok) {
      this.#pending.clear();
      return [];
    }
    const done = [...this.#pending].map(([vip, p]) => ({
      vip,
      at,
      gapMs: Math.max(0, at - p.start),
      fromAddressEvent: p.fromAddressEvent,
    }));
    this.#pending.clear();
    if (done.length > 0) this.#events = [];
    return done;
  }
}
