import assert from "node:assert/strict";
import {
  deleteRoutes,
  diffRoutes,
  onlyGoneDeletions,
  parseRoutesBatch,
  readRoutesBatch,
} from "../core/iproute.ts";

// Output of `ip -json -N -batch -` on readRoutesBatch("eth0", 233), as printed by iproute2 6.1.
const OUTPUT = [
  '[{"ifindex":3,"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.11","prefixlen":24},{"family":"inet","local":"192.0.2.222","prefixlen":32},{"family":"inet6","local":"fe80::1","prefixlen":64}]}]',
  '[{"priority":0,"src":"all","table":"255"},{"priority":1000,"src":"all","fwmark":"0x6","fwmask":"0xff","table":"6","protocol":"233"},{"priority":1000,"src":"all","fwmark":"0x7","fwmask":"0xff","table":"7","protocol":"233"},{"priority":900,"src":"all","fwmark":"0x6","fwmask":"0xff","table":"6","protocol":"4"},{"priority":32766,"src":"all","table":"254"}]',
  '[{"dst":"default","gateway":"192.0.2.51","dev":"eth0","table":"6","flags":["onlink"]},{"dst":"default","gateway":"192.0.2.52","dev":"eth0","table":"7","flags":["onlink"]},{"dst":"198.51.100.0/24","dev":"eth0","table":"9","flags":[]}]',
].join("\n");

Deno.test("iproute: batch input reads addresses, rules and our routes at once", () => {
  assert.equal(
    readRoutesBatch("eth0", 233),
    "address show dev eth0\nrule show\nroute show table all proto 233\n",
  );
  assert.equal(
    readRoutesBatch("eth0", 233, ["10.244.0.0/16", "10.32.0.0/12"]),
    "address show dev eth0\nrule show\nroute show table all proto 233\n" +
      "route show table main root 10.244.0.0/16\nroute show table main root 10.32.0.0/12\n",
  );
});

Deno.test("iproute: main-table routes into the pod ranges, one per next hop, no blackholes", () => {
  // `ip -json -N route show table main root <cidr>` for two pod ranges (iproute2 6.1).
  const pods = [
    '[{"dst":"10.244.2.0/24","dev":"cni0","protocol":"2","scope":"253","prefsrc":"10.244.2.1","flags":[]},' +
    '{"dst":"10.244.1.0/24","gateway":"10.244.1.0","dev":"vxlan0","flags":["onlink"]},' +
    '{"type":"blackhole","dst":"10.244.9.0/26","protocol":"12","flags":[]},' +
    '{"dst":"10.244.3.0/24","flags":[],"nexthops":[{"gateway":"192.0.2.13","dev":"eth0","weight":1,"flags":[]},{"gateway":"192.0.2.23","dev":"eth1","weight":1,"flags":[]}]}]',
    "[]",
  ];
  const live = parseRoutesBatch([OUTPUT, ...pods].join("\n"), 233);
  assert.deepEqual(live.podRoutes, [
    { dst: "10.244.2.0/24", dev: "cni0" },
    { dst: "10.244.1.0/24", dev: "vxlan0", gateway: "10.244.1.0" },
    { dst: "10.244.3.0/24", dev: "eth0", gateway: "192.0.2.13" },
    { dst: "10.244.3.0/24", dev: "eth1", gateway: "192.0.2.23" },
  ]);
  assert.deepEqual(parseRoutesBatch(OUTPUT, 233).podRoutes, []);
});

Deno.test("iproute: parses IPv4 addresses, only our rules, and our routes", () => {
  const live = parseRoutesBatch(OUTPUT, 233);
  assert.deepEqual(live.addresses, ["192.0.2.11", "192.0.2.222"]);
  assert.deepEqual(live.rules, [
    { priority: 1000, mark: 6, mask: 0xff, table: 6 },
    { priority: 1000, mark: 7, mask: 0xff, table: 7 },
  ]);
  assert.equal(live.routes.length, 3);
});

Deno.test("iproute: adds before, removals after; a changed gateway is replaced in place", () => {
  const live = parseRoutesBatch(OUTPUT, 233);
  const changes = diffRoutes(live, {
    rules: [{ priority: 1000, mark: 6, mask: 0xff, table: 6 }, {
      priority: 1000,
      mark: 8,
      mask: 0xff,
      table: 8,
    }],
    routes: [{ table: 6, gateway: "192.0.2.61", dev: "eth0" }, {
      table: 8,
      gateway: "192.0.2.53",
      dev: "eth0",
    }],
  });
  assert.deepEqual(changes.add, [
    { verb: "replace", route: { table: 6, gateway: "192.0.2.61", dev: "eth0" } },
    { verb: "add", route: { table: 8, gateway: "192.0.2.53", dev: "eth0" } },
    { verb: "add", rule: { priority: 1000, mark: 8, mask: 0xff, table: 8 } },
  ]);
  assert.deepEqual(changes.remove, [
    { verb: "del", rule: { priority: 1000, mark: 7, mask: 0xff, table: 7 } },
    { verb: "del", route: { table: 7, gateway: "192.0.2.52", dev: "eth0" } },
    { verb: "del", stale: { dst: "198.51.100.0/24", table: 9 } },
  ]);
});

Deno.test("iproute: equal state gives no lines; delete removes all of ours and nothing else", () => {
  const live = parseRoutesBatch(OUTPUT, 233);
  const same = diffRoutes(live, {
    rules: live.rules,
    routes: [{ table: 6, gateway: "192.0.2.51", dev: "eth0" }, {
      table: 7,
      gateway: "192.0.2.52",
      dev: "eth0",
    }],
  });
  assert.deepEqual(same.add, []);
  assert.deepEqual(same.remove, [{ verb: "del", stale: { dst: "198.51.100.0/24", table: 9 } }]);
  const del = deleteRoutes(live);
  assert.equal(del.length, 5);
  assert.ok(del.every((c) => c.verb === "del"));
});

Deno.test("iproute: a batch that failed only at deletions of objects already gone is done", () => {
  const rule = { verb: "del", rule: { priority: 100, mark: 5, mask: 0xff, table: 5 } } as const;
  const route = {
    verb: "del",
    route: { table: 5, gateway: "2001:db8:1::50", dev: "eth0" },
  } as const;
  // One line each in the batch (core/render.ts): lines 1-2 the rule, 3-4 the route.
  const lines = [rule, rule, route, route];
  // As iproute2 6.1 printed it for these lines in a namespace.
  const stderr = "RTNETLINK answers: No such file or directory\nCommand failed -:2\n" +
    "RTNETLINK answers: No such process\nCommand failed -:4\n";
  assert.equal(onlyGoneDeletions(lines, stderr), true);
  assert.equal(
    onlyGoneDeletions(lines, "RTNETLINK answers: No such process\nCommand failed -:2\n"),
    false,
    "a rule del answers ENOENT, not ESRCH",
  );
  const add = [{ verb: "add", route: { table: 5, gateway: "192.0.2.50", dev: "eth0" } } as const];
  assert.equal(
    onlyGoneDeletions(add, "RTNETLINK answers: No such process\nCommand failed -:1\n"),
    false,
    "an add is never done by failing",
  );
  assert.equal(
    onlyGoneDeletions(lines, "Error: Nexthop has invalid gateway.\nCommand failed -:3\n"),
    false,
  );
  assert.equal(
    onlyGoneDeletions(lines, "RTNETLINK answers: No such process\n"),
    false,
    "no line named",
  );
  assert.equal(onlyGoneDeletions(lines, ""), false);
});
