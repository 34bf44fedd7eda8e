/**
 * Our iptables chains: read from `iptables-save -t <table>`, compared with the
 * desired rules, and written back as one `iptables-restore --noflush` payload
 * that declares (and so flushes) only our own chains. Foreign chains and rules
 * are parsed only to know where our jump sits and whether a table would be left
 * empty; they are never rewritten.
 */
import { CHAINS, type TableName } from "./names.ts";
import type { ChainChange, TableChanges } from "./operation.ts";

/** What one table holds, as far as we care. */
export interface LiveTable {
  /** The table is listed at all (iptables-nft creates tables on first use). */
  readonly present: boolean;
  /** Our chain exists. */
  readonly chainExists: boolean;
  /** Our chain's rules, as printed ("-A CHAIN ..."). */
  readonly rules: readonly string[];
  /** The rules of the built-in hook chain, in order (to find our jump and its position). */
  readonly hookRules: readonly string[];
  /** Nothing but ours: no foreign rules, no foreign chains, every built-in policy ACCEPT. */
  readonly onlyOurs: boolean;
}

/** A table not read, or holding nothing of ours. */
export const NO_TABLE: LiveTable = {
  present: false,
  chainExists: false,
  rules: [],
  hookRules: [],
  onlyOurs: false,
};

export type LiveIptables = Readonly<Record<TableName, LiveTable>>;

