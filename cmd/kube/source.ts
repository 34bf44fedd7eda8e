/**
 * The Kubernetes source: list/watch pods, namespaces, nodes, ReplicaSets
 * (metadata only) and the two kinds, keep them as small records, and hand the
 * agent a RawSnapshot built by core/kube/selection.ts. Changes trigger a pass
 * at once; the caches survive API outages, so the last good snapshot stays in
 * force until the API server is back.
 */
import {
  type CustomRecord,
  customRecord,
  type NamespaceRecord,
  namespaceRecord,
  type NodeRecord,
  nodeRecord,
  objectKey,
  type OwnerRecord,
  ownerRecord,
  type PodRecord,
  podRecord,
  sameForSelection,
  sameRecord,
} from "../../core/kube/objects.ts";
import {
  EGRESS_POLICIES,
  EGRESS_VIPS,
  NAMESPACES,
  NODES,
  PODS,
  REPLICASETS,
  type Resource,
} from "../../core/kube/resources.ts";
import { type ClusterView, selectEgress, type Selection } from "../../core/kube/selection.ts";
import { eligibleVips, guardNodes, vrrpPeers } from "../../core/kube/placement.ts";
import type { RawSnapshot } from "../../core/snapshot.ts";
import type { Logger } from "../log.ts";
import type { KubeClient } from "./client.ts";
import { Reflector } from "./reflector.ts";
import { reflectorsProblem, waitForReflectors } from "./readiness.ts";

function keyOf(object: unknown): string | undefined {
  const meta = (object as { metadata?: { name?: string; namespace?: string } })?.metadata;
  return meta?.name ? objectKey({ name: meta.name, namespace: meta.namespace }) : undefined;
}

export interface KubeSourceOptions {
  /**
   * This node's name: each VIP in the snapshot then says whether this node may
   * hold it (nodeSelector, cordon/drain), for VIP placement.
   */
  readonly nodeName?: string;
  /**
   * VRRP over unicast with peers from the Nodes: each VIP in the snapshot
   * also lists the InternalIPs of the nodes that may hold it.
   */
  readonly vrrpPeers?: boolean;
  /** How long the first pass waits for the initial lists. */
  readonly syncTimeoutMs?: number;
  /** Server-side watch timeout (the watch is then resumed from its resourceVersion). */
  readonly watchTimeoutSeconds?: number;
  /** Silence (no event, no bookmark) after which a watch is restarted (default 120 s). */
  readonly watchIdleMs?: number;
}

/** One record of a collection changed (undefined: absent before / gone now). */
export type ItemListener = (
  resource: Resource,
  key: string,
  before: unknown,
  after: unknown,
) => void;

/** Who may hold what, as this node's snapshots need it. */
interface PlacementView {
  readonly eligible: Set<string>;
  readonly peers?: Map<string, string[]>;
  /** Per VIP: the nodes that may hold it, cordoned ones included (the guard). */
  readonly nodes: Map<string, string[]>;
}

export class KubeSource {
  readonly pods: Reflector<PodRecord>;
  readonly namespaces: Reflector<NamespaceRecord>;
  readonly nodes: Reflector<NodeRecord>;
  readonly replicaSets: Reflector<OwnerRecord>;
  readonly vips: Reflector<CustomRecord>;
  readonly policies: Reflector<CustomRecord>;
  /** The agent's: called when the selection may have changed. */
  readonly #listeners = new Set<() => void>();
  /** The controller's selection index: called for every record that changed. */
  readonly #itemListeners = new Set<ItemListener>();
  /** The elected writer's: called on every cache change, statuses included. */
  readonly #cacheListeners = new Set<() => void>();
  readonly #syncTimeoutMs: number;
  readonly #nodeName?: string;
  readonly #vrrpPeers: boolean;
  #selection?: { version: number; value: Selection };
  #inputs?: { version: number; value: RawSnapshot };
  /** Bumped on every change that may alter the selection. */
  #version = 0;
  /** Bumped when Nodes or EgressVIPs change: who may hold which VIP. */
  #placementVersion = 0;
  #placement?: PlacementView & { version: number };

  constructor(readonly client: KubeClient, readonly log: Logger, options: KubeSourceOptions = {}) {
    this.#syncTimeoutMs = options.syncTimeoutMs ?? 15_000;
    this.#nodeName = options.nodeName;
    this.#vrrpPeers = options.vrrpPeers === true;
    const make = <T>(
      resource: Resource,
      reduce: (o: unknown) => T | undefined,
      equivalent: (a: T, b: T) => boolean,
      metadataOnly = false,
    ) =>
      new Reflector<T>(client, log, {
        resource,
        reduce,
        key: keyOf,
        metadataOnly,
        equivalent,
        watchTimeoutSeconds: options.watchTimeoutSeconds,
        watchIdleMs: options.watchIdleMs,
        onItem: (key, before, after) => {
          for (const listener of this.#itemListeners) listener(resource, key, before, after);
        },
        onChange: (significant) => {
          if (significant && (resource === NODES || resource === EGRESS_VIPS)) {
            this.#placementVersion++;
          }
          this.#changed(significant);
        },
      });
    this.pods = make(PODS, podRecord, sameRecord);
    this.namespaces = make(NAMESPACES, namespaceRecord, sameRecord);
    this.nodes = make(NODES, nodeRecord, sameRecord);
    this.replicaSets = make(REPLICASETS, ownerRecord, sameRecord, true);
    this.vips = make(EGRESS_VIPS, customRecord, sameForSelection);
    this.policies = make(EGRESS_POLICIES, customRecord, sameForSelection);
  }

  get #reflectors(): Reflector<unknown>[] {
    return [this.pods, this.namespaces, this.nodes, this.replicaSets, this.vips, this.policies];
  }

