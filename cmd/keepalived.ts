/**
 * keepalived as the agent's child: it places this node's share of the VIPs.
 * The agent renders the configuration (core/keepalived.ts), writes it under the
 * state directory, starts keepalived with its own pid files there (one
 * keepalived per node, also when several simulated nodes share a machine),
 * reloads it with SIGHUP when the configuration changes (keepalived keeps the
 * state of instances that did not change, so their VIPs stay put), restarts it
 * if it dies, and stops it gracefully so peers take over at once.
 *
 * The datapath never listens to keepalived: it follows the addresses on the
 * interface, whoever put them there.
 */
import { systemExec, which } from "./exec.ts";
import { z } from "zod";
import { joinPath } from "./path.ts";
import {
  instancePeers,
  type KeepalivedSettings,
  parseStateLine,
  type PlacementStatus,
  type PlacementVip,
  renderKeepalivedConf,
  type VrrpInstance,
  vrrpInstances,
  type VrrpState,
} from "../core/keepalived.ts";
import type { Logger } from "./log.ts";
import { LatestFile, writeAtomically } from "./state_file.ts";
import { Backoff } from "../core/backoff.ts";
import { errorMessage } from "../core/errors.ts";

/** Who places VIPs on this node (keepalived today; a Kubernetes lease mode may follow). */
export interface VipPlacement {
  /**
   * Offers this pass's VIPs; only eligible ones may be held here. Cheap when
   * nothing changed; never throws for a placement problem (it is logged and
   * retried), so the datapath pass always goes on.
   */
  update(vips: readonly PlacementVip[]): Promise<void>;
  /** Gives every VIP up so that peers take over now, and stops placing. */
  stop(): Promise<void>;
}

export const PLACEMENT_STATUS_FILE = "vips.json";

export interface KeepalivedOptions extends KeepalivedSettings {
  /** Directory for keepalived.conf, pid files and vips.json (one per node). */
  readonly stateDir: string;
  readonly log: Logger;
  /** keepalived reported a state change for a VIP (metrics, tests). */
  readonly onState?: (vip: string, state: VrrpState) => void;
  /** First restart delay after keepalived dies; doubles up to 30 s. */
  readonly restartDelayMs?: number;
}

const STOP_TIMEOUT_MS = 6000;
const MAX_RESTART_DELAY_MS = 30_000;
/** A keepalived that ran this long is healthy again: the restart delay starts over. */
const HEALTHY_AFTER_MS = 60_000;
const KEPT_LOG_LINES = 20;

/** keepalived log lines worth an operator's attention. */
const NOTEWORTHY = /error|fail|cannot|can't|unknown|invalid|warning|duplicate|conflict/i;

interface Running {
  /** Used to wait for the exit and read the log; signals go by pid once known (see #signal). */
  readonly child: Deno.ChildProcess;
  readonly startedAt: number;
  readonly exited: Promise<number>;
  /** keepalived's (parent) pid, read from its pid file once it has written it. */
  pid?: number;
  /** A reload was asked for before the pid was known. */
  reloadPending?: boolean;
}

