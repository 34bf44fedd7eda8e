/**
 * Properties of planning over random inputs (fast-check): deterministic and
 * order independent; re-planning after apply is empty; delete after apply is
 * the baseline; any sequence of inputs and VIP moves converges.
 */
import fc from "fast-check";
import assert from "node:assert/strict";
import { desiredState } from "../core/desired.ts";
import { isEmpty, planDelete, planPass } from "../core/plan.ts";
import { type RawSnapshot, validateSnapshot } from "../core/snapshot.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { testConfig } from "./helpers.ts";

const config = testConfig();
const vipIp = fc.integer({ min: 40, max: 60 }).map((n) => `192.0.2.${n}`);
// Mostly valid pod IPs, some outside the pod range, some garbage.
const podIp = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 2, max: 40 })).map((
      [a, b],
    ) => `10.244.${a}.${b}`),
  },
  { weight: 1, arbitrary: fc.constantFrom("10.1.2.3", "10.244.1", "x") },
);
const routeIdish = fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1, max: 12 }) }, {
  weight: 1,
  arbitrary: fc.constantFrom(0, 300, "7", "x"),
});

const rawSnapshot: fc.Arbitrary<RawSnapshot> = fc.record({
  vips: fc.array(fc.record({ ip: vipIp, routeId: routeIdish }), { maxLength: 8 }),
  pods: fc.array(fc.record({ podIp, vip: vipIp }), { maxLength: 30 }),
}).map(({ vips, pods }) => ({
  vips: vips.map((v, i) => ({ origin: `vips/${i}`, ...v })),
  pods: pods.map((p, i) => ({ origin: `pods/${i}`, ...p })),
  problems: [],
}));
const held = fc.subarray(["192.0.2.40", "192.0.2.45", "192.0.2.50", "192.0.2.55", "192.0.2.60"]);

Deno.test("property: planning is deterministic and independent of input order", () => {
  fc.assert(
    fc.property(rawSnapshot, held, fc.integer(), (raw, addresses, seed) => {
      const shuffle = <T>(list: readonly T[]) => {
        const copy = [...list];
        let s = seed;
        for (let i = copy.length - 1; i > 0; i--) {
          s = (s * 1103515245 + 12345) & 0x7fffffff;
          const j = s % (i + 1);
          [copy[i], copy[j]] = [copy[j], copy[i]];
        }
        return copy;
      };
      const a = validateSnapshot(raw, config);
      const b = validateSnapshot(
        { ...raw, vips: shuffle(raw.vips), pods: shuffle(raw.pods) },
        config,
      );
      assert.deepEqual(a.snapshot, b.snapshot);
      assert.equal(a.problems.length, b.problems.length);
      const kernel = new FakeKernel();
      const live = kernel.live(config);
      assert.deepEqual(
        planPass(a.snapshot, config, live).transaction,
        planPass(b.snapshot, config, live).transaction,
      );
      assert.deepEqual(
        desiredState(a.snapshot, config, addresses),
        desiredState(b.snapshot, config, [...addresses].reverse()),
      );
    }),
    { numRuns: 200 },
  );
});

Deno.test("property: every valid entry survives validation next to bad ones", () => {
  fc.assert(
    fc.property(rawSnapshot, (raw) => {
      const { snapshot, problems } = validateSnapshot(raw, config);
      // Every entry is either kept or reported: none silently lost.
      const reported = new Set(problems.map((p) => p.origin));
      for (const pod of raw.pods) {
        const kept = snapshot.pods.some((p) => p.podIp === pod.podIp && p.vip === pod.vip);
        assert.ok(kept || reported.has(pod.origin), `pod entry ${pod.origin} vanished`);
      }
      for (const vip of raw.vips) {
        assert.ok(
          snapshot.vips.some((v) => v.ip === vip.ip) || reported.has(vip.origin),
          `vip entry ${vip.origin} vanished`,
        );
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("property: re-planning after apply is empty, through any sequence of inputs and VIP moves", () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(rawSnapshot, held), { minLength: 1, maxLength: 5 }), (passes) => {
      const kernel = new FakeKernel({
        foreignNat: ["-s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE"],
      });
      for (const [raw, addresses] of passes) {
        kernel.interfaces.set("eth0", ["192.0.2.11", ...addresses]);
        const { snapshot } = validateSnapshot(raw, config);
        kernel.apply(planPass(snapshot, config, kernel.live(config)).transaction);
        assert.equal(isEmpty(planPass(snapshot, config, kernel.live(config)).transaction), true);
      }
    }),
    { numRuns: 150 },
  );
});

Deno.test("property: delete after apply gives back the baseline", () => {
  fc.assert(
    fc.property(rawSnapshot, held, fc.boolean(), (raw, addresses, foreign) => {
      const kernel = new FakeKernel(
        foreign ? { foreignNat: ["-j MASQUERADE"], foreignMangle: ["-j ACCEPT"] } : {},
      );
      kernel.interfaces.set("eth0", ["192.0.2.11", ...addresses]);
      const baseline = kernel.dump();
      const { snapshot } = validateSnapshot(raw, config);
      kernel.apply(planPass(snapshot, config, kernel.live(config)).transaction);
      kernel.apply(planDelete(kernel.live(config), config));
      assert.equal(kernel.dump(), baseline);
    }),
    { numRuns: 150 },
  );
});

Deno.test("property: reading only our chains plans exactly what reading whole tables plans", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(rawSnapshot, held), { minLength: 2, maxLength: 5 }),
      async (passes) => {
        const kernel = new FakeKernel({
          foreignNat: ["-s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE"],
          foreignMangle: ["-j MARK --set-xmark 0x4000/0x4000"],
        });
        // The real host's reads (cmd/system.ts) over the fake kernel's tools.
        const host = kernel.host();
        for (const [raw, addresses] of passes) {
          kernel.interfaces.set("eth0", ["192.0.2.11", ...addresses]);
          const { snapshot } = validateSnapshot(raw, config);
          const whole = planPass(snapshot, config, await host.readLive(config)).transaction;
          const ours = planPass(
            snapshot,
            config,
            await host.readLive(config, { ourChainsOnly: true }),
          );
          assert.deepEqual(ours.transaction, whole);
          kernel.apply(whole);
        }
      },
    ),
    { numRuns: 150 },
  );
});
