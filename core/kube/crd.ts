/**
 * CustomResourceDefinitions generated from the zod schemas in `api.ts`:
 * `z.toJSONSchema`, then post-processed into the structural subset
 * apiextensions.k8s.io/v1 accepts (no $schema, propertyNames, const or
 * `additionalProperties: false`; no JavaScript-only integer bounds; conditions
 * as a list-map keyed by type). `deploy/crds.yaml` is this output, and a test
 * keeps them equal.
 */
import { z } from "zod";
import { stringify } from "yaml";
import { GROUP, KINDS, VERSION } from "./api.ts";

type Json = { [key: string]: unknown };

/** Keys of JSON Schema that structural schemas do not allow (or we do not need). */
const DROPPED = new Set(["$schema", "propertyNames", "id", "$id"]);

/** Rewrites one zod JSON Schema node (recursively) into Kubernetes' structural form. */
export function structural(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(structural);
  if (node === null || typeof node !== "object") return node;
  const out: Json = {};
  for (const [key, value] of Object.entries(node as Json)) {
    if (DROPPED.has(key)) continue;
    if (key === "additionalProperties" && value === false) continue;
    if (key === "const") {
      out.enum = [value];
      continue;
    }
    // z.int() bounds of ±2^53-1 mean "any integer" to JavaScript; omit them.
    if ((key === "maximum" || key === "minimum") && Math.abs(Number(value)) >= 2 ** 53 - 1) {
      continue;
    }
    out[key] = structural(value);
  }
  // Conditions: one entry per type, merged by server-side apply.
  const properties = out.properties as Json | undefined;
  if (properties?.conditions && typeof properties.conditions === "object") {
    properties.conditions = {
      ...(properties.conditions as Json),
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
    };
  }
  return out;
}

/** The openAPIV3Schema of one kind: apiVersion/kind/metadata, spec (required) and status. */
function openApiSchema(kind: keyof typeof KINDS): Json {
  const def = KINDS[kind];
  const toSchema = (schema: z.ZodType) => structural(z.toJSONSchema(schema, { io: "input" }));
  return {
    description: def.description,
    type: "object",
    properties: {
      apiVersion: { type: "string" },
      kind: { type: "string" },
      metadata: { type: "object" },
      spec: toSchema(def.spec),
      ...(def.status ? { status: toSchema(def.status) } : {}),
    },
    required: ["spec"],
  };
}

/** The CustomResourceDefinition object of one kind. */
export function customResourceDefinition(kind: keyof typeof KINDS): Json {
  const def = KINDS[kind];
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: `${def.plural}.${GROUP}`,
      labels: { "app.kubernetes.io/name": "kube-egress" },
    },
    spec: {
      group: GROUP,
      names: {
        kind,
        listKind: `${kind}List`,
        plural: def.plural,
        singular: def.singular,
        shortNames: [...def.shortNames],
        categories: ["kube-egress"],
      },
      scope: def.scope,
      versions: [{
        name: VERSION,
        served: true,
        storage: true,
        ...(def.status ? { subresources: { status: {} } } : {}),
        additionalPrinterColumns: def.columns.map((c) => ({ ...c })),
        schema: { openAPIV3Schema: openApiSchema(kind) },
      }],
    },
  };
}

/** `deploy/crds.yaml`: every CRD as one YAML stream, with a header saying where it comes from. */
export function renderCrdsYaml(): string {
  const docs = (Object.keys(KINDS) as (keyof typeof KINDS)[]).map((kind) =>
    stringify(customResourceDefinition(kind), { lineWidth: 0 })
  );
  return "# Generated from core/kube/api.ts by `deno task crds`; do not edit by hand.\n" +
    docs.map((d) => `---\n${d}`).join("");
}
