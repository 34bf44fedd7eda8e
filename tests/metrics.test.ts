import assert from "node:assert/strict";
import { Agent } from "../cmd/agent.ts";
import { createLogger } from "../cmd/log.ts";
import { StepError } from "../cmd/system.ts";
import { AgentMetrics } from "../cmd/metrics.ts";
import { opsHandler, startOpsServer } from "../cmd/ops_server.ts";
import { CounterAccumulator } from "../core/egress_counters.ts";
import type { RawSnapshot } from "../core/snapshot.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { raw, testConfig } from "./helpers.ts";
import { parsePromText, sampleValue } from "./prom_text.ts";

const VIP = "192.0.2.50";
const POD = "10.244.1.5";
const GOOD = raw({ [VIP]: "5" }, { [POD]: VIP });

function setup(inputs: () => RawSnapshot) {
  const kernel = new FakeKernel();
  let clock = 1_000_000;
  const metrics = new AgentMetrics({ config: testConfig(), host: kernel.host(), now: () => clock });
  const fake = kernel.host();
  const host = metrics.observe(fake);
  const agent = new Agent(host, createLogger("text", () => {}), {
    config: testConfig(),
    readInputs: () => Promise.resolve(inputs()),
    dryRun: false,
    observers: [metrics],
  });
  const scrape = async () => parsePromText((await metrics.render()).body);
  return { kernel, metrics, agent, fake, host, scrape, tick: (ms: number) => (clock += ms) };
}

Deno.test("prom text reader: rejects what the exposition format forbids", () => {
  const bad = [
    'a{x="1"} 1\na{x="1"} 2', // duplicate series
    'a{x="\\t"} 1', // bad escape
    "a 1\nb 1\na 2", // split family
    "a one", // bad value
    "# TYPE a histogram\n" + 'a_bucket{le="1"} 2\na_bucket{le="+Inf"} 1\na_sum 1\na_count 1',
    "# TYPE a histogram\n" + 'a_bucket{le="1"} 1\na_sum 1\na_count 1', // no +Inf
    "a 1\n# TYPE a gauge", // TYPE after samples
    "0a 1",
  ];
  for (const text of bad) assert.throws(() => parsePromText(text), Error, text);
  const good = parsePromText('# HELP a x\\ny\n# TYPE a counter\na_total{v="q\\"\\\\\\n"} 3\n');
  assert.equal(sampleValue(good, "a_total", { v: 'q"\\\n' }), 3);
});

Deno.test("metrics: passes by result, errors by stage, duration histogram, inputs", async () => {
  let inputs = raw({ [VIP]: "5" }, { [POD]: VIP, "10.9.9.9": VIP });
  let fail = false;
  const { agent, scrape } = setup(() => {
    if (fail) throw new Error("mapping directory /x does not exist");
    return inputs;
  });
  await agent.pass("start");
  await agent.pass("resync");
  fail = true;
  await agent.pass("resync");
  let m = await scrape();
  assert.equal(sampleValue(m, "kube_egress_passes_total", { result: "applied" }), 1);
  assert.equal(sampleValue(m, "kube_egress_passes_total", { result: "unchanged" }), 1);
  assert.equal(sampleValue(m, "kube_egress_passes_total", { result: "failed" }), 1);
  assert.equal(sampleValue(m, "kube_egress_pass_errors_total", { kind: "inputs" }), 1);
  assert.equal(sampleValue(m, "kube_egress_pass_duration_seconds_count"), 3);
  assert.equal(sampleValue(m, "kube_egress_last_pass_success"), 0);
  assert.equal(sampleValue(m, "kube_egress_inputs", { kind: "mappings" }), 1);
  assert.equal(sampleValue(m, "kube_egress_inputs_rejected"), 1);
  assert.ok(sampleValue(m, "kube_egress_written_lines_total")! > 0);
  assert.equal(m.get("kube_egress_pass_duration_seconds")!.type, "histogram");
  fail = false;
  inputs = GOOD;
  await agent.pass("resync");
  m = await scrape();
  assert.equal(sampleValue(m, "kube_egress_inputs_rejected"), 0);
  assert.equal(sampleValue(m, "kube_egress_last_pass_success"), 1);
});

