import fc from "fast-check";
import assert from "node:assert/strict";
import {
  cidrContains,
  cidrsOverlap,
  compareIPv4,
  formatCidr,
  formatIPv4,
  parseCidr,
  parseIPv4,
} from "../core/ip.ts";

Deno.test("ip: parses canonical dotted quads only", () => {
  assert.equal(parseIPv4("192.0.2.22"), 0xc0000216);
  assert.equal(parseIPv4("0.0.0.0"), 0);
  assert.equal(parseIPv4("255.255.255.255"), 0xffffffff);
  for (
    const bad of [
      "192.0.2",
      "192.0.2.256",
      "192.0.2.022",
      "1.2.3.4.5",
      "a.b.c.d",
      "",
      " 1.2.3.4",
      "1..2.3",
    ]
  ) {
    assert.equal(parseIPv4(bad), undefined, bad);
  }
});

/** The obvious definition, to check the hand-written scanner against. */
function referenceParse(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p))) return undefined;
  const octets = parts.map(Number);
  if (octets.some((o) => o > 255)) return undefined;
  return octets.reduce((value, o) => value * 256 + o, 0);
}

Deno.test("property: parseIPv4 agrees with the split-and-regex definition", () => {
  const nearlyAddress = fc.array(fc.constantFrom(..."0123456789.x /"), { maxLength: 17 })
    .map((chars) => chars.join(""));
  const octet = fc.oneof(fc.integer({ min: 0, max: 300 }).map(String), fc.constantFrom("00", "01"));
  const address = fc.array(octet, { minLength: 3, maxLength: 5 }).map((o) => o.join("."));
  fc.assert(
    fc.property(fc.oneof(nearlyAddress, address, fc.string()), (text) => {
      assert.equal(parseIPv4(text), referenceParse(text), JSON.stringify(text));
    }),
    { numRuns: 5000 },
  );
});

Deno.test("ip: formats back to the same text", () => {
  for (const text of ["10.244.1.5", "0.0.0.0", "255.255.255.255", "192.0.2.222"]) {
    assert.equal(formatIPv4(parseIPv4(text)!), text);
  }
});

Deno.test("ip: CIDR parsing rejects host bits and bad prefixes", () => {
  assert.deepEqual(parseCidr("10.244.0.0/16"), { base: 0x0af40000, prefix: 16 });
  assert.deepEqual(parseCidr("192.0.2.1"), { base: 0xc0000201, prefix: 32 });
  assert.equal(parseCidr("10.244.0.1/16"), undefined);
  assert.equal(parseCidr("10.0.0.0/33"), undefined);
  assert.equal(parseCidr("10.0.0.0/08"), undefined);
  assert.equal(parseCidr("10.0.0.0/8/1"), undefined);
  assert.equal(formatCidr(parseCidr("0.0.0.0/0")!), "0.0.0.0/0");
});

Deno.test("ip: containment is exact, never a substring match", () => {
  const range = parseCidr("192.0.2.22/32")!;
  assert.equal(cidrContains(range, parseIPv4("192.0.2.22")!), true);
  assert.equal(cidrContains(range, parseIPv4("192.0.2.222")!), false);
  assert.equal(cidrContains(parseCidr("10.32.0.0/12")!, parseIPv4("10.47.255.255")!), true);
  assert.equal(cidrContains(parseCidr("10.32.0.0/12")!, parseIPv4("10.48.0.0")!), false);
  assert.equal(cidrContains(parseCidr("0.0.0.0/0")!, parseIPv4("203.0.113.9")!), true);
});

Deno.test("ip: overlap and ordering", () => {
  assert.equal(cidrsOverlap(parseCidr("10.0.0.0/8")!, parseCidr("10.244.0.0/16")!), true);
  assert.equal(cidrsOverlap(parseCidr("10.96.0.0/12")!, parseCidr("10.244.0.0/16")!), false);
  assert.deepEqual(["10.0.0.10", "10.0.0.9", "9.0.0.1"].sort(compareIPv4), [
    "9.0.0.1",
    "10.0.0.9",
    "10.0.0.10",
  ]);
});
