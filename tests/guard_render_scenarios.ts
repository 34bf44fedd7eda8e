/**
 * Guard payloads kept as fixtures in tests/fixtures/guard_render/: a first
 * table, a node MAC learned, the interface moved, and removal. The fixtures
 * were rendered by the code before the guard's payload was typed: typing it
 * changed no byte of what `nft -f` gets.
 */
import { type GuardInput, guardIntent, type LiveGuard } from "../core/guard.ts";

/** The node's own MAC and the guard input every guard test starts from. */
export const OWN = "02:00:00:00:00:0b";
export const input: GuardInput = {
  iface: "eth0",
  ownMac: OWN.toUpperCase(),
  mask: 0xff,
  vrrp: true,
  vips: [
    { ip: "192.0.2.50", vrid: 5, mark: 5, nodes: ["192.0.2.11", "192.0.2.12", "192.0.2.13"] },
    { ip: "192.0.2.51", vrid: 6, mark: 6 },
  ],
  macs: new Map([["192.0.2.11", OWN], ["192.0.2.12", "02:00:00:00:00:0c"]]),
};

/** The table as the first payload leaves it (sets as nft lists them back). */
const live: LiveGuard = {
  sets: {
    watched: ["192.0.2.50", "192.0.2.51"],
    guarded: ["192.0.2.50"],
    claims: ["192.0.2.50 . 02:00:00:00:00:0b", "192.0.2.50 . 02:00:00:00:00:0c"],
    vrids: ["5"],
    adverts: ["192.0.2.11 . 5", "192.0.2.12 . 5", "192.0.2.13 . 5"],
    marks: ["0x00000005"],
    next_hops: ["0x00000005 . 02:00:00:00:00:0b", "0x00000005 . 02:00:00:00:00:0c"],
    own_mac: [OWN],
    iface: ["eth0"],
  },
  chains: { ingress: { rules: 3 }, egress: { rules: 1 } },
  counters: {},
  claims: [],
  adverts: [],
  nextHops: [],
};

/** Each case's payload lines, by fixture name, from `plan` (the guard's planGuard, rendered). */
export function guardRenderScenarios(
  plan: (intent: ReturnType<typeof guardIntent>, live: LiveGuard | undefined) => string[],
  remove: () => string[],
): Record<string, string> {
  const text = (lines: string[]) => lines.join("\n") + "\n";
  const more = new Map([...input.macs, ["192.0.2.13", "02:00:00:00:00:0d"]]);
  return {
    first: text(plan(guardIntent(input), undefined)),
    unchanged: text(plan(guardIntent(input), live)),
    "mac-learned": text(plan(guardIntent({ ...input, macs: more }), live)),
    "iface-moved": text(plan(guardIntent({ ...input, iface: "eth1" }), live)),
    "no-vip": text(plan(guardIntent({ ...input, vips: [] }), live)),
    delete: text(remove()),
  };
}
