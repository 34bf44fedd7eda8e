/**
 * One size of the planning benchmark, alone in its process so that its peak
 * memory is its own: snapshot → validation → desired state → payload, timed
 * `reps` times after a cold first run. Prints one JSON line per run, then one
 * with the memory figures.
 *
 * Usage: deno run -A bench/planning_worker.ts <pods> <vips> <reps>
 */
import { desiredState } from "../core/desired.ts";
import { NO_NFTABLES } from "../core/nftables.ts";
import { jumpRule } from "../core/iptables.ts";
import { setsAfterApply } from "../core/ipset.ts";
import { type LiveState, planApply } from "../core/plan.ts";
import { render, renderedLines } from "../core/render.ts";
import { validateSnapshot } from "../core/snapshot.ts";
import { BENCH_CONFIG, syntheticSnapshot } from "./inputs.ts";
import { peakRssMiB, rssMiB } from "./lib.ts";

const [pods, vips, reps] = Deno.args.map(Number);
const rssBefore = rssMiB();
const config = BENCH_CONFIG;
const raw = syntheticSnapshot(pods, vips);
const emptyTable = { present: true, chainExists: false, rules: [], hookRules: [], onlyOurs: true };
const emptyNode: LiveState = {
  backend: "nft",
  nft: NO_NFTABLES,
  routes: { addresses: ["192.0.2.11"], rules: [], routes: [], podRoutes: [] },
  iptables: { mangle: emptyTable, nat: emptyTable },
  sets: { pods: new Map(), nosteer: new Set() },
  sysctls: {},
};

for (let run = 0; run <= reps; run++) {
  const t0 = performance.now();
  const { snapshot } = validateSnapshot(raw, config);
  const t1 = performance.now();
  const desired = desiredState(snapshot, config, ["192.0.2.11"]);
  const t2 = performance.now();
  const transaction = planApply(desired, emptyNode, config);
  const bytes = transaction.steps.reduce(
    (n, s) => n + render(s.op).lines.join("\n").length + 1,
    0,
  );
  const t3 = performance.now();
  // The pass after: the same desired state against a node that already has it.
  const chain = (table: "mangle" | "nat") => ({
    ...emptyTable,
    chainExists: true,
    rules: desired.chains[table],
    hookRules: [jumpRule(table)],
  });
  const inSync: LiveState = {
    ...emptyNode,
    routes: {
      addresses: ["192.0.2.11"],
      rules: desired.rules,
      routes: desired.routes.map((r) => ({ ...r, dst: "default" })),
      podRoutes: [],
    },
    iptables: { mangle: chain("mangle"), nat: chain("nat") },
    sets: setsAfterApply(emptyNode.sets, desired.podMarks, config.markMask, desired.noSteer),
    sysctls: { [`net.ipv4.conf.all.rp_filter`]: 0, [`net.ipv4.conf.eth0.rp_filter`]: 0 },
  };
  const t4 = performance.now();
  const again = planApply(desired, inSync, config);
  const t5 = performance.now();
  console.log(JSON.stringify({
    run,
    totalMs: t3 - t0,
    validateMs: t1 - t0,
    desiredMs: t2 - t1,
    payloadMs: t3 - t2,
    inSyncMs: t5 - t4,
    lines: renderedLines(transaction.steps),
    inSyncLines: renderedLines(again.steps),
    bytes,
  }));
}
console.log(JSON.stringify({ rssBeforeMiB: rssBefore, peakRssMiB: peakRssMiB() }));
