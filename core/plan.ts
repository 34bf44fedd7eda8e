/**
 * Live state + desired state → a transaction: plain data listing, in order,
 * the typed operation of each tool process (core/operation.ts; rendered to
 * the tools' syntax in core/render.ts only). An unchanged node gets an empty
 * transaction.
 * The order keeps traffic safe at every step: routes exist before anything is
 * marked for them, and rules go away only after nothing is marked for them.
 */
import { localPodRanges, takeoverSteps, unmappedFlushes } from "./conntrack.ts";
import {
  type Backend,
  BACKENDS,
  type DatapathPlanner,
  enabledPart,
  liveFamily,
} from "./datapath.ts";
import { iptablesPlanner } from "./datapath_iptables.ts";
import { nftablesPlanner } from "./datapath_nftables.ts";
import { FAMILIES, type Intent, intentOf, type VipRole } from "./intent.ts";
import type { LiveSets } from "./ipset.ts";
import type { LiveIptables } from "./iptables.ts";
import type { LiveNftables } from "./nftables.ts";
import { deleteRoutes, diffRoutes, type LiveRoutes } from "./iproute.ts";
import type { DatapathConfig } from "./schema.ts";
import type { Snapshot } from "./snapshot.ts";
import { type ConntrackdCommit, type IpOperation, type Step, step } from "./operation.ts";
import { render } from "./render.ts";
import { rpFilterFixes, rpFilterInterfaces, rpFilterRestores } from "./sysctl.ts";

export type { Step } from "./operation.ts";

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
  /**
   * IPv6: `ip -6` addresses, rules and routes, ip6tables' tables and the IPv6
   * sets (`IPSET_V6`); absent: not read (IPv4 above). Read when an IPv6 pod
   * range is configured, and on every full read (delete, plan, status), so
   * IPv6 objects of ours are found even after IPv6 was turned off.
   */
  readonly ipv6?: LiveFamily;
}

/** One family's objects outside the nftables table (IPv4's are LiveState's own fields). */
export interface LiveFamily {
  readonly routes: LiveRoutes;
  readonly iptables: LiveIptables;
  readonly sets: LiveSets;
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
  /** The commits of replicated NAT state, one per instance; run when this node takes a VIP over. */
  readonly commits: readonly ConntrackdCommit[];
  /** This node's own pod ranges (their connections are not replicated). */
  readonly localPodCidrs: readonly string[];
}

/**
 * The transaction that turns a node's live state into the intent, with the
 * configured backend: routes first, then the backend's objects, then the
 * leftovers of any other backend found in `live` (a node switched backends:
 * ours are in place before theirs go), reverse-path filters, stale rules and
 * routes, and last the conntrack flushes of roles that change and of local
 * pods mapped with this pass (core/conntrack.ts `unmappedFlushes`), and the
 * commit of replicated NAT state on a takeover.
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
  // Each family's rules and routes (`ip -4`, `ip -6`) from its own part of the intent.
  const routes = FAMILIES.map((family) => {
    const have = liveFamily(live, family);
    return have === undefined
      ? { add: [], remove: [] }
      : diffRoutes(have.routes, enabledPart(desired, family));
  });
  const planner = PLANNERS[config.backend];
  const others = BACKENDS.filter((b): boolean => b !== config.backend)
    .map((b) => PLANNERS[b]);
  const takeovers = FAMILIES.map((family) => {
    // The roles in force: our backend's objects, else a previous backend's.
    const liveRoles = new Map<number, VipRole["role"]>(
      others.flatMap((o) => [...o.rolesInForce(live, config.markMask, family)]),
    );
    for (const [mark, role] of planner.rolesInForce(live, config.markMask, family)) {
      liveRoles.set(mark, role);
    }
    const roles = enabledPart(desired, family).roles;
    return takeoverSteps(liveRoles, roles, config.markMask, options.natSync, family);
  });
  const commits = [
    ...new Map(takeovers.flatMap((t) => t.commits).map((c) => [c.config, c])).values(),
  ];
  const ip = (family: IpOperation["family"], changes: IpOperation["changes"]): IpOperation => ({
    tool: "ip",
    family,
    protocol: config.routeProtocol,
    changes,
  });
  // Each family's local pods mapped with this pass: their connections masqueraded before.
  const unmapped = FAMILIES.flatMap((family) => {
    const part = enabledPart(desired, family);
    const inForce = new Set(
      [planner, ...others].flatMap((p) => [...p.podsInForce(live, family)]),
    );
    const routes = liveFamily(live, family)?.routes;
    const vips = new Set(part.roles.map((r) => r.ip));
    return unmappedFlushes(
      [...part.podMarks.keys(), ...part.scoped.flatMap((c) => [...c.podMarks.keys()])],
      inForce,
      localPodRanges(routes?.podRoutes ?? [], config.interface),
      (routes?.addresses ?? []).filter((a) => !vips.has(a)),
      family,
    );
  });
  return {
    steps: [
      ...step("add routes, then the rules that use them", ip("ipv4", routes[0].add)),
      ...step("add IPv6 routes, then the rules that use them", ip("ipv6", routes[1].add)),
      ...planner.plan(desired, live, config),
      ...others.flatMap((o) => o.remove(live)),
      ...step("loose reverse-path filter on the interface and the overlay devices", {
        tool: "sysctl",
        writes: rpFilterFixes(
          live.sysctls,
          rpFilterInterfaces(config.interface, live.routes.podRoutes),
        ),
      }),
      ...step("remove stale rules, then their routes", ip("ipv4", routes[0].remove)),
      ...step("remove stale IPv6 rules, then their routes", ip("ipv6", routes[1].remove)),
      ...step(
        "flush connections pinned to a VIP's old role or made before their pod was mapped",
        { tool: "conntrack", flushes: [...takeovers.flatMap((t) => t.flushes), ...unmapped] },
      ),
      ...step("commit the NAT state replicated from the old holder", {
        tool: "conntrackd",
        commits,
      }),
    ],
  };
}

/** This node's addresses on the interface, IPv4 then IPv6 (where IPv6 was read). */
export function interfaceAddresses(live: LiveState): readonly string[] {
  return live.ipv6
    ? [...live.routes.addresses, ...live.ipv6.routes.addresses]
    : live.routes.addresses;
}

/** Intent and transaction of one pass, from a snapshot and the live state. */
export function planPass(
  snapshot: Snapshot,
  config: DatapathConfig,
  live: LiveState,
  options: PassOptions = {},
): { desired: Intent; transaction: Transaction } {
  const desired = intentOf(snapshot, config, interfaceAddresses(live), {
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
  const tables = removals.flat().filter((s) => s.op.tool === "nft");
  const ip = (family: IpOperation["family"], routes: LiveFamily["routes"]): IpOperation => ({
    tool: "ip",
    family,
    protocol: config.routeProtocol,
    changes: deleteRoutes(routes),
  });
  return {
    steps: [
      ...removals.flat().filter((s) => s.op.tool !== "nft"),
      ...step("remove our rules and routes", ip("ipv4", live.routes)),
      ...(live.ipv6 ? step("remove our IPv6 rules and routes", ip("ipv6", live.ipv6.routes)) : []),
      ...tables,
      ...step("give back the reverse-path filters we loosened", {
        tool: "sysctl",
        writes: rpFilterRestores(rpFilterOriginals, live.sysctls),
      }),
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
  return transaction.steps.map((s, i) => {
    const { shown, lines } = render(s.op);
    return `# step ${i + 1}: ${s.purpose}\n# | ${shown}\n${lines.join("\n")}\n`;
  }).join("\n");
}
