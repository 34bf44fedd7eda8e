import assert from "node:assert/strict";
import {
  clusterLayout,
  ClusterSpec,
  cniRouteLines,
  namespaceEntries,
  nodeNatRules,
  nodeSysctls,
  podMtu,
  resolveNamespace,
  vxlanFdbLines,
} from "../sim/layout.ts";

const hostGw = clusterLayout(ClusterSpec.parse({}));
const vxlan = clusterLayout(ClusterSpec.parse({ cni: "vxlan", iface: "bond0", nodes: 2 }));

Deno.test("sim layout: defaults are 3 nodes x 2 pods, eth0, host-gw, strict rp_filter, iptables", () => {
  assert.deepEqual(hostGw.spec, {
    nodes: 3,
    podsPerNode: 2,
    iface: "eth0",
    cni: "host-gw",
    rpFilter: 1,
    backend: "iptables",
  });
  assert.deepEqual(hostGw.nodes.map((n) => [n.name, n.ip, n.podCidr]), [
    ["node1", "192.0.2.11", "10.244.1.0/24"],
    ["node2", "192.0.2.12", "10.244.2.0/24"],
    ["node3", "192.0.2.13", "10.244.3.0/24"],
  ]);
  assert.deepEqual(hostGw.pods.map((p) => `${p.name}=${p.ip}@${p.suffix}`), [
    "pod1-1=10.244.1.11@n1p1",
    "pod1-2=10.244.1.12@n1p2",
    "pod2-1=10.244.2.11@n2p1",
    "pod2-2=10.244.2.12@n2p2",
    "pod3-1=10.244.3.11@n3p1",
    "pod3-2=10.244.3.12@n3p2",
  ]);
  assert.equal(hostGw.serviceBackend.ip, "10.244.1.250");
});

Deno.test("sim layout: bad specs are rejected with the field named", () => {
  for (
    const [input, field] of [
      [{ nodes: 0 }, "nodes"],
      [{ nodes: 31 }, "nodes"],
      [{ podsPerNode: 51 }, "podsPerNode"],
      [{ iface: "a very long interface" }, "iface"],
      [{ cni: "weave" }, "cni"],
      [{ rpFilter: 3 }, "rpFilter"],
    ] as const
  ) {
    const parsed = ClusterSpec.safeParse(input);
    assert.equal(parsed.success, false, JSON.stringify(input));
    assert.deepEqual(parsed.error!.issues.map((i) => i.path[0]), [field]);
  }
});

Deno.test("sim layout: host-gw routes each other node's pod range via its LAN address", () => {
  assert.deepEqual(cniRouteLines(hostGw, hostGw.nodes[1]), [
    "route add 10.244.1.0/24 via 192.0.2.11 dev eth0",
    "route add 10.244.3.0/24 via 192.0.2.13 dev eth0",
  ]);
  assert.deepEqual(vxlanFdbLines(hostGw, hostGw.nodes[1]), []);
  assert.equal(podMtu(hostGw.spec), 1500);
});

Deno.test("sim layout: vxlan builds a flannel-style overlay on the configured interface", () => {
  assert.deepEqual(cniRouteLines(vxlan, vxlan.nodes[0]), [
    "link add vxlan0 type vxlan id 1 local 192.0.2.11 dev bond0 dstport 8472 nolearning",
    "link set vxlan0 address 0e:6b:65:00:00:01",
    "addr add 10.244.1.0/32 dev vxlan0",
    "link set vxlan0 up",
    "neigh add 10.244.2.0 lladdr 0e:6b:65:00:00:02 dev vxlan0 nud permanent",
    "route add 10.244.2.0/24 via 10.244.2.0 dev vxlan0 onlink",
  ]);
  assert.deepEqual(vxlanFdbLines(vxlan, vxlan.nodes[0]), [
    "fdb append 0e:6b:65:00:00:02 dev vxlan0 dst 192.0.2.12",
  ]);
  assert.equal(podMtu(vxlan.spec), 1450);
});

