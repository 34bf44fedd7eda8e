import assert from "node:assert/strict";
import { diagnose, type DoctorFacts } from "../core/doctor.ts";
import {
  checkRpFilter6,
  checkVipAddresses6,
  firewalldRpFilter,
  foreignPodRoutes,
  parseAddresses6,
  parseRoutes6,
  type RpFilter6Facts,
  strictIp6tablesRpFilters,
  strictNftRpFilters,
} from "../core/doctor_ipv6.ts";
import { testConfig } from "./helpers.ts";

// Real tools' output, captured in a scratch namespace (tests/fixtures/doctor_ipv6/README.md).
const fixture = (name: string) =>
  Deno.readTextFileSync(new URL(`./fixtures/doctor_ipv6/${name}`, import.meta.url));
const ADDRS = parseAddresses6(fixture("ip6_addr.json"));
const IP6TABLES = fixture("ip6tables_save.txt");
const NFT = fixture("nft_rpfilter.json");
const ROUTES = fixture("ip6_route_mixed.json");
const PODS = ["10.244.0.0/16", "fd00:10:244::/48"];

Deno.test("doctor ipv6: the interface's IPv6 addresses and their flags, as ip -j prints them", () => {
  const byIp = Object.fromEntries(ADDRS.map((a) => [a.local, a]));
  assert.deepEqual(byIp["2001:db8::50"], {
    local: "2001:db8::50",
    prefixlen: 128,
    tentative: false,
    dadfailed: false,
    deprecated: true,
    nodad: true,
    preferredLifetime: 0,
  });
  assert.equal(byIp["2001:db8::51"].deprecated, false);
  assert.equal(byIp["2001:db8::52"].tentative, true);
  assert.equal(byIp["2001:db8::53"].dadfailed, true);
  assert.equal(byIp["2001:db8::1"].prefixlen, 64);
});

