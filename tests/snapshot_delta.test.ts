/**
 * DeltaValidation (core/snapshot_delta.ts): after any sequence of snapshots,
 * with or without deltas, its result is validateSnapshot's; the common case
 * (pods added, moved and removed, no problem) takes the delta path.
 */
import fc from "fast-check";
import assert from "node:assert/strict";
import { type DeltaSnapshot, DeltaValidation } from "../core/snapshot_delta.ts";
import { type RawPod, type RawSnapshot, validateSnapshot } from "../core/snapshot.ts";
import { testConfig } from "./helpers.ts";

const config = testConfig();

const VIPS = [
  { origin: "EgressVIP a", ip: "192.0.2.50", routeId: 5 },
  { origin: "EgressVIP b", ip: "192.0.2.51", routeId: 6 },
];

/** A source as the slice source is: a map of pod IP → entries, each snapshot a delta of the last. */
class Source {
  readonly entries = new Map<string, RawPod[]>();
  last?: DeltaSnapshot;
  constructor(
    public vips: RawSnapshot["vips"] = VIPS,
    public failClosed?: RawSnapshot["failClosed"],
  ) {}

  snapshot(changed?: ReadonlyMap<string, readonly RawPod[]>, withDelta = true): DeltaSnapshot {
    for (const [ip, list] of changed ?? []) {
      if (list.length === 0) this.entries.delete(ip);
      else this.entries.set(ip, [...list]);
    }
    const raw: DeltaSnapshot = {
      vips: this.vips,
      pods: [...this.entries.values()].flat(),
      problems: [],
      ...(this.failClosed ? { failClosed: this.failClosed } : {}),
      version: {},
      ...(withDelta && this.last?.version && changed
        ? { delta: { since: this.last.version, pods: changed } }
        : {}),
    };
    this.last = raw;
    return raw;
  }
}

const pod = (ip: string, vip = "192.0.2.50", extra: Partial<RawPod> = {}): RawPod => ({
  origin: `EgressSlice s-${ip}`,
  podIp: ip,
  vip,
  ...extra,
});

Deno.test("delta validation: 10,000 pods, one added, moved and removed: the delta path, the full result", () => {
  const source = new Source();
  const all = new Map<string, RawPod[]>();
  for (let i = 0; i < 10_000; i++) {
    const ip = `10.244.${i >> 8}.${i & 255}`;
    all.set(ip, [pod(ip)]);
  }
  const validation = new DeltaValidation();
  validation.validate(source.snapshot(all, false), config);
  assert.equal(validation.last, "full");
  const steps = [
    new Map([["10.244.200.1", [pod("10.244.200.1")]]]),
    new Map([["10.244.200.1", [pod("10.244.200.1", "192.0.2.51")]]]),
    new Map([["10.244.200.1", []], ["10.244.0.7", []]]),
  ];
  for (const step of steps) {
    const raw = source.snapshot(step);
    const got = validation.validate(raw, config);
    assert.equal(validation.last, "delta");
    assert.deepEqual(got, validateSnapshot(raw, config));
  }
});

Deno.test("delta validation: a pod problem, other VIPs or a non-canonical key: validated in full", () => {
  const source = new Source();
  const validation = new DeltaValidation();
  validation.validate(
    source.snapshot(new Map([["10.244.0.2", [pod("10.244.0.2")]]]), false),
    config,
  );
  // A pod outside the pod ranges: its problem is reported, in full.
  const bad = source.snapshot(new Map([["10.1.2.3", [pod("10.1.2.3")]]]));
  assert.deepEqual(validation.validate(bad, config), validateSnapshot(bad, config));
  assert.equal(validation.last, "full");
  // With that problem still there the next delta is validated in full too.
  const next = source.snapshot(new Map([["10.244.0.3", [pod("10.244.0.3")]]]));
  assert.deepEqual(validation.validate(next, config), validateSnapshot(next, config));
  assert.equal(validation.last, "full");
  // The problem gone: full once more (it was there in the base), then deltas again.
  const fixed = source.snapshot(new Map([["10.1.2.3", []]]));
  assert.deepEqual(validation.validate(fixed, config), validateSnapshot(fixed, config));
  const again = source.snapshot(new Map([["10.244.0.4", [pod("10.244.0.4")]]]));
  assert.deepEqual(validation.validate(again, config), validateSnapshot(again, config));
  assert.equal(validation.last, "delta");
  // Other VIPs (another array): in full.
  source.vips = [VIPS[0]];
  const fewer = source.snapshot(new Map([["10.244.0.5", [pod("10.244.0.5")]]]));
  assert.deepEqual(validation.validate(fewer, config), validateSnapshot(fewer, config));
  assert.equal(validation.last, "full");
});

