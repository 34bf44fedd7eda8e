/**
 * An in-memory node for tests without root: it executes our transactions the
 * way iptables-restore, ipset restore, `ip -batch` and sysctl would (with the
 * same atomicity: a bad iptables payload changes nothing) and prints its state
 * in the real tools' output formats, so the parsers are exercised too. It
 * plugs in below the host, as an `Exec` (cmd/exec.ts): `host()` is the real
 * `systemHost` over this kernel's tools, so the host's read and apply
 * orchestration is the code that runs on nodes, not a copy. It also records
 * every transaction applied.
 */
import { parseIpsetSave } from "../core/ipset.ts";
import { IPSET_V6 } from "../core/names.ts";
import { parseIptablesSave } from "../core/iptables.ts";
import { NO_NFTABLES } from "../core/nftables.ts";
import { parseRoutesBatch } from "../core/iproute.ts";
import type { LiveState, Transaction } from "../core/plan.ts";
import { render, toolName } from "../core/render.ts";
import type { DatapathConfig } from "../core/schema.ts";
import { cidrContains, parseCidr, parseIp } from "../core/ip.ts";
import { rpFilterInterfaces, rpFilterKeys } from "../core/sysctl.ts";
import type { ApplyReport, Host, Raw, Sysctls } from "../cmd/system.ts";
import { InterfaceMissingError, StepError, systemHost } from "../cmd/system.ts";
import type { Exec, ExecResult } from "../cmd/exec.ts";

const BUILTINS: Record<string, string[]> = {
  mangle: ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
  nat: ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
};

interface Table {
  chains: Map<string, string[]>; // chain → rule bodies (text after "-A CHAIN ")
}

interface IpSet {
  header: string; // words after the name in the create line
  entries: Map<string, string>; // key → words after the key
}

export interface FakeRule {
  priority: number;
  fwmark: string;
  fwmask: string;
  table: number;
  protocol: number;
}

export interface FakeRoute {
  table: number;
  gateway: string;
  dev: string;
  protocol: number;
}

/** iptables-save prints one-word comments without quotes; emulate its canonical form. */
function canonical(body: string): string {
  return body.replace(/--comment "([^\s"]+)"/g, "--comment $1");
}

type Fam = "ipv4" | "ipv6";

/** One entry of the fake conntrack table. */
export interface FakeConnection {
  readonly family: Fam;
  /** The original source (a pod). */
  readonly src: string;
  /** The connection mark (our mark bits saved into it, `saveMarkRule`). */
  readonly mark: number;
  /** The address the source was translated to (a VIP, a node address); absent: not translated. */
  readonly srcNat?: string;
}
const isV6 = (text: string) => text.includes(":");

/** The family an address word is of, or undefined when it is no address ("a.b.c.d", "x::y", with or without "/n"). */
function addressFamily(word: string): Fam | undefined {
  const cidr = parseCidr(word);
  if (cidr === undefined) return undefined;
  return cidr.family === 4 ? "ipv4" : "ipv6";
}

export class FakeKernel {
  /** Each interface's addresses, of both families. */
  interfaces = new Map<string, string[]>([["eth0", ["192.0.2.11"]]]);
  tables = new Map<string, Table>();
  /** ip6tables' tables (apart from iptables', as in the kernel). */
  tables6 = new Map<string, Table>();
  sets = new Map<string, IpSet>();
  rules: FakeRule[] = [];
  routes: FakeRoute[] = [];
  /** `ip -6 rule` and the IPv6 routes of our tables. */
  rules6: FakeRule[] = [];
  routes6: FakeRoute[] = [];
  /** The main table's routes (the CNI's), as `ip -json route` prints them. */
  mainRoutes: { dst: string; dev: string; gateway?: string; flags?: string[] }[] = [];
  sysctls: Record<string, number> = {
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.eth0.rp_filter": 0,
  };
  applied: Transaction[] = [];
  /** Packets/bytes the pods set reports per entry (tests set them; absent = 0). */
  setCounters = new Map<string, { packets: number; bytes: number }>();
  /** Packets/bytes `iptables-save -c` reports per rule body (absent = 0). */
  ruleCounters = new Map<string, { packets: number; bytes: number }>();
  /** `conntrack` invocations, as their argument lines. */
  conntrackRuns: string[] = [];
  /** The conntrack table (tests add the connections; `conntrack -D` deletes what its filters match). */
  connections: FakeConnection[] = [];
  /** `conntrackd` invocations (commits of replicated NAT state), as their argument lines. */
  conntrackdRuns: string[] = [];
  /** Makes the next apply of this tool fail (to test partial failures). */
  failNext?: string;

