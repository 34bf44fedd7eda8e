/**
 * The real agent (`mod.ts run`) as a process inside a node's namespace: once
 * (one pass, deterministic for tests) or as a long-running agent whose log
 * lines are collected.
 */
import { join } from "node:path";
import { DEFAULT_STATE_DIR } from "../cmd/options.ts";
import type { Cluster, SimNode } from "./cluster.ts";
import { eachLine } from "./children.ts";
import type { ExecResult, Netns } from "./netns.ts";

const MOD = new URL("../mod.ts", import.meta.url).pathname;

/** For callers that place VIPs themselves (sim/vip.ts): the agent only follows the addresses. */
export const EXTERNAL: readonly string[] = ["--vip-mode", "external"];

/**
 * The agent places the VIPs (the default only with --source kubernetes; the
 * mapping directories follow, as egress.sh did). Long-running agents get it
 * first, so that EXTERNAL in a caller's flags still wins (the last one does).
 */
export const KEEPALIVED: readonly string[] = ["--vip-mode", "keepalived"];

/**
 * Where the agents run when not as processes in the node namespaces: an
 * image runtime (sim/image_agents.ts) runs them in containers, and holds each
 * node's namespace in one. `args` are the cluster's and the caller's flags.
 */
export interface AgentRuntime {
  /** For the story's lines: where the agents run. */
  readonly description: string;
  /** Creates the node's namespace `<runId>-<suffix>` (a container holds it). */
  nodeNamespace(cluster: Cluster, suffix: string): Promise<Netns>;
  /** Starts a long-running agent (`run`) on the node. */
  start(cluster: Cluster, node: SimNode, args: readonly string[]): AgentProcess;
  /** Runs one agent command on the node and waits for it. */
  command(
    cluster: Cluster,
    node: SimNode,
    command: string,
    args: readonly string[],
    timeoutMs: number,
  ): Promise<ExecResult>;
  /** Removes everything it made (containers, and what it owns besides). Safe to call twice. */
  destroy(): Promise<void>;
}

/**
 * A path of a simulated node's own file system (what a hostPath names on a
 * real node), inside the run's work dir: each node has its own.
 */
export function nodeHostPath(cluster: Cluster, node: SimNode, path: string): string {
  return join(cluster.workDir, "hosts", node.name, path);
}

/** A node's agent state directory (keepalived.conf, pid files, vips.json): the node's /run/kube-egress. */
export function stateDirOf(cluster: Cluster, node: SimNode): string {
  return nodeHostPath(cluster, node, DEFAULT_STATE_DIR);
}

/**
 * The pid, as this program sees it, of a `comm` process (e.g. keepalived)
 * on the node whose pid in its own PID namespace is `pid` (what its pid file
 * says: in a container that is the container's numbering). Throws when none
 * runs.
 */
export async function hostPidOf(node: SimNode, pid: number, comm: string): Promise<number> {
  for (const candidate of await node.ns.pids()) {
    const status = await Deno.readTextFile(`/proc/${candidate}/status`).catch(() => "");
    const name = /^Name:\s*(\S+)/m.exec(status)?.[1];
    const inner = /^NSpid:\s*(.*)$/m.exec(status)?.[1].trim().split(/\s+/).at(-1);
    if (name === comm && Number(inner) === pid) return candidate;
  }
  throw new Error(`no ${comm} with pid ${pid} (in its namespace) runs on ${node.name}`);
}

/** The flags that make one node's agent distinct: its name (VRRP priorities) and state directory. */
export function nodeFlags(cluster: Cluster, node: SimNode): string[] {
  return ["--node-name", node.name, "--state-dir", stateDirOf(cluster, node)];
}

/** `deno run mod.ts <command> <args>` as argv, with this Deno and only the modules already cached. */
export function modArgv(command: string, args: readonly string[]): string[] {
  return modCommandLine([command, ...args]);
}

/** `deno run mod.ts <args>` as argv: the image's entrypoint with a DaemonSet's `args`. */
export function modCommandLine(args: readonly string[]): string[] {
  return [Deno.execPath(), "run", "-A", "--cached-only", MOD, ...args];
}

/**
 * What a real node gives its agent that simulated nodes on one machine
 * share: its own /run (the default state directory) and its own name (the
 * DaemonSet's NODE_NAME; here every namespace has the machine's hostname).
 * As an `env` prefix for a command line, so that the flags stay exactly the
 * ones under test.
 */
export function nodeEnvironment(cluster: Cluster, node: SimNode): string[] {
  return ["env", `KUBE_EGRESS_STATE_DIR=${stateDirOf(cluster, node)}`, `NODE_NAME=${node.name}`];
}

/** `deno run mod.ts <command> <cluster flags> <node flags> <extra>` as argv. */
export function agentArgv(
  cluster: Cluster,
  node: SimNode,
  command: string,
  extra: readonly string[] = [],
): string[] {
  return modArgv(command, [
    ...cluster.agentFlags(),
    ...nodeFlags(cluster, node),
    ...extra,
  ]);
}

/** Runs one agent command on a node and waits for it. */
export function agentCommand(
  cluster: Cluster,
  node: SimNode,
  command: string,
  extra: readonly string[] = [],
): Promise<ExecResult> {
  if (cluster.agents) {
    return cluster.agents.command(
      cluster,
      node,
      command,
      [...cluster.agentFlags(), ...extra],
      60_000,
    );
  }
  return node.ns.exec(agentArgv(cluster, node, command, extra), { timeoutMs: 60_000 });
}

