/**
 * IP addresses and CIDR ranges of both families, with strict parsing and exact
 * comparisons, never substring tests.
 *
 * An address is a plain value whose JavaScript type is its family: IPv4 is an
 * unsigned 32-bit `number` (the fast path: it runs for every pod on every pass,
 * allocation-free), IPv6 a 128-bit `bigint`. A range carries its family as a
 * tag. Values of different families never contain or overlap each other.
 *
 * IPv4 text is a canonical dotted quad (no leading zeros, no shorthand, so
 * "010.0.0.1" is never read as octal). IPv6 text is any RFC 4291 form (one
 * "::", 1-4 hex digits per group, either case, a dotted-quad tail) without a
 * zone id ("%eth0": a link-local scope is not an egress address); it is always
 * written back in the RFC 5952 canonical form, the one `ip` and `nft` print.
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) parse as IPv6 (they are, on the
 * wire) and format as RFC 5952 §5 recommends; {@link isIPv4Mapped} lets input
 * validation reject them, since such a "pod address" is an IPv4 one in disguise.
 */

/** An address family: 4 or 6. */
export type Family = 4 | 6;

/** An address: IPv4 as an unsigned 32-bit number, IPv6 as a 128-bit bigint. */
export type Address = number | bigint;

/** An IPv4 network: base address (host bits zero) and prefix length (0-32). */
export interface Cidr4 {
  readonly family: 4;
  readonly base: number;
  readonly prefix: number;
}

/** An IPv6 network: base address (host bits zero) and prefix length (0-128). */
export interface Cidr6 {
  readonly family: 6;
  readonly base: bigint;
  readonly prefix: number;
}

/** A network of either family. */
export type Cidr = Cidr4 | Cidr6;

const DOT = 46;
const COLON = 58;
const ZERO = 48;
const NINE = 57;

/**
 * Parses a dotted-quad IPv4 address into an unsigned 32-bit number, or
 * undefined. Each octet is 0 or 1-3 digits without a leading zero, at most 255.
 * Written as one scan over the characters: it runs for every pod on every pass.
 */
export function parseIPv4(text: string): number | undefined {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let parts = 0;
  for (let i = 0; i <= text.length; i++) {
    // The end of the text closes the last octet like a dot would.
    const c = i < text.length ? text.charCodeAt(i) : DOT;
    if (c === DOT) {
      if (digits === 0 || octet > 255 || ++parts > 4) return undefined;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
    } else if (c >= ZERO && c <= NINE) {
      // A second digit after a leading "0" would be a leading zero (octal in some tools).
      if ((digits > 0 && octet === 0) || ++digits > 3) return undefined;
      octet = octet * 10 + (c - ZERO);
    } else return undefined;
  }
  return parts === 4 ? value : undefined;
}

/** Formats an unsigned 32-bit number as a dotted quad. */
export function formatIPv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join(".");
}

/** True when the text is a canonical dotted-quad IPv4 address. */
export function isIPv4(text: string): boolean {
  return parseIPv4(text) !== undefined;
}

/** The value of a hex digit's character code, or -1. */
function hexDigit(c: number): number {
  if (c >= ZERO && c <= NINE) return c - ZERO;
  const lower = c | 32;
  return lower >= 97 && lower <= 102 ? lower - 87 : -1;
}

/**
 * Parses an IPv6 address (RFC 4291 text: eight groups of 1-4 hex digits, at
 * most one "::" standing for one or more zero groups, optionally a dotted-quad
 * IPv4 tail in place of the last two groups) into a 128-bit bigint, or
 * undefined. No zone id, no brackets, no prefix, no whitespace.
 */
