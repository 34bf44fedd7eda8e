import fc from "fast-check";
import assert from "node:assert/strict";
import {
  type Address,
  canonicalIp,
  type Cidr,
  cidrContains,
  cidrHalves,
  cidrsOverlap,
  compareCidr,
  compareIp,
  compareIPv4,
  familyOf,
  familyOfText,
  formatCidr,
  formatIp,
  formatIPv4,
  formatIPv6,
  hostCidr,
  hostPrefix,
  isIPv4Mapped,
  parseCidr,
  parseIp,
  parseIPv4,
  parseIPv6,
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
  assert.deepEqual(parseCidr("10.244.0.0/16"), { family: 4, base: 0x0af40000, prefix: 16 });
  assert.deepEqual(parseCidr("192.0.2.1"), { family: 4, base: 0xc0000201, prefix: 32 });
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

Deno.test("ip: IPv6 parses every RFC 4291 form and nothing else", () => {
  const good: [string, bigint][] = [
    ["::", 0n],
    ["::1", 1n],
    ["1::", 1n << 112n],
    ["2001:db8::1", 0x20010db8000000000000000000000001n],
    ["2001:DB8:0:0:0:0:0:1", 0x20010db8000000000000000000000001n],
    ["2001:0db8:0000::0001", 0x20010db8000000000000000000000001n],
    ["1:2:3:4:5:6:7::", 0x00010002000300040005000600070000n],
    ["::2:3:4:5:6:7:8", 0x00000002000300040005000600070008n],
    ["1:2:3:4:5:6:7:8", 0x00010002000300040005000600070008n],
    ["::ffff:192.0.2.1", 0xffffc0000201n],
    ["1:2:3:4:5:6:192.0.2.1", 0x000100020003000400050006c0000201n],
    ["fd00::10.244.1.5", (0xfd00n << 112n) | 0x0af40105n],
  ];
  for (const [text, value] of good) assert.equal(parseIPv6(text), value, text);
  const bad = [
    "",
    ":",
    ":::",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7",
    "1::2::3",
    ":1::",
    "1::2:",
    "1:",
    "12345::",
    "fe80::1%eth0",
    "[::1]",
    "::1/128",
    " ::1",
    "::g",
    "1:2:3:4:5:6:7:8::",
    "::1:2:3:4:5:6:7:8",
    "::192.0.2.01",
    "::192.0.2",
    "1:2:3:4:5:6:7:192.0.2.1",
    "::1.2.3.4:5",
    "192.0.2.1",
    "2001:db8::1 ",
  ];
  for (const text of bad) assert.equal(parseIPv6(text), undefined, text);
});

Deno.test("ip: IPv6 formats in the RFC 5952 canonical form", () => {
  const cases: [string, string][] = [
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // the first of equal runs
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // one zero group stays
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"], // the longest run
    ["0:0:0:0:0:0:0:0", "::"],
    ["fd00:0:0:0:0:0:0:0", "fd00::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["::ffff:c000:201", "::ffff:192.0.2.1"], // IPv4-mapped: dotted tail (RFC 5952 §5)
    ["::c000:201", "::c000:201"], // the deprecated IPv4-compatible form is not special
  ];
  for (const [text, canonical] of cases) assert.equal(formatIPv6(parseIPv6(text)!), canonical);
  assert.equal(canonicalIp("2001:DB8::0001"), "2001:db8::1");
  assert.equal(canonicalIp("192.0.2.1"), "192.0.2.1");
  assert.equal(canonicalIp("192.0.2.01"), undefined);
  assert.equal(isIPv4Mapped(parseIPv6("::ffff:192.0.2.1")!), true);
  assert.equal(isIPv4Mapped(parseIPv6("::192.0.2.1")!), false);
  assert.equal(isIPv4Mapped(parseIPv6("64:ff9b::192.0.2.1")!), false);
});

/** The WHATWG URL host parser (independent of ours) as the reference for IPv6 text. */
function urlParse(text: string): string | undefined {
  if (!/^[0-9a-fA-F:.]*$/.test(text)) return undefined;
  try {
    const host = new URL(`http://[${text}]/`).hostname;
    return host.slice(1, -1);
  } catch {
    return undefined;
  }
}

const group = fc.oneof(
  fc.integer({ min: 0, max: 0xffff }).map((g) => g.toString(16)),
  fc.constantFrom("0", "00", "0000", "FFFF", "aBc", "12345", ""),
);
const nearlyIPv6 = fc.oneof(
  fc.array(group, { minLength: 1, maxLength: 10 }).map((g) => g.join(":")),
  fc.tuple(
    fc.array(group, { maxLength: 8 }),
    fc.array(group, { maxLength: 8 }),
    fc.constantFrom("", ":192.0.2.1", ":1.2.3", ":01.2.3.4"),
  ).map(([a, b, tail]) => `${a.join(":")}::${b.join(":")}${tail}`),
  fc.array(fc.constantFrom(..."0f:.1"), { maxLength: 12 }).map((c) => c.join("")),
);

Deno.test("property: parseIPv6 accepts exactly what the WHATWG URL parser accepts", () => {
  fc.assert(
    fc.property(fc.oneof(nearlyIPv6, fc.string()), (text) => {
      const ours = parseIPv6(text);
      const reference = urlParse(text);
      assert.equal(ours !== undefined, reference !== undefined, JSON.stringify(text));
      if (ours !== undefined && !isIPv4Mapped(ours)) {
        // WHATWG serializes as RFC 5952 does, except that it writes no dotted tails.
        assert.equal(formatIPv6(ours), reference, JSON.stringify(text));
      }
    }),
    { numRuns: 5000 },
  );
});

const ipv6Value = fc.oneof(
  fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }),
  // Mostly-zero addresses, where "::" placement matters.
  fc.array(fc.constantFrom(0, 0, 0, 1, 0xffff), { minLength: 8, maxLength: 8 })
    .map((g) => g.reduce((v, x) => (v << 16n) | BigInt(x), 0n)),
);

