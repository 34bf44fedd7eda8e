import assert from "node:assert/strict";
import { holderPeriods, holdersAt, parseMonitorLine } from "../sim/holder_watch.ts";

Deno.test("holder watch: ip -ts monitor lines become add/remove events for the watched VIPs only", () => {
  const add = parseMonitorLine(
    "[2026-12-01T23:06:35.630989] 3: eth0    inet 192.0.2.50/32 scope global eth0\\       valid_lft forever preferred_lft forever",
    "node1",
    ["192.0.2.50"],
  );
  assert.deepEqual(add, {
    t: Date.parse("2026-12-01T23:06:35") + 630.989,
    node: "node1",
    vip: "192.0.2.50",
    held: true,
  });
  const del = parseMonitorLine(
    "[2026-12-01T23:06:35.942421] Deleted 3: eth0    inet 192.0.2.50/32 scope global eth0",
    "node2",
    ["192.0.2.50"],
  );
  assert.equal(del?.held, false);
  assert.equal(
    parseMonitorLine("[2026-12-01T23:06:35.9] 3: eth0    inet 192.0.2.5/32 scope", "n", [
      "192.0.2.50",
    ]),
    undefined,
    "exact address, never a prefix",
  );
  assert.equal(
    parseMonitorLine("[2026-12-01T23:06:35.9] 3: eth0    inet6 fe80::1/64", "n", []),
    undefined,
  );
});

Deno.test("holder watch: split brains and outages from the events, in any order", () => {
  const events = [
    { t: 300, node: "node2", vip: "v", held: true }, // handover: node2 before node1 left
    { t: 100, node: "node1", vip: "v", held: true }, // repeated: no change
    { t: 310, node: "node1", vip: "v", held: false },
    { t: 500, node: "node2", vip: "v", held: false },
    { t: 800, node: "node3", vip: "v", held: true },
    { t: 900, node: "node1", vip: "w", held: true },
  ];
  const { splits, outages } = holderPeriods("v", ["node1"], events, { from: 0, to: 1000 });
  assert.deepEqual(splits, [{ vip: "v", from: 300, to: 310, nodes: ["node1", "node2"] }]);
  assert.deepEqual(outages, [{ vip: "v", from: 500, to: 800, nodes: [] }]);
  assert.deepEqual(holdersAt("v", ["node1"], events, 400), ["node2"]);
  assert.deepEqual(holderPeriods("v", [], [], { from: 0, to: 10 }).outages.length, 1);
});