Deno.test("metrics: a failed transaction step is counted by its tool", async () => {
  const kernel = new FakeKernel();
  const metrics = new AgentMetrics({ config: testConfig(), host: kernel.host() });
  const host = kernel.host();
  const agent = new Agent(
    {
      ...host,
      apply: (tx) => Promise.reject(new StepError(tx.steps[1], 1, "ipset v7.17: Kernel error")),
    },
    createLogger("text", () => {}),
    {
      config: testConfig(),
      readInputs: () => Promise.resolve(GOOD),
      dryRun: false,
      observers: [metrics],
    },
  );
  await agent.pass("start");
  const m = parsePromText((await metrics.render()).body);
  assert.equal(sampleValue(m, "kube_egress_pass_errors_total", { kind: "apply_ipset" }), 1);
});

Deno.test("metrics: VIP transitions and the failover gap of a takeover", async () => {
  const { agent, kernel, fake, host, scrape, tick } = setup(() => GOOD);
  host.watchAddresses("eth0", () => {});
  await agent.pass("start");
  tick(5000);
  kernel.interfaces.get("eth0")!.push(VIP);
  fake.fireAddressChange(); // the address event, seen through the observed host
  tick(40); // the pass starts a little later and takes 60 ms
  const pass = agent.pass("address change");
  tick(60);
  await pass;
  const m = await scrape();
  assert.equal(
    sampleValue(m, "kube_egress_vip_transitions_total", {
      vip: VIP,
      from: "none",
      to: "forwarder",
    }),
    1,
  );
  assert.equal(
    sampleValue(m, "kube_egress_vip_transitions_total", {
      vip: VIP,
      from: "forwarder",
      to: "holder",
    }),
    1,
  );
  assert.equal(sampleValue(m, "kube_egress_failover_gap_seconds", { vip: VIP }), 0.1);
  assert.equal(
    sampleValue(m, "kube_egress_last_takeover_timestamp_seconds", { vip: VIP }),
    1_005_100 / 1000,
  );
  assert.equal(sampleValue(m, "kube_egress_vip_held", { vip: VIP }), 1);
  assert.equal(sampleValue(m, "kube_egress_vips_held"), 1);
});

Deno.test("metrics: per-VIP traffic from kernel counters, monotonic across resets and roles", async () => {
  const { agent, kernel, scrape } = setup(() => GOOD);
  await agent.pass("start"); // forwarder: VIP not on eth0
  kernel.setCounters.set(POD, { packets: 100, bytes: 10_000 });
  let m = await scrape(); // baseline: counters start at 0 with the process
  assert.equal(sampleValue(m, "kube_egress_vip_forwarded_packets_total", { vip: VIP }), 0);
  kernel.setCounters.set(POD, { packets: 130, bytes: 13_000 });
  const forward = [...kernel.tables.get("nat")!.chains.get("KUBE-EGRESS-SNAT")!][0];
  kernel.ruleCounters.set(forward, { packets: 3, bytes: 180 });
  m = await scrape();
  assert.equal(sampleValue(m, "kube_egress_vip_forwarded_packets_total", { vip: VIP }), 30);
  assert.equal(sampleValue(m, "kube_egress_vip_forwarded_bytes_total", { vip: VIP }), 3000);
  assert.equal(sampleValue(m, "kube_egress_vip_forwarded_connections_total", { vip: VIP }), 3);
  assert.equal(sampleValue(m, "kube_egress_vip_snat_packets_total", { vip: VIP }), 0);
  assert.equal(sampleValue(m, "kube_egress_vip_pods", { vip: VIP }), 1);
  assert.equal(sampleValue(m, "kube_egress_programmed", { object: "pod_set_entries" }), 1);
  assert.equal(sampleValue(m, "kube_egress_programmed", { object: "ip_rules" }), 1);

  // The VIP arrives: the chain is rewritten (rule counters restart) and the
  // pod entry is re-created (set counters restart): totals keep growing.
  kernel.interfaces.get("eth0")!.push(VIP);
  await agent.pass("address change");
  kernel.setCounters.set(POD, { packets: 7, bytes: 700 });
  const snat = [...kernel.tables.get("nat")!.chains.get("KUBE-EGRESS-SNAT")!][0];
  kernel.ruleCounters.set(snat, { packets: 2, bytes: 120 });
  m = await scrape();
  assert.equal(sampleValue(m, "kube_egress_vip_snat_packets_total", { vip: VIP }), 7);
  assert.equal(sampleValue(m, "kube_egress_vip_snat_bytes_total", { vip: VIP }), 700);
  assert.equal(sampleValue(m, "kube_egress_vip_snat_connections_total", { vip: VIP }), 2);
  assert.equal(sampleValue(m, "kube_egress_vip_forwarded_packets_total", { vip: VIP }), 30);
  assert.equal(sampleValue(m, "kube_egress_programmed", { object: "ip_rules" }), 0);
});

