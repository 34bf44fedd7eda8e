import assert from "node:assert/strict";
import { conntrackFlushes, owedFlushes, withOwedFlushes } from "../core/conntrack.ts";
import { desiredState, forwardRule, snatRule } from "../core/desired.ts";
import { iptablesPlanner } from "../core/datapath_iptables.ts";
import type { LiveState } from "../core/plan.ts";
import { snapshot, testConfig } from "./helpers.ts";

const config = testConfig({ markMask: "0xff00" });
/** The roles the iptables backend reads from these nat-chain rules. */
const rolesOf = (rules: readonly string[]) =>
  iptablesPlanner.rolesInForce(
    { iptables: { nat: { rules } } } as unknown as LiveState,
    config.markMask,
  );
const snap = snapshot({ "192.0.2.50": 5, "192.0.2.51": 6, "192.0.2.52": 7 }, {});

Deno.test("conntrack: only VIPs whose role flips are flushed, by their mark under our mask", () => {
  const before = desiredState(snap, config, ["192.0.2.50"]);
  const after = desiredState(snap, config, ["192.0.2.51"]);
  const flushes = conntrackFlushes(rolesOf(before.chains.nat), after.roles, config.markMask);
  assert.deepEqual(flushes, ["-D -f ipv4 --mark 0x500/0xff00", "-D -f ipv4 --mark 0x600/0xff00"]);
  assert.deepEqual(conntrackFlushes(rolesOf(after.chains.nat), after.roles, config.markMask), []);
});

Deno.test("conntrack: rules of another mask or foreign rules never cause a flush", () => {
  const roles = desiredState(snap, config, ["192.0.2.50"]).roles;
  const holder = roles.find((r) => r.ip === "192.0.2.50")!;
  const other = { ...holder, role: "forwarder" as const };
  const live = [
    forwardRule("eth0", holder, 0xff), // same VIP, written under another mask
    "-A KUBE-EGRESS-SNAT -o eth0 -j MASQUERADE",
  ];
  assert.deepEqual(conntrackFlushes(rolesOf(live), roles, config.markMask), []);
  assert.deepEqual(
    conntrackFlushes(rolesOf([snatRule("eth0", holder, 0xff00)]), [other], config.markMask),
    ["-D -f ipv4 --mark 0x500/0xff00"],
  );
});

Deno.test("conntrack: flushes are owed after a failure between the role change and the flush, and only then", () => {
  const flush = "-D -f ipv4 --mark 0x500/0xff00";
  const tx = {
    steps: [
      { tool: "ip" as const, purpose: "routes", lines: ["route add x"] },
      { tool: "iptables" as const, purpose: "chains", lines: ["*nat", "COMMIT"] },
      { tool: "conntrack" as const, purpose: "flush", lines: [flush] },
      { tool: "ip" as const, purpose: "remove", lines: ["rule del y"] },
    ],
  };
  assert.deepEqual(owedFlushes(tx, 0, []), [], "failed before the roles changed");
  assert.deepEqual(owedFlushes(tx, 1, []), [], "iptables-restore is all or nothing");
  assert.deepEqual(owedFlushes(tx, 2, []), [flush], "the flush itself failed");
  assert.deepEqual(owedFlushes(tx, 3, []), [], "flushed; a later step failed");
  assert.deepEqual(owedFlushes(tx, undefined, []), [flush], "failed somewhere: owe it");
  assert.deepEqual(owedFlushes(tx, 0, [flush]), [flush], "owed before: still owed");
  // The next pass's transaction carries them, once.
  const next = withOwedFlushes({ steps: [] }, [flush]);
  assert.deepEqual(next.steps.map((s) => [s.tool, s.lines]), [["conntrack", [flush]]]);
  assert.deepEqual(withOwedFlushes(tx, [flush]).steps[2].lines, [flush]);
  assert.equal(withOwedFlushes(tx, []), tx);
});