export function parseIPv6(text: string): bigint | undefined {
  const n = text.length;
  if (n < 2 || n > 45) return undefined;
  const groups: number[] = [];
  let gap = -1;
  let i = 0;
  if (text.charCodeAt(0) === COLON) {
    if (text.charCodeAt(1) !== COLON) return undefined;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    let value = 0;
    let j = i;
    for (; j < n && j - i <= 4; j++) {
      const d = hexDigit(text.charCodeAt(j));
      if (d < 0) break;
      value = value * 16 + d;
    }
    if (j < n && text.charCodeAt(j) === DOT) {
      // A dotted-quad tail: the last 32 bits, and the end of the text.
      if (groups.length > (gap < 0 ? 6 : 5)) return undefined;
      const v4 = parseIPv4(text.slice(i));
      if (v4 === undefined) return undefined;
      groups.push(v4 >>> 16, v4 & 0xffff);
      break;
    }
    if (j === i || j - i > 4) return undefined;
    groups.push(value);
    if (groups.length > 8) return undefined;
    if (j === n) break;
    if (text.charCodeAt(j) !== COLON) return undefined;
    j++;
    if (j < n && text.charCodeAt(j) === COLON) {
      if (gap >= 0) return undefined;
      gap = groups.length;
      j++;
    } else if (j === n) return undefined; // a single trailing colon
    i = j;
  }
  if (gap < 0 ? groups.length !== 8 : groups.length > 7) return undefined;
  let result = 0n;
  const missing = 8 - groups.length;
  for (let g = 0; g < groups.length; g++) {
    if (g === gap) result <<= BigInt(16 * missing);
    result = (result << 16n) | BigInt(groups[g]);
  }
  if (gap === groups.length) result <<= BigInt(16 * missing);
  return result;
}

const V4_MAPPED_PREFIX = 0xffffn << 32n;

/** True when the IPv6 address is IPv4-mapped (::ffff:a.b.c.d, RFC 4291 §2.5.5.2). */
export function isIPv4Mapped(value: bigint): boolean {
  return value >> 32n === 0xffffn;
}

/**
 * Formats a 128-bit bigint in the RFC 5952 canonical form: lower case, no
 * leading zeros, the longest run of two or more zero groups (the first of equal
 * runs) as "::", and IPv4-mapped addresses with a dotted-quad tail.
 */
