/**
 * The machine's own state, kept out of the tests. Every default host path
 * that the agent, the CLI and the simulator use, and how a test run moves it
 * into a directory of its own (`deno task test` does, for every test and
 * every agent the tests start):
 *
 * | default                                   | moved by                  |
 * | ----------------------------------------- | ------------------------- |
 * | /run/kube-egress (state dir, lock)        | $KUBE_EGRESS_STATE_DIR    |
 * | /run/kube-egress-sim (`sim up` records)   | $KE_SIM_STATE_DIR         |
 * | /run/xtables.lock (iptables-legacy)       | $XTABLES_LOCKFILE         |
 * | ~/.kube/config                            | $KUBECONFIG               |
 * | /proc/sys via $KUBE_EGRESS_PROC_SYS       | unset: each namespace's   |
 * | in-cluster API ($KUBERNETES_SERVICE_HOST) | unset: never in a pod     |
 * | node name $NODE_NAME                      | unset: tests name nodes   |
 *
 * The mapping directories (/etc/kube-egress/...) have no variable: every test
 * gives -v and -r (the suite passes with them full, see host_state.e2e).
 */
import { join } from "node:path";

/** Variables a test run must not inherit from the machine. */
export const MACHINE_VARIABLES = [
  "KUBE_EGRESS_STATE_DIR",
  "KE_SIM_STATE_DIR",
  "XTABLES_LOCKFILE",
  "KUBECONFIG",
  "KUBE_EGRESS_PROC_SYS",
  "KUBERNETES_SERVICE_HOST",
  "KUBERNETES_SERVICE_PORT",
  "NODE_NAME",
] as const;

/** The environment of a test run whose host paths all live under `root`. */
export function testEnvironment(
  root: string,
  inherited: Record<string, string> = Deno.env.toObject(),
): Record<string, string> {
  const env = { ...inherited };
  for (const name of MACHINE_VARIABLES) delete env[name];
  return {
    ...env,
    KUBE_EGRESS_STATE_DIR: join(root, "state"),
    KE_SIM_STATE_DIR: join(root, "sim"),
    XTABLES_LOCKFILE: join(root, "xtables.lock"),
    KUBECONFIG: join(root, "kubeconfig"),
  };
}
