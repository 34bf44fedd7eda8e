/**
 * The CLI: `run` (the agent; a drop-in for egress.sh), `plan`, `delete` and
 * `status`. Each command validates its flags, then drives the agent or the
 * core; exit codes: 0 success, 1 failure, 2 usage error.
 */
import { interfaceAddresses, type NatSync, planPass, renderTransaction } from "../core/plan.ts";
import { localPodRanges } from "../core/conntrack.ts";
import { renderedLines } from "../core/render.ts";
import { nodeStatus, renderStatus } from "../core/status.ts";
import { formatProblem, type RawSnapshot, validateSnapshot } from "../core/snapshot.ts";
import { Agent, type AgentObserver, type AgentSettings, runLoop } from "./agent.ts";
import { NeighbourAnnouncer } from "./announce.ts";
import type { PassGuard } from "./agent.ts";
import type { Guard } from "./guard.ts";
import { fileInputs, type Inputs, openInputs } from "./inputs.ts";
import { createLogger, fatalLine, type LogFormat, logFormatFromArgs, type Logger } from "./log.ts";
import {
  type CommonSettings,
  commonSettings,
  type ListenAddress,
  type PlacementSettings,
  RUN_FLAGS,
  runSettings,
} from "./options.ts";
import { readRunArgs, runLongOptions } from "./run_args.ts";
import { Exit, UsageError } from "./exit.ts";
import { resolveBackend } from "./backend.ts";
import { type Host, InterfaceMissingError, systemHost } from "./system.ts";
import { agentTools, ensureTools, PLACEMENT_TOOLS, SYNC_TOOLS } from "./tools.ts";
import { systemExec } from "./exec.ts";
import type { VipPlacement } from "./keepalived.ts";
import { type KeepalivedSettings, vrrpInstances } from "../core/keepalived.ts";
import { errorMessage } from "../core/errors.ts";
import { busyMessage, lockStateDir, StateDirBusyError, stateDirOwner } from "./state_lock.ts";
import { egressShCommandLine, EgressShUsageError } from "./egress_sh.ts";
import { tuneMallocForAgent } from "./malloc.ts";

/** Resync interval of `run --source kubernetes` when -u is not given (changes arrive by watch). */
const KUBERNETES_RESYNC_SECONDS = 60;

export function settingsFrom(options: Record<string, unknown>): CommonSettings {
  const parsed = commonSettings(options);
  if (!parsed.ok) throw new Exit(2, `invalid flags: ${parsed.message}`);
  return parsed.value;
}

/**
 * Settles `--backend auto` into the backend this node uses (config.backend,
 * which every read and plan follows); done once, before anything reads the node.
 */
export async function settleBackend(settings: CommonSettings): Promise<void> {
  const { backend } = await resolveBackend(settings.backend);
  settings.config.backend = backend;
}

async function preflight(
  host: Host,
  settings: CommonSettings,
  placing = false,
  /** false: the caller's first read finds a missing interface before any change (one-shot run). */
  checkInterface = true,
): Promise<void> {
  await settleBackend(settings);
  const syncing = placing && settings.conntrackSync.syncMode === "on";
  await ensureTools([
    ...agentTools(settings.config.backend),
    ...(placing ? PLACEMENT_TOOLS : []),
    ...(syncing ? SYNC_TOOLS : []),
  ], {
    install: false,
  }).catch((e) => {
    throw new Exit(1, e.message);
  });
  // The interface must exist before anything is changed.
  if (!checkInterface) return;
  await host.readLive(settings.config).catch((e) => {
    throw e instanceof InterfaceMissingError ? new Exit(1, e.message) : e;
  });
}

function newAgent(
  host: Host,
  log: Logger,
  settings: CommonSettings,
  dryRun: boolean,
  inputs: Inputs,
  observers: readonly AgentObserver[] = [],
  placement?: VipPlacement,
  conntrackSync?: AgentSettings["conntrackSync"],
  neighbours?: NeighbourAnnouncer,
  guard: PassGuard = REMOVE_GUARD_ONLY,
): Agent {
  return new Agent(host, log, {
    conntrackSync,
    guard,
    config: settings.config,
    readInputs: inputs.readInputs,
    dryRun,
    print: (text) => console.log(text),
    observers: [...inputs.observers, ...observers],
    placement,
    stateDir: settings.placement.stateDir,
    neighbours,
  });
}

