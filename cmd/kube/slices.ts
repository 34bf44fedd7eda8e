/**
 * The elected controller's publisher: keeps the incremental selection
 * (core/kube/selection_index.ts) fed from the source's caches record by
 * record, and writes what changed as EgressSlices (core/kube/slices.ts plans
 * which). Nothing is written before every cache, the slices included, has
 * been listed: a controller that has not seen the whole cluster would publish
 * a partial selection. Writes are optimistic (resourceVersion); a 409 or 404
 * means the slice changed under us (another controller for a moment, a
 * deletion by hand): the watch brings the new version and the addresses are
 * planned again.
 */
import { Backoff } from "../../core/backoff.ts";
import { errorMessage } from "../../core/errors.ts";
import type {
  CustomRecord,
  NamespaceRecord,
  OwnerRecord,
  PodRecord,
} from "../../core/kube/objects.ts";
import {
  EGRESS_POLICIES,
  EGRESS_SLICES,
  EGRESS_VIPS,
  NAMESPACES,
  PODS,
  REPLICASETS,
  type Resource,
} from "../../core/kube/resources.ts";
import { SelectionIndex } from "../../core/kube/selection_index.ts";
import type { Selection } from "../../core/kube/selection.ts";
import {
  SliceBook,
  sliceObject,
  type SliceRecord,
  sliceRecord,
  type SliceWrite,
} from "../../core/kube/slices.ts";
import { Coalesced } from "../coalesced.ts";
import type { Logger } from "../log.ts";
import { ApiError, type KubeClient } from "./client.ts";
import { Reflector } from "./reflector.ts";
import type { KubeSource } from "./source.ts";

/** What the publisher did, for logs, metrics and tests. */
export interface PublisherStats {
  rounds: number;
  creates: number;
  updates: number;
  deletes: number;
  conflicts: number;
  errors: number;
}

export class SlicePublisher {
  readonly index = new SelectionIndex();
  readonly book: SliceBook;
  readonly slices: Reflector<SliceRecord>;
  readonly stats: PublisherStats = {
    rounds: 0,
    creates: 0,
    updates: 0,
    deletes: 0,
    conflicts: 0,
    errors: 0,
  };
  readonly #rounds = new Coalesced(() => this.#round());
  readonly #retry = new Backoff(250, 10_000);
  #retryTimer?: ReturnType<typeof setTimeout>;
  #unsubscribe?: () => void;
  #fullPass = true;
  #stopped = false;
  #lastError?: string;

  constructor(
    readonly client: KubeClient,
    readonly source: KubeSource,
    readonly log: Logger,
    options: { maxPods?: number; watchIdleMs?: number } = {},
  ) {
    this.book = new SliceBook(options.maxPods);
    this.slices = new Reflector<SliceRecord>(client, log, {
      resource: EGRESS_SLICES,
      reduce: sliceRecord,
      key: (o) => (o as { metadata?: { name?: string } })?.metadata?.name,
      watchIdleMs: options.watchIdleMs,
      onItem: (name, _before, after) => this.book.observe(name, after),
      onChange: () => this.trigger(),
    });
  }