Deno.test("property: formatIPv6 round-trips and is the reference serialization", () => {
  fc.assert(
    fc.property(ipv6Value, (value) => {
      const text = formatIPv6(value);
      assert.equal(parseIPv6(text), value, text);
      assert.equal(text, text.toLowerCase());
      if (!isIPv4Mapped(value)) assert.equal(text, urlParse(text));
    }),
    { numRuns: 3000 },
  );
});

const address: fc.Arbitrary<Address> = fc.oneof(
  fc.integer({ min: 0, max: 0xffffffff }),
  ipv6Value,
);

/** The address's bits as a string of 0s and 1s: the obvious definition of a prefix match. */
function bits(a: Address): string {
  return typeof a === "number" ? a.toString(2).padStart(32, "0") : a.toString(2).padStart(128, "0");
}

/** A range around an address: its first `prefix` bits. */
const cidr: fc.Arbitrary<Cidr> = address.chain((a) =>
  fc.integer({ min: 0, max: familyOf(a) === 4 ? 32 : 128 }).map((prefix) => {
    const text = `${formatIp(a)}/${familyOf(a) === 4 ? 32 : 128}`;
    const host = parseCidr(text)!;
    const kept = bits(host.base).slice(0, prefix).padEnd(hostPrefix(host.family), "0");
    const base = host.family === 4 ? parseInt(kept, 2) : BigInt(`0b${kept}`);
    return parseCidr(`${formatIp(base)}/${prefix}`)!;
  })
);

Deno.test("property: containment and overlap are the prefix-bits definition, per family", () => {
  fc.assert(
    fc.property(cidr, cidr, address, (a, b, x) => {
      const inA = familyOf(x) === a.family &&
        bits(x).slice(0, a.prefix) === bits(a.base).slice(0, a.prefix);
      assert.equal(cidrContains(a, x), inA);
      const overlap = a.family === b.family && (cidrContains(a, b.base) || cidrContains(b, a.base));
      assert.equal(cidrsOverlap(a, b), overlap);
      assert.equal(cidrsOverlap(b, a), overlap);
      assert.deepEqual(parseCidr(formatCidr(a)), a);
      for (const half of cidrHalves(a)) {
        assert.equal(cidrsOverlap(half, a), true);
        assert.equal(half.prefix, a.prefix + 1);
      }
    }),
    { numRuns: 3000 },
  );
});

Deno.test("ip: IPv6 ranges, families and host prefixes", () => {
  assert.deepEqual(parseCidr("fd00::/8"), { family: 6, base: 0xfdn << 120n, prefix: 8 });
  assert.deepEqual(parseCidr("2001:db8::5"), {
    family: 6,
    base: 0x20010db8n << 96n | 5n,
    prefix: 128,
  });
  assert.equal(parseCidr("fd00::1/8"), undefined); // host bits
  assert.equal(parseCidr("fd00::/129"), undefined);
  assert.equal(parseCidr("fd00::/08"), undefined);
  assert.equal(parseCidr("10.0.0.0/33"), undefined);
  assert.equal(formatCidr(parseCidr("2001:DB8:0::/32")!), "2001:db8::/32");
  assert.equal(formatCidr(parseCidr("::/0")!), "::/0");
  assert.equal(cidrContains(parseCidr("::/0")!, parseIp("192.0.2.1")!), false);
  assert.equal(cidrContains(parseCidr("0.0.0.0/0")!, parseIp("::ffff:192.0.2.1")!), false);
  assert.equal(cidrsOverlap(parseCidr("0.0.0.0/0")!, parseCidr("::/0")!), false);
  assert.equal(cidrContains(parseCidr("fd00::/8")!, parseIp("fd12::1")!), true);
  assert.equal(cidrContains(parseCidr("fd00::/8")!, parseIp("fe00::1")!), false);
  assert.equal(familyOfText("2001:db8::1"), 6);
  assert.equal(familyOfText("fd00::/8"), 6);
  assert.equal(familyOfText("10.0.0.0/8"), 4);
  assert.equal(familyOfText("10.0.0.1/8"), undefined);
  assert.equal(familyOfText("nope"), undefined);
  assert.equal(formatCidr(hostCidr(parseIp("2001:db8::7")!)), "2001:db8::7/128");
  assert.equal(formatCidr(hostCidr(parseIp("192.0.2.7")!)), "192.0.2.7/32");
  assert.deepEqual(cidrHalves(parseCidr("2001:db8::/32")!).map(formatCidr), [
    "2001:db8::/33",
    "2001:db8:8000::/33",
  ]);
  assert.deepEqual(cidrHalves(parseCidr("::1/128")!), []);
});

Deno.test("ip: mixed-family ordering puts IPv4 first, then numeric", () => {
  assert.deepEqual(["fd00::10", "10.0.0.9", "fd00::9", "9.0.0.1", "::1"].sort(compareIp), [
    "9.0.0.1",
    "10.0.0.9",
    "::1",
    "fd00::9",
    "fd00::10",
  ]);
  assert.deepEqual(["fd00::/8", "10.0.0.0/8", "fd00::/16", "10.0.0.0/16"].sort(compareCidr), [
    "10.0.0.0/8",
    "10.0.0.0/16",
    "fd00::/8",
    "fd00::/16",
  ]);
  assert.equal(compareIPv4("10.0.0.10", "10.0.0.9") > 0, true);
});
