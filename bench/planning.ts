/**
 * Planning benchmark (pure core, no root): snapshot → validation → desired
 * state → payload for 1k/10k/100k pods × 1/16/250 VIPs. Each size runs in its
 * own process so that its peak RSS is honest. Figures, not pass/fail.
 */
import { table } from "../core/status.ts";
import { formatStats, runWorker, type Stats, stats } from "./lib.ts";

const WORKER = new URL("./planning_worker.ts", import.meta.url).pathname;

interface Run {
  run: number;
  totalMs: number;
  validateMs: number;
  desiredMs: number;
  payloadMs: number;
  inSyncMs: number;
  lines: number;
  inSyncLines: number;
  bytes: number;
}

export interface PlanningFigure {
  pods: number;
  vips: number;
  coldMs: number;
  total: Stats;
  validate: Stats;
  desired: Stats;
  payload: Stats;
  inSync: Stats;
  lines: number;
  inSyncLines: number;
  bytes: number;
  rssBeforeMiB: number;
  peakRssMiB: number;
}

/** More repetitions for the fast sizes; the first (cold) run is reported on its own. */
function repsFor(pods: number): number {
  return pods >= 100_000 ? 7 : pods >= 10_000 ? 15 : 31;
}

export async function benchPlanning(
  sizes: readonly number[] = [1_000, 10_000, 100_000],
  vipCounts: readonly number[] = [1, 16, 250],
): Promise<PlanningFigure[]> {
  const figures: PlanningFigure[] = [];
  for (const pods of sizes) {
    for (const vips of vipCounts) {
      const out = await runWorker<Run & { rssBeforeMiB: number; peakRssMiB: number }>(
        WORKER,
        [pods, vips, repsFor(pods)],
      );
      const memory = out.pop()!;
      const [cold, ...warm] = out;
      const of = (key: keyof Run) => stats(warm.map((r) => r[key]));
      figures.push({
        pods,
        vips,
        coldMs: cold.totalMs,
        total: of("totalMs"),
        validate: of("validateMs"),
        desired: of("desiredMs"),
        payload: of("payloadMs"),
        inSync: of("inSyncMs"),
        lines: cold.lines,
        inSyncLines: cold.inSyncLines,
        bytes: cold.bytes,
        rssBeforeMiB: memory.rssBeforeMiB,
        peakRssMiB: memory.peakRssMiB,
      });
    }
  }
  return figures;
}

export function renderPlanning(figures: readonly PlanningFigure[]): string {
  return table(
    [
      "PODS",
      "VIPS",
      "TOTAL ms median (min–max)",
      "COLD ms",
      "VALIDATE",
      "DESIRED",
      "PAYLOAD",
      "LINES",
      "RE-PLAN IN SYNC ms",
      "PEAK RSS MiB",
      "RSS AT START",
    ],
    figures.map((f) => [
      String(f.pods),
      String(f.vips),
      formatStats(f.total),
      f.coldMs.toFixed(1),
      f.validate.median.toFixed(1),
      f.desired.median.toFixed(1),
      f.payload.median.toFixed(1),
      String(f.lines),
      `${f.inSync.median.toFixed(1)}${f.inSyncLines > 0 ? ` (${f.inSyncLines} lines!)` : ""}`,
      f.peakRssMiB.toFixed(0),
      f.rssBeforeMiB.toFixed(0),
    ]),
  );
}

export const PLANNING_NOTES = [
  "TOTAL = validate + desired + payload (the first-apply payload against an empty node, joined as written to stdin); median of the warm runs after the cold first one.",
  "RE-PLAN IN SYNC: the same desired state diffed against a node that already has it (the steady-state pass); 0 lines expected.",
  "PEAK RSS: VmHWM of the worker process, which also holds the raw input objects; RSS AT START is the bare Deno runtime with the modules loaded.",
  "One size: deno run -A bench/planning_worker.ts <pods> <vips> <reps> (JSON lines).",
];
