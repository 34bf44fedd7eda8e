/**
 * conntrackd as the agent's children: they replicate the NAT state of this
 * node's connections to the nodes that may take its VIPs over, and keep what
 * the peers replicate here for the takeover's commit (core/conntrackd.ts).
 * Supervised as keepalived is: the agent renders each instance's
 * configuration under the state directory, starts conntrackd in the
 * foreground with its own lock and control socket there (one set per node,
 * also when simulated nodes share a machine), restarts it with a backoff if
 * it dies, and restarts an instance whose configuration changed (conntrackd
 * has no reload; on start it asks its peer for the whole table, so nothing the
 * peer still has is lost). VIP changes never change the configuration.
 */
import $ from "dax";
import { join } from "node:path";
import { Backoff } from "../core/backoff.ts";
import type { ConntrackdCommit } from "../core/operation.ts";
import {
  type ConntrackdInstance,
  conntrackdInstances,
  type ConntrackdPaths,
  type ConntrackSyncSettings,
} from "../core/conntrackd.ts";
import { errorMessage } from "../core/errors.ts";
import type { Logger } from "./log.ts";
import { writeAtomically } from "./state_file.ts";

export interface ConntrackSyncOptions {
  readonly stateDir: string;
  readonly log: Logger;
  /** First restart delay after a conntrackd dies; doubles up to 30 s. */
  readonly restartDelayMs?: number;
}

const STOP_TIMEOUT_MS = 3000;
const MAX_RESTART_DELAY_MS = 30_000;

interface Running {
  readonly instance: ConntrackdInstance;
  readonly configPath: string;
  readonly child: ReturnType<typeof spawnConntrackd>;
  readonly exited: Promise<number>;
  readonly backoff: Backoff;
  stopping: boolean;
  restartTimer?: ReturnType<typeof setTimeout>;
}

function spawnConntrackd(configPath: string) {
  return $`conntrackd -C ${configPath}`.stdin("null").stdout("null").stderr("piped").noThrow()
    .spawn();
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The files of instance `name` under `stateDir`. */
export function conntrackdPaths(stateDir: string, name: string): ConntrackdPaths {
  const base = join(stateDir, `conntrackd-${name}`);
  return { lock: `${base}.lock`, socket: `${base}.ctl`, log: `${base}.log` };
}

/** The pids of live conntrackd processes started with `configPath`. */
async function conntrackdsOf(configPath: string): Promise<number[]> {
  const pids: number[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^[0-9]+$/.test(entry.name)) continue;
    try {
      const cmdline = (await Deno.readTextFile(`/proc/${entry.name}/cmdline`)).split("\0");
      // The daemon only: not a client of it (`conntrackd -C <conf> -c` and the like).
      const client = cmdline.some((arg) => /^-[a-zA-Z]$/.test(arg) && arg !== "-C");
      if (cmdline[0].endsWith("conntrackd") && cmdline.includes(configPath) && !client) {
        pids.push(Number(entry.name));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return pids;
}

/** Every conntrackd instance of this node, kept running with its current configuration. */
export class ConntrackSync {
  readonly #options: ConntrackSyncOptions;
  readonly #running = new Map<string, Running>();
  #stopped = false;

  constructor(options: ConntrackSyncOptions) {
    this.#options = options;
  }

  /** The commits a takeover runs: one per instance. */
  commits(): ConntrackdCommit[] {
    return [...this.#running.values()].map((r) => ({ config: r.configPath }));
  }

  /** Renders the instances for `settings`; starts, restarts and stops them to match. Never throws. */
  async update(settings: ConntrackSyncSettings): Promise<void> {
    if (this.#stopped) return;
    const dir = this.#options.stateDir;
    const wanted = conntrackdInstances(settings, (name) => conntrackdPaths(dir, name));
    const names = new Set(wanted.map((i) => i.name));
    for (const [name, running] of this.#running) {
      if (!names.has(name)) await this.#stop(running);
    }
    for (const instance of wanted) {
      const running = this.#running.get(instance.name);
      if (running?.instance.config === instance.config) continue;
      if (running) await this.#stop(running);
      try {
        await this.#start(instance);
      } catch (error) {
        this.#options.log.error("conntrackd could not be started", {
          instance: instance.name,
          error: errorMessage(error),
        });
      }
    }
  }

  /** Stops every instance. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all([...this.#running.values()].map((r) => this.#stop(r)));
  }

  async #start(instance: ConntrackdInstance, backoff?: Backoff): Promise<void> {
    const dir = this.#options.stateDir;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const configPath = join(dir, `conntrackd-${instance.name}.conf`);
    const paths = conntrackdPaths(dir, instance.name);
    // A conntrackd left by an earlier agent run holds the lock: stop it first.
    for (const pid of await conntrackdsOf(configPath)) {
      this.#options.log.warn("stopping a conntrackd left by an earlier agent run", { pid });
      try {
        Deno.kill(pid, "SIGTERM");
      } catch {
        // Gone.
      }
    }
    for (let waited = 0; waited < STOP_TIMEOUT_MS; waited += 50) {
      if ((await conntrackdsOf(configPath)).length === 0) break;
      await sleep(50);
    }
    for (const path of [paths.lock, paths.socket]) await Deno.remove(path).catch(() => {});
    await writeAtomically(configPath, instance.config);
    const child = spawnConntrackd(configPath);
    const running: Running = {
      instance,
      configPath,
      child,
      exited: child.then((r) => r.code),
      backoff: backoff ??
        new Backoff(this.#options.restartDelayMs ?? 1000, MAX_RESTART_DELAY_MS),
      stopping: false,
    };
    this.#running.set(instance.name, running);
    this.#followStderr(running);
    running.exited.then((code) => this.#exited(running, code));
    this.#options.log.info("conntrackd started", { instance: instance.name, config: configPath });
  }

  async #followStderr(running: Running) {
    try {
      const text = await new Response(running.child.stderr()).text();
      const lines = text.trim();
      if (lines && !running.stopping) {
        this.#options.log.warn("conntrackd", { instance: running.instance.name, output: lines });
      }
    } catch {
      // Ends with the process.
    }
  }

  #exited(running: Running, code: number) {
    if (running.stopping || this.#stopped || this.#running.get(running.instance.name) !== running) {
      return;
    }
    const delay = running.backoff.take();
    this.#options.log.error("conntrackd exited; restarting", {
      instance: running.instance.name,
      code,
      restart_in_ms: delay,
    });
    running.restartTimer = setTimeout(() => {
      if (this.#stopped || this.#running.get(running.instance.name) !== running) return;
      this.#start(running.instance, running.backoff).catch((error) =>
        this.#options.log.error("conntrackd could not be restarted", {
          instance: running.instance.name,
          error: errorMessage(error),
        })
      );
    }, delay);
  }

  async #stop(running: Running): Promise<void> {
    running.stopping = true;
    clearTimeout(running.restartTimer);
    if (this.#running.get(running.instance.name) === running) {
      this.#running.delete(running.instance.name);
    }
    for (const pid of await conntrackdsOf(running.configPath)) {
      try {
        Deno.kill(pid, "SIGTERM");
      } catch {
        // Gone.
      }
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => {
      timer = setTimeout(() => resolve("late"), STOP_TIMEOUT_MS);
    });
    const result = await Promise.race([running.exited, late]);
    clearTimeout(timer);
    if (result === "late") {
      for (const pid of await conntrackdsOf(running.configPath)) Deno.kill(pid, "SIGKILL");
    }
  }
}
