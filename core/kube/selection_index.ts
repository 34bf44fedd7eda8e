/**
 * Incremental policy selection for the elected controller: the same rules as
 * `selectEgress` (selection.ts), kept up to date object by object. A pod event
 * re-evaluates that pod against the policies of its namespace (and the pods
 * that share its address); a policy or namespace change re-evaluates its
 * namespace; a VIP change the namespaces of the policies that name it. Nothing
 * re-selects the cluster, so a pod change costs O(policies in its namespace).
 *
 * Invariant (a property test holds it against `selectEgress`): after any
 * sequence of changes, `egressOf`, `outcomes()` and the set of selected
 * addresses equal what a full selection of the same objects gives.
 */
import { describeIssues } from "../schema.ts";
import { type EgressPolicySpec, EgressPolicySpec as PolicySpecSchema } from "./api.ts";
import {
  type CustomRecord,
  type NamespaceRecord,
  objectKey,
  type OwnerRecord,
  type PodRecord,
} from "./objects.ts";
import {
  byAge,
  egressKey,
  normalized,
  type PolicyOutcome,
  policySelects,
  type PolicyState,
  readVip,
  type Selection,
  type VipInfo,
  type VipOutcome,
} from "./selection.ts";
import { optionalSelectorMatches } from "./selector.ts";

/** Where a selected pod's traffic goes: the EgressVIP (by name) and its destination class. */
export interface Egress {
  readonly vip: string;
  /** Normalized (canonical, unique, sorted); absent = every destination. */
  readonly destinations?: readonly string[];
  /** Normalized; absent = none besides the cluster ranges. */
  readonly excluded?: readonly string[];
  /** A failClosed policy selects the pod: its traffic is dropped rather than leave unsteered. */
  readonly failClosed?: true;
  /**
   * Guarded only: no policy in force steers the pod (its failClosed policy's VIP is
   * missing or not ready), so agents drop instead of map; `vip` names that policy's VIP.
   */
  readonly guardOnly?: true;
}

/** The text two equal egresses share (VIP name, both range lists, how it fails). */
export function egressClass(egress: Egress): string {
  return `${egress.vip}|${(egress.destinations ?? []).join(",")}|${
    (egress.excluded ?? []).join(",")
  }${egress.guardOnly ? "|guard" : egress.failClosed ? "|closed" : ""}`;
}

interface PolicyInfo {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly created: string;
  readonly spec?: EgressPolicySpec;
  readonly problem?: string;
  /** The spec's ranges, normalized. */
  readonly egress?: Omit<Egress, "vip">;
}

interface PodEval {
  readonly ip: string;
  readonly winner?: string;
  readonly egress?: Egress;
  readonly counted: readonly string[];
  /** Policies that select the pod but lose it to `winner`, which sends it elsewhere. */
  readonly conflicts: readonly string[];
}

function eligible(pod: PodRecord | undefined): pod is PodRecord & { ip: string } {
  return pod !== undefined && pod.ip !== undefined && !pod.hostNetwork && !pod.finished;
}

const namespaceOf = (podKey: string) => podKey.slice(0, podKey.indexOf("/"));

function bump<K>(map: Map<K, number>, key: K, by: number) {
  const value = (map.get(key) ?? 0) + by;
  if (value === 0) map.delete(key);
  else map.set(key, value);
}

