/**
 * Shared by the end-to-end tests: a fresh simulated cluster per test, always
 * torn down, and the Deno.test options every e2e test uses (root only).
 */
import { Cluster } from "../../sim/cluster.ts";
import { ImageAgents } from "../../sim/image_agents.ts";
import { newRunId } from "../../sim/netns.ts";
import type { ClusterSpecInput } from "../../sim/layout.ts";
import { isRoot } from "../helpers.ts";

/** e2e tests need root (network namespaces); they spawn processes that outlive a test step. */
export const e2e = { ignore: !isRoot, sanitizeOps: false, sanitizeResources: false };

/**
 * A fresh cluster for one test. With KE_SIM_AGENTS=image its agents run
 * from the node image (built first, with a private dockerd the cluster
 * stops when destroyed): `KE_SIM_AGENTS=image deno task test -- tests/e2e/kube.e2e.test.ts`.
 * With KE_BACKEND=nftables the agents of every test that does not choose a
 * backend itself use the nftables backend:
 * `KE_BACKEND=nftables deno task test -- tests/e2e/agent.e2e.test.ts`.
 */
export async function createCluster(input: ClusterSpecInput = {}): Promise<Cluster> {
  const backend = Deno.env.get("KE_BACKEND");
  if (backend !== undefined && backend !== "iptables" && backend !== "nftables") {
    throw new Error(`KE_BACKEND=${backend}: iptables or nftables`);
  }
  const spec: ClusterSpecInput = backend && input.backend === undefined
    ? { ...input, backend: backend as "iptables" | "nftables" }
    : input;
  const where = Deno.env.get("KE_SIM_AGENTS") ?? "process";
  if (where === "process") return await Cluster.create(spec);
  if (where !== "image") throw new Error(`KE_SIM_AGENTS=${where}: process or image`);
  const runId = newRunId();
  const agents = await ImageAgents.start(runId, () => {});
  return await Cluster.create(spec, { runId, agents });
}

/** Builds a fresh cluster for one test and always tears it down. */
export async function withCluster(
  fn: (cluster: Cluster) => Promise<void>,
  spec: ClusterSpecInput = {},
): Promise<void> {
  const cluster = await createCluster(spec);
  try {
    await fn(cluster);
  } finally {
    await cluster.destroy();
  }
}
