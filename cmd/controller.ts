/**
 * `mod.ts controller`: the cluster-wide half of kube-egress, run as a small
 * Deployment (deploy/controller.yaml, two replicas) rather than inside the
 * elected node agent. It alone lists and watches Pods, Namespaces, Nodes and
 * ReplicaSets; while it holds the Lease it selects once for the cluster,
 * publishes the result as EgressSlices and writes statuses, finalizers and
 * Events. The standby replica keeps its caches warm and watches the Lease, so
 * a hand-over costs neither a relist nor a lease duration.
 */
import { CONTROLLER_PERMISSIONS } from "../core/kube/resources.ts";
import { KubeClient } from "./kube/client.ts";
import { Controller } from "./kube/controller.ts";
import { LeaderElector } from "./kube/leader.ts";
import { KubeSource } from "./kube/source.ts";
import type { Logger } from "./log.ts";

/** The default name of the leader-election Lease (the controller replicas share it). */
export const LEASE_NAME = "kube-egress-leader";

export interface ControllerSettings {
  readonly kubeconfig?: string;
  /** Where the Lease lives (default: the kubeconfig's or the pod's namespace, else kube-egress). */
  readonly leaseNamespace?: string;
  /** This replica's name in the Lease (default: $POD_NAME, else the host name). */
  readonly identity?: string;
  readonly sliceMaxPods?: number;
}

/** A running controller: stop() hands the Lease back. */
export interface RunningController {
  readonly controller: Controller;
  readonly elector: LeaderElector;
  readonly source: KubeSource;
  stop(): Promise<void>;
}

/** Connects, starts the caches and the election; the caller waits for a signal, then stops. */
export async function startController(
  settings: ControllerSettings,
  log: Logger,
): Promise<RunningController> {
  const client = await KubeClient.fromEnvironment({
    kubeconfig: settings.kubeconfig,
    permissions: CONTROLLER_PERMISSIONS,
    userAgent: "kube-egress-controller",
  });
  const identity = settings.identity ?? Deno.env.get("POD_NAME") ?? Deno.hostname();
  const source = new KubeSource(client, log).start();
  const controller = new Controller(client, source, log, identity, 30_000, {
    sliceMaxPods: settings.sliceMaxPods,
  });
  const elector = new LeaderElector(client, log, {
    namespace: settings.leaseNamespace ?? client.namespace ?? "kube-egress",
    name: LEASE_NAME,
    identity,
    onChange: (leading) => controller.setActive(leading),
  }).start();
  log.info("controller running", { server: client.server, identity });
  return {
    controller,
    elector,
    source,
    async stop() {
      await elector.stop();
      await controller.stop();
      await source.stop();
      client.close();
    },
  };
}
