/**
 * The Kubernetes API of kube-egress, group `egress.kube-egress.io`, version
 * `v1alpha1`: the cluster-scoped EgressVIP and the namespaced EgressPolicy.
 * These zod schemas are the single source: agents parse objects with them and
 * `crd.ts` generates the CRDs' structural OpenAPI schemas from them.
 */
import { z } from "zod";
import { CIDR_MESSAGES, cidrv4, ipv4, routeId } from "../schema.ts";
import { formatIPv6, isIPv4Mapped, parseIPv6 } from "../ip.ts";

export const GROUP = "egress.kube-egress.io";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

/** Finalizer that keeps an EgressVIP alive while a policy still uses it. */
export const VIP_FINALIZER = `${GROUP}/in-use`;

/** The kinds a policy may name as targets; pods are matched through their owner chain. */
export const TARGET_KINDS = [
  "Pod",
  "Deployment",
  "StatefulSet",
  "DaemonSet",
  "ReplicaSet",
  "Job",
] as const;
export type TargetKind = (typeof TARGET_KINDS)[number];

/**
 * A CEL rule of a CRD (`x-kubernetes-validations`), written next to the zod
 * check it mirrors and with the same message, so that `kubectl apply` refuses
 * what the agents would reject, in the agents' words.
 */
export interface CelRule {
  readonly rule: string;
  readonly message?: string;
  readonly messageExpression?: string;
  readonly fieldPath?: string;
  readonly reason?: "FieldValueInvalid" | "FieldValueRequired" | "FieldValueForbidden";
}

/** Attaches CEL rules to a schema (they reach the CRD through `z.toJSONSchema`). */
const cel = <T extends z.ZodType>(schema: T, ...rules: CelRule[]): T =>
  schema.meta({ "x-kubernetes-validations": rules });

/** Bounds that let the API server estimate the rules' cost (and that the agents share). */
export const LIMITS = { cidrs: 256, targets: 256, expressions: 64, values: 256 } as const;

/**
 * A destination range in a policy: `cidrv4`, and in the CRD the same two rules
 * as CEL (Kubernetes' CIDR library, 1.31 and later).
 */
const policyCidr = cel(
  cidrv4.meta({ maxLength: 18 }),
  { rule: "isCIDR(self) && cidr(self).ip().family() == 4", message: CIDR_MESSAGES.syntax },
  {
    rule: "!isCIDR(self) || cidr(self).masked() == cidr(self)",
    message: CIDR_MESSAGES.hostBits,
  },
);

/** An object name (DNS subdomain, RFC 1123). */
export const objectName = z.string().min(1).max(253).regex(
  /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
  { error: "must be a lowercase RFC 1123 name such as office-nat" },
);

const LabelSelectorRequirement = cel(
  z.object({
    key: z.string().min(1).meta({ description: "the label key" }),
    operator: z.enum(["In", "NotIn", "Exists", "DoesNotExist"]),
    values: z.array(z.string()).max(LIMITS.values).optional().meta({
      description: "label values: required for In and NotIn, empty for Exists and DoesNotExist",
    }),
  }).superRefine(requirementValues),
  {
    rule: "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
    messageExpression: "'are required with ' + self.operator",
    message: "are required with In and NotIn",
    fieldPath: ".values",
    reason: "FieldValueRequired",
  },
  {
    rule: "self.operator in ['In', 'NotIn'] || !has(self.values) || size(self.values) == 0",
    messageExpression: "'must be empty with ' + self.operator",
    message: "must be empty with Exists and DoesNotExist",
    fieldPath: ".values",
  },
);

function requirementValues(
  req: { operator: string; values?: string[] },
  ctx: z.RefinementCtx,
) {
  const needsValues = req.operator === "In" || req.operator === "NotIn";
  const count = req.values?.length ?? 0;
  if (needsValues && count === 0) {
    ctx.addIssue({
      code: "custom",
      path: ["values"],
      message: `are required with ${req.operator}`,
    });
  } else if (!needsValues && count > 0) {
    ctx.addIssue({
      code: "custom",
      path: ["values"],
      message: `must be empty with ${req.operator}`,
    });
  }
}

