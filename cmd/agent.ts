/**
 * The node agent: each pass reads the inputs and the node, plans, and applies
 * one transaction. Passes never overlap; triggers that arrive during a pass
 * coalesce into one more pass. Reports are made once: a rejected input, an
 * error and a VIP transition are logged when they appear, not every pass.
 */
import { type RoleChange, roleChanges } from "../core/announce.ts";
import { Backoff } from "../core/backoff.ts";
import { guardedInKernel } from "../core/fail_closed.ts";
import {
  owedFlushes,
  rolesChangedBefore,
  withOwedCommits,
  withOwedFlushes,
} from "../core/conntrack.ts";
import type { Known } from "../core/datapath.ts";
import {
  type LiveState,
  type NatSync,
  planDelete,
  PLANNERS,
  planPass,
  renderTransaction,
  type Transaction,
} from "../core/plan.ts";
import type { ConntrackdCommit, ConntrackFlush } from "../core/operation.ts";
import { renderedLines, type ToolName, toolName } from "../core/render.ts";
import type { DatapathConfig } from "../core/schema.ts";
import { rememberOriginals } from "../core/sysctl.ts";
import { formatProblem, type Problem, type RawSnapshot, type Snapshot } from "../core/snapshot.ts";
import { DeltaValidation } from "../core/snapshot_delta.ts";
import type { Logger } from "./log.ts";
import {
  readRpFilterOriginals,
  removeRpFilterOriginals,
  writeRpFilterOriginals,
} from "./rp_filter_state.ts";
import type { VipPlacement } from "./keepalived.ts";
import type { GuardObserver } from "./guard.ts";
import {
  type ApplyOptions,
  type ApplyReport,
  type Host,
  InterfaceMissingError,
  type LiveRead,
  StepError,
  TakeoverAbandoned,
} from "./system.ts";
import { errorMessage } from "../core/errors.ts";
import { canonicalIp } from "../core/ip.ts";

/** Someone who wants to know what the agent did (metrics, Kubernetes Events, benchmarks). */
export interface AgentObserver extends GuardObserver {
  /** When a pass begins (liveness: a pass that never ends is a wedged loop). */
  passStarted?(trigger: string): void;
  /** After every pass, successful or not. */
  pass?(result: PassResult, trigger: string): void;
  /** A VIP's role on this node changed ("none" = not known / not in the inputs). */
  transition?(vip: string, from: Role | "none", to: Role | "none"): void;
  /** The set of rejected inputs changed; `problems` is the whole current list. */
  rejected?(problems: readonly string[]): void;
  /**
   * keepalived reported a VRRP state for a VIP on this node (MASTER, BACKUP,
   * FAULT); `--vip-mode keepalived` only. The role follows once the address
   * is on (or off) the interface: see `transition`.
   */
  vrrp?(vip: string, state: string): void;
}

export interface AgentSettings {
  readonly config: DatapathConfig;
  /**
   * Reads the inputs (mapping files, the API); throws when they cannot be read
   * at all. Gets the pass's trigger ("start", "resync", "address change", ...)
   * so that a source can serve a VIP move from memory and re-read on resync.
   * Returning the same object as last time means "unchanged": it is not
   * validated again.
   */
  readonly readInputs: (trigger: string) => Promise<RawSnapshot>;
  /** Print the transaction instead of applying it. */
  readonly dryRun: boolean;
  /** Where `--dry-run` prints transactions. */
  readonly print?: (text: string) => void;
  /** Told about passes, transitions and rejected inputs. */
  readonly observers?: readonly AgentObserver[];
  /** Wall clock in ms (tests replace it to check the error reminder). */
  readonly now?: () => number;
  /**
   * Places VIPs on this node (keepalived mode); offered every pass's valid
   * VIPs. Absent: something else places them and the agent only follows.
   */
  readonly placement?: VipPlacement;
  /**
   * Where the reverse-path filters the agent loosens are remembered as they
   * were, for `deleteAll` to give back (cmd/rp_filter_state.ts). Absent: not
   * remembered, not given back.
   */
  readonly stateDir?: string;
  /**
   * NAT state replication (cmd/conntrackd.ts): the `conntrackd` commits a
   * takeover runs before this node starts translating. Absent: no sync.
   */
  readonly conntrackSync?: {
    /**
     * Offered every pass's valid VIPs (their unicast peers) and the node's pod
     * routes (its own pod ranges are not replicated); cheap when nothing changed.
     */
    update(vips: Snapshot["vips"], podRoutes: LiveState["routes"]["podRoutes"]): Promise<void>;
    /** The commits a takeover runs and this node's own pod ranges, as the last update left them. */
    natSync(): NatSync;
  };
  /**
   * Told which VIPs changed role after each applied pass (neighbour refresh,
   * gratuitous ARP: cmd/announce.ts). Its failures never fail the pass.
   */
  readonly neighbours?: { after(changes: readonly RoleChange[]): Promise<void> };
  /**
   * The guard (cmd/guard.ts): told every pass's VIPs and which this node holds,
   * removed by `deleteAll`. Absent: no guard table.
   */
  readonly guard?: PassGuard;
}

