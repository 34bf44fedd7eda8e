/**
 * Liveness and readiness of the agent loop, decided from the passes it runs.
 * Pure: the caller feeds pass starts and ends with their times and asks for a
 * verdict at a time, so every rule is tested without waiting.
 *
 * - Alive: the loop is not wedged. A pass that has run for longer than the
 *   stall limit, or no pass at all for that long, means it is stuck and a
 *   restart may help. A failing pass is NOT a liveness failure: restarting
 *   does not bring back a lost mount or a missing interface.
 * - Ready: the last completed pass succeeded, and the inputs were read
 *   recently (by a pass that got past reading them), plus any extra condition
 *   a source adds (e.g. its watch is synced).
 */

/** One named check of a verdict. */
export interface CheckResult {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface Verdict {
  readonly ok: boolean;
  readonly checks: readonly CheckResult[];
}

export interface HealthPolicy {
  /** Seconds between resync passes (`-u`). */
  readonly intervalSeconds: number;
}

/** A pass is stuck after this long, and so is a loop that has run no pass for this long. */
export function stallSeconds(policy: HealthPolicy): number {
  return Math.max(120, 3 * policy.intervalSeconds);
}

/** Inputs older than this are stale: two missed resyncs plus slack for a slow pass. */
export function freshSeconds(policy: HealthPolicy): number {
  return 2 * policy.intervalSeconds + 30;
}

/** An extra readiness condition: returns undefined when fine, else what is wrong. */
export type Condition = () => string | undefined;

/** What the tracker needs to know of a finished pass. */
export interface PassOutcome {
  readonly ok: boolean;
  readonly error?: string;
  /** The stage a failed pass stopped at; "inputs" means the inputs could not be read. */
  readonly errorKind?: string;
}

const seconds = (ms: number) => `${Math.round(ms / 1000)}s`;

/** Follows passes and answers liveness and readiness. Times are milliseconds. */
export class HealthTracker {
  readonly #policy: HealthPolicy;
  readonly #createdAt: number;
  readonly #conditions = new Map<string, Condition>();
  #running: { trigger: string; since: number } | undefined;
  #lastEnd: number | undefined;
  #last: PassOutcome | undefined;
  #inputsReadAt: number | undefined;

  constructor(policy: HealthPolicy, createdAt: number) {
    this.#policy = policy;
    this.#createdAt = createdAt;
  }

  /** Adds a readiness condition (a source's own freshness, for example). */
  addCondition(name: string, condition: Condition): void {
    this.#conditions.set(name, condition);
  }

  passStarted(trigger: string, at: number): void {
    this.#running = { trigger, since: at };
  }

  passEnded(outcome: PassOutcome, at: number): void {
    this.#running = undefined;
    this.#lastEnd = at;
    this.#last = outcome;
    if (outcome.ok || outcome.errorKind !== "inputs") this.#inputsReadAt = at;
  }

  /** Alive unless a pass is stuck or passes stopped happening. */
  liveness(at: number): Verdict {
    const limit = stallSeconds(this.#policy) * 1000;
    let check: CheckResult;
    if (this.#running) {
      const age = at - this.#running.since;
      check = age > limit
        ? {
          name: "loop",
          ok: false,
          detail: `a pass (trigger: ${this.#running.trigger}) has been running for ${
            seconds(age)
          }, over the ${seconds(limit)} limit`,
        }
        : { name: "loop", ok: true, detail: `pass in progress for ${seconds(age)}` };
    } else {
      const quiet = at - (this.#lastEnd ?? this.#createdAt);
      check = quiet > limit
        ? {
          name: "loop",
          ok: false,
          detail: `no pass for ${seconds(quiet)} although one should run every ${
            seconds(this.#policy.intervalSeconds * 1000)
          }`,
        }
        : { name: "loop", ok: true, detail: `last pass ended ${seconds(quiet)} ago` };
    }
    return { ok: check.ok, checks: [check] };
  }

  /** Ready when the last pass succeeded, the inputs are fresh and every condition holds. */
  readiness(at: number): Verdict {
    const checks: CheckResult[] = [];
    if (this.#last === undefined) {
      checks.push({ name: "pass", ok: false, detail: "no pass has completed yet" });
    } else if (!this.#last.ok) {
      checks.push({ name: "pass", ok: false, detail: `last pass failed: ${this.#last.error}` });
    } else checks.push({ name: "pass", ok: true, detail: "last pass succeeded" });

    const window = freshSeconds(this.#policy) * 1000;
    if (this.#inputsReadAt === undefined) {
      checks.push({ name: "inputs", ok: false, detail: "inputs not read yet" });
    } else {
      const age = at - this.#inputsReadAt;
      checks.push(
        age > window
          ? {
            name: "inputs",
            ok: false,
            detail: `inputs last read ${seconds(age)} ago, over the ${seconds(window)} limit`,
          }
          : { name: "inputs", ok: true, detail: `inputs read ${seconds(age)} ago` },
      );
    }
    for (const [name, condition] of this.#conditions) {
      const problem = condition();
      checks.push(
        problem === undefined
          ? { name, ok: true, detail: "ok" }
          : { name, ok: false, detail: problem },
      );
    }
    return { ok: checks.every((c) => c.ok), checks };
  }
}

/**
 * The response body, in the Kubernetes /readyz?verbose style: one line per
 * check ("[+]name detail" or "[-]name detail"), then the outcome.
 */
export function renderVerdict(endpoint: string, verdict: Verdict): string {
  const lines = verdict.checks.map((c) => `[${c.ok ? "+" : "-"}]${c.name} ${c.detail}`);
  lines.push(verdict.ok ? `${endpoint} ok` : `${endpoint} check failed`);
  return lines.join("\n") + "\n";
}