/** A Kubernetes label selector (metav1.LabelSelector); `{}` selects everything. */
export const LabelSelector = z.object({
  matchLabels: z.record(z.string(), z.string()).optional(),
  matchExpressions: z.array(LabelSelectorRequirement).max(LIMITS.expressions).optional(),
});
export type LabelSelector = z.output<typeof LabelSelector>;

/** A status condition (metav1.Condition). */
export const Condition = z.object({
  type: z.string().min(1),
  status: z.enum(["True", "False", "Unknown"]),
  reason: z.string(),
  message: z.string(),
  lastTransitionTime: z.string().meta({ format: "date-time" }),
  observedGeneration: z.int().min(0).optional(),
});
export type Condition = z.output<typeof Condition>;

/** The messages of a VIP address, shared with the CRD's CEL rules. */
export const VIP_ADDRESS_MESSAGES = {
  syntax: "must be an IPv4 or IPv6 address such as 192.0.2.10 or 2001:db8::10",
  canonical: "must be written canonically (lowercase, zeros compressed, as 2001:db8::10)",
  mapped: "is an IPv4-mapped IPv6 address: write the IPv4 address",
  families: "must hold at most one address of each family (IPv4, IPv6)",
  first: "must start with spec.ip (as a Service's clusterIPs start with its clusterIP)",
} as const;

/**
 * A VIP's address: IPv4 (canonical dotted quad) or IPv6 (canonical text,
 * RFC 5952), so that two spellings of one address never make two VIPs.
 */
export const vipAddress = cel(
  z.string().max(39).superRefine((text, ctx) => {
    if (ipv4.safeParse(text).success) return;
    const v6 = text.includes(":") ? parseIPv6(text) : undefined;
    const message = v6 === undefined
      ? VIP_ADDRESS_MESSAGES.syntax
      : isIPv4Mapped(v6)
      ? VIP_ADDRESS_MESSAGES.mapped
      : formatIPv6(v6) !== text
      ? `${VIP_ADDRESS_MESSAGES.canonical}: ${formatIPv6(v6)}`
      : undefined;
    if (message) ctx.addIssue({ code: "custom", input: text, message });
  }),
  { rule: "isIP(self)", message: VIP_ADDRESS_MESSAGES.syntax },
  {
    rule: "!isIP(self) || ip.isCanonical(self)",
    message: VIP_ADDRESS_MESSAGES.canonical,
  },
  {
    rule: "!isIP(self) || ip(self).family() == 4 || !self.startsWith('::ffff:')",
    message: VIP_ADDRESS_MESSAGES.mapped,
  },
);

/** The addresses of an EgressVIP: `ips` where given (dual stack), else `ip` alone. */
export function vipAddresses(spec: { ip: string; ips?: readonly string[] }): readonly string[] {
  return spec.ips && spec.ips.length > 0 ? spec.ips : [spec.ip];
}

const familyOf = (ip: string) => (ip.includes(":") ? 6 : 4);

export const EgressVIPSpec = cel(
  z.object({
    ip: vipAddress.meta({
      description:
        "the egress address (IPv4 or IPv6); selected pods' traffic of its family leaves with it",
    }),
    ips: z.array(vipAddress).min(1).max(2).optional().meta({
      description:
        "dual stack: spec.ip, then the address of the other family (as a Service's clusterIPs); a dual-stack pod leaves with the address of the family it sends with. Both sit on one holder",
    }),
    routeId: routeId.optional().meta({
      description:
        "policy-routing table and fwmark id (1-252); assigned uniquely when absent and shown in status.routeId",
    }),
    nodeSelector: LabelSelector.optional().meta({
      description: "nodes allowed to hold the address; absent: every node",
    }),
    namespaceSelector: LabelSelector.optional().meta({
      description: "namespaces whose policies may use this VIP; absent: every namespace",
    }),
  }).superRefine((spec, ctx) => {
    const ips = spec.ips;
    if (!ips) return;
    if (ips[0] !== spec.ip) {
      ctx.addIssue({ code: "custom", path: ["ips"], message: VIP_ADDRESS_MESSAGES.first });
    }
    if (ips.length === 2 && familyOf(ips[0]) === familyOf(ips[1])) {
      ctx.addIssue({ code: "custom", path: ["ips"], message: VIP_ADDRESS_MESSAGES.families });
    }
  }),
  {
    rule: "!has(self.ips) || self.ips[0] == self.ip",
    message: VIP_ADDRESS_MESSAGES.first,
    fieldPath: ".ips",
  },
  {
    rule:
      "!has(self.ips) || size(self.ips) < 2 || !isIP(self.ips[0]) || !isIP(self.ips[1]) || ip(self.ips[0]).family() != ip(self.ips[1]).family()",
    message: VIP_ADDRESS_MESSAGES.families,
    fieldPath: ".ips",
  },
);
export type EgressVIPSpec = z.output<typeof EgressVIPSpec>;

