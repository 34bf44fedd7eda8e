/**
 * Cluster-wide writes. The elected controller (`mod.ts controller`, see
 * leader.ts) reconciles on every change of the caches: the EgressSlices
 * (slices.ts), route ids, statuses and conditions (with each VIP's selected
 * nodes, so agents need not watch every Node), finalizers and Events, each write optimistic (a 409 means our cache was stale; the watch
 * brings the new version and the next round retries). Every agent also
 * reports, for the VIPs it gains or loses, the holder in the VIP's status: only
 * that node knows the address is on its interface.
 */
import { API_VERSION } from "../../core/kube/api.ts";
import {
  type EventSpec,
  holderEvents,
  holderStatus,
  type ObjectRef,
  reconcileWrites,
} from "../../core/kube/reconcile.ts";
import { EGRESS_POLICIES, EGRESS_VIPS, EVENTS, type Resource } from "../../core/kube/resources.ts";
import type { CustomRecord } from "../../core/kube/objects.ts";
import type { AgentObserver, Role } from "../agent.ts";
import type { Logger } from "../log.ts";
import { ApiError, type KubeClient } from "./client.ts";
import type { KubeSource } from "./source.ts";
import { SlicePublisher } from "./slices.ts";
import { type SelectedNode, selectedNodes } from "../../core/kube/placement.ts";
import { Coalesced } from "../coalesced.ts";
import { Backoff } from "../../core/backoff.ts";
import { errorMessage } from "../../core/errors.ts";

const statusResource = (r: Resource): Resource => ({ ...r, plural: `${r.plural}/status` });

/** Records a core/v1 Event about one of our objects. */
export async function recordEvent(
  client: KubeClient,
  reporter: string,
  object: ObjectRef,
  event: EventSpec,
): Promise<void> {
  const now = new Date().toISOString();
  // Events of cluster-scoped objects live in "default", as kubectl describe expects.
  const namespace = object.namespace ?? "default";
  const suffix = `${Date.now().toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`;
  // An Event's name is a DNS subdomain too (at most 253): a long object name is cut.
  const name = `${object.name.slice(0, 253 - suffix.length - 1).replace(/[.-]+$/, "")}.${suffix}`;
  await client.create(EVENTS, {
    apiVersion: "v1",
    kind: "Event",
    metadata: { name, namespace },
    involvedObject: {
      apiVersion: API_VERSION,
      kind: object.kind,
      name: object.name,
      ...(object.namespace ? { namespace: object.namespace } : {}),
      uid: object.uid,
      resourceVersion: object.resourceVersion,
    },
    type: event.type,
    reason: event.reason,
    message: event.message,
    source: { component: "kube-egress", host: reporter },
    reportingComponent: "kube-egress",
    reportingInstance: reporter,
    firstTimestamp: now,
    lastTimestamp: now,
    count: 1,
  }, namespace);
}

/** What a write round did (for logs and tests). */
export interface RoundResult {
  readonly writes: number;
  readonly conflicts: number;
  readonly events: number;
  readonly errors: number;
}

