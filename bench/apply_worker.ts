/**
 * Runs inside a network namespace (started by bench/apply.ts): times real
 * passes of the agent against the kernel for a given number of mappings and
 * prints one JSON line per sample. Every operation is repeated; the whole
 * cycle (first apply … delete) runs `cycles` times.
 *
 * Usage: deno run -A bench/apply_worker.ts <mappings> <vips> <cycles>
 */
import $ from "dax";
import { Agent, type PassOptions } from "../cmd/agent.ts";
import { createLogger } from "../cmd/log.ts";
import { systemHost } from "../cmd/system.ts";
import type { RawSnapshot } from "../core/snapshot.ts";
import { BENCH_CONFIG, syntheticSnapshot, vipAddress } from "./inputs.ts";

const [mappings, vipCount, cycles] = Deno.args.map(Number);
/** Samples of each repeated operation per cycle. */
const REPEAT = 5;

let inputs: RawSnapshot = syntheticSnapshot(mappings, vipCount);
const agent = new Agent(systemHost(), createLogger("text", () => {}), {
  config: BENCH_CONFIG,
  readInputs: () => Promise.resolve(inputs),
  dryRun: false,
});

function sample(op: string, r: {
  ms: number;
  processes: number;
  bytes: number;
  lines: number;
  setsRead?: string;
}) {
  console.log(JSON.stringify({ op, mappings, vips: vipCount, ...r }));
}

async function pass(op: string, options: PassOptions) {
  const r = await agent.pass("bench", options);
  if (!r.ok) throw new Error(`${op}: ${r.error}`);
  sample(op, { ms: r.durationMs, ...r });
}

const full = { setCheck: "full" } as const;
const quick = { setCheck: "quick" } as const;
const withExtra = (extra: number) => {
  const snapshot = syntheticSnapshot(mappings + extra, vipCount);
  return () => (inputs = snapshot);
};
const base = syntheticSnapshot(mappings, vipCount);
const plusOne = withExtra(1);
// VIP #1 moves onto this node and away again: the role flips twice.
const movingVip = vipAddress(1);

for (let cycle = 0; cycle < cycles; cycle++) {
  inputs = base;
  await pass("first apply", full);
  for (let i = 0; i < REPEAT; i++) await pass("unchanged pass, full check (resync)", full);
  for (let i = 0; i < REPEAT; i++) await pass("unchanged pass, quick check (event)", quick);
  for (let i = 0; i < REPEAT; i++) {
    plusOne();
    await pass("one pod added (event)", quick);
    inputs = base;
    await pass("one pod removed (event)", quick);
  }
  plusOne();
  await pass("one pod added, full check (resync)", full);
  inputs = base;
  await pass("one pod removed, full check (resync)", full);
  for (let i = 0; i < REPEAT; i++) {
    await $`ip addr add ${movingVip}/32 dev eth0`;
    await pass("VIP moves here (address event)", quick);
    await $`ip addr del ${movingVip}/32 dev eth0`;
    await pass("VIP moves away (address event)", quick);
  }
  const started = performance.now();
  const deleted = await agent.deleteAll();
  sample("delete", { ms: performance.now() - started, ...deleted });
}
