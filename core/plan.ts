/**
 * Live state + desired state → a transaction: plain data listing, in order,
 * the payload for each tool. An unchanged node gets an empty transaction.
 * The order keeps traffic safe at every step: routes exist before anything is
 * marked for them, and rules go away only after nothing is marked for them.
 */
import { conntrackFlushes } from "./conntrack.ts";
import { type DesiredState, desiredState } from "./desired.ts";
import { deleteIpsets, diffIpsets, type LiveSets, staleScopedSets } from "./ipset.ts";
import { deleteIptables, diffIptables, type LiveIptables } from "./iptables.ts";
import { deleteRoutes, diffRoutes, type LiveRoutes } from "./iproute.ts";
import type { DatapathConfig } from "./schema.ts";
import type { Snapshot } from "./snapshot.ts";
import { rpFilterFixes, rpFilterInterfaces, rpFilterRestores } from "./sysctl.ts";

/** Everything we read from a node before deciding. */
export interface LiveState {
  /** Which iptables flavour `iptables` is on this node. */
  readonly backend: "nft" | "legacy";
  readonly routes: LiveRoutes;
  readonly iptables: LiveIptables;
  readonly sets: LiveSets;
  /** sysctl values we care about, keyed "net.ipv4.conf.<if>.<name>". */
  readonly sysctls: Readonly<Record<string, number>>;
}

/**
 * The tools a transaction drives; each step is one process fed `lines` on
 * stdin, except `sysctl` (each line written to /proc/sys) and `conntrack`
 * (each line is the arguments of one `conntrack` process).
 */
export type Tool = "ip" | "ipset" | "iptables" | "sysctl" | "nft" | "conntrack";

export interface Step {
  readonly tool: Tool;
  readonly purpose: string;
  readonly lines: readonly string[];
}

export interface Transaction {
  readonly steps: readonly Step[];
}

function step(tool: Tool, purpose: string, lines: readonly string[]): Step[] {
  return lines.length > 0 ? [{ tool, purpose, lines }] : [];
}

/** The transaction that turns a node's live state into the desired one. */
export function planApply(
  desired: DesiredState,
  live: LiveState,
  config: DatapathConfig,
): Transaction {
  const routes = diffRoutes(live.routes, desired, config.routeProtocol);
  return {
    steps: [
      ...step("ip", "add routes, then the rules that use them", routes.add),
      ...step(
        "ipset",
        "update pod and nosteer sets",
        diffIpsets(
          live.sets,
          desired.podMarks,
          config.markMask,
          desired.noSteer,
          desired.scopedSets,
        ),
      ),
      ...step(
        "iptables",
        "rewrite our chains and jumps",
        diffIptables(live.iptables, desired.chains),
      ),
      ...step(
        "ipset",
        "destroy destination-scoped sets no rule uses any more",
        staleScopedSets(live.sets, desired.scopedSets),
      ),
      ...step(
        "conntrack",
        "flush connections pinned to a VIP's old role",
        conntrackFlushes(live.iptables.nat.rules, desired.roles, config.markMask),
      ),
      ...step(
        "sysctl",
        "loose reverse-path filter on the interface and the overlay devices",
        rpFilterFixes(
          live.sysctls,
          rpFilterInterfaces(config.interface, live.routes.podRoutes),
        ),
      ),
      ...step("ip", "remove stale rules, then their routes", routes.remove),
    ],
  };
}

/** Desired state and transaction of one pass, from a snapshot and the live state. */
export function planPass(
  snapshot: Snapshot,
  config: DatapathConfig,
  live: LiveState,
): { desired: DesiredState; transaction: Transaction } {
  const desired = desiredState(snapshot, config, live.routes.addresses);
  return { desired, transaction: planApply(desired, live, config) };
}

/**
 * The transaction that removes everything we created: jumps, chains, sets,
 * rules, routes. On the nft backend a table that held nothing but ours is
 * removed too, since iptables created it for us; the listing then equals the
 * one before the first apply.
 */
export function planDelete(
  live: LiveState,
  config: Pick<DatapathConfig, "routeProtocol">,
  /** Reverse-path filters as they were before the agent loosened them (its state file). */
  rpFilterOriginals: Readonly<Record<string, number>> = {},
): Transaction {
  // iptables-nft-save lists a table that does not exist as if it held only its
  // built-in chains: a table is ours to remove only if our chain or jump is in it.
  const emptied = live.backend === "nft"
    ? (["mangle", "nat"] as const).filter((t) => {
      const table = live.iptables[t];
      return table.onlyOurs && (table.chainExists || table.hookRules.length > 0);
    })
    : [];
  return {
    steps: [
      ...step("iptables", "remove our jumps and chains", deleteIptables(live.iptables)),
      ...step("ipset", "destroy our sets", deleteIpsets(live.sets)),
      ...step("ip", "remove our rules and routes", deleteRoutes(live.routes, config.routeProtocol)),
      ...step("nft", "remove tables that only we used", emptied.map((t) => `delete table ip ${t}`)),
      ...step(
        "sysctl",
        "give back the reverse-path filters we loosened",
        rpFilterRestores(rpFilterOriginals, live.sysctls),
      ),
    ],
  };
}

/** True when a transaction changes nothing. */
export function isEmpty(transaction: Transaction): boolean {
  return transaction.steps.length === 0;
}

/** Renders a transaction for `plan` and `--dry-run`: each step with its tool and payload. */
export function renderTransaction(transaction: Transaction): string {
  if (isEmpty(transaction)) return "no changes: the node already matches the desired state\n";
  const commands: Record<Tool, string> = {
    ip: "ip -force -batch -",
    ipset: "ipset restore -exist",
    iptables: "iptables-restore --noflush",
    sysctl: "sysctl -w",
    nft: "nft -f -",
    conntrack: "conntrack (one process per line)",
  };
  return transaction.steps.map((s, i) =>
    `# step ${i + 1}: ${s.purpose}\n# | ${commands[s.tool]}\n${s.lines.join("\n")}\n`
  ).join("\n");
}
