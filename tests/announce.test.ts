import assert from "node:assert/strict";
import { Agent } from "../cmd/agent.ts";
import { createLogger } from "../cmd/log.ts";
import {
  ANNOUNCE_SCHEDULE_MS,
  neighbourActions,
  type RoleChange,
  roleChanges,
} from "../core/announce.ts";
import { forwardRule, snatRule, type VipRole } from "../core/desired.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { raw, testConfig } from "./helpers.ts";

const role = (ip: string, r: VipRole["role"], routeId = 5): VipRole => ({
  ip,
  routeId,
  mark: routeId,
  role: r,
});

Deno.test("announce: role changes are read from our live SNAT chain, by exact VIP", () => {
  const live = [
    snatRule("eth0", role("192.0.2.50", "holder"), 0xff),
    forwardRule("eth0", role("192.0.2.51", "forwarder", 6), 0xff),
    forwardRule("eth0", role("192.0.2.52", "forwarder", 7), 0xff),
  ];
  assert.deepEqual(
    roleChanges(live, [
      role("192.0.2.50", "forwarder"),
      role("192.0.2.51", "holder", 6),
      role("192.0.2.52", "forwarder", 7),
      role("192.0.2.5", "holder", 8),
    ], 0xff),
    [
      { vip: "192.0.2.50", from: "holder", to: "forwarder" },
      { vip: "192.0.2.51", from: "forwarder", to: "holder" },
      { vip: "192.0.2.5", from: "none", to: "holder" },
    ],
  );
});

Deno.test("announce: every changed VIP's own entry is refreshed; takeovers announced only when asked", () => {
  const changes: RoleChange[] = [
    { vip: "192.0.2.50", from: "holder", to: "forwarder" },
    { vip: "192.0.2.51", from: "forwarder", to: "holder" },
  ];
  assert.deepEqual(neighbourActions(changes, true), {
    refresh: ["192.0.2.50", "192.0.2.51"],
    announce: ["192.0.2.51"],
  });
  assert.deepEqual(neighbourActions(changes, false).announce, [], "keepalived announces its own");
  assert.ok(ANNOUNCE_SCHEDULE_MS.length >= 3, "repeated a few times");
  assert.ok(ANNOUNCE_SCHEDULE_MS.at(-1)! >= 1000, "over seconds, past a neighbour's locktime");
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
