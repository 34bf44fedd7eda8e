/**
 * A reflector keeps a local cache of one collection: list (paginated), then
 * watch from the list's resourceVersion; resume the watch from the last seen
 * resourceVersion (events and bookmarks) after a timeout or a dropped
 * connection; relist when the server answers 410 Gone (the version is too old).
 * The cache is replaced only by a complete relist and is never cleared on
 * errors, so a lost API server leaves the last good view in place.
 */
import { ApiError, type KubeClient } from "./client.ts";
import type { Resource } from "../../core/kube/resources.ts";
import type { Logger } from "../log.ts";
import { errorMessage } from "../../core/errors.ts";
import { Backoff } from "../../core/backoff.ts";
import { abortableSleep } from "../sleep.ts";

export interface ReflectorOptions<T> {
  readonly resource: Resource;
  /** Reduces an API object to what the cache keeps; undefined = skip the object. */
  readonly reduce: (object: unknown) => T | undefined;
  /** The cache key of an API object ("namespace/name" or "name"). */
  readonly key: (object: unknown) => string | undefined;
  /** Ask for metadata only (PartialObjectMetadata). */
  readonly metadataOnly?: boolean;
  /** Only the objects this field selector matches (e.g. `metadata.name=node1`). */
  readonly fieldSelector?: string;
  /**
   * Called after every change to the cache (a whole relist counts once).
   * `significant` is false when a record was replaced by an `equivalent` one.
   */
  readonly onChange: (significant: boolean) => void;
  /**
   * Called for every record that changed (before the matching onChange):
   * watch events one by one, a relist as the difference to the old cache.
   * For consumers that keep their own index (the controller's selection).
   */
  onItem?(key: string, before: T | undefined, after: T | undefined): void;
  /**
   * Records that mean the same to the consumer (e.g. differing only in a status
   * it does not read): an update from one to the other still refreshes the
   * cache but is reported as not significant. Default: no two records are.
   */
  equivalent?(a: T, b: T): boolean;
  /** Server-side watch timeout; the watch is then resumed. */
  readonly watchTimeoutSeconds?: number;
  /**
   * A watch that brings no event and no bookmark for this long is dead (a
   * black-holed connection): it is restarted and readiness says so. Default:
   * twice kube-apiserver's bookmark interval of about a minute.
   */
  readonly watchIdleMs?: number;
  /** First retry delay after an error; doubles up to maxBackoffMs. */
  readonly backoffMs?: number;
  readonly maxBackoffMs?: number;
  readonly pageSize?: number;
}

/** What a reflector did, for tests and metrics. */
export interface ReflectorStats {
  lists: number;
  watches: number;
  events: number;
  bookmarks: number;
  gone: number;
  errors: number;
}

export class Reflector<T> {
  readonly store = new Map<string, T>();
  readonly stats: ReflectorStats = {
    lists: 0,
    watches: 0,
    events: 0,
    bookmarks: 0,
    gone: 0,
    errors: 0,
  };
  #synced = false;
  #resourceVersion: string | undefined;
  /** After a 410 the next list must not go back in time: a consistent read, not the cache. */
  #needConsistentList = false;
  #abort = new AbortController();
  #running?: Promise<void>;
  #lastError?: string;

  constructor(
    readonly client: KubeClient,
    readonly log: Logger,
    readonly options: ReflectorOptions<T>,
  ) {}

  /** True once the first list completed. */
  get synced(): boolean {
    return this.#synced;
  }

  /** The last list/watch error, until a watch succeeds again. */
  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** The resourceVersion a resumed watch would start from. */
  get resourceVersion(): string | undefined {
    return this.#resourceVersion;
  }

