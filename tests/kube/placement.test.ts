import assert from "node:assert/strict";
import {
  eligibleVips,
  guardNodes,
  instanceFamily,
  selectedNodes,
  vrrpPeers,
} from "../../core/kube/placement.ts";
import { type CustomRecord, nodeRecord } from "../../core/kube/objects.ts";
import { compareIp } from "../../core/ip.ts";

const vip = (name: string, spec: unknown): CustomRecord => ({
  metadata: { name },
  spec,
  status: undefined,
});
const node = (name: string, addresses: string[], labels = {}, unschedulable = false) =>
  nodeRecord({
    metadata: { name, labels },
    spec: { unschedulable },
    status: { addresses: addresses.map((address) => ({ type: "InternalIP", address })) },
  })!;

const nodes = [
  node("n1", ["192.0.2.11", "2001:db8::11"]),
  node("n2", ["2001:db8::a:12", "192.0.2.12"]),
  node("n3", ["2001:db8::13"]), // IPv6-only node
  node("n4", ["192.0.2.14"], {}, true), // cordoned
];
const vips = [
  vip("v4", { ip: "192.0.2.50" }),
  vip("v6", { ip: "2001:db8::50" }),
  vip("dual", { ip: "2001:db8::60", ips: ["2001:db8::60", "192.0.2.60"] }),
];

Deno.test("placement: a Node's InternalIP of each family is kept", () => {
  assert.deepEqual(
    [nodes[1].internalIp, nodes[1].internalIpv6, nodes[2].internalIp, nodes[2].internalIpv6],
    ["192.0.2.12", "2001:db8::a:12", undefined, "2001:db8::13"],
  );
});

Deno.test("placement: the VRRP family is IPv4 where the VIP has an IPv4 address, else IPv6", () => {
  assert.equal(instanceFamily({ ip: "192.0.2.50" }), 4);
  assert.equal(instanceFamily({ ip: "2001:db8::50" }), 6);
  assert.equal(instanceFamily({ ip: "2001:db8::60", ips: ["2001:db8::60", "192.0.2.60"] }), 4);
});

Deno.test("placement: peers and trusted nodes are the nodes' addresses of the VIP's VRRP family, for each of its addresses", () => {
  const peers = vrrpPeers(vips, nodes);
  assert.deepEqual(Object.fromEntries(peers), {
    "192.0.2.50": ["192.0.2.11", "192.0.2.12"],
    "2001:db8::50": ["2001:db8::11", "2001:db8::13", "2001:db8::a:12"],
    "2001:db8::60": ["192.0.2.11", "192.0.2.12"],
    "192.0.2.60": ["192.0.2.11", "192.0.2.12"],
  });
  assert.deepEqual(guardNodes(vips, nodes).get("192.0.2.50"), [
    "192.0.2.11",
    "192.0.2.12",
    "192.0.2.14",
  ]);
  assert.deepEqual(
    [...eligibleVips(vips, nodes[0])].sort(compareIp),
    ["192.0.2.50", "192.0.2.60", "2001:db8::50", "2001:db8::60"],
  );
  const selected = selectedNodes(vips, nodes);
  assert.deepEqual(selected.get("v6")?.map((n) => n.name), ["n1", "n3", "n2"]);
  assert.deepEqual(selected.get("dual")?.map((n) => `${n.name} ${n.ip}`), [
    "n1 192.0.2.11",
    "n2 192.0.2.12",
    "n4 192.0.2.14",
  ]);
});

Deno.test("placement: addresses order IPv4 first, each family numerically", () => {
  const sorted = ["2001:db8::a:1", "192.0.2.9", "2001:db8::1", "10.0.0.1", "2001:db8:1::", "::1"]
    .sort(compareIp);
  assert.deepEqual(sorted, [
    "10.0.0.1",
    "192.0.2.9",
    "::1",
    "2001:db8::1",
    "2001:db8::a:1",
    "2001:db8:1::",
  ]);
});
