/**
 * kube-egress: static egress IPs for Kubernetes pods on bare metal.
 *
 * As a program: `deno run -A mod.ts <run|plan|delete|status> [flags]`.
 * As a library: the pure core (schemas, validation, planning, rendering) that
 * the agent is built on, usable without root or a cluster.
 *
 * @module
 */
export * from "./core/schema.ts";
export * from "./core/snapshot.ts";
export { type DesiredState, desiredState, type VipRole } from "./core/desired.ts";
export { type Family, familyOf, type Intent, intentOf } from "./core/intent.ts";
export { type Backend, BACKENDS, chooseBackend, type DatapathPlanner } from "./core/datapath.ts";
export {
  type LiveNftables,
  type NftOp,
  parseNftJson,
  planNftables,
  renderNft,
} from "./core/nftables.ts";
export {
  isEmpty,
  type LiveState,
  planApply,
  planDelete,
  PLANNERS,
  planPass,
  renderTransaction,
  type Transaction,
} from "./core/plan.ts";
export { rawSnapshotFromFiles } from "./core/mapping_files.ts";
export { nodeStatus, renderStatus } from "./core/status.ts";
export { main } from "./cmd/main.ts";

if (import.meta.main) {
  const { main } = await import("./cmd/main.ts");
  Deno.exit(await main(Deno.args));
}
