/**
 * `doctor`'s IPv6 checks, pure like the rest of core/doctor.ts:
 * - `vip-address-ipv6`: an IPv6 VIP held here must be /128, deprecated
 *   (`preferred_lft 0`, so RFC 6724 source selection never picks it for the
 *   node's own or masqueraded traffic: a plain /128 wins it, measured), added
 *   `nodad` (else it sits "tentative", unusable, for 1-2 s after every
 *   takeover), and neither tentative nor dadfailed now.
 * - `rp-filter-ipv6`: IPv6 has no rp_filter sysctl; what stands in for it
 *   (ip6tables `rpfilter`, nft `fib saddr . iif oif missing drop`,
 *   firewalld's `IPv6_rpfilter`, which is one of those two) must not drop
 *   the pod traffic other nodes forward to this node's IPv6 VIPs. A strict
 *   check does where the other nodes' pod ranges route through another
 *   device than the LAN interface (an overlay: vxlan, geneve, wireguard).
 */
import { z } from "zod";
import type { CheckReport } from "./doctor.ts";
import { cidrContains, cidrsOverlap, parseCidr, parseIp } from "./ip.ts";
import { reachableRules, tableRules } from "./iptables.ts";

/** One IPv6 address of the interface and its flags, as `ip -6 -j address show dev <if>` prints them. */
export interface Address6 {
  readonly local: string;
  readonly prefixlen: number;
  readonly tentative: boolean;
  readonly dadfailed: boolean;
  readonly deprecated: boolean;
  readonly nodad: boolean;
  /** Seconds; 0 = deprecated. Absent where `ip` did not print it. */
  readonly preferredLifetime?: number;
}

const AddrInfo = z.object({
  family: z.string().optional(),
  local: z.string(),
  prefixlen: z.number(),
  tentative: z.boolean().optional(),
  dadfailed: z.boolean().optional(),
  deprecated: z.boolean().optional(),
  nodad: z.boolean().optional(),
  preferred_life_time: z.number().optional(),
});
const Links = z.array(z.object({ addr_info: z.array(z.unknown()).optional() }));

/** Reads `ip -6 -j address show dev <if>`; entries it cannot read are left out. */
export function parseAddresses6(json: string): Address6[] {
  const links = Links.safeParse(JSON.parse(json || "[]"));
  if (!links.success) return [];
  const out: Address6[] = [];
  for (const raw of links.data.flatMap((l) => l.addr_info ?? [])) {
    const a = AddrInfo.safeParse(raw);
    if (!a.success || (a.data.family !== undefined && a.data.family !== "inet6")) continue;
    out.push({
      local: a.data.local,
      prefixlen: a.data.prefixlen,
      tentative: a.data.tentative === true,
      dadfailed: a.data.dadfailed === true,
      deprecated: a.data.deprecated === true,
      nodad: a.data.nodad === true,
      ...(a.data.preferred_life_time === undefined
        ? {}
        : { preferredLifetime: a.data.preferred_life_time }),
    });
  }
  return out;
}

