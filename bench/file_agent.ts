/**
 * What the benchmarks of a running agent share: a node namespace (eth0
 * 192.0.2.11/24, like the apply benchmark's), the real CLI started there with
 * the file source, and its JSON log lines with the time each arrived.
 */
import { join } from "node:path";
import { modArgv } from "../sim/agents.ts";
import type { Netns, NetnsSet } from "../sim/netns.ts";

/** A node namespace with eth0 192.0.2.11/24 (its peer stays in the namespace). */
export async function benchNode(namespaces: NetnsSet, suffix: string): Promise<Netns> {
  const ns = await namespaces.create(suffix);
  await ns.ip([
    "link add eth0 type veth peer name eth1",
    "link set eth0 up",
    "link set eth1 up",
    "addr add 192.0.2.11/24 dev eth0",
  ]);
  return ns;
}

/**
 * `mod.ts run` with the mapping directories `<dir>/pods` and `<dir>/vips`,
 * pods in 10.0.0.0/8, JSON logs, VIPs placed by the benchmark itself.
 */
export function fileAgentArgv(dir: string, intervalSeconds: number): string[] {
  return modArgv("run", [
    "--vip-mode",
    "external",
    "-u",
    String(intervalSeconds),
    "--log-format",
    "json",
    ...mappingFlags(dir),
  ]);
}

/**
 * The flags every benchmark agent shares: interface eth0, pods in 10.0.0.0/8,
 * services in 172.16.0.0/12, the mapping directories `<dir>/pods` and `<dir>/vips`.
 */
export function mappingFlags(dir: string): string[] {
  return [
    "-i",
    "eth0",
    "-p",
    "10.0.0.0/8",
    "-s",
    "172.16.0.0/12",
    "-v",
    join(dir, "pods"),
    "-r",
    join(dir, "vips"),
  ];
}

/** A running agent's JSON log lines (stderr), each with the time it arrived. */
export class AgentLog {
  readonly lines: { at: number; entry: Record<string, unknown> }[] = [];

  constructor(stream: ReadableStream<Uint8Array>) {
    (async () => {
      let buffer = "";
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        buffer += chunk;
        const parts = buffer.split("\n");
        buffer = parts.pop()!;
        for (const line of parts) {
          try {
            this.lines.push({ at: performance.now(), entry: JSON.parse(line) });
          } catch {
            // Not a log line (e.g. a Deno warning).
          }
        }
      }
    })().catch(() => {});
  }

  /** The first line that arrived at or after `since` and matches, waiting up to `timeoutMs`. */
  async waitFor(
    match: (entry: Record<string, unknown>) => boolean,
    since: number,
    timeoutMs = 30_000,
  ) {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const hit = this.lines.find((l) => l.at >= since && match(l.entry));
      if (hit) return hit;
      await new Promise((r) => setTimeout(r, 2));
    }
    throw new Error(
      `no matching agent log line within ${timeoutMs} ms:\n${
        this.lines.slice(-10).map((l) => JSON.stringify(l.entry)).join("\n")
      }`,
    );
  }
}
