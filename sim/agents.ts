/**
 * The real agent (`mod.ts run`) as a process inside a node's namespace: once
 * (one pass, deterministic for tests) or as a long-running agent whose log
 * lines are collected.
 */
import { join } from "node:path";
import type { Cluster, SimNode } from "./cluster.ts";
import { eachLine } from "./children.ts";
import type { ExecResult } from "./netns.ts";

const MOD = new URL("../mod.ts", import.meta.url).pathname;

/** For callers that place VIPs themselves (sim/vip.ts): the agent only follows the addresses. */
export const EXTERNAL: readonly string[] = ["--vip-mode", "external"];

/**
 * The agent places the VIPs (the default only with --source kubernetes; the
 * mapping directories follow, as egress.sh did). Long-running agents get it
 * first, so that EXTERNAL in a caller's flags still wins (the last one does).
 */
export const KEEPALIVED: readonly string[] = ["--vip-mode", "keepalived"];

/** A node's agent state directory (keepalived.conf, pid files, vips.json), inside the run's work dir. */
export function stateDirOf(cluster: Cluster, node: SimNode): string {
  return join(cluster.workDir, "state", node.name);
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
  return spawnAgent(
    node,
    agentArgv(cluster, node, "run", ["-u", String(intervalSeconds), ...KEEPALIVED, ...extra]),
  );
}

/** Starts any long-running command line (`argv`, e.g. from `modArgv`) in a node's namespace. */
export function spawnAgent(node: SimNode, argv: readonly string[]): AgentProcess {
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", node.ns.name, ...argv],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  const collect = (stream: ReadableStream<Uint8Array>) =>
    eachLine(stream, (line) => {
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
        child.kill(signal);
      } catch {
        // Already exited.
      }
      // Bounded: an agent that does not stop in time is killed (and the caller sees 137).
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, 30_000)));
      if (await Promise.race([child.status.then(() => false), late.then(() => true)])) {
        lines.push(`[sim] agent on ${node.name} did not stop within 30 s after ${signal}; killed`);
        try {
          child.kill("SIGKILL");
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
