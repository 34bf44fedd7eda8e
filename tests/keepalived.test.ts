import assert from "node:assert/strict";
import fc from "fast-check";
import {
  instanceName,
  parseStateLine,
  renderKeepalivedConf,
  routeIdOfInstance,
  stableHash,
  VRRP_DEFAULTS,
  vrrpInstances,
  vrrpPriority,
  vrrpRouterId,
} from "../core/keepalived.ts";

const settings = { ...VRRP_DEFAULTS, interface: "eth0", nodeName: "node1" };
const vipList = (n: number) =>
  Array.from({ length: n }, (_, i) => ({ ip: `192.0.2.${50 + i}`, routeId: i + 1 }));

/** The node whose priority for the VIP is highest: where VRRP puts it. */
function holderOf(vip: string, nodes: readonly string[]): string {
  return nodes.reduce((best, n) => (vrrpPriority(vip, n) > vrrpPriority(vip, best) ? n : best));
}

Deno.test("keepalived: priorities are stable, within 1..254, and differ per VIP and per node", () => {
  assert.equal(stableHash("192.0.2.50\u0000node1"), stableHash("192.0.2.50\u0000node1"));
  fc.assert(fc.property(fc.ipV4(), fc.string({ minLength: 1 }), (vip, node) => {
    const p = vrrpPriority(vip, node);
    return Number.isInteger(p) && p >= 1 && p <= 254 && p === vrrpPriority(vip, node);
  }));
  const perNode = ["node1", "node2", "node3"].map((n) => vrrpPriority("192.0.2.50", n));
  assert.equal(new Set(perNode).size, 3, `three nodes, three priorities: ${perNode}`);
});

Deno.test("keepalived: VIPs spread over the nodes, each node first for a fair share", () => {
  for (const nodes of [["node1", "node2", "node3"], ["a", "b", "c", "d", "e"]]) {
    const vips = vipList(60);
    const count = new Map(nodes.map((n) => [n, 0]));
    for (const v of vips) count.set(holderOf(v.ip, nodes), count.get(holderOf(v.ip, nodes))! + 1);
    const fair = vips.length / nodes.length;
    for (const [node, n] of count) {
      assert.ok(n >= fair * 0.5 && n <= fair * 1.5, `${node} holds ${n} of ${vips.length}`);
    }
  }
  // The simulator's two VIPs sit on two different nodes.
  const nodes = ["node1", "node2", "node3"];
  assert.notEqual(holderOf("192.0.2.50", nodes), holderOf("192.0.2.51", nodes));
});

Deno.test("keepalived: a node leaving moves only its own VIPs (rendezvous hashing)", () => {
  const all = ["node1", "node2", "node3", "node4"];
  const rest = all.filter((n) => n !== "node2");
  for (const v of vipList(40)) {
    const before = holderOf(v.ip, all);
    if (before !== "node2") assert.equal(holderOf(v.ip, rest), before, v.ip);
  }
});

Deno.test("keepalived: one instance per eligible VIP, router id = route id, ordered; ineligible left out", () => {
  const instances = vrrpInstances([
    { ip: "192.0.2.51", routeId: 9 },
    { ip: "192.0.2.50", routeId: 5 },
    { ip: "192.0.2.52", routeId: 7, eligible: false },
  ], "node1");
  assert.deepEqual(instances.map((i) => [i.name, i.vip, i.vrid]), [
    ["kube_egress_5", "192.0.2.50", 5],
    ["kube_egress_9", "192.0.2.51", 9],
  ]);
  assert.equal(routeIdOfInstance(instanceName(9)), 9);
  assert.equal(routeIdOfInstance("VI_1"), undefined);
});

Deno.test("keepalived: virtual router ids are the route ids, or shifted and still unique", () => {
  assert.deepEqual(vrrpInstances(vipList(2), "node1").map((i) => i.vrid), [1, 2]);
  for (const offset of [0, 1, 3, 100, 254]) {
    const ids = Array.from({ length: 252 }, (_, i) => vrrpRouterId(i + 1, offset));
    assert.equal(new Set(ids).size, 252, `offset ${offset}: unique`);
    assert.ok(ids.every((id) => id >= 1 && id <= 255), `offset ${offset}: within 1-255`);
  }
  assert.equal(vrrpRouterId(252, 10), 7);
  assert.deepEqual(vrrpInstances(vipList(1), "node1", 3).map((i) => i.vrid), [4]);
});

