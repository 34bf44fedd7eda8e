/**
 * The node, as the agent sees it: read the live state with a handful of
 * processes, apply a transaction step by step (each step one process fed on
 * stdin), and watch the interface's addresses. Every process goes through dax.
 */
import $ from "dax";
import { confirmSets, type LiveSets, parseIpsetSave, parseIpsetTerse } from "../core/ipset.ts";
import { parseIptablesSave } from "../core/iptables.ts";
import { parseRoutesBatch, readRoutesBatch } from "../core/iproute.ts";
import { NOSTEER_SET, PODS_SET } from "../core/names.ts";
import type { LiveState, Step, Transaction } from "../core/plan.ts";
import type { DatapathConfig } from "../core/schema.ts";
import { rpFilterInterfaces, rpFilterKeys } from "../core/sysctl.ts";

/** What a pass needs from the machine; the agent loop is tested against a fake one. */
export interface Host {
  readLive(config: DatapathConfig, options?: ReadOptions): Promise<LiveRead>;
  apply(transaction: Transaction): Promise<ApplyReport>;
  watchAddresses(iface: string, onChange: () => void): { stop(): void };
}

/** The raw iptables text, kept for status counters. */
export interface Raw {
  readonly raw: { readonly mangle: string; readonly nat: string };
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
}

/** The live state, and how it was read. */
export interface LiveRead extends LiveState, Raw {
  /** "entries": our sets were listed in full; "summary": `knownSets` were confirmed by size. */
  readonly setsRead: "entries" | "summary";
  /** Processes started to read it. */
  readonly processes: number;
}

export interface ApplyReport {
  /** Processes started. */
  readonly processes: number;
  /** Bytes written to the tools' stdin (i.e. towards the kernel). */
  readonly bytes: number;
}

/** The interface the agent was told to use does not exist: fatal before any change. */
export class InterfaceMissingError extends Error {
  constructor(readonly iface: string) {
    super(`interface ${iface} does not exist on this node (check --interface)`);
  }
}

/** A step of a transaction failed; the steps after it were not run. */
export class StepError extends Error {
  constructor(readonly step: Step, readonly index: number, stderr: string) {
    super(`step ${index + 1} (${step.purpose}) failed: ${stderr.trim() || "no error text"}`);
  }
}

async function run(
  args: string[],
  stdin?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  let command = $`${args}`.stdout("piped").stderr("piped").noThrow();
  if (stdin !== undefined) command = command.stdinText(stdin);
  const result = await command;
  return { code: result.code, stdout: result.stdout, stderr: result.stderr };
}

const STEP_COMMANDS: Record<Exclude<Step["tool"], "sysctl">, string[]> = {
  ip: ["ip", "-force", "-batch", "-"],
  ipset: ["ipset", "restore", "-exist"],
  iptables: ["iptables-restore", "--noflush", "--wait", "5"],
  nft: ["nft", "-f", "-"],
};

function sysctlPath(key: string): string {
  return "/proc/sys/" + key.replaceAll(".", "/");
}

async function readSysctls(keys: string[]): Promise<Record<string, number>> {
  const values: Record<string, number> = {};
  for (const key of keys) {
    try {
      values[key] = Number((await Deno.readTextFile(sysctlPath(key))).trim());
    } catch {
      // A key that is missing (e.g. the interface just went away) reads as unset.
    }
  }
  return values;
}

