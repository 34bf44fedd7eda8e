import assert from "node:assert/strict";
import {
  conntrackFlushes,
  localPodRanges,
  owedFlushes,
  stillRunAfter,
  takeoverSteps,
  unmappedFlushes,
  withOwedCommits,
  withOwedFlushes,
} from "../core/conntrack.ts";
import { type Snapshot, validateSnapshot } from "../core/snapshot.ts";
import { planPass } from "../core/plan.ts";
import { intentOf } from "../core/intent.ts";
import { nftAfterApply, nftChains, NO_NFTABLES } from "../core/nftables.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { desiredState, forwardRule, snatRule } from "../core/desired.ts";
import { iptablesPlanner } from "../core/datapath_iptables.ts";
import type { LiveState, Transaction } from "../core/plan.ts";
import type { ConntrackFlush, Operation, Step } from "../core/operation.ts";
import { appended, raw, snapshot, testConfig } from "./helpers.ts";

const config = testConfig({ markMask: "0xff00" });
/** The roles the iptables backend reads from these nat-chain rules. */
const rolesOf = (rules: readonly string[]) =>
  iptablesPlanner.rolesInForce(
    { iptables: { nat: { rules } } } as unknown as LiveState,
    config.markMask,
  );
const snap = snapshot({ "192.0.2.50": 5, "192.0.2.51": 6, "192.0.2.52": 7 }, {});
/** The flush of one VIP's connections by its mark under our mask (0xff00 here). */
const byMark = (mark: number, source?: string): ConntrackFlush => ({
  why: "role",
  family: "ipv4",
  mark,
  mask: 0xff00,
  ...(source ? { source } : {}),
});
/** The flush of a newly mapped pod's connections masqueraded to a node address. */
const mapped = (pod: string, srcNat: string): ConntrackFlush => ({
  why: "mapped",
  family: pod.includes(":") ? "ipv6" : "ipv4",
  pod,
  srcNat,
});
/** The flushes of a transaction's conntrack steps. */
const flushesOf = (tx: Transaction) =>
  tx.steps.flatMap((s) => s.op.tool === "conntrack" ? s.op.flushes : []);
/** A step of this operation (the transactions of the step-order tests). */
const at = (purpose: string, op: Operation) => ({ purpose, op });
const ops = {
  routes: { tool: "ip", family: "ipv4", protocol: 233, changes: [] },
  chains: { tool: "iptables", family: "ipv4", tables: [] },
  table: { tool: "nft", ops: [{ op: "add table" }] },
  pods: {
    tool: "ipset",
    family: "ipv4",
    changes: [{ verb: "add", set: "kube-egress-pods", entry: "10.244.1.9" }],
  },
} as const;
const flushOp = (...flushes: ConntrackFlush[]): Operation => ({ tool: "conntrack", flushes });

Deno.test("conntrack: only VIPs whose role flips are flushed, by their mark under our mask", () => {
  const before = desiredState(snap, config, ["192.0.2.50"]);
  const after = desiredState(snap, config, ["192.0.2.51"]);
  const flushes = conntrackFlushes(rolesOf(before.chains.nat), after.roles, config.markMask);
  assert.deepEqual(flushes, [byMark(0x500), byMark(0x600)]);
  assert.deepEqual(conntrackFlushes(rolesOf(after.chains.nat), after.roles, config.markMask), []);
});

Deno.test("conntrack: rules of another mask or foreign rules never cause a flush", () => {
  const roles = desiredState(snap, config, ["192.0.2.50"]).roles;
  const holder = roles.find((r) => r.ip === "192.0.2.50")!;
  const other = { ...holder, role: "forwarder" as const };
  const live = [
    forwardRule("eth0", holder, 0xff), // same VIP, written under another mask
    "-A KUBE-EGRESS-SNAT -o eth0 -j MASQUERADE",
  ];
  assert.deepEqual(conntrackFlushes(rolesOf(live), roles, config.markMask), []);
  assert.deepEqual(
    conntrackFlushes(rolesOf([snatRule("eth0", holder, 0xff00)]), [other], config.markMask),
    [byMark(0x500)],
  );
});