  get #name(): string {
    return this.options.resource.plural;
  }

  /** Starts listing and watching in the background. */
  start(): void {
    this.#running ??= this.#loop();
  }

  /** Stops the watch; the cache keeps its content. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#running;
  }

  async #loop() {
    const signal = this.#abort.signal;
    const backoff = new Backoff(this.options.backoffMs ?? 500, this.options.maxBackoffMs ?? 30_000);
    while (!signal.aborted) {
      try {
        if (this.#resourceVersion === undefined) await this.#relist();
        await this.#watch(signal, () => {
          backoff.reset();
          if (this.#lastError !== undefined) {
            this.log.info("watch resumed", { resource: this.#name });
            this.#lastError = undefined;
          }
        });
      } catch (error) {
        if (signal.aborted) break;
        this.stats.errors++;
        if (error instanceof ApiError && error.status === 410) {
          this.#gone();
          continue;
        }
        const message = errorMessage(error);
        if (message !== this.#lastError) {
          this.log.warn("list/watch failed; keeping the last known objects and retrying", {
            resource: this.#name,
            error: message,
          });
        }
        this.#lastError = message;
        // ±20 % jitter: agents on every node must not retry in step.
        await abortableSleep(backoff.take() * (0.8 + Math.random() * 0.4), signal);
      }
    }
  }

  #gone() {
    this.stats.gone++;
    this.log.info("resourceVersion expired (410 Gone); relisting", { resource: this.#name });
    this.#resourceVersion = undefined;
    this.#needConsistentList = true;
  }

  /**
   * As client-go's reflector: the first list asks for resourceVersion=0, so the
   * API server answers from its watch cache instead of a quorum read from etcd
   * (1,000 agents starting at once); the watch from that version brings anything
   * newer. A relist after 410 Gone is a consistent read (the cache may be behind
   * what we already saw).
   */
  async #relist() {
    const fresh = new Map<string, T>();
    const { resourceVersion } = await this.client.list(this.options.resource, {
      metadataOnly: this.options.metadataOnly,
      fieldSelector: this.options.fieldSelector,
      pageSize: this.options.pageSize,
      resourceVersion: this.#needConsistentList ? undefined : "0",
      onItems: (items) => {
        for (const item of items) this.#put(fresh, item);
      },
    });
    this.stats.lists++;
    this.#needConsistentList = false;
    const onItem = this.options.onItem;
    const old = onItem ? new Map(this.store) : undefined;
    this.store.clear();
    for (const [k, v] of fresh) this.store.set(k, v);
    if (onItem && old) {
      for (const [k, v] of old) {
        const now = fresh.get(k);
        if (now === undefined) onItem(k, v, undefined);
        else if (JSON.stringify(now) !== JSON.stringify(v)) onItem(k, v, now);
      }
      for (const [k, v] of fresh) if (!old.has(k)) onItem(k, undefined, v);
    }
    this.#resourceVersion = resourceVersion;
    this.#synced = true;
    this.options.onChange(true);
  }

  #put(store: Map<string, T>, object: unknown) {
    const key = this.options.key(object);
    if (key === undefined) return;
    const value = this.options.reduce(object);
    if (value === undefined) store.delete(key);
    else store.set(key, value);
  }

  async #watch(signal: AbortSignal, onOpen: () => void) {
    this.stats.watches++;
    for await (
      const event of this.client.watch(this.options.resource, this.#resourceVersion!, {
        signal,
        timeoutSeconds: this.options.watchTimeoutSeconds,
        metadataOnly: this.options.metadataOnly,
        fieldSelector: this.options.fieldSelector,
        idleMs: this.options.watchIdleMs,
        onOpen,
      })
    ) {
      if (event.type === "ERROR") {
        if (event.object.code === 410) {
          this.#gone();
          return;
        }
        throw new Error(`watch error: ${JSON.stringify(event.object).slice(0, 300)}`);
      }
      const version = event.object.metadata?.resourceVersion;
      if (event.type === "BOOKMARK") {
        this.stats.bookmarks++;
      } else {
        this.stats.events++;
        const key = this.options.key(event.object);
        const before = key === undefined ? undefined : this.store.get(key);
        if (event.type === "DELETED") {
          if (key !== undefined) this.store.delete(key);
        } else this.#put(this.store, event.object);
        const after = key === undefined ? undefined : this.store.get(key);
        if (key !== undefined && (before !== undefined || after !== undefined)) {
          this.options.onItem?.(key, before, after);
        }
        const same = before !== undefined && after !== undefined &&
          (this.options.equivalent?.(before, after) ?? false);
        this.options.onChange(!same);
      }
      if (version) this.#resourceVersion = version;
    }
  }
}
