/**
 * `--backend auto|nftables|iptables`: an explicit choice is taken as is;
 * `auto` looks at the node (core/datapath.ts `chooseBackend`) with two or
 * three cheap processes.
 */
import { type Backend, chooseBackend } from "../core/datapath.ts";
import { MARK_CHAIN } from "../core/names.ts";
import { type Exec, ExecError, systemExec } from "./exec.ts";

/** The flag's values. */
export const BACKEND_CHOICES = ["auto", "nftables", "iptables"] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

/** The backend to use on this node, and why. */
export async function resolveBackend(
  choice: BackendChoice,
  exec: Exec = systemExec,
): Promise<{ backend: Backend; reason: string }> {
  if (choice !== "auto") return { backend: choice, reason: `--backend ${choice}` };
  const quiet = (args: string[]) =>
    exec(args).catch((error) => {
      if (error instanceof ExecError && error.kind === "not_found") return undefined;
      throw error;
    });
  const [tables, chain] = await Promise.all([
    // Chains, not `list tables`: nft fetches every set's elements for that (40 ms at 10,000 pods).
    quiet(["nft", "-j", "list", "chains"]),
    quiet(["iptables", "-w", "5", "-t", "mangle", "-S", MARK_CHAIN]),
  ]);
  return chooseBackend({
    nftTables: tables?.code === 0 ? tablesOfChains(tables.stdout) : undefined,
    iptablesInstalled: chain !== undefined,
    ourIptablesChains: chain?.code === 0,
  });
}

/** "family name" of every table that has a chain, from `nft -j list chains`. */
function tablesOfChains(json: string): string[] {
  const items = (JSON.parse(json || '{"nftables":[]}') as {
    nftables: { chain?: { family: string; table: string } }[];
  }).nftables;
  return [...new Set(items.flatMap((i) => i.chain ? [`${i.chain.family} ${i.chain.table}`] : []))];
}
