/**
 * The Kubernetes objects the agents watch, reduced the moment they arrive to
 * the few fields selection needs. A 10,000-pod cluster is then a few MB of
 * small records rather than hundreds of MB of full Pod objects. Each reducer
 * parses with zod and returns undefined for an object it cannot read (it is
 * then treated as absent, never as a crash).
 */
import { z } from "zod";

const labels = z.record(z.string(), z.string()).optional().catch(undefined);

const OwnerReference = z.object({
  kind: z.string(),
  name: z.string(),
  controller: z.boolean().optional(),
});

const Metadata = z.object({
  name: z.string(),
  namespace: z.string().optional(),
  uid: z.string().optional(),
  resourceVersion: z.string().optional(),
  generation: z.number().optional(),
  creationTimestamp: z.string().optional(),
  deletionTimestamp: z.string().optional().nullable(),
  labels,
  finalizers: z.array(z.string()).optional(),
  ownerReferences: z.array(OwnerReference).optional().catch(undefined),
});
export type Metadata = z.output<typeof Metadata>;

/** A reference to a controlling owner: kind and name (same namespace). */
export interface OwnerRef {
  readonly kind: string;
  readonly name: string;
}

export interface PodRecord {
  readonly namespace: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly owner?: OwnerRef;
  /** The pod's IPv4 address, once it has one. */
  readonly ip?: string;
  /** The pod's IPv6 address (a dual-stack or IPv6-only pod), once it has one. */
  readonly ipv6?: string;
  readonly node?: string;
  readonly hostNetwork: boolean;
  /** Succeeded/Failed pods keep their IP in status but no longer own it. */
  readonly finished: boolean;
  readonly created: string;
}

export interface NamespaceRecord {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface NodeRecord {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly unschedulable: boolean;
  /** The first IPv4 InternalIP (VRRP over unicast advertises to it). */
  readonly internalIp?: string;
  /** The first IPv6 InternalIP (an IPv6-only VIP's VRRP over unicast advertises to it). */
  readonly internalIpv6?: string;
}

/** A ReplicaSet (metadata only): its controlling owner, e.g. the Deployment. */
export interface OwnerRecord {
  readonly namespace: string;
  readonly name: string;
  readonly owner?: OwnerRef;
}

const PodShape = z.object({
  metadata: Metadata,
  spec: z.object({
    nodeName: z.string().optional(),
    hostNetwork: z.boolean().optional(),
  }).optional(),
  status: z.object({
    phase: z.string().optional(),
    podIP: z.string().optional(),
    podIPs: z.array(z.object({ ip: z.string() })).optional(),
  }).optional(),
});

function controller(meta: Metadata): OwnerRef | undefined {
  const ref = meta.ownerReferences?.find((o) => o.controller) ?? undefined;
  return ref && { kind: ref.kind, name: ref.name };
}

const isV4 = (ip: string) => /^\d{1,3}(\.\d{1,3}){3}$/.test(ip);
const isV6 = (ip: string) => ip.includes(":");

/** Key of a namespaced object in stores: "namespace/name". */
export function objectKey(meta: { namespace?: string; name: string }): string {
  return meta.namespace ? `${meta.namespace}/${meta.name}` : meta.name;
}

/** Reduces a Pod to a PodRecord. */
export function podRecord(object: unknown): PodRecord | undefined {
  const parsed = PodShape.safeParse(object);
  if (!parsed.success) return undefined;
  const { metadata, spec, status } = parsed.data;
  const all = [status?.podIP, ...(status?.podIPs ?? []).map((p) => p.ip)]
    .filter((ip): ip is string => ip !== undefined);
  const ips = all.filter(isV4);
  const ipv6 = all.find(isV6);
  const phase = status?.phase;
  return {
    namespace: metadata.namespace ?? "",
    name: metadata.name,
    labels: metadata.labels ?? {},
    owner: controller(metadata),
    ip: ips[0],
    ...(ipv6 ? { ipv6 } : {}),
    node: spec?.nodeName,
    hostNetwork: spec?.hostNetwork === true,
    finished: phase === "Succeeded" || phase === "Failed",
    created: metadata.creationTimestamp ?? "",
  };
}

/** Reduces a Namespace to its name and labels. */
export function namespaceRecord(object: unknown): NamespaceRecord | undefined {
  const parsed = z.object({ metadata: Metadata }).safeParse(object);
  if (!parsed.success) return undefined;
  return { name: parsed.data.metadata.name, labels: parsed.data.metadata.labels ?? {} };
}

/** Reduces a Node to its name, labels, whether it is cordoned, and its InternalIP of each family. */
export function nodeRecord(object: unknown): NodeRecord | undefined {
  const parsed = z.object({
    metadata: Metadata,
    spec: z.object({ unschedulable: z.boolean().optional() }).optional(),
    status: z.object({
      addresses: z.array(z.object({ type: z.string(), address: z.string() })).optional(),
    }).optional(),
  }).safeParse(object);
  if (!parsed.success) return undefined;
  const internal = (family: (ip: string) => boolean) =>
    parsed.data.status?.addresses?.find((a) => a.type === "InternalIP" && family(a.address))
      ?.address;
  const internalIp = internal(isV4);
  const internalIpv6 = internal(isV6);
  return {
    name: parsed.data.metadata.name,
    labels: parsed.data.metadata.labels ?? {},
    unschedulable: parsed.data.spec?.unschedulable === true,
    ...(internalIp ? { internalIp } : {}),
    ...(internalIpv6 ? { internalIpv6 } : {}),
  };
}

/** Reduces a ReplicaSet (full or PartialObjectMetadata) to its controlling owner. */
export function ownerRecord(object: unknown): OwnerRecord | undefined {
  const parsed = z.object({ metadata: Metadata }).safeParse(object);
  if (!parsed.success) return undefined;
  const meta = parsed.data.metadata;
  return { namespace: meta.namespace ?? "", name: meta.name, owner: controller(meta) };
}

/** One of our custom objects, with its spec left unparsed (validated during selection). */
export interface CustomRecord {
  readonly metadata: Metadata;
  readonly spec: unknown;
  readonly status: unknown;
}

/** Keeps metadata, spec and status of an EgressVIP or EgressPolicy. */
export function customRecord(object: unknown): CustomRecord | undefined {
  const parsed = z.object({
    metadata: Metadata,
    spec: z.unknown().optional(),
    status: z.unknown().optional(),
  })
    .safeParse(object);
  if (!parsed.success) return undefined;
  return { metadata: parsed.data.metadata, spec: parsed.data.spec, status: parsed.data.status };
}

/**
 * Two reduced records (pods, namespaces, nodes, ReplicaSets) are the same:
 * they keep only what selection reads, so an update that leaves the record
 * as it was (a pod's conditions, a node's heartbeat) changes no egress.
 */
export function sameRecord<T>(a: T, b: T): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Two EgressVIP/EgressPolicy records select the same egress: same identity,
 * creation time and spec, and for a VIP the same assigned route id. The rest
 * of the status (counts, conditions, the holder) is written by the agents
 * themselves and must not trigger passes on every node.
 */
export function sameForSelection(a: CustomRecord, b: CustomRecord): boolean {
  const selected = (r: CustomRecord) =>
    JSON.stringify([
      r.metadata.name,
      r.metadata.namespace,
      r.metadata.creationTimestamp,
      r.spec,
      (r.status as { routeId?: unknown } | undefined)?.routeId,
    ]);
  return selected(a) === selected(b);
}
