/**
 * The CEL environment of CRD validation rules (`x-kubernetes-validations`),
 * evaluated with @bufbuild/cel: the standard library, plus the parts of
 * Kubernetes' own CEL libraries that our CRDs use (the IP/CIDR library of
 * Kubernetes 1.31: `isCIDR`, `cidr`, `.ip()`, `.family()`, `.masked()`,
 * `.prefixLength()`, `isIP`, `ip`, `ip.isCanonical`). CIDRs and IPs are carried as their
 * canonical text, so `==` compares them as Kubernetes does.
 */
import { celEnv, celFunc, celMethod, CelScalar, isCelError, parse, plan } from "@bufbuild/cel";
import { isIPv4, parseIPv4 } from "../core/ip.ts";
import { isIPv6 } from "node:net";

const S = CelScalar.STRING;

function ipv4Prefix(text: string): { ip: string; prefix: number } | undefined {
  const [ip, len, ...rest] = text.split("/");
  if (rest.length > 0 || len === undefined || !/^(0|[1-9][0-9]?)$/.test(len)) return undefined;
  const prefix = Number(len);
  if (isIPv4(ip) && prefix <= 32) return { ip, prefix };
  if (isIPv6(ip) && !ip.includes("%") && prefix <= 128) return { ip, prefix };
  return undefined;
}

function masked(text: string): string {
  const parsed = ipv4Prefix(text);
  if (!parsed) throw new Error(`invalid cidr ${text}`);
  if (!isIPv4(parsed.ip)) return text; // IPv6: the rules we ship refuse it earlier
  const value = parseIPv4(parsed.ip)!;
  const mask = parsed.prefix === 0 ? 0 : (0xffffffff << (32 - parsed.prefix)) >>> 0;
  const base = (value & mask) >>> 0;
  return `${
    [base >>> 24, (base >>> 16) & 255, (base >>> 8) & 255, base & 255].join(".")
  }/${parsed.prefix}`;
}

const FUNCS = [
  celFunc("isCIDR", [S], CelScalar.BOOL, (s) => ipv4Prefix(s) !== undefined),
  celFunc("isIP", [S], CelScalar.BOOL, (s) => isIPv4(s) || (isIPv6(s) && !s.includes("%"))),
  celFunc("ip.isCanonical", [S], CelScalar.BOOL, (s) => {
    if (isIPv4(s)) return true;
    if (!isIPv6(s) || s.includes("%")) throw new Error(`IP Address "${s}" parse error`);
    return new URL(`http://[${s}]/`).hostname === `[${s}]`;
  }),
  celFunc("cidr", [S], S, (s) => {
    if (!ipv4Prefix(s)) {
      throw new Error(`network address parse error during conversion from string: ${s}`);
    }
    return s;
  }),
  celFunc("ip", [S], S, (s) => {
    if (!isIPv4(s) && !isIPv6(s)) throw new Error(`IP Address "${s}" parse error`);
    return s;
  }),
  celMethod("ip", S, [], S, function () {
    return this.split("/")[0];
  }),
  celMethod("masked", S, [], S, function () {
    return masked(this);
  }),
  celMethod("prefixLength", S, [], CelScalar.INT, function () {
    return BigInt(this.split("/")[1] ?? 0);
  }),
  celMethod("family", S, [], CelScalar.INT, function () {
    return isIPv4(this.split("/")[0]) ? 4n : 6n;
  }),
];

const env = celEnv({ funcs: FUNCS });
const compiled = new Map<string, ReturnType<typeof plan>>();

/** JSON data as CEL sees it: objects are maps, integers are ints. */
export function toCel(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(toCel);
  if (value && typeof value === "object") {
    return new Map(Object.entries(value).map(([k, v]) => [k, toCel(v)]));
  }
  if (typeof value === "number" && Number.isInteger(value)) return BigInt(value);
  return value;
}

/** Evaluates an expression with `self` bound; throws with CEL's message on an error. */
export function evaluate(expression: string, self: unknown): unknown {
  let program = compiled.get(expression);
  if (!program) compiled.set(expression, program = plan(env, parse(expression)));
  const result = (program as (ctx: unknown) => unknown)({ self: toCel(self) });
  if (isCelError(result)) throw new Error((result as { message: string }).message);
  return result;
}
