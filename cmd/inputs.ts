/**
 * Where the agent's inputs come from: the mapping directories (files) or the
 * Kubernetes API. Either way the agent gets `readInputs` (a RawSnapshot),
 * `watchInputs` (change notifications) and observers; with Kubernetes, the
 * holder reporter runs alongside (the cluster-wide writes are the controller's).
 */
import type { Condition } from "../core/health.ts";
import type { RawSnapshot } from "../core/snapshot.ts";
import type { AgentObserver } from "./agent.ts";
import { FileSource } from "./files.ts";
import type { Logger } from "./log.ts";
import type { CommonSettings } from "./options.ts";

export interface Inputs {
  /** The agent's readInputs; `trigger` says why the pass runs ("resync" re-reads files). */
  readonly readInputs: (trigger: string) => Promise<RawSnapshot>;
  readonly watchInputs: (onChange: () => void) => { stop(): void };
  readonly observers: readonly AgentObserver[];
  /** The source's own readiness condition (/readyz), if it has one. */
  readonly readiness?: Condition;
  /** Stops watches. */
  stop(): Promise<void>;
}

/** The mapping directories, served from memory and re-read on change and resync. */
export function fileInputs(
  settings: Pick<CommonSettings, "podVipDir" | "vipRouteDir"> & { failClosed?: boolean },
): Inputs {
  const source = new FileSource(settings.podVipDir, settings.vipRouteDir);
  const read = (trigger: string) => source.readFor(trigger);
  return {
    readInputs: settings.failClosed ? guardingAll(read) : read,
    watchInputs: (onChange) => source.watch(onChange),
    observers: [],
    stop: () => Promise.resolve(),
  };
}

/**
 * --fail-closed: every pod of the mapping files fails closed, whether its VIP
 * has a route id or not (a VIP file removed while pods still name it). The
 * same raw snapshot in, the same object out, so an unchanged read stays
 * unchanged (the agent skips validating it again).
 */
function guardingAll(read: (trigger: string) => Promise<RawSnapshot>, keep = false) {
  let last: { raw: RawSnapshot; guarded: RawSnapshot } | undefined;
  return async (trigger: string): Promise<RawSnapshot> => {
    const raw = await read(trigger);
    if (last?.raw !== raw) {
      const failClosed = [
        ...(keep ? raw.failClosed ?? [] : []),
        ...raw.pods.map((p) => ({ origin: p.origin, podIp: p.podIp })),
      ];
      last = { raw, guarded: { ...raw, failClosed } };
    }
    return last.guarded;
  };
}

/**
 * Opens the configured source. `agent` = a long-running agent (it also
 * reports the VIPs it holds); otherwise a read-only view for plan/status.
 * With Kubernetes the agent reads what the controller (`mod.ts controller`)
 * publishes: EgressSlices, the EgressVIPs and its own Node.
 */
export async function openInputs(
  settings: CommonSettings,
  log: Logger,
  options: { agent: boolean },
): Promise<Inputs> {
  if (settings.source === "files") return fileInputs(settings);
  const inputs = settings.kubeSelection === "agent"
    ? await openWatchAllInputs(settings, log, options)
    : await openKubeInputs(settings, log, options);
  // --fail-closed with the API: every selected pod, besides the policies that ask for it.
  return settings.failClosed
    ? { ...inputs, readInputs: guardingAll(inputs.readInputs, true) }
    : inputs;
}

/** What a Kubernetes source gives the agent: the slice source, or every object (--kube-selection agent). */
interface KubeInputSource {
  readonly readInputs: () => Promise<RawSnapshot>;
  readonly watchInputs: Inputs["watchInputs"];
  problem(): string | undefined;
  stop(): Promise<void>;
}

/**
 * A Kubernetes source as Inputs; stopping it stops the source, then closes the
 * client. Without `agent`, a read-only view (plan/status); with it, the agent's
 * observers, the source's readiness, and `stopFirst` (what writes to the API)
 * stopped before the source.
 */
