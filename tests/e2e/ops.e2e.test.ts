/**
 * End-to-end: the agent's metrics and health endpoints on simulated nodes
 * (`run -u 30 --metrics-addr 127.0.0.1:9479`, loopback inside each node's
 * namespace). Checks real kernel counters (SNATed on the holder, forwarded
 * elsewhere), a takeover's failover gap, readiness following a lost mapping
 * directory, and JSON log lines. Needs root; reported as skipped otherwise.
 */
import assert from "node:assert/strict";
import { EXTERNAL, startAgent } from "../../sim/agents.ts";
import { Cluster, OUTSIDE_IP, type SimNode } from "../../sim/cluster.ts";
import { sourceSeenRetry } from "../../sim/probe.ts";
import { placeVip } from "../../sim/vip.ts";
import { isRoot } from "../helpers.ts";
import { parsePromText, sampleValue } from "../prom_text.ts";

const VIP = "192.0.2.50";
const ADDR = "127.0.0.1:9479";
const e2e = { ignore: !isRoot, sanitizeOps: false, sanitizeResources: false };

/** GET on the node's endpoint from inside its namespace: status and body. */
async function get(node: SimNode, path: string): Promise<{ status: number; body: string }> {
  const code = "try { const r = await fetch(Deno.args[0]); console.log(r.status); " +
    "console.log(await r.text()); } catch { console.log(0); }";
  const out = await node.ns.run([Deno.execPath(), "eval", code, `http://${ADDR}${path}`]);
  const [status, ...body] = out.split("\n");
  return { status: Number(status), body: body.join("\n") };
}

async function metrics(node: SimNode) {
  const r = await get(node, "/metrics");
  assert.equal(r.status, 200);
  return parsePromText(r.body);
}

/** Polls until `fn` returns true; bounded in count. */
async function eventually(what: string, fn: () => Promise<boolean>, tries = 40) {
  for (let i = 0; i < tries; i++) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`not reached: ${what}`);
}

Deno.test({
  name: "e2e ops: metrics from kernel counters, takeover gap, readiness, JSON logs",
  ...e2e,
  fn: async (t) => {
    const cluster = await Cluster.create({ nodes: 2, podsPerNode: 1 });
    const agents: ReturnType<typeof startAgent>[] = [];
    try {
      const [n1, n2] = [cluster.node(1), cluster.node(2)];
      const [p1, p2] = [cluster.pod(1, 1), cluster.pod(2, 1)];
      await cluster.writeMappings({ [p1.ip]: VIP, [p2.ip]: VIP }, { [VIP]: 5 });
      await placeVip(cluster.nodes, VIP, n1, cluster.spec.iface);
      agents.push(startAgent(cluster, n1, [...EXTERNAL, "--metrics-addr", ADDR]));
      agents.push(
        startAgent(cluster, n2, [...EXTERNAL, "--metrics-addr", ADDR, "--log-format", "json"]),
      );

      await t.step("both agents become ready after their first pass", async () => {
        for (const node of [n1, n2]) {
          await eventually(
            `${node.name} ready`,
            async () => (await get(node, "/readyz")).status === 200,
          );
          assert.equal((await get(node, "/healthz")).status, 200);
        }
      });

      await t.step(
        "SNATed traffic counted on the holder, forwarded on the other node",
        async () => {
          await metrics(n1); // the first scrape takes the baseline
          await metrics(n2);
          assert.equal(await sourceSeenRetry(p1.ns, OUTSIDE_IP, "tcp"), VIP);
          assert.equal(await sourceSeenRetry(p2.ns, OUTSIDE_IP, "tcp"), VIP);
          const m1 = await metrics(n1);
          const m2 = await metrics(n2);
          assert.equal(sampleValue(m1, "kube_egress_vips_held"), 1);
          assert.equal(sampleValue(m2, "kube_egress_vips_held"), 0);
          // Both pods' connections leave through the holder: at least one each.
          assert.ok(sampleValue(m1, "kube_egress_vip_snat_connections_total", { vip: VIP })! >= 2);
          assert.ok(sampleValue(m1, "kube_egress_vip_snat_packets_total", { vip: VIP })! >= 6);
          assert.ok(sampleValue(m1, "kube_egress_vip_snat_bytes_total", { vip: VIP })! > 0);
          assert.ok(sampleValue(m2, "kube_egress_vip_forwarded_packets_total", { vip: VIP })! >= 3);
          assert.equal(sampleValue(m2, "kube_egress_vip_snat_packets_total", { vip: VIP }), 0);
          assert.equal(sampleValue(m1, "kube_egress_programmed", { object: "pod_set_entries" }), 2);
          assert.equal(sampleValue(m2, "kube_egress_programmed", { object: "ip_rules" }), 1);
        },
      );

      await t.step("a takeover: transition counted and the failover gap measured", async () => {
        await placeVip(cluster.nodes, VIP, n2, cluster.spec.iface);
        await agents[1].waitFor(/"msg":"VIP role".*"from":"forwarder","to":"holder"/);
        const m2 = await metrics(n2);
        assert.equal(
          sampleValue(m2, "kube_egress_vip_transitions_total", {
            vip: VIP,
            from: "forwarder",
            to: "holder",
          }),
          1,
        );
        const gap = sampleValue(m2, "kube_egress_failover_gap_seconds", { vip: VIP })!;
        assert.ok(gap > 0 && gap < 30, `gap ${gap}`);
        assert.equal(sampleValue(m2, "kube_egress_vips_held"), 1);
        assert.equal(await sourceSeenRetry(p1.ns, OUTSIDE_IP, "tcp"), VIP);
      });

      await t.step("a lost mapping directory makes the agent unready, not dead", async () => {
        const saved = `${cluster.vipRouteDir}.saved`;
        await Deno.rename(cluster.vipRouteDir, saved);
        await eventually("n1 unready", async () => (await get(n1, "/readyz")).status === 503);
        const r = await get(n1, "/readyz");
        assert.match(r.body, /\[-\]pass last pass failed: mapping directory .* does not exist/);
        assert.equal((await get(n1, "/healthz")).status, 200);
        await Deno.rename(saved, cluster.vipRouteDir);
      });

      await t.step("every log line of the JSON agent is one JSON object", () => {
        const lines = agents[1].lines.filter((l) => l.trim() !== "");
        assert.ok(lines.length >= 3);
        for (const line of lines) {
          const entry = JSON.parse(line);
          assert.ok(entry.time && entry.level && entry.msg, line);
        }
      });
    } finally {
      await Promise.all(agents.map((a) => a.stop()));
      await cluster.destroy();
    }
  },
});
