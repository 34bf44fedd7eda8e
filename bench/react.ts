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
import { table } from "../core/status.ts";

const MOD = new URL("../mod.ts", import.meta.url).pathname;
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
    const ns = await namespaces.create("react");
    await ns.ip([
      "link add eth0 type veth peer name eth1",
      "link set eth0 up",
      "link set eth1 up",
      "addr add 192.0.2.11/24 dev eth0",
    ]);
    agent = ns.spawn([
      Deno.execPath(),
      "run",
      "-A",
      "--cached-only",
      MOD,
      "run",
      "-u",
      "300",
      "--vip-mode",
      "external",
      "--log-format",
      "json",
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
    ]);
    const roles: { at: number; to: string }[] = [];
    (async () => {
      let buffer = "";
      for await (const chunk of agent!.stderr.pipeThrough(new TextDecoderStream())) {
        buffer += chunk;
        const lines = buffer.split("\n");
        buffer = lines.pop()!;
        for (const line of lines) {
          const entry = JSON.parse(line);
          if (entry.msg === "VIP role") roles.push({ at: performance.now(), to: entry.to });
        }
      }
    })().catch(() => {});
    const waitRole = async (to: string, since: number) => {
      for (let i = 0; i < 1000; i++) {
        const hit = roles.find((r) => r.at >= since && r.to === to);
        if (hit) return hit.at - since;
        await new Promise((r) => setTimeout(r, 2));
      }
      throw new Error(`the agent did not become ${to} within 2 s`);
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
