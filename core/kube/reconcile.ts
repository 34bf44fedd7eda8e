/**
 * The elected agent's cluster-wide writes, decided purely: for every
 * EgressVIP and EgressPolicy the status it should show (route id, conditions,
 * pod counts), the finalizers a VIP should carry, and the Events that tell an
 * operator when something changed for the worse or the better. Only what
 * differs from the objects as they are is returned, so an unchanged cluster
 * gets no writes. Condition times are kept while a condition's status stays.
 */
import {
  type Condition,
  EgressPolicyStatus,
  EgressVIPSpec,
  EgressVIPStatus,
  VIP_FINALIZER,
} from "./api.ts";
import type { CustomRecord } from "./objects.ts";
import type { SelectedNode } from "./placement.ts";
import { assignRouteIds, type RouteAssignment } from "./route_ids.ts";
import type { PolicyOutcome, Selection } from "./selection.ts";
import { describeIssues } from "../schema.ts";

export type Kind = "EgressVIP" | "EgressPolicy";

/** A Kubernetes Event to record about one of our objects. */
export interface EventSpec {
  readonly type: "Normal" | "Warning";
  readonly reason: string;
  readonly message: string;
}

export interface ObjectRef {
  readonly kind: Kind;
  readonly namespace?: string;
  readonly name: string;
  readonly uid?: string;
  readonly resourceVersion?: string;
}

/** Replace the status subresource (optimistic: resourceVersion must still match). */
export interface StatusWrite {
  readonly object: ObjectRef;
  readonly status: Record<string, unknown>;
  /** Recorded once the write succeeded. */
  readonly events: readonly EventSpec[];
}

/**
 * Set metadata.finalizers to this list: a merge patch that touches nothing else,
 * with the cached resourceVersion (409 when someone changed them meanwhile).
 */
export interface FinalizerWrite {
  readonly object: ObjectRef;
  readonly finalizers: readonly string[];
  readonly events: readonly EventSpec[];
}

export interface Writes {
  readonly statuses: readonly StatusWrite[];
  readonly finalizers: readonly FinalizerWrite[];
}

type Wanted = Omit<Condition, "lastTransitionTime">;

/** Carries lastTransitionTime over from the old condition when the status did not change. */
export function mergeConditions(
  old: readonly Condition[] | undefined,
  wanted: readonly Wanted[],
  now: string,
): Condition[] {
  return wanted.map((c) => {
    const before = old?.find((o) => o.type === c.type);
    return {
      ...c,
      lastTransitionTime: before && before.status === c.status ? before.lastTransitionTime : now,
    };
  });
}

/** Stable JSON (sorted keys), to compare statuses without caring about key order. */
function canonical(value: unknown): string {
  return JSON.stringify(
    value,
    (_key, v) =>
      v && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1)))
        : v,
  );
}

function ref(kind: Kind, record: CustomRecord): ObjectRef {
  const m = record.metadata;
  return {
    kind,
    ...(m.namespace ? { namespace: m.namespace } : {}),
    name: m.name,
    uid: m.uid,
    resourceVersion: m.resourceVersion,
  };
}

const cond = (
  type: string,
  on: boolean,
  reason: string,
  message: string,
  generation?: number,
): Wanted => ({
  type,
  status: on ? "True" : "False",
  reason,
  message,
  ...(generation !== undefined ? { observedGeneration: generation } : {}),
});

function listPolicies(policies: readonly string[]): string {
  const shown = policies.slice(0, 5).join(", ");
  return policies.length > 5 ? `${shown} and ${policies.length - 5} more` : shown;
}

function vipConditions(
  assignment: RouteAssignment,
  policies: readonly string[],
  deleting: boolean,
  generation?: number,
): Wanted[] {
  const ready = "routeId" in assignment
    ? cond("Ready", true, "RouteAssigned", `route id ${assignment.routeId}`, generation)
    : cond("Ready", false, assignment.problem, assignment.message, generation);
  const inUse = policies.length === 0
    ? cond("InUse", false, deleting ? "Deleting" : "Unused", "no EgressPolicy uses it", generation)
    : cond(
      "InUse",
      true,
      deleting ? "DeletionBlocked" : "UsedByPolicies",
      (deleting ? "deletion waits until no EgressPolicy uses it; used by " : "used by ") +
        listPolicies(policies),
      generation,
    );
  return [ready, inUse];
}