// Random sequences: pods of a small pool (so that they collide), sometimes twice with another
// VIP or with destination ranges, sometimes bad; VIPs sometimes replaced; fail-closed pods.
const ip = fc.oneof(
  { weight: 40, arbitrary: fc.integer({ min: 1, max: 12 }).map((n) => `10.244.0.${n}`) },
  { weight: 1, arbitrary: fc.constantFrom("10.1.2.3", "fd00::1", "x") },
);
const entry = fc.record({
  vip: fc.oneof(
    { weight: 20, arbitrary: fc.constantFrom("192.0.2.50", "192.0.2.51") },
    { weight: 1, arbitrary: fc.constant("192.0.2.52") },
  ),
  scoped: fc.oneof({ weight: 12, arbitrary: fc.constant(false) }, {
    weight: 1,
    arbitrary: fc.constant(true),
  }),
});
// Mostly one entry (a pod added or moved), sometimes none (removed) or two (a move under way).
const entries = fc.oneof(
  { weight: 6, arbitrary: fc.array(entry, { minLength: 1, maxLength: 1 }) },
  { weight: 3, arbitrary: fc.constant([]) },
  { weight: 1, arbitrary: fc.array(entry, { minLength: 2, maxLength: 2 }) },
);
const change = fc.tuple(ip, entries);
const step = fc.record({
  changes: fc.array(change, { minLength: 1, maxLength: 4 }),
  withDelta: fc.oneof({ weight: 6, arbitrary: fc.constant(true) }, {
    weight: 1,
    arbitrary: fc.constant(false),
  }),
  newVips: fc.oneof({ weight: 8, arbitrary: fc.constant(false) }, {
    weight: 1,
    arbitrary: fc.constant(true),
  }),
});

Deno.test("delta validation: any sequence of snapshots validates as validateSnapshot does (property)", () => {
  let deltas = 0;
  let total = 0;
  fc.assert(
    fc.property(
      fc.array(step, { minLength: 1, maxLength: 25 }),
      fc.boolean(),
      (steps, guarded) => {
        const source = new Source(
          VIPS,
          guarded
            ? [{ origin: "g", podIp: "10.244.0.3" }, { origin: "g", podIp: "10.244.0.9" }]
            : undefined,
        );
        const validation = new DeltaValidation();
        for (const s of steps) {
          if (s.newVips) source.vips = [...source.vips];
          const changed = new Map<string, RawPod[]>();
          for (const [address, list] of s.changes) {
            changed.set(
              address,
              list.map((e) =>
                pod(address, e.vip, e.scoped ? { destinations: ["203.0.113.0/24"] } : {})
              ),
            );
          }
          const raw = source.snapshot(changed, s.withDelta);
          assert.deepEqual(validation.validate(raw, config), validateSnapshot(raw, config));
          total++;
          if (validation.last === "delta") deltas++;
        }
      },
    ),
    { numRuns: 500 },
  );
  // The property is about the delta path: many steps take it.
  assert.ok(deltas > total / 10, `only ${deltas} of ${total} steps took the delta path`);
});
