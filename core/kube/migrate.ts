/**
 * `migrate`: the old stack's inputs → EgressVIP and EgressPolicy objects.
 *
 * Old inputs: the ConfigMaps `vip-routeid-mappings` (VIP → route id) and
 * `podip-vip-mappings` (pod IP → VIP), and egress-mapper's `Vip {ip, routeid}`
 * and `Egress {ip, kind, namespace, name}` objects. Route ids are kept (traffic
 * keeps its tables and marks). Each Egress becomes a policy naming its target;
 * a ConfigMap mapping with no Egress behind it becomes a policy for the pod
 * that has the IP now, when pods are known (from the API), else it is reported.
 *
 * IPv6: addresses of either family, written canonically (EgressVIP refuses
 * other spellings), ConfigMap keys with dashes for colons as the files source
 * reads them. An IPv4 and an IPv6 VIP with the same route id (the files
 * source's dual-stack VIP) become one dual-stack EgressVIP (`ips`), named
 * after its IPv4 address; the policies of both point at it.
 */
import { z } from "zod";
import { canonicalIp, compareIp } from "../ip.ts";
import { keyOfName } from "../mapping_files.ts";
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

/** The name of the EgressVIP made for an address: "vip-192-0-2-50", "vip-2001-db8--50" ("::" → "--", a trailing one "0"). */
export function vipName(ip: string): string {
  return `vip-${ip.replace(/::$/, "::0").replace(/^::/, "0::").replaceAll(/[.:]/g, "-")}`;
}

/** An address as the old inputs wrote it (maybe a dashed ConfigMap key), canonical; the trimmed text if it is none. */
function address(text: string): string {
  const trimmed = text.trim();
  return canonicalIp(keyOfName(trimmed)) ?? canonicalIp(trimmed) ?? trimmed;
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
  for (const [key, id] of Object.entries(input.vipRouteIds)) {
    const ip = address(key);
    addresses.add(ip);
    note(ip, id, "ConfigMap vip-routeid-mappings");
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
    const ip = address(parsed.data.spec.ip);
    addresses.add(ip);
    if (parsed.data.spec.routeid !== undefined) {
      note(ip, parsed.data.spec.routeid, `Vip ${parsed.data.metadata?.name ?? ip}`);
    }
  }

  const policies = new Map<string, Record<string, unknown>>();
  /** The EgressVIP name of an address: its dual-stack partner's where they share a route id. */
  const nameOf = (ip: string) => vipName(dualOf.get(ip) ?? ip);
  /** IPv6 VIP → the IPv4 VIP with the same route id (one of each family, no other). */
  const dualOf = new Map<string, string>();
  const byRouteId = new Map<number, string[]>();
  for (const [ip, id] of routeIds) byRouteId.set(id, [...(byRouteId.get(id) ?? []), ip]);
  for (const ips of byRouteId.values()) {
    const v4 = ips.filter((ip) => !ip.includes(":"));
    const v6 = ips.filter((ip) => ip.includes(":"));
    if (v4.length === 1 && v6.length === 1) dualOf.set(v6[0], v4[0]);
  }
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
    const before = policies.get(key) as { spec: { vip: string; targets: unknown[] } } | undefined;
    if (
      before && before.spec.vip === nameOf(vip) &&
      JSON.stringify(before.spec.targets) === JSON.stringify([{ kind, name: target }])
    ) return; // the same pod's other family: one policy serves both
    if (before) {
      problems.push(
        `EgressPolicy ${key} would be created twice; the second (${kind} ${target}) is skipped`,
      );
      return;
    }
    policies.set(key, {
      apiVersion: API_VERSION,
      kind: "EgressPolicy",
      metadata: { name, namespace },
      spec: { vip: nameOf(vip), targets: [{ kind, name: target }] },
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
    addPolicy(namespace, safeName(metadata.name), address(spec.ip), kind, spec.name);
  }

  // ConfigMap-only mappings: name the pod that has the IP now, if pods are known.
  const podsByIp = new Map(
    (input.pods ?? []).filter((p) => !p.finished).flatMap((p) =>
      [p.ip, p.ipv6].filter((ip): ip is string => ip !== undefined).map((ip) => [ip, p] as const)
    ),
  );
  const podVips = Object.entries(input.podVips).map(([k, v]) => [address(k), address(v)] as const)
    .sort(([a], [b]) => compareIp(a, b));
  for (const [podIp, vip] of podVips) {
    const pod = podsByIp.get(podIp);
    if (pod && covered.has(`${pod.namespace}/${pod.name}`)) continue;
    if (!input.pods) {
      problems.push(
        `ConfigMap podip-vip-mappings: ${podIp} → ${vip} names no pod; run migrate against the API (--from-api) to resolve it, or write its policy by hand`,
      );
      continue;
    }
    if (!pod) {
      problems.push(
        `ConfigMap podip-vip-mappings: no pod has ${podIp} now (a stale mapping); skipped`,
      );
      continue;
    }
    addPolicy(pod.namespace, safeName(`pod-${pod.name}`), vip, "Pod", pod.name);
  }

  const sorted = [...addresses].filter(Boolean).sort(compareIp);
  const vips = sorted.filter((ip) => !dualOf.has(ip)).map((ip) => {
    const partner = sorted.find((o) => dualOf.get(o) === ip);
    return {
      apiVersion: API_VERSION,
      kind: "EgressVIP",
      metadata: { name: vipName(ip) },
      spec: {
        ip,
        ...(partner ? { ips: [ip, partner] } : {}),
        ...(routeIds.has(ip) ? { routeId: routeIds.get(ip) } : {}),
      },
    };
  });
  const sortedPolicies = [...policies.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, p]) =>
    p
  );
  return { objects: [...vips, ...sortedPolicies], problems };
}
