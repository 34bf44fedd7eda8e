/**
 * Policy selection: EgressVIPs, EgressPolicies, pods, namespaces and owner
 * chains → the RawSnapshot the node agent validates and programs, plus what
 * each policy and VIP should report in its status.
 *
 * Rules, all deterministic:
 * - A pod counts when it has an IPv4 address, is not on the host network and
 *   has not finished. When two such pods claim one IP (a stale object of a
 *   vanished node), the newest pod owns it.
 * - A policy selects pods of its own namespace: by podSelector and/or named
 *   targets (a Pod, or the pods controlled by a ReplicaSet, StatefulSet,
 *   DaemonSet, Job, or a Deployment through its ReplicaSets).
 * - A policy is in force when its spec is valid and its EgressVIP exists, is
 *   valid, has a route id and admits the namespace. Policies not in force
 *   claim no pods.
 * - A pod selected by several policies in force follows the oldest
 *   (creationTimestamp, then namespace/name). A younger policy that would send
 *   it elsewhere reports Conflict; one with the same egress simply agrees.
 */
import { formatCidr, parseCidr } from "../ip.ts";
import { describeIssues } from "../schema.ts";
import type { Problem, RawGuard, RawPod, RawSnapshot, RawVip } from "../snapshot.ts";
import {
  type EgressPolicySpec,
  EgressPolicySpec as PolicySpecSchema,
  type EgressVIPSpec,
  EgressVIPSpec as VipSpecSchema,
  EgressVIPStatus,
  vipAddresses,
} from "./api.ts";
import {
  type CustomRecord,
  type NamespaceRecord,
  objectKey,
  type OwnerRecord,
  type PodRecord,
} from "./objects.ts";
import { optionalSelectorMatches, selectorMatches } from "./selector.ts";

/** Everything selection reads, as the agents' caches hold it. */
export interface ClusterView {
  readonly vips: Iterable<CustomRecord>;
  readonly policies: Iterable<CustomRecord>;
  readonly pods: Iterable<PodRecord>;
  readonly namespaces: ReadonlyMap<string, NamespaceRecord>;
  /** ReplicaSets by "namespace/name" (their controlling Deployment). */
  readonly replicaSets: ReadonlyMap<string, OwnerRecord>;
}

/** Why a policy is or is not in force, for its conditions. */
export type PolicyState =
  | { readonly ok: true }
  | {
    readonly ok: false;
    readonly reason: "InvalidSpec" | "VIPNotFound" | "VIPNotReady" | "NotAllowed";
    readonly message: string;
  };

export interface PolicyOutcome {
  readonly namespace: string;
  readonly name: string;
  readonly state: PolicyState;
  /** The VIP's address when the VIP exists and is valid. */
  readonly ip?: string;
  /** Pods whose traffic this policy steers. */
  readonly pods: number;
  /** Pods this policy selects that an older policy sends elsewhere. */
  readonly conflicts: readonly { readonly pod: string; readonly olderPolicy: string }[];
}

export interface VipOutcome {
  readonly name: string;
  readonly pods: number;
  /** Policies ("namespace/name") naming this VIP, in force or not. */
  readonly policies: readonly string[];
}

export interface Selection {
  readonly raw: RawSnapshot;
  /** By "namespace/name". */
  readonly policies: ReadonlyMap<string, PolicyOutcome>;
  /** By VIP name. */
  readonly vips: ReadonlyMap<string, VipOutcome>;
}

/** A VIP as selection sees it: parsed spec, or why it cannot be used. */
export interface VipInfo {
  readonly name: string;
  readonly spec?: EgressVIPSpec;
  readonly problem?: string;
  readonly routeId?: number;
}

/** Orders objects oldest first; ties by namespace/name, so every node decides alike. */
export function byAge(
  a: { created: string; key: string },
  b: { created: string; key: string },
): number {
  return a.created < b.created ? -1 : a.created > b.created ? 1 : a.key < b.key ? -1 : 1;
}