export const EgressVIPStatus = z.object({
  routeId: z.int().min(1).max(252).optional().meta({
    description: "the route id in force (spec.routeId or the assigned one)",
  }),
  holder: z.string().optional().meta({ description: "the node that holds the address" }),
  pods: z.int().min(0).optional().meta({ description: "pods whose traffic uses this VIP" }),
  policies: z.int().min(0).optional().meta({ description: "policies that use this VIP" }),
  nodes: z.array(z.object({
    name: z.string().meta({ description: "the Node" }),
    ip: z.string().meta({
      description:
        "its first InternalIP of the VIP's VRRP family (IPv4 unless the VIP is IPv6-only)",
    }),
    cordoned: z.boolean().optional().meta({ description: "cordoned: it may not take the address" }),
  })).optional().meta({
    description:
      "nodes the nodeSelector selects that have an InternalIP of the VIP's VRRP family, by address (the VRRP unicast peers are those not cordoned; the guard trusts them all), published by the controller so that agents need not watch every Node",
  }),
  observedGeneration: z.int().min(0).optional(),
  conditions: z.array(Condition).optional(),
});
export type EgressVIPStatus = z.output<typeof EgressVIPStatus>;

export const PolicyTarget = z.object({
  kind: z.enum(TARGET_KINDS),
  name: objectName,
});
export type PolicyTarget = z.output<typeof PolicyTarget>;

/** The message of the rule "a policy names its pods somehow". */
export const NEEDS_SELECTOR = "needs a podSelector or at least one target";

export const EgressPolicySpec = cel(
  z.object({
    vip: objectName.meta({
      description: "name of the EgressVIP whose address the pods leave with",
    }),
    podSelector: LabelSelector.optional().meta({
      description: "pods of this namespace to select; {} selects all of them",
    }),
    targets: z.array(PolicyTarget).max(LIMITS.targets).optional().meta({
      description:
        "named Pods, or the pods of named Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs",
    }),
    destinationCIDRs: z.array(policyCidr).max(LIMITS.cidrs).optional().meta({
      description:
        "steer only traffic to these ranges; absent: every destination outside the cluster",
    }),
    excludedCIDRs: z.array(policyCidr).max(LIMITS.cidrs).optional().meta({
      description: "never steer traffic to these ranges",
    }),
    failClosed: z.boolean().optional().meta({
      description:
        "drop the pods' traffic to steered destinations rather than let it leave with another source than the VIP (no node holds it, the VIP is not ready or deleted); default false",
    }),
  }).superRefine((spec, ctx) => {
    if (spec.podSelector === undefined && (spec.targets ?? []).length === 0) {
      ctx.addIssue({ code: "custom", message: NEEDS_SELECTOR });
    }
  }),
  {
    rule: "has(self.podSelector) || (has(self.targets) && size(self.targets) > 0)",
    message: NEEDS_SELECTOR,
  },
);
export type EgressPolicySpec = z.output<typeof EgressPolicySpec>;

export const EgressPolicyStatus = z.object({
  ip: z.string().optional().meta({ description: "the VIP's address" }),
  pods: z.int().min(0).optional().meta({ description: "pods whose traffic this policy steers" }),
  observedGeneration: z.int().min(0).optional(),
  conditions: z.array(Condition).optional(),
});
export type EgressPolicyStatus = z.output<typeof EgressPolicyStatus>;

/** Condition types of an EgressPolicy. */
export const POLICY_CONDITIONS = ["Ready", "VIPNotFound", "NotAllowed", "Conflict"] as const;

const SLICE_SIZE_MESSAGE = "must equal the number of pods";

/** At most this many pod addresses per EgressSlice: one pod change rewrites about 1 KiB. */
export const SLICE_MAX_PODS = 32;

