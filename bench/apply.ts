/**
 * Apply benchmark: real passes against the kernel, in a throwaway network
 * namespace, for 1,000 and 10,000 mappings. Figures, not pass/fail.
 */
import { NetnsSet, newRunId } from "../sim/netns.ts";
import { table } from "../core/status.ts";

export interface ApplyFigure {
  op: string;
  mappings: number;
  vips: number;
  ms: number;
  processes: number;
  bytes: number;
  lines: number;
}

const WORKER = new URL("./apply_worker.ts", import.meta.url).pathname;

/** Runs the worker for each size in a fresh namespace and returns its figures. */
export async function benchApply(
  sizes: readonly number[] = [1000, 10000],
  vips = 16,
): Promise<ApplyFigure[]> {
  const figures: ApplyFigure[] = [];
  for (const size of sizes) {
    const namespaces = new NetnsSet(newRunId());
    try {
      const ns = await namespaces.create("bench");
      await ns.ip([
        "link add eth0 type veth peer name eth1",
        "link set eth0 up",
        "link set eth1 up",
        "addr add 192.0.2.11/24 dev eth0",
      ]);
      const out = await ns.run([
        Deno.execPath(),
        "run",
        "-A",
        "--cached-only",
        WORKER,
        String(size),
        String(vips),
      ], { timeoutMs: 300_000 });
      figures.push(...out.trim().split("\n").map((l) => JSON.parse(l) as ApplyFigure));
    } finally {
      await namespaces.destroy();
    }
  }
  return figures;
}

export function renderApply(figures: readonly ApplyFigure[]): string {
  return table(
    ["OPERATION", "MAPPINGS", "VIPS", "TIME (ms)", "PROCESSES", "BYTES WRITTEN", "LINES"],
    figures.map((
      f,
    ) => [
      f.op,
      String(f.mappings),
      String(f.vips),
      f.ms.toFixed(1),
      String(f.processes),
      String(f.bytes),
      String(f.lines),
    ]),
  );
}