/** The pods that really own their IP: running-or-pending, not host network, newest per IP. */
export function podsOwningIps(pods: Iterable<PodRecord>): PodRecord[] {
  const byIp = new Map<string, PodRecord>();
  for (const pod of pods) {
    if (!pod.ip || pod.hostNetwork || pod.finished) continue;
    const other = byIp.get(pod.ip);
    if (
      !other ||
      byAge(
          { created: other.created, key: objectKey(other) },
          { created: pod.created, key: objectKey(pod) },
        ) < 0
    ) byIp.set(pod.ip, pod);
  }
  return [...byIp.values()];
}

/** A VIP record read for selection: its parsed spec and route id, or why it cannot be used. */
export function readVip(record: CustomRecord): VipInfo {
  const name = record.metadata.name;
  const status = EgressVIPStatus.safeParse(record.status ?? {});
  const routeId = status.success ? status.data.routeId : undefined;
  const spec = VipSpecSchema.safeParse(record.spec, { reportInput: true });
  if (!spec.success) {
    return { name, problem: `invalid spec: ${describeIssues(spec.error)}`, routeId };
  }
  return { name, spec: spec.data, routeId };
}

/** True when the policy's targets name the pod or one of its controllers. */
export function targetsMatch(
  spec: EgressPolicySpec,
  pod: PodRecord,
  replicaSets: ReadonlyMap<string, OwnerRecord>,
): boolean {
  for (const target of spec.targets ?? []) {
    if (target.kind === "Pod") {
      if (pod.name === target.name) return true;
    } else if (target.kind === "Deployment") {
      if (pod.owner?.kind !== "ReplicaSet") continue;
      const rs = replicaSets.get(`${pod.namespace}/${pod.owner.name}`);
      if (rs?.owner?.kind === "Deployment" && rs.owner.name === target.name) return true;
    } else if (pod.owner?.kind === target.kind && pod.owner.name === target.name) return true;
  }
  return false;
}

/** True when the policy's podSelector or targets select the pod. */
export function policySelects(
  spec: EgressPolicySpec,
  pod: PodRecord,
  replicaSets: ReadonlyMap<string, OwnerRecord>,
): boolean {
  return (spec.podSelector !== undefined && selectorMatches(spec.podSelector, pod.labels)) ||
    targetsMatch(spec, pod, replicaSets);
}

/** Ranges canonical, unique and sorted (a class of destinations compares as text). */
export function normalized(cidrs: readonly string[] | undefined): string[] {
  return [...new Set((cidrs ?? []).map((c) => formatCidr(parseCidr(c)!)))].sort();
}

/** What a pod's traffic does under a policy: VIP plus destination restrictions. */
export function egressKey(ip: string, spec: EgressPolicySpec): string {
  return [ip, normalized(spec.destinationCIDRs).join(","), normalized(spec.excludedCIDRs).join(",")]
    .join("|");
}