/**
 * Each step's tool and time, in order: "nft 10, ip 3, conntrack 7,
 * conntrackd 9 ms" (a takeover's pass taken apart, bench/failover.ts).
 */
export function stepTimes(transaction: Transaction, stepMs: readonly number[]): string {
  return transaction.steps.map((s, i) => `${toolName(s.op)} ${Math.round(stepMs[i] ?? 0)}`)
    .join(", ") +
    " ms";
}

/** What the agent needs of the guard. */
export interface PassGuard {
  update(snapshot: Snapshot, held: readonly string[], trigger: string): Promise<void>;
  delete(): Promise<boolean>;
}

export interface PassResult {
  readonly ok: boolean;
  readonly changed: boolean;
  readonly durationMs: number;
  readonly vips: number;
  readonly mappings: number;
  readonly rejected: number;
  readonly lines: number;
  /** Processes started by the pass: reading the node and applying the changes. */
  readonly processes: number;
  /** Bytes written to the tools (towards the kernel). */
  readonly bytes: number;
  /**
   * How our ipsets were checked: every entry listed, or the agent's copy
   * confirmed by size (nftables: by our chains, or by the ruleset generation).
   */
  readonly setsRead?: LiveRead["setsRead"];
  readonly error?: string;
  /** Which stage failed (for metrics): see ErrorKind. */
  readonly errorKind?: ErrorKind;
  /** The interface is gone: fatal at start-up, retried later in a running agent. */
  readonly interfaceMissing?: boolean;
}

export type Role = "holder" | "forwarder";

/**
 * The stage a failed pass stopped at: reading the inputs, the interface gone,
 * reading the node's state, or a transaction step (by tool).
 */
export type ErrorKind =
  | "inputs"
  | "interface_missing"
  | "read_live"
  | `apply_${ToolName}`
  | "apply";

/** How often a failure that persists is logged again (it is logged at once when it starts). */
export const ERROR_REMINDER_MS = 10 * 60 * 1000;

export interface PassOptions {
  /**
   * How the pass checks our ipsets against the kernel. "full" (the default)
   * lists every entry. "quick" trusts the agent's copy of what it last read and
   * wrote when the kernel reports the same sets with as many entries
   * (`ipset list -t`), and lists in full otherwise: a set flushed, destroyed or
   * grown behind our back is repaired at once, an entry changed in place only
   * at the next full check. The loop checks quickly on events and fully on
   * every interval resync.
   */
  readonly setCheck?: "full" | "quick";
}

/**
 * The generation at which our table is exact after a transaction: when it
 * was exact as read and the transaction's commits were the only ones since.
 */
function exactAfter(live: LiveRead, report: ApplyReport): Known {
  const generations = report.nftGeneration;
  return live.nftGeneration !== undefined && generations?.before === live.nftGeneration
    ? { nftGeneration: generations.after }
    : {};
}

export class Agent {
  readonly #host: Host;
  readonly #log: Logger;
  readonly #settings: AgentSettings;
  #roles = new Map<string, Role>();
  #reported = new Set<string>();
  #lastError: string | undefined;
  #validated: { raw: RawSnapshot; snapshot: Snapshot; problems: Problem[] } | undefined;
  #failingSince = 0;
  #failures = 0;
  #lastErrorLog = 0;
  /** Our sets as the last pass left them; dropped whenever a pass fails. */
  #known: Known = {};
  /**
   * Validation that follows the source's deltas pod by pod (core/snapshot_delta.ts), and keeps
   * the schema results of the last full validation's pod entries (most stay the same).
   */
  readonly #validation = new DeltaValidation();
  /** A pass has succeeded: the other backend's leftovers were read (and removed) then. */
  #leftoversChecked = false;
  /** Conntrack flushes a failed pass still owes (its roles changed, its flush did not run). */
  #owedFlushes: ConntrackFlush[] = [];
  /**
   * A takeover stopped before its flush and commit (`TakeoverAbandoned`): its
   * VIPs and commits. A later pass that holds those VIPs again (they left and
   * came back: keepalived went MASTER, BACKUP, MASTER) runs the commit it owes.
   */
  #abandoned: { vips: readonly string[]; commits: readonly ConntrackdCommit[] } | undefined;

