/**
 * Who else uses packet mark bits on this node, read from `iptables-save`
 * (either backend), `nft -j list ruleset` (native nftables tables) and
 * `ip -j rule show`. Each use says which bits it writes or reads, so the
 * doctor can tell whether they overlap kube-egress's mark mask.
 *
 * iptables-save prints every MARK variant as `--set-xmark value/mask`
 * (mark = (mark & ~mask) ^ value), so the bits it may change are value|mask.
 * Our own chains (KUBE-EGRESS-*) and rules (our route protocol) are skipped.
 */
import { hex } from "./marks.ts";
import { CHAINS } from "./names.ts";

export const FULL = 0xffffffff;

/** One rule that writes or reads packet mark bits. */
export interface MarkUse {
  /** Where: "iptables-nft mangle PREROUTING", "nft ip kube-proxy post", "ip rule 900". */
  readonly where: string;
  /** The rule as printed. */
  readonly rule: string;
  readonly access: "write" | "read";
  /** The bits written, or the bits compared. */
  readonly bits: number;
  /** For reads: the value compared under `bits`. */
  readonly value?: number;
  /** For ip rules: the priority (lower runs first). */
  readonly priority?: number;
}

const OUR_CHAINS = new Set<string>(CHAINS.map((c) => c.chain));

const num = (text: string) => Number.parseInt(text, text.startsWith("0x") ? 16 : 10) >>> 0;

/** value/mask as iptables prints it; a missing mask is the whole 32 bits. */
function valueMask(text: string): { value: number; mask: number } {
  const [value, mask] = text.split("/");
  return { value: num(value), mask: mask === undefined ? FULL : num(mask) };
}

/** The mark uses of one `iptables-save` text (all tables); `label` names the backend. */
export function iptablesMarkUses(save: string, label: string): MarkUse[] {
  const uses: MarkUse[] = [];
  let table = "";
  for (const raw of save.split("\n")) {
    const line = raw.trim().replace(/^\[\d+:\d+\] /, "");
    if (line.startsWith("*")) table = line.slice(1);
    if (!line.startsWith("-A ")) continue;
    const chain = line.split(" ")[1];
    if (OUR_CHAINS.has(chain)) continue;
    const where = `${label} ${table} ${chain}`;
    const add = (access: MarkUse["access"], bits: number, value?: number) =>
      uses.push({ where, rule: line, access, bits: bits >>> 0, value });
    const option = (name: string) => new RegExp(`${name} (\\S+)`).exec(line)?.[1];
    const target = / -j (\S+)/.exec(line)?.[1];
    if (target === "MARK") {
      const xmark = option("--set-xmark") ?? option("--set-mark");
      if (xmark) {
        const { value, mask } = valueMask(xmark);
        add("write", value | mask);
      }
      for (const op of ["--or-mark", "--xor-mark"]) {
        const v = option(op);
        if (v) add("write", num(v));
      }
      const and = option("--and-mark");
      if (and) add("write", ~num(and));
    } else if (target === "CONNMARK") {
      const nfmask = num(option("--nfmask") ?? "0xffffffff");
      if (line.includes("--restore-mark")) add("write", nfmask);
      else if (line.includes("--save-mark")) add("read", nfmask);
    } else if (target === "TPROXY") {
      const mark = option("--tproxy-mark") ?? option("--on-mark");
      if (mark) {
        const { value, mask } = valueMask(mark);
        add("write", value | mask);
      }
    } else if (target === "SET" && line.includes("--map-mark")) {
      add("write", FULL);
    }
    // -m mark [!] --mark value[/mask]: reads bits (connmark matches read the ct mark, not ours).
    for (const m of line.matchAll(/-m mark (?:! )?--mark (\S+)/g)) {
      const { value, mask } = valueMask(m[1]);
      add("read", mask, value & mask);
    }
  }
  return uses;
}

type Json = Record<string, unknown>;

const isMetaMark = (e: unknown) => ((e as Json)?.meta as Json)?.key === "mark";