function policyConditions(outcome: PolicyOutcome, generation?: number): Wanted[] {
  const s = outcome.state;
  const failed = (reason: string) => !s.ok && s.reason === reason;
  const conflict = outcome.conflicts.length > 0;
  const olders = [...new Set(outcome.conflicts.map((c) => c.olderPolicy))];
  return [
    s.ok
      ? cond(
        "Ready",
        true,
        "Applied",
        `${outcome.pods} pod(s) leave with ${outcome.ip}`,
        generation,
      )
      : cond("Ready", false, s.reason, s.message, generation),
    cond(
      "VIPNotFound",
      failed("VIPNotFound"),
      failed("VIPNotFound") ? "VIPNotFound" : "VIPFound",
      failed("VIPNotFound") ? (s as { message: string }).message : "the EgressVIP exists",
      generation,
    ),
    cond(
      "NotAllowed",
      failed("NotAllowed"),
      failed("NotAllowed") ? "NamespaceNotAdmitted" : "Allowed",
      failed("NotAllowed")
        ? (s as { message: string }).message
        : "the EgressVIP admits this namespace",
      generation,
    ),
    conflict
      ? cond(
        "Conflict",
        true,
        "SelectedByOlderPolicy",
        `${outcome.conflicts.length} pod(s) (e.g. ${
          outcome.conflicts[0].pod
        }) stay with the older ` +
          `policy ${listPolicies(olders)}, which sends them elsewhere (the oldest policy wins)`,
        generation,
      )
      : cond("Conflict", false, "NoConflict", "no pod is claimed by an older policy", generation),
  ];
}

/** Events for conditions that changed: warnings when things break, a note when they recover. */
function transitionEvents(
  kind: Kind,
  before: readonly Condition[] | undefined,
  after: readonly Condition[],
): EventSpec[] {
  const events: EventSpec[] = [];
  const old = (type: string) => before?.find((c) => c.type === type);
  const ready = after.find((c) => c.type === "Ready")!;
  const oldReady = old("Ready");
  if (
    ready.status === "False" && (oldReady?.status !== "False" || oldReady.reason !== ready.reason)
  ) {
    events.push({
      type: "Warning",
      reason: kind === "EgressPolicy" ? `Rejected${ready.reason}` : ready.reason,
      message: ready.message,
    });
  } else if (ready.status === "True" && oldReady?.status === "False") {
    events.push({ type: "Normal", reason: ready.reason, message: ready.message });
  }
  const conflict = after.find((c) => c.type === "Conflict");
  if (conflict?.status === "True" && old("Conflict")?.status !== "True") {
    events.push({ type: "Warning", reason: "Conflict", message: conflict.message });
  }
  const inUse = after.find((c) => c.type === "InUse");
  if (inUse?.reason === "DeletionBlocked" && old("InUse")?.reason !== "DeletionBlocked") {
    events.push({ type: "Warning", reason: "DeletionBlocked", message: inUse.message });
  }
  return events;
}

