/**
 * Network namespaces owned by one simulator run. Every namespace name starts
 * with the run's unique id, is recorded the moment it is created, and is
 * deleted (after killing whatever runs inside it) by `destroy`, which the
 * callers run on success, failure and Ctrl-C. Nothing here creates a link in
 * the root namespace: veth pairs are born inside their namespaces.
 */
import $ from "dax";

/** A short unique id for namespace names: "ke" + 6 hex digits. */
export function newRunId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  return "ke" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** One namespace: run commands in it. */
export class Netns {
  constructor(readonly name: string) {}

  /** Runs a command inside the namespace; throws with its stderr on failure. */
  async run(
    args: readonly string[],
    options: { stdin?: string; timeoutMs?: number } = {},
  ): Promise<string> {
    const result = await this.exec(args, options);
    if (result.code !== 0) {
      throw new Error(
        `[${this.name}] ${args.join(" ")} failed (exit ${result.code}): ${result.stderr.trim()}`,
      );
    }
    return result.stdout;
  }

  /** Runs a command inside the namespace and returns its exit code and output. */
  async exec(
    args: readonly string[],
    options: { stdin?: string; timeoutMs?: number } = {},
  ): Promise<ExecResult> {
    let command = $`ip netns exec ${this.name} ${args}`.stdout("piped").stderr("piped").noThrow();
    if (options.stdin !== undefined) command = command.stdinText(options.stdin);
    command = command.timeout(options.timeoutMs ?? 30_000);
    const result = await command;
    return { code: result.code, stdout: result.stdout, stderr: result.stderr };
  }

  /** Runs several `ip` commands in one process (`ip -batch`). */
  async ip(lines: readonly string[]): Promise<void> {
    if (lines.length > 0) await this.run(["ip", "-batch", "-"], { stdin: lines.join("\n") + "\n" });
  }

  /** Sets sysctls ("net.ipv4.ip_forward=1") inside the namespace. */
  async sysctl(...settings: string[]): Promise<void> {
    for (const setting of settings) {
      const [key, value] = setting.split("=");
      await this.run(["sh", "-c", `echo ${value} > /proc/sys/${key.replaceAll(".", "/")}`]);
    }
  }

  /** Starts a long-running process inside the namespace. */
  spawn(
    args: readonly string[],
    options: { stdout?: "piped" | "null" | "inherit"; stderr?: "piped" | "null" } = {},
  ): Deno.ChildProcess {
    return new Deno.Command("ip", {
      args: ["netns", "exec", this.name, ...args],
      stdout: options.stdout ?? "null",
      stderr: options.stderr ?? "piped",
      stdin: "null",
    }).spawn();
  }

  /**
   * Starts a process that outlives this program (`sim up`): in its own
   * session, output appended to `log` (or discarded). It stays in the
   * namespace, so deleting the run's namespaces (`sim down`) ends it.
   */
  spawnDetached(args: readonly string[], log?: string): void {
    const redirect = log === undefined ? "" : ' >>"$KE_SIM_LOG" 2>&1';
    const child = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        this.name,
        "setsid",
        "sh",
        "-c",
        `exec "$0" "$@"${redirect}`,
        ...args,
      ],
      env: log === undefined ? {} : { KE_SIM_LOG: log },
      stdout: "null",
      stderr: "null",
      stdin: "null",
    }).spawn();
    child.unref();
  }

  /** The ids of the processes running inside the namespace. */
  async pids(): Promise<number[]> {
    const text = await $`ip netns pids ${this.name}`.noThrow().quiet().text().catch(() => "");
    return text.split("\n").map((p) => Number(p.trim())).filter((p) => p > 0);
  }
}

/** The namespaces of one run, created and destroyed together. */
export class NetnsSet {
  readonly #created: Netns[] = [];
  constructor(readonly runId: string) {}

  #closed = false;

  /** Creates `<runId>-<suffix>` with loopback up (refused once `destroy` has begun). */
  async create(suffix: string): Promise<Netns> {
    const name = `${this.runId}-${suffix}`;
    if (this.#closed) throw new Error(`run ${this.runId} is being torn down`);
    await $`ip netns add ${name}`.quiet();
    const ns = new Netns(name);
    if (this.#closed) {
      // destroy() began while this one was being added: it would never see it.
      await $`ip netns del ${name}`.noThrow().quiet();
      throw new Error(`run ${this.runId} is being torn down`);
    }
    this.#created.push(ns);
    await ns.ip(["link set lo up"]);
    return ns;
  }

  /**
   * Names the network namespace of process `pid` `<runId>-<suffix>` (`ip netns
   * attach`): a namespace a container holds, which the run then builds on
   * like any other. `destroy` deletes the name; the namespace lives on until
   * its last process (the container) is gone.
   */
  async attach(suffix: string, pid: number): Promise<Netns> {
    const name = `${this.runId}-${suffix}`;
    if (this.#closed) throw new Error(`run ${this.runId} is being torn down`);
    await $`ip netns attach ${name} ${pid}`.quiet();
    const ns = new Netns(name);
    this.#created.push(ns);
    await ns.ip(["link set lo up"]);
    return ns;
  }

  get all(): readonly Netns[] {
    return this.#created;
  }

  /** The namespaces of an earlier run that still exist (for `sim down` and `sim status`). */
  static async adopt(runId: string): Promise<NetnsSet> {
    const set = new NetnsSet(runId);
    for (const name of await runNamespaces(runId)) set.#created.push(new Netns(name));
    return set;
  }

  /** Kills every process in our namespaces, then deletes them. Safe to call twice. */
  async destroy(): Promise<void> {
    this.#closed = true;
    const namespaces = this.#created.splice(0).reverse();
    for (const ns of namespaces) {
      for (const pid of await ns.pids()) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // Already gone.
        }
      }
    }
    for (const ns of namespaces) await $`ip netns del ${ns.name}`.noThrow().quiet();
  }
}

async function namespaceNames(): Promise<string[]> {
  const text = await $`ip netns list`.noThrow().quiet().text();
  return text.split("\n").map((l) => l.split(" ")[0]).filter(Boolean);
}

/** Namespaces left by earlier runs (names starting with our "ke" prefix and a run id). */
export async function leftoverNamespaces(): Promise<string[]> {
  return (await namespaceNames()).filter((n) => /^ke[0-9a-f]{6}-/.test(n));
}

/** The namespaces of one run: exactly those named "<runId>-...". */
export async function runNamespaces(runId: string): Promise<string[]> {
  return (await namespaceNames()).filter((n) => n.startsWith(`${runId}-`));
}