/**
 * One shard of a VIP's selection, written by the elected controller only:
 * the pod addresses whose traffic leaves with the EgressVIP `vip`, restricted
 * to one destination class (`destinationCIDRs` / `excludedCIDRs`, normalized)
 * and one way of failing (`failClosed`, `guardOnly`).
 * Agents watch these instead of Pods. The addresses are a set: the CRD keeps
 * them unique, and `size` is their count (for `kubectl get`).
 */
export const EgressSliceSpec = cel(
  z.object({
    vip: objectName.meta({ description: "name of the EgressVIP these pods leave with" }),
    destinationCIDRs: z.array(policyCidr).max(LIMITS.cidrs).optional().meta({
      description: "steer only traffic to these ranges (normalized, sorted); absent: every one",
    }),
    excludedCIDRs: z.array(policyCidr).max(LIMITS.cidrs).optional().meta({
      description: "never steer traffic to these ranges (normalized, sorted)",
    }),
    failClosed: z.boolean().optional().meta({
      description:
        "a failClosed policy selects these pods: drop their traffic rather than let it leave unsteered",
    }),
    guardOnly: z.boolean().optional().meta({
      description:
        "no policy in force steers these pods (their VIP is missing or not ready): fail closed only",
    }),
    pods: z.array(ipv4.meta({ maxLength: 15 })).max(SLICE_MAX_PODS).meta({
      description: "the pods' IPv4 addresses",
      "x-kubernetes-list-type": "set",
    }),
    size: z.int().min(0).max(SLICE_MAX_PODS).meta({ description: "how many pods: size(pods)" }),
  }).superRefine((spec, ctx) => {
    if (spec.size !== spec.pods.length) {
      ctx.addIssue({ code: "custom", path: ["size"], message: SLICE_SIZE_MESSAGE });
    }
  }),
  { rule: "self.size == size(self.pods)", message: SLICE_SIZE_MESSAGE, fieldPath: ".size" },
);
export type EgressSliceSpec = z.output<typeof EgressSliceSpec>;

/** Label on every EgressSlice: the name of its EgressVIP (when it fits a label value). */
export const SLICE_VIP_LABEL = `${GROUP}/vip`;

/** Resource names, kinds and what `kubectl get` shows; used by the CRD generator and RBAC. */
export const KINDS = {
  EgressVIP: {
    plural: "egressvips",
    singular: "egressvip",
    shortNames: ["evip", "evips"],
    scope: "Cluster",
    spec: EgressVIPSpec,
    status: EgressVIPStatus,
    description: "A floating egress address: selected pods' traffic leaves the cluster with it.",
    columns: [
      { name: "IP", type: "string", jsonPath: ".spec.ip" },
      { name: "Other-IP", type: "string", jsonPath: ".spec.ips[1]" },
      { name: "Route", type: "integer", jsonPath: ".status.routeId" },
      { name: "Holder", type: "string", jsonPath: ".status.holder" },
      { name: "Pods", type: "integer", jsonPath: ".status.pods" },
      { name: "Ready", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
    ],
  },
  EgressPolicy: {
    plural: "egresspolicies",
    singular: "egresspolicy",
    shortNames: ["epol", "egpol"],
    scope: "Namespaced",
    spec: EgressPolicySpec,
    status: EgressPolicyStatus,
    description: "Which pods of a namespace leave the cluster with which EgressVIP.",
    columns: [
      { name: "VIP", type: "string", jsonPath: ".spec.vip" },
      { name: "IP", type: "string", jsonPath: ".status.ip" },
      { name: "Pods", type: "integer", jsonPath: ".status.pods" },
      { name: "Ready", type: "string", jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
    ],
  },
  EgressSlice: {
    plural: "egressslices",
    singular: "egressslice",
    shortNames: ["esl"],
    scope: "Cluster",
    spec: EgressSliceSpec,
    status: undefined,
    description:
      "A shard of an EgressVIP's selected pod addresses, published by the elected controller for the agents.",
    columns: [
      { name: "VIP", type: "string", jsonPath: ".spec.vip" },
      { name: "Pods", type: "integer", jsonPath: ".spec.size" },
      { name: "Destinations", type: "string", jsonPath: ".spec.destinationCIDRs", priority: 1 },
      { name: "Excluded", type: "string", jsonPath: ".spec.excludedCIDRs", priority: 1 },
      { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
    ],
  },
} as const;
