/**
 * Cost of the metrics endpoint (no root): one scrape's work after the kernel
 * read — turning the live state into per-VIP figures, accumulating the
 * counters, rendering the exposition with prom-client — for cluster-sized
 * inputs, and the start-up cost of loading prom-client at all.
 */
import $ from "dax";
import { Agent } from "../cmd/agent.ts";
import { createLogger } from "../cmd/log.ts";
import { AgentMetrics } from "../cmd/metrics.ts";
import type { Host } from "../cmd/system.ts";
import { table } from "../core/status.ts";
import { FakeKernel } from "../tests/fake_kernel.ts";
import { raw, testConfig } from "../tests/helpers.ts";
import { formatStats, type Stats, stats } from "./lib.ts";

export interface MetricsFigures {
  readonly pods: number;
  readonly vips: number;
  readonly renderMs: Stats;
  readonly bytes: number;
}

async function scrapeCost(pods: number, vips: number): Promise<MetricsFigures> {
  const kernel = new FakeKernel();
  const vipIps = Array.from({ length: vips }, (_, i) => `192.0.${2 + (i >> 8)}.${i & 255}`)
    .map((ip) => ip === "192.0.2.11" ? "192.0.9.1" : ip);
  const podIps = Array.from({ length: pods }, (_, i) => `10.244.${i >> 8}.${(i & 255)}`);
  const inputs = raw(
    Object.fromEntries(vipIps.map((ip, i) => [ip, String(i + 1)])),
    Object.fromEntries(podIps.map((ip, i) => [ip, vipIps[i % vips]])),
  );
  await new Agent(kernel.host(), createLogger("text", () => {}), {
    config: testConfig(),
    readInputs: () => Promise.resolve(inputs),
    dryRun: false,
  }).pass("bench");
  podIps.forEach((ip, i) => kernel.setCounters.set(ip, { packets: i, bytes: 100 * i }));
  // The kernel read itself (processes) is measured by `bench apply`; here it is served from memory.
  const fake = kernel.host();
  const live = await fake.readLive(testConfig(), { counters: true, ourChainsOnly: true });
  const host: Host = { ...fake, readLive: () => Promise.resolve(live) };
  const metrics = new AgentMetrics({ config: testConfig(), host });
  let bytes = 0;
  const samples: number[] = [];
  for (let i = 0; i < 12; i++) {
    const t = performance.now();
    bytes = (await metrics.render()).body.length;
    samples.push(performance.now() - t);
  }
  return {
    pods,
    vips,
    renderMs: stats(samples.slice(2)),
    bytes,
  };
}

/** Time to import prom-client in a fresh process, in ms (5 processes). */
async function loadCost(): Promise<Stats> {
  const code = 'const t = performance.now(); await import("prom-client"); ' +
    "console.log(performance.now() - t);";
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    const out = await $`${Deno.execPath()} eval --cached-only ${code}`
      .cwd(new URL("..", import.meta.url)).text();
    samples.push(Number(out));
  }
  return stats(samples);
}

export async function benchMetrics(): Promise<
  { scrapes: MetricsFigures[]; load: Awaited<ReturnType<typeof loadCost>> }
> {
  const scrapes: MetricsFigures[] = [];
  for (const [pods, vips] of [[1000, 16], [10000, 16], [10000, 250]]) {
    scrapes.push(await scrapeCost(pods, vips));
  }
  return { scrapes, load: await loadCost() };
}

export function renderMetrics(result: Awaited<ReturnType<typeof benchMetrics>>): string {
  const rows = result.scrapes.map((f) => [
    String(f.pods),
    String(f.vips),
    formatStats(f.renderMs),
    String(f.bytes),
  ]);
  return [
    table(["PODS", "VIPS", "SCRAPE MS (after kernel read)", "EXPOSITION BYTES"], rows),
    "",
    `importing prom-client in a fresh process: ${formatStats(result.load, 0)} ms`,
  ].join("\n");
}

export const METRICS_NOTES = [
  "A scrape re-reads the kernel (our chains with `iptables -S -v`, the pods set with `ipset save`: see `bench apply` for read costs), then does what is timed here: per-VIP figures from the read, monotonic counter accumulation per pod entry, prom-client rendering. Medians of 10 scrapes (min–max).",
  "Exposition size grows with VIPs, not pods (per-VIP series only).",
  "prom-client is imported only when `run --metrics-addr` is given, so plan/status/doctor and one-shot runs do not pay its import time.",
];