/** `vip-address-ipv6`: every IPv6 VIP this node holds is placed so it can never be a source. */
export function checkVipAddresses6(
  iface: string,
  vips: readonly string[],
  addresses: readonly Address6[] | undefined,
): CheckReport {
  const id = "vip-address-ipv6";
  const v6 = vips.filter((v) => v.includes(":"));
  if (v6.length === 0) return { id, verdict: "pass", detail: "no IPv6 VIP configured" };
  if (addresses === undefined) {
    return { id, verdict: "skip", detail: `could not read the IPv6 addresses of ${iface}` };
  }
  const byIp = new Map(addresses.map((a) => [a.local, a]));
  const heldHere = v6.filter((v) => byIp.has(v));
  if (heldHere.length === 0) {
    return { id, verdict: "pass", detail: `this node holds none of the ${v6.length} IPv6 VIP(s)` };
  }
  const failures: string[] = [];
  const warnings: string[] = [];
  const troubled = new Set<string>();
  const fail = (ip: string, text: string) => (failures.push(text), troubled.add(ip));
  const warn = (ip: string, text: string) => (warnings.push(text), troubled.add(ip));
  for (const ip of heldHere) {
    const a = byIp.get(ip)!;
    if (a.dadfailed) {
      fail(ip, `${ip} dadfailed (another host on the LAN has it: the VIP is unusable here)`);
    } else if (a.tentative) fail(ip, `${ip} tentative (DAD under way: unusable until it ends)`);
    if (!a.deprecated && a.preferredLifetime !== 0) {
      fail(
        ip,
        `${ip} not deprecated (preferred_lft ${
          a.preferredLifetime === undefined || a.preferredLifetime >= 0xffffffff
            ? "forever"
            : `${a.preferredLifetime}s`
        }): source selection picks it for the node's own and masqueraded traffic`,
      );
    }
    if (!a.nodad && !a.dadfailed && !a.tentative) {
      warn(ip, `${ip} without nodad (the next takeover leaves it tentative for 1-2 s)`);
    }
    if (a.prefixlen !== 128) {
      warn(ip, `${ip}/${a.prefixlen} is not a /128 (it adds a prefix route of its own)`);
    }
  }
  if (troubled.size === 0) {
    return {
      id,
      verdict: "pass",
      detail: `${heldHere.length} IPv6 VIP(s) held: /128, nodad, deprecated (never a source)`,
    };
  }
  const fine = heldHere.length - troubled.size;
  const example = [...troubled][0];
  return {
    id,
    verdict: failures.length > 0 ? "fail" : "warn",
    detail: [...failures, ...warnings].join("; ") + (fine > 0 ? `; ${fine} other(s) fine` : ""),
    fix: `place IPv6 VIPs as \`ip addr add ${example}/128 dev ${iface} nodad preferred_lft 0\` ` +
      `(keepalived: \`${example}/128 dev ${iface} preferred_lft 0\`, without \`-nodad\`, which ` +
      `turns DAD on in keepalived 2.2.7; kube-egress's keepalived mode does this). On this ` +
      `node now: \`ip addr del ${example}/128 dev ${iface} && ip addr add ${example}/128 dev ` +
      `${iface} nodad preferred_lft 0\`` +
      (failures.some((p) => p.includes("dadfailed"))
        ? "; dadfailed: find the other host (`ndisc6 <vip> <iface>` from a third host) and take the address off it first"
        : ""),
  };
}

/** A strict reverse-path filter found on the node, and where. */
export interface StrictRpFilter {
  readonly where: string;
  readonly rule: string;
  readonly kind: "ip6tables" | "nft";
  readonly firewalld: boolean;
}

/**
 * Strict rpfilter rules of `ip6tables-save` that drop and apply to `iface`:
 * `-m rpfilter` without `--loose` in raw or mangle PREROUTING (or a chain it
 * jumps to), not limited to another input interface.
 */
export function strictIp6tablesRpFilters(save: string, iface: string): StrictRpFilter[] {
  const out: StrictRpFilter[] = [];
  for (const table of ["raw", "mangle"]) {
    const rules = tableRules(save, table);
    for (const rule of reachableRules(rules, "PREROUTING")) {
      if (!/-m rpfilter\b/.test(rule) || /--loose\b/.test(rule)) continue;
      if (!/-j (DROP|REJECT)\b/.test(rule)) continue;
      const input = /(!\s+)?-i (\S+)/.exec(rule);
      if (input && !input[1] && !interfaceMatches(input[2], iface)) continue;
      if (input && input[1] && interfaceMatches(input[2], iface)) continue;
      const chain = rule.split(" ")[1];
      out.push({
        where: `ip6tables -t ${table} ${chain}`,
        rule,
        kind: "ip6tables",
        firewalld: false,
      });
    }
  }
  return out;
}

function interfaceMatches(pattern: string, iface: string): boolean {
  return pattern.endsWith("+") ? iface.startsWith(pattern.slice(0, -1)) : pattern === iface;
}

const NftJson = z.object({ nftables: z.array(z.record(z.string(), z.unknown())) });
const NftChain = z.object({
  family: z.string(),
  table: z.string(),
  name: z.string(),
  hook: z.string().optional(),
});
const NftRule = z.object({
  family: z.string(),
  table: z.string(),
  chain: z.string(),
  expr: z.array(z.record(z.string(), z.unknown())),
});

/**
 * Strict `fib` reverse-path rules of `nft -j list ruleset` that drop IPv6
 * packets arriving on `iface`: `fib saddr . iif oif missing drop` (with or
 * without `. mark`) in a prerouting chain of an `ip6` or `inet` table,
 * unless the rule is limited to another input interface or to IPv4. Rules
 * of iptables-nft (`xt` matches) are left to `strictIp6tablesRpFilters`.
 */