Deno.test("sim layout: nodes get kube-proxy's ClusterIP DNAT and masquerade mark, and the CNI masquerade", () => {
  const rules = nodeNatRules(hostGw);
  assert.equal(rules[0], "*nat");
  assert.equal(rules.at(-1), "COMMIT");
  assert.ok(rules.includes(
    '-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m tcp --dport 7000 -m comment --comment "default/egress-witness:tcp" -j DNAT --to-destination 10.244.1.250:7000',
  ));
  assert.ok(rules.some((r) => r.includes("-p udp") && r.includes("10.244.1.250:7001")));
  assert.ok(rules.includes("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"));
  assert.ok(rules.some((r) => r.startsWith("-A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16")));
  assert.deepEqual(nodeSysctls(ClusterSpec.parse({ rpFilter: 2 })), [
    "net.ipv4.ip_forward=1",
    "net.ipv4.conf.all.rp_filter=2",
    "net.ipv4.conf.default.rp_filter=2",
  ]);
});

Deno.test("sim layout: namespaces are found by suffix, alias or full name, and only those", () => {
  const entries = namespaceEntries(hostGw);
  assert.equal(entries.length, 4 + 3 + 6 + 1);
  assert.equal(new Set(entries.map((e) => e.suffix)).size, entries.length);
  assert.equal(resolveNamespace(hostGw, "ke123456", "pod2-1"), "n2p1");
  assert.equal(resolveNamespace(hostGw, "ke123456", "n2p1"), "n2p1");
  assert.equal(resolveNamespace(hostGw, "ke123456", "ke123456-n2p1"), "n2p1");
  assert.equal(resolveNamespace(hostGw, "ke123456", "router"), "rt");
  assert.equal(resolveNamespace(hostGw, "ke123456", "svc-backend"), "n1svc");
  assert.equal(resolveNamespace(hostGw, "ke123456", "node4"), undefined);
  assert.equal(resolveNamespace(hostGw, "ke123456", "ke654321-n1"), undefined);
});

Deno.test("sim layout: a dual-stack spec gives every node, pod and outside host an IPv6 address", () => {
  const dual = clusterLayout(ClusterSpec.parse({ family: "dual", nodes: 2 }));
  assert.deepEqual(dual.nodes.map((n) => [n.ip6, n.podCidr6, n.gateway6]), [
    ["2001:db8:1::11", "fd00:10:244:1::/64", "fd00:10:244:1::1"],
    ["2001:db8:1::12", "fd00:10:244:2::/64", "fd00:10:244:2::1"],
  ]);
  assert.deepEqual(dual.pods.map((p) => `${p.name}=${p.ip}/${p.ip6}`), [
    "pod1-1=10.244.1.11/fd00:10:244:1::11",
    "pod1-2=10.244.1.12/fd00:10:244:1::12",
    "pod2-1=10.244.2.11/fd00:10:244:2::11",
    "pod2-2=10.244.2.12/fd00:10:244:2::12",
  ]);
  assert.deepEqual(dual.hosts.map((h) => h.ip6), ["2001:db8:2::10", "2001:db8:1::100"]);
  assert.deepEqual(cniRouteLines(dual, dual.nodes[0]), [
    "route add 10.244.2.0/24 via 192.0.2.12 dev eth0",
    "route add fd00:10:244:2::/64 via 2001:db8:1::12 dev eth0",
  ]);
  // No DAD (nothing tentative), IPv6 forwarding on the nodes.
  assert.ok(nodeSysctls(dual.spec).includes("net.ipv6.conf.default.accept_dad=0"));
  assert.ok(nodeSysctls(dual.spec).includes("net.ipv6.conf.all.forwarding=1"));
});

Deno.test("sim layout: IPv4 stays as it was (no family, no IPv6); dual stack needs host-gw", () => {
  assert.equal("family" in hostGw.spec, false);
  assert.equal(hostGw.nodes[0].ip6, undefined);
  assert.equal(hostGw.pods[0].ip6, undefined);
  assert.equal(nodeSysctls(hostGw.spec).some((s) => s.startsWith("net.ipv6")), false);
  const parsed = ClusterSpec.safeParse({ family: "dual", cni: "vxlan" });
  assert.equal(parsed.success, false);
  assert.deepEqual(parsed.error!.issues.map((i) => i.path[0]), ["cni"]);
});
