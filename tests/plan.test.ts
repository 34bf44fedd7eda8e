import assert from "node:assert/strict";
import { parseIptablesSave } from "../core/iptables.ts";
import { isEmpty, planDelete, planPass, renderTransaction } from "../core/plan.ts";
import { type FakeConnection, FakeKernel } from "./fake_kernel.ts";
import { snapshot, testConfig } from "./helpers.ts";

const config = testConfig();
const MASQ = "-s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE";
const snap = snapshot(
  { "192.0.2.50": 5, "192.0.2.51": 6 },
  { "10.244.1.5": "192.0.2.50", "10.244.2.7": "192.0.2.51" },
);

function applyPass(kernel: FakeKernel, s = snap) {
  const { transaction } = planPass(s, config, kernel.live(config));
  kernel.apply(transaction);
  return transaction;
}

Deno.test("plan: first pass creates everything in safe order; the second writes nothing", () => {
  const kernel = new FakeKernel({ foreignNat: [MASQ] });
  const first = applyPass(kernel);
  assert.deepEqual(first.steps.map((s) => s.op.tool), ["ip", "ipset", "iptables"]);
  assert.equal(isEmpty(planPass(snap, config, kernel.live(config)).transaction), true);
  // The foreign masquerade is kept, behind our jump.
  assert.deepEqual(kernel.tables.get("nat")!.chains.get("POSTROUTING"), [
    "-m comment --comment kube-egress -j KUBE-EGRESS-SNAT",
    MASQ,
  ]);
});

Deno.test("plan: a VIP arriving on the node turns forward into SNAT and drops its rule after", () => {
  const kernel = new FakeKernel();
  applyPass(kernel);
  kernel.interfaces.get("eth0")!.push("192.0.2.51");
  const tx = applyPass(kernel);
  assert.deepEqual(tx.steps.map((s) => [s.op.tool, s.purpose]), [
    ["iptables", "rewrite our chains and jumps"],
    ["ip", "remove stale rules, then their routes"],
    [
      "conntrack",
      "flush connections pinned to a VIP's old role or made before their pod was mapped",
    ],
  ]);
  // Only the moved VIP's connections are flushed, after its SNAT rule is in place and its
  // forwarding rule is gone (traffic flows first).
  assert.deepEqual(tx.steps[2].op, {
    tool: "conntrack",
    flushes: [{ why: "role", family: "ipv4", mark: 6, mask: 0xff }],
  });
  // Only the other VIP (.50, held elsewhere) keeps its policy route.
  assert.deepEqual(kernel.rules.map((r) => r.table), [5]);
  assert.deepEqual(kernel.routes.map((r) => r.table), [5]);
  assert.match(kernel.iptablesSave("nat"), /--to-source 192.0.2.51 --random-fully/);
});

Deno.test("plan: adding one pod writes one set entry and nothing else", () => {
  const kernel = new FakeKernel();
  applyPass(kernel);
  const more = snapshot(
    { "192.0.2.50": 5, "192.0.2.51": 6 },
    { "10.244.1.5": "192.0.2.50", "10.244.2.7": "192.0.2.51", "10.244.3.3": "192.0.2.50" },
  );
  const tx = applyPass(kernel, more);
  assert.deepEqual(tx.steps, [{
    purpose: "update pod and nosteer sets",
    op: {
      tool: "ipset",
      family: "ipv4",
      changes: [{ verb: "add", set: "kube-egress-pods", entry: "10.244.3.3 skbmark 0x5/0xff" }],
    },
  }]);
});

Deno.test("plan: removed VIPs lose their rule, route, nat rule and pods", () => {
  const kernel = new FakeKernel();
  applyPass(kernel);
  applyPass(kernel, snapshot({ "192.0.2.50": 5 }, { "10.244.1.5": "192.0.2.50" }));
  assert.deepEqual(kernel.rules.map((r) => r.table), [5]);
  assert.deepEqual(kernel.routes.map((r) => r.table), [5]);
  assert.deepEqual([...kernel.sets.get("kube-egress-pods")!.entries.keys()], ["10.244.1.5"]);
  assert.doesNotMatch(kernel.iptablesSave("nat"), /192.0.2.51/);
});