export function formatIPv6(value: bigint): string {
  if (isIPv4Mapped(value)) return `::ffff:${formatIPv4(Number(value - V4_MAPPED_PREFIX))}`;
  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(Number((value >> shift) & 0xffffn));
  let bestStart = -1;
  let bestLength = 1;
  for (let g = 0; g < 8;) {
    if (groups[g] !== 0) {
      g++;
      continue;
    }
    let end = g;
    while (end < 8 && groups[end] === 0) end++;
    if (end - g > bestLength) {
      bestStart = g;
      bestLength = end - g;
    }
    g = end;
  }
  const hex = (from: number, to: number) =>
    groups.slice(from, to).map((x) => x.toString(16)).join(":");
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, 8)}`;
}

/** True when the text is an IPv6 address {@link parseIPv6} accepts. */
export function isIPv6(text: string): boolean {
  return parseIPv6(text) !== undefined;
}

/**
 * Parses an address of either family: IPv4 text (no colon) as a number, IPv6
 * as a bigint, anything else undefined. IPv4 text takes the fast path.
 */
export function parseIp(text: string): Address | undefined {
  return text.indexOf(":") < 0 ? parseIPv4(text) : parseIPv6(text);
}

/** Formats an address of either family canonically. */
export function formatIp(address: Address): string {
  return typeof address === "number" ? formatIPv4(address) : formatIPv6(address);
}

/** True when the text is an address of either family. */
export function isIp(text: string): boolean {
  return parseIp(text) !== undefined;
}

/** The family of an address value. */
export function familyOf(address: Address): Family {
  return typeof address === "number" ? 4 : 6;
}

/** The family of an address or range text ("10.0.0.1", "fd00::/8"), or undefined when it parses as neither. */
export function familyOfText(text: string): Family | undefined {
  const address = text.indexOf("/") < 0 ? parseIp(text) : parseCidr(text)?.base;
  return address === undefined ? undefined : familyOf(address);
}

/** The canonical text of an address of either family, or undefined ("2001:DB8:0::1" → "2001:db8::1"). */
export function canonicalIp(text: string): string | undefined {
  const address = parseIp(text);
  return address === undefined ? undefined : formatIp(address);
}

/** The prefix length of one host: 32 for IPv4, 128 for IPv6. */
export function hostPrefix(family: Family): 32 | 128 {
  return family === 4 ? 32 : 128;
}

/** The one-host range of an address: a.b.c.d/32 or x::y/128. */
export function hostCidr(address: Address): Cidr {
  return typeof address === "number"
    ? { family: 4, base: address, prefix: 32 }
    : { family: 6, base: address, prefix: 128 };
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

const ALL_ONES_128 = (1n << 128n) - 1n;
const MASKS_128: readonly bigint[] = Array.from(
  { length: 129 },
  (_, prefix) => (ALL_ONES_128 << BigInt(128 - prefix)) & ALL_ONES_128,
);

/**
 * Parses "address/n" of either family (or a bare address, read as /32 or
 * /128). Host bits must be zero: "10.0.0.1/8" is almost always a typo, so it is
 * rejected rather than guessed.
 */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  const len = slash < 0 ? undefined : text.slice(slash + 1);
  const base = parseIp(addr);
  if (base === undefined) return undefined;
  const host = typeof base === "number" ? 32 : 128;
  let prefix = host;
  if (len !== undefined) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(len)) return undefined;
    prefix = Number(len);
    if (prefix > host) return undefined;
  }
  if (typeof base === "number") {
    if (((base & ~maskOf(prefix)) >>> 0) !== 0) return undefined;
    return { family: 4, base, prefix };
  }
  if ((base & ~MASKS_128[prefix]) !== 0n) return undefined;
  return { family: 6, base, prefix };
}

/** Formats a range as "a.b.c.d/n" or "x::y/n" (RFC 5952). */
export function formatCidr(cidr: Cidr): string {
  return `${cidr.family === 4 ? formatIPv4(cidr.base) : formatIPv6(cidr.base)}/${cidr.prefix}`;
}

/** True when the address lies inside the range (never across families). */
export function cidrContains(cidr: Cidr, address: Address): boolean {
  if (typeof address === "number") {
    return cidr.family === 4 && ((address & maskOf(cidr.prefix)) >>> 0) === cidr.base;
  }
  return cidr.family === 6 && (address & MASKS_128[cidr.prefix]) === cidr.base;
}

/** True when two ranges share at least one address (never across families). */
export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  const prefix = Math.min(a.prefix, b.prefix);
  if (a.family === 4 && b.family === 4) {
    const mask = maskOf(prefix);
    return ((a.base & mask) >>> 0) === ((b.base & mask) >>> 0);
  }
  if (a.family === 6 && b.family === 6) {
    return (a.base & MASKS_128[prefix]) === (b.base & MASKS_128[prefix]);
  }
  return false;
}

/**
 * The two halves of a range one bit longer (10.0.0.0/8 → 10.0.0.0/9 and
 * 10.128.0.0/9); a host range has none.
 */
export function cidrHalves(cidr: Cidr): Cidr[] {
  const prefix = cidr.prefix + 1;
  if (cidr.family === 4) {
    if (prefix > 32) return [];
    return [
      { family: 4, base: cidr.base, prefix },
      { family: 4, base: (cidr.base + 2 ** (32 - prefix)) >>> 0, prefix },
    ];
  }
  if (prefix > 128) return [];
  return [
    { family: 6, base: cidr.base, prefix },
    { family: 6, base: cidr.base + (1n << BigInt(128 - prefix)), prefix },
  ];
}

/** Orders address values: every IPv4 before every IPv6, then numerically. */
export function compareAddress(a: Address, b: Address): number {
  if (typeof a === "number") return typeof b === "number" ? a - b : -1;
  if (typeof b === "number") return 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Orders ranges: by family (IPv4 first), then base address, then prefix length. */
export function compareCidrs(a: Cidr, b: Cidr): number {
  return compareAddress(a.base, b.base) || a.prefix - b.prefix;
}

/**
 * Compares two address texts of either family (IPv4 first, then numerically;
 * text that parses as neither sorts first), for stable, human ordering.
 */
export function compareIp(a: string, b: string): number {
  const pa = parseIp(a);
  const pb = parseIp(b);
  if (pa === undefined || pb === undefined) {
    return (pa === undefined ? 0 : 1) - (pb === undefined ? 0 : 1);
  }
  return compareAddress(pa, pb);
}

/**
 * Compares two address texts (for stable, human ordering). The same order as
 * {@link compareIp}, which it is: IPv4 lists sort as they always did.
 */
export const compareIPv4: (a: string, b: string) => number = compareIp;

/** Compares two range texts by family, address, then prefix length (unparseable text first). */
export function compareCidr(a: string, b: string): number {
  const ca = parseCidr(a);
  const cb = parseCidr(b);
  if (ca === undefined || cb === undefined) {
    return (ca === undefined ? 0 : 1) - (cb === undefined ? 0 : 1);
  }
  return compareCidrs(ca, cb);
}