/** keepalived as a child (Deno.Command: dax, ~20 MiB of the agent's memory, is not loaded for it). */
function spawnKeepalived(paths: Paths): Deno.ChildProcess {
  return new Deno.Command(which("keepalived") ?? "keepalived", {
    args: [
      "--dont-fork",
      "--log-console",
      "--vrrp",
      "--no_bfd",
      "--use-file",
      paths.conf,
      "--pid",
      paths.pid,
      "--vrrp_pid",
      paths.vrrpPid,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

interface Paths {
  readonly conf: string;
  readonly pid: string;
  readonly vrrpPid: string;
  readonly status: string;
}

/** The process behind a pid, if it is alive (a zombie is not) and is keepalived. */
async function liveKeepalived(pid: number): Promise<{ cmdline: string } | undefined> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    if (comm !== "keepalived" || state === "Z" || state === "X") return undefined;
    const cmdline = (await Deno.readTextFile(`/proc/${pid}/cmdline`)).replaceAll("\0", " ");
    return { cmdline };
  } catch {
    return undefined;
  }
}

async function readPid(path: string): Promise<number | undefined> {
  try {
    const pid = Number((await Deno.readTextFile(path)).trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The promise's value, or undefined if it takes longer than `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** VIP placement by a keepalived child process. */
export class KeepalivedPlacement implements VipPlacement {
  readonly #options: KeepalivedOptions;
  readonly #paths: Paths;
  #instances: VrrpInstance[] = [];
  #ineligible: string[] = [];
  #written: string | undefined;
  #running: Running | undefined;
  #states = new Map<number, VrrpState>();
  #lastLines: string[] = [];
  #stopping = false;
  #restartTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #restarts: Backoff;
  #reportedError: string | undefined;
  readonly #statusFile: LatestFile;

  constructor(options: KeepalivedOptions) {
    this.#options = options;
    this.#restarts = new Backoff(options.restartDelayMs ?? 1000, MAX_RESTART_DELAY_MS);
    const dir = options.stateDir;
    this.#paths = {
      conf: joinPath(dir, "keepalived.conf"),
      pid: joinPath(dir, "keepalived.pid"),
      vrrpPid: joinPath(dir, "vrrp.pid"),
      status: joinPath(dir, PLACEMENT_STATUS_FILE),
    };
    // keepalived's state lines come in bursts: each rewrites the file, in order.
    this.#statusFile = new LatestFile(this.#paths.status, () => this.#renderStatus());
  }

  /** The configuration file keepalived runs from. */
  get configPath(): string {
    return this.#paths.conf;
  }

  async update(vips: readonly PlacementVip[]): Promise<void> {
    if (this.#stopping) return;
    this.#instances = vrrpInstances(vips, this.#options.nodeName, this.#options.vridOffset);
    this.#ineligible = vips.filter((v) => v.eligible === false).map((v) => v.ip);
    try {
      const text = renderKeepalivedConf(
        this.#instances,
        await withLocalAddresses(this.#instances, this.#options),
      );
      if (text !== this.#written) {
        await Deno.mkdir(this.#options.stateDir, { recursive: true, mode: 0o700 });
        await writeAtomically(this.#paths.conf, text);
        const running = this.#written !== undefined ? this.#running : undefined;
        this.#written = text;
        if (running) this.#reload(running);
        await this.#writeStatus();
      }
      if (!this.#running && this.#restartTimer === undefined) await this.#start();
      this.#reportedError = undefined;
    } catch (error) {
      const message = errorMessage(error);
      if (message !== this.#reportedError) {
        this.#options.log.error("VIP placement failed; retrying on the next pass", {
          error: message,
        });
      }
      this.#reportedError = message;
    }
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#restartTimer);
    this.#restartTimer = undefined;
    const running = this.#running;
    if (!running) return;
    this.#running = undefined;
    // SIGTERM: keepalived sends priority-0 adverts (backups take over after
    // their skew time, a fraction of an advert interval) and removes the VIPs.
    this.#signal(running, "SIGTERM");
    if (await within(running.exited, STOP_TIMEOUT_MS) === undefined) {
      const vrrpPid = await readPid(this.#paths.vrrpPid);
      this.#signal(running, "SIGKILL");
      if (vrrpPid !== undefined && await liveKeepalived(vrrpPid)) Deno.kill(vrrpPid, "SIGKILL");
      await within(running.exited, STOP_TIMEOUT_MS);
      await this.#releaseAddresses();
    }
    this.#states.clear();
    await this.#writeStatus().catch(() => {});
    this.#options.log.info("keepalived stopped; this node's VIPs were handed over");
  }

  /**
   * Signals keepalived through the pid it wrote (the process that owns the
   * pid files); before that pid is known, through the child handle.
   */
  #signal(running: Running, signal: "SIGHUP" | "SIGTERM" | "SIGKILL") {
    try {
      if (running.pid !== undefined) Deno.kill(running.pid, signal);
      else running.child.kill(signal);
    } catch {
      // Already gone: its exit is handled by #exited.
    }
  }

  #reload(running: Running) {
    if (running.pid === undefined) {
      running.reloadPending = true;
      return;
    }
    this.#signal(running, "SIGHUP");
    this.#options.log.info("keepalived reloaded", { instances: this.#instances.length });
  }

  /** Waits (bounded) for keepalived to write its pid file, then remembers the pid. */
  async #learnPid(running: Running) {
    const deadline = performance.now() + STOP_TIMEOUT_MS;
    let exited = false;
    running.exited.then(() => (exited = true));
    while (!exited && performance.now() < deadline) {
      const pid = await readPid(this.#paths.pid);
      if (pid !== undefined && (await liveKeepalived(pid))?.cmdline.includes(this.#paths.conf)) {
        running.pid = pid;
        if (running.reloadPending && this.#running === running) this.#reload(running);
        return;
      }
      await sleep(20);
    }
  }

  async #start(): Promise<void> {
    await this.#retirePrevious();
    const child = spawnKeepalived(this.#paths);
    const startedAt = performance.now();
    const exited = child.status.then((status) => status.code);
    const running: Running = { child, startedAt, exited };
    this.#running = running;
    this.#followLog(child.stderr);
    this.#options.log.info("keepalived started", {
      config: this.#paths.conf,
      instances: this.#instances.length,
    });
    exited.then((code) => this.#exited(running, code));
    await this.#learnPid(running);
    await this.#writeStatus();
  }

  /**
   * A keepalived from an earlier agent run (the agent crashed or was killed)
   * would fight ours over the same pid files: stop it gracefully, and forget
   * pid files of processes that are gone.
   */
  async #retirePrevious(): Promise<void> {
    const pid = await readPid(this.#paths.pid);
    const previous = pid === undefined ? undefined : await liveKeepalived(pid);
    if (pid !== undefined && previous?.cmdline.includes(this.#paths.conf)) {
      this.#options.log.warn("stopping a keepalived left by an earlier agent run", { pid });
      Deno.kill(pid, "SIGTERM");
      for (let waited = 0; waited < STOP_TIMEOUT_MS; waited += 50) {
        if (!(await liveKeepalived(pid))) break;
        await sleep(50);
      }
      if (await liveKeepalived(pid)) Deno.kill(pid, "SIGKILL");
    }
    for (const path of [this.#paths.pid, this.#paths.vrrpPid]) {
      const owner = await readPid(path);
      if (owner === undefined || !(await liveKeepalived(owner))) {
        await Deno.remove(path).catch(() => {});
      }
    }
  }

  async #followLog(stream: ReadableStream<Uint8Array>) {
    let buffer = "";
    try {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        buffer += chunk;
        const lines = buffer.split("\n");
        buffer = lines.pop()!;
        for (const line of lines) this.#logLine(line);
      }
    } catch {
      // The stream ends with the process.
    }
  }

  #logLine(raw: string) {
    // keepalived prefixes a timestamp ("Mon Nov 23 12:05:42 2026: "); ours is enough.
    const line = raw.replace(/^\w{3} \w{3} [ \d]\d [\d:]{8} \d{4}: /, "").trim();
    if (!line) return;
    this.#lastLines.push(line);
    if (this.#lastLines.length > KEPT_LOG_LINES) this.#lastLines.shift();
    const change = parseStateLine(line);
    if (change) {
      const instance = this.#instances.find((i) => i.routeId === change.routeId);
      this.#states.set(change.routeId, change.state);
      this.#writeStatus().catch(() => {});
      if (instance) {
        this.#options.log.info("VRRP state", {
          vip: instance.vip,
          state: change.state,
          priority: instance.priority,
        });
        this.#options.onState?.(instance.vip, change.state);
      }
    } else if (NOTEWORTHY.test(line)) {
      this.#options.log.warn("keepalived", { line });
    }
  }

  #exited(running: Running, code: number) {
    if (this.#stopping || this.#running !== running) return;
    this.#running = undefined;
    this.#states.clear();
    // Killed without its own cleanup (SIGKILL, a crash), keepalived leaves its
    // VIPs on the interface while the peers take them over: remove them, so
    // the address is never on two nodes and this node's datapath turns to the
    // forwarding role at once.
    const released = this.#releaseAddresses().then(() => this.#writeStatus()).catch(() => {});
    if (performance.now() - running.startedAt > HEALTHY_AFTER_MS) this.#restarts.reset();
    this.#options.log.error("keepalived exited; its VIPs were released, restarting", {
      code,
      restart_in_ms: this.#restarts.nextMs,
      last_lines: this.#lastLines.slice(-5).join(" | "),
    });
    // Scheduled at once: no pass may start another keepalived in the meantime.
    this.#scheduleRestart(released);
  }

  #scheduleRestart(after: Promise<unknown>) {
    const delay = this.#restarts.take();
    this.#restartTimer = setTimeout(async () => {
      await after;
      this.#restartTimer = undefined;
      if (this.#stopping || this.#running) return;
      try {
        await this.#start();
      } catch (error) {
        this.#options.log.error("keepalived could not be started; retrying", {
          error: errorMessage(error),
          retry_in_ms: this.#restarts.nextMs,
        });
        this.#scheduleRestart(Promise.resolve());
      }
    }, delay);
  }

  /** Removes this configuration's VIPs from the interface (those that are there). */
  async #releaseAddresses(): Promise<void> {
    if (this.#instances.length === 0) return;
    const lines = this.#instances.map((i) =>
      `address del ${i.vip}/32 dev ${this.#options.interface}`
    );
    // -force: go on past addresses that are not there.
    await systemExec(["ip", "-force", "-batch", "-"], { stdin: lines.join("\n") + "\n" })
      .catch(() => {});
  }

  #writeStatus(): Promise<void> {
    return this.#statusFile.update();
  }

  #renderStatus(): string {
    const status: PlacementStatus = {
      mode: "keepalived",
      node: this.#options.nodeName,
      running: this.#running !== undefined,
      advertInterval: this.#options.advertInterval,
      preemptDelay: this.#options.preemptDelay,
      vips: this.#instances.map((i) => ({
        vip: i.vip,
        routeId: i.routeId,
        vrid: i.vrid,
        priority: i.priority,
        state: this.#states.get(i.routeId) ?? "UNKNOWN",
        ...unicastPeersOf(i, this.#options),
        ...(i.excluded ? { excluded: i.excluded } : {}),
      })),
      ineligible: this.#ineligible,
    };
    return JSON.stringify(status, null, 2) + "\n";
  }
}