Deno.test("metrics: a failed kernel read keeps the figures and is counted", async () => {
  const { agent, kernel, scrape } = setup(() => GOOD);
  await agent.pass("start");
  await scrape();
  kernel.interfaces.clear();
  const m = await scrape();
  assert.equal(sampleValue(m, "kube_egress_kernel_read_errors_total"), 1);
  assert.equal(sampleValue(m, "kube_egress_vip_pods", { vip: VIP }), 1);
});

Deno.test("counter accumulator: baseline, growth, reset and vanished entries", () => {
  const acc = new CounterAccumulator();
  acc.update([{ key: "a", group: "g", value: 50 }]);
  assert.equal(acc.totals.get("g"), 0);
  acc.update([{ key: "a", group: "g", value: 60 }, { key: "b", group: "g", value: 5 }]);
  assert.equal(acc.totals.get("g"), 15, "growth of a, all of the new entry b");
  acc.update([{ key: "a", group: "h", value: 4 }]); // reset, now counted under another group
  assert.equal(acc.totals.get("g"), 15);
  assert.equal(acc.totals.get("h"), 4);
  acc.update([{ key: "b", group: "g", value: 1 }]); // b vanished and came back
  assert.equal(acc.totals.get("g"), 16);
});

Deno.test("ops handler: status codes and bodies of each endpoint", async () => {
  let ready = false;
  const handler = opsHandler({
    metrics: () => Promise.resolve({ body: "x 1\n", contentType: "text/plain; version=0.0.4" }),
    liveness: () => ({ ok: true, checks: [{ name: "loop", ok: true, detail: "fine" }] }),
    readiness: () => ({ ok: ready, checks: [{ name: "pass", ok: ready, detail: "d" }] }),
  });
  const get = (path: string, method = "GET") =>
    handler(new Request(`http://localhost${path}`, { method }));
  assert.equal((await get("/metrics")).headers.get("content-type"), "text/plain; version=0.0.4");
  assert.equal((await get("/healthz")).status, 200);
  const notReady = await get("/readyz");
  assert.equal(notReady.status, 503);
  assert.equal(await notReady.text(), "[-]pass d\nreadyz check failed\n");
  ready = true;
  assert.equal((await get("/readyz")).status, 200);
  assert.equal((await get("/nope")).status, 404);
  assert.equal((await get("/metrics", "POST")).status, 405);
});

Deno.test("ops server: serves on loopback; not ready until the first pass, ready after", async () => {
  const kernel = new FakeKernel();
  const ops = startOpsServer({
    address: { hostname: "127.0.0.1", port: 0, text: "127.0.0.1:0" },
    config: testConfig(),
    host: kernel.host(),
    intervalSeconds: 30,
    log: createLogger("text", () => {}),
  });
  try {
    const url = `http://127.0.0.1:${ops.port}`;
    let r = await fetch(`${url}/readyz`);
    assert.equal(r.status, 503);
    assert.match(await r.text(), /no pass has completed yet/);
    const agent = new Agent(ops.host, createLogger("text", () => {}), {
      config: testConfig(),
      readInputs: () => Promise.resolve(GOOD),
      dryRun: false,
      observers: ops.observers,
    });
    await agent.pass("start");
    r = await fetch(`${url}/readyz`);
    assert.equal(r.status, 200, await r.text());
    r = await fetch(`${url}/healthz`);
    assert.equal(r.status, 200);
    await r.body?.cancel();
    r = await fetch(`${url}/metrics`);
    const m = parsePromText(await r.text());
    assert.equal(sampleValue(m, "kube_egress_passes_total", { result: "applied" }), 1);
    assert.ok(sampleValue(m, "process_resident_memory_bytes")! > 0);
  } finally {
    await ops.close();
  }
});