export class SelectionIndex {
  readonly #vips = new Map<string, VipInfo>();
  readonly #policies = new Map<string, PolicyInfo>();
  /** Per namespace, its policies oldest first. */
  readonly #nsPolicies = new Map<string, PolicyInfo[]>();
  /** VIP name → keys of valid policies naming it. */
  readonly #vipPolicies = new Map<string, Set<string>>();
  readonly #states = new Map<string, { state: PolicyState; ip?: string }>();
  readonly #namespaces = new Map<string, NamespaceRecord>();
  readonly #replicaSets = new Map<string, OwnerRecord>();
  readonly #pods = new Map<string, PodRecord>();
  /** Address → keys of the pods that claim it; the newest owns it. */
  readonly #claims = new Map<string, Set<string>>();
  readonly #owner = new Map<string, string>();
  /** Per namespace, the pods that own their address. */
  readonly #nsPods = new Map<string, Set<string>>();
  readonly #evals = new Map<string, PodEval>();
  readonly #policyPods = new Map<string, number>();
  /** Policy key → pod key → the older policy that keeps the pod. */
  readonly #policyConflicts = new Map<string, Map<string, string>>();
  readonly #vipPods = new Map<string, number>();
  readonly #desired = new Map<string, Egress>();
  #changed = new Set<string>();

  /** The egress of a selected address (undefined: not selected). */
  egressOf(ip: string): Egress | undefined {
    return this.#desired.get(ip);
  }

  /** Every selected (or guarded) address and its egress. */
  selected(): ReadonlyMap<string, Egress> {
    return this.#desired;
  }

  /** Addresses whose egress may have changed since the last call. */
  takeChanged(): Set<string> {
    const changed = this.#changed;
    this.#changed = new Set();
    return changed;
  }

  setVip(name: string, record: CustomRecord | undefined) {
    if (record) this.#vips.set(name, readVip(record));
    else this.#vips.delete(name);
    const namespaces = new Set<string>();
    for (const key of this.#vipPolicies.get(name) ?? []) {
      const policy = this.#policies.get(key)!;
      this.#refreshState(policy);
      namespaces.add(policy.namespace);
    }
    for (const ns of namespaces) this.#evalNamespace(ns);
  }

