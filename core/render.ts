/**
 * The one place an operation (core/operation.ts) becomes a tool's syntax:
 * `ip -batch` lines, sysctl writes, `conntrack` and `conntrackd` arguments,
 * `ipset restore` and `iptables-restore` lines, and (through `renderNft`,
 * core/nftables.ts) `nft -f` text. cmd/system.ts runs what this renders and
 * `plan`/`--dry-run` print it, so what is shown is what runs.
 */
import type {
  ChainChange,
  ConntrackdCommit,
  ConntrackFlush,
  Operation,
  RouteChange,
  SetChange,
  Step,
} from "./operation.ts";
import { hex } from "./marks.ts";
import { renderNft } from "./nftables.ts";

/** An operation as its tool takes it. */
export interface Rendered {
  /** The command as `plan` prints it above the lines. */
  readonly shown: string;
  /**
   * The process fed `lines` on stdin; absent: one process per line (the
   * line's words are its arguments after `each`), or sysctl writes.
   */
  readonly command?: readonly string[];
  /** `conntrack`, `conntrackd`: the program each line's arguments go to. */
  readonly each?: string;
  readonly lines: readonly string[];
}

/** The tool's command and input for `op`. */
export function render(op: Operation): Rendered {
  switch (op.tool) {
    case "ip": {
      const command = op.family === "ipv4"
        ? ["ip", "-force", "-batch", "-"]
        : ["ip", "-6", "-force", "-batch", "-"];
      return {
        shown: command.join(" "),
        command,
        lines: op.changes.map((c) => routeLine(c, op.protocol)),
      };
    }
    case "sysctl":
      return { shown: "sysctl -w", lines: op.writes.map((w) => `${w.key}=${w.value}`) };
    case "conntrack":
      return {
        shown: "conntrack (one process per line)",
        each: "conntrack",
        lines: op.flushes.map((f) => conntrackArgs(f).join(" ")),
      };
    case "conntrackd":
      return {
        shown: "conntrackd (one process per line)",
        each: "conntrackd",
        lines: op.commits.map((c) => conntrackdArgs(c).join(" ")),
      };
    case "ipset":
      return {
        shown: "ipset restore -exist",
        command: ["ipset", "restore", "-exist"],
        lines: op.changes.map(setLine),
      };
    case "iptables": {
      const restore = op.family === "ipv4" ? "iptables-restore" : "ip6tables-restore";
      return {
        shown: `${restore} --noflush`,
        // Wait for another writer's xtables lock rather than fail at once.
        command: [restore, "--noflush", "--wait", "5"],
        lines: op.tables.flatMap((t) => [`*${t.table}`, ...t.changes.map(chainLine), "COMMIT"]),
      };
    }
    case "nft":
      return {
        shown: "nft -f -",
        command: ["nft", "-f", "-"],
        lines: renderNft(op.ops, op.table && `${op.table.family} ${op.table.name}`),
      };
  }
}

/** The process an operation runs, by the name logs and metrics give it. */
export type ToolName =
  | "ip"
  | "ip6"
  | "ipset"
  | "iptables"
  | "ip6tables"
  | "sysctl"
  | "nft"
  | "conntrack"
  | "conntrackd";

/** `op`'s process name ("ip6" and "ip6tables" for IPv6's). */
export function toolName(op: Operation): ToolName {
  if (op.tool === "ip") return op.family === "ipv4" ? "ip" : "ip6";
  if (op.tool === "iptables") return op.family === "ipv4" ? "iptables" : "ip6tables";
  return op.tool;
}

/** How many lines a transaction's steps render to (metrics and logs count these). */
export function renderedLines(steps: readonly Step[]): number {
  return steps.reduce((n, s) => n + render(s.op).lines.length, 0);
}

function routeLine(change: RouteChange, protocol: number): string {
  if ("rule" in change) {
    const r = change.rule;
    return `rule ${change.verb} pref ${r.priority} fwmark ${hex(r.mark)}/${
      hex(r.mask)
    } lookup ${r.table} proto ${protocol}`;
  }
  if ("stale" in change) {
    return `route del ${change.stale.dst} table ${change.stale.table} proto ${protocol}`;
  }
  const r = change.route;
  return `route ${change.verb} default via ${r.gateway} dev ${r.dev} onlink table ${r.table} proto ${protocol}`;
}

/** The arguments of the `conntrack` process that deletes one flush's connections. */
export function conntrackArgs(flush: ConntrackFlush): string[] {
  const head = ["-D", "-f", flush.family];
  if (flush.why === "mapped") return [...head, "-s", flush.pod, "--src-nat", flush.srcNat];
  return [
    ...head,
    "--mark",
    `${hex(flush.mark)}/${hex(flush.mask)}`,
    ...(flush.source === undefined ? [] : ["-s", flush.source]),
  ];
}

/** The arguments of the `conntrackd` process that commits an instance's external cache. */
export function conntrackdArgs(commit: ConntrackdCommit): string[] {
  return ["-C", commit.config, "-c"];
}

function setLine(change: SetChange): string {
  switch (change.verb) {
    case "create":
      return `create ${change.set} ${change.options}`;
    case "add":
    case "del":
      return `${change.verb} ${change.set} ${change.entry}`;
    case "flush":
    case "destroy":
      return `${change.verb} ${change.set}`;
    case "swap":
      return `swap ${change.set} ${change.with}`;
  }
}

function chainLine(change: ChainChange): string {
  switch (change.verb) {
    case "declare":
      return `:${change.chain} - [0:0]`;
    case "append":
      return `-A ${change.chain} ${change.rule}`;
    case "delete":
      return `-D ${change.chain} ${change.rule}`;
    case "insert":
      return `-I ${change.chain} ${change.position} ${change.rule}`;
    case "flush":
      return `-F ${change.chain}`;
    case "remove":
      return `-X ${change.chain}`;
  }
}
