/**
 * Leader election on a coordination.k8s.io/v1 Lease, decided as client-go's
 * leaderelection does: a lease held by someone else is theirs until
 * leaseDurationSeconds have passed *on our clock* since we last saw it change
 * (so clock skew between nodes does not matter); then anyone may take it with
 * an optimistic update, and exactly one update wins (the others get 409).
 */

export interface LeaseSpec {
  readonly holderIdentity?: string;
  readonly leaseDurationSeconds?: number;
  readonly acquireTime?: string;
  readonly renewTime?: string;
  readonly leaseTransitions?: number;
}

/** What we last saw of the lease and when (our monotonic-ish clock, ms). */
export interface Observed {
  readonly spec: LeaseSpec;
  readonly atMs: number;
}

export type LeaseAction = "renew" | "acquire" | "wait";

/** Updates the observation: the clock restarts only when the lease record changed. */
export function observe(previous: Observed | undefined, spec: LeaseSpec, nowMs: number): Observed {
  const same = previous && JSON.stringify(previous.spec) === JSON.stringify(spec);
  return same ? previous : { spec, atMs: nowMs };
}

/** What to do with the lease now. */
export function leaseAction(observed: Observed, me: string, nowMs: number): LeaseAction {
  const holder = observed.spec.holderIdentity ?? "";
  if (holder === me) return "renew";
  if (holder === "") return "acquire";
  const duration = (observed.spec.leaseDurationSeconds ?? 15) * 1000;
  return nowMs >= observed.atMs + duration ? "acquire" : "wait";
}

/** The spec we write to renew or acquire. */
export function nextLeaseSpec(
  current: LeaseSpec,
  me: string,
  durationSeconds: number,
  now: Date,
): LeaseSpec {
  const time = now.toISOString().replace(/Z$/, "000Z"); // MicroTime: microsecond precision
  const acquiring = current.holderIdentity !== me;
  return {
    holderIdentity: me,
    leaseDurationSeconds: durationSeconds,
    acquireTime: acquiring ? time : current.acquireTime ?? time,
    renewTime: time,
    leaseTransitions: (current.leaseTransitions ?? 0) +
      (acquiring && current.holderIdentity ? 1 : 0),
  };
}

/** The spec that hands the lease back on a clean shutdown, so a successor need not wait. */
export function releasedLeaseSpec(current: LeaseSpec, now: Date): LeaseSpec {
  return {
    ...current,
    holderIdentity: "",
    leaseDurationSeconds: 1,
    renewTime: now.toISOString().replace(/Z$/, "000Z"),
  };
}
