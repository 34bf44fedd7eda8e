import assert from "node:assert/strict";
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
  const pattern = new RegExp(vipSpec.properties.ip.pattern);
  for (const ip of ["192.0.2.50", "10.0.0.1"]) {
    assert.ok(pattern.test(ip) && EgressVIPSpec.safeParse({ ip }).success, ip);
  }
  for (const ip of ["192.0.2.050", "192.0.2", "256.1.1.1"]) {
    assert.ok(!pattern.test(ip) && !EgressVIPSpec.safeParse({ ip }).success, ip);
  }
  assert.equal(EgressPolicySpec.safeParse({ vip: "office", podSelector: {} }).success, true);
});
