/**
 * What kubectl reads before it touches an object, and how it shows objects:
 * /version (kubectl's dispatcher picks its minor version by it), legacy
 * discovery (/api, /apis, /api/v1, /apis/<group>/<version>), OpenAPI v3 (the
 * index and one document per group version, with each kind's schema and the
 * `fieldValidation` parameter kubectl looks for before it asks the server to
 * validate strictly), OpenAPI v2 as protobuf (what kubectl before 1.29 reads
 * for the same question), and server-side Table printing (a CRD's
 * additionalPrinterColumns; Name and Age otherwise; Events as `kubectl get
 * events` shows them).
 */
import type { KubeStore, Obj } from "./kube_store.ts";
import type { PrinterColumn, Registry, ServedResource } from "./kube_registry.ts";

const json = (body: unknown) => Response.json(body);

function apiResource(r: ServedResource) {
  const main = {
    name: r.plural,
    singularName: r.singular,
    namespaced: r.namespaced,
    kind: r.kind,
    verbs: r.verbs,
    ...(r.shortNames.length ? { shortNames: r.shortNames } : {}),
    ...(r.categories.length ? { categories: r.categories } : {}),
    storageVersionHash: btoa(`${r.group}/${r.version}/${r.kind}`).slice(0, 11),
  };
  return r.statusSubresource
    ? [main, {
      name: `${r.plural}/status`,
      singularName: "",
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: ["get", "patch", "update"],
    }]
    : [main];
}

/** OpenAPI v3 of one group version: schemas, and paths that say fieldValidation is understood. */
function openApiDocument(registry: Registry, group: string, version: string) {
  const resources = registry.all.filter((r) => r.group === group && r.version === version);
  const schemas: Record<string, unknown> = {};
  const paths: Record<string, unknown> = {};
  const prefix = group ? `/apis/${group}/${version}` : `/api/${version}`;
  for (const r of resources) {
    const name = `${(group || "core").split(".").reverse().join(".")}.${version}.${r.kind}`;
    const gvk = [{ group, version, kind: r.kind }];
    schemas[name] = {
      ...(r.schema ?? { type: "object", "x-kubernetes-preserve-unknown-fields": true }),
      "x-kubernetes-group-version-kind": gvk,
    };
    const ref = { $ref: `#/components/schemas/${name}` };
    const body = { content: { "application/json": { schema: ref } } };
    const ok = { "200": { description: "OK", content: { "application/json": { schema: ref } } } };
    const param = (n: string) => ({
      name: n,
      in: "query",
      schema: { type: "string", uniqueItems: true },
    });
    const writeParams = ["dryRun", "fieldManager", "fieldValidation"].map(param);
    const op = (action: string, extra: Record<string, unknown> = {}) => ({
      "x-kubernetes-action": action,
      "x-kubernetes-group-version-kind": gvk[0],
      operationId: `${action}${r.kind}`,
      responses: ok,
      ...extra,
    });
    const collection = r.namespaced
      ? `${prefix}/namespaces/{namespace}/${r.plural}`
      : `${prefix}/${r.plural}`;
    paths[collection] = {
      get: op("list"),
      post: op("post", { requestBody: body, parameters: writeParams }),
    };
    paths[`${collection}/{name}`] = {
      get: op("get"),
      put: op("put", { requestBody: body, parameters: writeParams }),
      patch: op("patch", { requestBody: body, parameters: writeParams }),
      delete: op("delete"),
    };
    if (r.statusSubresource) {
      paths[`${collection}/{name}/status`] = {
        get: op("get"),
        put: op("put", { requestBody: body, parameters: writeParams }),
        patch: op("patch", { requestBody: body, parameters: writeParams }),
      };
    }
  }
  return {
    openapi: "3.0.0",
    info: { title: "Kubernetes", version: "v1.32.4" },
    paths,
    components: { schemas },
  };
}

