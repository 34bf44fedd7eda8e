/**
 * Properties of planning over random inputs (fast-check): deterministic and
 * order independent; re-planning after apply is empty; delete after apply is
 * the baseline; any sequence of inputs and VIP moves converges.
 */
import fc from "fast-check";
import assert from "node:assert/strict";
import { desiredState } from "../core/desired.ts";
import { type Intent, intentOf, intentOfFamily } from "../core/intent.ts";
import { formatIp, parseIPv4 } from "../core/ip.ts";
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

/** IPv4 → IPv6 embedding fd00::/96 (a.b.c.d → fd00::a.b.c.d, /n → /96+n): it keeps every order and containment. */
function toV6(text: string): string {
  const [addr, len] = text.split("/");
  const v4 = parseIPv4(addr);
  if (v4 === undefined) return text;
  const v6 = formatIp((0xfd00n << 112n) | BigInt(v4));
  return len === undefined ? v6 : `${v6}/${Number(len) + 96}`;
}

function intentToV6(intent: Intent): Intent {
  return {
    ...intent,
    roles: intent.roles.map((r) => ({ ...r, ip: toV6(r.ip), family: "ipv6" })),
    podMarks: new Map([...intent.podMarks].map(([ip, mark]) => [toV6(ip), mark])),
    scoped: intent.scoped.map((cls) => ({
      ...cls,
      ...(cls.destinations ? { destinations: cls.destinations.map(toV6) } : {}),
      ...(cls.excluded ? { excluded: cls.excluded.map(toV6) } : {}),
      podMarks: new Map([...cls.podMarks].map(([ip, mark]) => [toV6(ip), mark])),
    })),
    noSteer: intent.noSteer.map(toV6),
    podCidrs: intent.podCidrs.map(toV6),
    rules: intent.rules.map((r) => ({ ...r, family: "ipv6" })),
    routes: intent.routes.map((r) => ({ ...r, gateway: toV6(r.gateway) })),
    failClosed: intent.failClosed.map(toV6),
  };
}

const destinations = fc.option(
  fc.subarray(["203.0.113.0/24", "198.51.100.0/25", "192.0.2.128/25"], { minLength: 1 }),
  { nil: undefined },
);

Deno.test("property: planning is family-independent: the same intent per family, with mapped addresses", () => {
  const dualConfig = testConfig({
    podCidrs: [...config.podCidrs, ...config.podCidrs.map(toV6)],
    serviceCidrs: [...config.serviceCidrs, ...config.serviceCidrs.map(toV6)],
    excludeCidrs: ["192.0.2.0/28", toV6("192.0.2.0/28")],
  });
  const v4Config = testConfig({ excludeCidrs: ["192.0.2.0/28"] });
  fc.assert(
    fc.property(
      rawSnapshot,
      held,
      fc.array(destinations, { maxLength: 30 }),
      (raw4, addresses, dst) => {
        const scoped4: RawSnapshot = {
          ...raw4,
          pods: raw4.pods.map((p, i) => (dst[i] ? { ...p, destinations: dst[i] } : p)),
          failClosed: raw4.pods.slice(0, 3).map((p) => ({ origin: p.origin, podIp: p.podIp })),
        };
        const raw6: RawSnapshot = {
          vips: scoped4.vips.map((v) => ({ ...v, origin: `6${v.origin}`, ip: toV6(String(v.ip)) })),
          pods: scoped4.pods.map((p) => ({
            ...p,
            origin: `6${p.origin}`,
            podIp: toV6(String(p.podIp)),
            vip: toV6(String(p.vip)),
            ...(p.destinations ? { destinations: (p.destinations as string[]).map(toV6) } : {}),
          })),
          problems: [],
          failClosed: scoped4.failClosed!.map((g) => ({ ...g, podIp: toV6(String(g.podIp)) })),
        };
        const dual: RawSnapshot = {
          vips: [...scoped4.vips, ...raw6.vips],
          pods: [...scoped4.pods, ...raw6.pods],
          problems: [],
          failClosed: [...scoped4.failClosed!, ...raw6.failClosed!],
        };
        const only4 = validateSnapshot(scoped4, v4Config);
        const both = validateSnapshot(dual, dualConfig);
        assert.equal(both.problems.length, 2 * only4.problems.length);
        const local = [...addresses, ...addresses.map(toV6)];
        const intent4 = intentOf(only4.snapshot, v4Config, addresses);
        const intentDual = intentOf(both.snapshot, dualConfig, local);
        assert.deepEqual(intentOfFamily(intentDual, "ipv4"), intentOfFamily(intent4, "ipv4"));
        // A class's id hashes its ranges' text: a name, not a behaviour.
        const unnamed = (intent: Intent) => ({
          ...intent,
          scoped: intent.scoped.map((cls) => ({ ...cls, id: "" }))
            .sort((a, b) => [...a.podMarks.keys()][0] < [...b.podMarks.keys()][0] ? -1 : 1),
        });
        assert.deepEqual(
          unnamed(intentOfFamily(intentDual, "ipv6")),
          unnamed(intentToV6(intentOfFamily(intent4, "ipv4"))),
        );
        assert.deepEqual(intentOfFamily(intent4, "ipv6").podMarks.size, 0);
      },
    ),
    { numRuns: 200 },
  );
});
