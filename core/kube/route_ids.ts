/**
 * Route id assignment for EgressVIPs, done by the elected agent. Oldest wins
 * everywhere, so every agent that computes it gets the same answer:
 * - a VIP whose address an older VIP already uses gets no route id;
 * - an explicit spec.routeId is honoured unless an older VIP has it;
 * - an assigned id (status.routeId) is kept while it stays free, so VIPs are
 *   never renumbered under running traffic;
 * - the rest get the lowest free id in 1..252.
 */
import { MAX_ROUTE_ID, MIN_ROUTE_ID } from "../schema.ts";
import { byAge } from "./selection.ts";

export interface VipClaim {
  readonly name: string;
  readonly created: string;
  /** The address, when the spec is valid. */
  readonly ip?: string;
  /** Why the spec is invalid. */
  readonly invalid?: string;
  readonly specRouteId?: number;
  readonly statusRouteId?: number;
}

export type RouteProblem = "InvalidSpec" | "DuplicateIP" | "RouteIdConflict" | "NoFreeRouteId";

export type RouteAssignment =
  | { readonly routeId: number; readonly explicit: boolean }
  | { readonly problem: RouteProblem; readonly message: string };

/** Assigns a route id to every valid VIP, or says why it cannot have one. */
export function assignRouteIds(claims: readonly VipClaim[]): Map<string, RouteAssignment> {
  const ordered = [...claims].sort((a, b) =>
    byAge({ created: a.created, key: a.name }, { created: b.created, key: b.name })
  );
  const result = new Map<string, RouteAssignment>();
  const owners = new Map<number, string>();
  const addresses = new Map<string, string>();
  const waiting: VipClaim[] = [];
  for (const claim of ordered) {
    if (claim.ip === undefined) {
      result.set(claim.name, { problem: "InvalidSpec", message: claim.invalid ?? "invalid spec" });
      continue;
    }
    const older = addresses.get(claim.ip);
    if (older !== undefined) {
      result.set(claim.name, {
        problem: "DuplicateIP",
        message: `address ${claim.ip} is already used by the older EgressVIP ${older}`,
      });
      continue;
    }
    addresses.set(claim.ip, claim.name);
    const wanted = claim.specRouteId ?? claim.statusRouteId;
    if (wanted !== undefined && !owners.has(wanted)) {
      owners.set(wanted, claim.name);
      result.set(claim.name, { routeId: wanted, explicit: claim.specRouteId !== undefined });
    } else if (claim.specRouteId !== undefined) {
      result.set(claim.name, {
        problem: "RouteIdConflict",
        message: `route id ${claim.specRouteId} is already used by the older EgressVIP ${
          owners.get(claim.specRouteId)
        }`,
      });
    } else waiting.push(claim);
  }
  let next = MIN_ROUTE_ID;
  for (const claim of waiting) {
    while (owners.has(next)) next++;
    if (next > MAX_ROUTE_ID) {
      result.set(claim.name, {
        problem: "NoFreeRouteId",
        message: `all route ids ${MIN_ROUTE_ID}-${MAX_ROUTE_ID} are in use`,
      });
      continue;
    }
    owners.set(next, claim.name);
    result.set(claim.name, { routeId: next, explicit: false });
  }
  return result;
}
