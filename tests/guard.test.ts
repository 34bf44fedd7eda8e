/** core/guard.ts: what the guard table holds, its payload, its reading and the alerts. */
import assert from "node:assert/strict";
import { guardAlerts, guardIntent, type LiveGuard, parseGuard, planGuard } from "../core/guard.ts";
import { input, OWN } from "./guard_render_scenarios.ts";

Deno.test("guard: a VIP with nodes is guarded; only its nodes' MACs may claim it or carry its traffic", () => {
  const intent = guardIntent(input);
  assert.deepEqual(intent.watched, ["192.0.2.50", "192.0.2.51"]);
  assert.deepEqual(intent.guarded, ["192.0.2.50"]);
  assert.deepEqual(intent.claims, [
    "192.0.2.50 . 02:00:00:00:00:0b",
    "192.0.2.50 . 02:00:00:00:00:0c",
  ]);
  assert.deepEqual(intent.nextHops, ["0x5 . 02:00:00:00:00:0b", "0x5 . 02:00:00:00:00:0c"]);
  // Adverts are checked by address: a node whose MAC is unknown still advertises.
  assert.deepEqual(intent.adverts, ["192.0.2.11 . 5", "192.0.2.12 . 5", "192.0.2.13 . 5"]);
  assert.deepEqual(intent.vrids, [5]);
  assert.deepEqual(intent.unresolved, ["192.0.2.13"]);
  assert.equal(intent.ownMac, OWN);
});

Deno.test("guard: external placement filters no adverts", () => {
  const intent = guardIntent({ ...input, vrrp: false });
  assert.deepEqual(intent.vrids, []);
  assert.deepEqual(intent.adverts, []);
  assert.deepEqual(intent.guarded, ["192.0.2.50"]);
});

Deno.test("guard: no VIP, no table; a table left over is removed", () => {
  const intent = guardIntent({ ...input, vips: [] });
  assert.deepEqual(planGuard(intent, undefined).ops, []);
  const live: LiveGuard = {
    sets: {},
    chains: {},
    counters: {},
    claims: [],
    adverts: [],
    nextHops: [],
  };
  assert.deepEqual(planGuard(intent, live), {
    tool: "nft",
    table: { family: "netdev", name: "kube-egress-guard" },
    ops: [{ op: "delete table" }],
  });
});

/** What `nft -j list table` says after our payload (nft 1.0.6), trimmed to what we read. */
function listing(extra: Record<string, unknown>[] = []): string {
  const set = (name: string, elem: unknown[]) => ({ set: { family: "netdev", name, elem } });
  return JSON.stringify({
    nftables: [
      { metainfo: { version: "1.0.6" } },
      { table: { family: "netdev", name: "kube-egress-guard" } },
      { counter: { name: "claims_refused", packets: 7 } },
      { counter: { name: "adverts_refused", packets: 3 } },
      { counter: { name: "next_hops_refused", packets: 0 } },
      set("watched", ["192.0.2.50", "192.0.2.51"]),
      set("guarded", ["192.0.2.50"]),
      set("claims", [
        { concat: ["192.0.2.50", "02:00:00:00:00:0b"] },
        { concat: ["192.0.2.50", "02:00:00:00:00:0c"] },
      ]),
      set("vrids", [5]),
      set("adverts", [
        { concat: ["192.0.2.11", 5] },
        { concat: ["192.0.2.12", 5] },
        { concat: ["192.0.2.13", 5] },
      ]),
      set("marks", [5]),
      set("next_hops", [
        { concat: [5, "02:00:00:00:00:0b"] },
        { concat: [5, "02:00:00:00:00:0c"] },
      ]),
      set("own_mac", [OWN]),
      set("iface", ["eth0"]),
      ...extra,
      { chain: { name: "ingress" } },
      { chain: { name: "egress" } },
      { rule: { chain: "ingress" } },
      { rule: { chain: "ingress" } },
      { rule: { chain: "ingress" } },
      { rule: { chain: "egress" } },
    ],
  });
}