/** Neighbour refresh and, where nothing else announces VIPs taken, gratuitous ARP (none in a dry run). */
function newNeighbours(
  settings: CommonSettings,
  log: Logger,
  dryRun: boolean,
): NeighbourAnnouncer | undefined {
  if (dryRun) return undefined;
  return new NeighbourAnnouncer(
    settings.config.interface,
    log,
    settings.placement.mode === "external",
  );
}

/** Agents that do not guard (one-shot runs, `delete`) still remove a guard table a running agent left. */
const REMOVE_GUARD_ONLY: PassGuard = {
  update: () => Promise.resolve(),
  // Loaded only here and by running agents: the guard and its probes are not a one-shot run's.
  delete: async () => (await import("./guard.ts")).deleteGuardTable(),
};

/**
 * The guard of a running agent (cmd/guard.ts), unless `--guard off` or a dry
 * run. The files source knows no Nodes: `--node-addresses`, else the unicast
 * peers, are every VIP's nodes; without either the guard only watches.
 */
async function newGuard(
  settings: CommonSettings,
  log: Logger,
  dryRun: boolean,
  observers: readonly AgentObserver[],
): Promise<Guard | undefined> {
  if (settings.guard === "off" || dryRun) return undefined;
  const { Guard } = await import("./guard.ts");
  const { unicastPeers } = settings.placement;
  const nodes = settings.nodeAddresses.length > 0
    ? settings.nodeAddresses
    : Array.isArray(unicastPeers) && unicastPeers.length > 0
    ? unicastPeers
    : undefined;
  return new Guard({
    iface: settings.config.interface,
    mask: settings.config.markMask,
    vrrp: settings.placement.mode === "keepalived",
    vridOffset: settings.placement.vridOffset,
    ...(settings.source === "files" && nodes ? { nodes } : {}),
    log,
    observers,
  });
}

/** keepalived's settings for this node, from the flags. */
function keepalivedSettings(settings: CommonSettings): KeepalivedSettings {
  const { nodeName, advertInterval, preemptDelay, unicastPeers, vridOffset } = settings.placement;
  return {
    interface: settings.config.interface,
    nodeName,
    advertInterval,
    preemptDelay,
    // "auto": each VIP brings its peers from the Nodes (cmd/kube/source.ts).
    unicastPeers: unicastPeers === "auto" ? [] : unicastPeers,
    vridOffset,
  };
}

/**
 * Who places VIPs for a running agent: keepalived (a child process; in a dry
 * run its configuration is printed instead) or nobody (external mode).
 */
async function newPlacement(
  settings: CommonSettings,
  log: Logger,
  dryRun: boolean,
  observers: AgentObserver[],
): Promise<VipPlacement | undefined> {
  const placement: PlacementSettings = settings.placement;
  if (placement.mode === "external") return undefined;
  // Loaded only where VIPs are placed (modules a one-shot run does not need are not loaded).
  const { KeepalivedPlacement, printingPlacement } = await import("./keepalived.ts");
  if (dryRun) return printingPlacement(keepalivedSettings(settings), (t) => console.log(t));
  return new KeepalivedPlacement({
    ...keepalivedSettings(settings),
    stateDir: placement.stateDir,
    log,
    onState: (vip, state) => observers.forEach((o) => o.vrrp?.(vip, state)),
  });
}

/** This node's first IPv4 address on `iface` that is not a /32 (VIPs are). */
async function nodeAddress(iface: string): Promise<string | undefined> {
  const result = await systemExec(["ip", "-4", "-json", "addr", "show", "dev", iface])
    .catch(() => undefined);
  if (result === undefined || result.code !== 0) return undefined;
  const links = JSON.parse(result.stdout || "[]") as {
    addr_info?: { local: string; prefixlen: number }[];
  }[];
  const addresses = links.flatMap((l) => l.addr_info ?? []);
  return (addresses.find((a) => a.prefixlen < 32) ?? addresses[0])?.local;
}

/**
 * NAT state replication (`--conntrack-sync on`): conntrackd instances under the
 * state directory, updated with every pass's VIPs (their unicast peers with
 * `--vrrp-unicast-peers auto`). Undefined when off.
 */
