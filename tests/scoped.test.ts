/**
 * Destination-scoped pods (EgressPolicy destinationCIDRs/excludedCIDRs): one
 * class per distinct restriction, its own sets and one mangle rule; the
 * unrestricted pods set is untouched. Re-planning after apply is empty (also
 * through the agent's quick set check), stale class sets go once no rule uses
 * them, and delete gives back the baseline.
 */
import fc from "fast-check";
import assert from "node:assert/strict";
import { desiredState, renderIptables } from "../core/desired.ts";
import { confirmSets, parseIpsetTerse, setsAfterApply } from "../core/ipset.ts";
import { isEmpty, planDelete, planPass } from "../core/plan.ts";
import {
  scopedMarkInvalidRule,
  scopedMarkReplyRule,
  scopedRule,
  scopedSetNames,
} from "../core/scoped.ts";
import { hex } from "../core/marks.ts";
import { nodeStatus } from "../core/status.ts";
import { type RawSnapshot, validateSnapshot } from "../core/snapshot.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { testConfig } from "./helpers.ts";

const config = testConfig();
const VIP = "192.0.2.50";

function raw(
  pods: { podIp: string; destinations?: string[]; excluded?: string[]; vip?: string }[],
): RawSnapshot {
  return {
    vips: [{ origin: "v1", ip: VIP, routeId: 5 }, { origin: "v2", ip: "192.0.2.51", routeId: 6 }],
    pods: pods.map((p, i) => ({ origin: `p${i}`, vip: VIP, ...p })),
    problems: [],
  };
}

Deno.test("scoped: restricted pods get a class with its sets and rule; others stay in the pods set", () => {
  const { snapshot, problems } = validateSnapshot(
    raw([
      { podIp: "10.244.1.1" },
      { podIp: "10.244.1.2", destinations: ["203.0.113.0/24", "198.51.100.0/24"] },
      {
        podIp: "10.244.1.3",
        destinations: ["198.51.100.0/24", "203.0.113.0/24"],
        vip: "192.0.2.51",
      },
      { podIp: "10.244.1.4", excluded: ["198.51.100.128/25"] },
    ]),
    config,
  );
  assert.deepEqual(problems, []);
  const desired = desiredState(snapshot, config, []);
  assert.deepEqual([...desired.podMarks.keys()], ["10.244.1.1"]);
  assert.equal(desired.scoped.length, 2, "same ranges in any order: one class");
  const both = desired.scoped.find((c) => c.destinations)!;
  assert.deepEqual([...both.podMarks], [["10.244.1.2", 5], ["10.244.1.3", 6]]);
  const names = scopedSetNames(both.id);
  assert.ok(names.pods.length <= 31, "ipset names are at most 31 characters");
  assert.deepEqual([...desired.scopedSets.get(names.destinations)!.entries.keys()], [
    "198.51.100.0/24",
    "203.0.113.0/24",
  ]);
  assert.equal(desired.scopedSets.has(names.excluded), false);
  const rule = scopedRule(both);
  assert.match(rule, new RegExp(`--match-set ${names.destinations} dst -m conntrack`));
  assert.match(rule, new RegExp(`--map-set ${names.pods} src --map-mark$`));
  const excl = desired.scoped.find((c) => c.excluded)!;
  assert.match(
    scopedRule(excl),
    new RegExp(`-m set ! --match-set ${scopedSetNames(excl.id).excluded} dst`),
  );
  assert.equal(
    desired.chains.mangle.length,
    15,
    "a drop per VIP of what it would translate once gone, the picked-up tag, the pods rules (ORIGINAL, INVALID, REPLY of a picked-up connection), three rules per class, the save-mark rule, the drops of what no VIP marked",
  );
  assert.equal(
    scopedMarkInvalidRule(excl),
    scopedRule(excl).replace("--ctdir ORIGINAL", "--ctstate INVALID"),
    "a class marks INVALID packets to exactly the destinations it steers",
  );
  assert.equal(
    scopedMarkReplyRule(excl, config.markMask),
    scopedRule(excl).replace(
      "--ctdir ORIGINAL",
      `--ctdir REPLY -m connmark ! --mark 0x0/${hex(config.markMask)}`,
    ),
    "and its pods' packets of a connection picked up from the server's side",
  );
});

Deno.test("scoped: a pod listed with two different restrictions is ambiguous and rejected", () => {
  const { snapshot, problems } = validateSnapshot(
    raw([{ podIp: "10.244.1.2", destinations: ["203.0.113.0/24"] }, { podIp: "10.244.1.2" }]),
    config,
  );
  assert.deepEqual(snapshot.pods, []);
  assert.match(problems[0].reason, /different destination ranges/);
});

