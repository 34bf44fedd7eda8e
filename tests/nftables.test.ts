import assert from "node:assert/strict";
import { intentOf } from "../core/intent.ts";
import {
  nftAfterApply,
  nftRolesInForce,
  NO_NFTABLES,
  outermost,
  planNftables,
  renderNft,
} from "../core/nftables.ts";
import { planApply } from "../core/plan.ts";
import { validateSnapshot } from "../core/snapshot.ts";
import { raw, snapshot, testConfig } from "./helpers.ts";

const config = testConfig({ backend: "nftables" });
const snap = snapshot({ "192.0.2.50": 5, "192.0.2.51": 6 }, {
  "10.244.1.11": "192.0.2.50",
  "10.244.1.12": "192.0.2.51",
});

Deno.test("nftables: a first pass declares our table, chains and elements; re-planning finds nothing", () => {
  const intent = intentOf(snap, config, ["192.0.2.51"]);
  const ops = planNftables(intent, NO_NFTABLES);
  assert.deepEqual(ops[0], { op: "add table" });
  assert.ok(ops.some((o) => o.op === "add chain" && o.chain === "prerouting" && o.hook));
  assert.deepEqual(
    ops.filter((o) => o.op === "add element" && o.set === "pods").map((o) => o),
    [
      { op: "add element", set: "pods", key: "10.244.1.11", value: "goto vip-5" },
      { op: "add element", set: "pods", key: "10.244.1.12", value: "goto vip-6" },
    ],
  );
  assert.deepEqual(planNftables(intent, nftAfterApply(intent)), []);
});

Deno.test("nftables: one pod added is one element, nothing else", () => {
  const before = intentOf(snap, config, []);
  const after = intentOf(
    snapshot({ "192.0.2.50": 5, "192.0.2.51": 6 }, {
      "10.244.1.11": "192.0.2.50",
      "10.244.1.12": "192.0.2.51",
      "10.244.1.13": "192.0.2.50",
    }),
    config,
    [],
  );
  assert.deepEqual(planNftables(after, nftAfterApply(before)), [
    { op: "add table" },
    { op: "add element", set: "pods", key: "10.244.1.13", value: "goto vip-5" },
  ]);
});

Deno.test("nftables: a role change rewrites only that VIP's chains, and planApply flushes its connections", () => {
  const forwarder = intentOf(snap, config, []);
  const holder = intentOf(snap, config, ["192.0.2.50"]);
  const ops = planNftables(holder, nftAfterApply(forwarder));
  const chains = [...new Set(ops.flatMap((o) => "chain" in o ? [o.chain] : []))].sort();
  assert.deepEqual(chains, ["snat-5", "vip-5"]);
  assert.ok(
    ops.some((o) => o.op === "add rule" && o.rule === "counter snat ip to 192.0.2.50 fully-random"),
  );
  assert.deepEqual(
    [...nftRolesInForce(nftAfterApply(holder), 0xff)],
    [[5, "holder"], [6, "forwarder"]],
  );
  const live = {
    backend: "nft" as const,
    routes: { addresses: ["192.0.2.50"], rules: [], routes: [], podRoutes: [] },
    iptables: {
      mangle: { present: false, chainExists: false, rules: [], hookRules: [], onlyOurs: false },
      nat: { present: false, chainExists: false, rules: [], hookRules: [], onlyOurs: false },
    },
    sets: { pods: new Map(), nosteer: new Set<string>() },
    nft: nftAfterApply(forwarder),
    sysctls: {},
  };
  const tx = planApply(holder, live, config);
  assert.deepEqual(tx.steps.find((s) => s.op.tool === "conntrack")?.op, {
    tool: "conntrack",
    flushes: [{ why: "role", family: "ipv4", mark: 5, mask: 0xff }],
  });
  assert.equal(tx.steps.filter((s) => s.op.tool === "nft").length, 1, "one nft -f per pass");
});

Deno.test("nftables: destination classes are pod . range elements; contained ranges are dropped", () => {
  const { snapshot: scoped } = validateSnapshot({
    ...raw({ "192.0.2.50": 5 }, {}),
    pods: [{
      origin: "p",
      podIp: "10.244.1.11",
      vip: "192.0.2.50",
      destinations: ["203.0.113.0/24", "203.0.113.128/25"],
      excluded: ["203.0.113.200/32"],
    }],
  }, config);
  const ops = planNftables(intentOf(scoped, config, []), NO_NFTABLES);
  assert.deepEqual(
    ops.filter((o) => o.op === "add element" && o.set.startsWith("scoped")),
    [
      {
        op: "add element",
        set: "scoped",
        key: "10.244.1.11 . 203.0.113.0/24",
        value: "goto vip-5",
      },
      { op: "add element", set: "scoped-excluded", key: "10.244.1.11 . 203.0.113.200/32" },
    ],
  );
  assert.deepEqual(outermost(["10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/8", "192.0.2.0/24"]), [
    "10.0.0.0/8",
    "192.0.2.0/24",
  ]);
});

Deno.test("nftables: the renderer writes consecutive element operations on one set as one line", () => {
  const lines = renderNft([
    { op: "add table" },
    { op: "add element", set: "pods", key: "10.244.1.11", value: "goto vip-5" },
    { op: "add element", set: "pods", key: "10.244.1.12", value: "goto vip-5" },
    { op: "delete element", set: "pods", key: "10.244.1.13" },
  ]);
  assert.deepEqual(lines, [
    "add table inet kube-egress",
    "add element inet kube-egress pods { 10.244.1.11 : goto vip-5, 10.244.1.12 : goto vip-5 }",
    "delete element inet kube-egress pods { 10.244.1.13 }",
  ]);
});
