/**
 * The zod schemas every input goes through: addresses, ranges, route ids, the
 * mark mask and the datapath settings. Kubernetes objects and CLI flags build on
 * these, so one rule is written once.
 */
import { z } from "zod";
import { formatCidr, formatIp, isIPv4Mapped, parseCidr, parseIPv4, parseIPv6 } from "./ip.ts";

/** Route ids, as in the old kube-egress: 1..252 (253-255 are the kernel's default/main/local tables). */
export const MIN_ROUTE_ID = 1;
export const MAX_ROUTE_ID = 252;

/** A canonical dotted-quad IPv4 address (no leading zeros). */
export const ipv4 = z.ipv4({ error: "must be an IPv4 address such as 192.0.2.10" });

/** The messages of `cidrv4`, shared with the CRDs' CEL rules (core/kube/api.ts). */
export const CIDR_MESSAGES = {
  syntax: "must be an IPv4 range such as 10.244.0.0/16",
  hostBits: "has host bits set (did you mean the network address?)",
} as const;

/** An IPv4 range "a.b.c.d/n" whose host bits are zero. */
export const cidrv4 = z.string().superRefine((text, ctx) => {
  if (!z.cidrv4().safeParse(text).success) {
    ctx.addIssue({ code: "custom", input: text, message: CIDR_MESSAGES.syntax });
  } else if (parseCidr(text) === undefined) {
    ctx.addIssue({ code: "custom", input: text, message: CIDR_MESSAGES.hostBits });
  }
});

/**
 * An address of either family, in canonical form: a dotted quad (no leading
 * zeros), or IPv6 as RFC 5952 writes it (so "2001:DB8::0001" reads as
 * "2001:db8::1", the text `ip` and `nft` print). No zone id; no IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d is an IPv4 address in disguise: write it as one).
 */
export const ipAddress = z.string({
  error: "must be an IP address such as 192.0.2.10 or 2001:db8::10",
})
  .transform((text, ctx) => {
    if (text.indexOf(":") < 0) {
      // The fast path (every pod, every pass): canonical IPv4 text is returned as it came.
      if (parseIPv4(text) !== undefined) return text;
    } else {
      const v6 = parseIPv6(text);
      if (v6 !== undefined && isIPv4Mapped(v6)) {
        ctx.addIssue({
          code: "custom",
          input: text,
          message: `is an IPv4-mapped IPv6 address: write the IPv4 address ${
            formatIp(Number(v6 & 0xffffffffn))
          } instead`,
        });
        return z.NEVER;
      }
      if (v6 !== undefined) return formatIp(v6);
    }
    ctx.addIssue({
      code: "custom",
      input: text,
      message: "must be an IP address such as 192.0.2.10 or 2001:db8::10",
    });
    return z.NEVER;
  });

/** The messages of `cidr` (either family). */
export const ANY_CIDR_MESSAGES = {
  syntax: "must be an IPv4 or IPv6 range such as 10.244.0.0/16 or fd00::/64",
  hostBits: CIDR_MESSAGES.hostBits,
} as const;

/**
 * A range of either family whose host bits are zero, in canonical form
 * ("FD00:0::/64" reads as "fd00::/64"); IPv4 text as it came.
 */
export const cidr = z.string({ error: ANY_CIDR_MESSAGES.syntax }).transform((text, ctx) => {
  const slash = text.indexOf("/");
  const parsed = slash > 0 ? parseCidr(text) : undefined;
  if (parsed !== undefined) return parsed.family === 4 ? text : formatCidr(parsed);
  // Host bits set, or not a range at all: tell which.
  const prefix = text.slice(slash + 1);
  const loose = slash > 0 && /^(0|[1-9][0-9]{0,2})$/.test(prefix) &&
    parseCidr(text.slice(0, slash)) !== undefined &&
    Number(prefix) <= (text.indexOf(":") < 0 ? 32 : 128);
  ctx.addIssue({
    code: "custom",
    input: text,
    message: loose ? ANY_CIDR_MESSAGES.hostBits : ANY_CIDR_MESSAGES.syntax,
  });
  return z.NEVER;
});

/** A policy-routing table / route id. */
export const routeId = z.int({ error: "must be a whole number" }).min(MIN_ROUTE_ID, {
  error: `must be between ${MIN_ROUTE_ID} and ${MAX_ROUTE_ID}`,
}).max(MAX_ROUTE_ID, { error: `must be between ${MIN_ROUTE_ID} and ${MAX_ROUTE_ID}` });

