/**
 * Live state + desired state → a transaction: plain data listing, in order,
 * the payload for each tool. An unchanged node gets an empty transaction.
 * The order keeps traffic safe at every step: routes exist before anything is
 * marked for them, and rules go away only after nothing is marked for them.
 */
import { takeoverSteps } from "./conntrack.ts";
import { type Backend, BACKENDS, type DatapathPlanner, step } from "./datapath.ts";
import { iptablesPlanner } from "./datapath_iptables.ts";
import { nftablesPlanner } from "./datapath_nftables.ts";
import { type Intent, intentOf, intentOfFamily, type VipRole } from "./intent.ts";
import type { LiveSets } from "./ipset.ts";
import type { LiveIptables } from "./iptables.ts";
import type { LiveNftables } from "./nftables.ts";
import { deleteRoutes, diffRoutes, type LiveRoutes } from "./iproute.ts";
import type { DatapathConfig } from "./schema.ts";
import type { Snapshot } from "./snapshot.ts";
import { rpFilterFixes, rpFilterInterfaces, rpFilterRestores } from "./sysctl.ts";

/** Everything we read from a node before deciding. */
export interface LiveState {
  /** Which iptables flavour `iptables` is on this node (not which backend we use). */
  readonly backend: "nft" | "legacy";
  readonly routes: LiveRoutes;
  readonly iptables: LiveIptables;
  readonly sets: LiveSets;
  /** Our nftables table (absent: `NO_NFTABLES`). */
  readonly nft: LiveNftables;
  /** sysctl values we care about, keyed "net.ipv4.conf.<if>.<name>". */
  readonly sysctls: Readonly<Record<string, number>>;
}

/**
 * The tools a transaction drives; each step is one process fed `lines` on
 * stdin, except `sysctl` (each line written to /proc/sys) and `conntrack`
 * and `conntrackd` (each line is the arguments of one such process).
 */
export type Tool = "ip" | "ipset" | "iptables" | "sysctl" | "nft" | "conntrack" | "conntrackd";

export interface Step {
  readonly tool: Tool;
  readonly purpose: string;
  readonly lines: readonly string[];
}

export interface Transaction {
  readonly steps: readonly Step[];
}

/** Each backend's planner. */
export const PLANNERS: Readonly<Record<Backend, DatapathPlanner>> = {
  iptables: iptablesPlanner,
  nftables: nftablesPlanner,
};

/** What a pass may do beyond the datapath itself. */
export interface PassOptions {
  /** NAT state replication (core/conntrackd.ts); absent: none. */
  readonly natSync?: NatSync;
}

/** What a pass needs to know of NAT state replication. */
export interface NatSync {
  /**
   * `conntrackd` arguments that commit replicated NAT state, one per instance;
   * run when this node takes a VIP over.
   */
  readonly commits: readonly string[];
  /** This node's own pod ranges (their connections are not replicated). */
  readonly localPodCidrs: readonly string[];
}

/**
 * The transaction that turns a node's live state into the intent, with the
 * configured backend: routes first, then the backend's objects, then the
 * leftovers of any other backend found in `live` (a node switched backends:
 * ours are in place before theirs go), reverse-path filters, stale rules and
 * routes, and last the conntrack flushes of roles that change (and the commit
 * of replicated NAT state on a takeover).
 *
 * A takeover does the least work before traffic flows: its SNAT role (one
 * `iptables-restore` or `nft -f`), then the forwarding rule goes (the node's
 * own pods leave through its SNAT at once), then the conntrack work. Until the
 * flush a packet of an entry without source NAT is dropped by the holder's
 * `unnated` rule, and until the commit a mid-stream TCP packet by its
 * `midstream` rule (core/desired.ts): nothing leaves with a wrong source or a
 * new VIP port in between; the connections' next segments go out translated.
 */
export function planApply(
  desired: Intent,
  live: LiveState,
  config: DatapathConfig,
  options: PassOptions = {},
): Transaction {
  const v4 = intentOfFamily(desired, "ipv4");
  const routes = diffRoutes(live.routes, v4, config.routeProtocol);
  const planner = PLANNERS[config.backend];
  const others = BACKENDS.filter((b): boolean => b !== config.backend)
    .map((b) => PLANNERS[b]);
  // The roles in force: our backend's objects, else a previous backend's.
  const liveRoles = new Map<number, VipRole["role"]>(
    others.flatMap((o) => [...o.rolesInForce(live, config.markMask)]),
  );
  for (const [mark, role] of planner.rolesInForce(live, config.markMask)) liveRoles.set(mark, role);
  const takeover = takeoverSteps(liveRoles, v4.roles, config.markMask, options.natSync);
  return {
    steps: [
      ...step("ip", "add routes, then the rules that use them", routes.add),
      ...planner.plan(desired, live, config),
      ...others.flatMap((o) => o.remove(live)),
      ...step(
        "sysctl",
        "loose reverse-path filter on the interface and the overlay devices",
        rpFilterFixes(
          live.sysctls,
          rpFilterInterfaces(config.interface, live.routes.podRoutes),
        ),
      ),
      ...step("ip", "remove stale rules, then their routes", routes.remove),
      ...step(
        "conntrack",
        "flush connections pinned to a VIP's old role",
        takeover.flushes,
      ),
      ...step(
        "conntrackd",
        "commit the NAT state replicated from the old holder",
        takeover.commits,
      ),
    ],
  };
}

/** Intent and transaction of one pass, from a snapshot and the live state. */
export function planPass(
  snapshot: Snapshot,
  config: DatapathConfig,
  live: LiveState,
  options: PassOptions = {},
): { desired: Intent; transaction: Transaction } {
  const desired = intentOf(snapshot, config, live.routes.addresses, {
    guardVips: options.natSync !== undefined,
  });
  return { desired, transaction: planApply(desired, live, config, options) };
}

/**
 * The transaction that removes everything we created, of every backend found
 * in `live`: jumps, chains, sets, tables, rules, routes. The listing then
 * equals the one before the first apply.
 */
export function planDelete(
  live: LiveState,
  config: Pick<DatapathConfig, "routeProtocol">,
  /** Reverse-path filters as they were before the agent loosened them (its state file). */
  rpFilterOriginals: Readonly<Record<string, number>> = {},
): Transaction {
  const removals = BACKENDS.map((b) => PLANNERS[b].remove(live));
  // Tables that only we used go after our rules and routes (as iptables created them for us).
  const tables = removals.flat().filter((s) => s.tool === "nft");
  return {
    steps: [
      ...removals.flat().filter((s) => s.tool !== "nft"),
      ...step("ip", "remove our rules and routes", deleteRoutes(live.routes, config.routeProtocol)),
      ...tables,
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
    conntrackd: "conntrackd (one process per line)",
  };
  return transaction.steps.map((s, i) =>
    `# step ${i + 1}: ${s.purpose}\n# | ${commands[s.tool]}\n${s.lines.join("\n")}\n`
  ).join("\n");
}
