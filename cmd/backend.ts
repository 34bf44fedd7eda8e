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
    quiet(["nft", "list", "tables"]),
    quiet(["iptables", "-w", "5", "-t", "mangle", "-S", MARK_CHAIN]),
  ]);
  return chooseBackend({
    nftTables: tables?.code === 0
      ? tables.stdout.split("\n").map((l) => l.replace(/^table /, "").trim()).filter(Boolean)
      : undefined,
    iptablesInstalled: chain !== undefined,
    ourIptablesChains: chain?.code === 0,
  });
}
