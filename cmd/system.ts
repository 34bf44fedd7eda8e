/**
 * The node, as the agent sees it: read the live state with a handful of
 * processes, apply a transaction step by step (each step one process fed on
 * stdin), and watch the interface's addresses. Every datapath process goes
 * through one `Exec` (cmd/exec.ts); tests give it a fake kernel there.
 */
import { type Exec, ExecError, systemExec, which } from "./exec.ts";
import { kernelNftGeneration, type NftGeneration, noNftGeneration } from "./nft_generation.ts";
import { kernelConntrackFlush, type KernelFlush, noKernelFlush } from "./conntrack_flush.ts";
import { errorMessage } from "../core/errors.ts";
import {
  type LiveNftables,
  NFT_FAMILY,
  NFT_TABLE,
  NO_NFTABLES,
  parseNftJson,
  sameChains,
} from "../core/nftables.ts";
import {
  confirmSets,
  type LiveSets,
  NO_SETS,
  parseIpsetSave,
  parseIpsetTerse,
} from "../core/ipset.ts";
import { NO_TABLE, parseChainListings, parseIptablesSave } from "../core/iptables.ts";
import { onlyGoneDeletions, parseRoutesBatch, readRoutesBatch } from "../core/iproute.ts";
import { conntrackArgs, conntrackdArgs, render } from "../core/render.ts";
import { rolesChangedBefore, stillRunAfter } from "../core/conntrack.ts";
import { CHAINS, IPSET_V4, IPSET_V6, type IpsetFamily, type TableName } from "../core/names.ts";
import type { LiveFamily, LiveState, Step, Transaction } from "../core/plan.ts";
import type { DatapathConfig } from "../core/schema.ts";
import { rpFilterInterfaces, rpFilterKeys } from "../core/sysctl.ts";

/** What a pass needs from the machine; the agent loop is tested against a fake one. */
export interface Host {
  readLive(config: DatapathConfig, options?: ReadOptions): Promise<LiveRead>;
  apply(transaction: Transaction, options?: ApplyOptions): Promise<ApplyReport>;
  watchAddresses(iface: string, onChange: () => void): { stop(): void };
  /**
   * The interface's addresses now, without starting a process (a takeover's
   * check before its conntrack work); undefined: the interface is not there.
   */
  addresses?(iface: string): readonly string[] | undefined;
}

export interface ApplyOptions {
  /**
   * Asked once, just before the first conntrack or conntrackd step after the
   * rule step (a takeover's flush and commit): the VIPs taken over that are no
   * longer on the interface. Any stops the transaction there with a
   * `TakeoverAbandoned` error, and nothing after it runs.
   */
  readonly takenOverGone?: () => readonly string[];
}

/** The raw iptables text, kept for status counters (nat6: ip6tables', "" where not read). */
export interface Raw {
  readonly raw: { readonly mangle: string; readonly nat: string; readonly nat6: string };
}

export interface ReadOptions {
  /** Read our chains' packet/byte counters too (`status`). */
  readonly counters?: boolean;
  /**
   * Our sets as the caller last knew them. When given, the sets' entries are
   * not listed: their headers and sizes are (`ipset list -t`), and `knownSets`
   * is used if they agree (see `confirmSets`); any disagreement falls back to
   * the full listing.
   */
  readonly knownSets?: LiveSets;
  /**
   * Read only our chains and the built-in chains that jump to them
   * (`iptables -S <chain>`), not whole tables: `iptables-save` of a nat table
   * full of kube-proxy rules costs far more than the rest of a pass. The
   * tables' `onlyOurs` is then unknown (false), so `delete` reads in full.
   */
  readonly ourChainsOnly?: boolean;
  /** nftables backend: our table as the caller last knew it (confirmed by its chains). */
  readonly knownNft?: LiveNftables;
  /**
   * nftables backend, on any pass: our table as the caller knows it exactly,
   * at this ruleset generation (`LiveRead.nftGeneration`). While the kernel's
   * generation is still that one, nothing was committed since by anyone, and
   * the table is not listed at all; otherwise it is read as without it.
   */
  readonly provenNft?: { readonly table: LiveNftables; readonly generation: number };
  /** With `ourChainsOnly`: read the other backend's objects too (to remove them). */
  readonly leftovers?: boolean;
}

