/**
 * IPv4 addresses and CIDR ranges as plain numbers: strict parsing (no leading
 * zeros, no shorthand, so "010.0.0.1" is never read as octal) and exact
 * comparisons, never substring tests.
 */

/** An IPv4 network: base address (host bits zero) and prefix length. */
export interface Cidr {
  readonly base: number;
  readonly prefix: number;
}

const DOT = 46;
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

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Parses "a.b.c.d/n" (or a bare address, read as /32). Host bits must be zero:
 * "10.0.0.1/8" is almost always a typo, so it is rejected rather than guessed.
 */
export function parseCidr(text: string): Cidr | undefined {
  const [addr, len, ...rest] = text.split("/");
  if (rest.length > 0) return undefined;
  const base = parseIPv4(addr);
  if (base === undefined) return undefined;
  if (len === undefined) return { base, prefix: 32 };
  if (!/^(0|[1-9][0-9]?)$/.test(len)) return undefined;
  const prefix = Number(len);
  if (prefix > 32) return undefined;
  if (((base & ~maskOf(prefix)) >>> 0) !== 0) return undefined;
  return { base, prefix };
}

/** Formats a range as "a.b.c.d/n". */
export function formatCidr(cidr: Cidr): string {
  return `${formatIPv4(cidr.base)}/${cidr.prefix}`;
}

/** True when the address lies inside the range. */
export function cidrContains(cidr: Cidr, address: number): boolean {
  return ((address & maskOf(cidr.prefix)) >>> 0) === cidr.base;
}

/** True when two ranges share at least one address. */
export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  const prefix = Math.min(a.prefix, b.prefix);
  const mask = maskOf(prefix);
  return ((a.base & mask) >>> 0) === ((b.base & mask) >>> 0);
}

/** Compares two dotted-quad addresses numerically (for stable, human ordering). */
export function compareIPv4(a: string, b: string): number {
  return (parseIPv4(a) ?? 0) - (parseIPv4(b) ?? 0);
}

/** Compares two canonical ranges by address, then prefix length. */
export function compareCidr(a: string, b: string): number {
  const [ia, pa] = a.split("/");
  const [ib, pb] = b.split("/");
  return compareIPv4(ia, ib) || Number(pa) - Number(pb);
}
