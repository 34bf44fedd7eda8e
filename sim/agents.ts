/**
 * The real agent (`mod.ts run`) as a process inside a node's namespace: once
 * (one pass, deterministic for tests) or as a long-running agent whose log
 * lines are collected.
 */
import { join } from "node:path";
import type { Cluster, SimNode } from "./cluster.ts";
import type { ExecResult } from "./netns.ts";

const MOD = new URL("../mod.ts", import.meta.url).pathname;

/** For callers that place VIPs themselves (sim/vip.ts): the agent only follows the addresses. */
export const EXTERNAL: readonly string[] = ["--vip-mode", "external"];

/** A node's agent state directory (keepalived.conf, pid files, vips.json), inside the run's work dir. */
export function stateDirOf(cluster: Cluster, node: SimNode): string {
  return join(cluster.workDir, "state", node.name);
}

/** The flags that make one node's agent distinct: its name (VRRP priorities) and state directory. */
export function nodeFlags(cluster: Cluster, node: SimNode): string[] {
  return ["--node-name", node.name, "--state-dir", stateDirOf(cluster, node)];
}

/** `deno run mod.ts <command> <cluster flags> <node flags> <extra>` as argv. */
export function agentArgv(
  cluster: Cluster,
  node: SimNode,
  command: string,
  extra: readonly string[] = [],
): string[] {
  return [
    Deno.execPath(),
    "run",
    "-A",
    "--cached-only",
    MOD,
    command,
    ...cluster.agentFlags(),
    ...nodeFlags(cluster, node),
    ...extra,
  ];
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
  /** Resolves with the exit code after the signal. */
  stop(signal?: Deno.Signal): Promise<number>;
  /** Waits until a log line matches, or fails after `timeoutMs`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
}

/** Starts `mod.ts run -u <interval>` on a node (keepalived places VIPs unless `extra` says EXTERNAL). */
export function startAgent(
  cluster: Cluster,
  node: SimNode,
  extra: readonly string[] = [],
  intervalSeconds = 30,
): AgentProcess {
  const argv = agentArgv(cluster, node, "run", ["-u", String(intervalSeconds), ...extra]);
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", node.ns.name, ...argv],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    let buffer = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      const parts = buffer.split("\n");
      buffer = parts.pop()!;
      for (const line of parts) {
        lines.push(line);
        for (const w of waiters.filter((w) => w.pattern.test(line))) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(line);
        }
      }
    }
  };
  const done = Promise.all([collect(child.stdout), collect(child.stderr)]).catch(() => {});
  return {
    node,
    lines,
    async stop(signal: Deno.Signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch {
        // Already exited.
      }
      const status = await child.status;
      await done;
      return status.code;
    },
    waitFor(pattern, timeoutMs = 15_000) {
      const seen = lines.find((l) => pattern.test(l));
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