/** Serves the non-resource paths kubectl reads; undefined for resource paths. */
export function discovery(
  registry: Registry,
  url: URL,
  _request: Request,
  context: { version: string; store: KubeStore },
): Response | undefined {
  const path = url.pathname.replace(/\/$/, "");
  const [major, minor] = context.version.split(".");
  if (path === "/version") {
    return json({
      major,
      minor,
      gitVersion: `v${context.version}`,
      gitCommit: "0000000000000000000000000000000000000000",
      gitTreeState: "clean",
      buildDate: "2026-01-01T00:00:00Z",
      goVersion: "go1.23.0",
      compiler: "gc",
      platform: "linux/amd64",
    });
  }
  if (path === "/healthz" || path === "/readyz" || path === "/livez") {
    return new Response("ok", { headers: { "content-type": "text/plain" } });
  }
  if (path === "/api") {
    return json({
      kind: "APIVersions",
      versions: ["v1"],
      serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: url.host }],
    });
  }
  const groups = new Map<string, string>();
  for (const r of registry.all) if (r.group) groups.set(r.group, r.version);
  if (path === "/apis") {
    return json({
      kind: "APIGroupList",
      apiVersion: "v1",
      groups: [...groups].map(([name, version]) => ({
        name,
        versions: [{ groupVersion: `${name}/${version}`, version }],
        preferredVersion: { groupVersion: `${name}/${version}`, version },
      })),
    });
  }
  const legacy = path.match(/^\/api\/([^/]+)$/);
  const grouped = path.match(/^\/apis\/([^/]+)\/([^/]+)$/);
  if (legacy || grouped) {
    const [group, version] = legacy ? ["", legacy[1]] : [grouped![1], grouped![2]];
    const resources = registry.all.filter((r) => r.group === group && r.version === version);
    if (resources.length === 0) return undefined;
    return json({
      kind: "APIResourceList",
      apiVersion: "v1",
      groupVersion: group ? `${group}/${version}` : version,
      resources: resources.flatMap(apiResource),
    });
  }
  const group = path.match(/^\/apis\/([^/]+)$/);
  if (group && groups.has(group[1])) {
    const version = groups.get(group[1])!;
    return json({
      kind: "APIGroup",
      apiVersion: "v1",
      name: group[1],
      versions: [{ groupVersion: `${group[1]}/${version}`, version }],
      preferredVersion: { groupVersion: `${group[1]}/${version}`, version },
    });
  }
  if (path === "/openapi/v3") {
    const entries: Record<string, unknown> = {
      "api/v1": { serverRelativeURL: `/openapi/v3/api/v1?hash=${context.store.resourceVersion}` },
    };
    for (const [name, version] of groups) {
      entries[`apis/${name}/${version}`] = {
        serverRelativeURL:
          `/openapi/v3/apis/${name}/${version}?hash=${context.store.resourceVersion}`,
      };
    }
    return json({ paths: entries });
  }
  const v3 = path.match(/^\/openapi\/v3\/(?:api\/([^/]+)|apis\/([^/]+)\/([^/]+))$/);
  if (v3) {
    const [group, version] = v3[1] ? ["", v3[1]] : [v3[2], v3[3]];
    if (!registry.all.some((r) => r.group === group && r.version === version)) return undefined;
    return json(openApiDocument(registry, group, version));
  }
  if (path === "/openapi/v2") {
    return new Response(openApiV2Protobuf(registry).buffer as ArrayBuffer, {
      headers: { "content-type": "application/com.github.proto-openapi.spec.v2.v1.0+protobuf" },
    });
  }
  return undefined;
}

/** Whether the client asked for a meta.k8s.io Table (kubectl get does). */
export function wantsTable(accept: string): boolean {
  return accept.split(",")[0].includes("as=Table");
}

/** kubectl's human durations ("45s", "5m", "3h", "2d"), as the server formats date columns. */
export function humanAge(timestamp: unknown, now = Date.now()): string {
  const t = typeof timestamp === "string" ? Date.parse(timestamp) : NaN;
  if (Number.isNaN(t)) return "<unknown>";
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return `${m}m${s % 60 ? `${s % 60}s` : ""}`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return `${h}h${m % 60 ? `${m % 60}m` : ""}`;
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  if (d < 8) return `${d}d${h % 24 ? `${h % 24}h` : ""}`;
  return `${d}d`;
}

/**
 * The subset of kubectl's JSONPath that printer columns use: `.a.b`, `[n]`,
 * `[*]` and filters `[?(@.k=="v")]`. Returns every match.
 */
export function jsonPath(object: unknown, path: string): unknown[] {
  let current: unknown[] = [object];
  const tokens = path.match(
    /\.[A-Za-z0-9_-]+|\[\?\(@\.[A-Za-z0-9_.-]+\s*==\s*(?:"[^"]*"|'[^']*')\)\]|\[\d+\]|\[\*\]/g,
  ) ?? [];
  for (const token of tokens) {
    const next: unknown[] = [];
    for (const value of current) {
      if (token.startsWith(".")) {
        const v = (value as Record<string, unknown> | undefined)?.[token.slice(1)];
        if (v !== undefined) next.push(v);
      } else if (token === "[*]") {
        if (Array.isArray(value)) next.push(...value);
      } else if (token.startsWith("[?")) {
        const m = token.match(/@\.([A-Za-z0-9_.-]+)\s*==\s*["']([^"']*)["']/)!;
        if (Array.isArray(value)) {
          next.push(...value.filter((item) => String(jsonPath(item, `.${m[1]}`)[0]) === m[2]));
        }
      } else if (Array.isArray(value)) {
        const v = value[Number(token.slice(1, -1))];
        if (v !== undefined) next.push(v);
      }
    }
    current = next;
  }
  return current;
}

const EVENT_COLUMNS: PrinterColumn[] = [
  { name: "Last Seen", type: "string", jsonPath: ".lastTimestamp", format: "age" },
  { name: "Type", type: "string", jsonPath: ".type" },
  { name: "Reason", type: "string", jsonPath: ".reason" },
  { name: "Object", type: "string", jsonPath: "" },
  { name: "Message", type: "string", jsonPath: ".message" },
];

function cell(object: Obj, column: PrinterColumn): unknown {
  if (column.name === "Object" && column.jsonPath === "") {
    const ref = object.involvedObject as { kind?: string; name?: string } | undefined;
    return `${(ref?.kind ?? "").toLowerCase()}/${ref?.name ?? ""}`;
  }
  const values = jsonPath(object, column.jsonPath);
  if (values.length === 0) return column.type === "integer" || column.type === "number" ? null : "";
  if (column.type === "date" || column.format === "age") return humanAge(values[0]);
  if (values.length > 1) {
    return values.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))).join(",");
  }
  const v = values[0];
  if (column.type === "integer") return typeof v === "number" ? Math.trunc(v) : null;
  if (column.type === "string") return typeof v === "object" ? JSON.stringify(v) : String(v);
  return v;
}