  constructor(init: { foreignNat?: string[]; foreignMangle?: string[] } = {}) {
    if (init.foreignNat) this.#table("nat").chains.get("POSTROUTING")!.push(...init.foreignNat);
    if (init.foreignMangle) {
      this.#table("mangle").chains.get("PREROUTING")!.push(...init.foreignMangle);
    }
  }

  #table(name: string): Table {
    let table = this.tables.get(name);
    if (!table) {
      table = { chains: new Map(BUILTINS[name].map((c) => [c, []])) };
      this.tables.set(name, table);
    }
    return table;
  }

  // ---- output in the real tools' formats ----

  /**
   * `iptables -t <table> -S <chain>`: "-P"/"-N" then the chain's rules;
   * undefined when the chain does not exist (iptables exits 1). Like
   * iptables-nft, a missing table still lists its built-in chains.
   */
  iptablesList(
    table: string,
    chain: string,
    counters = false,
    family: Fam = "ipv4",
  ): string | undefined {
    const builtin = BUILTINS[table].includes(chain);
    const rules = this.#tables(family).get(table)?.chains.get(chain) ?? (builtin ? [] : undefined);
    if (rules === undefined) return undefined;
    const head = builtin ? `-P ${chain} ACCEPT` : `-N ${chain}`;
    // `-v` prints each rule's counters after the chain name, as iptables-nft does.
    const counted = (body: string) => {
      const c = this.ruleCounters.get(body) ?? { packets: 0, bytes: 0 };
      return counters ? `-c ${c.packets} ${c.bytes} ${body}` : body;
    };
    return [head, ...rules.map((body) => `-A ${chain} ${counted(body)}`)].join("\n") + "\n";
  }

  #tables(family: Fam): Map<string, Table> {
    return family === "ipv4" ? this.tables : this.tables6;
  }

  iptablesSave(table: string, counters = false, family: Fam = "ipv4"): string {
    const t = this.#tables(family).get(table);
    if (!t) return "";
    const tool = family === "ipv4" ? "iptables-save" : "ip6tables-save";
    const out = [`# Generated by ${tool} v1.8.9 (nf_tables)`, `*${table}`];
    for (const [chain] of t.chains) {
      out.push(`:${chain} ${BUILTINS[table].includes(chain) ? "ACCEPT" : "-"} [0:0]`);
    }
    for (const [chain, rules] of t.chains) {
      for (const body of rules) {
        const c = this.ruleCounters.get(body) ?? { packets: 0, bytes: 0 };
        out.push(`${counters ? `[${c.packets}:${c.bytes}] ` : ""}-A ${chain} ${body}`);
      }
    }
    out.push("COMMIT", "# Completed");
    return out.join("\n") + "\n";
  }

  ipsetSave(name: string): string {
    const set = this.sets.get(name)!;
    const lines = [`create ${name} ${set.header} bucketsize 12 initval 0x1234`];
    const counters = set.header.includes("counters");
    for (const [key, rest] of set.entries) {
      const opts = rest.split(" ").filter(Boolean);
      const skb = opts.indexOf("skbmark");
      const mark = skb >= 0 ? ` skbmark ${opts[skb + 1]}` : "";
      // hash:net prints /32 (IPv6: /128) entries as bare addresses.
      const shown = key.endsWith("/32") && !isV6(key)
        ? key.slice(0, -3)
        : key.endsWith("/128")
        ? key.slice(0, -4)
        : key;
      const c = this.setCounters.get(key) ?? { packets: 0, bytes: 0 };
      lines.push(
        `add ${name} ${shown}${counters ? ` packets ${c.packets} bytes ${c.bytes}` : ""}${mark}`,
      );
    }
    return lines.join("\n") + "\n";
  }

  /** `ipset list -t`: every set's header and size, no entries. */
  ipsetListTerse(): string {
    return [...this.sets].map(([name, set]) => {
      const [type, ...options] = set.header.split(" ");
      return [
        `Name: ${name}`,
        `Type: ${type}`,
        "Revision: 6",
        `Header: ${options.join(" ")} bucketsize 12 initval 0x1234`,
        `Size in memory: ${200 + 50 * set.entries.size}`,
        "References: 1",
        `Number of entries: ${set.entries.size}`,
      ].join("\n") + "\n";
    }).join("\n");
  }

  /** Counts the reads a host makes, like the real one's processes. */
  reads = { entries: 0, summary: 0 };

  /** `ip -json route show table main root <cidr>`: routes whose range lies inside `cidr`. */
  mainRoutesWithin(cidr: string) {
    const outer = parseCidr(cidr)!;
    return this.mainRoutes.filter((r) => {
      const inner = parseCidr(r.dst);
      return inner !== undefined && inner.prefix >= outer.prefix && cidrContains(outer, inner.base);
    });
  }

  ipBatchOutput(
    iface: string,
    protocol: number,
    podCidrs: readonly string[] = [],
    family: Fam | "any" = "ipv4",
  ): string {
    const addrs = this.interfaces.get(iface)!.filter((a) =>
      family === "any" || isV6(a) === (family === "ipv6")
    );
    const link = [{
      ifindex: 2,
      ifname: iface,
      addr_info: addrs.map((local) =>
        isV6(local)
          ? { family: "inet6", local, prefixlen: 128, scope: "global" }
          : { family: "inet", local, prefixlen: 32 }
      ),
    }];
    const ours = family === "ipv6" ? this.rules6 : this.rules;
    const rules = [
      { priority: 0, src: "all", table: "255" },
      ...ours.map((r) => ({
        priority: r.priority,
        src: "all",
        fwmark: r.fwmark,
        fwmask: r.fwmask,
        table: String(r.table),
        protocol: String(r.protocol),
      })),
      { priority: 32766, src: "all", table: "254" },
    ];
    const tables = family === "any"
      ? [...this.routes, ...this.routes6]
      : family === "ipv4"
      ? this.routes
      : this.routes6;
    const routes = tables.filter((r) => r.protocol === protocol).map((r) => ({
      dst: "default",
      gateway: r.gateway,
      dev: r.dev,
      table: String(r.table),
      flags: ["onlink"],
    }));
    const pods = podCidrs.map((cidr) => this.mainRoutesWithin(cidr));
    return [link, rules, routes, ...pods].map((x) => JSON.stringify(x)).join("\n") + "\n";
  }

  /** Everything, for before/after comparisons. */
  dump(): string {
    return [
      this.iptablesSave("mangle"),
      this.iptablesSave("nat"),
      this.iptablesSave("mangle", false, "ipv6"),
      this.iptablesSave("nat", false, "ipv6"),
      [...this.sets.keys()].sort().map((s) => this.ipsetSave(s)).join(""),
      JSON.stringify(this.rules),
      JSON.stringify(this.routes),
      JSON.stringify(this.rules6),
      JSON.stringify(this.routes6),
    ].join("\n");
  }

  // ---- the tools ----

  iptablesRestore(lines: readonly string[], family: Fam = "ipv4") {
    const tool = family === "ipv4" ? "iptables-restore" : "ip6tables-restore";
    // Atomic: work on a copy, commit only if every line succeeds.
    const copy = new Map(
      [...this.#tables(family)].map((
        [n, t],
      ) => [n, { chains: new Map([...t.chains].map(([c, r]) => [c, [...r]])) }]),
    );
    let table: Table | undefined;
    for (const line of lines) {
      const words = line.split(" ");
      if (line.startsWith("*")) {
        const name = line.slice(1);
        if (!copy.has(name)) {
          copy.set(name, { chains: new Map(BUILTINS[name].map((c) => [c, []])) });
        }
        table = copy.get(name)!;
      } else if (line === "COMMIT") table = undefined;
      else if (!table) throw new Error(`${tool}: line outside a table: ${line}`);
      else if (line.startsWith(":")) table.chains.set(words[0].slice(1), []);
      else if (words[0] === "-A") {
        this.#checkFamily(tool, words, family);
        this.#chain(table, words[1]).push(canonical(words.slice(2).join(" ")));
      } else if (words[0] === "-I") {
        this.#checkFamily(tool, words, family);
        this.#chain(table, words[1]).splice(
          Number(words[2]) - 1,
          0,
          canonical(words.slice(3).join(" ")),
        );
      } else if (words[0] === "-D") {
        const rules = this.#chain(table, words[1]);
        const i = rules.indexOf(canonical(words.slice(2).join(" ")));
        if (i < 0) throw new Error(`iptables-restore: no such rule: ${line}`);
        rules.splice(i, 1);
      } else if (words[0] === "-F") this.#chain(table, words[1]).length = 0;
      else if (words[0] === "-X") {
        const referenced = [...table.chains.values()].some((rules) =>
          rules.some((r) => r.endsWith(`-j ${words[1]}`))
        );
        if (referenced || this.#chain(table, words[1]).length > 0) {
          throw new Error(`iptables-restore: chain ${words[1]} busy`);
        }
        table.chains.delete(words[1]);
      } else throw new Error(`iptables-restore: unknown line ${line}`);
      for (const [, rules] of table?.chains ?? []) {
        for (const rule of rules) {
          const target = /-j (\S+)/.exec(rule)?.[1];
          if (target?.startsWith("KUBE-EGRESS") && !table!.chains.has(target)) {
            throw new Error(`iptables-restore: chain ${target} does not exist`);
          }
          const set = /--match-set (\S+)/.exec(rule)?.[1];
          if (set && !this.sets.has(set)) {
            throw new Error(`iptables-restore: set ${set} does not exist`);
          }
        }
      }
    }
    if (family === "ipv4") this.tables = copy;
    else this.tables6 = copy;
  }

  /** Like the real tools: an address of the other family is a bad argument, a set of the other family a kernel error. */
  #checkFamily(tool: string, words: readonly string[], family: Fam) {
    for (const [i, word] of words.entries()) {
      if (["-s", "-d", "--to-source", "--to-destination"].includes(words[i - 1] ?? "")) {
        const of = addressFamily(word);
        if (of !== family) throw new Error(`${tool}: host/network \`${word}' not found`);
      }
      if (words[i - 1] === "--match-set" || words[i - 1] === "--map-set") {
        const set = this.sets.get(word);
        if (set && (set.header.includes("family inet6") !== (family === "ipv6"))) {
          throw new Error(`${tool}: Set ${word} has the wrong address family`);
        }
      }
    }
  }

  #chain(table: Table, name: string): string[] {
    const rules = table.chains.get(name);
    if (!rules) throw new Error(`iptables-restore: chain ${name} does not exist`);
    return rules;
  }

  /** `ipset restore -exist`: line by line, like the real one (not atomic). */
  ipsetRestore(lines: readonly string[]) {
    for (const line of lines) {
      const [cmd, name, ...rest] = line.split(" ");
      if (cmd === "create") {
        const header = rest.join(" ");
        const have = this.sets.get(name);
        if (have && have.header !== header) {
          throw new Error(`ipset: set ${name} exists with another type`);
        }
        if (!have) this.sets.set(name, { header, entries: new Map() });
      } else if (cmd === "add") {
        const set = this.#set(name);
        const v6 = set.header.includes("family inet6");
        if (addressFamily(rest[0]) !== (v6 ? "ipv6" : "ipv4")) {
          throw new Error(
            `ipset: ${line}: Syntax error: cannot parse ${rest[0]}: resolving to ${
              v6 ? "IPv6" : "IPv4"
            } address failed`,
          );
        }
        const key = set.header.startsWith("hash:net") && !rest[0].includes("/")
          ? `${rest[0]}/${v6 ? 128 : 32}`
          : rest[0];
        set.entries.set(key, rest.slice(1).join(" "));
      } else if (cmd === "del") this.#set(name).entries.delete(rest[0]);
      else if (cmd === "flush") this.#set(name).entries.clear();
      else if (cmd === "swap") {
        const a = this.#set(name);
        const b = this.#set(rest[0]);
        this.sets.set(name, b);
        this.sets.set(rest[0], a);
      } else if (cmd === "destroy") {
        const inUse = [...this.tables.values()].some((t) =>
          [...t.chains.values()].some((rules) =>
            rules.some((r) => r.includes(`--match-set ${name} `))
          )
        );
        if (inUse) throw new Error(`ipset: set ${name} is in use`);
        this.sets.delete(name);
      } else throw new Error(`ipset: unknown command ${line}`);
    }
  }

  ipBatch(lines: readonly string[], family: Fam = "ipv4") {
    const rules = family === "ipv4" ? this.rules : this.rules6;
    const routes = family === "ipv4" ? this.routes : this.routes6;
    // As `ip -force -batch`: a failed line is reported and the rest still run.
    const errors: string[] = [];
    for (const [n, line] of lines.entries()) {
      try {
        this.#ipLine(line, rules, routes, family);
      } catch (error) {
        errors.push(`${error instanceof Error ? error.message : error}\nCommand failed -:${n + 1}`);
      }
    }
    if (errors.length > 0) throw new Error(errors.join("\n") + "\n");
  }

  #ipLine(
    line: string,
    rules: FakeRule[],
    routes: FakeRoute[],
    family: Fam,
  ) {
    const w = line.split(" ");
    const arg = (k: string) => w[w.indexOf(k) + 1];
    if (w[0] === "rule") {
      const [fwmark, fwmask] = arg("fwmark").split("/");
      const rule = {
        priority: Number(arg("pref")),
        fwmark,
        fwmask,
        table: Number(arg("lookup")),
        protocol: Number(arg("proto")),
      };
      const i = rules.findIndex((r) => JSON.stringify(r) === JSON.stringify(rule));
      if (w[1] === "add") {
        if (i >= 0) throw new Error("RTNETLINK answers: File exists");
        rules.push(rule);
      } else {
        if (i < 0) throw new Error("RTNETLINK answers: No such file or directory");
        rules.splice(i, 1);
      }
    } else if (w[0] === "route") {
      if (addressFamily(arg("via")) !== family) {
        throw new Error(
          `Error: ${family === "ipv4" ? "inet" : "inet6"} address is expected rather than "${
            arg("via")
          }".`,
        );
      }
      const route = {
        table: Number(arg("table")),
        gateway: arg("via"),
        dev: arg("dev"),
        protocol: Number(arg("proto")),
      };
      const i = routes.findIndex((r) => r.table === route.table);
      if (w[1] === "add") {
        if (i >= 0) throw new Error("RTNETLINK answers: File exists");
        routes.push(route);
      } else if (w[1] === "replace") {
        if (i >= 0) routes[i] = route;
        else routes.push(route);
      } else {
        if (i < 0) throw new Error("RTNETLINK answers: No such process");
        routes.splice(i, 1);
      }
    } else throw new Error(`ip: unknown line ${line}`);
  }

  #set(name: string): IpSet {
    const set = this.sets.get(name);
    if (!set) throw new Error(`ipset: set ${name} does not exist`);
    return set;
  }

  nft(lines: readonly string[]) {
    for (const line of lines) {
      const m = /^delete table (ip6?) (\w+)$/.exec(line);
      if (!m) throw new Error(`nft: unknown line ${line}`);
      const tables = m[1] === "ip" ? this.tables : this.tables6;
      if (!tables.delete(m[2])) throw new Error(`Error: No such file or directory; ${line}`);
    }
  }

  /**
   * `conntrack -D` as conntrack-tools takes it: `-f` family, `--mark m/mask`
   * (the connection mark under the mask), `-s` source (address or range),
   * `--src-nat` the address the source was translated to; an entry is deleted
   * when every filter given matches. Any other option is an error.
   */
  conntrackDelete(args: readonly string[]) {
    const doomed = new Set(this.conntrackMatching(args));
    this.connections = this.connections.filter((c) => !doomed.has(c));
  }

  /** The entries `conntrack -D <args>` deletes (see `conntrackDelete`). */
  conntrackMatching(args: readonly string[]): FakeConnection[] {
    this.conntrackRuns.push(args.join(" "));
    if (args[0] !== "-D") throw new Error(`conntrack: only -D is known: ${args.join(" ")}`);
    const tests: ((c: FakeConnection) => boolean)[] = [];
    for (let i = 1; i < args.length; i += 2) {
      const [option, value] = [args[i], args[i + 1]];
      if (value === undefined) throw new Error(`conntrack: ${option} needs a value`);
      if (option === "-f") tests.push((c) => c.family === value);
      else if (option === "--mark") {
        const [mark, mask] = value.split("/").map((v) => parseInt(v, 16));
        tests.push((c) => (c.mark & mask) === mark);
      } else if (option === "-s") {
        const range = parseCidr(value);
        if (range === undefined) throw new Error(`conntrack: bad source ${value}`);
        tests.push((c) => cidrContains(range, parseIp(c.src)!));
      } else if (option === "--src-nat") tests.push((c) => c.srcNat === value);
      else throw new Error(`conntrack: unknown option ${option}`);
    }
    return this.connections.filter((c) => tests.every((t) => t(c)));
  }

  /**
   * A `conntrack -D` process, as conntrack-tools 1.4.7 runs one: it dumps the
   * entries its filters match, then deletes them one by one, and an entry
   * another process deleted meanwhile fails the run (exit 1, measured with two
   * overlapping runs). Here the dump and the deletes are a macrotask apart.
   */
  async #conntrackProcess(args: readonly string[]): Promise<ExecResult> {
    const failed = this.#injected("conntrack");
    if (failed) return failed;
    let doomed: FakeConnection[];
    try {
      doomed = this.conntrackMatching(args);
    } catch (error) {
      return {
        code: 1,
        stdout: "",
        stderr: error instanceof Error ? error.message : String(error),
      };
    }
    await new Promise((resolve) => setTimeout(resolve, 0));
    for (const connection of doomed) {
      if (!this.connections.includes(connection)) {
        const stderr =
          "conntrack v1.4.7 (conntrack-tools): Operation failed: such conntrack doesn't exist\n";
        return { code: 1, stdout: "", stderr };
      }
      this.connections = this.connections.filter((c) => c !== connection);
    }
    return { code: 0, stdout: "", stderr: "" };
  }

  /** Applies a transaction step by step, stopping at the first failing step. */
  apply(transaction: Transaction): ApplyReport {
    this.applied.push(transaction);
    let bytes = 0;
    let processes = 0;
    for (const [index, step] of transaction.steps.entries()) {
      const tool = toolName(step.op);
      if (this.failNext === tool) {
        this.failNext = undefined;
        throw new StepError(step, index, `${tool} failed (injected)`);
      }
      // The tools' own input, as cmd/system.ts feeds it to them.
      const { lines, command } = render(step.op);
      bytes += lines.join("\n").length + 1;
      processes += command ? 1 : step.op.tool === "sysctl" ? 0 : lines.length;
      if (tool === "iptables") this.iptablesRestore(lines);
      else if (tool === "ip6tables") this.iptablesRestore(lines, "ipv6");
      else if (tool === "ipset") this.ipsetRestore(lines);
      else if (tool === "ip") this.ipBatch(lines);
      else if (tool === "ip6") this.ipBatch(lines, "ipv6");
      else if (tool === "nft") this.nft(lines);
      else if (tool === "conntrack") { for (const l of lines) this.conntrackDelete(l.split(" ")); }
      else if (tool === "conntrackd") this.conntrackdRuns.push(...lines);
      else for (const l of lines) this.sysctls[l.split("=")[0]] = Number(l.split("=")[1]);
    }
    return { processes, bytes };
  }

  /** Reads the live state through the real parsers. */
  live(config: DatapathConfig, counters = false): LiveState & Raw {
    if (!this.interfaces.has(config.interface)) throw new InterfaceMissingError(config.interface);
    const mangle = this.iptablesSave("mangle", counters);
    const nat = this.iptablesSave("nat", counters);
    const nat6 = this.iptablesSave("nat", counters, "ipv6");
    const v4Pods = config.podCidrs.filter((c) => !isV6(c));
    const v6Pods = config.podCidrs.filter(isV6);
    const routes = parseRoutesBatch(
      this.ipBatchOutput(config.interface, config.routeProtocol, v4Pods),
      config.routeProtocol,
    );
    const ipv6 = {
      routes: parseRoutesBatch(
        this.ipBatchOutput(config.interface, config.routeProtocol, v6Pods, "ipv6"),
        config.routeProtocol,
        "ipv6",
      ),
      iptables: {
        mangle: parseIptablesSave(this.iptablesSave("mangle", false, "ipv6"), "mangle"),
        nat: parseIptablesSave(nat6, "nat"),
      },
      sets: parseIpsetSave(
        [...this.sets.keys()].map((s) => this.ipsetSave(s)).join(""),
        IPSET_V6,
      ),
    };
    return {
      backend: "nft",
      routes,
      nft: NO_NFTABLES,
      iptables: { mangle: parseIptablesSave(mangle, "mangle"), nat: parseIptablesSave(nat, "nat") },
      sets: parseIpsetSave([...this.sets.keys()].map((s) => this.ipsetSave(s)).join("")),
      sysctls: Object.fromEntries(
        rpFilterKeys(...rpFilterInterfaces(config.interface, routes.podRoutes)).map((
          k,
        ) => [k, this.sysctls[k] ?? 0]),
      ),
      raw: { mangle, nat, nat6 },
      ipv6,
    };
  }

  /**
   * The tools as the host runs them (cmd/exec.ts): each command answered in
   * the real tool's output format and exit codes, so the real host's read and
   * apply orchestration (cmd/system.ts) runs against this kernel unchanged.
   */
  exec: Exec = (args, options = {}) =>
    args[0] === "conntrack"
      ? this.#conntrackProcess(args.slice(1))
      : Promise.resolve().then(() => this.#run(args, options.stdin));

  /** The failure injected for `tool` (`failNext`), once, or undefined. */
  #injected(tool: string): ExecResult | undefined {
    if (this.failNext !== tool) return undefined;
    this.failNext = undefined;
    return { code: 1, stdout: "", stderr: `${tool} failed (injected)` };
  }

  #run(args: readonly string[], stdin = ""): ExecResult {
    const ok = (stdout = ""): ExecResult => ({ code: 0, stdout, stderr: "" });
    const fail = (stderr: string, code = 1): ExecResult => ({ code, stdout: "", stderr });
    const line = args.join(" ");
    const lines = stdin.split("\n").filter((l) => l !== "");
    const injected = (tool: string) => this.#injected(tool);
    try {
      if (line === "iptables --version") return ok("iptables v1.8.9 (nf_tables)\n");
      let m = /^(ip6?tables) -w 5 -t (\w+) -S (\S+)( -v)?$/.exec(line);
      if (m) {
        const family = m[1] === "iptables" ? "ipv4" : "ipv6";
        const listed = this.iptablesList(m[2], m[3], m[4] !== undefined, family);
        return listed === undefined
          ? fail(`${m[1]}: No chain/target/match by that name.\n`)
          : ok(listed);
      }
      m = /^(ip6?tables)-save( -c)? -t (\w+)$/.exec(line);
      if (m) {
        return ok(
          this.iptablesSave(m[3], m[2] !== undefined, m[1] === "iptables" ? "ipv4" : "ipv6"),
        );
      }
      m = /^ipset save (\S+)$/.exec(line);
      if (m) {
        this.reads.entries += m[1] === "kube-egress-pods" ? 1 : 0;
        return this.sets.has(m[1])
          ? ok(this.ipsetSave(m[1]))
          : fail("ipset v7.17: The set with the given name does not exist\n");
      }
      if (line === "ipset list -n") return ok([...this.sets.keys()].join("\n") + "\n");
      if (line === "ipset list -t") {
        this.reads.summary++;
        return ok(this.ipsetListTerse());
      }
      if (line === "ip -4 -json -N -batch -") return this.#ipRead(lines, "ipv4");
      // As the real one: no family given, `address show` and `route show table all` list both
      // families (`rule show` IPv4 only).
      if (line === "ip -json -N -batch -") return this.#ipRead(lines, "any");
      if (line === "ip -6 -json -N -batch -") return this.#ipRead(lines, "ipv6");
      if (args[0] === "nft" && args.includes("list")) {
        // No native nftables here: no table of ours, no chains.
        return args.includes("table")
          ? fail("Error: No such file or directory\n")
          : ok('{"nftables": []}\n');
      }
      if (line === "ip -force -batch -") return injected("ip") ?? (this.ipBatch(lines), ok());
      if (line === "ip -6 -force -batch -") {
        return injected("ip6") ?? (this.ipBatch(lines, "ipv6"), ok());
      }
      if (line === "ip6tables-restore --noflush --wait 5") {
        return injected("ip6tables") ?? (this.iptablesRestore(lines, "ipv6"), ok());
      }
      if (line === "ipset restore -exist") {
        return injected("ipset") ?? (this.ipsetRestore(lines), ok());
      }
      if (line === "iptables-restore --noflush --wait 5") {
        return injected("iptables") ?? (this.iptablesRestore(lines), ok());
      }
      if (line === "nft -f -") return injected("nft") ?? (this.nft(lines), ok());
      if (args[0] === "conntrackd") {
        this.conntrackdRuns.push(args.slice(1).join(" "));
        return ok();
      }
    } catch (error) {
      return fail(error instanceof Error ? error.message : String(error));
    }
    return fail(`fake kernel: ${line}: command not known`, 127);
  }

  /** `ip -json -N -batch -` of `readRoutesBatch`'s lines. */
  #ipRead(lines: readonly string[], family: Fam | "any"): ExecResult {
    const iface = /^address show dev (\S+)$/.exec(lines[0] ?? "")?.[1];
    if (iface === undefined || !this.interfaces.has(iface)) {
      return { code: 1, stdout: "", stderr: `Device "${iface}" does not exist.\n` };
    }
    const protocol = Number(/proto (\d+)/.exec(lines[2] ?? "")?.[1]);
    const pods = lines.slice(3).map((l) => /root (\S+)$/.exec(l)![1]);
    // Like `ip`: a prefix of the other family is an error (ours are split per family).
    const wrong = pods.find((c) => family !== "any" && addressFamily(c) !== family);
    if (wrong) {
      return {
        code: 1,
        stdout: "",
        stderr: `Error: any valid prefix is expected rather than "${wrong}".\n`,
      };
    }
    return { code: 0, stdout: this.ipBatchOutput(iface, protocol, pods, family), stderr: "" };
  }

  /** sysctls in memory, as the host reads and writes /proc/sys. */
  sysctlIO: Sysctls = {
    read: (key) => Promise.resolve(this.sysctls[key] ?? 0),
    write: (key, value) => {
      this.sysctls[key] = Number(value);
      return Promise.resolve();
    },
  };

  /** A Host backed by this kernel; address watchers fire on `moveAddress`. */
  host(): Host & { fireAddressChange(): void } {
    const watchers = new Set<() => void>();
    // The real host over this kernel's tools; only the address watch is the fake's own.
    const real = systemHost(this.exec, this.sysctlIO);
    return {
      readLive: (config, options) => real.readLive(config, options),
      apply: (tx, options) => {
        this.applied.push(tx);
        return real.apply(tx, options);
      },
      addresses: (iface) => this.interfaces.get(iface),
      watchAddresses: (_iface, onChange) => {
        watchers.add(onChange);
        return { stop: () => watchers.delete(onChange) };
      },
      fireAddressChange: () => watchers.forEach((w) => w()),
    };
  }
}