/** The live state, and how it was read. */
export interface LiveRead extends LiveState, Raw {
  /**
   * "entries": our sets (or nftables table) were listed in full; "summary":
   * `knownSets` were confirmed by size (nftables: `knownNft` by its chains);
   * "generation": nftables, `provenNft` confirmed by the ruleset generation.
   */
  readonly setsRead: "entries" | "summary" | "generation";
  /**
   * nftables backend: the ruleset generation our table was read at, when the
   * read is exact (listed in full with no commit meanwhile, or proven); the
   * caller hands it back as `provenNft`.
   */
  readonly nftGeneration?: number;
  /** Processes started to read it. */
  readonly processes: number;
}

export interface ApplyReport {
  /** Processes started. */
  readonly processes: number;
  /** Bytes written to the tools' stdin (i.e. towards the kernel). */
  readonly bytes: number;
  /**
   * Steps that failed without failing the pass: a commit of replicated NAT
   * state (`conntrackd -c`) that could not run costs the synced connections,
   * never the takeover itself.
   */
  readonly warnings?: readonly string[];
  /**
   * The ruleset generation before and after the transaction, when nothing
   * but its own `nft -f` steps was committed meanwhile (one generation each).
   */
  readonly nftGeneration?: { readonly before: number; readonly after: number };
  /** How long each step took, ms, in the transaction's order (a takeover's timeline). */
  readonly stepMs?: readonly number[];
}

/** The interface the agent was told to use does not exist: fatal before any change. */
export class InterfaceMissingError extends Error {
  constructor(readonly iface: string) {
    super(`interface ${iface} does not exist on this node (check --interface)`);
  }
}

/**
 * A step of a transaction failed; the steps after it were not run, except
 * those `stillRunAfter` (core/conntrack.ts) names: `ranAfter` lists the ones
 * of them that succeeded.
 */
export class StepError extends Error {
  ranAfter: readonly number[] = [];
  constructor(readonly step: Step, readonly index: number, stderr: string) {
    super(`step ${index + 1} (${step.purpose}) failed: ${stderr.trim() || "no error text"}`);
  }
}

/**
 * A takeover stopped before its flush and commit: the VIPs it took left the
 * interface while it applied the holder role (keepalived gave them to a peer
 * that won the same election a moment later). Its flush would cut this node's
 * own forwarded connections and its commit would load the peers' NAT state
 * here; the next pass, which the address event already asked for, gives the
 * role back (the flush is owed to it as after any failed step).
 */
export class TakeoverAbandoned extends StepError {
  constructor(step: Step, index: number, readonly vips: readonly string[]) {
    super(step, index, `${vips.join(", ")} left the interface during the takeover`);
  }
}

/**
 * Where the node's sysctls are. In an unprivileged container /proc/sys is
 * read-only; the DaemonSet mounts the host's /proc/sys/net under /host/proc/sys
 * and sets KUBE_EGRESS_PROC_SYS (as Cilium does with its host-proc-sys-net).
 */
export function procSysRoot(
  env: (name: string) => string | undefined = (name) => Deno.env.get(name),
): string {
  return (env("KUBE_EGRESS_PROC_SYS") || "/proc/sys").replace(/\/+$/, "");
}

function sysctlPath(key: string): string {
  return `${procSysRoot()}/${key.replaceAll(".", "/")}`;
}

/** Where sysctls are read and written: /proc/sys on a node, memory in tests. */
export interface Sysctls {
  /** The value, or undefined when the key does not exist. */
  read(key: string): Promise<number | undefined>;
  write(key: string, value: string): Promise<void>;
}

/** The node's /proc/sys (or `KUBE_EGRESS_PROC_SYS`). */
export const procSysctls: Sysctls = {
  async read(key) {
    try {
      return Number((await Deno.readTextFile(sysctlPath(key))).trim());
    } catch {
      // A key that is missing (e.g. the interface just went away) reads as unset.
      return undefined;
    }
  },
  write: (key, value) => Deno.writeTextFile(sysctlPath(key), value),
};