/** The real node, reached through iproute2, iptables, ipset and /proc/sys. */
export function systemHost(): Host {
  let backend: LiveState["backend"] | undefined;
  return {
    async readLive(config, options = {}) {
      let processes = 0;
      const tool = (args: string[], stdin?: string) => (processes++, run(args, stdin));
      const output = async (args: string[]) => {
        const result = await tool(args);
        if (result.code !== 0) {
          throw new Error(
            `${args.join(" ")} failed (exit ${result.code}): ${result.stderr.trim()}`,
          );
        }
        return result.stdout;
      };
      backend ??= (await output(["iptables", "--version"])).includes("legacy") ? "legacy" : "nft";
      const setEntries = async () => {
        // A set that does not exist is simply absent: no listing of names first.
        const saved = await Promise.all([PODS_SET, NOSTEER_SET].map(async (name) => {
          const result = await tool(["ipset", "save", name]);
          if (result.code === 0) return result.stdout;
          if (/does not exist/.test(result.stderr)) return "";
          throw new Error(`ipset save ${name} failed: ${result.stderr.trim()}`);
        }));
        return parseIpsetSave(saved.join("\n"));
      };
      const readSets = async (): Promise<{ sets: LiveSets; setsRead: LiveRead["setsRead"] }> => {
        if (options.knownSets) {
          const summary = parseIpsetTerse(await output(["ipset", "list", "-t"]));
          const confirmed = confirmSets(options.knownSets, summary);
          if (confirmed) return { sets: confirmed, setsRead: "summary" };
        }
        return { sets: await setEntries(), setsRead: "entries" };
      };
      const counters = options.counters ? ["-c"] : [];
      const [routes, mangle, nat, { sets, setsRead }] = await Promise.all([
        tool(
          ["ip", "-json", "-N", "-batch", "-"],
          readRoutesBatch(config.interface, config.routeProtocol, config.podCidrs),
        ),
        output(["iptables-save", ...counters, "-t", "mangle"]),
        output(["iptables-save", ...counters, "-t", "nat"]),
        readSets(),
      ]);
      if (routes.code !== 0) {
        if (/does not exist/.test(routes.stderr)) throw new InterfaceMissingError(config.interface);
        throw new Error(`reading addresses, rules and routes failed: ${routes.stderr.trim()}`);
      }
      const parsedRoutes = parseRoutesBatch(routes.stdout, config.routeProtocol);
      return {
        backend,
        routes: parsedRoutes,
        iptables: {
          mangle: parseIptablesSave(mangle, "mangle"),
          nat: parseIptablesSave(nat, "nat"),
        },
        sets,
        sysctls: await readSysctls(
          rpFilterKeys(...rpFilterInterfaces(config.interface, parsedRoutes.podRoutes)),
        ),
        raw: { mangle, nat },
        setsRead,
        processes,
      };
    },

    async apply(transaction) {
      let processes = 0;
      let bytes = 0;
      for (const [index, step] of transaction.steps.entries()) {
        if (step.tool === "sysctl") {
          for (const line of step.lines) {
            const [key, value] = line.split("=");
            await Deno.writeTextFile(sysctlPath(key), value);
            bytes += value.length;
          }
          continue;
        }
        const payload = step.lines.join("\n") + "\n";
        const result = await run(STEP_COMMANDS[step.tool], payload);
        processes++;
        bytes += payload.length;
        if (result.code !== 0) throw new StepError(step, index, result.stderr);
      }
      return { processes, bytes };
    },

    watchAddresses(iface, onChange) {
      // `ip monitor` prints one line per address event; an event only triggers a
      // pass, which re-reads the addresses exactly (monitor text is never parsed
      // for addresses). If the monitor dies it is restarted; the interval resync
      // covers the gap.
      let stopped = false;
      let child: ReturnType<typeof spawnMonitor> | undefined;
      const spawnMonitor = () =>
        $`ip monitor address dev ${iface}`.stdout("piped").stderr("null").noThrow().spawn();
      (async () => {
        while (!stopped) {
          child = spawnMonitor();
          const decoder = new TextDecoder();
          try {
            for await (const chunk of child.stdout()) {
              if (decoder.decode(chunk).includes("inet ")) onChange();
            }
          } catch {
            // Killed or failed: handled below.
          }
          if (stopped) break;
          onChange();
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      })();
      return {
        stop() {
          stopped = true;
          child?.kill();
        },
      };
    },
  };
}
