/**
 * A transaction's steps as typed data: one `Operation` per tool process (or
 * per batch of one tool's processes), carrying what it changes, never the
 * tool's syntax. Planners return these; core/render.ts alone turns them into
 * a tool's command and input, for cmd/system.ts to run and for `plan` to
 * print. Tests assert on these objects (and on kernel state), so a change of
 * rendering cannot hide a change of decision, nor the reverse (the shape of
 * knftables' transaction objects).
 */
import type { Family, PolicyRule, TableRoute } from "./intent.ts";
import type { TableName } from "./names.ts";
import type { NftOp } from "./nftables.ts";

/** One step of a transaction: why, and the operation. */
export interface Step {
  readonly purpose: string;
  readonly op: Operation;
}

/** What one step runs: one variant per tool. */
export type Operation =
  | IpOperation
  | SysctlOperation
  | ConntrackOperation
  | ConntrackdOperation
  | IpsetOperation
  | IptablesOperation
  | NftOperation;

/** `ip -batch` of one family: our policy rules and routes, tagged with our route protocol. */
export interface IpOperation {
  readonly tool: "ip";
  readonly family: Family;
  /** The route protocol our rules and routes carry. */
  readonly protocol: number;
  readonly changes: readonly RouteChange[];
}

/** One `ip rule` or `ip route` change. */
export type RouteChange =
  | { readonly verb: "add" | "del"; readonly rule: PolicyRule }
  | { readonly verb: "add" | "replace" | "del"; readonly route: TableRoute }
  /** A route of ours that is not a default route (stale by definition). */
  | { readonly verb: "del"; readonly stale: { readonly dst: string; readonly table: number } };

/** Writes to /proc/sys. */
export interface SysctlOperation {
  readonly tool: "sysctl";
  readonly writes: readonly SysctlWrite[];
}

/** One sysctl: its dotted key ("net.ipv4.conf.eth0.rp_filter") and value. */
export interface SysctlWrite {
  readonly key: string;
  readonly value: number;
}

/** `conntrack -D` runs, one process per flush. */
export interface ConntrackOperation {
  readonly tool: "conntrack";
  readonly flushes: readonly ConntrackFlush[];
}

/**
 * The connections one `conntrack -D` deletes, and why (core/conntrack.ts):
 * `role`: a VIP's role on this node changed or the VIP went, its connections
 * by mark under our mask (only those from `source` when given); `mapped`: a
 * pod newly mapped, its connections source-NATed to a node address.
 */
export type ConntrackFlush =
  | {
    readonly why: "role";
    readonly family: Family;
    readonly mark: number;
    readonly mask: number;
    /** Only connections from this range (a local pod range). */
    readonly source?: string;
  }
  | {
    readonly why: "mapped";
    readonly family: Family;
    readonly pod: string;
    /** The node address the pod's connections were masqueraded to. */
    readonly srcNat: string;
  };

/** `conntrackd` runs: commit each instance's external cache into the kernel's table. */
export interface ConntrackdOperation {
  readonly tool: "conntrackd";
  readonly commits: readonly ConntrackdCommit[];
}

/** One conntrackd instance, by its configuration file. */
export interface ConntrackdCommit {
  readonly config: string;
}

/** One `ipset restore -exist` of one family's sets. */
export interface IpsetOperation {
  readonly tool: "ipset";
  readonly family: Family;
  readonly changes: readonly SetChange[];
}

/**
 * One ipset change. `options` and `entry` are the iptables backend's own
 * rendering of a set's type and of a member (core/ipset.ts, core/scoped.ts),
 * as `ipset save` prints them back, so live and desired compare as equals.
 */
export type SetChange =
  | { readonly verb: "create"; readonly set: string; readonly options: string }
  | { readonly verb: "add" | "del"; readonly set: string; readonly entry: string }
  | { readonly verb: "flush" | "destroy"; readonly set: string }
  /** `set` takes `with`'s place atomically. */
  | { readonly verb: "swap"; readonly set: string; readonly with: string };

/** One `iptables-restore --noflush` (`ip6tables-restore`): changes to our chains, by table. */
export interface IptablesOperation {
  readonly tool: "iptables";
  readonly family: Family;
  readonly tables: readonly TableChanges[];
}

/** One table's changes, committed together. */
export interface TableChanges {
  readonly table: TableName;
  readonly changes: readonly ChainChange[];
}

/**
 * One change of a chain. A rule is the iptables backend's rendering of the
 * intent (core/desired.ts, core/scoped.ts): its match and target, without the
 * chain (`-m set --match-set ... -j SNAT ...`).
 */
export type ChainChange =
  /** Create our chain, or empty it (a restore's chain declaration). */
  | { readonly verb: "declare"; readonly chain: string }
  | { readonly verb: "append" | "delete"; readonly chain: string; readonly rule: string }
  | {
    readonly verb: "insert";
    readonly chain: string;
    readonly position: number;
    readonly rule: string;
  }
  | { readonly verb: "flush" | "remove"; readonly chain: string };

/** One `nft -f` transaction (core/nftables.ts). */
export interface NftOperation {
  readonly tool: "nft";
  /** The table the operations name: ours (`inet kube-egress`) unless given (the guard's). */
  readonly table?: { readonly family: string; readonly name: string };
  readonly ops: readonly NftOp[];
}

/** How many changes an operation carries (for iptables: tables changed); zero: nothing to do. */
export function operationSize(op: Operation): number {
  switch (op.tool) {
    case "ip":
    case "ipset":
      return op.changes.length;
    case "sysctl":
      return op.writes.length;
    case "conntrack":
      return op.flushes.length;
    case "conntrackd":
      return op.commits.length;
    case "iptables":
      return op.tables.length;
    case "nft":
      return op.ops.length;
  }
}

/** A step doing `op`, or none when `op` changes nothing. */
export function step(purpose: string, op: Operation): Step[] {
  return operationSize(op) > 0 ? [{ purpose, op }] : [];
}
