import assert from "node:assert/strict";
import { freshSeconds, HealthTracker, renderVerdict, stallSeconds } from "../core/health.ts";

const S = 1000;

Deno.test("health: limits scale with the interval and never go below two minutes of stall", () => {
  assert.equal(stallSeconds({ intervalSeconds: 5 }), 120);
  assert.equal(stallSeconds({ intervalSeconds: 60 }), 180);
  assert.equal(freshSeconds({ intervalSeconds: 30 }), 90);
});

Deno.test("health: not ready before the first pass, ready after a good one", () => {
  const h = new HealthTracker({ intervalSeconds: 30 }, 0);
  const before = h.readiness(1 * S);
  assert.equal(before.ok, false);
  assert.match(renderVerdict("readyz", before), /\[-\]pass no pass has completed yet/);
  assert.equal(h.liveness(1 * S).ok, true, "alive while starting");
  h.passStarted("start", 1 * S);
  h.passEnded({ ok: true }, 2 * S);
  const after = h.readiness(3 * S);
  assert.equal(after.ok, true);
  assert.equal(renderVerdict("readyz", after).trimEnd().split("\n").at(-1), "readyz ok");
});

Deno.test("health: a failed pass makes the agent unready but not dead", () => {
  const h = new HealthTracker({ intervalSeconds: 30 }, 0);
  h.passEnded({ ok: true }, 1 * S);
  h.passEnded(
    { ok: false, error: "step 2 (update sets) failed", errorKind: "apply_ipset" },
    31 * S,
  );
  const ready = h.readiness(32 * S);
  assert.equal(ready.ok, false);
  assert.match(renderVerdict("readyz", ready), /\[-\]pass last pass failed: step 2/);
  // The inputs were read by the failed pass (it failed later): they are fresh.
  assert.equal(ready.checks.find((c) => c.name === "inputs")!.ok, true);
  assert.equal(h.liveness(32 * S).ok, true);
  h.passEnded({ ok: true }, 61 * S);
  assert.equal(h.readiness(62 * S).ok, true);
});

Deno.test("health: inputs that cannot be read go stale after two intervals plus slack", () => {
  const h = new HealthTracker({ intervalSeconds: 30 }, 0);
  h.passEnded({ ok: true }, 0);
  for (let t = 30; t <= 120; t += 30) {
    h.passEnded({ ok: false, error: "mapping directory gone", errorKind: "inputs" }, t * S);
  }
  const inputs = h.readiness(120 * S).checks.find((c) => c.name === "inputs")!;
  assert.equal(inputs.ok, false);
  assert.match(inputs.detail, /inputs last read 120s ago, over the 90s limit/);
  assert.equal(h.liveness(120 * S).ok, true, "the loop itself is fine");
});

Deno.test("health: a pass that hangs, or passes that stop, fail liveness", () => {
  const h = new HealthTracker({ intervalSeconds: 10 }, 0);
  h.passStarted("resync", 10 * S);
  assert.equal(h.liveness(100 * S).ok, true);
  const wedged = h.liveness(131 * S);
  assert.equal(wedged.ok, false);
  assert.match(wedged.checks[0].detail, /trigger: resync\) has been running for 121s/);
  assert.equal(h.readiness(131 * S).ok, false, "a wedged loop's inputs are stale too");

  const idle = new HealthTracker({ intervalSeconds: 10 }, 0);
  idle.passEnded({ ok: true }, 5 * S);
  assert.equal(idle.liveness(120 * S).ok, true);
  assert.match(idle.liveness(126 * S).checks[0].detail, /no pass for 121s/);
});

Deno.test("health: extra readiness conditions from a source are part of the verdict", () => {
  const h = new HealthTracker({ intervalSeconds: 30 }, 0);
  let synced = false;
  h.addCondition("watch", () => (synced ? undefined : "API watch not synced"));
  h.passEnded({ ok: true }, 1 * S);
  assert.match(renderVerdict("readyz", h.readiness(2 * S)), /\[-\]watch API watch not synced/);
  synced = true;
  assert.equal(h.readiness(2 * S).ok, true);
});