  /**
   * Status writes (ours and the other agents') and pod updates that keep the
   * reduced record as it was reach the caches but not the agent: with 10,000
   * pods each pass re-selects and re-validates them all.
   */
  #changed(significant: boolean) {
    // The version first: a listener may read the selection at once.
    if (significant) this.#version++;
    for (const listener of this.#cacheListeners) listener();
    if (significant) { for (const listener of this.#listeners) listener(); }
  }

  /** Bumped when Nodes or EgressVIPs change (who may hold which VIP). */
  get placementVersion(): number {
    return this.#placementVersion;
  }

  /** Starts every list/watch. */
  start(): this {
    for (const r of this.#reflectors) r.start();
    return this;
  }

  async stop(): Promise<void> {
    await Promise.all(this.#reflectors.map((r) => r.stop()));
  }

  /** True once every collection has been listed. */
  get synced(): boolean {
    return this.#reflectors.every((r) => r.synced);
  }

  /**
   * Readiness of the source: undefined when every collection is listed and
   * watched, else what is wrong. A failing watch keeps the last known objects
   * (the agent goes on with them) but the node is reported not ready, since
   * changes made meanwhile in the API are not seen.
   */
  problem(): string | undefined {
    return reflectorsProblem(this.#reflectors);
  }

  /** Resolves when synced, or throws after the timeout naming what is missing. */
  waitForSync(timeoutMs = this.#syncTimeoutMs): Promise<void> {
    return waitForReflectors(this.#reflectors, this.client.server, timeoutMs);
  }

  /** The caches as selection reads them. */
  view(): ClusterView {
    const namespaces = new Map([...this.namespaces.store.values()].map((n) => [n.name, n]));
    return {
      vips: this.vips.store.values(),
      policies: this.policies.store.values(),
      pods: this.pods.store.values(),
      namespaces,
      replicaSets: this.replicaSets.store,
    };
  }

  /** Selection of the current caches (computed once per change). */
  selection(): Selection {
    if (this.#selection?.version !== this.#version) {
      this.#selection = { version: this.#version, value: selectEgress(this.view()) };
    }
    return this.#selection.value;
  }

  /**
   * The agent's readInputs: waits for the first lists, then the current
   * snapshot, each VIP marked eligible or not for this node (when the node's
   * object is known).
   */
  readInputs = async (): Promise<RawSnapshot> => {
    await this.waitForSync();
    // The same object while nothing changed: the agent then skips validating it again.
    if (this.#inputs?.version !== this.#version) {
      this.#inputs = { version: this.#version, value: this.#withEligibility(this.selection().raw) };
    }
    return this.#inputs.value;
  };

  #withEligibility(raw: RawSnapshot): RawSnapshot {
    if (this.#nodeName === undefined || !this.nodes.store.has(this.#nodeName)) return raw;
    const { eligible, peers, nodes } = this.#placementFor(this.#nodeName);
    return {
      ...raw,
      vips: raw.vips.map((v) => ({
        ...v,
        eligible: eligible.has(String(v.ip)),
        ...(peers ? { peers: peers.get(String(v.ip)) ?? [] } : {}),
        nodes: nodes.get(String(v.ip)) ?? [],
      })),
    };
  }

  /**
   * The VIPs this node may hold and (with `vrrpPeers`) each VIP's unicast
   * peers, computed again only when Nodes or EgressVIPs changed: pod events,
   * the frequent ones, reuse them (peers for 1,000 nodes × 250 VIPs: ~30 ms).
   */
  #placementFor(nodeName: string): PlacementView {
    if (this.#placement?.version !== this.#placementVersion) {
      this.#placement = {
        version: this.#placementVersion,
        eligible: this.eligibleVips(nodeName),
        peers: this.#vrrpPeers
          ? vrrpPeers(this.vips.store.values(), this.nodes.store.values())
          : undefined,
        nodes: guardNodes(this.vips.store.values(), this.nodes.store.values()),
      };
    }
    return this.#placement;
  }

  /** The agent's watchInputs: calls back when a change may alter the selection. */
  watchInputs = (onChange: () => void): { stop(): void } => {
    this.#listeners.add(onChange);
    return { stop: () => this.#listeners.delete(onChange) };
  };

  /** Calls back with every record that changed (the controller's incremental selection). */
  watchItems = (listener: ItemListener): { stop(): void } => {
    this.#itemListeners.add(listener);
    return { stop: () => this.#itemListeners.delete(listener) };
  };

  /** Calls back on every cache change, statuses included (the elected writer reconciles them). */
  watchCaches = (onChange: () => void): { stop(): void } => {
    this.#cacheListeners.add(onChange);
    return { stop: () => this.#cacheListeners.delete(onChange) };
  };

  /**
   * VIP addresses this node may hold: the VIP's nodeSelector matches the
   * node's labels and the node is not cordoned. For VIP placement
   * (keepalived priorities, giving VIPs up on drain).
   */
  eligibleVips(nodeName: string): Set<string> {
    return eligibleVips(this.vips.store.values(), this.nodes.store.get(nodeName));
  }
}