Deno.test("guard: an unchanged table gets an empty payload; a new node MAC rewrites the sets only", () => {
  const live = parseGuard(listing())!;
  assert.deepEqual(planGuard(guardIntent(input), live).ops, []);
  const more = new Map([...input.macs, ["192.0.2.13", "02:00:00:00:00:0d"]]);
  const { ops } = planGuard(guardIntent({ ...input, macs: more }), live);
  assert.deepEqual(
    ops.flatMap((o) => o.op === "add element" && o.set === "next_hops" ? [o.key] : []),
    ["0x5 . 02:00:00:00:00:0b", "0x5 . 02:00:00:00:00:0c", "0x5 . 02:00:00:00:00:0d"],
  );
  // Counters and the refused lists survive: never deleted, never flushed.
  assert.deepEqual(ops.filter((o) => o.op.startsWith("delete")), []);
  assert.deepEqual(
    ops.filter((o) => o.op === "flush set" && o.set.startsWith("seen_")),
    [],
  );
  // Another interface: the chains are bound again.
  const moved = planGuard(guardIntent({ ...input, iface: "eth1" }), live).ops;
  assert.deepEqual(moved.filter((o) => o.op === "delete chain"), [
    { op: "delete chain", chain: "ingress" },
    { op: "delete chain", chain: "egress" },
  ]);
  assert.deepEqual(moved.find((o) => o.op === "add chain" && o.chain === "ingress"), {
    op: "add chain",
    chain: "ingress",
    hook: { type: "filter", hook: "ingress", device: "eth1", priority: "-500" },
  });
});

Deno.test("guard: parseGuard reads counters and what was refused, with packets", () => {
  const seen = (name: string, elem: unknown[]) => ({ set: { name, elem } });
  const live = parseGuard(listing([
    seen("seen_claims", [{
      elem: { val: { concat: ["192.0.2.50", "9E:EF:DE:A2:52:8A"] }, counter: { packets: 4 } },
    }]),
    seen("seen_adverts", [{
      elem: { val: { concat: ["192.0.2.250", 5] }, counter: { packets: 9 } },
    }]),
    seen("seen_next_hops", [{
      elem: { val: { concat: [5, "9e:ef:de:a2:52:8a"] }, counter: { packets: 2 } },
    }]),
  ]))!;
  assert.deepEqual(live.counters, { claims_refused: 7, adverts_refused: 3, next_hops_refused: 0 });
  assert.deepEqual(live.claims, [{ vip: "192.0.2.50", mac: "9e:ef:de:a2:52:8a", packets: 4 }]);
  assert.deepEqual(live.adverts, [{ source: "192.0.2.250", vrid: 5, packets: 9 }]);
  assert.deepEqual(live.nextHops, [{ mark: 5, mac: "9e:ef:de:a2:52:8a", packets: 2 }]);
  assert.equal(parseGuard(JSON.stringify({ nftables: [{ metainfo: {} }] })), undefined);
});

Deno.test("guard: alerts name what grew since the last reading, once", () => {
  const base: LiveGuard = {
    sets: {},
    chains: {},
    counters: {},
    claims: [{ vip: "192.0.2.50", mac: "9e:ef:de:a2:52:8a", packets: 4 }],
    adverts: [{ source: "192.0.2.250", vrid: 5, packets: 9 }],
    nextHops: [],
  };
  const vipOf = { mark: (m: number) => (m === 5 ? "192.0.2.50" : undefined), vrid: vipOfVrid };
  function vipOfVrid(v: number) {
    return v === 5 ? "192.0.2.50" : undefined;
  }
  assert.deepEqual(guardAlerts(undefined, base, vipOf), [
    { kind: "claim", vip: "192.0.2.50", from: "9e:ef:de:a2:52:8a", packets: 4 },
    { kind: "advert", vip: "192.0.2.50", from: "192.0.2.250", packets: 9 },
  ]);
  assert.deepEqual(guardAlerts(base, base, vipOf), []);
  const later: LiveGuard = {
    ...base,
    claims: [{ vip: "192.0.2.50", mac: "9e:ef:de:a2:52:8a", packets: 6 }],
    nextHops: [{ mark: 5, mac: "9e:ef:de:a2:52:8a", packets: 1 }, {
      mark: 9,
      mac: "x",
      packets: 1,
    }],
  };
  assert.deepEqual(guardAlerts(base, later, vipOf), [
    { kind: "claim", vip: "192.0.2.50", from: "9e:ef:de:a2:52:8a", packets: 2 },
    { kind: "next-hop", vip: "192.0.2.50", from: "9e:ef:de:a2:52:8a", packets: 1 },
  ]);
});
