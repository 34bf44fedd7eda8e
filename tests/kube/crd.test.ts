import assert from "node:assert/strict";
import { evaluate } from "../../sim/kube_cel.ts";
import { parseAllDocuments } from "yaml";
import { customResourceDefinition, renderCrdsYaml } from "../../core/kube/crd.ts";
import { EgressPolicySpec, EgressVIPSpec } from "../../core/kube/api.ts";

const CRDS = new URL("../../deploy/crds.yaml", import.meta.url);

Deno.test("crd: deploy/crds.yaml is exactly what the generator produces (run `deno task crds`)", async () => {
  assert.equal(await Deno.readTextFile(CRDS), renderCrdsYaml());
});

/** Walks a schema and returns the paths of anything apiextensions/v1 rejects as non-structural. */
function nonStructural(node: unknown, path = "$"): string[] {
  if (Array.isArray(node)) return node.flatMap((n, i) => nonStructural(n, `${path}[${i}]`));
  if (!node || typeof node !== "object") return [];
  const obj = node as Record<string, unknown>;
  const bad: string[] = [];
  for (
    const key of ["$schema", "$ref", "$defs", "propertyNames", "const", "anyOf", "oneOf", "allOf"]
  ) {
    if (key in obj) bad.push(`${path}.${key}`);
  }
  if (obj.additionalProperties === false) bad.push(`${path}.additionalProperties=false`);
  if ("properties" in obj && "additionalProperties" in obj) {
    bad.push(`${path}: both properties and additionalProperties`);
  }
  if (("properties" in obj || "items" in obj) && typeof obj.type !== "string") {
    bad.push(`${path}: no type`);
  }
  for (const [key, value] of Object.entries(obj)) {
    if (key === "properties") {
      for (const [name, child] of Object.entries(value as Record<string, unknown>)) {
        bad.push(...nonStructural(child, `${path}.${name}`));
      }
    } else if (key === "items" || key === "additionalProperties") {
      bad.push(...nonStructural(value, `${path}.${key}`));
    }
  }
  return bad;
}

Deno.test("crd: schemas are structural, with status subresource, printer columns and short names", () => {
  const all = parseAllDocuments(renderCrdsYaml()).map((d) => d.toJS());
  assert.deepEqual(all.map((d) => d.metadata.name), [
    "egressvips.egress.kube-egress.io",
    "egresspolicies.egress.kube-egress.io",
    "egressslices.egress.kube-egress.io",
  ]);
  const [slice] = all.splice(2, 1);
  const sliceVersion = slice.spec.versions[0];
  assert.deepEqual(nonStructural(sliceVersion.schema.openAPIV3Schema), []);
  // Written by the controller only: no status, and a count kubectl can show.
  assert.equal(sliceVersion.subresources, undefined);
  assert.deepEqual(
    sliceVersion.additionalPrinterColumns.map((c: { name: string }) => c.name),
    ["VIP", "Pods", "Destinations", "Excluded", "Age"],
  );
  const docs = all;
  for (const doc of docs) {
    const version = doc.spec.versions[0];
    assert.deepEqual(nonStructural(version.schema.openAPIV3Schema), [], doc.metadata.name);
    assert.deepEqual(version.subresources, { status: {} });
    const columns = version.additionalPrinterColumns.map((c: { name: string }) => c.name);
    for (const wanted of ["IP", "Pods", "Ready"]) assert.ok(columns.includes(wanted), wanted);
    assert.ok(doc.spec.names.shortNames.length > 0);
  }
  const vip = customResourceDefinition("EgressVIP") as {
    spec: { scope: string; versions: { additionalPrinterColumns: { name: string }[] }[] };
  };
  assert.equal(vip.spec.scope, "Cluster");
  assert.ok(vip.spec.versions[0].additionalPrinterColumns.some((c) => c.name === "Holder"));
});

Deno.test("crd: the CRD schema and the zod schema agree on example objects", () => {
  const docs = parseAllDocuments(renderCrdsYaml()).map((d) => d.toJS());
  const vipSpec = docs[0].spec.versions[0].schema.openAPIV3Schema.properties.spec;
  const policySpec = docs[1].spec.versions[0].schema.openAPIV3Schema.properties.spec;
  assert.deepEqual(vipSpec.required, ["ip"]);
  assert.deepEqual(policySpec.required, ["vip"]);
  assert.deepEqual(policySpec.properties.targets.items.properties.kind.enum, [
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
  ]);
  // The CRD's CEL rules (as the test API server evaluates them) and zod agree.
  const celOk = (rules: { rule: string }[], self: unknown) =>
    rules.every((r) => evaluate(r.rule, self) === true);
  const ipRules = vipSpec.properties.ip["x-kubernetes-validations"];
  const specRules = vipSpec["x-kubernetes-validations"];
  for (const ip of ["192.0.2.50", "10.0.0.1", "2001:db8::50", "fd00::1"]) {
    assert.ok(celOk(ipRules, ip) && EgressVIPSpec.safeParse({ ip }).success, ip);
  }
  for (
    const ip of [
      "192.0.2.050",
      "192.0.2",
      "256.1.1.1",
      "2001:DB8::1",
      "2001:db8:0::1",
      "::ffff:c000:201",
    ]
  ) {
    assert.ok(!celOk(ipRules, ip) && !EgressVIPSpec.safeParse({ ip }).success, ip);
  }
  const specs: [unknown, boolean][] = [
    [{ ip: "192.0.2.50", ips: ["192.0.2.50", "2001:db8::50"] }, true],
    [{ ip: "2001:db8::50", ips: ["2001:db8::50", "192.0.2.50"] }, true],
    [{ ip: "2001:db8::50", ips: ["2001:db8::50"] }, true],
    [{ ip: "192.0.2.50", ips: ["192.0.2.50", "192.0.2.51"] }, false],
    [{ ip: "192.0.2.50", ips: ["2001:db8::50", "192.0.2.50"] }, false],
  ];
  for (const [spec, ok] of specs) {
    assert.equal(celOk(specRules, spec), ok, JSON.stringify(spec));
    assert.equal(EgressVIPSpec.safeParse(spec).success, ok, JSON.stringify(spec));
  }
  const canonical = EgressVIPSpec.safeParse({ ip: "2001:DB8:0::1" });
  assert.match(
    canonical.error?.issues[0].message ?? "",
    /must be written canonically .*: 2001:db8::1$/,
  );
  assert.equal(EgressPolicySpec.safeParse({ vip: "office", podSelector: {} }).success, true);
});
