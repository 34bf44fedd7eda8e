/**
 * The storage behind the test API server: objects per resource, one global
 * resourceVersion counter (like etcd's revision), a bounded event history for
 * watch resumption, and the API's write rules — optimistic concurrency (409 on
 * a stale resourceVersion), generation bumps on spec changes, the status
 * subresource, finalizers and deletionTimestamp.
 */

export type Obj = Record<string, unknown> & { metadata: Meta };
export interface Meta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  finalizers?: string[];
  labels?: Record<string, string>;
  [key: string]: unknown;
}

export type EventType = "ADDED" | "MODIFIED" | "DELETED";

export interface StoredEvent {
  readonly rv: number;
  readonly resource: string;
  readonly type: EventType;
  readonly object: Obj;
}

/** An error the server turns into a Status response. */
export class StatusError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string) {
    super(message);
  }
}

/** How the server knows a resource: "group/plural" → namespaced, kind, apiVersion, status subresource. */
export interface ResourceInfo {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly kind: string;
  readonly namespaced: boolean;
  /** Writes to the main resource keep the stored status (status goes through /status). */
  readonly statusSubresource: boolean;
}

const clone = <T>(value: T): T => structuredClone(value);
const seconds = (date: Date) => date.toISOString().replace(/\.\d{3}Z$/, "Z");

function objectKey(meta: { namespace?: string; name: string }): string {
  return meta.namespace ? `${meta.namespace}/${meta.name}` : meta.name;
}

/** Everything but metadata and status, to tell spec changes (generation) from others. */
function specPart(object: Obj): string {
  const { metadata: _m, status: _s, ...rest } = object;
  return JSON.stringify(rest);
}

export class KubeStore {
  #rv = 1;
  readonly #objects = new Map<string, Map<string, Obj>>();
  readonly #history: StoredEvent[] = [];
  /** Watches from a version at or below this get 410 Gone. */
  #compactedBelow = 0;
  readonly #listeners = new Set<(event: StoredEvent) => void>();

  constructor(readonly historyLimit = 10_000, readonly clock: () => Date = () => new Date()) {}

  get resourceVersion(): number {
    return this.#rv;
  }

  get compactedBelow(): number {
    return this.#compactedBelow;
  }

  /** Drops the whole event history: every older resourceVersion becomes too old (410). */
  compact(): void {
    this.#compactedBelow = this.#rv + 1;
    this.#history.length = 0;
  }

