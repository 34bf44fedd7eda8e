import assert from "node:assert/strict";
import { Backoff } from "../core/backoff.ts";

Deno.test("backoff: doubles after each failure up to the bound, starts over after a success", () => {
  const backoff = new Backoff(250, 1000);
  assert.deepEqual([backoff.take(), backoff.take(), backoff.take(), backoff.take()], [
    250,
    500,
    1000,
    1000,
  ]);
  assert.equal(backoff.nextMs, 1000);
  backoff.reset();
  assert.equal(backoff.nextMs, 250);
  assert.equal(backoff.take(), 250);
});
