/**
 * Shared by the end-to-end tests: a fresh simulated cluster per test, always
 * torn down, and the Deno.test options every e2e test uses (root only).
 */
import { Cluster } from "../../sim/cluster.ts";
import type { ClusterSpecInput } from "../../sim/layout.ts";
import { isRoot } from "../helpers.ts";

/** e2e tests need root (network namespaces); they spawn processes that outlive a test step. */
export const e2e = { ignore: !isRoot, sanitizeOps: false, sanitizeResources: false };

/** Builds a fresh cluster for one test and always tears it down. */
export async function withCluster(
  fn: (cluster: Cluster) => Promise<void>,
  spec: ClusterSpecInput = {},
): Promise<void> {
  const cluster = await Cluster.create(spec);
  try {
    await fn(cluster);
  } finally {
    await cluster.destroy();
  }
}
