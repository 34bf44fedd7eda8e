/**
 * Runs inside a network namespace (started by bench/apply.ts): times real
 * passes of the agent against the kernel for a given number of mappings and
 * prints one JSON line per measured operation.
 *
 * Usage: deno run -A bench/apply_worker.ts <mappings> <vips>
 */
import { Agent } from "../cmd/agent.ts";
import { createLogger } from "../cmd/log.ts";
import { systemHost } from "../cmd/system.ts";
import { DatapathConfig } from "../core/schema.ts";
import type { RawSnapshot } from "../core/snapshot.ts";

const mappings = Number(Deno.args[0] ?? 1000);
const vipCount = Number(Deno.args[1] ?? 16);
const config = DatapathConfig.parse({
  interface: "eth0",
  podCidrs: ["10.0.0.0/8"],
  serviceCidrs: ["172.16.0.0/12"],
  excludeCidrs: [],
  markMask: "0xff",
  rulePriority: 1000,
  routeProtocol: 233,
});

/** VIPs 192.0.2.100+i with route ids 1+i; pods 10.x.y.z spread over them. */
function snapshotOf(pods: number, extra = 0): RawSnapshot {
  const vips = Array.from(
    { length: vipCount },
    (_, i) => ({ origin: `v${i}`, ip: `192.0.2.${100 + i}`, routeId: i + 1 }),
  );
  const list = Array.from({ length: pods + extra }, (_, i) => ({
    origin: `p${i}`,
    podIp: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
    vip: vips[i % vipCount].ip,
  }));
  return { vips, pods: list, problems: [] };
}

let inputs = snapshotOf(mappings);
const agent = new Agent(systemHost(), createLogger("text", () => {}), {
  config,
  readInputs: () => Promise.resolve(inputs),
  dryRun: false,
});
const report = (op: string, r: Awaited<ReturnType<Agent["pass"]>>) => {
  if (!r.ok) throw new Error(`${op}: ${r.error}`);
  console.log(
    JSON.stringify({
      op,
      mappings,
      vips: vipCount,
      ms: r.durationMs,
      processes: r.processes,
      bytes: r.bytes,
      lines: r.lines,
    }),
  );
};

report("first apply", await agent.pass("bench"));
report("unchanged pass", await agent.pass("bench"));
inputs = snapshotOf(mappings, 1);
report("one pod added", await agent.pass("bench"));
// Move VIP #1 onto this node and away again: the role flips twice.
const vip = "192.0.2.101";
await new Deno.Command("ip", { args: ["addr", "add", `${vip}/32`, "dev", "eth0"] }).output();
report("VIP arrives", await agent.pass("bench"));
await new Deno.Command("ip", { args: ["addr", "del", `${vip}/32`, "dev", "eth0"] }).output();
report("VIP leaves", await agent.pass("bench"));
const started = performance.now();
const deleted = await agent.deleteAll();
console.log(
  JSON.stringify({
    op: "delete",
    mappings,
    vips: vipCount,
    ms: performance.now() - started,
    processes: deleted.processes,
    bytes: deleted.bytes,
    lines: deleted.lines,
  }),
);
