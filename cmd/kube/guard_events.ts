/**
 * Kubernetes Events for what the guard refused (cmd/guard.ts): a Warning on
 * the EgressVIP concerned, naming the MAC or address and what it tried. One
 * Event per VIP, kind and offender per minute at most: a rogue that keeps
 * sending must not flood the API server (the metrics count every packet).
 */
import type { GuardAlert } from "../../core/guard.ts";
import { errorMessage } from "../../core/errors.ts";
import type { AgentObserver, Role } from "../agent.ts";
import type { Logger } from "../log.ts";
import type { KubeClient } from "./client.ts";
import { recordEvent } from "./controller.ts";
import type { HolderSource } from "./controller.ts";

/** At most one Event per (VIP, kind, offender) per this many ms. */
export const GUARD_EVENT_INTERVAL_MS = 60_000;

const REASONS: Record<GuardAlert["kind"], string> = {
  claim: "ForeignARPClaim",
  advert: "ForeignVRRPAdvert",
  "next-hop": "ForeignNextHop",
};

/** The Event's message for an alert; `held`: this node holds the VIP (a claim is then a conflict). */
export function guardEventMessage(alert: GuardAlert, node: string, held: boolean): string {
  switch (alert.kind) {
    case "claim":
      return held
        ? `address conflict: MAC ${alert.from} claims ${alert.vip}, held by ${node}; ${
          alert.defended ? `${node} re-announced it` : "not defended (no node list)"
        } (${alert.packets} ARP packet(s) refused)`
        : `MAC ${alert.from} claims ${alert.vip} but is no node that may hold it; ${node} refused ${alert.packets} ARP packet(s)`;
    case "advert":
      return `VRRP advert for ${alert.vip}'s router id from ${alert.from}, which is no node that may hold it; ${node} refused ${alert.packets} advert(s)`;
    case "next-hop":
      return `${node} dropped ${alert.packets} packet(s) of pods mapped to ${alert.vip} towards MAC ${alert.from}, which is no node that may hold it`;
  }
}

/** An AgentObserver that turns guard alerts into Events. */
export class GuardEvents implements AgentObserver {
  readonly #last = new Map<string, number>();
  readonly #held = new Set<string>();

  constructor(
    readonly client: KubeClient,
    readonly source: HolderSource,
    readonly log: Logger,
    readonly node: string,
    readonly now: () => number = Date.now,
  ) {}

  transition(vip: string, _from: Role | "none", to: Role | "none") {
    if (to === "holder") this.#held.add(vip);
    else this.#held.delete(vip);
  }

  guardAlert(alert: GuardAlert): void {
    const key = `${alert.vip} ${alert.kind} ${alert.from}`;
    const now = this.now();
    if (now - (this.#last.get(key) ?? -Infinity) < GUARD_EVENT_INTERVAL_MS) return;
    this.#last.set(key, now);
    const record = [...this.source.vips.store.values()].find((r) =>
      (r.spec as { ip?: string } | undefined)?.ip === alert.vip
    );
    if (!record) return;
    const message = guardEventMessage(alert, this.node, this.#held.has(alert.vip));
    void recordEvent(this.client, this.node, {
      kind: "EgressVIP",
      name: record.metadata.name,
      uid: record.metadata.uid,
      resourceVersion: record.metadata.resourceVersion,
    }, { type: "Warning", reason: REASONS[alert.kind], message }).catch((error) =>
      this.log.warn("could not record the guard's Event", {
        vip: alert.vip,
        error: errorMessage(error),
      })
    );
  }
}
