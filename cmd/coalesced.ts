/**
 * Runs an async job one at a time. A call while it runs asks for one more run
 * after it (any number of calls meanwhile make one), so every call is
 * followed by a run that sees the state as it was at that call, or later.
 */
export class Coalesced {
  #running?: Promise<void>;
  #again = false;

  constructor(readonly job: () => Promise<void>) {}

  /** Resolves when a run that started at or after this call has ended (rejects if it failed). */
  run(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          await this.job();
        } while (this.#again);
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  /** Resolves when no run is going on. */
  async idle(): Promise<void> {
    while (this.#running) await this.#running.catch(() => {});
  }
}
