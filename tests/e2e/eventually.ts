/** Polling for the e2e tests that wait on an API or a node to converge. */
import assert from "node:assert/strict";

/**
 * Reads until `ok` holds (at most 60 more reads, 250 ms apart), and returns
 * that value; else fails naming `what` and the last value read.
 */
export async function eventually<T>(
  read: () => Promise<T>,
  ok: (v: T) => boolean,
  what: string,
): Promise<T> {
  let value = await read();
  for (let i = 0; i < 60 && !ok(value); i++) {
    await new Promise((r) => setTimeout(r, 250));
    value = await read();
  }
  if (!ok(value)) assert.fail(`timed out waiting for ${what}: ${JSON.stringify(value)}`);
  return value;
}