/** A route id written as text (file contents, flags): digits only. */
export const routeIdText = z.string().trim().regex(/^[0-9]+$/, {
  error: `must be a whole number between ${MIN_ROUTE_ID} and ${MAX_ROUTE_ID}`,
}).transform(Number).pipe(routeId);

/** A Linux interface name (IFNAMSIZ is 16 including the terminator). */
export const interfaceName = z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, {
  error: "must be a network interface name of 1-15 letters, digits, '.', '-' or '_'",
});

/**
 * The number of mark bits we need: route ids up to 252 fit in 8 bits. The mask
 * must hold 8 consecutive bits starting at its lowest set bit; marks are
 * `routeId << lowestBit`, so they never touch bits outside the mask.
 */
export const MARK_BITS = 8;

/** Parses "0xff00" or "65280" into a 32-bit mask that can carry every route id. */
export const markMask = z.union([z.number(), z.string()]).transform((value, ctx) => {
  const text = String(value).trim();
  const parsed = /^0x[0-9a-f]{1,8}$/i.test(text)
    ? parseInt(text, 16)
    : /^[0-9]{1,10}$/.test(text)
    ? Number(text)
    : NaN;
  if (!Number.isInteger(parsed) || parsed <= 0 || parsed > 0xffffffff) {
    ctx.addIssue({ code: "custom", message: "must be a 32-bit mask such as 0xff or 0xff00" });
    return z.NEVER;
  }
  const shift = 31 - Math.clz32(parsed & -parsed);
  const needed = ((2 ** MARK_BITS - 1) * 2 ** shift) >>> 0;
  if (shift + MARK_BITS > 32 || ((parsed & needed) >>> 0) !== needed) {
    ctx.addIssue({
      code: "custom",
      message: `needs ${MARK_BITS} consecutive bits from its lowest set bit (e.g. 0xff, 0xff00)`,
    });
    return z.NEVER;
  }
  return parsed >>> 0;
});

/** The settings that shape the datapath on a node; shared by every command and source. */
export const DatapathConfig = z.object({
  /** The LAN interface that holds VIPs and carries egress traffic. */
  interface: interfaceName,
  /** Pod ranges: mapped pods must be inside; traffic to them is never steered. */
  podCidrs: z.array(cidr).min(1, { error: "needs at least one pod range" }),
  /** Service ranges: traffic to them is never steered. */
  serviceCidrs: z.array(cidr),
  /** More destinations that are never steered (e.g. the node LAN, a storage network). */
  excludeCidrs: z.array(cidr),
  /** The fwmark bits this product may use. */
  markMask,
  /** Priority of the `ip rule` entries this product installs. */
  rulePriority: z.int().min(1).max(32765),
  /** The rtm_protocol that tags our ip rules and routes, so we find and remove exactly ours. */
  routeProtocol: z.int().min(5).max(255),
  /** Which datapath backend writes our rules (core/datapath.ts); `auto` is resolved in cmd/. */
  backend: z.enum(["iptables", "nftables"]).default("iptables"),
});
export type DatapathConfig = z.output<typeof DatapathConfig>;
export type DatapathConfigInput = z.input<typeof DatapathConfig>;

/** Defaults that keep clear of other components; see README "Marks, rules and routes". */
export const DATAPATH_DEFAULTS = {
  interface: "eth0",
  podCidrs: ["10.32.0.0/12"],
  serviceCidrs: ["10.96.0.0/12"],
  excludeCidrs: [] as string[],
  markMask: "0xff",
  rulePriority: 1000,
  routeProtocol: 233,
} as const;

/**
 * Renders a zod error as "field message; field message" for one-line reports.
 * `labels` names fields as the reader knows them (a flag, a part of a file);
 * when the issue carries the offending text (parse with `reportInput`), it is
 * quoted, so a list entry is named by its value rather than its index.
 */
export function describeIssues(error: z.ZodError, labels: Record<string, string> = {}): string {
  return error.issues.map((issue) => {
    const input = (issue as { input?: unknown }).input;
    const shown = typeof input === "string" || typeof input === "number";
    const path = issue.path
      .filter((p) => !(shown && typeof p === "number"))
      .map((p) => labels[String(p)] ?? String(p)).filter(Boolean).join(".");
    const value = shown ? `${JSON.stringify(input)} ` : "";
    return [path, value + issue.message].filter(Boolean).join(" ");
  }).join("; ");
}
