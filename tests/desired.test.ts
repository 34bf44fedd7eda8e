import assert from "node:assert/strict";
import { desiredState } from "../core/desired.ts";
import { snapshot, testConfig } from "./helpers.ts";

const snap = snapshot(
  { "192.0.2.50": 5, "192.0.2.51": 6 },
  { "10.244.1.5": "192.0.2.50", "10.244.2.7": "192.0.2.51", "10.244.1.6": "192.0.2.51" },
);

Deno.test("desired: the holder SNATs, the others forward; roles by exact address", () => {
  const desired = desiredState(
    snap,
    testConfig(),
    ["192.0.2.11", "192.0.2.500", "192.0.2.510"].concat(["192.0.2.50"]),
  );
  assert.deepEqual(desired.roles.map((r) => [r.ip, r.role]), [["192.0.2.50", "holder"], [
    "192.0.2.51",
    "forwarder",
  ]]);
  assert.deepEqual(desired.chains.nat, [
    '-A KUBE-EGRESS-SNAT -o eth0 -m mark --mark 0x5/0xff -m comment --comment "kube-egress 192.0.2.50 holder" -j SNAT --to-source 192.0.2.50 --random-fully',
    '-A KUBE-EGRESS-SNAT -o eth0 -m mark --mark 0x6/0xff -m comment --comment "kube-egress 192.0.2.51 forward" -j ACCEPT',
  ]);
  assert.deepEqual(desired.rules, [{
    family: "ipv4",
    priority: 1000,
    mark: 6,
    mask: 0xff,
    table: 6,
  }]);
  assert.deepEqual(desired.routes, [{ table: 6, gateway: "192.0.2.51", dev: "eth0" }]);
});

Deno.test("desired: a node holding no VIP routes every VIP's traffic to its holder", () => {
  const desired = desiredState(snap, testConfig(), ["192.0.2.11", "192.0.2.5"]);
  assert.deepEqual(desired.roles.map((r) => r.role), ["forwarder", "forwarder"]);
  assert.equal(desired.rules.length, 2);
  assert.equal(desired.routes.length, 2);
});

Deno.test("desired: one mark rule whatever the pod count; pods carry their VIP's mark", () => {
  const all = desiredState(snap, testConfig({ markMask: "0xff00" }), []);
  assert.equal(
    all.chains.mangle.length,
    9,
    "one drop per VIP of what it would translate once gone, the picked-up tag, mark, mark INVALID, mark REPLY of a picked-up connection, save into the ct mark, then the drops of what no VIP marked",
  );
  assert.deepEqual(all.chains.mangle.slice(0, 2), [
    '-A KUBE-EGRESS-MARK -d 192.0.2.50/32 -m addrtype ! --dst-type LOCAL -m conntrack --ctstate SNAT --ctdir REPLY -m comment --comment "kube-egress 192.0.2.50 gone" -j DROP',
    '-A KUBE-EGRESS-MARK -d 192.0.2.51/32 -m addrtype ! --dst-type LOCAL -m conntrack --ctstate SNAT --ctdir REPLY -m comment --comment "kube-egress 192.0.2.51 gone" -j DROP',
  ]);
  assert.match(all.chains.mangle[2], /"kube-egress picked up"/);
  // From here on, the mark rules proper (the others are about packets to VIPs and pods).
  const desired = { ...all, chains: { ...all.chains, mangle: all.chains.mangle.slice(3) } };
  assert.match(
    desired.chains.mangle[0],
    /^-A KUBE-EGRESS-MARK -m set --match-set kube-egress-pods src /,
    "the pods set first: one lookup ends the rule for packets not from a mapped pod",
  );
  assert.match(desired.chains.mangle[0], / -j SET --map-set kube-egress-pods src --map-mark$/);
  assert.match(desired.chains.mangle[0], /! --match-set kube-egress-nosteer dst/);
  assert.match(desired.chains.mangle[0], /--ctdir ORIGINAL/);
  assert.equal(
    desired.chains.mangle[1],
    "-A KUBE-EGRESS-MARK -m set --match-set kube-egress-pods src -m set ! --match-set kube-egress-nosteer dst -m conntrack --ctstate INVALID -j SET --map-set kube-egress-pods src --map-mark",
    "INVALID packets (no entry, no direction) are marked too, so they take the VIP's route",
  );
  assert.equal(
    desired.chains.mangle[2],
    "-A KUBE-EGRESS-MARK -m set --match-set kube-egress-pods src -m set ! --match-set kube-egress-nosteer dst -m conntrack --ctdir REPLY -m connmark ! --mark 0x0/0xff00 -j SET --map-set kube-egress-pods src --map-mark",
    "a pod's packets of a connection picked up from the server's side (tagged) are marked too",
  );
  assert.equal(
    desired.chains.mangle[3],
    "-A KUBE-EGRESS-MARK -m mark ! --mark 0x0/0xff00 -m conntrack --ctdir ORIGINAL -j CONNMARK --save-mark --nfmask 0xff00 --ctmask 0xff00",
    "only our bits are copied into the connection mark, only in the original direction (the tag stays)",
  );
  assert.deepEqual([...desired.podMarks], [["10.244.1.5", 0x500], ["10.244.1.6", 0x600], [
    "10.244.2.7",
    0x600,
  ]]);
});