async function readSysctls(sysctls: Sysctls, keys: string[]): Promise<Record<string, number>> {
  const values: Record<string, number> = {};
  const read = await Promise.all(keys.map((key) => sysctls.read(key)));
  keys.forEach((key, i) => {
    if (read[i] !== undefined) values[key] = read[i];
  });
  return values;
}

/** Runs the read-only tools of one read of the node, and counts them. */
class Reader {
  processes = 0;
  constructor(readonly exec: Exec) {}

  run(args: string[], stdin?: string) {
    this.processes++;
    return this.exec(args, stdin === undefined ? {} : { stdin });
  }

  /** The tool's stdout; throws with its stderr when it fails. */
  async output(args: string[]): Promise<string> {
    const result = await this.run(args);
    if (result.code !== 0) {
      throw new Error(`${args.join(" ")} failed (exit ${result.code}): ${result.stderr.trim()}`);
    }
    return result.stdout;
  }
}

/** `iptables -S -v` lines ("-A C ... -c p b ...") in iptables-save -c form ("[p:b] -A C ..."). */
function countedAsSave(listing: string): string {
  return listing.split("\n").map((line) => {
    const m = / -c (\d+) (\d+)/.exec(line);
    return m ? `[${m[1]}:${m[2]}] ${line.replace(m[0], "")}` : line;
  }).join("\n");
}

/** iptables' ways of saying that a chain does not exist (legacy; nft 1.8.x). */
const NO_CHAIN = /No chain\/target\/match by that name|incompatible, use 'nft' tool|does not exist/;

/** One table: our chain and its hook chain only, or the whole table (`iptables-save`, `ip6tables-save`). */
async function readTable(
  reader: Reader,
  table: TableName,
  options: ReadOptions,
  tool: "iptables" | "ip6tables" = "iptables",
) {
  if (!options.ourChainsOnly) {
    const text = await reader.output([
      `${tool}-save`,
      ...(options.counters ? ["-c"] : []),
      "-t",
      table,
    ]);
    return { text, table: parseIptablesSave(text, table) };
  }
  const { chain, hook } = CHAINS.find((c) => c.table === table)!;
  const verbose = options.counters ? ["-v"] : [];
  const list = async (name: string) => {
    const r = await reader.run([tool, "-w", "5", "-t", table, "-S", name, ...verbose]);
    return { ...r, stdout: r.stdout.replace(/ -c \d+ \d+/g, ""), counted: r.stdout };
  };
  const [hookListing, chainListing] = await Promise.all([list(hook), list(chain)]);
  if (hookListing.code !== 0) {
    throw new Error(`${tool} -t ${table} -S ${hook} failed: ${hookListing.stderr.trim()}`);
  }
  if (chainListing.code !== 0 && !NO_CHAIN.test(chainListing.stderr)) {
    throw new Error(`${tool} -t ${table} -S ${chain} failed: ${chainListing.stderr.trim()}`);
  }
  const ours = chainListing.code === 0 ? chainListing.stdout : undefined;
  return {
    // With counters, in iptables-save -c form ("[p:b] -A ...") for parseRuleCounters.
    text: options.counters
      ? `*${table}\n${countedAsSave(hookListing.counted + (ours ? chainListing.counted : ""))}`
      : hookListing.stdout + (ours ?? ""),
    table: parseChainListings(table, hookListing.stdout, ours),
  };
}

/**
 * Our sets: confirmed by size when the caller knows them (`ipset list -t`),
 * otherwise, or when the sizes disagree, listed in full.
 */