/** A meta.k8s.io/v1 Table of objects, with PartialObjectMetadata rows as kubectl asks for. */
export function tableOf(resource: ServedResource, items: Obj[], listMeta: Record<string, unknown>) {
  const columns: PrinterColumn[] = resource.kind === "Event" ? EVENT_COLUMNS : [
    ...(resource.columns ?? []).filter((c) => c.name !== "Age"),
    { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
  ];
  const definitions = [
    {
      name: "Name",
      type: "string",
      format: "name",
      description: "Name must be unique within a namespace.",
      priority: 0,
    },
    ...columns.map((c) => ({
      name: c.name,
      type: c.type === "date" ? "date" : c.type,
      format: c.format ?? "",
      description: c.description ?? "",
      priority: c.priority ?? 0,
    })),
  ];
  if (resource.kind === "Event") definitions.shift();
  return {
    kind: "Table",
    apiVersion: "meta.k8s.io/v1",
    metadata: {
      resourceVersion: listMeta.resourceVersion,
      ...(listMeta.continue ? { continue: listMeta.continue } : {}),
    },
    columnDefinitions: definitions,
    rows: items.map((object) => ({
      cells: [
        ...(resource.kind === "Event" ? [] : [object.metadata.name]),
        ...columns.map((c) => cell(object, c)),
      ],
      object: {
        kind: "PartialObjectMetadata",
        apiVersion: "meta.k8s.io/v1",
        metadata: object.metadata,
      },
    })),
  };
}

/** Protobuf wire format, the little that gnostic's openapi_v2.Document needs. */
function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 127) {
    out.push((n & 127) | 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}
function field(number: number, value: string | Uint8Array): number[] {
  const bytes = typeof value === "string" ? new TextEncoder().encode(value) : value;
  return [...varint((number << 3) | 2), ...varint(bytes.length), ...bytes];
}
const message = (...fields: number[][]) => new Uint8Array(fields.flat());

/**
 * OpenAPI v2 as kubectl before 1.29 reads it (gnostic's protobuf Document):
 * for each kind a path whose PATCH operation names its group-version-kind and
 * whose parameters include `fieldValidation`, so that kubectl asks the server
 * to validate (strictly) instead of validating against schemas on its own. No
 * definitions: kubectl then computes strategic merge patches from its
 * built-in types, as it does for kinds a server does not describe.
 */
export function openApiV2Protobuf(registry: Registry): Uint8Array {
  const paths = registry.all.map((r) => {
    const prefix = r.group ? `/apis/${r.group}/${r.version}` : `/api/${r.version}`;
    const path = r.namespaced
      ? `${prefix}/namespaces/{namespace}/${r.plural}/{name}`
      : `${prefix}/${r.plural}/{name}`;
    const extension = (name: string, yaml: string) =>
      field(13, message(field(1, name), field(2, message(field(2, yaml)))));
    const patch = message(
      field(5, `patch${r.kind}`),
      extension("x-kubernetes-action", "patch\n"),
      extension(
        "x-kubernetes-group-version-kind",
        `group: "${r.group}"\nkind: ${r.kind}\nversion: ${r.version}\n`,
      ),
    );
    // ParametersItem.parameter → Parameter.non_body_parameter → query_parameter_sub_schema.
    const query = (name: string) =>
      field(
        9,
        message(
          field(
            1,
            message(
              field(
                2,
                message(field(3, message(field(2, "query"), field(4, name), field(6, "string")))),
              ),
            ),
          ),
        ),
      );
    return field(
      2,
      message(
        field(1, path),
        field(
          2,
          message(
            field(8, patch),
            query("dryRun"),
            query("fieldManager"),
            query("fieldValidation"),
          ),
        ),
      ),
    );
  });
  return message(
    field(1, "2.0"),
    field(2, message(field(1, "Kubernetes"), field(2, "v1.32.4"))),
    field(8, message(...paths)),
  );
}