Deno.test("keepalived: unicast peers go into every instance; none = multicast", () => {
  const instances = vrrpInstances(vipList(2), "node1");
  const peers = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];
  const text = renderKeepalivedConf(instances, { ...settings, unicastPeers: peers });
  const block = "  unicast_peer {\n    192.0.2.11\n    192.0.2.12\n    192.0.2.13\n  }\n";
  assert.equal(text.split(block).length - 1, 2, "one block per instance");
  assert.ok(!renderKeepalivedConf(instances, settings).includes("unicast_peer"));
});

Deno.test("keepalived: a VIP's own peers (from the Nodes) replace the flag's list for its instance", () => {
  const [a, b] = vipList(2);
  const instances = vrrpInstances([{ ...a, peers: ["192.0.2.12", "192.0.2.11"] }, b], "node1");
  assert.deepEqual(instances.map((i) => i.peers), [["192.0.2.12", "192.0.2.11"], undefined]);
  const text = renderKeepalivedConf(instances, { ...settings, unicastPeers: ["192.0.2.99"] });
  const [first, second] = text.split("vrrp_instance ").slice(1);
  assert.match(first, /unicast_peer \{\n {4}192\.0\.2\.12\n {4}192\.0\.2\.11\n {2}\}/);
  assert.match(second, /unicast_peer \{\n {4}192\.0\.2\.99\n {2}\}/);
});