/**
 * The settings with this node's addresses on the interface, where an instance
 * advertises by unicast: they are left out of its peers, and an IPv6 one names
 * its source (`KeepalivedSettings.localAddresses`); as they are otherwise.
 */
export async function withLocalAddresses(
  instances: readonly VrrpInstance[],
  settings: KeepalivedSettings,
): Promise<KeepalivedSettings> {
  if (settings.localAddresses) return settings;
  if (!instances.some((i) => instancePeers(i, settings).length > 0)) return settings;
  const r = await systemExec(["ip", "-json", "addr", "show", "dev", settings.interface], {
    timeoutMs: 5_000,
  });
  if (r.code !== 0) {
    throw new Error(`ip addr show dev ${settings.interface}: ${r.stderr.trim()}`);
  }
  const parsed = z.array(z.object({
    addr_info: z.array(z.object({ local: z.string(), scope: z.string().optional() })).optional(),
  })).safeParse(JSON.parse(r.stdout || "[]"));
  if (!parsed.success) throw new Error(`ip addr show dev ${settings.interface}: unreadable`);
  const localAddresses = parsed.data.flatMap((link) => link.addr_info ?? [])
    .filter((a) => a.scope !== "link").map((a) => a.local);
  return { ...settings, localAddresses };
}

/** An instance's unicast peers as `status` shows them (none: multicast). */
function unicastPeersOf(
  instance: VrrpInstance,
  settings: KeepalivedSettings,
): { peers?: readonly string[] } {
  const peers = instancePeers(instance, settings);
  return peers.length > 0 ? { peers } : {};
}