Deno.test("desired: INVALID packets are dropped only on the holder, where they would leave un-NATed", () => {
  const holder = desiredState(snap, testConfig(), ["192.0.2.51"]);
  const drops = holder.chains.mangle.filter((rule) =>
    rule.endsWith("-j DROP") && !rule.includes(' gone" ')
  );
  assert.deepEqual(drops, [
    '-A KUBE-EGRESS-MARK -m mark --mark 0x6/0xff -m conntrack --ctstate INVALID -m comment --comment "kube-egress 192.0.2.51 invalid" -j DROP',
    '-A KUBE-EGRESS-MARK -m mark --mark 0x6/0xff -m conntrack ! --ctstate SNAT --ctstatus CONFIRMED --ctdir ORIGINAL -m comment --comment "kube-egress 192.0.2.51 unnated" -j DROP',
    '-A KUBE-EGRESS-MARK -m mark --mark 0x6/0xff -m conntrack --ctdir REPLY -m comment --comment "kube-egress 192.0.2.51 reversed" -j DROP',
    ...UNMARKED_DROPS,
  ]);
  assert.ok(
    holder.chains.mangle.indexOf(drops[0]) > 1,
    "after the mark rules: the drop matches by the VIP's mark",
  );
  const forwarder = desiredState(snap, testConfig(), []);
  assert.deepEqual(
    forwarder.chains.mangle.filter((rule) => rule.includes("DROP") && !rule.includes(' gone" ')),
    UNMARKED_DROPS,
    "a node holding no VIP forwards transit traffic (marked) whatever its conntrack state",
  );
});

/** On every node: what no VIP marked and would leave with the pod's own address. */
const UNMARKED_DROPS = [
  '-A KUBE-EGRESS-MARK -m mark --mark 0x0/0xff -m connmark ! --mark 0x0/0xff -m connmark ! --mark 0xff/0xff -m conntrack ! --ctstate SNAT --ctstatus CONFIRMED --ctdir ORIGINAL -m comment --comment "kube-egress unnated" -j DROP',
  '-A KUBE-EGRESS-MARK -s 10.244.0.0/16 -m set ! --match-set kube-egress-nosteer dst -m mark --mark 0x0/0xff -m conntrack --ctstate INVALID -m comment --comment "kube-egress invalid unsteered" -j DROP',
];

Deno.test("desired: a holder drops its VIP's connections in the table without source NAT; every node those no VIP marks", () => {
  // A forwarder's null binding (-j ACCEPT in the SNAT chain) outlives the role change
  // until the flush, and a VIP's deletion unmarks it: either way NAT never sees its
  // packets again and they would leave with the pod's own address.
  const holder = desiredState(snap, testConfig(), ["192.0.2.51"]).chains.mangle;
  const unnated = holder.findIndex((r) => r.includes('"kube-egress 192.0.2.51 unnated"'));
  assert.ok(unnated > 1, "matched by the VIP's mark, after the mark rules");
  assert.match(holder[unnated], /! --ctstate SNAT --ctstatus CONFIRMED --ctdir ORIGINAL/);
  const save = holder.findIndex((r) => r.includes("--save-mark"));
  for (const drop of UNMARKED_DROPS) assert.ok(holder.indexOf(drop) > save, drop);
});

