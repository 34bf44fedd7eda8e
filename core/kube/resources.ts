/**
 * The Kubernetes resources the agent touches and, for each, exactly the verbs
 * it uses. The client refuses any other verb, and deploy/rbac.yaml grants
 * exactly these (a test compares them, and another records what a running
 * agent really asks the API server for).
 */
import { GROUP, KINDS, VERSION } from "./api.ts";

export interface Resource {
  /** "" for the core group. */
  readonly group: string;
  readonly version: string;
  /** Plural resource name, with "/status" for the status subresource. */
  readonly plural: string;
  readonly namespaced: boolean;
}

export type Verb = "get" | "list" | "watch" | "create" | "update" | "patch" | "delete";

const resource = (group: string, version: string, plural: string, namespaced: boolean) => ({
  group,
  version,
  plural,
  namespaced,
});

export const PODS = resource("", "v1", "pods", true);
export const NAMESPACES = resource("", "v1", "namespaces", false);
export const NODES = resource("", "v1", "nodes", false);
export const EVENTS = resource("", "v1", "events", true);
export const REPLICASETS = resource("apps", "v1", "replicasets", true);
export const LEASES = resource("coordination.k8s.io", "v1", "leases", true);
export const EGRESS_VIPS = resource(GROUP, VERSION, KINDS.EgressVIP.plural, false);
export const EGRESS_POLICIES = resource(GROUP, VERSION, KINDS.EgressPolicy.plural, true);
export const EGRESS_SLICES = resource(GROUP, VERSION, KINDS.EgressSlice.plural, false);

/**
 * Every (resource, verbs) pair the node agent uses; the source of the agent's
 * rules in deploy/rbac.yaml. Agents read the published selection, the VIPs and
 * their own Node: nothing that grows with the cluster's pods.
 */
export const AGENT_PERMISSIONS: readonly { resource: Resource; verbs: readonly Verb[] }[] = [
  // Its own Node only (a field selector on metadata.name): labels and cordon, for placement.
  { resource: NODES, verbs: ["list", "watch"] },
  { resource: EGRESS_VIPS, verbs: ["list", "watch"] },
  // The holder in VIP status: only the node that holds the address knows it.
  { resource: { ...EGRESS_VIPS, plural: `${EGRESS_VIPS.plural}/status` }, verbs: ["update"] },
  { resource: EGRESS_SLICES, verbs: ["list", "watch"] },
  // The guard's Events about foreign claims of a VIP (cmd/kube/guard_events.ts).
  { resource: EVENTS, verbs: ["create"] },
];

/**
 * Every (resource, verbs) pair the controller (`mod.ts controller`, a
 * Deployment) uses: it selects for the whole cluster and publishes
 * EgressSlices, statuses, finalizers and Events while it holds the Lease.
 */
export const CONTROLLER_PERMISSIONS: readonly { resource: Resource; verbs: readonly Verb[] }[] = [
  { resource: PODS, verbs: ["list", "watch"] },
  { resource: NAMESPACES, verbs: ["list", "watch"] },
  { resource: NODES, verbs: ["list", "watch"] },
  { resource: REPLICASETS, verbs: ["list", "watch"] },
  // patch: the in-use finalizer, and nothing else of the object.
  { resource: EGRESS_VIPS, verbs: ["list", "watch", "patch"] },
  { resource: { ...EGRESS_VIPS, plural: `${EGRESS_VIPS.plural}/status` }, verbs: ["update"] },
  { resource: EGRESS_POLICIES, verbs: ["list", "watch"] },
  {
    resource: { ...EGRESS_POLICIES, plural: `${EGRESS_POLICIES.plural}/status` },
    verbs: ["update"],
  },
  { resource: EGRESS_SLICES, verbs: ["list", "watch", "create", "update", "delete"] },
  { resource: EVENTS, verbs: ["create"] },
  // watch: a standby replica learns of a released or changed Lease at once.
  { resource: LEASES, verbs: ["get", "create", "update", "watch"] },
];

/** Both tables together: a client's default (the agent and the controller pass their own). */
export const ALL_PERMISSIONS: readonly { resource: Resource; verbs: readonly Verb[] }[] = [
  ...AGENT_PERMISSIONS,
  ...CONTROLLER_PERMISSIONS,
];

/** "group/plural" as RBAC and the test API server's request log name a resource. */
export function resourceName(r: Pick<Resource, "group" | "plural">): string {
  return `${r.group || "core"}/${r.plural}`;
}

/** The URL path of a collection or object (optionally a subresource). */
export function resourcePath(
  r: Resource,
  options: { namespace?: string; name?: string; subresource?: string } = {},
): string {
  const base = r.group === "" ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
  const plural = r.plural.split("/")[0];
  const ns = r.namespaced && options.namespace ? `/namespaces/${options.namespace}` : "";
  const name = options.name ? `/${options.name}` : "";
  const sub = options.subresource ? `/${options.subresource}` : "";
  return `${base}${ns}/${plural}${name}${sub}`;
}