const BUILTIN_CHAINS = new Set(["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]);

/**
 * The jump from the built-in chain to ours, commented so an operator knows whose
 * it is. Written exactly as iptables-save prints it (one-word comments unquoted),
 * so that an unchanged pass compares equal.
 */
export function jumpRule(table: TableName): string {
  const { chain, hook } = CHAINS.find((c) => c.table === table)!;
  return `-A ${hook} -m comment --comment kube-egress -j ${chain}`;
}

function jumpsTo(chain: string, rule: string): boolean {
  return rule.endsWith(` -j ${chain}`) || rule.includes(` -j ${chain} `);
}

/** The `-A` rules of one table of `iptables-save`/`ip6tables-save` output, trimmed. */
export function tableRules(save: string, table: string): string[] {
  const out: string[] = [];
  let current = "";
  for (const line of save.split("\n")) {
    if (line.startsWith("*")) current = line.slice(1).trim();
    else if (current === table && line.startsWith("-A ")) out.push(line.trim());
  }
  return out;
}

/** The rules of `chain` and of every chain it jumps or goes to, each chain once. */
export function reachableRules(
  rules: readonly string[],
  chain: string,
  seen = new Set<string>(),
): string[] {
  if (seen.has(chain)) return [];
  seen.add(chain);
  const own = rules.filter((r) => r.startsWith(`-A ${chain} `));
  const targets = own.flatMap((r) => [...r.matchAll(/ -[jg] (\S+)/g)].map((m) => m[1]));
  return [...own, ...targets.flatMap((t) => reachableRules(rules, t, seen))];
}

/** Parses one table of `iptables-save` output (the whole output is fine too). */
export function parseIptablesSave(text: string, table: TableName): LiveTable {
  const { chain, hook } = CHAINS.find((c) => c.table === table)!;
  let inTable = false;
  let present = false;
  let chainExists = false;
  let foreign = false;
  const rules: string[] = [];
  const hookRules: string[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (line.startsWith("*")) {
      inTable = line === `*${table}`;
      present ||= inTable;
      continue;
    }
    if (!inTable || line === "" || line.startsWith("#") || line === "COMMIT") continue;
    if (line.startsWith(":")) {
      const [name, policy] = line.slice(1).split(" ");
      if (name === chain) chainExists = true;
      else if (!BUILTIN_CHAINS.has(name) || policy !== "ACCEPT") foreign = true;
      continue;
    }
    // Counters ("[p:b] -A ...") appear only with -c; drop them.
    const rule = line.replace(/^\[\d+:\d+\] /, "");
    if (rule.startsWith(`-A ${chain} `)) rules.push(rule);
    else if (rule.startsWith(`-A ${hook} `)) {
      hookRules.push(rule);
      if (!jumpsTo(chain, rule)) foreign = true;
    } else foreign = true;
  }
  return { present, chainExists, rules, hookRules, onlyOurs: present && !foreign };
}

/**
 * Parses `iptables -t <table> -S <hook>` and `-S <our chain>` (undefined when
 * our chain does not exist): our rules and the hook chain's, as iptables-save
 * prints them, without listing the whole table. A pass needs no more; only
 * `delete` asks whether a table holds nothing but ours, so `onlyOurs` is false
 * here (unknown).
 */
export function parseChainListings(
  table: TableName,
  hookListing: string,
  chainListing: string | undefined,
): LiveTable {
  const { chain, hook } = CHAINS.find((c) => c.table === table)!;
  const rulesOf = (text: string, name: string) =>
    text.split("\n").map((line) => line.trimEnd()).filter((line) => line.startsWith(`-A ${name} `));
  return {
    present: true,
    chainExists: chainListing !== undefined,
    rules: chainListing === undefined ? [] : rulesOf(chainListing, chain),
    hookRules: rulesOf(hookListing, hook),
    onlyOurs: false,
  };
}

/** Parses the per-rule packet/byte counters of our chain from `iptables-save -c`. */
export function parseRuleCounters(
  text: string,
  table: TableName,
): { rule: string; packets: number; bytes: number }[] {
  const { chain } = CHAINS.find((c) => c.table === table)!;
  let inTable = false;
  const counters: { rule: string; packets: number; bytes: number }[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("*")) inTable = line.trim() === `*${table}`;
    const match = inTable && /^\[(\d+):(\d+)\] (-A .*)$/.exec(line.trimEnd());
    if (match && match[3].startsWith(`-A ${chain} `)) {
      counters.push({ rule: match[3], packets: Number(match[1]), bytes: Number(match[2]) });
    }
  }
  return counters;
}

/** A rule as iptables-save prints it ("-A CHAIN <rule>"), as chain and rule. */
export function splitRule(line: string): { chain: string; rule: string } {
  const space = line.indexOf(" ", 3);
  return space < 0
    ? { chain: line.slice(3), rule: "" }
    : { chain: line.slice(3, space), rule: line.slice(space + 1) };
}

function deletion(line: string): ChainChange {
  return { verb: "delete", ...splitRule(line) };
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((item, i) => item === b[i]);
}

/**
 * The changes (one restore) that turn `live` into `desired`, or [] when nothing
 * differs. Our chain is rewritten whole when any of its rules differ (it holds
 * one rule per VIP at most; pod changes go to the ipset, not here). The jump
 * must be the first rule of the hook chain, exactly once.
 */
export function diffIptables(
  live: LiveIptables,
  desired: Readonly<Record<TableName, readonly string[]>>,
): TableChanges[] {
  const tables: TableChanges[] = [];
  for (const { table, chain } of CHAINS) {
    const have = live[table];
    const want = desired[table];
    const declare: ChainChange[] = [];
    const rules: ChainChange[] = [];
    if (!have.chainExists || !sameList(have.rules, want)) {
      declare.push({ verb: "declare", chain });
      rules.push(...want.map((line): ChainChange => ({ verb: "append", ...splitRule(line) })));
    }
    const jump = jumpRule(table);
    const jumps = have.hookRules.filter((rule) => jumpsTo(chain, rule));
    const reorder: ChainChange[] = [];
    if (!(jumps.length === 1 && have.hookRules[0] === jump)) {
      reorder.push(...jumps.map(deletion), { verb: "insert", position: 1, ...splitRule(jump) });
    }
    // Declared chains come first in the section, so the jump's target exists.
    const changes = [...declare, ...reorder, ...rules];
    if (changes.length > 0) tables.push({ table, changes });
  }
  return tables;
}

/** The changes (one restore) that remove our jumps and chains, leaving every other rule alone. */
export function deleteIptables(live: LiveIptables): TableChanges[] {
  const tables: TableChanges[] = [];
  for (const { table, chain } of CHAINS) {
    const have = live[table];
    const jumps = have.hookRules.filter((rule) => jumpsTo(chain, rule));
    if (!have.chainExists && jumps.length === 0) continue;
    const changes: ChainChange[] = jumps.map(deletion);
    if (have.chainExists) changes.push({ verb: "flush", chain }, { verb: "remove", chain });
    tables.push({ table, changes });
  }
  return tables;
}
