/**
 * `migrate`: the old stack's inputs → EgressVIP and EgressPolicy objects.
 *
 * Old inputs: the ConfigMaps `vip-routeid-mappings` (VIP → route id) and
 * `podip-vip-mappings` (pod IP → VIP), and egress-mapper's `Vip {ip, routeid}`
 * and `Egress {ip, kind, namespace, name}` objects. Route ids are kept (traffic
 * keeps its tables and marks). Each Egress becomes a policy naming its target;
 * a ConfigMap mapping with no Egress behind it becomes a policy for the pod
 * that has the IP now, when pods are known (from the API), else it is reported.
 */
import { z } from "zod";
import { compareIPv4 } from "../ip.ts";
import { API_VERSION, TARGET_KINDS, type TargetKind } from "./api.ts";
import type { PodRecord } from "./objects.ts";

export interface OldInputs {
  /** ConfigMap vip-routeid-mappings data. */
  readonly vipRouteIds: Readonly<Record<string, string>>;
  /** ConfigMap podip-vip-mappings data. */
  readonly podVips: Readonly<Record<string, string>>;
  /** egress-mapper Vip objects. */
  readonly vips: readonly unknown[];
  /** egress-mapper Egress objects. */
  readonly egresses: readonly unknown[];
  /** Current pods, to name the pods behind ConfigMap-only mappings (optional). */
  readonly pods?: readonly PodRecord[];
}

export interface Migration {
  readonly objects: Record<string, unknown>[];
  /** What could not be migrated, and why. */
  readonly problems: string[];
}

/** The name of the EgressVIP made for an address: "vip-192-0-2-50". */
export function vipName(ip: string): string {
  return `vip-${ip.replaceAll(".", "-")}`;
}

const OldVip = z.object({
  metadata: z.object({ name: z.string() }).optional(),
  spec: z.object({ ip: z.string(), routeid: z.union([z.string(), z.number()]).optional() }),
});
const OldEgress = z.object({
  metadata: z.object({ name: z.string(), namespace: z.string().optional() }),
  spec: z.object({
    ip: z.string(),
    kind: z.string(),
    namespace: z.string().optional(),
    name: z.string(),
  }),
});

/** The old operator's kind names (it only ever handled "pod"), case-insensitive. */
function targetKind(kind: string): TargetKind | undefined {
  return TARGET_KINDS.find((k) => k.toLowerCase() === kind.toLowerCase());
}

/** A valid object name from anything: lowercase, dashes. */
function safeName(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9.-]+/g, "-").replace(/^[-.]+|[-.]+$/g, "").slice(
    0,
    253,
  ) ||
    "unnamed";
}

/** Migrates the old inputs; deterministic (sorted) output. */
export function migrate(input: OldInputs): Migration {
  const problems: string[] = [];
  const routeIds = new Map<string, number>();
  const note = (ip: string, id: unknown, origin: string) => {
    const n = Number(String(id).trim());
    if (!Number.isInteger(n) || n < 1 || n > 252) {
      problems.push(
        `${origin}: route id ${JSON.stringify(id)} for ${ip} is not 1-252; one will be assigned`,
      );
      return;
    }
    const before = routeIds.get(ip);
    if (before !== undefined && before !== n) {
      problems.push(
        `${origin}: ${ip} has route id ${n} here and ${before} elsewhere; keeping ${before}`,
      );
      return;
    }
    routeIds.set(ip, n);
  };
  const addresses = new Set<string>();
  for (const [ip, id] of Object.entries(input.vipRouteIds)) {
    addresses.add(ip.trim());
    note(ip.trim(), id, "ConfigMap vip-routeid-mappings");
  }
  for (const raw of input.vips) {
    const parsed = OldVip.safeParse(raw);
    if (!parsed.success) {
      problems.push(
        `Vip ${
          JSON.stringify((raw as { metadata?: { name?: string } })?.metadata?.name)
        }: unreadable`,
      );
      continue;
    }
    addresses.add(parsed.data.spec.ip);
    if (parsed.data.spec.routeid !== undefined) {
      note(
        parsed.data.spec.ip,
        parsed.data.spec.routeid,
        `Vip ${parsed.data.metadata?.name ?? parsed.data.spec.ip}`,
      );
    }
  }

  const policies = new Map<string, Record<string, unknown>>();
  const covered = new Set<string>(); // "ns/pod" named by an Egress
  const addPolicy = (
    namespace: string,
    name: string,
    vip: string,
    kind: TargetKind,
    target: string,
  ) => {
    addresses.add(vip);
    const key = `${namespace}/${name}`;
    if (policies.has(key)) {
      problems.push(
        `EgressPolicy ${key} would be created twice; the second (${kind} ${target}) is skipped`,
      );
      return;
    }
    policies.set(key, {
      apiVersion: API_VERSION,
      kind: "EgressPolicy",
      metadata: { name, namespace },
      spec: { vip: vipName(vip), targets: [{ kind, name: target }] },
    });
  };
  for (const raw of input.egresses) {
    const parsed = OldEgress.safeParse(raw);
    if (!parsed.success) {
      problems.push(
        `Egress ${
          JSON.stringify((raw as { metadata?: { name?: string } })?.metadata?.name)
        }: unreadable`,
      );
      continue;
    }
    const { metadata, spec } = parsed.data;
    const kind = targetKind(spec.kind);
    const namespace = spec.namespace ?? metadata.namespace ?? "default";
    if (!kind) {
      problems.push(
        `Egress ${metadata.name}: kind ${spec.kind} is not one of ${TARGET_KINDS.join(", ")}`,
      );
      continue;
    }
    if (kind === "Pod") covered.add(`${namespace}/${spec.name}`);
    addPolicy(namespace, safeName(metadata.name), spec.ip, kind, spec.name);
  }

  // ConfigMap-only mappings: name the pod that has the IP now, if pods are known.
  const podsByIp = new Map(
    (input.pods ?? []).filter((p) => p.ip && !p.finished).map((p) => [p.ip!, p]),
  );
  for (const [podIp, vip] of Object.entries(input.podVips).sort(([a], [b]) => compareIPv4(a, b))) {
    const pod = podsByIp.get(podIp.trim());
    if (pod && covered.has(`${pod.namespace}/${pod.name}`)) continue;
    if (!input.pods) {
      problems.push(
        `ConfigMap podip-vip-mappings: ${podIp} → ${vip.trim()} names no pod; run migrate against the API (--from-api) to resolve it, or write its policy by hand`,
      );
      continue;
    }
    if (!pod) {
      problems.push(
        `ConfigMap podip-vip-mappings: no pod has ${podIp} now (a stale mapping); skipped`,
      );
      continue;
    }
    addPolicy(pod.namespace, safeName(`pod-${pod.name}`), vip.trim(), "Pod", pod.name);
  }

  const vips = [...addresses].filter(Boolean).sort(compareIPv4).map((ip) => ({
    apiVersion: API_VERSION,
    kind: "EgressVIP",
    metadata: { name: vipName(ip) },
    spec: { ip, ...(routeIds.has(ip) ? { routeId: routeIds.get(ip) } : {}) },
  }));
  const sortedPolicies = [...policies.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, p]) =>
    p
  );
  return { objects: [...vips, ...sortedPolicies], problems };
}
