/**
 * Prometheus metrics of the agent (prom-client). Pass, transition and
 * rejected-input figures come from the agent's observer hooks; kernel figures
 * (VIPs held, objects programmed, per-VIP traffic) are read back from the
 * kernel at each scrape, as `status` does, so they show what is in force
 * rather than what was meant to be written.
 */
import client from "prom-client";
import { cpuUsage } from "node:process";
import {
  CounterAccumulator,
  groupOf,
  type KernelFigures,
  kernelFigures,
} from "../core/egress_counters.ts";
import { TakeoverTimer } from "../core/takeover.ts";
import type { DatapathConfig } from "../core/schema.ts";
import type { AgentObserver, PassResult, Role } from "./agent.ts";
import type { Host } from "./system.ts";
import type { GuardAlert } from "../core/guard.ts";

const PREFIX = "kube_egress_";

/** Seconds; a pass is typically milliseconds, thousands of pods take longer. */
const PASS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface MetricsOptions {
  readonly config: DatapathConfig;
  /** Reads the node with counters (the agent's host). */
  readonly host: Host;
  /** Wall clock in ms. */
  readonly now?: () => number;
}

/** The agent's metrics: an observer of the agent and a Prometheus registry. */
export class AgentMetrics implements AgentObserver {
  readonly registry = new client.Registry();
  readonly #options: MetricsOptions;
  readonly #now: () => number;
  readonly #takeovers = new TakeoverTimer();
  readonly #packets = new CounterAccumulator();
  readonly #bytes = new CounterAccumulator();
  readonly #connections = new CounterAccumulator();
  #kernelVips = new Set<string>();
  /** The last successful kernel read (kept when a read fails). */
  #figures: KernelFigures | undefined;

  readonly #passes;
  readonly #duration;
  readonly #errors;
  readonly #lines;
  readonly #lastPass;
  readonly #lastSuccess;
  readonly #lastOk;
  readonly #inputs;
  readonly #rejected;
  readonly #transitions;
  readonly #gap;
  readonly #takeoverAt;
  readonly #kernelReadErrors;
  readonly #guardRefused;
  readonly #guardAlerts;
  readonly #guardDefences;