Deno.test("plan: strict rp_filter on the interface is made loose; loose and off are left alone", () => {
  const kernel = new FakeKernel();
  kernel.sysctls["net.ipv4.conf.all.rp_filter"] = 1;
  const tx = applyPass(kernel);
  assert.deepEqual(tx.steps.find((s) => s.op.tool === "sysctl")?.op, {
    tool: "sysctl",
    writes: [{ key: "net.ipv4.conf.eth0.rp_filter", value: 2 }],
  });
  assert.equal(kernel.sysctls["net.ipv4.conf.eth0.rp_filter"], 2);
  assert.equal(isEmpty(planPass(snap, config, kernel.live(config)).transaction), true);
});

Deno.test("plan: with an overlay, the device reaching other nodes' pods is loosened too", () => {
  const kernel = new FakeKernel();
  kernel.sysctls["net.ipv4.conf.all.rp_filter"] = 1;
  kernel.mainRoutes = [
    { dst: "10.244.2.0/24", dev: "cni0" },
    { dst: "10.244.1.0/24", dev: "vxlan0", gateway: "10.244.1.0", flags: ["onlink"] },
    { dst: "10.244.3.0/24", dev: "vxlan0", gateway: "10.244.3.0", flags: ["onlink"] },
  ];
  const tx = applyPass(kernel);
  assert.deepEqual(tx.steps.find((s) => s.op.tool === "sysctl"), {
    purpose: "loose reverse-path filter on the interface and the overlay devices",
    op: {
      tool: "sysctl",
      writes: [
        { key: "net.ipv4.conf.eth0.rp_filter", value: 2 },
        { key: "net.ipv4.conf.vxlan0.rp_filter", value: 2 },
      ],
    },
  });
  assert.equal(isEmpty(planPass(snap, config, kernel.live(config)).transaction), true);
});

Deno.test("plan: delete gives back the reverse-path filters remembered before the pass", () => {
  const kernel = new FakeKernel();
  kernel.sysctls["net.ipv4.conf.eth0.rp_filter"] = 1;
  const baseline = kernel.dump();
  const before = { ...kernel.sysctls };
  applyPass(kernel);
  assert.equal(kernel.sysctls["net.ipv4.conf.eth0.rp_filter"], 2);
  const tx = planDelete(kernel.live(config), config, {
    "net.ipv4.conf.eth0.rp_filter": before["net.ipv4.conf.eth0.rp_filter"],
  });
  assert.deepEqual(tx.steps.at(-1), {
    purpose: "give back the reverse-path filters we loosened",
    op: { tool: "sysctl", writes: [{ key: "net.ipv4.conf.eth0.rp_filter", value: 1 }] },
  });
  kernel.apply(tx);
  assert.deepEqual(kernel.sysctls, before);
  assert.equal(kernel.dump(), baseline);
});

Deno.test("plan: delete after apply returns the node to its baseline, foreign rules intact", () => {
  const kernel = new FakeKernel({
    foreignNat: [MASQ],
    foreignMangle: ["-j MARK --set-xmark 0x4000/0x4000"],
  });
  const baseline = kernel.dump();
  applyPass(kernel);
  kernel.apply(planDelete(kernel.live(config), config));
  assert.equal(kernel.dump(), baseline);
});

Deno.test("plan: delete on an empty node removes the tables iptables created for us", () => {
  const kernel = new FakeKernel();
  const baseline = kernel.dump();
  applyPass(kernel);
  const tx = planDelete(kernel.live(config), config);
  assert.deepEqual(tx.steps.at(-1)?.op, {
    tool: "nft",
    ops: [
      { op: "delete table", table: { family: "ip", name: "mangle" } },
      { op: "delete table", table: { family: "ip", name: "nat" } },
    ],
  });
  kernel.apply(tx);
  assert.equal(kernel.dump(), baseline);
  assert.equal(isEmpty(planDelete(kernel.live(config), config)), true);
});