function kubeSourceInputs(
  source: KubeInputSource,
  client: { close(): void },
  agent?: { observers: readonly AgentObserver[]; stopFirst(): Promise<void> },
): Inputs {
  return {
    readInputs: source.readInputs,
    watchInputs: source.watchInputs,
    observers: agent?.observers ?? [],
    ...(agent ? { readiness: () => source.problem() } : {}),
    async stop() {
      await agent?.stopFirst();
      await source.stop();
      client.close();
    },
  };
}

async function openKubeInputs(
  settings: CommonSettings,
  log: Logger,
  options: { agent: boolean },
): Promise<Inputs> {
  // The Kubernetes client is loaded only for this source (the mapping directories need none of it).
  const [
    { KubeClient },
    { HolderReporter },
    { SliceSource },
    { GuardEvents },
    { AGENT_PERMISSIONS },
  ] = await Promise.all([
    import("./kube/client.ts"),
    import("./kube/controller.ts"),
    import("./kube/slice_source.ts"),
    import("./kube/guard_events.ts"),
    import("../core/kube/resources.ts"),
  ]);
  const client = await KubeClient.fromEnvironment({
    kubeconfig: settings.kubeconfig,
    permissions: AGENT_PERMISSIONS,
    userAgent: "kube-egress-agent",
  });
  const source = new SliceSource(client, log, {
    nodeName: settings.placement.nodeName,
    vrrpPeers: settings.placement.unicastPeers === "auto",
  }).start();
  if (!options.agent) return kubeSourceInputs(source, client);
  const holder = new HolderReporter(client, source, log, settings.placement.nodeName);
  log.info("kubernetes source", { server: client.server, node: settings.placement.nodeName });
  return kubeSourceInputs(source, client, {
    observers: [holder, new GuardEvents(client, source, log, settings.placement.nodeName)],
    stopFirst: () => {
      holder.stop();
      return Promise.resolve();
    },
  });
}

/** The default name of the agents' Lease with --kube-selection agent. */
const AGENT_LEASE_NAME = "kube-egress-agents";

/**
 * --kube-selection agent: the design before the controller, kept to compare
 * against (`bench kube`) and for clusters that cannot run the controller
 * Deployment: every agent watches every Pod, Namespace, Node and ReplicaSet
 * and selects for itself; one elected agent writes statuses, finalizers and
 * Events (no EgressSlices). Its cost grows with the cluster on every node.
 */
async function openWatchAllInputs(
  settings: CommonSettings,
  log: Logger,
  options: { agent: boolean },
): Promise<Inputs> {
  const [
    { KubeClient },
    { Controller, HolderReporter },
    { LeaderElector },
    { KubeSource },
    { GuardEvents },
  ] = await Promise.all([
    import("./kube/client.ts"),
    import("./kube/controller.ts"),
    import("./kube/leader.ts"),
    import("./kube/source.ts"),
    import("./kube/guard_events.ts"),
  ]);
  const client = await KubeClient.fromEnvironment({
    kubeconfig: settings.kubeconfig,
    userAgent: "kube-egress-agent",
  });
  const source = new KubeSource(client, log, {
    nodeName: settings.placement.nodeName,
    vrrpPeers: settings.placement.unicastPeers === "auto",
  }).start();
  if (!options.agent) return kubeSourceInputs(source, client);
  const controller = new Controller(client, source, log, settings.placement.nodeName, 30_000, {
    publishSlices: false,
  });
  const elector = new LeaderElector(client, log, {
    namespace: settings.leaseNamespace ?? client.namespace ?? "kube-egress",
    name: AGENT_LEASE_NAME,
    identity: settings.placement.nodeName,
    onChange: (leading) => controller.setActive(leading),
  }).start();
  const holder = new HolderReporter(client, source, log, settings.placement.nodeName);
  log.info("kubernetes source", {
    server: client.server,
    node: settings.placement.nodeName,
    selection: "agent",
  });
  return kubeSourceInputs(source, client, {
    observers: [holder, new GuardEvents(client, source, log, settings.placement.nodeName)],
    async stopFirst() {
      holder.stop();
      await elector.stop();
      await controller.stop();
    },
  });
}