  constructor(options: MetricsOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    const registers = [this.registry];
    const counter = (name: string, help: string, labelNames: string[] = []) =>
      new client.Counter({ name: PREFIX + name, help, labelNames, registers });
    const gauge = (name: string, help: string, labelNames: string[] = []) =>
      new client.Gauge({ name: PREFIX + name, help, labelNames, registers });

    this.#passes = counter(
      "passes_total",
      "Passes run, by result: applied (something was written), unchanged, failed.",
      ["result"],
    );
    for (const result of ["applied", "unchanged", "failed"]) this.#passes.inc({ result }, 0);
    this.#duration = new client.Histogram({
      name: PREFIX + "pass_duration_seconds",
      help: "Duration of a pass: read inputs and node, plan, apply.",
      buckets: PASS_BUCKETS,
      registers,
    });
    this.#errors = counter(
      "pass_errors_total",
      "Failed passes by the stage that failed: inputs, interface_missing, read_live, apply_<tool>.",
      ["kind"],
    );
    this.#lines = counter(
      "written_lines_total",
      "Payload lines written to the kernel tools (ip, ipset, iptables-restore, sysctl).",
    );
    this.#lastPass = gauge("last_pass_timestamp_seconds", "End of the last pass (Unix time).");
    this.#lastSuccess = gauge(
      "last_successful_pass_timestamp_seconds",
      "End of the last successful pass (Unix time).",
    );
    this.#lastOk = gauge("last_pass_success", "1 if the last pass succeeded, else 0.");
    this.#inputs = gauge(
      "inputs",
      "Valid input entries of the last successful pass: vips, mappings.",
      ["kind"],
    );
    this.#rejected = gauge(
      "inputs_rejected",
      "Input entries rejected by validation in the last pass that read the inputs.",
    );
    this.#transitions = counter(
      "vip_transitions_total",
      "Changes of this node's role for a VIP (holder, forwarder, none = not in the inputs).",
      ["vip", "from", "to"],
    );
    this.#gap = gauge(
      "failover_gap_seconds",
      "Last takeover of the VIP by this node: from its address appearing on the interface " +
        "to the end of the pass that installed its SNAT rule.",
      ["vip"],
    );
    this.#takeoverAt = gauge(
      "last_takeover_timestamp_seconds",
      "When this node last took the VIP over (end of the programming pass, Unix time).",
      ["vip"],
    );
    this.#kernelReadErrors = counter(
      "kernel_read_errors_total",
      "Scrapes whose read of the kernel's rules and counters failed (kernel figures kept).",
    );
    this.#guardRefused = counter(
      "guard_refused_packets_total",
      "Packets the guard dropped, by kind: claim (an ARP for a VIP from a MAC that is no node of it), " +
        "advert (a VRRP advert for our router id from an address that is no node of the VIP), " +
        "next_hop (a mapped pod's packet towards a MAC that is no node of its VIP).",
      ["kind"],
    );
    for (const kind of ["claim", "advert", "next_hop"]) this.#guardRefused.inc({ kind }, 0);
    this.#guardAlerts = counter(
      "guard_alerts_total",
      "Readings of the guard table that found new refusals, per VIP and kind (claim on a VIP this " +
        "node holds = an address conflict).",
      ["vip", "kind"],
    );
    this.#guardDefences = counter(
      "guard_defences_total",
      "Gratuitous ARPs this node sent to defend a VIP it holds against another MAC's claim.",
      ["vip"],
    );
    this.#registerKernelMetrics();
    this.#registerProcessMetrics();
  }

  // ---- GuardObserver ----

  #guardCounts: Record<string, number> = {};

  guardCounters(counters: Readonly<Record<string, number>>): void {
    const kinds = {
      claims_refused: "claim",
      adverts_refused: "advert",
      next_hops_refused: "next_hop",
    } as const;
    for (const [name, kind] of Object.entries(kinds)) {
      const now = counters[name] ?? 0;
      const before = this.#guardCounts[name] ?? 0;
      // A table removed and written again starts from 0: count all of it as new.
      const grown = now >= before ? now - before : now;
      if (grown > 0) this.#guardRefused.inc({ kind }, grown);
      this.#guardCounts[name] = now;
    }
  }

  guardAlert(alert: GuardAlert): void {
    this.#guardAlerts.inc({ vip: alert.vip, kind: alert.kind.replace("-", "_") });
  }

  guardDefence(vip: string): void {
    this.#guardDefences.inc({ vip });
  }

  // ---- AgentObserver ----

  passStarted(_trigger: string): void {
    this.#takeovers.passStarted(this.#now());
  }

  pass(result: PassResult): void {
    const at = this.#now();
    const outcome = !result.ok ? "failed" : result.changed ? "applied" : "unchanged";
    this.#passes.inc({ result: outcome });
    this.#duration.observe(result.durationMs / 1000);
    this.#lastPass.set(at / 1000);
    this.#lastOk.set(result.ok ? 1 : 0);
    this.#lines.inc(result.lines);
    if (result.ok) {
      this.#lastSuccess.set(at / 1000);
      this.#inputs.set({ kind: "vips" }, result.vips);
      this.#inputs.set({ kind: "mappings" }, result.mappings);
      this.#rejected.set(result.rejected);
    } else {
      this.#errors.inc({ kind: result.errorKind ?? "apply" });
    }
    for (const t of this.#takeovers.passEnded(result.ok, at)) {
      this.#gap.set({ vip: t.vip }, t.gapMs / 1000);
      this.#takeoverAt.set({ vip: t.vip }, t.at / 1000);
    }
  }

  transition(vip: string, from: Role | "none", to: Role | "none"): void {
    this.#transitions.inc({ vip, from, to });
    this.#takeovers.transition(vip, from, to);
  }

  rejected(problems: readonly string[]): void {
    this.#rejected.set(problems.length);
  }

  /** The host as the agent should use it: address events also start the takeover clock. */
  observe(host: Host): Host {
    return {
      readLive: (config, options) => host.readLive(config, options),
      apply: (transaction, options) => host.apply(transaction, options),
      ...(host.addresses ? { addresses: (iface: string) => host.addresses!(iface) } : {}),
      watchAddresses: (iface, onChange) =>
        host.watchAddresses(iface, () => {
          this.#takeovers.addressEvent(this.#now());
          onChange();
        }),
    };
  }

  /** Reads the kernel once, then renders the exposition text and its content type. */
  async render(): Promise<{ body: string; contentType: string }> {
    this.#figures = (await this.#readKernel()) ?? this.#figures;
    return { body: await this.registry.metrics(), contentType: this.registry.contentType };
  }

  // ---- kernel figures, read at scrape time ----

  #registerKernelMetrics() {
    const registers = [this.registry];
    const read = () => this.#figures;
    const vips = () => this.#kernelVips;
    const perVip = (
      name: string,
      help: string,
      source: CounterAccumulator,
      role: Role,
    ) =>
      new client.Counter({
        name: PREFIX + name,
        help,
        labelNames: ["vip"],
        registers,
        collect() {
          this.reset();
          for (const vip of vips()) {
            this.inc({ vip }, source.totals.get(groupOf(vip, role)) ?? 0);
          }
        },
      });
    perVip(
      "vip_snat_packets_total",
      "Packets of mapped pods SNATed to the VIP here (pods set counters while this node held it).",
      this.#packets,
      "holder",
    );
    perVip(
      "vip_snat_bytes_total",
      "Bytes of mapped pods SNATed to the VIP here (pods set counters while this node held it).",
      this.#bytes,
      "holder",
    );
    perVip(
      "vip_snat_connections_total",
      "New connections SNATed to the VIP here (counter of the holder's nat rule).",
      this.#connections,
      "holder",
    );
    perVip(
      "vip_forwarded_packets_total",
      "Packets of this node's mapped pods sent on to the VIP's holder (pods set counters).",
      this.#packets,
      "forwarder",
    );
    perVip(
      "vip_forwarded_bytes_total",
      "Bytes of this node's mapped pods sent on to the VIP's holder (pods set counters).",
      this.#bytes,
      "forwarder",
    );
    perVip(
      "vip_forwarded_connections_total",
      "New connections sent on to the VIP's holder unmasqueraded (counter of the forward rule).",
      this.#connections,
      "forwarder",
    );
    new client.Gauge({
      name: PREFIX + "vip_held",
      help: "1 if the VIP's exact address is on this node's interface, else 0.",
      labelNames: ["vip"],
      registers,
      collect() {
        const f = read();
        if (!f) return;
        this.reset();
        for (const v of f.vips) this.set({ vip: v.vip }, v.held ? 1 : 0);
      },
    });
    new client.Gauge({
      name: PREFIX + "vips_held",
      help: "Number of programmed VIPs whose address is on this node's interface.",
      registers,
      collect() {
        const f = read();
        if (f) this.set(f.vips.filter((v) => v.held).length);
      },
    });
    new client.Gauge({
      name: PREFIX + "vip_pods",
      help: "Mapped pods using the VIP (entries of the pods set).",
      labelNames: ["vip"],
      registers,
      collect() {
        const f = read();
        if (!f) return;
        this.reset();
        for (const v of f.vips) this.set({ vip: v.vip }, v.pods);
      },
    });
    new client.Gauge({
      name: PREFIX + "programmed",
      help: "Kernel objects of kube-egress read back from the node: pod_set_entries, " +
        "nosteer_set_entries, nat_rules, ip_rules, routes.",
      labelNames: ["object"],
      registers,
      collect() {
        const f = read();
        if (!f) return;
        const p = f.programmed;
        this.set({ object: "pod_set_entries" }, p.podSetEntries);
        this.set({ object: "nosteer_set_entries" }, p.nosteerSetEntries);
        this.set({ object: "nat_rules" }, p.natRules);
        this.set({ object: "ip_rules" }, p.ipRules);
        this.set({ object: "routes" }, p.routes);
      },
    });
  }

  async #readKernel(): Promise<KernelFigures | undefined> {
    const { config, host } = this.#options;
    try {
      const live = await host.readLive(config, { counters: true, ourChainsOnly: true });
      const figures = kernelFigures(live, live.raw, config.interface);
      this.#packets.update(figures.packets);
      this.#bytes.update(figures.bytes);
      this.#connections.update(figures.connections);
      // A VIP once seen keeps its counter series, so totals never vanish mid-run.
      for (const v of figures.vips) this.#kernelVips.add(v.vip);
      return figures;
    } catch {
      this.#kernelReadErrors.inc();
      return undefined;
    }
  }

  /** The few process figures that mean something under Deno (prom-client's defaults assume Node). */
  #registerProcessMetrics() {
    const registers = [this.registry];
    const startSeconds = Math.round(Date.now() / 1000 - performance.now() / 1000);
    new client.Gauge({
      name: "process_start_time_seconds",
      help: "Start time of the process since unix epoch in seconds.",
      registers,
      collect() {
        this.set(startSeconds);
      },
    });
    new client.Gauge({
      name: "process_resident_memory_bytes",
      help: "Resident memory size in bytes.",
      registers,
      collect() {
        this.set(Deno.memoryUsage().rss);
      },
    });
    new client.Gauge({
      name: "process_heap_used_bytes",
      help: "JavaScript heap in use, in bytes.",
      registers,
      collect() {
        this.set(Deno.memoryUsage().heapUsed);
      },
    });
    new client.Counter({
      name: "process_cpu_seconds_total",
      help: "Total user and system CPU time spent in seconds.",
      registers,
      collect() {
        const { user, system } = cpuUsage();
        this.reset();
        this.inc((user + system) / 1e6);
      },
    });
  }
}