Deno.test("keepalived: the configuration is byte-stable and independent of input order", () => {
  const vips = vipList(3);
  const a = renderKeepalivedConf(vrrpInstances(vips, "node1"), settings);
  const b = renderKeepalivedConf(vrrpInstances([...vips].reverse(), "node1"), settings);
  assert.equal(a, b);
  const p = vrrpPriority("192.0.2.50", "node1");
  assert.ok(
    a.includes(
      [
        "vrrp_instance kube_egress_1 {",
        "  state BACKUP",
        "  interface eth0",
        "  virtual_router_id 1",
        `  priority ${p}`,
        "  advert_int 0.1",
        "  preempt_delay 5",
        "  virtual_ipaddress {",
        "    192.0.2.50/32 dev eth0",
        "  }",
        "}",
      ].join("\n"),
    ),
    a,
  );
  assert.match(a, /global_defs \{\n {2}router_id node1\n {2}vrrp_version 3\n/);
  assert.doesNotMatch(
    a,
    /vrrp_strict|vrrp_iptables|nftables/,
    "keepalived must not touch firewalls",
  );
  assert.equal(
    renderKeepalivedConf([], { ...settings, advertInterval: 0.30000000000000004 }).includes(
      "vrrp_instance",
    ),
    false,
  );
  assert.match(
    renderKeepalivedConf(vrrpInstances(vips, "n"), { ...settings, advertInterval: 0.1 + 0.2 }),
    /advert_int 0.3\n/,
  );
});

Deno.test("keepalived: state changes are read from its log lines, others ignored", () => {
  assert.deepEqual(parseStateLine("(kube_egress_5) Entering MASTER STATE"), {
    routeId: 5,
    state: "MASTER",
  });
  assert.deepEqual(
    parseStateLine("Mon Nov 23 12:05:42 2026: (kube_egress_12) Entering BACKUP STATE (init)"),
    { routeId: 12, state: "BACKUP" },
  );
  assert.deepEqual(
    parseStateLine("(kube_egress_7): entering FAULT state (interface eth0 down)"),
    { routeId: 7, state: "FAULT" },
  );
  assert.equal(parseStateLine("(VI_1) Entering MASTER STATE"), undefined);
  assert.equal(parseStateLine("(kube_egress_5) setting VIPs."), undefined);
});

Deno.test("keepalived: an IPv6 VIP is a VRRPv3 IPv6 instance, its /128 deprecated and never -nodad", () => {
  const text = renderKeepalivedConf(
    vrrpInstances([{ ip: "2001:db8::50", routeId: 7 }], "node1"),
    settings,
  );
  assert.ok(
    text.includes(
      [
        "  virtual_ipaddress {",
        "    2001:db8::50/128 dev eth0 preferred_lft 0",
        "  }",
        "}",
      ].join("\n"),
    ),
    text,
  );
  // keepalived 2.2.7's "-nodad" turns DAD back on (measured in a namespace).
  assert.doesNotMatch(text, /nodad|virtual_ipaddress_excluded/);
});

Deno.test("keepalived: a dual-stack VIP (two families, one route id) is one instance: IPv4 advertised, IPv6 excluded", () => {
  const vips = [
    { ip: "2001:db8::50", routeId: 3, peers: ["2001:db8::11", "2001:db8::12"] },
    { ip: "192.0.2.50", routeId: 3, peers: ["192.0.2.11", "192.0.2.12"] },
    { ip: "192.0.2.60", routeId: 4 },
  ];
  const instances = vrrpInstances(vips, "node1");
  assert.deepEqual(instances.map((i) => [i.routeId, i.vip, i.excluded, i.peers]), [
    [3, "192.0.2.50", ["2001:db8::50"], ["192.0.2.11", "192.0.2.12"]],
    [4, "192.0.2.60", undefined, undefined],
  ]);
  // The priority is the IPv4 VIP's, as before it had an IPv6 address.
  assert.equal(instances[0].priority, vrrpPriority("192.0.2.50", "node1"));
  assert.deepEqual(vrrpInstances([...vips].reverse(), "node1"), instances);
  const text = renderKeepalivedConf(instances, settings);
  assert.ok(
    text.includes(
      [
        "  virtual_ipaddress {",
        "    192.0.2.50/32 dev eth0",
        "  }",
        "  virtual_ipaddress_excluded {",
        "    2001:db8::50/128 dev eth0 preferred_lft 0",
        "  }",
        "}",
      ].join("\n"),
    ),
    text,
  );
  // One address not eligible: the VIP (both families) is not held here.
  assert.deepEqual(
    vrrpInstances([{ ...vips[0], eligible: false }, vips[1]], "node1").map((i) => i.vip),
    [],
  );
});

Deno.test("keepalived: an IPv6 instance over unicast sends from this node's own peer address", () => {
  const peers = ["2001:db8::11", "2001:db8::12"];
  const instances = vrrpInstances([{ ip: "2001:db8::50", routeId: 7, peers }], "node1");
  const text = renderKeepalivedConf(instances, {
    ...settings,
    localAddresses: ["2001:db8::12", "192.0.2.12"],
  });
  assert.ok(
    text.includes(
      [
        "  unicast_src_ip 2001:db8::12",
        "  unicast_peer {",
        "    2001:db8::11",
        "  }",
      ].join("\n"),
    ),
    text,
  );
  // IPv4 instances keep keepalived's own choice (the interface's primary address).
  const v4 = renderKeepalivedConf(
    vrrpInstances([{ ip: "192.0.2.50", routeId: 1, peers: ["192.0.2.11"] }], "node1"),
    { ...settings, localAddresses: ["192.0.2.11"] },
  );
  assert.doesNotMatch(v4, /unicast_src_ip/);
});

Deno.test("keepalived: a unicast node does not advertise to itself (one warning per own advert otherwise)", () => {
  const peers = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];
  const v4 = renderKeepalivedConf(vrrpInstances([{ ip: "192.0.2.50", routeId: 1 }], "node2"), {
    ...settings,
    unicastPeers: peers,
    localAddresses: ["192.0.2.12", "192.0.2.50", "2001:db8::12"],
  });
  assert.ok(v4.includes("  unicast_peer {\n    192.0.2.11\n    192.0.2.13\n  }"), v4);
  // Written differently, the same address.
  const v6 = renderKeepalivedConf(
    vrrpInstances(
      [{ ip: "2001:db8::50", routeId: 7, peers: ["2001:DB8:0::12", "2001:db8::13"] }],
      "node2",
    ),
    { ...settings, localAddresses: ["2001:db8::12"] },
  );
  assert.ok(v6.includes("  unicast_peer {\n    2001:db8::13\n  }"), v6);
  // A list of this node alone stays (an empty one would mean multicast).
  const alone = renderKeepalivedConf(
    vrrpInstances([{ ip: "192.0.2.50", routeId: 1, peers: ["192.0.2.12"] }], "node2"),
    { ...settings, localAddresses: ["192.0.2.12"] },
  );
  assert.ok(alone.includes("  unicast_peer {\n    192.0.2.12\n  }"), alone);
});
