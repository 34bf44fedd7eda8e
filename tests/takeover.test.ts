import assert from "node:assert/strict";
import { TakeoverTimer } from "../core/takeover.ts";

Deno.test("takeover: the gap runs from the address event to the end of the programming pass", () => {
  const t = new TakeoverTimer();
  t.passStarted(0);
  t.transition("192.0.2.50", "none", "forwarder");
  assert.deepEqual(t.passEnded(true, 10), [], "a VIP appearing in the inputs is no takeover");
  t.addressEvent(1000);
  t.passStarted(1005);
  t.transition("192.0.2.50", "forwarder", "holder");
  assert.deepEqual(t.passEnded(true, 1080), [
    { vip: "192.0.2.50", at: 1080, gapMs: 80, fromAddressEvent: true },
  ]);
});

Deno.test("takeover: an event during a busy pass counts from the event, for the next pass", () => {
  const t = new TakeoverTimer();
  t.addressEvent(50); // seen by the pass starting at 100: no longer relevant after it
  t.passStarted(100);
  t.passEnded(true, 150);
  t.passStarted(200);
  t.addressEvent(220); // arrives during a pass that read the addresses already
  t.passEnded(true, 400);
  t.passStarted(400);
  t.transition("192.0.2.50", "forwarder", "holder");
  assert.deepEqual(t.passEnded(true, 450), [
    { vip: "192.0.2.50", at: 450, gapMs: 230, fromAddressEvent: true },
  ]);
});

Deno.test("takeover: without an address event the pass start is used; failed passes measure nothing", () => {
  const t = new TakeoverTimer();
  t.passStarted(0);
  t.passEnded(true, 1);
  t.passStarted(30_000);
  t.transition("192.0.2.51", "forwarder", "holder");
  assert.deepEqual(t.passEnded(true, 30_020), [
    { vip: "192.0.2.51", at: 30_020, gapMs: 20, fromAddressEvent: false },
  ]);
  t.passStarted(40_000);
  t.transition("192.0.2.52", "forwarder", "holder");
  assert.deepEqual(t.passEnded(false, 40_010), []);
  t.passStarted(50_000);
  t.transition("192.0.2.51", "holder", "forwarder");
  assert.deepEqual(t.passEnded(true, 50_010), [], "giving a VIP up is no takeover");
});
