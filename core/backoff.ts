/**
 * Retry delays: the first after a failure is `firstMs`, each next one twice
 * the last, up to `maxMs`; a success starts over. One schedule for every
 * retry in the agent (failed passes, keepalived restarts, list/watch, holder
 * reports), so they all behave and read alike.
 */
export class Backoff {
  #nextMs: number;

  constructor(readonly firstMs: number, readonly maxMs: number) {
    this.#nextMs = firstMs;
  }

  /** The delay the next `take` will return, for logs. */
  get nextMs(): number {
    return this.#nextMs;
  }

  /** The delay before this retry; the one after will be twice as long (bounded). */
  take(): number {
    const delay = this.#nextMs;
    this.#nextMs = Math.min(delay * 2, this.maxMs);
    return delay;
  }

  /** A success: the next failure waits `firstMs` again. */
  reset(): void {
    this.#nextMs = this.firstMs;
  }
}
