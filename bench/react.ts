/**
 * Reaction benchmark: a running agent (`mod.ts run -u 300`, the real CLI) in a
 * throwaway namespace with N mappings; the VIP is added to and removed from
 * the interface repeatedly, and each time we measure how long it takes until
 * the agent has applied the new role (its "VIP role" log line is printed
 * after the transaction is in the kernel). The 300 s interval guarantees the
 * reaction comes from the address monitor, not the resync.
 */
import { join } from "node:path";
import { NetnsSet, newRunId } from "../sim/netns.ts";
import { AgentLog, benchNode, fileAgentArgv } from "./file_agent.ts";
import { table } from "../core/status.ts";

const VIP = "192.0.2.100";

export interface ReactFigure {
  mappings: number;
  direction: "arrives" | "leaves";
  samples: number[];
}

async function writeMappings(dir: string, mappings: number) {
  await Deno.mkdir(join(dir, "pods"), { recursive: true });
  await Deno.mkdir(join(dir, "vips"), { recursive: true });
  await Deno.writeTextFile(join(dir, "vips", VIP), "1\n");
  for (let i = 0; i < mappings; i++) {
    await Deno.writeTextFile(
      join(dir, "pods", `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`),
      `${VIP}\n`,
    );
  }
}

/** Runs `moves` VIP arrivals and departures against an agent holding `mappings` mappings. */
export async function benchReact(mappings: number, moves = 10): Promise<ReactFigure[]> {
  const namespaces = new NetnsSet(newRunId());
  const dir = await Deno.makeTempDir({ prefix: `${namespaces.runId}-react-` });
  let agent: Deno.ChildProcess | undefined;
  try {
    await writeMappings(dir, mappings);
    const ns = await benchNode(namespaces, "react");
    agent = ns.spawn(fileAgentArgv(dir, 300));
    const log = new AgentLog(agent.stderr);
    const waitRole = async (to: string, since: number) => {
      const hit = await log.waitFor((e) => e.msg === "VIP role" && e.to === to, since, 2000);
      return hit.at - since;
    };
    await waitRole("forwarder", 0);
    const arrives: number[] = [];
    const leaves: number[] = [];
    for (let i = 0; i < moves; i++) {
      let since = performance.now();
      await ns.run(["ip", "addr", "add", `${VIP}/32`, "dev", "eth0"]);
      arrives.push(await waitRole("holder", since));
      since = performance.now();
      await ns.run(["ip", "addr", "del", `${VIP}/32`, "dev", "eth0"]);
      leaves.push(await waitRole("forwarder", since));
    }
    return [{ mappings, direction: "arrives", samples: arrives }, {
      mappings,
      direction: "leaves",
      samples: leaves,
    }];
  } finally {
    try {
      agent?.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await agent?.status;
    await namespaces.destroy();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function stats(samples: number[]): [number, number, number] {
  const sorted = [...samples].sort((a, b) => a - b);
  return [sorted[0], sorted[Math.floor(sorted.length / 2)], sorted[sorted.length - 1]];
}

export function renderReact(figures: readonly ReactFigure[]): string {
  return table(
    ["MAPPINGS", "VIP", "MOVES", "MIN (ms)", "MEDIAN (ms)", "MAX (ms)"],
    figures.map((f) => {
      const [min, median, max] = stats(f.samples);
      return [
        String(f.mappings),
        f.direction,
        String(f.samples.length),
        min.toFixed(1),
        median.toFixed(1),
        max.toFixed(1),
      ];
    }),
  );
}