/** Bits of the old mark an nft expression keeps (the rest it may change). */
function preservedBits(expr: unknown): number {
  if (isMetaMark(expr)) return FULL;
  const e = expr as Json;
  const binary = (op: string) => e?.[op] as [unknown, unknown] | undefined;
  const operand = (pair: [unknown, unknown]) => typeof pair[1] === "number" ? pair[1] >>> 0 : 0;
  const or = binary("|") ?? binary("^");
  if (or) return (preservedBits(or[0]) & ~operand(or)) >>> 0;
  const and = binary("&");
  if (and) return (preservedBits(and[0]) & operand(and)) >>> 0;
  return 0; // a constant, the ct mark, a map: every bit may change
}

/** iptables-nft's own tables show up in nft too; they are read from iptables-save instead. */
const IPTABLES_TABLES = new Set(["filter", "nat", "mangle", "raw", "security"]);

/** Native nftables tables (not iptables-nft's). */
export function isNativeTable(family: string, name: string): boolean {
  return !((family === "ip" || family === "ip6") && IPTABLES_TABLES.has(name));
}

/** The rules of native nftables tables in `nft -j list ruleset` output. */
export function nativeNftRules(json: string): { where: string; expr: Json[] }[] {
  const items = (JSON.parse(json) as { nftables?: Json[] }).nftables ?? [];
  return items.flatMap((item) => {
    const rule = item.rule as Json | undefined;
    if (!rule || !isNativeTable(String(rule.family), String(rule.table))) return [];
    return [{
      where: `nft ${rule.family} ${rule.table} ${rule.chain}`,
      expr: (rule.expr as Json[]) ?? [],
    }];
  });
}

/** The mark uses of native nftables rules. */
export function nftMarkUses(json: string): MarkUse[] {
  const uses: MarkUse[] = [];
  for (const { where, expr } of nativeNftRules(json)) {
    const rule = JSON.stringify(expr);
    for (const statement of expr) {
      const mangle = statement.mangle as Json | undefined;
      if (mangle && isMetaMark(mangle.key)) {
        uses.push({ where, rule, access: "write", bits: ~preservedBits(mangle.value) >>> 0 });
      }
      const match = statement.match as Json | undefined;
      if (!match) continue;
      const left = match.left as Json;
      const right = typeof match.right === "number" ? match.right >>> 0 : undefined;
      if (isMetaMark(left)) uses.push({ where, rule, access: "read", bits: FULL, value: right });
      const and = left?.["&"] as [unknown, unknown] | undefined;
      if (and && isMetaMark(and[0]) && typeof and[1] === "number") {
        uses.push({ where, rule, access: "read", bits: and[1] >>> 0, value: right });
      }
    }
  }
  return uses;
}

/** Other components' `ip rule` entries that match on fwmark (ours carry our protocol). */
export function ipRuleMarkUses(json: string, ourProtocol: number): MarkUse[] {
  const rules = JSON.parse(json) as Json[];
  return rules.filter((r) => r.fwmark !== undefined && String(r.protocol) !== String(ourProtocol))
    .map((r) => {
      const mask = r.fwmask === undefined ? FULL : num(String(r.fwmask));
      return {
        where: `ip rule ${r.priority}`,
        rule: `pref ${r.priority} fwmark ${r.fwmark}/${hex(mask)} lookup ${r.table}`,
        access: "read" as const,
        bits: mask,
        value: num(String(r.fwmark)) & mask,
        priority: Number(r.priority),
      };
    });
}

/**
 * 8 consecutive free bits (a mask for --mark-mask) avoiding `used`, lowest
 * first; undefined when none is free.
 */
export function freeMarkWindow(used: number): number | undefined {
  for (let shift = 0; shift <= 24; shift += 8) {
    const window = (0xff * 2 ** shift) >>> 0;
    if ((window & used) === 0) return window;
  }
  for (let shift = 1; shift <= 24; shift++) {
    const window = (0xff * 2 ** shift) >>> 0;
    if ((window & used) === 0) return window;
  }
  return undefined;
}
