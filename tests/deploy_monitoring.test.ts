import assert from "node:assert/strict";
import { parseAllDocuments } from "yaml";
import { AgentMetrics } from "../cmd/metrics.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { testConfig } from "./helpers.ts";

const dir = new URL("../deploy/monitoring/", import.meta.url);
const read = (name: string) => Deno.readTextFileSync(new URL(name, dir));

/** Metric names the agent exports (histograms with their series suffixes). */
async function exported(): Promise<Set<string>> {
  const metrics = new AgentMetrics({ config: testConfig(), host: new FakeKernel().host() });
  const names = (await metrics.registry.getMetricsAsJSON()).flatMap((m) =>
    String(m.type) === "histogram" ? ["_bucket", "_sum", "_count"].map((s) => m.name + s) : [m.name]
  );
  return new Set(names);
}

function referenced(text: string): string[] {
  return [...new Set([...text.matchAll(/\b(?:kube_egress|process)_[a-z_]+/g)].map((m) => m[0]))];
}

Deno.test("deploy/monitoring: the dashboard and alerts use only metrics the agent exports", async () => {
  const names = await exported();
  const dashboard = JSON.parse(read("grafana-dashboard.json"));
  const exprs = dashboard.panels.flatMap((p: { targets: { expr: string }[] }) =>
    p.targets.map((t) => t.expr)
  );
  assert.ok(exprs.length >= 10);
  const rules = parseAllDocuments(read("prometheus-rules.yaml")).map((d) => d.toJS());
  const alerts = rules[0].spec.groups.flatMap((g: { rules: { expr: string }[] }) =>
    g.rules.map((r) => r.expr)
  );
  for (const name of referenced([...exprs, ...alerts].join("\n"))) {
    assert.ok(names.has(name), `${name} is not exported`);
  }
});

Deno.test("deploy/monitoring: monitors select the agent pods' metrics port and add the node", () => {
  const docs = parseAllDocuments(read("podmonitor.yaml")).map((d) => d.toJS());
  const kinds = docs.map((d) => d.kind);
  assert.deepEqual(kinds, ["PodMonitor", "Service", "ServiceMonitor"]);
  const pod = docs[0];
  assert.equal(pod.spec.podMetricsEndpoints[0].port, "metrics");
  assert.equal(pod.spec.podMetricsEndpoints[0].relabelings[0].targetLabel, "node");
});
