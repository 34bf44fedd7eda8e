/** Shared test fixtures: a datapath config and snapshots built from short specs. */
import { DatapathConfig, type DatapathConfigInput } from "../core/schema.ts";
import type { RawSnapshot, Snapshot } from "../core/snapshot.ts";
import { validateSnapshot } from "../core/snapshot.ts";
import type { Family } from "../core/intent.ts";
import type { TableName } from "../core/names.ts";
import type { Operation } from "../core/operation.ts";
import type { Transaction } from "../core/plan.ts";

/** The config the tests use: pods in 10.244.0.0/16, services in 10.96.0.0/12. */
export function testConfig(overrides: Partial<DatapathConfigInput> = {}): DatapathConfig {
  return DatapathConfig.parse({
    interface: "eth0",
    podCidrs: ["10.244.0.0/16"],
    serviceCidrs: ["10.96.0.0/12"],
    excludeCidrs: [],
    markMask: "0xff",
    rulePriority: 1000,
    routeProtocol: 233,
    ...overrides,
  });
}

/** A raw snapshot from `{vip: routeId}` and `{podIp: vip}` records. */
export function raw(vips: Record<string, unknown>, pods: Record<string, unknown>): RawSnapshot {
  return {
    vips: Object.entries(vips).map(([ip, routeId]) => ({ origin: `vips/${ip}`, ip, routeId })),
    pods: Object.entries(pods).map(([podIp, vip]) => ({ origin: `pods/${podIp}`, podIp, vip })),
    problems: [],
  };
}

/** A validated snapshot; fails the test if any entry is rejected. */
export function snapshot(vips: Record<string, number>, pods: Record<string, string>): Snapshot {
  const result = validateSnapshot(raw(vips, pods), testConfig());
  if (result.problems.length > 0) throw new Error(JSON.stringify(result.problems));
  return result.snapshot;
}

/** True when running as root (end-to-end tests need it). */
export const isRoot = Deno.uid() === 0;

/**
 * The rules a transaction appends to one table's chains (its iptables or
 * ip6tables steps), as "<chain> <rule>" when `withChain`, else the rule alone.
 */
export function appended(
  tx: Transaction,
  table: TableName,
  family: Family = "ipv4",
  withChain = false,
): string[] {
  return tx.steps.flatMap((s) =>
    s.op.tool === "iptables" && s.op.family === family
      ? s.op.tables.filter((t) => t.table === table).flatMap((t) =>
        t.changes.flatMap((c) =>
          c.verb === "append" ? [withChain ? `${c.chain} ${c.rule}` : c.rule] : []
        )
      )
      : []
  );
}

/** A transaction's operations of one tool, in order. */
export function opsOf<T extends Operation["tool"]>(
  tx: Transaction,
  tool: T,
): Extract<Operation, { tool: T }>[] {
  return tx.steps.flatMap((s) =>
    s.op.tool === tool ? [s.op as Extract<Operation, { tool: T }>] : []
  );
}