async function newConntrackSync(
  settings: CommonSettings,
  log: Logger,
): Promise<(AgentSettings["conntrackSync"] & { stop(): Promise<void> }) | undefined> {
  const { syncMode: mode, syncInterface, syncAddress, syncPeers } = settings.conntrackSync;
  if (mode === "off") return undefined;
  const iface = syncInterface ?? settings.config.interface;
  const address = syncAddress ?? await nodeAddress(iface);
  if (address === undefined) {
    throw new Exit(
      1,
      `--conntrack-sync on: no IPv4 address on ${iface} (set --conntrack-sync-address)`,
    );
  }
  const { ConntrackSync } = await import("./conntrackd.ts");
  const sync = new ConntrackSync({ stateDir: settings.placement.stateDir, log });
  const flagPeers = settings.placement.unicastPeers;
  let localPodCidrs: string[] = [];
  return {
    update(vips, podRoutes) {
      // Acknowledged sync needs the peers: its own list, else VRRP's unicast peers.
      const peers = syncPeers.length > 0
        ? syncPeers
        : flagPeers === "auto"
        ? [...new Set(vips.flatMap((v) => v.peers ?? []))]
        : flagPeers;
      // This node's own pods: the pod ranges routed to a local device, not via a next hop.
      localPodCidrs = localPodRanges(podRoutes, iface);
      return sync.update({
        interface: iface,
        address,
        podCidrs: settings.config.podCidrs,
        localPodCidrs,
        peers,
      });
    },
    natSync: () => ({ commits: sync.commits(), localPodCidrs }),
    stop: () => sync.stop(),
  };
}

function waitForSignal(log: Logger): Promise<string> {
  return new Promise((resolve) => {
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      Deno.addSignalListener(signal, () => {
        log.info("signal received", { signal });
        resolve(signal);
      });
    }
  });
}

export async function controllerCommand(options: Record<string, unknown>): Promise<number> {
  const format = options.logFormat === "json"
    ? "json"
    : options.logFormat === "text"
    ? "text"
    : undefined;
  if (!format) throw new Exit(2, 'invalid flags: --log-format must be "text" or "json"');
  const log = createLogger(format);
  tuneMallocForAgent();
  const { startController } = await import("./controller.ts");
  const running = await startController({
    kubeconfig: options.kubeconfig as string | undefined,
    leaseNamespace: options.leaseNamespace as string | undefined,
    identity: options.identity as string | undefined,
  }, log);
  await waitForSignal(log);
  await running.stop();
  return 0;
}

export async function runCommand(options: Record<string, unknown>, host: Host): Promise<number> {
  const parsed = runSettings(options);
  if (!parsed.ok) throw new Exit(2, `invalid flags: ${parsed.message}`);
  const settings = parsed.value;
  const log = createLogger(settings.logFormat);
  const oneShot = settings.intervalSeconds === undefined && settings.source === "files";
  if (settings.metricsAddr && (oneShot || options.delete)) {
    throw new Exit(2, "--metrics-addr needs --update-interval (a one-shot run exits at once)");
  }
  const dryRun = options.dryRun === true;
  // The Kubernetes source is a watch: it always runs as an agent (resync default 60 s).
  const intervalSeconds = settings.intervalSeconds ??
    (settings.source === "kubernetes" ? KUBERNETES_RESYNC_SECONDS : undefined);
  const placing = settings.placement.mode === "keepalived" && !options.delete;
  if (placing && intervalSeconds === undefined && !dryRun) {
    throw new Exit(
      2,
      "--vip-mode keepalived places VIPs for as long as the agent runs: give -u <seconds>, " +
        "or leave --vip-mode at external (the default with the mapping directories) to apply once " +
        "and exit while something else places the VIPs, as egress.sh did",
    );
  }
  // A one-shot pass reads the node before it changes anything: no separate read first.
  const oneShotPass = !options.delete && intervalSeconds === undefined && !placing;
  await preflight(host, settings, placing && !dryRun, !oneShotPass);
  if (options.delete) {
    if (!dryRun) await refuseForeignStateDir(settings.placement.stateDir);
    const inputs = fileInputs(settings);
    await newAgent(host, log, settings, dryRun, inputs).deleteAll();
    return 0;
  }
  if (intervalSeconds === undefined) {
    if (!dryRun) await refuseForeignStateDir(settings.placement.stateDir);
    // In keepalived mode only a dry run gets here: it prints the configuration keepalived would get.
    const placement = placing ? await newPlacement(settings, log, dryRun, []) : undefined;
    const neighbours = newNeighbours(settings, log, dryRun);
    const agent = newAgent(
      host,
      log,
      settings,
      dryRun,
      fileInputs(settings),
      [],
      placement,
      undefined,
      neighbours,
    );
    const result = await agent.pass("once");
    if (result.interfaceMissing) {
      throw new Exit(1, new InterfaceMissingError(settings.config.interface).message);
    }
    // The announcement's later rounds, a few seconds at most.
    await neighbours?.settled();
    return result.ok ? 0 : 1;
  }
  // From here on the process stays: glibc gives memory back (cmd/malloc.ts; a one-shot never pays).
  tuneMallocForAgent();
  // A dry run writes nothing there; a running agent owns its state directory.
  const lock = dryRun ? undefined : await lockStateDir(settings.placement.stateDir, {
    node: settings.placement.nodeName,
    onWait: (owner) =>
      log.info("waiting for the agent that owns the state directory to stop", { owner }),
  }).catch((error) => {
    throw error instanceof StateDirBusyError ? new Exit(1, error.message) : error;
  });
  try {
    return await runAgent(settings, options, host, log, intervalSeconds, dryRun, placing);
  } finally {
    await lock?.release();
  }
}