Deno.test("plan: delete on a node that never had us removes nothing (iptables-nft lists missing tables)", () => {
  // What iptables-nft-save prints for a table that does not exist in the kernel.
  const missing = (table: string) =>
    `*${table}\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n`;
  const live = new FakeKernel().live(config);
  const tx = planDelete({
    ...live,
    iptables: {
      mangle: parseIptablesSave(missing("mangle"), "mangle"),
      nat: parseIptablesSave(missing("nat"), "nat"),
    },
  }, config);
  assert.equal(isEmpty(tx), true, JSON.stringify(tx.steps));
});

Deno.test("plan: a failed iptables step leaves the chains as they were and the next pass converges", () => {
  const kernel = new FakeKernel();
  kernel.failNext = "iptables";
  assert.throws(() => applyPass(kernel), /injected/);
  assert.equal(kernel.tables.size, 0);
  applyPass(kernel);
  assert.equal(isEmpty(planPass(snap, config, kernel.live(config)).transaction), true);
});

Deno.test("plan: rendering names each step's command and payload", () => {
  const kernel = new FakeKernel();
  const text = renderTransaction(planPass(snap, config, kernel.live(config)).transaction);
  assert.match(
    text,
    /# step 1: add routes, then the rules that use them\n# \| ip -force -batch -\nroute add default via 192.0.2.50/,
  );
  assert.match(text, /# \| iptables-restore --noflush\n\*mangle/);
  assert.equal(
    renderTransaction({ steps: [] }),
    "no changes: the node already matches the desired state\n",
  );
});

Deno.test("plan: a VIP leaving the node flushes only its connections; a new VIP flushes nothing, a removed one its own", () => {
  const kernel = new FakeKernel();
  kernel.interfaces.get("eth0")!.push("192.0.2.51");
  // This node translates .51's (mark 6) to .51 and forwards .50's (mark 5) un-NATed; the
  // node's own masquerade of an unmapped pod carries no mark of ours.
  const snat51: FakeConnection = {
    family: "ipv4",
    src: "10.244.2.7",
    mark: 6,
    srcNat: "192.0.2.51",
  };
  const forwarded50: FakeConnection = { family: "ipv4", src: "10.244.1.5", mark: 5 };
  const unmapped: FakeConnection = {
    family: "ipv4",
    src: "10.244.3.3",
    mark: 0,
    srcNat: "192.0.2.11",
  };
  kernel.connections = [snat51, forwarded50, unmapped];
  applyPass(kernel);
  assert.deepEqual(
    kernel.connections,
    [snat51, forwarded50, unmapped],
    "a new VIP has none pinned",
  );
  kernel.interfaces.set("eth0", ["192.0.2.11"]);
  const tx = applyPass(kernel);
  assert.deepEqual(tx.steps.map((s) => s.op.tool), ["ip", "iptables", "conntrack"]);
  assert.deepEqual(kernel.connections, [forwarded50, unmapped], "only .51's SNAT is gone");
  // Removing a VIP altogether: its forwarded connections are null bindings that would take
  // the main route out with the pod's own address once unmarked; flushed last, after the
  // rule step and the VIP's route (until then `dropUnnatedRule` drops them).
  const forwarded51: FakeConnection = { family: "ipv4", src: "10.244.2.7", mark: 6 };
  kernel.connections.push(forwarded51);
  const removal = applyPass(kernel, snapshot({ "192.0.2.50": 5 }, { "10.244.1.5": "192.0.2.50" }));
  assert.deepEqual(kernel.connections, [forwarded50, unmapped]);
  const tools = removal.steps.map((s) => s.op.tool);
  assert.ok(tools.indexOf("conntrack") > tools.indexOf("iptables"), tools.join(","));
  assert.ok(tools.lastIndexOf("ip") < tools.indexOf("conntrack"), "the flush goes last");
});