  subscribe(listener: (event: StoredEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #bucket(resource: string): Map<string, Obj> {
    let bucket = this.#objects.get(resource);
    if (!bucket) this.#objects.set(resource, bucket = new Map());
    return bucket;
  }

  #emit(resource: string, type: EventType, object: Obj) {
    const event = { rv: Number(object.metadata.resourceVersion), resource, type, object };
    this.#history.push(event);
    if (this.#history.length > this.historyLimit) {
      const dropped = this.#history.splice(0, this.#history.length - this.historyLimit);
      this.#compactedBelow = dropped.at(-1)!.rv + 1;
    }
    for (const listener of this.#listeners) listener(event);
  }

  /** Events of a resource after `rv`, or undefined when that history is gone. */
  eventsSince(resource: string, rv: number): StoredEvent[] | undefined {
    if (rv + 1 < this.#compactedBelow) return undefined;
    return this.#history.filter((e) => e.resource === resource && e.rv > rv);
  }

  list(resource: string, namespace?: string): Obj[] {
    const all = [...this.#bucket(resource).values()];
    const items = namespace ? all.filter((o) => o.metadata.namespace === namespace) : all;
    return items.sort((a, b) => (objectKey(a.metadata) < objectKey(b.metadata) ? -1 : 1));
  }

  get(resource: string, key: string): Obj | undefined {
    return this.#bucket(resource).get(key);
  }

  /**
   * POST. `check` sees the object as it would be stored (admission and
   * validation) and throws to refuse it.
   */
  create(info: ResourceInfo, input: Obj, options: { check?: (next: Obj) => void } = {}): Obj {
    const bucket = this.#bucket(`${info.group}/${info.plural}`);
    const key = objectKey(input.metadata);
    if (bucket.has(key)) {
      throw new StatusError(
        409,
        "AlreadyExists",
        `${info.plural} "${input.metadata.name}" already exists`,
      );
    }
    const object = clone(input);
    object.apiVersion = info.group ? `${info.group}/${info.version}` : info.version;
    object.kind = info.kind;
    object.metadata = {
      ...object.metadata,
      uid: crypto.randomUUID(),
      resourceVersion: String(++this.#rv),
      generation: 1,
      // RFC 3339 to the second, as metav1.Time is serialized.
      creationTimestamp: object.metadata.creationTimestamp ?? seconds(this.clock()),
    };
    delete object.metadata.deletionTimestamp;
    // As the real API server: with a status subresource, create ignores status.
    if (info.statusSubresource) delete object.status;
    options.check?.(object);
    bucket.set(key, object);
    this.#emit(`${info.group}/${info.plural}`, "ADDED", object);
    return clone(object);
  }

  /**
   * PUT: replaces the object (or only its status with `status`). A given
   * resourceVersion must match the stored one. Removing the last finalizer of
   * an object being deleted deletes it.
   */
  update(
    info: ResourceInfo,
    input: Obj,
    options: { status?: boolean; check?: (next: Obj, old: Obj) => void } = {},
  ): Obj {
    const resource = `${info.group}/${info.plural}`;
    const bucket = this.#bucket(resource);
    const key = objectKey(input.metadata);
    const stored = bucket.get(key);
    if (!stored) {
      throw new StatusError(404, "NotFound", `${info.plural} "${input.metadata.name}" not found`);
    }
    const wanted = input.metadata.resourceVersion;
    if (wanted !== undefined && wanted !== "" && wanted !== stored.metadata.resourceVersion) {
      throw new StatusError(
        409,
        "Conflict",
        `Operation cannot be fulfilled on ${info.plural} "${input.metadata.name}": the object has been modified; please apply your changes to the latest version and try again`,
      );
    }
    let next: Obj;
    if (options.status) {
      next = { ...clone(stored), status: clone(input.status) };
    } else {
      next = clone(input);
      next.apiVersion = stored.apiVersion;
      next.kind = stored.kind;
      // Identity and server-owned fields cannot be changed by a client.
      next.metadata = {
        ...next.metadata,
        uid: stored.metadata.uid,
        creationTimestamp: stored.metadata.creationTimestamp,
        deletionTimestamp: stored.metadata.deletionTimestamp,
        generation: (stored.metadata.generation ?? 1) +
          (specPart(next) !== specPart(stored) ? 1 : 0),
      };
      if (!next.metadata.deletionTimestamp) delete next.metadata.deletionTimestamp;
      if (info.statusSubresource) {
        if (stored.status === undefined) delete next.status;
        else next.status = clone(stored.status);
      }
    }
    options.check?.({ ...next, metadata: { ...next.metadata, resourceVersion: wanted } }, stored);
    next.metadata.resourceVersion = String(++this.#rv);
    if (next.metadata.deletionTimestamp && (next.metadata.finalizers ?? []).length === 0) {
      bucket.delete(key);
      this.#emit(resource, "DELETED", next);
      return clone(next);
    }
    bucket.set(key, next);
    this.#emit(resource, "MODIFIED", next);
    return clone(next);
  }

  /** DELETE: gone at once without finalizers; otherwise marked with deletionTimestamp. */
  delete(info: ResourceInfo, meta: { name: string; namespace?: string }): Obj {
    const resource = `${info.group}/${info.plural}`;
    const bucket = this.#bucket(resource);
    const key = objectKey(meta);
    const stored = bucket.get(key);
    if (!stored) throw new StatusError(404, "NotFound", `${info.plural} "${meta.name}" not found`);
    const next = clone(stored);
    next.metadata.resourceVersion = String(++this.#rv);
    if ((stored.metadata.finalizers ?? []).length > 0) {
      if (stored.metadata.deletionTimestamp) return clone(stored);
      next.metadata.deletionTimestamp = seconds(this.clock());
      bucket.set(key, next);
      this.#emit(resource, "MODIFIED", next);
      return clone(next);
    }
    bucket.delete(key);
    this.#emit(resource, "DELETED", next);
    return clone(next);
  }
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return clone(patch);
  const out: Record<string, unknown> =
    target && typeof target === "object" && !Array.isArray(target)
      ? clone(target as Record<string, unknown>)
      : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}
