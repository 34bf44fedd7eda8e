/**
 * Docker for building and running the node image on a machine we must not
 * disturb: a private `dockerd` with its own data root, exec root, pid file
 * and socket, that creates no bridge, no iptables rules and no forwarding
 * sysctl (containers get `--network none` or share a namespace we made), or
 * an existing daemon the caller names. `stop` removes every container of the
 * private daemon, stops it and deletes everything it wrote.
 */
import $ from "dax";
import { join } from "node:path";

export interface DockerResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** The Debian packages behind the tools here (docker.io's client matches its daemon). */
export const DOCKER_PACKAGES = ["docker.io"] as const;

/**
 * The docker client: $KUBE_EGRESS_DOCKER, else the one Debian's docker.io
 * installs next to its daemon (a newer client elsewhere on PATH may lack the
 * builder this daemon has), else `docker` on PATH.
 */
export function dockerClient(): string {
  const chosen = Deno.env.get("KUBE_EGRESS_DOCKER");
  if (chosen) return chosen;
  try {
    Deno.statSync("/usr/bin/docker");
    return "/usr/bin/docker";
  } catch {
    return "docker";
  }
}

/** A docker daemon reached through `host` (unix://...), and the client that talks to it. */
export class Docker {
  constructor(readonly host: string, readonly client = dockerClient()) {}

  /** Runs `docker <args>`; returns its exit code and output. */
  async exec(
    args: readonly string[],
    options: { stdin?: string | Uint8Array; timeoutMs?: number; env?: Record<string, string> } = {},
  ): Promise<DockerResult> {
    let command = $`${this.client} ${args}`
      .env({ DOCKER_HOST: this.host, DOCKER_BUILDKIT: "1", ...options.env })
      .stdout("piped").stderr("piped").noThrow().timeout(options.timeoutMs ?? 60_000);
    if (typeof options.stdin === "string") command = command.stdinText(options.stdin);
    else if (options.stdin) command = command.stdin(options.stdin);
    const r = await command;
    return { code: r.code, stdout: r.stdout, stderr: r.stderr };
  }

  /** Runs `docker <args>` and returns its stdout; throws with stderr on failure. */
  async run(args: readonly string[], options: Parameters<Docker["exec"]>[1] = {}) {
    const r = await this.exec(args, options);
    if (r.code !== 0) {
      throw new Error(
        `docker ${args.slice(0, 3).join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`,
      );
    }
    return r.stdout;
  }

  /** `docker <args>` as a spawned process (for attached containers whose output is streamed). */
  spawn(args: readonly string[]): Deno.ChildProcess {
    return new Deno.Command(this.client, {
      args: [...args],
      env: { DOCKER_HOST: this.host },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  }

  /** Answers `docker version` (the daemon is up). */
  async ping(): Promise<boolean> {
    return (await this.exec(["version", "--format", "{{.Server.Version}}"], { timeoutMs: 5000 }))
      .code === 0;
  }

  /** Removes containers by name or id, killing them first; missing ones are fine. */
  async removeContainers(names: readonly string[]): Promise<void> {
    if (names.length > 0) await this.exec(["rm", "-f", "-v", ...names], { timeoutMs: 60_000 });
  }
}

/** A private dockerd of one run: its files live in `dir` and nowhere else. */
export class PrivateDockerd {
  private constructor(
    readonly docker: Docker,
    readonly dir: string,
    readonly child: Deno.ChildProcess,
  ) {}

  /** Where its log goes (for error messages). */
  get logPath(): string {
    return join(this.dir, "dockerd.log");
  }

  /**
   * Starts dockerd under `<tmp>/<runId>-docker` (removed by `stop`) and waits
   * (bounded, 60 s) until it answers. Needs root and Debian's docker.io.
   */
  static async start(runId: string): Promise<PrivateDockerd> {
    if (!(await $.commandExists("dockerd"))) {
      throw new Error(
        `dockerd not found; install it with: apt-get install -y ${DOCKER_PACKAGES.join(" ")}`,
      );
    }
    const dir = await Deno.makeTempDir({ prefix: `${runId}-docker-` });
    const config = join(dir, "daemon.json");
    // An empty configuration: no /etc/docker/daemon.json of the machine applies.
    await Deno.writeTextFile(config, "{}\n");
    const socket = `unix://${join(dir, "docker.sock")}`;
    const log = await Deno.open(join(dir, "dockerd.log"), { write: true, create: true });
    // In its own session: a Ctrl-C reaches us, and we stop it in order.
    const child = new Deno.Command("setsid", {
      args: [
        "dockerd",
        "--config-file",
        config,
        "--data-root",
        join(dir, "data"),
        "--exec-root",
        join(dir, "exec"),
        "--pidfile",
        join(dir, "dockerd.pid"),
        "--host",
        socket,
        // Touch no network outside the run's own namespaces.
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",
        "--ip-masq=false",
        "--userland-proxy=false",
        "--log-level=warn",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    child.stderr.pipeTo(log.writable).catch(() => {});
    const daemon = new PrivateDockerd(new Docker(socket), dir, child);
    const deadline = Date.now() + 60_000;
    let exited = false;
    child.status.then(() => (exited = true));
    while (!(await daemon.docker.ping())) {
      if (exited || Date.now() > deadline) {
        const text = await Deno.readTextFile(daemon.logPath).catch(() => "");
        await daemon.stop();
        throw new Error(
          `dockerd did not start${exited ? " (it exited)" : " within 60 s"}:\n${
            text.split("\n").slice(-15).join("\n")
          }`,
        );
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    return daemon;
  }

  #stopped: Promise<void> | undefined;

  /**
   * Removes every container (all are this run's), stops dockerd (SIGTERM,
   * SIGKILL after 30 s), unmounts what it left mounted and deletes its
   * directory. Safe to call twice.
   */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    const ids = (await this.docker.exec(["ps", "-aq"], { timeoutMs: 10_000 })).stdout.split("\n")
      .filter(Boolean);
    await this.docker.removeContainers(ids);
    try {
      this.child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), 30_000)));
    if (await Promise.race([this.child.status.then(() => false), late])) {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // Exited meanwhile.
      }
    }
    clearTimeout(timer);
    await this.child.status;
    await removeDaemonDir(this.dir);
  }

  /**
   * Stops the private dockerd of a run that could not clean up (killed), by
   * its directory (`sim down --run <id>`): dockerd stops its containers on
   * SIGTERM; then its directory goes. Only a dockerd whose pid file is in
   * `dir` is signalled.
   */
  static async stopLeftover(dir: string): Promise<void> {
    const pid = Number((await Deno.readTextFile(join(dir, "dockerd.pid")).catch(() => "")).trim());
    const cmdline = pid > 0 ? await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "") : "";
    if (cmdline.startsWith("dockerd\0") && cmdline.includes(`${dir}/data`)) {
      Deno.kill(pid, "SIGTERM");
      for (
        let i = 0;
        i < 300 && (await Deno.stat(`/proc/${pid}`).then(() => true, () => false));
        i++
      ) {
        await new Promise((r) => setTimeout(r, 100));
      }
      await Deno.stat(`/proc/${pid}`).then(() => Deno.kill(pid, "SIGKILL"), () => {});
    }
    await removeDaemonDir(dir);
  }
}

/** Unmounts what a stopped dockerd left mounted below `dir` (deepest first), then deletes `dir`. */
async function removeDaemonDir(dir: string): Promise<void> {
  const mounts = (await Deno.readTextFile("/proc/self/mounts")).split("\n")
    .map((l) => l.split(" ")[1]?.replace(/\\040/g, " "))
    .filter((m): m is string => m !== undefined && m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const mount of mounts) await $`umount -l ${mount}`.noThrow().quiet();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