/** Everything the elected agent should write now. */
export function reconcileWrites(
  vips: readonly CustomRecord[],
  policies: readonly CustomRecord[],
  selection: Pick<Selection, "policies" | "vips">,
  now: string,
  /** status.nodes by VIP name; absent: leave what each VIP shows. */
  nodes?: ReadonlyMap<string, readonly SelectedNode[]>,
): Writes {
  const statuses: StatusWrite[] = [];
  const finalizers: FinalizerWrite[] = [];

  const claims = vips.map((record) => {
    const spec = EgressVIPSpec.safeParse(record.spec, { reportInput: true });
    const status = EgressVIPStatus.safeParse(record.status ?? {});
    return {
      name: record.metadata.name,
      created: record.metadata.creationTimestamp ?? "",
      ip: spec.success ? spec.data.ip : undefined,
      invalid: spec.success ? undefined : `invalid spec: ${describeIssues(spec.error)}`,
      specRouteId: spec.success ? spec.data.routeId : undefined,
      statusRouteId: status.success ? status.data.routeId : undefined,
    };
  });
  const assignments = assignRouteIds(claims);

  for (const record of vips) {
    const name = record.metadata.name;
    const old = EgressVIPStatus.safeParse(record.status ?? {});
    const current = old.success ? old.data : {};
    const outcome = selection.vips.get(name);
    const policiesOf = outcome?.policies ?? [];
    const deleting = Boolean(record.metadata.deletionTimestamp);
    const assignment = assignments.get(name)!;
    const conditions = mergeConditions(
      current.conditions,
      vipConditions(assignment, policiesOf, deleting, record.metadata.generation),
      now,
    );
    const status = {
      ...("routeId" in assignment ? { routeId: assignment.routeId } : {}),
      ...(current.holder ? { holder: current.holder } : {}),
      pods: outcome?.pods ?? 0,
      policies: policiesOf.length,
      ...(nodes
        ? (nodes.has(name) ? { nodes: nodes.get(name) } : {})
        : (current.nodes ? { nodes: current.nodes } : {})),
      ...(record.metadata.generation !== undefined
        ? { observedGeneration: record.metadata.generation }
        : {}),
      conditions,
    };
    if (canonical(status) !== canonical(record.status ?? {})) {
      const events = transitionEvents("EgressVIP", current.conditions, conditions);
      if (
        "routeId" in assignment && assignment.routeId !== current.routeId && !assignment.explicit
      ) {
        events.push({
          type: "Normal",
          reason: "RouteIdAssigned",
          message: `route id ${assignment.routeId} assigned`,
        });
      }
      statuses.push({ object: ref("EgressVIP", record), status, events });
    }

    // The in-use finalizer only while a policy uses the VIP: an unused VIP (and so every VIP
    // once an uninstall has deleted the policies) never waits for an agent that may be gone.
    // None is ever added to a VIP being deleted: the API server refuses that (422).
    const have = record.metadata.finalizers ?? [];
    const inUse = policiesOf.length > 0;
    const has = have.includes(VIP_FINALIZER);
    if (inUse && !has && !deleting) {
      finalizers.push({
        object: ref("EgressVIP", record),
        finalizers: [...have, VIP_FINALIZER],
        events: [],
      });
    } else if (!inUse && has) {
      finalizers.push({
        object: ref("EgressVIP", record),
        finalizers: have.filter((f) => f !== VIP_FINALIZER),
        events: deleting
          ? [{
            type: "Normal",
            reason: "Released",
            message: "no EgressPolicy uses it any more; deletion proceeds",
          }]
          : [],
      });
    }
  }

  for (const record of policies) {
    const key = `${record.metadata.namespace}/${record.metadata.name}`;
    const outcome = selection.policies.get(key);
    if (!outcome) continue;
    const old = EgressPolicyStatus.safeParse(record.status ?? {});
    const current = old.success ? old.data : {};
    const conditions = mergeConditions(
      current.conditions,
      policyConditions(outcome, record.metadata.generation),
      now,
    );
    const status = {
      ...(outcome.ip ? { ip: outcome.ip } : {}),
      pods: outcome.pods,
      ...(record.metadata.generation !== undefined
        ? { observedGeneration: record.metadata.generation }
        : {}),
      conditions,
    };
    if (canonical(status) !== canonical(record.status ?? {})) {
      statuses.push({
        object: ref("EgressPolicy", record),
        status,
        events: transitionEvents("EgressPolicy", current.conditions, conditions),
      });
    }
  }
  return { statuses, finalizers };
}

/**
 * Events for VIPs whose holder changed since the last look (`previous`, by
 * VIP name; empty right after the election, when nothing is reported).
 */
export function holderEvents(
  previous: ReadonlyMap<string, string | undefined> | undefined,
  vips: readonly CustomRecord[],
): { events: { object: ObjectRef; event: EventSpec }[]; next: Map<string, string | undefined> } {
  const next = new Map<string, string | undefined>();
  const events: { object: ObjectRef; event: EventSpec }[] = [];
  for (const record of vips) {
    const status = EgressVIPStatus.safeParse(record.status ?? {});
    const holder = status.success ? status.data.holder : undefined;
    const ip = (record.spec as { ip?: string } | undefined)?.ip ?? record.metadata.name;
    next.set(record.metadata.name, holder);
    if (!previous?.has(record.metadata.name)) continue;
    const before = previous.get(record.metadata.name);
    if (before === holder) continue;
    events.push({
      object: ref("EgressVIP", record),
      event: holder
        ? {
          type: "Normal",
          reason: "Moved",
          message: before
            ? `${ip} moved from ${before} to ${holder}`
            : `${ip} is now held by ${holder}`,
        }
        : { type: "Warning", reason: "NotHeld", message: `${ip} is no longer held by ${before}` },
    });
  }
  return { events, next };
}

/** The status a node writes for a VIP it gained or lost; undefined when nothing changes. */
export function holderStatus(
  record: CustomRecord,
  node: string,
  holds: boolean,
): Record<string, unknown> | undefined {
  const status = { ...(record.status as Record<string, unknown> | undefined ?? {}) };
  if (holds && status.holder !== node) return { ...status, holder: node };
  if (!holds && status.holder === node) {
    delete status.holder;
    return status;
  }
  return undefined;
}