/**
 * One pass on every node, in parallel; throws if any fails. A single pass
 * cannot place VIPs: pass EXTERNAL when the caller places them.
 */
export async function applyOnAllNodes(
  cluster: Cluster,
  extra: readonly string[] = [],
): Promise<void> {
  const results = await Promise.all(
    cluster.nodes.map((node) => agentCommand(cluster, node, "run", extra)),
  );
  results.forEach((r, i) => {
    if (r.code !== 0) throw new Error(`agent on node${i + 1} failed (exit ${r.code}): ${r.stderr}`);
  });
}

/** A long-running agent: its log lines, and a way to stop it. */
export interface AgentProcess {
  readonly node: SimNode;
  readonly lines: string[];
  /** The process id (the agent itself: `ip netns exec` execs it). */
  readonly pid: number;
  /** Resolves with the exit code after the signal. */
  stop(signal?: Deno.Signal): Promise<number>;
  /**
   * Waits until a log line matches, or fails after `timeoutMs`. Only lines
   * from index `since` on count (take `lines.length` before causing the event).
   */
  waitFor(pattern: RegExp, timeoutMs?: number, since?: number): Promise<string>;
}

/** Starts `mod.ts run -u <interval>` on a node (keepalived places VIPs unless `extra` says EXTERNAL). */
export function startAgent(
  cluster: Cluster,
  node: SimNode,
  extra: readonly string[] = [],
  intervalSeconds = 30,
): AgentProcess {
  const args = ["-u", String(intervalSeconds), ...KEEPALIVED, ...extra];
  if (cluster.agents) {
    return cluster.agents.start(cluster, node, [...cluster.agentFlags(), ...args]);
  }
  return spawnAgent(node, agentArgv(cluster, node, "run", args));
}

/** Starts any long-running command line (`argv`, e.g. from `modArgv`) in a node's namespace. */
export function spawnAgent(node: SimNode, argv: readonly string[]): AgentProcess {
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", node.ns.name, ...argv],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  return watchAgent(node, child, (signal) => child.kill(signal));
}

/**
 * An AgentProcess over a started child whose stdout and stderr carry the
 * agent's output: `kill` delivers a signal to the agent (the child itself,
 * or its container), `toLine` turns an output line into a log line (text;
 * undefined drops it).
 */
export function watchAgent(
  node: SimNode,
  child: Deno.ChildProcess,
  kill: (signal: Deno.Signal) => void,
  toLine: (raw: string) => string | undefined = (raw) => raw,
): AgentProcess {
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  const collect = (stream: ReadableStream<Uint8Array>) =>
    eachLine(stream, (raw) => {
      const line = toLine(raw);
      if (line === undefined) return;
      lines.push(line);
      for (const w of waiters.filter((w) => w.pattern.test(line))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    });
  const done = Promise.all([collect(child.stdout), collect(child.stderr)]).catch(() => {});
  return {
    node,
    lines,
    pid: child.pid,
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        kill(signal);
      } catch {
        // Already exited.
      }
      // Bounded: an agent that does not stop in time is killed (and the caller sees 137).
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, 30_000)));
      if (await Promise.race([child.status.then(() => false), late.then(() => true)])) {
        lines.push(`[sim] agent on ${node.name} did not stop within 30 s after ${signal}; killed`);
        try {
          kill("SIGKILL");
        } catch {
          // Exited meanwhile.
        }
      }
      clearTimeout(timer);
      const status = await child.status;
      await done;
      return status.code;
    },
    waitFor(pattern, timeoutMs = 20_000, since = 0) {
      const seen = lines.slice(since).find((l) => pattern.test(l));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () =>
            reject(
              new Error(
                `no log line matching ${pattern} within ${timeoutMs} ms on ${node.name}:\n${
                  lines.join("\n")
                }`,
              ),
            ),
          timeoutMs,
        );
        waiters.push({ pattern, resolve: (line) => (clearTimeout(timer), resolve(line)) });
      });
    },
  };
}

/** The log file of a detached agent (`sim up`). */
export function agentLogPath(cluster: Cluster, node: SimNode): string {
  return `${cluster.logDir}/${node.name}.agent.log`;
}

/**
 * Starts `mod.ts run -u <interval>` on a node as a process that outlives this
 * program (`sim up`); its log goes to `agentLogPath`.
 */
export function startDetachedAgent(
  cluster: Cluster,
  node: SimNode,
  extra: readonly string[] = [],
  intervalSeconds = 30,
): void {
  if (cluster.agents) throw new Error("detached agents (sim up) run as processes only");
  node.ns.spawnDetached(
    agentArgv(cluster, node, "run", ["-u", String(intervalSeconds), ...KEEPALIVED, ...extra]),
    agentLogPath(cluster, node),
  );
}

/** Waits (bounded) until a line of a log file matches. */
export async function waitForLogLine(
  path: string,
  pattern: RegExp,
  timeoutMs = 30_000,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const text = await Deno.readTextFile(path).catch(() => "");
    const line = text.split("\n").find((l) => pattern.test(l));
    if (line !== undefined) return line;
    if (Date.now() >= deadline) {
      throw new Error(`no line matching ${pattern} in ${path} within ${timeoutMs} ms:\n${text}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