Deno.test("doctor ipv6: a VIP held deprecated and nodad passes; not deprecated, tentative or dadfailed fails, with the fix", () => {
  const ok = checkVipAddresses6("eth0", ["192.0.2.50", "2001:db8::50"], ADDRS);
  assert.equal(ok.verdict, "pass", ok.detail);
  assert.match(ok.detail, /1 IPv6 VIP\(s\) held: \/128, nodad, deprecated/);
  const plain = checkVipAddresses6("eth0", ["2001:db8::51"], ADDRS);
  assert.equal(plain.verdict, "fail");
  assert.match(
    plain.detail,
    /2001:db8::51 not deprecated \(preferred_lft forever\): source selection picks it/,
  );
  assert.match(plain.fix!, /ip addr add 2001:db8::51\/128 dev eth0 nodad preferred_lft 0/);
  assert.match(plain.fix!, /without `-nodad`/);
  const tentative = checkVipAddresses6("eth0", ["2001:db8::52", "2001:db8::50"], ADDRS);
  assert.equal(tentative.verdict, "fail");
  assert.match(tentative.detail, /2001:db8::52 tentative/);
  assert.match(tentative.detail, /1 other\(s\) fine$/);
  const dup = checkVipAddresses6("eth0", ["2001:db8::53"], ADDRS);
  assert.match(dup.detail, /2001:db8::53 dadfailed \(another host on the LAN has it/);
  assert.match(dup.fix!, /dadfailed: find the other host/);
  // Held here is exact: a VIP not on the interface is not judged; no IPv6 VIP at all passes.
  assert.equal(checkVipAddresses6("eth0", ["2001:db8::5"], ADDRS).verdict, "pass");
  assert.equal(checkVipAddresses6("eth0", ["192.0.2.50"], ADDRS).detail, "no IPv6 VIP configured");
  const notHost = checkVipAddresses6("eth0", ["2001:db8::1"], ADDRS);
  assert.equal(notHost.verdict, "fail");
  assert.match(notHost.detail, /2001:db8::1\/64 is not a \/128/);
});

Deno.test("doctor ipv6: strict rpfilter rules are found in ip6tables (raw/mangle PREROUTING) and nft (fib . iif), loose and other-interface ones not", () => {
  assert.deepEqual(
    strictIp6tablesRpFilters(IP6TABLES, "eth0").map((r) => `${r.where}: ${r.rule}`),
    ["ip6tables -t raw PREROUTING: -A PREROUTING -m rpfilter --invert -j DROP"],
  );
  assert.equal(strictIp6tablesRpFilters(IP6TABLES, "eth9").length, 2);
  assert.deepEqual(
    strictNftRpFilters(NFT, "eth0").map((r) => `${r.where}: ${r.rule} ${r.firewalld}`),
    [
      "nft inet rpf_strict pre: fib saddr . iif oif missing drop false",
      "nft inet firewalld filter_PREROUTING: fib saddr . mark . iif oif missing drop true",
    ],
  );
  assert.equal(strictNftRpFilters(NFT, "eth9").length, 3);
  assert.equal(firewalldRpFilter(undefined), undefined);
  assert.equal(firewalldRpFilter("DefaultZone=public\n"), "yes");
  assert.equal(firewalldRpFilter("# c\nIPv6_rpfilter=loose\n"), "loose");
});

Deno.test("doctor ipv6: the reverse path of other nodes' pods: via the LAN interface passes, via an overlay does not", () => {
  const routes = parseRoutes6(ROUTES);
  assert.deepEqual(foreignPodRoutes(routes, PODS, "eth0").map((r) => `${r.dst} ${r.dev}`), [
    "fd00:10:244:3::/64 vx6",
  ]);
});

Deno.test("doctor ipv6: rp-filter-ipv6 fails where a strict filter meets an overlay route, with the fix per tool", () => {
  const base: RpFilter6Facts = {
    iface: "eth0",
    podCidrs: PODS,
    vips: ["192.0.2.50", "2001:db8::50"],
    ip6tablesSave: IP6TABLES,
    nftRuleset: NFT,
    firewalldConf: "IPv6_rpfilter=yes\n",
    routes6: ROUTES,
  };
  const bad = checkRpFilter6(base);
  assert.equal(bad.verdict, "fail");
  assert.match(bad.detail, /drops the pod traffic other nodes forward to this node's IPv6 VIPs/);
  assert.match(bad.detail, /route via vx6 \(fd00:10:244:3::\/64\)/);
  assert.match(bad.fix!, /IPv6_rpfilter=loose in \/etc\/firewalld\/firewalld\.conf/);
  assert.match(bad.fix!, /ip6tables -t raw -I PREROUTING -i eth0 -s fd00:10:244::\/48 -j ACCEPT/);
  assert.match(bad.fix!, /fib saddr oif missing drop/);
  // host-gw only (no overlay route): the reverse path is the LAN interface.
  const hostGw = JSON.stringify(JSON.parse(ROUTES).filter((r: { dev: string }) => r.dev !== "vx6"));
  assert.equal(checkRpFilter6({ ...base, routes6: hostGw }).verdict, "pass");
  // No IPv6 VIP: nothing is forwarded to one.
  assert.equal(checkRpFilter6({ ...base, vips: ["192.0.2.50"] }).verdict, "pass");
  // Routes unknown: a warning.
  assert.equal(checkRpFilter6({ ...base, routes6: undefined }).verdict, "warn");
  // Only loose filters: pass.
  const loose = checkRpFilter6({
    ...base,
    ip6tablesSave: IP6TABLES.split("\n").filter((l) => !/rpfilter --invert/.test(l)).join("\n"),
    nftRuleset: '{"nftables": []}',
    firewalldConf: "IPv6_rpfilter=loose\n",
  });
  assert.equal(loose.verdict, "pass", loose.detail);
  assert.match(loose.detail, /firewalld IPv6_rpfilter=loose/);
});

Deno.test("doctor ipv6: both checks run in diagnose()", () => {
  const facts: DoctorFacts = {
    config: { ...testConfig(), podCidrs: PODS },
    missingTools: [],
    missingOptional: [],
    addresses: ["192.0.2.11"],
    vips: [{ ip: "2001:db8::51", routeId: 7 }],
    rejected: [],
    iptablesSave: {},
    sysctls: {},
    addresses6: ADDRS,
    ip6tablesSave: IP6TABLES,
    ipRoutes6: ROUTES,
  };
  const reports = Object.fromEntries(diagnose(facts).map((r) => [r.id, r.verdict]));
  assert.equal(reports["vip-address-ipv6"], "fail");
  assert.equal(reports["rp-filter-ipv6"], "fail");
});
