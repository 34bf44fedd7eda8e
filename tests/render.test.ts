import assert from "node:assert/strict";
import { conntrackArgs, conntrackdArgs, render } from "../core/render.ts";
import { deleteGuard, planGuard } from "../core/guard.ts";
import { guardRenderScenarios } from "./guard_render_scenarios.ts";
import { planRenderScenarios } from "./plan_render_scenarios.ts";

const FIXTURES = new URL("./fixtures/plan_render/", import.meta.url);

Deno.test("render: plan output of typed operations is byte for byte what the text-carrying steps printed (both backends, both families, delete)", () => {
  const out = planRenderScenarios();
  const names = [...Deno.readDirSync(FIXTURES)].map((e) => e.name.replace(/\.txt$/, "")).sort();
  assert.deepEqual(Object.keys(out).sort(), names);
  for (const name of names) {
    assert.equal(out[name], Deno.readTextFileSync(new URL(`${name}.txt`, FIXTURES)), name);
  }
});

Deno.test("render: the guard table's nft payloads are byte for byte what planGuard wrote as text", () => {
  const dir = new URL("./fixtures/guard_render/", import.meta.url);
  const out = guardRenderScenarios(
    (intent, live) => [...render(planGuard(intent, live)).lines],
    () => [...render(deleteGuard()).lines],
  );
  const names = [...Deno.readDirSync(dir)].map((e) => e.name.replace(/\.txt$/, "")).sort();
  assert.deepEqual(Object.keys(out).sort(), names);
  for (const name of names) {
    assert.equal(out[name], Deno.readTextFileSync(new URL(`${name}.txt`, dir)), name);
  }
});

Deno.test("render: each tool's command, and one line per change", () => {
  const rule = { priority: 1000, mark: 5, mask: 0xff, table: 5 };
  assert.deepEqual(
    render({
      tool: "ip",
      family: "ipv6",
      protocol: 233,
      changes: [
        { verb: "replace", route: { table: 5, gateway: "2001:db8::50", dev: "eth0" } },
        { verb: "add", rule },
        { verb: "del", stale: { dst: "198.51.100.0/24", table: 9 } },
      ],
    }),
    {
      shown: "ip -6 -force -batch -",
      command: ["ip", "-6", "-force", "-batch", "-"],
      lines: [
        "route replace default via 2001:db8::50 dev eth0 onlink table 5 proto 233",
        "rule add pref 1000 fwmark 0x5/0xff lookup 5 proto 233",
        "route del 198.51.100.0/24 table 9 proto 233",
      ],
    },
  );
  assert.deepEqual(
    render({ tool: "iptables", family: "ipv6", tables: [] }).command,
    ["ip6tables-restore", "--noflush", "--wait", "5"],
  );
  assert.equal(
    render({ tool: "iptables", family: "ipv4", tables: [] }).shown,
    "iptables-restore --noflush",
  );
  assert.deepEqual(
    render({
      tool: "ipset",
      family: "ipv4",
      changes: [
        { verb: "create", set: "s-new", options: "hash:ip family inet" },
        { verb: "flush", set: "s-new" },
        { verb: "add", set: "s-new", entry: "10.244.1.5 skbmark 0x5/0xff" },
        { verb: "swap", set: "s-new", with: "s" },
        { verb: "destroy", set: "s-new" },
        { verb: "del", set: "s", entry: "10.244.1.6" },
      ],
    }).lines,
    [
      "create s-new hash:ip family inet",
      "flush s-new",
      "add s-new 10.244.1.5 skbmark 0x5/0xff",
      "swap s-new s",
      "destroy s-new",
      "del s 10.244.1.6",
    ],
  );
  assert.deepEqual(
    render({ tool: "sysctl", writes: [{ key: "net.ipv4.conf.eth0.rp_filter", value: 2 }] }),
    { shown: "sysctl -w", lines: ["net.ipv4.conf.eth0.rp_filter=2"] },
  );
});

Deno.test("render: conntrack flushes by mark (a source range optional) or by pod and masquerade address; conntrackd commits", () => {
  assert.deepEqual(
    conntrackArgs({ why: "role", family: "ipv4", mark: 0x500, mask: 0xff00 }),
    ["-D", "-f", "ipv4", "--mark", "0x500/0xff00"],
  );
  assert.deepEqual(
    conntrackArgs({ why: "role", family: "ipv6", mark: 5, mask: 0xff, source: "fd00::/64" }),
    ["-D", "-f", "ipv6", "--mark", "0x5/0xff", "-s", "fd00::/64"],
  );
  assert.deepEqual(
    conntrackArgs({ why: "mapped", family: "ipv4", pod: "10.244.1.9", srcNat: "192.0.2.11" }),
    ["-D", "-f", "ipv4", "-s", "10.244.1.9", "--src-nat", "192.0.2.11"],
  );
  assert.deepEqual(conntrackdArgs({ config: "/run/ke/conntrackd-mcast.conf" }), [
    "-C",
    "/run/ke/conntrackd-mcast.conf",
    "-c",
  ]);
});