Deno.test("conntrack: flushes are owed after a failure between the role change and the flush, and only then", () => {
  const flush = byMark(0x500);
  const tx = {
    steps: [
      at("routes", ops.routes),
      at("chains", ops.chains),
      at("flush", flushOp(flush)),
      at("remove", ops.routes),
    ],
  };
  assert.deepEqual(owedFlushes(tx, 0, []), [], "failed before the roles changed");
  assert.deepEqual(owedFlushes(tx, 1, []), [], "iptables-restore is all or nothing");
  assert.deepEqual(owedFlushes(tx, 2, []), [flush], "the flush itself failed");
  assert.deepEqual(owedFlushes(tx, 3, []), [], "flushed; a later step failed");
  assert.deepEqual(owedFlushes(tx, undefined, []), [flush], "failed somewhere: owe it");
  assert.deepEqual(owedFlushes(tx, 0, [flush]), [flush], "owed before: still owed");
  // The next pass's transaction carries them, once.
  const next = withOwedFlushes({ steps: [] }, [flush]);
  assert.deepEqual(next.steps.map((s) => s.op), [flushOp(flush)]);
  assert.deepEqual(withOwedFlushes(tx, [flush]).steps[2].op, flushOp(flush));
  assert.deepEqual(
    withOwedFlushes(tx, [byMark(0x600)]).steps[2].op,
    flushOp(flush, byMark(0x600)),
    "added to the pass's own flush step",
  );
  assert.equal(withOwedFlushes(tx, []), tx);
});

Deno.test("conntrack: with synced NAT state a takeover's forwarding route goes right after its SNAT role, then it flushes the VIP and commits", () => {
  const commits = [{ config: "/run/ke/conntrackd-mcast.conf" }];
  const natSync = { commits, localPodCidrs: ["10.244.1.0/24"] };
  const kernel = new FakeKernel();
  kernel.interfaces.set(config.interface, ["192.0.2.11", "192.0.2.51"]); // holds .51
  kernel.apply(planPass(snap, config, kernel.live(config)).transaction);
  kernel.interfaces.set(config.interface, ["192.0.2.11", "192.0.2.50"]); // takes .50, gives .51 up
  const live = kernel.live(config);
  const tx = planPass(snap, config, live, { natSync }).transaction;
  const tools = tx.steps.map((s) => s.op.tool);
  const rulesAt = tools.indexOf("iptables");
  const flushAt = tools.indexOf("conntrack");
  const commitAt = tools.indexOf("conntrackd");
  const routesGoAt = tools.lastIndexOf("ip");
  // The least work before traffic flows: SNAT role, forwarding rule gone, then conntrack.
  assert.ok(
    rulesAt + 1 === routesGoAt && routesGoAt + 1 === flushAt && flushAt + 1 === commitAt,
    tools.join(" "),
  );
  assert.deepEqual(
    tx.steps[flushAt].op,
    flushOp(
      byMark(0x500), // taken over: all of this node's entries of it
      byMark(0x600, "10.244.1.0/24"), // given up: this node's own pods only
    ),
  );
  assert.deepEqual(tx.steps[commitAt].op, { tool: "conntrackd", commits });
  // Unknown own pod ranges: the VIP given up is flushed whole, as without sync.
  assert.deepEqual(
    flushesOf(
      planPass(snap, config, live, { natSync: { commits, localPodCidrs: [] } }).transaction,
    ),
    [byMark(0x500), byMark(0x600)],
  );
  // Without sync nothing is committed.
  const plain = planPass(snap, config, live).transaction;
  assert.equal(plain.steps.some((s) => s.op.tool === "conntrackd"), false);
  // No takeover (unchanged, or only giving a VIP up): nothing committed.
  const held = desiredState(snap, config, ["192.0.2.50"]);
  assert.deepEqual(
    takeoverSteps(rolesOf(held.chains.nat), held.roles, config.markMask, natSync),
    { flushes: [], commits: [] },
  );
  const none = desiredState(snap, config, []);
  assert.deepEqual(
    takeoverSteps(rolesOf(held.chains.nat), none.roles, config.markMask, natSync),
    { flushes: [byMark(0x500, "10.244.1.0/24")], commits: [] },
  );
});

Deno.test("conntrack: with synced NAT state every VIP is guarded against replies no entry knows", () => {
  const kernel = new FakeKernel();
  kernel.interfaces.set(config.interface, ["192.0.2.11", "192.0.2.50"]);
  const natSync = { commits: [], localPodCidrs: [] };
  const { transaction } = planPass(snap, config, kernel.live(config), { natSync });
  const mangle = appended(transaction, "mangle");
  for (const vip of ["192.0.2.50", "192.0.2.51", "192.0.2.52"]) {
    assert.ok(
      mangle.includes(
        `-d ${vip}/32 -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN` +
          ` -m conntrack --ctstate NEW,INVALID -m comment --comment "kube-egress ${vip} guard" -j DROP`,
      ),
      vip,
    );
  }
  // The holder (of .50 only) drops its VIP's mid-stream TCP packets that no entry knows.
  const midstream = mangle.filter((l) => l.includes("midstream"));
  assert.deepEqual(midstream, [
    "-m mark --mark 0x500/0xff00 -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN" +
    ' -m conntrack --ctstate NEW -m comment --comment "kube-egress 192.0.2.50 midstream" -j DROP',
  ]);
  kernel.apply(transaction);
  // iptables-save prints them as written: the next pass changes nothing.
  assert.equal(
    planPass(snap, config, kernel.live(config), { natSync }).transaction.steps.length,
    0,
  );
  // Without sync, no guard.
  assert.equal(
    appended(planPass(snap, config, new FakeKernel().live(config)).transaction, "mangle")
      .some((l) => l.includes("guard")),
    false,
  );
});