  /** Loads the index from the caches, follows them from now on, and starts watching slices. */
  start(): this {
    const apply = (resource: Resource, key: string, value: unknown) => {
      if (resource === PODS) this.index.setPod(key, value as PodRecord | undefined);
      else if (resource === NAMESPACES) {
        this.index.setNamespace(key, value as NamespaceRecord | undefined);
      } else if (resource === REPLICASETS) {
        this.index.setReplicaSet(key, value as OwnerRecord | undefined);
      } else if (resource === EGRESS_VIPS) {
        this.index.setVip(key, value as CustomRecord | undefined);
      } else if (resource === EGRESS_POLICIES) {
        this.index.setPolicy(key, value as CustomRecord | undefined);
      }
    };
    // The cheap kinds first: each pod is then evaluated once, with its policies known.
    for (const [k, v] of this.source.namespaces.store) apply(NAMESPACES, k, v);
    for (const [k, v] of this.source.replicaSets.store) apply(REPLICASETS, k, v);
    for (const [k, v] of this.source.vips.store) apply(EGRESS_VIPS, k, v);
    for (const [k, v] of this.source.policies.store) apply(EGRESS_POLICIES, k, v);
    for (const [k, v] of this.source.pods.store) apply(PODS, k, v);
    this.#unsubscribe = this.source.watchItems((resource, key, _before, after) => {
      apply(resource, key, after);
      this.trigger();
    }).stop;
    this.slices.start();
    return this;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    this.#unsubscribe?.();
    await this.slices.stop();
    await this.#rounds.idle();
  }

  /** Every cache listed, ours included. */
  get synced(): boolean {
    return this.source.synced && this.slices.synced;
  }

  /** Policy and VIP outcomes for the status writes (from the same index). */
  outcomes(): Pick<Selection, "policies" | "vips"> {
    return this.index.outcomes();
  }

  /** Plans and writes now, or once more after the current round. */
  trigger(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    return this.#rounds.run().catch((error) => this.#error(error));
  }

  /** Looks at every address and slice again (the periodic resync). */
  resync() {
    this.#fullPass = true;
    void this.trigger();
  }

  /** Waits for the current round, if any. */
  idle(): Promise<void> {
    return this.#rounds.idle();
  }

  async #round() {
    if (this.#stopped || !this.synced) return;
    this.book.touch(this.index.takeChanged());
    if (this.#fullPass) {
      this.#fullPass = false;
      this.book.touchAll(this.index.selected().keys());
    }
    if (!this.book.pending) return;
    const writes = this.book.plan((ip) => this.index.egressOf(ip));
    this.stats.rounds++;
    let failed = false;
    for (const write of writes) {
      if (this.#stopped) return;
      if (!await this.#write(write)) failed = true;
    }
    if (failed) this.#scheduleRetry();
    else {
      this.#retry.reset();
      this.#lastError = undefined;
    }
  }

  async #write(write: SliceWrite): Promise<boolean> {
    const before = this.book.slices.get(write.name);
    try {
      if (write.kind === "delete") {
        await this.client.delete(EGRESS_SLICES, write.name);
        this.stats.deletes++;
        this.book.observe(write.name, undefined);
        return true;
      }
      const uid = this.source.vips.store.get(write.egress.vip)?.metadata.uid;
      const object = sliceObject(
        write.name,
        write.egress,
        write.pods,
        uid ? { name: write.egress.vip, uid } : undefined,
        write.resourceVersion,
      );
      const stored = write.resourceVersion
        ? await this.client.update(EGRESS_SLICES, object)
        : await this.client.create(EGRESS_SLICES, object);
      if (write.resourceVersion) this.stats.updates++;
      else this.stats.creates++;
      this.book.observe(write.name, sliceRecord(stored));
      if (write.thenDelete) {
        await this.client.delete(EGRESS_SLICES, write.name);
        this.stats.deletes++;
        this.book.observe(write.name, undefined);
      }
      return true;
    } catch (error) {
      // Plan these addresses again, with whatever the watch brings meanwhile.
      this.book.touch([...(before?.pods ?? []), ...(write.kind === "put" ? write.pods : [])]);
      if (error instanceof ApiError && (error.status === 409 || error.status === 404)) {
        this.stats.conflicts++;
        return false;
      }
      this.stats.errors++;
      this.#error(error);
      return false;
    }
  }

  #scheduleRetry() {
    clearTimeout(this.#retryTimer);
    if (this.#stopped) return;
    this.#retryTimer = setTimeout(() => void this.trigger(), this.#retry.take());
  }

  #error(error: unknown) {
    const message = errorMessage(error);
    if (message !== this.#lastError) {
      this.log.warn("publishing EgressSlices failed; retrying", { error: message });
    }
    this.#lastError = message;
  }
}
