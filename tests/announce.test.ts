import assert from "node:assert/strict";
import { Agent } from "../cmd/agent.ts";
import { createLogger } from "../cmd/log.ts";
import {
  ANNOUNCE_SCHEDULE_MS,
  ANNOUNCEMENTS_PER_ROUND,
  gratuitousArpArgv,
  neighbourActions,
  type RoleChange,
  roleChanges,
  unsolicitedNaArgv,
} from "../core/announce.ts";
import { forwardRule, snatRule, type VipRole } from "../core/desired.ts";
import { iptablesPlanner } from "../core/datapath_iptables.ts";
import { intentOf } from "../core/intent.ts";
import { NO_TABLE } from "../core/iptables.ts";
import { nftAfterApply, NO_NFTABLES } from "../core/nftables.ts";
import type { LiveState } from "../core/plan.ts";
import { validateSnapshot } from "../core/snapshot.ts";
import type { Host } from "../cmd/system.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { raw, testConfig } from "./helpers.ts";

const role = (ip: string, r: VipRole["role"], routeId = 5): VipRole => ({
  ip,
  routeId,
  mark: routeId,
  role: r,
});

Deno.test("announce: role changes are the roles in force by mark (iptables: our SNAT chain's rules)", () => {
  const rules = [
    snatRule("eth0", role("192.0.2.50", "holder"), 0xff),
    forwardRule("eth0", role("192.0.2.51", "forwarder", 6), 0xff),
    forwardRule("eth0", role("192.0.2.52", "forwarder", 7), 0xff),
  ];
  const live = {
    iptables: { mangle: NO_TABLE, nat: { ...NO_TABLE, rules } },
  } as unknown as LiveState;
  assert.deepEqual(
    roleChanges(iptablesPlanner.rolesInForce(live, 0xff), [
      role("192.0.2.50", "forwarder"),
      role("192.0.2.51", "holder", 6),
      role("192.0.2.52", "forwarder", 7),
      role("192.0.2.5", "holder", 8),
    ]),
    [
      { vip: "192.0.2.50", from: "holder", to: "forwarder" },
      { vip: "192.0.2.51", from: "forwarder", to: "holder" },
      { vip: "192.0.2.5", from: "none", to: "holder" },
    ],
  );
});

Deno.test("announce: on nftables a pass that only adds a pod reports no role change (the roles map is in force)", async () => {
  // The nftables objects are the table a transaction leaves (nftAfterApply): the fake kernel
  // has no native nftables, the rest of the node is its.
  const kernel = new FakeKernel();
  kernel.interfaces.get("eth0")!.push("192.0.2.50");
  const config = testConfig({ backend: "nftables" });
  let inputs = raw({ "192.0.2.50": "5", "192.0.2.51": "6" }, { "10.244.1.5": "192.0.2.50" });
  let table = NO_NFTABLES;
  const real = kernel.host();
  const host: Host = {
    readLive: async (c, o) => ({ ...await real.readLive(c, o), nft: table }),
    apply: (tx) => {
      table = nftAfterApply(
        intentOf(validateSnapshot(inputs, config).snapshot, config, ["192.0.2.50"]),
      );
      return real.apply({ steps: tx.steps.filter((s) => s.op.tool !== "nft") });
    },
    watchAddresses: real.watchAddresses,
  };
  const seen: string[] = [];
  const agent = new Agent(host, createLogger("text", () => {}), {
    config,
    readInputs: () => Promise.resolve(inputs),
    dryRun: false,
    neighbours: {
      after(changes) {
        for (const c of changes) seen.push(`${c.vip} ${c.from}→${c.to}`);
        return Promise.resolve();
      },
    },
  });
  assert.ok((await agent.pass("start")).ok);
  assert.deepEqual(seen, ["192.0.2.50 none→holder", "192.0.2.51 none→forwarder"]);
  inputs = raw({ "192.0.2.50": "5", "192.0.2.51": "6" }, {
    "10.244.1.5": "192.0.2.50",
    "10.244.1.6": "192.0.2.51",
  });
  const added = await agent.pass("inputs changed");
  assert.ok(added.ok && added.lines > 0, "the pod is written");
  assert.deepEqual(seen.length, 2, `no VIP announced again: ${seen.slice(2)}`);
});