/** Refuses a state directory that an agent of another network namespace owns (its files are another node's). */
async function refuseForeignStateDir(stateDir: string): Promise<void> {
  const view = await stateDirOwner(stateDir);
  if (view?.owner && !view.sameNetns) throw new Exit(1, busyMessage(stateDir, view));
}

/** The long-running agent: ops server, placement, inputs and the loop, until a signal. */
async function runAgent(
  settings: CommonSettings & { metricsAddr: ListenAddress | undefined },
  options: Record<string, unknown>,
  host: Host,
  log: Logger,
  intervalSeconds: number,
  dryRun: boolean,
  placing: boolean,
): Promise<number> {
  const { config, metricsAddr } = settings;
  // Loaded only when asked for: importing prom-client takes ~0.1 s (deno task bench metrics).
  const ops = metricsAddr
    ? (await import("./ops_server.ts")).startOpsServer({
      address: metricsAddr,
      config,
      host,
      intervalSeconds,
      log,
    })
    : undefined;
  const agentHost = ops?.host ?? host;
  const observers: AgentObserver[] = [...(ops?.observers ?? [])];
  const placement = placing ? await newPlacement(settings, log, dryRun, observers) : undefined;
  const inputs = await openInputs(settings, log, { agent: true });
  if (inputs.readiness) ops?.health.addCondition(settings.source, inputs.readiness);
  const neighbours = newNeighbours(settings, log, dryRun);
  const sync = dryRun ? undefined : await newConntrackSync(settings, log);
  const allObservers = [...inputs.observers, ...observers];
  const guard = (await newGuard(settings, log, dryRun, allObservers))?.start();
  const agent = newAgent(
    agentHost,
    log,
    settings,
    dryRun,
    inputs,
    observers,
    placement,
    sync,
    neighbours,
    guard,
  );
  try {
    await runLoop(agent, agentHost, config, log, {
      intervalSeconds,
      watchInputs: inputs.watchInputs,
      cleanupOnExit: options.cleanupOnExit === true,
      stop: waitForSignal(log),
    });
  } finally {
    neighbours?.stop();
    // After the hand-over: the new holders committed what they had by then.
    await sync?.stop();
    guard?.stop();
    await inputs.stop();
    await ops?.close();
  }
  return 0;
}

/** Reads the inputs once from the configured source (files, or one full list of the API). */
export async function readOnce(settings: CommonSettings): Promise<RawSnapshot> {
  const inputs = await openInputs(settings, createLogger(settings.logFormat), { agent: false });
  try {
    return await inputs.readInputs("once");
  } finally {
    await inputs.stop();
  }
}

/**
 * What `plan`, `status` and `doctor` assume of NAT state sync: only whether it
 * is on (its VIP guards are then part of the desired rules); they never commit.
 */
export function planningNatSync(settings: CommonSettings): NatSync | undefined {
  return settings.conntrackSync.syncMode === "on" ? { commits: [], localPodCidrs: [] } : undefined;
}