/** The elected controller's reconciler. Started on election, stopped on loss. */
export class Controller {
  #active = false;
  /** Rounds never overlap; changes during one make one more (if still active). */
  readonly #rounds = new Coalesced(async () => {
    // Pod churn must not turn into a status write per pod: at most one round per interval.
    const wait = this.#lastRoundAt + (this.options.minRoundIntervalMs ?? 500) - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    this.#lastRoundAt = Date.now();
    if (this.#active) await this.round().catch((error) => this.#error(error));
  });
  #lastRoundAt = 0;
  #selected?: { version: number; value: Map<string, SelectedNode[]> };
  #holders?: Map<string, string | undefined>;
  #unsubscribe?: () => void;
  /** The selection, published as EgressSlices while this controller leads. */
  #publisher?: SlicePublisher;
  #interval?: ReturnType<typeof setInterval>;
  #lastError?: string;
  #stopping?: Promise<void>;
  /** Rounds completed, for tests. */
  rounds = 0;

  constructor(
    readonly client: KubeClient,
    readonly source: KubeSource,
    readonly log: Logger,
    readonly identity: string,
    readonly resyncMs = 30_000,
    readonly options: {
      sliceMaxPods?: number;
      minRoundIntervalMs?: number;
      /** false: statuses only, no EgressSlices (--kube-selection agent). Default true. */
      publishSlices?: boolean;
    } = {},
  ) {}

  /** The publisher while leading (tests and metrics read its stats). */
  get publisher(): SlicePublisher | undefined {
    return this.#publisher;
  }

  /** Starts or stops reconciling (leadership changed). */
  setActive(active: boolean) {
    if (active === this.#active) return;
    this.#active = active;
    if (active) {
      this.#holders = undefined;
      // A fresh index and book per term: what the previous leader wrote is read back, not assumed.
      if (this.options.publishSlices !== false) {
        this.#publisher = new SlicePublisher(this.client, this.source, this.log, {
          maxPods: this.options.sliceMaxPods,
        }).start();
      }
      this.#unsubscribe = this.source.watchCaches(() => this.trigger()).stop;
      this.#interval = setInterval(() => {
        this.#publisher?.resync();
        this.trigger();
      }, this.resyncMs);
      this.trigger();
    } else {
      this.#unsubscribe?.();
      clearInterval(this.#interval);
      const publisher = this.#publisher;
      this.#publisher = undefined;
      this.#stopping = publisher?.stop();
    }
  }

  /** Runs a round now, or once more after the current one. */
  trigger() {
    if (this.#active) void this.#rounds.run();
  }

  /** Waits for the current round, if any. */
  idle(): Promise<void> {
    return this.#rounds.idle();
  }

  async stop() {
    this.setActive(false);
    await this.idle();
    await this.#stopping;
  }

  #error(error: unknown) {
    const message = errorMessage(error);
    if (message !== this.#lastError) this.log.warn("cluster-wide write failed", { error: message });
    this.#lastError = message;
  }

  /** One reconcile round against the caches. */
  async round(): Promise<RoundResult> {
    if (!this.source.synced) return { writes: 0, conflicts: 0, events: 0, errors: 0 };
    const vips = [...this.source.vips.store.values()];
    const policies = [...this.source.policies.store.values()];
    // While leading, the incremental index; a round called on its own (tests) selects in full.
    const outcomes = this.#publisher?.outcomes() ?? this.source.selection();
    const writes = reconcileWrites(
      vips,
      policies,
      outcomes,
      new Date().toISOString(),
      this.#selectedNodes(),
    );
    const result = { writes: 0, conflicts: 0, events: 0, errors: 0 };
    const byKey = new Map<string, CustomRecord>();
    for (const r of vips) byKey.set(`EgressVIP/${r.metadata.name}`, r);
    for (const r of policies) {
      byKey.set(`EgressPolicy/${r.metadata.namespace}/${r.metadata.name}`, r);
    }
    const recordOf = (o: ObjectRef) =>
      byKey.get(`${o.kind}/${o.namespace ? `${o.namespace}/` : ""}${o.name}`)!;
    const resourceOf = (o: ObjectRef) => (o.kind === "EgressVIP" ? EGRESS_VIPS : EGRESS_POLICIES);

    // The version each write returned: a second write to the same object in this
    // round (status, then finalizers) builds on it instead of getting a 409.
    const written = new Map<string, string>();
    const keyOf = (o: ObjectRef) => `${o.kind}/${o.namespace ?? ""}/${o.name}`;
    const metadataOf = (o: ObjectRef, record: CustomRecord) => {
      const version = written.get(keyOf(o));
      return version ? { ...record.metadata, resourceVersion: version } : record.metadata;
    };
    const attempt = async (
      write: () => Promise<Record<string, unknown>>,
      object: ObjectRef,
      events: readonly EventSpec[],
    ) => {
      try {
        const stored = await write() as { metadata?: { resourceVersion?: string } };
        if (stored.metadata?.resourceVersion) {
          written.set(keyOf(object), stored.metadata.resourceVersion);
        }
        result.writes++;
      } catch (error) {
        if (error instanceof ApiError && (error.status === 409 || error.status === 404)) {
          result.conflicts++; // stale cache or gone: the watch brings news, then we retry
          return;
        }
        result.errors++;
        this.#error(error);
        return;
      }
      for (const event of events) await this.#event(object, event, result);
    };

    for (const write of writes.statuses) {
      const record = recordOf(write.object);
      await attempt(
        () =>
          this.client.update(statusResource(resourceOf(write.object)), {
            apiVersion: API_VERSION,
            kind: write.object.kind,
            metadata: metadataOf(write.object, record),
            spec: record.spec,
            status: write.status,
          }),
        write.object,
        write.events,
      );
    }
    for (const write of writes.finalizers) {
      const record = recordOf(write.object);
      // A merge patch of the finalizers alone: annotations, labels and owner references
      // (which the cache does not keep) stay as they are; the resourceVersion makes it
      // optimistic, since a merge patch replaces the whole list.
      await attempt(
        () =>
          this.client.patch(resourceOf(write.object), write.object.name, write.object.namespace, {
            metadata: {
              resourceVersion: metadataOf(write.object, record).resourceVersion,
              finalizers: write.finalizers.length > 0 ? [...write.finalizers] : null,
            },
          }),
        write.object,
        write.events,
      );
    }
    const moves = holderEvents(this.#holders, vips);
    this.#holders = moves.next;
    for (const { object, event } of moves.events) await this.#event(object, event, result);
    this.rounds++;
    if (result.writes + result.events > 0) {
      this.log.info("cluster-wide writes", { ...result });
    }
    return result;
  }

  /** status.nodes of every VIP, computed again only when Nodes or EgressVIPs changed. */
  #selectedNodes(): Map<string, SelectedNode[]> {
    const version = this.source.placementVersion;
    if (this.#selected?.version !== version) {
      this.#selected = {
        version,
        value: selectedNodes(this.source.vips.store.values(), this.source.nodes.store.values()),
      };
    }
    return this.#selected.value;
  }

  async #event(object: ObjectRef, event: EventSpec, result: { events: number; errors: number }) {
    try {
      await recordEvent(this.client, this.identity, object, event);
      result.events++;
    } catch (error) {
      result.errors++;
      this.#error(error);
    }
  }
}