Deno.test("conntrack: the nftables backend guards the VIPs the same way, in its prerouting chain right after the drops of what a VIP gone would translate", () => {
  const intent = intentOf(snap, config, ["192.0.2.50"], { guardVips: true });
  const prerouting = nftChains(intent).get("prerouting")!;
  assert.deepEqual(prerouting.slice(3, 5), [
    "ip daddr 192.0.2.50 tcp flags & (fin | syn | rst | ack) != syn ct state { new, invalid } drop",
    "ip daddr 192.0.2.50 meta l4proto udp ct state { new, invalid } drop",
  ]);
  const guard = (r: string) => r.startsWith("ip daddr 192.0.2.") && r.includes("ct state");
  assert.equal(prerouting.filter(guard).length, 6, "two per VIP");
  assert.ok(
    nftChains(intent).get("vip-5")!.includes(
      "ct state new tcp flags & (fin | syn | rst | ack) != syn drop",
    ),
    "the holder's mid-stream drop",
  );
  assert.equal(
    nftChains(intent).get("vip-6")!.some((r) => r.includes("ct state new")),
    false,
    "not on a forwarder",
  );
  assert.equal(
    nftChains(intentOf(snap, config, ["192.0.2.50"])).get("prerouting")!.some(guard),
    false,
  );
});

Deno.test("conntrack: a VIP removed is flushed by its mark (its forwarded null bindings would leave unmarked), with or without synced NAT state", () => {
  const before = desiredState(snap, config, ["192.0.2.50"]);
  const without51 = snapshot({ "192.0.2.50": 5, "192.0.2.52": 7 }, {});
  const after = desiredState(without51, config, ["192.0.2.50"]);
  const live = rolesOf(before.chains.nat);
  assert.deepEqual(conntrackFlushes(live, after.roles, config.markMask), [byMark(0x600)]);
  const sync = { commits: [{ config: "/etc/x.conf" }], localPodCidrs: ["10.244.1.0/24"] };
  assert.deepEqual(takeoverSteps(live, after.roles, config.markMask, sync), {
    flushes: [byMark(0x600)],
    commits: [],
  });
  assert.deepEqual(takeoverSteps(live, after.roles, config.markMask), {
    flushes: [byMark(0x600)],
    commits: [],
  });
  // Every VIP gone (the last EgressVIP deleted): all of them.
  assert.deepEqual(conntrackFlushes(live, [], config.markMask), [
    byMark(0x500),
    byMark(0x600),
    byMark(0x700),
  ]);
});

Deno.test("conntrack: the nftables backend drops what would leave un-NATed as the iptables one does", () => {
  const intent = intentOf(snap, config, ["192.0.2.50"]);
  const chains = nftChains(intent);
  const prerouting = chains.get("prerouting")!;
  assert.deepEqual(prerouting.slice(-2), [
    "ct direction original ct mark & 0xff00 != 0 ct status & (confirmed | snat) == confirmed drop",
    "ip saddr { 10.244.0.0/16 } ct state invalid drop",
  ], "after the pods map: only what no VIP chain took");
  const holder = chains.get("vip-5")!;
  const unnated = "ct status & (confirmed | snat) == confirmed drop";
  assert.ok(
    holder.indexOf(unnated) > holder.indexOf("ct direction reply ct mark & 0xff00 == 0 return"),
    "the holder's, before its mark is set",
  );
  assert.ok(holder.indexOf(unnated) < holder.findIndex((r) => r.includes("meta mark set")));
  assert.equal(chains.get("vip-6")!.includes(unnated), false, "a forwarder's null bindings pass");
});