export async function planCommand(options: Record<string, unknown>, host: Host): Promise<number> {
  const settings = settingsFrom(options);
  await preflight(host, settings);
  const { snapshot, problems } = validateSnapshot(await readOnce(settings), settings.config);
  const live = await host.readLive(settings.config);
  const { desired, transaction } = planPass(snapshot, settings.config, live, {
    natSync: planningNatSync(settings),
  });
  const { mode, nodeName } = settings.placement;
  const instances = vrrpInstances(snapshot.vips, nodeName, settings.placement.vridOffset);
  const placementNote = (vip: string) => {
    if (mode === "external") return "";
    const instance = instances.find((i) => i.vip === vip);
    return instance
      ? `, VRRP priority ${instance.priority} on ${nodeName}`
      : `, not eligible on ${nodeName}`;
  };
  const out: string[] = [
    `# interface ${settings.config.interface}: ${
      interfaceAddresses(live).join(", ") || "no address"
    }`,
    `# ${snapshot.vips.length} VIP(s), ${snapshot.pods.length} mapping(s) valid, ${problems.length} input(s) rejected`,
    ...desired.roles.map((r) =>
      `#   VIP ${r.ip} route ${r.routeId} mark 0x${r.mark.toString(16)}: ${r.role}${
        placementNote(r.ip)
      }`
    ),
    ...problems.map((p) => `# rejected: ${formatProblem(p)}`),
    "",
    renderTransaction(transaction),
  ];
  console.log(out.join("\n"));
  return 0;
}

export async function deleteCommand(options: Record<string, unknown>, host: Host): Promise<number> {
  const settings = settingsFrom(options);
  await preflight(host, settings);
  const log = createLogger(settings.logFormat);
  if (options.dryRun !== true) await refuseForeignStateDir(settings.placement.stateDir);
  await newAgent(host, log, settings, options.dryRun === true, fileInputs(settings)).deleteAll();
  return 0;
}

export async function statusCommand(options: Record<string, unknown>, host: Host): Promise<number> {
  const settings = settingsFrom(options);
  await preflight(host, settings);
  const live = await host.readLive(settings.config, { counters: true });
  let extra: { pendingLines?: number; problems?: string[] } = {};
  try {
    const { snapshot, problems } = validateSnapshot(await readOnce(settings), settings.config);
    const { transaction } = planPass(snapshot, settings.config, live, {
      natSync: planningNatSync(settings),
    });
    extra = {
      pendingLines: renderedLines(transaction.steps),
      problems: problems.map(formatProblem),
    };
  } catch (error) {
    extra = { problems: [errorMessage(error)] };
  }
  const placement = settings.placement.mode === "keepalived"
    ? await placementStatusOfThisNode(settings)
    : undefined;
  const status = nodeStatus(live, live.raw, settings.config.interface, {
    ...extra,
    placement,
  });
  console.log(options.json ? JSON.stringify(status, null, 2) : renderStatus(status).trimEnd());
  return 0;
}

/**
 * keepalived's state from the agent's state directory, unless the directory
 * belongs to an agent of another network namespace: then it describes
 * another node, and is not shown as this one's.
 */
async function placementStatusOfThisNode(settings: CommonSettings) {
  const { stateDir } = settings.placement;
  const view = await stateDirOwner(stateDir);
  if (view?.owner && !view.sameNetns) {
    createLogger(settings.logFormat).warn("VRRP state not shown", {
      reason: busyMessage(stateDir, view),
    });
    return undefined;
  }
  return await (await import("./keepalived.ts")).readPlacementStatus(stateDir);
}

/**
 * Runs a command's body: an error ends it with its message (the fatal line)
 * and its exit code (`Exit`'s; 2 for a usage error, else 1).
 */
export async function runAction(
  body: (options: Record<string, unknown>, host: Host) => Promise<number>,
  options: Record<string, unknown>,
  host: Host,
  logFormat: LogFormat,
): Promise<number> {
  try {
    return await body(options, host);
  } catch (error) {
    const code = error instanceof Exit ? error.code : error instanceof UsageError ? 2 : 1;
    console.error(fatalLine(logFormat, errorMessage(error)));
    return code;
  }
}

/**
 * Runs the CLI and returns its exit code. The usual `run` line is read
 * without commander (cmd/run_args.ts); every other line (the other commands,
 * help, usage errors) is commander's (cmd/program.ts), loaded only then.
 */
export async function main(args: string[], host: Host = systemHost()): Promise<number> {
  const logFormat = logFormatFromArgs(args);
  try {
    args = egressShCommandLine(args, runLongOptions(RUN_FLAGS));
  } catch (error) {
    if (!(error instanceof EgressShUsageError)) throw error;
    console.error(fatalLine(logFormat, error.message));
    return 2;
  }
  const runOptions = args[0] === "run" ? readRunArgs(args.slice(1), RUN_FLAGS) : undefined;
  if (runOptions) return await runAction(runCommand, runOptions, host, logFormat);
  const { runProgram } = await import("./program.ts");
  return await runProgram(args, host, logFormat);
}