/**
 * Reads the placement status the agent wrote, if any; `running` is checked
 * against the process itself, so a crashed agent's file does not lie.
 */
export async function readPlacementStatus(stateDir: string): Promise<PlacementStatus | undefined> {
  let status: PlacementStatus;
  try {
    status = JSON.parse(await Deno.readTextFile(joinPath(stateDir, PLACEMENT_STATUS_FILE)));
  } catch {
    return undefined;
  }
  const pid = await readPid(joinPath(stateDir, "keepalived.pid"));
  const alive = pid !== undefined && (await liveKeepalived(pid)) !== undefined;
  return { ...status, running: status.running && alive };
}

/** `--dry-run`: prints the keepalived configuration whenever it would change, runs nothing. */
export function printingPlacement(
  settings: KeepalivedSettings,
  print: (text: string) => void,
): VipPlacement {
  let last: string | undefined;
  return {
    async update(vips) {
      const instances = vrrpInstances(vips, settings.nodeName, settings.vridOffset);
      const local = await withLocalAddresses(instances, settings).catch(() => settings);
      const text = renderKeepalivedConf(instances, local);
      if (text !== last) print(`# keepalived.conf (--vip-mode keepalived)\n${text}`);
      last = text;
    },
    stop: () => Promise.resolve(),
  };
}
