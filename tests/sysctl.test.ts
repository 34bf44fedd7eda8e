import assert from "node:assert/strict";
import type { PodRoute } from "../core/iproute.ts";
import {
  rememberOriginals,
  rpFilterFixes,
  rpFilterInterfaces,
  rpFilterKeys,
  rpFilterRestores,
} from "../core/sysctl.ts";

const BRIDGE: PodRoute = { dst: "10.244.2.0/24", dev: "cni0" };

Deno.test("sysctl: host-gw routes add nothing beyond the LAN interface", () => {
  const routes: PodRoute[] = [
    BRIDGE,
    { dst: "10.244.1.0/24", dev: "eth0", gateway: "192.0.2.11" },
    { dst: "10.244.3.0/24", dev: "eth0", gateway: "192.0.2.13" },
  ];
  assert.deepEqual(rpFilterInterfaces("eth0", routes), ["eth0"]);
});

Deno.test("sysctl: overlay devices reaching other nodes' pods are loosened, each once", () => {
  const routes: PodRoute[] = [
    BRIDGE,
    { dst: "10.244.1.0/24", dev: "flannel.1", gateway: "10.244.1.0" },
    { dst: "10.244.3.0/24", dev: "flannel.1", gateway: "10.244.3.0" },
    { dst: "10.244.4.0/26", dev: "tunl0", gateway: "192.0.2.14" },
  ];
  assert.deepEqual(rpFilterInterfaces("bond0", routes), ["bond0", "flannel.1", "tunl0"]);
});

Deno.test("sysctl: directly connected pod ranges (bridge, per-pod veths) keep their filter", () => {
  const routes: PodRoute[] = [BRIDGE, { dst: "10.244.2.7/32", dev: "cali1234" }];
  assert.deepEqual(rpFilterInterfaces("eth0", routes), ["eth0"]);
});

Deno.test("sysctl: strict (all or interface) becomes loose on exactly the listed interfaces", () => {
  const ifaces = ["eth0", "vxlan0"];
  assert.deepEqual(rpFilterKeys(...ifaces), [
    "net.ipv4.conf.all.rp_filter",
    "net.ipv4.conf.eth0.rp_filter",
    "net.ipv4.conf.vxlan0.rp_filter",
  ]);
  // all=1 makes every interface strict; an interface already loose (2) or a
  // lower per-interface value does not matter: the kernel uses the maximum.
  assert.deepEqual(
    rpFilterFixes({
      "net.ipv4.conf.all.rp_filter": 1,
      "net.ipv4.conf.eth0.rp_filter": 0,
      "net.ipv4.conf.vxlan0.rp_filter": 2,
    }, ifaces),
    [{ key: "net.ipv4.conf.eth0.rp_filter", value: 2 }],
  );
  // all=0 with strict interfaces: both are fixed; off (0) everywhere is left alone.
  assert.deepEqual(
    rpFilterFixes(
      { "net.ipv4.conf.eth0.rp_filter": 1, "net.ipv4.conf.vxlan0.rp_filter": 1 },
      ifaces,
    ),
    [{ key: "net.ipv4.conf.eth0.rp_filter", value: 2 }, {
      key: "net.ipv4.conf.vxlan0.rp_filter",
      value: 2,
    }],
  );
  assert.deepEqual(rpFilterFixes({}, ifaces), []);
  // all=2 (loose everywhere) needs nothing.
  assert.deepEqual(
    rpFilterFixes({ "net.ipv4.conf.all.rp_filter": 2, "net.ipv4.conf.eth0.rp_filter": 1 }, ifaces),
    [],
  );
});

Deno.test("sysctl: the first original is remembered; only what is still loose is given back", () => {
  const live = { "net.ipv4.conf.eth0.rp_filter": 1, "net.ipv4.conf.vxlan0.rp_filter": 0 };
  const fixes = [
    { key: "net.ipv4.conf.eth0.rp_filter", value: 2 },
    { key: "net.ipv4.conf.vxlan0.rp_filter", value: 2 },
  ];
  const first = rememberOriginals({}, fixes, live);
  assert.deepEqual(first, live);
  // A later pass sees the loose value: the original stays.
  const again = rememberOriginals(first, fixes, { "net.ipv4.conf.eth0.rp_filter": 2 });
  assert.deepEqual(again, first);
  assert.deepEqual(
    rpFilterRestores(first, {
      "net.ipv4.conf.eth0.rp_filter": 2,
      "net.ipv4.conf.vxlan0.rp_filter": 1, // changed by someone since: stands
    }),
    [{ key: "net.ipv4.conf.eth0.rp_filter", value: 1 }],
  );
  assert.deepEqual(rpFilterRestores(first, {}), [], "interfaces gone: nothing to write");
});