Deno.test("conntrack: the nftables backend tags a pod's TCP connection picked up from the server's side; its VIP chain takes the pod's packets of it, and the holder drops them", () => {
  const chains = nftChains(intentOf(snap, config, ["192.0.2.50"]));
  const prerouting = chains.get("prerouting")!;
  const tag =
    "ip daddr { 10.244.0.0/16 } ip saddr != @nosteer tcp flags & (fin | syn | rst | ack) != syn ct state new ct mark set ct mark & 0xffff00ff | 0xff00";
  assert.ok(
    prerouting.indexOf(tag) >= 0 &&
      prerouting.indexOf(tag) < prerouting.indexOf("ip daddr @nosteer return"),
    "before packets to pods return",
  );
  for (const [name, holder] of [["vip-5", true], ["vip-6", false]] as const) {
    const vip = chains.get(name)!;
    const back = vip.indexOf("ct direction reply ct mark & 0xff00 == 0 return");
    assert.ok(back >= 0, `${name}: only untagged replies return the way they came`);
    assert.equal(vip[back + 1] === "ct direction reply drop", holder, name);
    assert.ok(back < vip.findIndex((r) => r.includes("meta mark set")), name);
  }
});

Deno.test("conntrack: the nftables backend drops a VIP's translated connections' replies once the VIP is not on the node", () => {
  for (const addresses of [[], ["192.0.2.50"]]) {
    const prerouting = nftChains(intentOf(snap, config, addresses)).get("prerouting")!;
    assert.deepEqual(prerouting.slice(0, 3), [
      "ip daddr 192.0.2.50 fib daddr type != local ct direction reply ct status & snat == snat drop",
      "ip daddr 192.0.2.51 fib daddr type != local ct direction reply ct status & snat == snat drop",
      "ip daddr 192.0.2.52 fib daddr type != local ct direction reply ct status & snat == snat drop",
    ], "first, on every node whatever its role");
  }
});

Deno.test("conntrack: after the roles changed, a failed step still lets the flush and the commit run", () => {
  const flush = byMark(0x500);
  const tx = {
    steps: [
      at("routes", ops.routes),
      at("table", ops.table),
      at("remove", ops.routes),
      at("remove", { ...ops.routes, family: "ipv6" }),
      at("flush", flushOp(flush)),
      at("commit", { tool: "conntrackd", commits: [{ config: "/etc/x.conf" }] }),
    ],
  };
  assert.deepEqual(stillRunAfter(tx, 0), [], "failed before the roles changed");
  assert.deepEqual(stillRunAfter(tx, 1), [], "nft -f is all or nothing");
  assert.deepEqual(stillRunAfter(tx, 3), [4, 5]);
  assert.deepEqual(stillRunAfter(tx, 4), [5], "a failed flush still commits");
  assert.deepEqual(owedFlushes(tx, 3, [], [4, 5]), [], "flushed after the failure: nothing owed");
  assert.deepEqual(owedFlushes(tx, 3, [], [5]), [flush], "the flush failed too: owed");
});

for (const backend of ["iptables", "nftables"] as const) {
  Deno.test(`conntrack (${backend}): the first pass, and each pass that maps a pod, flushes what this node's newly mapped pods made before (masqueraded to the node's address, never to a VIP), in both families`, () => {
    const dual = testConfig({
      backend,
      markMask: "0xff00",
      podCidrs: ["10.244.0.0/16", "fd00:10:244::/48"],
    });
    const local = "10.244.1.5", remote = "10.244.2.7", local6 = "fd00:10:244:1::5";
    const pods = (extra: Record<string, string>) =>
      validateSnapshot(
        raw({ "192.0.2.50": 5, "2001:db8::50": 5 }, {
          [local]: "192.0.2.50",
          [remote]: "192.0.2.50",
          [local6]: "2001:db8::50",
          ...extra,
        }),
        dual,
      ).snapshot;
    const kernel = new FakeKernel();
    // The node's own addresses (link-local: never a masquerade's), and a VIP it holds.
    kernel.interfaces.set(dual.interface, ["192.0.2.11", "192.0.2.50", "2001:db8::11", "fe80::11"]);
    // This node's pod bridge, and another node's range via its address.
    kernel.mainRoutes.push(
      { dst: "10.244.1.0/24", dev: "cni0" },
      { dst: "10.244.2.0/24", dev: "eth0", gateway: "192.0.2.12" },
      { dst: "fd00:10:244:1::/64", dev: "cni0" },
      { dst: "fd00:10:244:2::/64", dev: "eth0", gateway: "2001:db8::12" },
    );
    // The fake kernel has no nftables: our table is as the last pass left it.
    let nft = NO_NFTABLES;
    const flushes = (snap: Snapshot) => {
      const { desired, transaction } = planPass(snap, dual, { ...kernel.live(dual), nft });
      kernel.apply({ steps: transaction.steps.filter((s) => s.op.tool !== "nft") });
      if (backend === "nftables") nft = nftAfterApply(desired);
      return flushesOf(transaction);
    };
    // The node boots: nothing of ours yet; the local pods' connections made before are flushed.
    const toVip = { family: "ipv4", src: local, mark: 0x500, srcNat: "192.0.2.50" } as const;
    const remoteMasq = { family: "ipv4", src: remote, mark: 0, srcNat: "192.0.2.11" } as const;
    const toPod = { family: "ipv4", src: local, mark: 0 } as const;
    kernel.connections = [
      { family: "ipv4", src: local, mark: 0, srcNat: "192.0.2.11" },
      { family: "ipv6", src: local6, mark: 0, srcNat: "2001:db8::11" },
      toVip,
      remoteMasq,
      toPod,
    ];
    assert.deepEqual(flushes(pods({})), [
      mapped("10.244.1.5", "192.0.2.11"),
      mapped("fd00:10:244:1::5", "2001:db8::11"),
    ]);
    assert.deepEqual(
      kernel.connections,
      [toVip, remoteMasq, toPod],
      "the masqueraded ones of local pods are gone; translated to a VIP, other nodes' and un-NATed kept",
    );
    // Mapped already: nothing again (a connection made since is ours, or the pod's own choice).
    assert.deepEqual(flushes(pods({})), []);
    // A pod mapped later, local and remote: only the local one.
    assert.deepEqual(
      flushes(pods({ "10.244.1.6": "192.0.2.50", "10.244.2.8": "192.0.2.50" })),
      [mapped("10.244.1.6", "192.0.2.11")],
    );
    // A pod unmapped and mapped again is flushed again.
    flushes(pods({}));
    assert.deepEqual(flushes(pods({ "10.244.1.6": "192.0.2.50" })), [
      mapped("10.244.1.6", "192.0.2.11"),
    ]);
  });
}