const cidr = fc.constantFrom(
  "203.0.113.0/24",
  "198.51.100.0/24",
  "198.51.100.128/25",
  "192.0.2.0/24",
);
const podsArb = fc.array(
  fc.record({
    podIp: fc.integer({ min: 2, max: 12 }).map((n) => `10.244.1.${n}`),
    destinations: fc.option(fc.array(cidr, { maxLength: 2 }), { nil: undefined }),
    excluded: fc.option(fc.array(cidr, { maxLength: 2 }), { nil: undefined }),
    vip: fc.constantFrom(VIP, "192.0.2.51"),
  }),
  { maxLength: 10 },
).map((pods) =>
  pods.map((p) => Object.fromEntries(Object.entries(p).filter(([, v]) => v !== undefined))) as {
    podIp: string;
  }[]
);

Deno.test("property: scoped classes converge (full and quick reads), leave no stale set, delete is the baseline", () => {
  fc.assert(
    fc.property(fc.array(podsArb, { minLength: 1, maxLength: 5 }), fc.boolean(), (passes, hold) => {
      const kernel = new FakeKernel({
        foreignNat: ["-s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE"],
      });
      if (hold) kernel.interfaces.set("eth0", ["192.0.2.11", VIP]);
      const baseline = kernel.dump();
      for (const pods of [...passes, []]) {
        const { snapshot } = validateSnapshot(raw(pods), config);
        const { desired, transaction } = planPass(snapshot, config, kernel.live(config));
        kernel.apply(transaction);
        assert.equal(
          isEmpty(planPass(snapshot, config, kernel.live(config)).transaction),
          true,
          "full read",
        );
        const known = setsAfterApply(
          kernel.live(config).sets,
          desired.podMarks,
          config.markMask,
          desired.noSteer,
          renderIptables(desired).scopedSets,
        );
        const confirmed = confirmSets(known, parseIpsetTerse(kernel.ipsetListTerse()));
        assert.ok(confirmed, "the agent's copy of the sets is confirmed by size");
        assert.equal(
          isEmpty(
            planPass(snapshot, config, { ...kernel.live(config), sets: confirmed }).transaction,
          ),
          true,
          "quick read",
        );
        const scopedNow = [...kernel.sets.keys()].filter((n) => n.startsWith("kube-egress-s"))
          .sort();
        assert.deepEqual(
          scopedNow,
          [...renderIptables(desired).scopedSets.keys()].sort(),
          "exactly the wanted class sets",
        );
      }
      kernel.apply(planDelete(kernel.live(config), config));
      assert.equal(kernel.dump(), baseline);
    }),
    { numRuns: 150 },
  );
});

Deno.test("scoped: delete right after a scoped apply removes the class sets and rules too", () => {
  const kernel = new FakeKernel();
  const baseline = kernel.dump();
  const { snapshot } = validateSnapshot(
    raw([{ podIp: "10.244.1.2", destinations: ["203.0.113.0/24"], excluded: ["203.0.113.7/32"] }]),
    config,
  );
  kernel.apply(planPass(snapshot, config, kernel.live(config)).transaction);
  assert.equal([...kernel.sets.keys()].filter((n) => n.startsWith("kube-egress-s")).length, 3);
  kernel.apply(planDelete(kernel.live(config), config));
  assert.equal(kernel.dump(), baseline);
});

Deno.test("scoped: status lists destination-scoped pods with their VIP and their own counters", () => {
  const kernel = new FakeKernel();
  const { snapshot } = validateSnapshot(
    raw([{ podIp: "10.244.1.1" }, { podIp: "10.244.1.2", destinations: ["203.0.113.0/24"] }]),
    config,
  );
  kernel.apply(planPass(snapshot, config, kernel.live(config)).transaction);
  kernel.setCounters.set("10.244.1.1", { packets: 3, bytes: 300 });
  kernel.setCounters.set("10.244.1.2", { packets: 5, bytes: 700 });
  const live = kernel.live(config, true);
  const status = nodeStatus(live, live.raw, "eth0");
  assert.deepEqual(status.mappings.map((m) => [m.podIp, m.vip, m.packets, m.bytes]), [
    ["10.244.1.1", VIP, 3, 300],
    ["10.244.1.2", VIP, 5, 700],
  ]);
  const vip = status.vips.find((v) => v.vip === VIP)!;
  assert.deepEqual([vip.pods, vip.packets, vip.bytes], [2, 8, 1000]);
  // Counters never make a pass rewrite the sets.
  assert.deepEqual(planPass(snapshot, config, live).transaction.steps, []);
});