  setPolicy(key: string, record: CustomRecord | undefined) {
    const old = this.#policies.get(key);
    if (old) {
      const list = this.#nsPolicies.get(old.namespace)!.filter((p) => p.key !== key);
      if (list.length > 0) this.#nsPolicies.set(old.namespace, list);
      else this.#nsPolicies.delete(old.namespace);
      if (old.spec) this.#vipPolicies.get(old.spec.vip)?.delete(key);
      this.#policies.delete(key);
      this.#states.delete(key);
    }
    if (record) {
      const info = readPolicy(record);
      this.#policies.set(key, info);
      const list = [...(this.#nsPolicies.get(info.namespace) ?? []), info].sort(byAge);
      this.#nsPolicies.set(info.namespace, list);
      if (info.spec) {
        const users = this.#vipPolicies.get(info.spec.vip) ?? new Set();
        users.add(key);
        this.#vipPolicies.set(info.spec.vip, users);
      }
      this.#refreshState(info);
    }
    const ns = record ? readPolicy(record).namespace : old?.namespace;
    if (ns !== undefined) this.#evalNamespace(ns);
  }

  setNamespace(name: string, record: NamespaceRecord | undefined) {
    if (record) this.#namespaces.set(name, record);
    else this.#namespaces.delete(name);
    for (const policy of this.#nsPolicies.get(name) ?? []) this.#refreshState(policy);
    this.#evalNamespace(name);
  }

  setReplicaSet(key: string, record: OwnerRecord | undefined) {
    if (record) this.#replicaSets.set(key, record);
    else this.#replicaSets.delete(key);
    const ns = namespaceOf(key);
    const usesDeployments = (this.#nsPolicies.get(ns) ?? []).some((p) =>
      p.spec?.targets?.some((t) => t.kind === "Deployment")
    );
    if (usesDeployments) this.#evalNamespace(ns);
  }

  setPod(key: string, record: PodRecord | undefined) {
    const old = this.#pods.get(key);
    if (eligible(old)) this.#claims.get(old.ip)?.delete(key);
    if (record) this.#pods.set(key, record);
    else this.#pods.delete(key);
    if (eligible(record)) {
      const claims = this.#claims.get(record.ip) ?? new Set();
      claims.add(key);
      this.#claims.set(record.ip, claims);
    }
    const ips = new Set([old?.ip, record?.ip].filter((ip): ip is string => ip !== undefined));
    for (const ip of ips) this.#refreshOwner(ip);
    // Labels or owner may have changed while the address stayed.
    this.#evalPod(key);
  }

  /** Every policy's and VIP's outcome, as `selectEgress` reports them. */
  outcomes(): Pick<Selection, "policies" | "vips"> {
    const policies = new Map<string, PolicyOutcome>();
    for (const info of this.#policies.values()) {
      const base = { namespace: info.namespace, name: info.name };
      if (!info.spec) {
        policies.set(info.key, {
          ...base,
          pods: 0,
          conflicts: [],
          state: { ok: false, reason: "InvalidSpec", message: info.problem! },
        });
        continue;
      }
      const { state, ip } = this.#states.get(info.key)!;
      const conflicts = [...(this.#policyConflicts.get(info.key) ?? new Map())]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([pod, olderPolicy]) => ({ pod, olderPolicy }));
      policies.set(info.key, {
        ...base,
        ...(ip !== undefined ? { ip } : {}),
        state,
        pods: state.ok ? this.#policyPods.get(info.key) ?? 0 : 0,
        conflicts: state.ok ? conflicts : [],
      });
    }
    const vips = new Map<string, VipOutcome>();
    for (const name of this.#vips.keys()) {
      const users = [...(this.#vipPolicies.get(name) ?? [])]
        .map((key) => this.#policies.get(key)!).sort(byAge).map((p) => p.key);
      vips.set(name, { name, pods: this.#vipPods.get(name) ?? 0, policies: users });
    }
    return { policies, vips };
  }

  #refreshState(policy: PolicyInfo) {
    if (!policy.spec) return;
    const vipName = policy.spec.vip;
    const vip = this.#vips.get(vipName);
    const ip = vip?.spec?.ip;
    const fail = (
      reason: Exclude<PolicyState, { ok: true }>["reason"],
      message: string,
    ) => this.#states.set(policy.key, { ip, state: { ok: false, reason, message } });
    if (!vip) return fail("VIPNotFound", `EgressVIP ${vipName} does not exist`);
    if (!vip.spec) return fail("VIPNotReady", `EgressVIP ${vipName} has an ${vip.problem}`);
    const labels = this.#namespaces.get(policy.namespace)?.labels ?? {};
    if (!optionalSelectorMatches(vip.spec.namespaceSelector, labels)) {
      return fail(
        "NotAllowed",
        `EgressVIP ${vipName} does not admit namespace ${policy.namespace}`,
      );
    }
    if (vip.routeId === undefined) {
      return fail("VIPNotReady", `EgressVIP ${vipName} has no route id yet`);
    }
    this.#states.set(policy.key, { ip, state: { ok: true } });
  }

  /** Who owns `ip` now (the newest claimant); re-evaluates the pods that gained or lost it. */
  #refreshOwner(ip: string) {
    const claims = this.#claims.get(ip);
    let owner: string | undefined;
    let ownerPod: PodRecord | undefined;
    for (const key of claims ?? []) {
      const pod = this.#pods.get(key)!;
      if (
        !ownerPod ||
        byAge(
            { created: ownerPod.created, key: owner! },
            { created: pod.created, key },
          ) < 0
      ) {
        owner = key;
        ownerPod = pod;
      }
    }
    if (claims && claims.size === 0) this.#claims.delete(ip);
    const before = this.#owner.get(ip);
    if (before === owner) return;
    // The new owner first: re-evaluating the old one must see that it lost the address.
    if (owner !== undefined) this.#owner.set(ip, owner);
    else this.#owner.delete(ip);
    if (before !== undefined) {
      this.#nsPods.get(namespaceOf(before))?.delete(before);
      this.#evalPod(before);
    }
    if (owner !== undefined) {
      const ns = namespaceOf(owner);
      const set = this.#nsPods.get(ns) ?? new Set();
      set.add(owner);
      this.#nsPods.set(ns, set);
      this.#evalPod(owner);
    }
  }

  #evalNamespace(ns: string) {
    for (const key of this.#nsPods.get(ns) ?? []) this.#evalPod(key);
  }

  #evalPod(key: string) {
    const old = this.#evals.get(key);
    if (old) this.#unapply(key, old);
    const pod = this.#pods.get(key);
    if (!eligible(pod) || this.#owner.get(pod.ip) !== key) return;
    let winner: { key: string; egress: Egress; same: string } | undefined;
    const counted: string[] = [];
    const conflicts: string[] = [];
    // The oldest failClosed policy that selects the pod, in force or not (selection.ts).
    let guard: PolicyInfo | undefined;
    for (const policy of this.#nsPolicies.get(pod.namespace) ?? []) {
      if (!policy.spec) continue;
      const selects = policySelects(policy.spec, pod, this.#replicaSets);
      if (selects && policy.spec.failClosed && !guard) guard = policy;
      if (!selects || this.#states.get(policy.key)?.state.ok !== true) continue;
      const ip = this.#vips.get(policy.spec.vip)!.spec!.ip;
      const same = egressKey(ip, policy.spec);
      if (!winner) {
        winner = { key: policy.key, egress: { vip: policy.spec.vip, ...policy.egress }, same };
        counted.push(policy.key);
      } else if (winner.same === same) counted.push(policy.key);
      else conflicts.push(policy.key);
    }
    const egress: Egress | undefined = winner
      ? (guard ? { ...winner.egress, failClosed: true } : winner.egress)
      : guard
      ? { vip: guard.spec!.vip, failClosed: true, guardOnly: true }
      : undefined;
    const result: PodEval = { ip: pod.ip, winner: winner?.key, egress, counted, conflicts };
    this.#evals.set(key, result);
    for (const policy of counted) bump(this.#policyPods, policy, 1);
    for (const policy of conflicts) {
      const map = this.#policyConflicts.get(policy) ?? new Map();
      map.set(key, winner!.key);
      this.#policyConflicts.set(policy, map);
    }
    if (result.egress) {
      if (!result.egress.guardOnly) bump(this.#vipPods, result.egress.vip, 1);
      this.#desired.set(result.ip, result.egress);
      this.#changed.add(result.ip);
    }
  }

  #unapply(key: string, old: PodEval) {
    this.#evals.delete(key);
    for (const policy of old.counted) bump(this.#policyPods, policy, -1);
    for (const policy of old.conflicts) {
      const map = this.#policyConflicts.get(policy);
      map?.delete(key);
      if (map?.size === 0) this.#policyConflicts.delete(policy);
    }
    if (old.egress) {
      if (!old.egress.guardOnly) bump(this.#vipPods, old.egress.vip, -1);
      this.#desired.delete(old.ip);
      this.#changed.add(old.ip);
    }
  }
}

function readPolicy(record: CustomRecord): PolicyInfo {
  const base = {
    key: objectKey(record.metadata),
    namespace: record.metadata.namespace ?? "",
    name: record.metadata.name,
    created: record.metadata.creationTimestamp ?? "",
  };
  const parsed = PolicySpecSchema.safeParse(record.spec, { reportInput: true });
  if (!parsed.success) return { ...base, problem: `invalid spec: ${describeIssues(parsed.error)}` };
  const destinations = parsed.data.destinationCIDRs ? normalized(parsed.data.destinationCIDRs) : [];
  const excluded = parsed.data.excludedCIDRs ? normalized(parsed.data.excludedCIDRs) : [];
  return {
    ...base,
    spec: parsed.data,
    egress: {
      ...(destinations.length > 0 ? { destinations } : {}),
      ...(excluded.length > 0 ? { excluded } : {}),
    },
  };
}