async function readSets(
  reader: Reader,
  known: LiveSets | undefined,
  f: IpsetFamily = IPSET_V4,
): Promise<{ sets: LiveSets; setsRead: LiveRead["setsRead"] }> {
  if (known) {
    const confirmed = confirmSets(
      known,
      parseIpsetTerse(await reader.output(["ipset", "list", "-t"])),
      f,
    );
    if (confirmed) return { sets: confirmed, setsRead: "summary" };
  }
  // A set that does not exist is simply absent. Destination-scoped sets have
  // generated names, found in the list of names, which is read alongside our
  // two fixed sets so that the usual case (no scoped sets) takes one round.
  const save = async (name: string) => {
    const result = await reader.run(["ipset", "save", name]);
    if (result.code === 0) return result.stdout;
    if (/does not exist/.test(result.stderr)) return "";
    throw new Error(`ipset save ${name} failed: ${result.stderr.trim()}`);
  };
  const [fixed, names] = await Promise.all([
    Promise.all([f.pods, f.nosteer].map(save)),
    reader.output(["ipset", "list", "-n"]),
  ]);
  const scopedNames = names.split("\n").map((n) => n.trim()).filter((n) =>
    n.startsWith(f.scopedPrefix)
  );
  const saved = [...fixed, ...await Promise.all(scopedNames.map(save))];
  return { sets: parseIpsetSave(saved.join("\n"), f), setsRead: "entries" };
}

/**
 * Our nftables table: the caller's exact copy while the ruleset generation
 * is still the one it was known at (no process at all); else the caller's
 * copy when the table's chains are as it knows them (`nft list chains`, a
 * few ms however many elements); otherwise read in full (`nft -j list
 * table`), exact when the generation did not move during the listing;
 * absent when the table does not exist.
 */
async function readNftables(
  reader: Reader,
  options: ReadOptions,
  generation: NftGeneration,
): Promise<{ nft: LiveNftables; read: LiveRead["setsRead"]; generation?: number }> {
  const before = generation();
  const proven = options.provenNft;
  if (proven && before !== undefined && before === proven.generation) {
    return { nft: proven.table, read: "generation", generation: before };
  }
  const known = options.knownNft;
  if (known) {
    const listing = await reader.run(["nft", "-j", "list", "chains", NFT_FAMILY]);
    if (listing.code === 0 && sameChains(known, parseNftJson(listing.stdout))) {
      return { nft: known, read: "summary" };
    }
  }
  const result = await reader.run(["nft", "-j", "list", "table", NFT_FAMILY, NFT_TABLE]);
  let nft: LiveNftables;
  if (result.code === 0) nft = parseNftJson(result.stdout);
  else if (/No such file or directory/.test(result.stderr)) nft = NO_NFTABLES;
  else {
    throw new Error(`nft list table ${NFT_FAMILY} ${NFT_TABLE} failed: ${result.stderr.trim()}`);
  }
  const exact = before !== undefined && generation() === before;
  return { nft, read: "entries", ...(exact ? { generation: before } : {}) };
}

/** The iptables flavour from where `iptables` leads, or undefined when it does not say. */
function flavourOfBinary(): LiveState["backend"] | undefined {
  const path = which("iptables");
  if (path === undefined) return undefined;
  try {
    const real = Deno.realPathSync(path);
    if (real.endsWith("xtables-nft-multi")) return "nft";
    if (real.endsWith("xtables-legacy-multi")) return "legacy";
  } catch {
    // Unreadable link: ask the tool.
  }
  return undefined;
}

/**
 * The real node, reached through iproute2, iptables, ipset, nft and /proc/sys,
 * all run by `exec`; the nf_tables generation is the kernel's with the
 * system's exec, never known with another one (a fake kernel) unless given;
 * so are conntrack flushes by mark alone (cmd/conntrack_flush.ts).
 */