Deno.test("announce: every changed VIP's own entry is refreshed; takeovers announced only when asked", () => {
  const changes: RoleChange[] = [
    { vip: "192.0.2.50", from: "holder", to: "forwarder" },
    { vip: "192.0.2.51", from: "forwarder", to: "holder" },
  ];
  assert.deepEqual(neighbourActions(changes, true), {
    refresh: ["192.0.2.50", "192.0.2.51"],
    announce: [{ vip: "192.0.2.51", kind: "arp" }],
  });
  assert.deepEqual(neighbourActions(changes, false).announce, [], "keepalived announces its own");
  assert.ok(ANNOUNCE_SCHEDULE_MS.length >= 3, "repeated a few times");
  assert.ok(ANNOUNCE_SCHEDULE_MS.at(-1)! >= 1000, "over seconds, past a neighbour's locktime");
});

Deno.test("announce: an IPv6 VIP taken is announced by unsolicited neighbour advertisement, never by ARP", () => {
  const changes: RoleChange[] = [
    { vip: "2001:db8::50", from: "forwarder", to: "holder" },
    { vip: "192.0.2.50", from: "none", to: "holder" },
    { vip: "2001:db8::51", from: "holder", to: "forwarder" },
  ];
  assert.deepEqual(neighbourActions(changes, true), {
    refresh: ["2001:db8::50", "192.0.2.50", "2001:db8::51"],
    announce: [{ vip: "2001:db8::50", kind: "na" }, { vip: "192.0.2.50", kind: "arp" }],
  });
  assert.deepEqual(neighbourActions(changes, false).announce, [], "keepalived sends its own NAs");
});

Deno.test("announce: a round's packets: arping of either flavour, na6 from the VIP to all nodes with override and target LLA", () => {
  assert.equal(ANNOUNCEMENTS_PER_ROUND, 2);
  assert.deepEqual(gratuitousArpArgv("192.0.2.50", "eth0", "habets"), [
    ..."arping -q -U -c 2 -W 0.05 -i eth0 -S 192.0.2.50 192.0.2.50".split(" "),
  ]);
  assert.deepEqual(gratuitousArpArgv("192.0.2.50", "eth0", "iputils"), [
    ..."arping -q -U -c 2 -I eth0 -s 192.0.2.50 192.0.2.50".split(" "),
  ]);
  assert.deepEqual(unsolicitedNaArgv("2001:db8::50", "eth0", false), [
    ..."na6 -i eth0 -s 2001:db8::50 -d ff02::1 -t 2001:db8::50 -o -e".split(" "),
  ]);
  assert.deepEqual(unsolicitedNaArgv("2001:db8::50", "bond0", true), [
    ..."na6 -i bond0 -s 2001:db8::50 -d ff02::1 -t 2001:db8::50 -o -e -r".split(" "),
  ]);
});

Deno.test("announce: the agent reports each applied role change once, after the rules are in place", async () => {
  const kernel = new FakeKernel();
  const seen: string[] = [];
  const agent = new Agent(kernel.host(), createLogger("text", () => {}), {
    config: testConfig(),
    readInputs: () => Promise.resolve(raw({ "192.0.2.50": "5" }, { "10.244.1.5": "192.0.2.50" })),
    dryRun: false,
    neighbours: {
      after(changes) {
        const snat = kernel.iptablesSave("nat").includes("kube-egress 192.0.2.50 holder");
        for (const c of changes) seen.push(`${c.vip} ${c.from}→${c.to} snat=${snat}`);
        return Promise.resolve();
      },
    },
  });
  await agent.pass("start");
  await agent.pass("resync");
  kernel.interfaces.get("eth0")!.push("192.0.2.50");
  await agent.pass("address change");
  await agent.pass("resync");
  kernel.interfaces.set("eth0", kernel.interfaces.get("eth0")!.filter((a) => a !== "192.0.2.50"));
  await agent.pass("address change");
  assert.deepEqual(seen, [
    "192.0.2.50 none→forwarder snat=false",
    "192.0.2.50 forwarder→holder snat=true",
    "192.0.2.50 holder→forwarder snat=false",
  ]);
});