Deno.test("desired: nosteer holds pod, service and excluded ranges, deduplicated and sorted", () => {
  const desired = desiredState(
    snap,
    testConfig({
      excludeCidrs: ["192.0.2.0/24", "10.96.0.0/12"],
      podCidrs: ["10.244.0.0/16", "10.1.0.0/16"],
    }),
    [],
  );
  assert.deepEqual(desired.noSteer, [
    "10.1.0.0/16",
    "10.96.0.0/12",
    "10.244.0.0/16",
    "192.0.2.0/24",
  ]);
});

Deno.test("desired: a pod's TCP connection picked up from the server's side is tagged, its pod's packets take the VIP's route, the holder drops them", () => {
  // The pod's node deleted the pod's entry (a role change's flush) while the server's segments
  // still came through the holder that translated the connection: the new entry is reversed
  // (original direction server -> pod), so the pod's packets are replies. Before, nothing
  // marked them and they left by the main route with the pod's own address.
  const config = testConfig({ markMask: "0xff00" });
  const forwarder = desiredState(snap, config, []).chains.mangle;
  assert.deepEqual(forwarder.filter((r) => r.includes("picked up")), [
    '-A KUBE-EGRESS-MARK -d 10.244.0.0/16 -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m set ! --match-set kube-egress-nosteer src -m conntrack --ctstate NEW -m comment --comment "kube-egress picked up" -j CONNMARK --set-xmark 0xff00/0xff00',
  ], "a segment other than a SYN from a steerable source that starts an entry to a pod");
  const reply = forwarder.findIndex((r) => r.includes("--ctdir REPLY -m connmark"));
  assert.ok(reply > 0 && reply < forwarder.findIndex((r) => r.includes("--save-mark")));
  assert.match(
    forwarder[reply],
    /-m connmark ! --mark 0x0\/0xff00 -j SET --map-set kube-egress-pods src --map-mark$/,
  );
  // The server's own packets of such a connection are its original direction, unmarked,
  // with our tag in the connection mark and no NAT: they pass to the pod.
  const unnated = forwarder.find((r) => r.includes('"kube-egress unnated"'))!;
  assert.match(unnated, /-m connmark ! --mark 0xff00\/0xff00/);
  const holder = desiredState(snap, config, ["192.0.2.50"]).chains.mangle;
  const drop = holder.indexOf(
    '-A KUBE-EGRESS-MARK -m mark --mark 0x500/0xff00 -m conntrack --ctdir REPLY -m comment --comment "kube-egress 192.0.2.50 reversed" -j DROP',
  );
  assert.ok(
    drop > holder.findIndex((r) => r.includes("--ctdir REPLY -m connmark")),
    "after the mark",
  );
  assert.equal(forwarder.some((r) => r.includes("reversed")), false, "a forwarder passes them on");
});

Deno.test("desired: on every node, a VIP's translated connections' replies are dropped once the VIP is not on the node", () => {
  // The old holder keeps its entries until its pass flushes them (for good, other nodes' pods',
  // with NAT state sync); a router that still sends it the server's packets would have them
  // translated back and passed to the pod's node, whose own entry the takeover flushed: picked
  // up there reversed, the pod's packets would leave with its own address.
  for (const addresses of [[], ["192.0.2.50"]]) {
    const mangle = desiredState(snap, testConfig(), addresses).chains.mangle;
    assert.deepEqual(mangle.filter((r) => r.includes(' gone" ')), [
      '-A KUBE-EGRESS-MARK -d 192.0.2.50/32 -m addrtype ! --dst-type LOCAL -m conntrack --ctstate SNAT --ctdir REPLY -m comment --comment "kube-egress 192.0.2.50 gone" -j DROP',
      '-A KUBE-EGRESS-MARK -d 192.0.2.51/32 -m addrtype ! --dst-type LOCAL -m conntrack --ctstate SNAT --ctdir REPLY -m comment --comment "kube-egress 192.0.2.51 gone" -j DROP',
    ], "whatever the role: the address decides when the packet arrives");
  }
});