  constructor(host: Host, log: Logger, settings: AgentSettings) {
    this.#host = host;
    this.#log = log;
    this.#settings = settings;
  }

  /** One pass: read, validate, plan, apply. Never throws. */
  async pass(trigger: string, options: PassOptions = {}): Promise<PassResult> {
    for (const o of this.#settings.observers ?? []) o.passStarted?.(trigger);
    const result = await this.#pass(trigger, options);
    for (const o of this.#settings.observers ?? []) o.pass?.(result, trigger);
    return result;
  }

  async #pass(trigger: string, options: PassOptions): Promise<PassResult> {
    const started = performance.now();
    const { config, dryRun } = this.#settings;
    const empty = { vips: 0, mappings: 0, rejected: 0, lines: 0, processes: 0, bytes: 0 };
    let stage: ErrorKind = "inputs";
    let applying: Transaction | undefined;
    let changes: readonly RoleChange[] = [];
    const known = options.setCheck === "quick" ? this.#known : {};
    // Exact (read in full or written alone): trusted on any pass while the generation holds.
    const proven = this.#known.nft && this.#known.nftGeneration !== undefined
      ? { table: this.#known.nft, generation: this.#known.nftGeneration }
      : undefined;
    // Forgotten until this pass ends well: after a failed step nobody knows what was applied.
    this.#known = {};
    try {
      const raw = await this.#settings.readInputs(trigger);
      const inputsRead = performance.now();
      if (raw !== this.#validated?.raw) {
        this.#validated = { raw, ...this.#validation.validate(raw, config) };
      }
      const validated = performance.now();
      const { snapshot, problems } = this.#validated;
      this.#reportProblems(problems.map(formatProblem));
      stage = "read_live";
      const readStarted = performance.now();
      // Placement (keepalived's configuration, which may run a process) beside the read, not
      // before it: on a takeover this pass is the gap's tail. Neither needs the other.
      const [, live] = await Promise.all([
        this.#settings.placement?.update(snapshot.vips),
        this.#host.readLive(config, {
          knownSets: known.sets,
          knownNft: known.nft,
          ...(proven ? { provenNft: proven } : {}),
          ourChainsOnly: true,
          leftovers: !this.#leftoversChecked,
        }),
      ]);
      const readMs = performance.now() - readStarted;
      if (!dryRun) await this.#settings.conntrackSync?.update(snapshot.vips, live.routes.podRoutes);
      stage = "apply";
      const planStarted = performance.now();
      const planned = planPass(snapshot, config, live, {
        natSync: this.#settings.conntrackSync?.natSync(),
      });
      const plannedAt = performance.now();
      const { desired } = planned;
      const held = new Set(
        desired.roles.filter((r) => r.role === "holder").map((r) => canonicalIp(r.ip)),
      );
      const abandoned = this.#abandoned;
      const owedCommits = abandoned && abandoned.vips.every((v) => held.has(canonicalIp(v)))
        ? abandoned.commits
        : [];
      const transaction = dryRun
        ? planned.transaction
        : withOwedCommits(withOwedFlushes(planned.transaction, this.#owedFlushes), owedCommits);
      const lines = renderedLines(transaction.steps);
      let report: ApplyReport = { processes: 0, bytes: 0 };
      let applyMs = 0;
      if (dryRun) {
        if (lines > 0) this.#settings.print?.(renderTransaction(transaction));
      } else if (lines > 0) {
        await this.#rememberRpFilters(transaction, live.sysctls);
        changes = roleChanges(
          PLANNERS[config.backend].rolesInForce(live, config.markMask),
          desired.roles,
        );
        applying = transaction;
        report = await this.#host.apply(transaction, this.#takeoverCheck(changes));
        applyMs = performance.now() - plannedAt;
        for (const warning of report.warnings ?? []) {
          this.#log.warn("replicated NAT state not committed; the VIP's connections restart", {
            error: warning,
          });
        }
        await this.#neighbours(changes);
      }
      this.#owedFlushes = [];
      this.#abandoned = undefined;
      // What our objects are now: as the transaction left them, or as read when it wrote nothing.
      this.#known = !dryRun && lines > 0
        ? { ...PLANNERS[config.backend].afterApply(live, desired), ...exactAfter(live, report) }
        : { sets: live.sets, nft: live.nft, nftGeneration: live.nftGeneration };
      if (!dryRun) this.#leftoversChecked = true;
      this.#reportRoles(new Map(desired.roles.map((r) => [r.ip, r.role])));
      if (!dryRun) {
        const held = desired.roles.filter((r) => r.role === "holder").map((r) => r.ip);
        await this.#settings.guard?.update(snapshot, held, trigger);
      }
      const result: PassResult = {
        ok: true,
        changed: lines > 0,
        durationMs: performance.now() - started,
        vips: snapshot.vips.length,
        mappings: snapshot.pods.length,
        rejected: problems.length,
        lines,
        processes: live.processes + report.processes,
        bytes: report.bytes,
        setsRead: live.setsRead,
      };
      if (this.#lastError !== undefined) {
        this.#log.info("pass succeeded again", {
          trigger,
          failed_passes: this.#failures,
          failing_for_s: Math.round((this.#now() - this.#failingSince) / 1000),
        });
      }
      this.#lastError = undefined;
      this.#failures = 0;
      if (result.changed) {
        this.#log.info(dryRun ? "pass planned (dry run)" : "pass applied", {
          trigger,
          duration_ms: Math.round(result.durationMs),
          vips: result.vips,
          mappings: result.mappings,
          rejected: result.rejected,
          lines,
          processes: result.processes,
          bytes: report.bytes,
          // Where the pass's time went: the source, validation, reading the node, planning, writing.
          inputs_ms: Math.round(inputsRead - started),
          validate_ms: Math.round(validated - inputsRead),
          read_ms: Math.round(readMs),
          plan_ms: Math.round(plannedAt - planStarted),
          apply_ms: Math.round(applyMs),
          ...(report.stepMs ? { steps: stepTimes(transaction, report.stepMs) } : {}),
        });
      }
      return result;
    } catch (error) {
      const message = errorMessage(error);
      if (applying) {
        const failedAt = error instanceof StepError ? error.index : undefined;
        const ranAfter = error instanceof StepError ? error.ranAfter : [];
        this.#owedFlushes = owedFlushes(applying, failedAt, this.#owedFlushes, ranAfter);
        if (error instanceof TakeoverAbandoned) {
          this.#abandoned = {
            vips: error.vips,
            commits: applying.steps.flatMap((s) => s.op.tool === "conntrackd" ? s.op.commits : []),
          };
        }
        // The roles changed before the step that failed: the next pass sees no change to announce.
        if (failedAt !== undefined && rolesChangedBefore(applying, failedAt)) {
          await this.#neighbours(changes);
        }
      }
      this.#reportFailure(trigger, message);
      const errorKind: ErrorKind = error instanceof InterfaceMissingError
        ? "interface_missing"
        : error instanceof StepError
        ? `apply_${toolName(error.step.op)}`
        : stage;
      return {
        ok: false,
        changed: false,
        durationMs: performance.now() - started,
        ...empty,
        error: message,
        errorKind,
        interfaceMissing: error instanceof InterfaceMissingError,
      };
    }
  }

  /**
   * A takeover's flush and commit run only while this node still has the VIPs
   * it takes: two backups can both enter MASTER within the skew of an advert,
   * and the one that yields a few ms later must not apply the holder's
   * conntrack work after the read that saw its VIP (cmd/system.ts
   * `TakeoverAbandoned`).
   */
  #takeoverCheck(changes: readonly RoleChange[]): ApplyOptions {
    const addresses = this.#host.addresses?.bind(this.#host);
    const taken = changes.filter((c) => c.to === "holder" && c.from !== "holder")
      .map((c) => canonicalIp(c.vip) ?? c.vip);
    if (addresses === undefined || taken.length === 0) return {};
    return {
      takenOverGone: () => {
        const here = new Set(
          (addresses(this.#settings.config.interface) ?? []).map((a) => canonicalIp(a) ?? a),
        );
        return taken.filter((vip) => !here.has(vip));
      },
    };
  }

  async #neighbours(changes: readonly RoleChange[]) {
    try {
      await this.#settings.neighbours?.after(changes);
    } catch (error) {
      this.#log.warn("neighbour refresh failed", { error: errorMessage(error) });
    }
  }

  #now(): number {
    return (this.#settings.now ?? Date.now)();
  }

  /**
   * A new or changed error is logged at once; the same error again only as a
   * reminder every ERROR_REMINDER_MS, so a node that stays broken says so in
   * recent logs without repeating itself every pass.
   */
  #reportFailure(trigger: string, message: string) {
    const now = this.#now();
    if (this.#failures === 0) this.#failingSince = now;
    this.#failures++;
    if (message !== this.#lastError) {
      this.#log.error("pass failed; the node keeps its last applied state", {
        trigger,
        error: message,
      });
      this.#lastErrorLog = now;
    } else if (now - this.#lastErrorLog >= ERROR_REMINDER_MS) {
      this.#log.error("pass still failing; the node keeps its last applied state", {
        error: message,
        failed_passes: this.#failures,
        failing_for_s: Math.round((now - this.#failingSince) / 1000),
      });
      this.#lastErrorLog = now;
    }
    this.#lastError = message;
  }

  /**
   * Stops placing VIPs: keepalived hands this node's VIPs to its peers (they
   * take over within a fraction of an advert interval). Unless `pass` is false,
   * one more pass then gives this node the forwarding role for them, so its
   * own pods keep their egress through the new holders after the agent exits.
   */
  async stopPlacement(pass = true): Promise<void> {
    const placement = this.#settings.placement;
    if (!placement) return;
    await placement.stop();
    if (pass) await this.pass("VIPs handed over");
  }

  /**
   * Before a pass loosens reverse-path filters: remembers their values (the
   * first ones only). A state dir that cannot be written costs the restore at
   * `delete`, not the pass.
   */
  async #rememberRpFilters(transaction: Transaction, live: Readonly<Record<string, number>>) {
    const { stateDir } = this.#settings;
    const fixes = transaction.steps.flatMap((s) => s.op.tool === "sysctl" ? s.op.writes : []);
    if (stateDir === undefined || fixes.length === 0) return;
    try {
      const remembered = await readRpFilterOriginals(stateDir);
      const next = rememberOriginals(remembered, fixes, live);
      if (Object.keys(next).length > Object.keys(remembered).length) {
        await writeRpFilterOriginals(stateDir, next);
      }
    } catch (error) {
      this.#log.warn("could not remember the reverse-path filters; delete will not restore them", {
        error: errorMessage(error),
      });
    }
  }

  /** Removes everything this product created on the node; `processes` counts reads and writes. */
  async deleteAll(): Promise<ApplyReport & { lines: number }> {
    this.#known = {};
    const live = await this.#host.readLive(this.#settings.config);
    const { stateDir } = this.#settings;
    let originals: Record<string, number> = {};
    if (stateDir !== undefined) {
      try {
        originals = await readRpFilterOriginals(stateDir);
      } catch (error) {
        this.#log.warn("reverse-path filters not restored", {
          error: errorMessage(error),
        });
      }
    }
    const transaction = planDelete(live, this.#settings.config, originals);
    const lines = renderedLines(transaction.steps);
    if (this.#settings.dryRun) {
      this.#settings.print?.(renderTransaction(transaction));
      return { processes: live.processes, bytes: 0, lines };
    }
    const guarded = guardedInKernel(live);
    if (guarded > 0) {
      // `delete` is the uninstall: the guard goes too (README "Fail closed"); say what that opens.
      this.#log.warn(
        "removing the fail-closed guard: these pods' traffic to steered destinations leaves with the node's address from now on",
        { pods: guarded },
      );
    }
    const report = await this.#host.apply(transaction);
    if (await this.#settings.guard?.delete()) this.#log.info("removed the guard table");
    if (stateDir !== undefined) await removeRpFilterOriginals(stateDir);
    const processes = live.processes + report.processes;
    this.#log.info("deleted all kube-egress rules, sets, routes and chains", { lines, processes });
    this.#roles = new Map();
    return { processes, bytes: report.bytes, lines };
  }

  #reportProblems(messages: string[]) {
    const now = new Set(messages);
    const changed = now.size !== this.#reported.size ||
      [...now].some((m) => !this.#reported.has(m));
    if (changed) { for (const o of this.#settings.observers ?? []) o.rejected?.([...now]); }
    for (const message of now) {
      if (!this.#reported.has(message)) this.#log.warn("input rejected", { problem: message });
    }
    for (const message of this.#reported) {
      if (!now.has(message)) this.#log.info("input problem gone", { problem: message });
    }
    this.#reported = now;
  }

  #transition(vip: string, from: Role | "none", to: Role | "none") {
    this.#log.info("VIP role", { vip, from, to });
    for (const o of this.#settings.observers ?? []) o.transition?.(vip, from, to);
  }

  #reportRoles(roles: Map<string, Role>) {
    for (const [vip, role] of roles) {
      const before = this.#roles.get(vip);
      if (before !== role) this.#transition(vip, before ?? "none", role);
    }
    for (const [vip, before] of this.#roles) {
      if (!roles.has(vip)) this.#transition(vip, before, "none");
    }
    this.#roles = roles;
  }
}

export interface LoopOptions {
  /** Seconds between resync passes. */
  readonly intervalSeconds: number;
  /** Starts watching the inputs (files, the API); calls back when they change. */
  readonly watchInputs?: (onChange: () => void) => { stop(): void };
  /** Remove everything on SIGTERM/SIGINT instead of leaving traffic flowing. */
  readonly cleanupOnExit: boolean;
  /** Resolves when the loop must stop (signals, tests). */
  readonly stop: Promise<unknown>;
  /** First delay before a failed pass is tried again (doubling up to the interval); default 1 s. */
  readonly retryFirstMs?: number;
}

/**
 * Runs passes until `stop` resolves: at start, every interval, within
 * milliseconds of an address change on the interface, and shortly after the
 * mapping files change. A failed pass (the xtables lock held too long, say) is
 * tried again after 1 s, 2 s, 4 s… up to the interval: a takeover whose pass
 * failed must not wait a whole interval for the SNAT role.
 */
export async function runLoop(
  agent: Agent,
  host: Host,
  config: DatapathConfig,
  log: Logger,
  options: LoopOptions,
) {
  let running: Promise<unknown> | undefined;
  let pending: string | undefined;
  let pendingFull = false;
  let stopping = false;
  const retry = new Backoff(options.retryFirstMs ?? 1000, options.intervalSeconds * 1000);
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  const afterPass = (result: PassResult) => {
    clearTimeout(retryTimer);
    retryTimer = undefined;
    if (result.ok) retry.reset();
    else if (!stopping && pending === undefined) {
      retryTimer = setTimeout(() => trigger("retry after a failed pass", "full"), retry.take());
    }
  };
  // Events check our sets quickly; the start and every resync list them in full.
  const trigger = (reason: string, setCheck: "full" | "quick" = "quick") => {
    if (stopping) return;
    if (running) {
      // A resync coalesced with events keeps its name: sources re-read on "resync".
      if (setCheck === "full") pending = reason;
      else pending ??= reason;
      pendingFull ||= setCheck === "full";
      return;
    }
    running = (async () => {
      let next: string | undefined = reason;
      let full = setCheck === "full";
      while (next !== undefined && !stopping) {
        pending = undefined;
        pendingFull = false;
        afterPass(await agent.pass(next, { setCheck: full ? "full" : "quick" }));
        next = pending;
        full = pendingFull;
      }
      running = undefined;
    })();
  };

  trigger("start", "full");
  const interval = setInterval(() => trigger("resync", "full"), options.intervalSeconds * 1000);
  const watcher = host.watchAddresses(config.interface, () => trigger("address change"));
  const inputWatch = options.watchInputs?.(() => trigger("inputs changed"));
  log.info("agent running", {
    interface: config.interface,
    interval_s: options.intervalSeconds,
    backend: config.backend,
  });

  await options.stop;
  stopping = true;
  clearInterval(interval);
  clearTimeout(retryTimer);
  watcher.stop();
  inputWatch?.stop();
  await running;
  await agent.stopPlacement(!options.cleanupOnExit);
  if (options.cleanupOnExit) {
    await agent.deleteAll();
  } else {
    log.info(
      "stopping; rules stay in place so egress keeps working (use --cleanup-on-exit to remove them)",
    );
  }
}