export function strictNftRpFilters(json: string, iface: string): StrictRpFilter[] {
  const parsed = NftJson.safeParse(JSON.parse(json || "{}"));
  if (!parsed.success) return [];
  const prerouting = new Set<string>();
  const out: StrictRpFilter[] = [];
  for (const item of parsed.data.nftables) {
    const chain = NftChain.safeParse(item.chain);
    if (chain.success && chain.data.hook === "prerouting") {
      prerouting.add(`${chain.data.family} ${chain.data.table} ${chain.data.name}`);
    }
  }
  for (const item of parsed.data.nftables) {
    const rule = NftRule.safeParse(item.rule);
    if (!rule.success) continue;
    const { family, table, chain, expr } = rule.data;
    if (family !== "ip6" && family !== "inet") continue;
    if (!prerouting.has(`${family} ${table} ${chain}`)) continue;
    const text = JSON.stringify(expr);
    const fib = expr.map((e) => fibOf(e)).find((f) => f !== undefined);
    if (!fib || !fib.flags.includes("saddr") || !fib.flags.includes("iif")) continue;
    if (fib.result !== "oif" || !expr.some((e) => "drop" in e)) continue;
    if (/"op":"==","left":\{"meta":\{"key":"nfproto"\}\},"right":"ipv4"/.test(text)) continue;
    const iifname = /"op":"==","left":\{"meta":\{"key":"iifname"\}\},"right":"([^"]+)"/.exec(text)
      ?.[1];
    if (iifname !== undefined && !interfaceMatches(iifname.replace(/\*$/, "+"), iface)) continue;
    out.push({
      where: `nft ${family} ${table} ${chain}`,
      rule: `fib saddr . ${fib.flags.includes("mark") ? "mark . " : ""}iif oif missing drop`,
      kind: "nft",
      firewalld: table === "firewalld",
    });
  }
  return out;
}

function fibOf(e: Record<string, unknown>): { result: string; flags: string[] } | undefined {
  const match = e.match as { left?: { fib?: { result?: string; flags?: unknown } } } | undefined;
  const fib = match?.left?.fib;
  if (!fib || typeof fib.result !== "string") return undefined;
  const flags = Array.isArray(fib.flags) ? fib.flags.map(String) : [String(fib.flags ?? "")];
  return { result: fib.result, flags };
}

/** `IPv6_rpfilter` of firewalld.conf (firewalld's default when absent: yes, strict). */
export function firewalldRpFilter(conf: string | undefined): string | undefined {
  if (conf === undefined) return undefined;
  const line = conf.split("\n").map((l) => l.trim()).find((l) => /^IPv6_rpfilter\s*=/.test(l));
  return line ? line.split("=")[1].trim() : "yes";
}

/** One IPv6 route of `ip -6 -j route show` (main table). */
export interface Route6 {
  readonly dst: string;
  readonly dev?: string;
  readonly gateway?: string;
  readonly protocol?: string;
}

const Routes = z.array(z.object({
  dst: z.string(),
  dev: z.string().optional(),
  gateway: z.string().optional(),
  protocol: z.string().optional(),
}));

/** Reads `ip -6 -j route show`; unreadable output reads as no routes. */
export function parseRoutes6(json: string): Route6[] {
  const parsed = Routes.safeParse(JSON.parse(json || "[]"));
  return parsed.success ? parsed.data : [];
}

/**
 * The routes into the IPv6 pod ranges that lead elsewhere than `iface` and
 * are not this node's own pods (a `kernel` route of a local bridge): the
 * reverse path of other nodes' pods whose traffic arrives on `iface`.
 */
export function foreignPodRoutes(
  routes: readonly Route6[],
  podCidrs: readonly string[],
  iface: string,
): Route6[] {
  const ranges = podCidrs.map(parseCidr).filter((c) => c !== undefined && c.family === 6);
  return routes.filter((r) => {
    const dst = r.dst === "default"
      ? undefined
      : parseCidr(r.dst.includes("/") ? r.dst : `${r.dst}/128`);
    if (!dst || !ranges.some((c) => cidrsOverlap(c!, dst))) return false;
    return r.dev !== iface && r.protocol !== "kernel";
  });
}

/** Whether `ip` lies in one of `cidrs`. */
export function inRanges(ip: string, cidrs: readonly string[]): boolean {
  const address = parseIp(ip);
  return address !== undefined &&
    cidrs.some((c) => {
      const cidr = parseCidr(c);
      return cidr !== undefined && cidrContains(cidr, address);
    });
}