/** What the holder reporter reads: the VIPs as cached, once listed. */
export interface HolderSource {
  readonly vips: { readonly store: ReadonlyMap<string, CustomRecord> };
  readonly synced: boolean;
}

/**
 * Every agent: writes status.holder for the VIPs this node gains, clears it
 * for those it loses. An AgentObserver, fed by the agent's role transitions.
 * A failed write (409 because the elected agent wrote the status first, or
 * the API down) is retried on a timer, not left to the next pass: with the
 * Kubernetes source a pass may be minutes away.
 */
export class HolderReporter implements AgentObserver {
  readonly #held = new Set<string>();
  readonly #syncs = new Coalesced(() => this.#syncOnce());
  #retryTimer?: ReturnType<typeof setTimeout>;
  readonly #retry = new Backoff(250, 10_000);
  #stopped = false;

  constructor(
    readonly client: KubeClient,
    readonly source: HolderSource,
    readonly log: Logger,
    readonly node: string,
  ) {}

  transition(vip: string, _from: Role | "none", to: Role | "none") {
    if (to === "holder") this.#held.add(vip);
    else this.#held.delete(vip);
  }

  pass() {
    void this.sync();
  }

  /** No more writes or retries (the agent stops). */
  stop() {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
  }

  /**
   * Writes what differs between the roles and the VIPs' status.holder. A call
   * while a sync runs makes that one go round once more (with what the caches
   * hold then), so no transition is ever dropped.
   */
  sync(): Promise<void> {
    return this.#syncs.run();
  }

  async #syncOnce(): Promise<void> {
    if (this.#stopped || !this.source.synced) return;
    let failed = false;
    for (const record of this.source.vips.store.values()) {
      const ip = (record.spec as { ip?: string } | undefined)?.ip;
      if (!ip) continue;
      const status = holderStatus(record, this.node, this.#held.has(ip));
      if (!status) continue;
      try {
        await this.client.update(statusResource(EGRESS_VIPS), {
          apiVersion: API_VERSION,
          kind: "EgressVIP",
          metadata: record.metadata,
          spec: record.spec,
          status,
        });
        this.log.info(this.#held.has(ip) ? "reported holder" : "cleared holder", {
          vip: ip,
          node: this.node,
        });
      } catch (error) {
        failed = true;
        if (!(error instanceof ApiError && error.status === 409)) {
          this.log.warn("could not report the VIP holder; retrying", {
            vip: ip,
            error: errorMessage(error),
            retry_in_ms: this.#retry.nextMs,
          });
        }
      }
    }
    this.#scheduleRetry(failed);
  }

  /** After a failure: again in a while (250 ms doubling to 10 s); after a success: reset. */
  #scheduleRetry(failed: boolean) {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    if (!failed) this.#retry.reset();
    else if (!this.#stopped) {
      this.#retryTimer = setTimeout(() => void this.sync(), this.#retry.take());
    }
  }
}