export function systemHost(
  exec: Exec = systemExec,
  sysctls: Sysctls = procSysctls,
  generation: NftGeneration = exec === systemExec ? kernelNftGeneration : noNftGeneration,
  kernelFlush: KernelFlush = exec === systemExec ? kernelConntrackFlush : noKernelFlush,
): Host {
  let backend: LiveState["backend"] | undefined;
  return {
    async readLive(config, options = {}) {
      const reader = new Reader(exec);
      const nftables = config.backend === "nftables";
      // The other backend's objects: on full reads (delete, plan, status) and when asked
      // (an agent's first pass: a node switched backends keeps no trace of the old one).
      const others = options.leftovers === true || options.ourChainsOnly !== true;
      const readIptables = !nftables || others;
      const flavour = async () => {
        if (backend !== undefined) return;
        // On a node the binary says it without a process: Debian's alternatives point
        // iptables at xtables-nft-multi or xtables-legacy-multi.
        if (exec === systemExec) backend = flavourOfBinary();
        if (backend !== undefined) return;
        try {
          backend = (await reader.output(["iptables", "--version"])).includes("legacy")
            ? "legacy"
            : "nft";
        } catch (error) {
          // No iptables at all (an nftables-only node): nothing of the iptables backend to read.
          if (!(nftables && error instanceof ExecError && error.kind === "not_found")) throw error;
        }
      };
      // Asked once per read, by whichever family's objects need it first.
      let flavourRun: Promise<void> | undefined;
      const flavourOnce = () => flavourRun ??= flavour();
      const iptablesObjects = async () => {
        if (!readIptables) return undefined;
        await flavourOnce();
        if (backend === undefined) return undefined;
        if (!nftables) {
          return await Promise.all([
            readTable(reader, "mangle", options),
            readTable(reader, "nat", options),
            readSets(reader, options.knownSets),
          ]);
        }
        // Leftovers of the iptables backend, looked for cheaply on an agent's pass (our chains
        // in iptables-nft's tables are in `nft list chains ip`, a few ms; iptables-legacy's need
        // iptables -S), and read in full (to remove them) only when there are any.
        if (options.ourChainsOnly) {
          const [chains, names] = await Promise.all([
            backend === "nft"
              ? reader.run(["nft", "-j", "list", "chains", "ip"]).catch(() => undefined)
              : undefined,
            reader.output(["ipset", "list", "-n"]).catch(() => ""),
          ]);
          const oursSets = names.split("\n").some((n) => n.trim().startsWith("kube-egress"));
          let oursChains: boolean;
          if (chains?.code === 0) {
            oursChains = chains.stdout.includes('"name": "KUBE-EGRESS-');
          } else {
            const [mangle, nat] = await Promise.all([
              readTable(reader, "mangle", options),
              readTable(reader, "nat", options),
            ]);
            const ours = (t: typeof mangle.table) =>
              t.chainExists || t.hookRules.some((r) => r.includes(" -j KUBE-EGRESS"));
            oursChains = ours(mangle.table) || ours(nat.table);
          }
          if (!oursChains && !oursSets) {
            const none = { text: "", table: NO_TABLE };
            return [none, none, { sets: NO_SETS, setsRead: "entries" as const }] as const;
          }
        }
        const full = { ...options, ourChainsOnly: false };
        return await Promise.all([
          readTable(reader, "mangle", full),
          readTable(reader, "nat", full),
          readSets(reader, undefined),
        ]);
      };
      // IPv6: when the cluster has an IPv6 pod range, and on full reads (to find what we left).
      const v6Pods = config.podCidrs.filter((c) => c.includes(":"));
      const v4Pods = config.podCidrs.filter((c) => !c.includes(":"));
      const v6On = v6Pods.length > 0;
      let nat6Text = "";
      const ipv6Objects = async (): Promise<LiveFamily | undefined> => {
        if (!v6On && options.ourChainsOnly === true) return undefined;
        const routes = await reader.run(
          ["ip", "-6", "-json", "-N", "-batch", "-"],
          readRoutesBatch(config.interface, config.routeProtocol, v6Pods),
        );
        if (routes.code !== 0) {
          if (/does not exist/.test(routes.stderr)) {
            throw new InterfaceMissingError(config.interface);
          }
          // A node with IPv6 turned off: nothing of ours in IPv6 unless it is configured.
          if (!v6On) return undefined;
          throw new Error(
            `reading IPv6 addresses, rules and routes failed: ${routes.stderr.trim()}`,
          );
        }
        let iptables = { mangle: NO_TABLE, nat: NO_TABLE };
        let sets = NO_SETS;
        if (readIptables) await flavourOnce();
        if (readIptables && backend !== undefined) {
          const full = nftables ? { ...options, ourChainsOnly: false } : options;
          try {
            const [mangle, nat, read] = await Promise.all([
              readTable(reader, "mangle", full, "ip6tables"),
              readTable(reader, "nat", full, "ip6tables"),
              readSets(reader, undefined, IPSET_V6),
            ]);
            iptables = { mangle: mangle.table, nat: nat.table };
            nat6Text = nat.text;
            sets = read.sets;
          } catch (error) {
            // No ip6tables on a node that needs none.
            if (
              !(error instanceof ExecError && error.kind === "not_found" && (!v6On || nftables))
            ) {
              throw error;
            }
          }
        }
        return {
          routes: parseRoutesBatch(routes.stdout, config.routeProtocol, "ipv6"),
          iptables,
          sets,
        };
      };
      const [routes, iptables, nft, ipv6] = await Promise.all([
        reader.run(
          // -4: without it `route show table all` lists the IPv6 routes of our tables too.
          ["ip", "-4", "-json", "-N", "-batch", "-"],
          readRoutesBatch(config.interface, config.routeProtocol, v4Pods),
        ),
        iptablesObjects(),
        nftables || others
          ? readNftables(reader, nftables ? options : {}, generation)
          : { nft: NO_NFTABLES, read: "entries" as const, generation: undefined },
        ipv6Objects(),
      ]);
      const [mangle, nat, setsRead] = iptables ??
        [undefined, undefined, { sets: NO_SETS, setsRead: "entries" as const }];
      if (routes.code !== 0) {
        if (/does not exist/.test(routes.stderr)) throw new InterfaceMissingError(config.interface);
        throw new Error(`reading addresses, rules and routes failed: ${routes.stderr.trim()}`);
      }
      const parsedRoutes = parseRoutesBatch(routes.stdout, config.routeProtocol);
      return {
        backend: backend ?? "nft",
        routes: parsedRoutes,
        iptables: { mangle: mangle?.table ?? NO_TABLE, nat: nat?.table ?? NO_TABLE },
        sets: setsRead.sets,
        nft: nft.nft,
        sysctls: await readSysctls(
          sysctls,
          rpFilterKeys(...rpFilterInterfaces(config.interface, parsedRoutes.podRoutes)),
        ),
        raw: { mangle: mangle?.text ?? "", nat: nat?.text ?? "", nat6: nat6Text },
        ...(ipv6 ? { ipv6 } : {}),
        setsRead: nftables ? nft.read : setsRead.setsRead,
        ...(nftables && nft.generation !== undefined ? { nftGeneration: nft.generation } : {}),
        processes: reader.processes,
      };
    },

    async apply(transaction, options = {}) {
      let processes = 0;
      let bytes = 0;
      const warnings: string[] = [];
      // Each `nft -f` commits one generation; iptables-nft commits too, a number we do not count.
      const nftSteps = transaction.steps.filter((s) => s.op.tool === "nft").length;
      const counted = !transaction.steps.some((s) => s.op.tool === "iptables");
      const before = counted ? generation() : undefined;
      const stepMs: number[] = [];
      let stepStart = performance.now();
      const stepDone = () => {
        const now = performance.now();
        stepMs.push(now - stepStart);
        stepStart = now;
      };
      const runStep = async (step: Step, index: number) => {
        const { op } = step;
        if (op.tool === "conntrackd") {
          // Side by side: each instance commits its own external cache (a takeover's last step).
          await Promise.all(op.commits.map(async (commit) => {
            processes++;
            const args = conntrackdArgs(commit);
            const result = await exec(["conntrackd", ...args], { timeoutMs: 5000 })
              .catch((error) => ({ code: -1, stdout: "", stderr: errorMessage(error) }));
            if (result.code !== 0) {
              warnings.push(
                `conntrackd ${args.join(" ")}: ${(result.stderr || result.stdout).trim()}`,
              );
            }
          }));
          return;
        }
        // A tool that is missing or does not finish in time fails its step, like a bad payload.
        const run = (args: string[], stdin?: string) =>
          exec(args, stdin === undefined ? {} : { stdin }).catch((error) => {
            if (error instanceof ExecError) throw new StepError(step, index, error.message);
            throw error;
          });
        if (op.tool === "sysctl") {
          for (const { key, value } of op.writes) {
            await sysctls.write(key, String(value));
            bytes += String(value).length;
          }
          return;
        }
        if (op.tool === "conntrack") {
          // By mark alone in the kernel; the rest as processes, one family beside the other:
          // their connections never overlap, where a `conntrack -D` whose entry another one
          // deleted first fails ("such conntrack doesn't exist").
          const rest = op.flushes.filter((flush) => !kernelFlush(flush));
          const families = ["ipv4", "ipv6"].map(async (family) => {
            for (const flush of rest.filter((f) => f.family === family)) {
              const result = await run(["conntrack", ...conntrackArgs(flush)]);
              processes++;
              // Exit 1 with "0 flow entries" only means there was nothing to delete.
              const nothing = result.code === 1 && /0 flow entries/.test(result.stderr);
              if (result.code !== 0 && !nothing) throw new StepError(step, index, result.stderr);
            }
          });
          const failed = (await Promise.allSettled(families)).find((r) => r.status === "rejected");
          if (failed) throw failed.reason;
          return;
        }
        const { command, lines } = render(op);
        const payload = lines.join("\n") + "\n";
        const result = await run([...command!], payload);
        processes++;
        bytes += payload.length;
        // A deletion that finds its rule or route already gone is done (`-force` ran the rest).
        const gone = op.tool === "ip" && onlyGoneDeletions(op.changes, result.stderr);
        if (result.code !== 0 && !gone) throw new StepError(step, index, result.stderr);
      };
      const checkAt = options.takenOverGone === undefined ? -1 : transaction.steps.findIndex(
        (s, i) =>
          (s.op.tool === "conntrack" || s.op.tool === "conntrackd") &&
          rolesChangedBefore(transaction, i),
      );
      for (const [index, step] of transaction.steps.entries()) {
        if (stepMs.length < index) stepDone();
        // Outside the try: an abandoned takeover runs neither its flush nor its commit.
        const gone = index === checkAt ? options.takenOverGone!() : [];
        if (gone.length > 0) throw new TakeoverAbandoned(step, index, gone);
        try {
          await runStep(step, index);
        } catch (error) {
          if (!(error instanceof StepError)) throw error;
          // The roles changed already: the flush and the commit still run (core/conntrack.ts).
          const ranAfter: number[] = [];
          for (const later of stillRunAfter(transaction, index)) {
            try {
              await runStep(transaction.steps[later], later);
              ranAfter.push(later);
            } catch (laterError) {
              if (!(laterError instanceof StepError)) throw laterError;
            }
          }
          error.ranAfter = ranAfter;
          throw error;
        }
      }
      if (stepMs.length < transaction.steps.length) stepDone();
      const after = before === undefined ? undefined : generation();
      const alone = after !== undefined && after === before! + nftSteps;
      return {
        processes,
        bytes,
        stepMs,
        ...(warnings.length > 0 ? { warnings } : {}),
        ...(alone ? { nftGeneration: { before: before!, after } } : {}),
      };
    },

    addresses(iface) {
      // getifaddrs(3) in this process: no `ip` to start on a takeover's critical path.
      const mine = Deno.networkInterfaces().filter((i) => i.name === iface);
      return mine.length === 0 ? undefined : mine.map((i) => i.address);
    },

    watchAddresses(iface, onChange) {
      // `ip monitor` prints one line per address event; an event only triggers a
      // pass, which re-reads the addresses exactly (monitor text is never parsed
      // for addresses). If the monitor dies it is restarted; the interval resync
      // covers the gap.
      let stopped = false;
      let child: Deno.ChildProcess | undefined;
      (async () => {
        while (!stopped) {
          const decoder = new TextDecoder();
          try {
            child = new Deno.Command("ip", {
              args: ["monitor", "address", "dev", iface],
              stdin: "null",
              stdout: "piped",
              stderr: "null",
            }).spawn();
            for await (const chunk of child.stdout) {
              // "inet " and "inet6 " lines: an address of either family came or went.
              if (decoder.decode(chunk).includes("inet")) onChange();
            }
            await child.status;
          } catch {
            // Killed or failed to start: handled below.
          }
          if (stopped) break;
          onChange();
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      })();
      return {
        stop() {
          stopped = true;
          try {
            child?.kill();
          } catch {
            // Already gone.
          }
        },
      };
    },
  };
}