Deno.test("conntrack: pods mapped with a pass are flushed only where this node runs them, and never without pod ranges", () => {
  const ranges = localPodRanges([
    { dst: "10.244.1.0/24", dev: "cni0" },
    { dst: "10.244.2.0/24", dev: "eth0", gateway: "192.0.2.12" },
    { dst: "10.244.3.0/24", dev: "eth0" }, // on the LAN itself: not our pods
  ], "eth0");
  assert.deepEqual(ranges, ["10.244.1.0/24"]);
  const inForce = new Set(["10.244.1.4"]);
  const node = ["192.0.2.11", "2001:db8::11", "fe80::11"];
  assert.deepEqual(
    unmappedFlushes(["10.244.1.4", "10.244.1.9", "10.244.2.9"], inForce, ranges, node),
    [mapped("10.244.1.9", "192.0.2.11")],
  );
  assert.deepEqual(unmappedFlushes(["10.244.1.9"], inForce, [], node), []);
  assert.deepEqual(unmappedFlushes(["10.244.1.9"], inForce, ranges, []), []);
  assert.deepEqual(unmappedFlushes(["10.244.1.9"], inForce, ranges, node, "ipv6"), []);
  assert.deepEqual(
    unmappedFlushes(["fd00:10:244:1::9"], inForce, ["fd00:10:244:1::/64"], node, "ipv6"),
    [mapped("fd00:10:244:1::9", "2001:db8::11")],
  );
});

Deno.test("conntrack: a failed pass owes the flushes of the pods its ipset step mapped", () => {
  const flush = mapped("10.244.1.9", "192.0.2.11");
  const role = byMark(0x500);
  const tx = { steps: [at("pods", ops.pods), at("flush", flushOp(role, flush))] };
  assert.deepEqual(owedFlushes(tx, 0, []), [], "the set was not written");
  assert.deepEqual(owedFlushes(tx, 1, []), [flush], "mapped, not flushed: owed; no role changed");
});

Deno.test("conntrack: owed commits go last, once, and only those the pass does not run", () => {
  const commit = { config: "/run/sync.conf" };
  const flush: Step = {
    purpose: "flush",
    op: {
      tool: "conntrack",
      flushes: [{ why: "role", family: "ipv4", mark: 5, mask: 0xff }],
    },
  };
  assert.deepEqual(withOwedCommits({ steps: [flush] }, [commit]).steps.map((s) => s.op), [
    flush.op,
    { tool: "conntrackd", commits: [commit] },
  ]);
  const tx = {
    steps: [flush, { purpose: "commit", op: { tool: "conntrackd" as const, commits: [commit] } }],
  };
  assert.equal(withOwedCommits(tx, [commit]), tx, "already committed by this pass");
  assert.equal(withOwedCommits(tx, []), tx);
});