/** Computes the snapshot and every policy's and VIP's outcome. */
export function selectEgress(view: ClusterView): Selection {
  const problems: Problem[] = [];
  const vips = new Map<string, VipInfo>();
  const rawVips: RawVip[] = [];
  for (const record of view.vips) {
    const info = readVip(record);
    vips.set(info.name, info);
    if (info.spec && info.routeId !== undefined) {
      // A dual-stack VIP: one entry per family, one route id.
      for (const ip of vipAddresses(info.spec)) {
        rawVips.push({ origin: `EgressVIP ${info.name}`, ip, routeId: info.routeId });
      }
    }
  }

  const policies = [...view.policies].map((record) => ({
    record,
    key: objectKey(record.metadata),
    namespace: record.metadata.namespace ?? "",
    name: record.metadata.name,
    created: record.metadata.creationTimestamp ?? "",
  })).sort(byAge);

  const podsByNamespace = new Map<string, PodRecord[]>();
  for (const pod of podsOwningIps(view.pods)) {
    const list = podsByNamespace.get(pod.namespace);
    if (list) list.push(pod);
    else podsByNamespace.set(pod.namespace, [pod]);
  }

  const claimed = new Map<string, { policy: string; egress: string }>(); // pod key → winner
  const outcomes = new Map<string, PolicyOutcome>();
  const vipPods = new Map<string, Set<string>>();
  const vipPolicies = new Map<string, string[]>();
  const rawPods: RawPod[] = [];
  const guards: RawGuard[] = [];

  for (const policy of policies) {
    const base = { namespace: policy.namespace, name: policy.name, pods: 0, conflicts: [] };
    const parsed = PolicySpecSchema.safeParse(policy.record.spec, { reportInput: true });
    if (!parsed.success) {
      const message = `invalid spec: ${describeIssues(parsed.error)}`;
      outcomes.set(policy.key, { ...base, state: { ok: false, reason: "InvalidSpec", message } });
      problems.push({ origin: `EgressPolicy ${policy.key}`, reason: message });
      continue;
    }
    const spec = parsed.data;
    // Fail closed: the policy's pods are guarded whatever becomes of its VIP (core/fail_closed.ts).
    if (spec.failClosed) {
      for (const pod of podsByNamespace.get(policy.namespace) ?? []) {
        if (!policySelects(spec, pod, view.replicaSets)) continue;
        guards.push({ origin: `EgressPolicy ${policy.key} (pod ${pod.name})`, podIp: pod.ip });
      }
    }
    vipPolicies.set(spec.vip, [...(vipPolicies.get(spec.vip) ?? []), policy.key]);
    const vip = vips.get(spec.vip);
    const ip = vip?.spec?.ip;
    const fail = (reason: Exclude<PolicyState, { ok: true }>["reason"], message: string) =>
      outcomes.set(policy.key, { ...base, ip, state: { ok: false, reason, message } });
    if (!vip) {
      fail("VIPNotFound", `EgressVIP ${spec.vip} does not exist`);
      continue;
    }
    if (!vip.spec) {
      fail("VIPNotReady", `EgressVIP ${spec.vip} has an ${vip.problem}`);
      continue;
    }
    const nsLabels = view.namespaces.get(policy.namespace)?.labels ?? {};
    if (!optionalSelectorMatches(vip.spec.namespaceSelector, nsLabels)) {
      fail("NotAllowed", `EgressVIP ${spec.vip} does not admit namespace ${policy.namespace}`);
      continue;
    }
    if (vip.routeId === undefined) {
      fail("VIPNotReady", `EgressVIP ${spec.vip} has no route id yet`);
      continue;
    }

    const egress = egressKey(vip.spec.ip, spec);
    const conflicts: { pod: string; olderPolicy: string }[] = [];
    let count = 0;
    for (const pod of podsByNamespace.get(policy.namespace) ?? []) {
      if (!policySelects(spec, pod, view.replicaSets)) continue;
      const podKey = objectKey(pod);
      const winner = claimed.get(podKey);
      if (winner && winner.egress !== egress) {
        conflicts.push({ pod: podKey, olderPolicy: winner.policy });
        continue;
      }
      count++;
      if (winner) continue;
      claimed.set(podKey, { policy: policy.key, egress });
      const users = vipPods.get(spec.vip) ?? new Set();
      users.add(podKey);
      vipPods.set(spec.vip, users);
      rawPods.push({
        origin: `EgressPolicy ${policy.key} (pod ${pod.name})`,
        podIp: pod.ip,
        vip: vip.spec.ip,
        ...(spec.destinationCIDRs ? { destinations: spec.destinationCIDRs } : {}),
        ...(spec.excludedCIDRs ? { excluded: spec.excludedCIDRs } : {}),
      });
    }
    outcomes.set(policy.key, { ...base, ip, pods: count, conflicts, state: { ok: true } });
  }

  const vipOutcomes = new Map<string, VipOutcome>();
  for (const name of vips.keys()) {
    vipOutcomes.set(name, {
      name,
      pods: vipPods.get(name)?.size ?? 0,
      policies: vipPolicies.get(name) ?? [],
    });
  }
  return {
    raw: {
      vips: rawVips,
      pods: rawPods,
      problems,
      ...(guards.length > 0 ? { failClosed: guards } : {}),
    },
    policies: outcomes,
    vips: vipOutcomes,
  };
}