/** What `rp-filter-ipv6` reads. */
export interface RpFilter6Facts {
  readonly iface: string;
  readonly podCidrs: readonly string[];
  readonly vips: readonly string[];
  /** `ip6tables-save` of the backend in use. */
  readonly ip6tablesSave?: string;
  /** `nft -j list ruleset`. */
  readonly nftRuleset?: string;
  /** /etc/firewalld/firewalld.conf. */
  readonly firewalldConf?: string;
  /** `ip -6 -j route show`. */
  readonly routes6?: string;
}

/** `rp-filter-ipv6`: no strict IPv6 reverse-path filter drops the pod traffic forwarded to this node's IPv6 VIPs. */
export function checkRpFilter6(f: RpFilter6Facts): CheckReport {
  const id = "rp-filter-ipv6";
  const strict = [
    ...(f.ip6tablesSave ? strictIp6tablesRpFilters(f.ip6tablesSave, f.iface) : []),
    ...(f.nftRuleset ? strictNftRpFilters(f.nftRuleset, f.iface) : []),
  ];
  const firewalld = firewalldRpFilter(f.firewalldConf);
  const v6 = f.vips.filter((v) => v.includes(":"));
  if (strict.length === 0) {
    return {
      id,
      verdict: "pass",
      detail: `no strict IPv6 reverse-path filter applies to ${f.iface}` +
        (firewalld !== undefined ? ` (firewalld IPv6_rpfilter=${firewalld}, not strict here)` : ""),
    };
  }
  const found = strict.map((s) => `${s.where}: ${s.rule}`).join("; ");
  if (v6.length === 0) {
    return {
      id,
      verdict: "pass",
      detail:
        `strict IPv6 reverse-path filter (${found}); no IPv6 VIP configured, nothing forwarded`,
    };
  }
  if (f.routes6 === undefined) {
    return {
      id,
      verdict: "warn",
      detail:
        `strict IPv6 reverse-path filter (${found}); could not read the IPv6 routes to tell ` +
        "whether it drops other nodes' pod traffic",
      fix: fixFor(strict, f, firewalld),
    };
  }
  const foreign = foreignPodRoutes(parseRoutes6(f.routes6), f.podCidrs, f.iface);
  if (foreign.length === 0) {
    return {
      id,
      verdict: "pass",
      detail: `strict IPv6 reverse-path filter (${found}), but every other node's IPv6 pod range ` +
        `routes via ${f.iface}: the reverse path of their forwarded traffic matches`,
    };
  }
  const devices = [...new Set(foreign.map((r) => r.dev ?? "?"))].join(", ");
  return {
    id,
    verdict: "fail",
    detail:
      `strict IPv6 reverse-path filter (${found}) drops the pod traffic other nodes forward ` +
      `to this node's IPv6 VIPs: it arrives on ${f.iface}, but their pod ranges route via ` +
      `${devices} (${foreign.slice(0, 3).map((r) => r.dst).join(", ")}${
        foreign.length > 3 ? ", ..." : ""
      })`,
    fix: fixFor(strict, f, firewalld),
  };
}

function fixFor(strict: readonly StrictRpFilter[], f: RpFilter6Facts, firewalld?: string): string {
  const pods = f.podCidrs.filter((c) => c.includes(":")).join(",") || "<IPv6 pod range>";
  const fixes: string[] = [];
  if (
    strict.some((s) => s.firewalld) || (firewalld !== undefined && /^(yes|strict)/.test(firewalld))
  ) {
    fixes.push(
      "firewalld: IPv6_rpfilter=loose in /etc/firewalld/firewalld.conf (firewalld 2.x; `no` on " +
        "older ones), then `firewall-cmd --reload`",
    );
  }
  if (strict.some((s) => s.kind === "ip6tables" && !s.firewalld)) {
    fixes.push(
      "ip6tables: make the rule loose (`-m rpfilter --loose --invert -j DROP`), or accept the " +
        `forwarded pod traffic before it in the same table: \`ip6tables -t raw -I PREROUTING -i ${f.iface} ` +
        `-s ${pods} -j ACCEPT\``,
    );
  }
  if (strict.some((s) => s.kind === "nft" && !s.firewalld)) {
    fixes.push(
      `nft: make it loose (\`fib saddr oif missing drop\`, without \`. iif\`), or accept first: ` +
        `\`iifname "${f.iface}" ip6 saddr { ${pods} } accept\``,
    );
  }
  return fixes.join("; ");
}
