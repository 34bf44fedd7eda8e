/**
 * A test Kubernetes API server (Deno.serve) as strict as kube-apiserver where
 * kube-egress and kubectl depend on it: paginated lists with resourceVersion
 * and continue tokens (410 once compacted), streamed watches (ADDED/MODIFIED/
 * DELETED, BOOKMARK about once a minute, ERROR 410, 504 for a version the
 * cache has not reached), get/create/update/delete, JSON, merge and strategic
 * merge patches, the status subresource (it ignores all but status; the main
 * resource ignores status), finalizers and deletionTimestamp, CustomResource-
 * Definitions (schema validation, pruning, CEL rules; deleting one deletes its
 * objects and waits for their finalizers), metadata validation, 409 on stale
 * updates, PartialObjectMetadata, Table, discovery and OpenAPI v3 for kubectl
 * (sim/kube_discovery.ts), bearer tokens and TLS. Faults on demand: a
 * black-holed connection, 429 with Retry-After, 504 from a lagging watch.
 *
 * In process: `startTestApiServer({ pods: 10_000 })`. As a process (e.g. inside
 * a simulator namespace): `deno run -A sim/kube_api.ts --listen 192.0.2.5:6443`,
 * controlled by JSON lines on stdin (see `serveControl`).
 */
import { KubeStore, type Obj, StatusError, type StoredEvent } from "./kube_store.ts";
import { initialCrds, Registry, type ServedResource } from "./kube_registry.ts";
import { type FieldError, invalidStatus } from "./kube_errors.ts";
import { validateMeta, validateMetaUpdate } from "./kube_meta.ts";
import { prune, type Schema, validate } from "./kube_schema.ts";
import { applyPatch } from "./kube_patch.ts";
import { discovery, tableOf, wantsTable } from "./kube_discovery.ts";
import { errorMessage } from "../core/errors.ts";
import { jsonCommands } from "./json_commands.ts";

export interface TestApiServerOptions {
  readonly hostname?: string;
  readonly port?: number;
  /** Serve on a Unix socket as well (for a relay into a network namespace). */
  readonly socketPath?: string;
  /** Required bearer token; absent = no authentication. */
  readonly token?: string;
  /** Tokens accepted besides `token` (a rotated service account token). */
  readonly tokens?: () => readonly string[];
  /** PEM certificate and key: serve HTTPS. */
  readonly tls?: { readonly cert: string; readonly key: string };
  /** Bookmark interval for watches that asked for them (kube-apiserver: about a minute). */
  readonly bookmarkMs?: number;
  /** Events kept for watch resumption; older versions get 410 Gone. */
  readonly historyLimit?: number;
  /** Pods to create at start (see `syntheticPods`). */
  readonly pods?: number;
  /** First IP of those pods. */
  readonly firstPodIp?: string;
  /** Install our CRDs (and egress-mapper's) at start, as after `kubectl apply -k deploy/` (default). */
  readonly installCrds?: boolean;
  /** The Kubernetes version /version reports (kubectl's dispatcher picks its minor by it). */
  readonly kubernetesVersion?: string;
}

/** Faults on demand, for clients' timeouts and retries. */
export interface Faults {
  /**
   * A black hole: while on, new requests get no answer at all (no data, no FIN)
   * and open watches fall silent for good, as behind a dead load balancer.
   */
  blackhole(on: boolean): void;
  /** The next `count` requests get 429 Too Many Requests with Retry-After. */
  throttle(count: number, retryAfterSeconds?: number): void;
  /** The next `count` watches get 504: the watch cache lags behind the version asked for. */
  lagWatches(count: number): void;
}

/** A running test API server. */
export interface TestApiServer {
  readonly url: string;
  readonly store: KubeStore;
  readonly registry: Registry;
  /** "group/plural[/status] verb" of every request served (authorised or not). */
  readonly requests: Set<string>;
  /** The same, per User-Agent (the agents' and the controller's apart). */
  readonly requestsBy: Map<string, Set<string>>;
  /** Every request as "METHOD path?query" (for tests of what a client sends). */
  readonly log: string[];
  readonly faults: Faults;
  /** Creates (or replaces) objects, returning the stored versions (no admission: a test's seed). */
  apply(object: Record<string, unknown>): Obj;
  create(object: Record<string, unknown>): Obj;
  update(object: Record<string, unknown>, options?: { status?: boolean }): Obj;
  delete(kind: string, name: string, namespace?: string): Obj;
  get(kind: string, name: string, namespace?: string): Obj | undefined;
  list(kind: string, namespace?: string): Obj[];
  /** Ends every open watch (as if the connection dropped). */
  dropWatches(): void;
  /** Refuses requests with 503 while set (an unreachable/broken API server). */
  setAvailable(available: boolean): void;
  stop(): Promise<void>;
}

function status(code: number, reason: string, message: string, headers?: HeadersInit): Response {
  return Response.json(
    { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code },
    { status: code, headers },
  );
}

/** Parses /api/v1/... and /apis/group/version/... into resource, namespace, name, subresource. */
export function parsePath(registry: Registry, path: string) {
  const parts = path.split("/").filter(Boolean);
  let group: string;
  let version: string;
  let rest: string[];
  if (parts[0] === "api" && parts.length >= 3) {
    [group, version, rest] = ["", parts[1], parts.slice(2)];
  } else if (parts[0] === "apis" && parts.length >= 4) {
    [group, version, rest] = [parts[1], parts[2], parts.slice(3)];
  } else return undefined;
  let namespace: string | undefined;
  if (rest[0] === "namespaces" && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [plural, name, subresource] = rest;
  const info = registry.byPath(group, version, plural);
  return info ? { info, namespace, name, subresource } : undefined;
}

function partial(object: Obj): Obj {
  return { apiVersion: "meta.k8s.io/v1", kind: "PartialObjectMetadata", metadata: object.metadata };
}

const lineEncoder = new TextEncoder();

/** One watch event's line (JSON, newline-terminated). */
function watchLine(type: string, object: unknown): Uint8Array {
  return lineEncoder.encode(JSON.stringify({ type, object }) + "\n");
}

/**
 * A stored event's line, full or metadata-only, encoded on first use and then
 * shared by every watch that sends it: encoding it once per watch made the fan-out
 * to hundreds of watchers (bench kube's fleet) cost the test server more CPU than
 * the code under test, and capped the changes per second the bench could make.
 */
const encodedEvents = {
  full: new WeakMap<StoredEvent, Uint8Array>(),
  partial: new WeakMap<StoredEvent, Uint8Array>(),
};
function encodedEvent(event: StoredEvent, metadataOnly: boolean): Uint8Array {
  const cache = metadataOnly ? encodedEvents.partial : encodedEvents.full;
  let bytes = cache.get(event);
  if (!bytes) {
    bytes = watchLine(event.type, metadataOnly ? partial(event.object) : event.object);
    cache.set(event, bytes);
  }
  return bytes;
}

const apiVersionOf = (
  info: ServedResource,
) => (info.group ? `${info.group}/${info.version}` : info.version);
const resourceKey = (info: ServedResource) => `${info.group}/${info.plural}`;
const CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io";

/** The CRD's schema of one top-level part ("spec", "status"). */
const partSchema = (info: ServedResource, part: string) =>
  info.schema?.properties?.[part] as Schema | undefined;

/** Starts the server; resolves once it listens. */
export function startTestApiServer(options: TestApiServerOptions = {}): Promise<TestApiServer> {
  const store = new KubeStore(options.historyLimit ?? 10_000);
  const registry = new Registry();
  const requests = new Set<string>();
  const requestsBy = new Map<string, Set<string>>();
  const log: string[] = [];
  const watches = new Set<{ close(): void; silence(): void }>();
  let available = true;
  let blackholed = false;
  let releaseHung: () => void = () => {};
  let hung = new Promise<void>((resolve) => (releaseHung = resolve));
  let throttled = { count: 0, retryAfter: 1 };
  let lagging = 0;
  let stopping = false;

  const crdInfo = registry.byKind("CustomResourceDefinition")!;
  for (const crd of options.installCrds === false ? [] : initialCrds()) {
    const stored = store.create(
      crdInfo,
      { ...crd, metadata: { ...crd.metadata, finalizers: [CRD_CLEANUP] } } as Obj,
    );
    registry.define(stored);
    store.update(crdInfo, { ...stored, status: crdStatus(stored) } as Obj, { status: true });
  }
  // A CRD's kind is served once it is stored; deleting it deletes its objects, then itself.
  store.subscribe((event) => {
    if (event.resource === resourceKey(crdInfo)) {
      if (event.type === "DELETED") registry.undefine(event.object);
      else registry.define(event.object);
      if (event.object.metadata.deletionTimestamp) queueMicrotask(() => cleanupCrd(event.object));
      return;
    }
    if (event.type === "DELETED") {
      for (const crd of store.list(resourceKey(crdInfo))) {
        if (crd.metadata.deletionTimestamp) queueMicrotask(() => cleanupCrd(crd));
      }
    }
  });

  /** A CRD created through the API: the cleanup finalizer, then Established (apiextensions' controllers). */
  function establish(created: Obj) {
    const withFinalizer = store.update(crdInfo, {
      ...created,
      metadata: {
        ...created.metadata,
        finalizers: [...(created.metadata.finalizers ?? []), CRD_CLEANUP],
      },
    });
    store.update(crdInfo, { ...withFinalizer, status: crdStatus(withFinalizer) }, { status: true });
  }

  function crdStatus(crd: Obj) {
    const now = new Date().toISOString();
    const names = (crd.spec as { names?: unknown })?.names;
    return {
      acceptedNames: names,
      storedVersions: [(crd.spec as { versions?: { name: string }[] }).versions?.[0]?.name],
      conditions: [
        {
          type: "NamesAccepted",
          status: "True",
          reason: "NoConflicts",
          message: "no conflicts found",
          lastTransitionTime: now,
        },
        {
          type: "Established",
          status: "True",
          reason: "InitialNamesAccepted",
          message: "the initial names have been accepted",
          lastTransitionTime: now,
        },
      ],
    };
  }

  /** apiextensions' finalizer: delete every object of the kind; drop the CRD once none is left. */
  function cleanupCrd(crd: Obj) {
    const current = store.get(resourceKey(crdInfo), crd.metadata.name);
    if (!current?.metadata.deletionTimestamp) return;
    const info = registry.all.find((r) =>
      r.custom && `${r.plural}.${r.group}` === crd.metadata.name
    );
    const left = info ? store.list(resourceKey(info)) : [];
    for (const object of left) {
      if (!object.metadata.deletionTimestamp) store.delete(info!, object.metadata);
    }
    if (info && store.list(resourceKey(info)).length > 0) return;
    store.update(crdInfo, {
      ...current,
      metadata: {
        ...current.metadata,
        finalizers: (current.metadata.finalizers ?? []).filter((f) => f !== CRD_CLEANUP),
      },
    });
  }

  const podInfo = registry.byKind("Pod")!;
  for (const object of syntheticPods(options.pods ?? 0, { firstIp: options.firstPodIp })) {
    // Like kubelet: the pod is created, then its status (IP, phase) is written.
    const created = store.create(podInfo, object);
    store.update(podInfo, { ...created, status: object.status }, { status: true });
  }

  /** Prunes a custom resource's unknown fields (all of it, or only status for /status). */
  function pruned(info: ServedResource, body: Obj, statusOnly: boolean, unknown: string[]): Obj {
    if (!info.custom || !info.schema) return body;
    if (statusOnly) {
      return {
        ...body,
        status: prune(body.status, partSchema(info, "status"), "status", unknown),
      } as Obj;
    }
    const out = prune(body, info.schema, "", unknown) as Obj;
    out.metadata = body.metadata;
    return out;
  }

  /** What admission and validation say about the object about to be stored. */
  function admit(
    info: ServedResource,
    next: Obj,
    old: Obj | undefined,
    requireRv: boolean,
  ): FieldError[] {
    const errors = validateMeta(next.metadata, info.kind);
    if (old) {
      errors.push(...validateMetaUpdate(next.metadata, old.metadata, {
        requireResourceVersion: requireRv && info.custom,
      }));
    }
    if (info.custom && info.schema) {
      const { metadata: _m, ...body } = next;
      validate({ ...body, metadata: {} }, info.schema, "", errors);
    }
    return errors;
  }

  function invalid(info: ServedResource, name: string, errors: FieldError[]): never {
    throw Object.assign(new StatusError(422, "Invalid", ""), {
      body: invalidStatus({ kind: info.kind, group: info.group }, name, errors),
    });
  }

  /** Writes through the store with admission on the object as it would be stored. */
  function write(
    info: ServedResource,
    verb: "create" | "update",
    body: Obj,
    options: { status?: boolean; requireRv?: boolean } = {},
  ): Obj {
    const check = (next: Obj, old?: Obj) => {
      const errors = admit(info, next, old, options.requireRv ?? false);
      if (errors.length > 0) invalid(info, next.metadata.name, errors);
    };
    return verb === "create"
      ? store.create(info, body, { check })
      : store.update(info, body, { status: options.status, check });
  }

  const handler = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    log.push(`${request.method} ${url.pathname}${url.search}`);
    if (blackholed) {
      // No answer, no FIN: the client's own timeout is all that helps.
      await Promise.race([hung, new Promise((r) => request.signal.addEventListener("abort", r))]);
      return new Response(null, { status: 503 });
    }
    if (throttled.count > 0) {
      throttled.count--;
      return status(429, "TooManyRequests", "Too many requests, please try again later.", {
        "retry-after": String(throttled.retryAfter),
      });
    }
    if (!available) return status(503, "ServiceUnavailable", "the test API server is unavailable");
    const auth = request.headers.get("authorization");
    const accepted = [options.token, ...(options.tokens?.() ?? [])].filter(Boolean);
    if (accepted.length > 0 && !accepted.some((t) => auth === `Bearer ${t}`)) {
      return status(401, "Unauthorized", "Unauthorized");
    }
    const served = discovery(registry, url, request, {
      version: options.kubernetesVersion ?? "1.32.4",
      store,
    });
    if (served) return served;
    const target = parsePath(registry, url.pathname);
    if (!target) return status(404, "NotFound", `the server could not find the requested resource`);
    const { info, namespace, name, subresource } = target;
    const isWatch = url.searchParams.get("watch") === "true" ||
      url.searchParams.get("watch") === "1";
    const verb = request.method === "GET" ? (isWatch ? "watch" : name ? "get" : "list") : ({
      POST: "create",
      PUT: "update",
      PATCH: "patch",
      DELETE: name ? "delete" : "deletecollection",
    } as Record<string, string>)[
      request.method
    ] ?? request.method.toLowerCase();
    const asked = `${info.group || "core"}/${info.plural}${
      subresource ? `/${subresource}` : ""
    } ${verb}`;
    requests.add(asked);
    const agent = request.headers.get("user-agent") ?? "";
    if (!requestsBy.has(agent)) requestsBy.set(agent, new Set());
    requestsBy.get(agent)!.add(asked);
    const resource = resourceKey(info);
    const accept = request.headers.get("accept") ?? "";
    const metadataOnly = accept.includes("as=PartialObjectMetadata");
    const statusOnly = subresource === "status";
    if (subresource && !(statusOnly && info.statusSubresource)) {
      return status(404, "NotFound", `the server could not find the requested resource`);
    }
    const warnings: string[] = [];
    const respond = (body: unknown, code = 200) => {
      const headers = new Headers({ "content-type": "application/json" });
      for (const w of warnings) headers.append("warning", `299 - ${JSON.stringify(w)}`);
      return new Response(JSON.stringify(body), { status: code, headers });
    };
    try {
      if (verb === "watch") return watch(info, namespace, url, metadataOnly);
      if (verb === "list") {
        const list = listPage(info, namespace, url, metadataOnly);
        return respond(
          wantsTable(accept) ? tableOf(info, list.items as Obj[], list.metadata) : list,
        );
      }
      const key = namespace ? `${namespace}/${name}` : name!;
      const notFound = () =>
        new StatusError(
          404,
          "NotFound",
          `${info.plural}${info.group ? `.${info.group}` : ""} "${name}" not found`,
        );
      if (verb === "get") {
        const object = store.get(resource, key);
        if (!object) throw notFound();
        return respond(
          wantsTable(accept)
            ? tableOf(info, [object], { resourceVersion: object.metadata.resourceVersion })
            : object,
        );
      }
      if (verb === "delete") {
        if (!store.get(resource, key)) throw notFound();
        return respond(store.delete(info, { name: name!, namespace }));
      }
      if (verb === "deletecollection") {
        for (const o of store.list(resource, namespace)) store.delete(info, o.metadata);
        return respond({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Success" });
      }
      const text = await request.text();
      const strict = url.searchParams.get("fieldValidation") === "Strict";
      const unknown: string[] = [];
      // fieldValidation=Strict refuses unknown fields before anything is stored; else warnings.
      const strictly = (object: Obj) => {
        if (strict && unknown.length > 0) {
          throw new StatusError(
            400,
            "BadRequest",
            `strict decoding error: ${unknown.map((u) => `unknown field "${u}"`).join(", ")}`,
          );
        }
        return object;
      };
      const finish = (object: Obj, code = 200) => {
        warnings.push(...unknown.map((u) => `unknown field "${u}"`));
        return respond(object, code);
      };
      const dryRun = url.searchParams.get("dryRun") === "All";
      if (verb === "patch") {
        const stored = store.get(resource, key);
        if (!stored) throw notFound();
        const patched = applyPatch(
          stored,
          text,
          request.headers.get("content-type") ?? "",
          info.custom,
        ) as Obj;
        if (!patched.metadata || patched.metadata.name !== stored.metadata.name) {
          throw new StatusError(
            400,
            "BadRequest",
            "the name of the object cannot be changed by a patch",
          );
        }
        const body = strictly(pruned(info, patched, statusOnly, unknown));
        if (dryRun) return finish(body);
        return finish(write(info, "update", body, { status: statusOnly }));
      }
      let body: Obj;
      try {
        body = JSON.parse(text) as Obj;
      } catch (error) {
        throw new StatusError(
          400,
          "BadRequest",
          `the body of the request could not be decoded: ${errorMessage(error)}`,
        );
      }
      body.metadata ??= { name: name ?? "" };
      if (info.namespaced) {
        if (body.metadata.namespace && body.metadata.namespace !== namespace) {
          throw new StatusError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
          );
        }
        body.metadata.namespace = namespace;
      }
      if (verb === "create") {
        if (!body.metadata.name && typeof body.metadata.generateName === "string") {
          body.metadata.name = `${body.metadata.generateName}${crypto.randomUUID().slice(0, 5)}`;
        }
        body = strictly(pruned(info, body, false, unknown));
        if (dryRun) return finish(body, 201);
        const created = write(info, "create", body);
        if (info === crdInfo) {
          establish(created);
          return finish(store.get(resource, created.metadata.name) ?? created, 201);
        }
        return finish(created, 201);
      }
      if (verb === "update") {
        if (name !== body.metadata.name) {
          throw new StatusError(
            400,
            "BadRequest",
            "the name of the object (" + body.metadata.name +
              ") does not match the name on the URL (" + name + ")",
          );
        }
        body = strictly(pruned(info, body, statusOnly, unknown));
        return finish(write(info, "update", body, { status: statusOnly, requireRv: true }));
      }
      return status(405, "MethodNotAllowed", `${request.method} is not supported`);
    } catch (error) {
      const body = (error as { body?: unknown }).body;
      if (body) return respond(body, 422);
      if (error instanceof StatusError) return status(error.code, error.reason, error.message);
      return status(500, "InternalError", errorMessage(error));
    }
  };

  /** A list page: from the current objects, `limit` and `continue` (410 once compacted). */
  function listPage(
    info: ServedResource,
    namespace: string | undefined,
    url: URL,
    metadataOnly: boolean,
  ) {
    const resource = resourceKey(info);
    const token = url.searchParams.get("continue");
    const asked = url.searchParams.get("resourceVersion");
    // resourceVersion=0 is served from the watch cache, which ignores limit (all at once).
    const limit = asked === "0" ? 0 : Number(url.searchParams.get("limit") ?? 0);
    if (asked && asked !== "0" && Number(asked) > store.resourceVersion) {
      throw Object.assign(
        new StatusError(
          504,
          "Timeout",
          `Too large resource version: ${asked}, current: ${store.resourceVersion}`,
        ),
        {},
      );
    }
    let after = "";
    let rv = store.resourceVersion;
    if (token) {
      let decoded: { rv: number; after: string };
      try {
        decoded = JSON.parse(atob(token));
      } catch {
        throw new StatusError(400, "BadRequest", "continue key is not valid");
      }
      // A list at a compacted revision cannot be continued (etcd: "required revision has been compacted").
      if (decoded.rv < store.compactedBelow) {
        throw new StatusError(
          410,
          "Expired",
          "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        );
      }
      after = decoded.after;
      rv = decoded.rv;
    }
    // Later pages are served from the current objects, not a snapshot at the first
    // page's version (as etcd would): an object changed meanwhile shows its newer
    // state, and the watch from the list's version replays the change anyway.
    const selector = labelFilter(url.searchParams.get("labelSelector"));
    const fields = fieldFilter(url.searchParams.get("fieldSelector"));
    const all = store.list(resource, namespace).filter((o) => selector(o) && fields(o));
    const keyOf = (o: Obj) => `${o.metadata.namespace ?? ""}/${o.metadata.name}`;
    const remaining = after ? all.filter((o) => keyOf(o) > after) : all;
    const page = limit > 0 ? remaining.slice(0, limit) : remaining;
    const more = limit > 0 && remaining.length > limit;
    return {
      apiVersion: metadataOnly ? "meta.k8s.io/v1" : apiVersionOf(info),
      kind: metadataOnly ? "PartialObjectMetadataList" : `${info.kind}List`,
      metadata: {
        resourceVersion: String(rv),
        ...(more
          ? {
            continue: btoa(JSON.stringify({ rv, after: keyOf(page.at(-1)!) })),
            remainingItemCount: remaining.length - limit,
          }
          : {}),
      },
      items: metadataOnly ? page.map(partial) : page,
    };
  }

  /** A watch: replay since the version asked for (or everything for "" / "0"), then live events. */
  function watch(
    info: ServedResource,
    namespace: string | undefined,
    url: URL,
    metadataOnly: boolean,
  ) {
    const resource = resourceKey(info);
    const from = url.searchParams.get("resourceVersion") ?? "";
    if (lagging > 0 || (from !== "" && from !== "0" && Number(from) > store.resourceVersion)) {
      if (lagging > 0) lagging--;
      return Response.json({
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Failure",
        message: `Too large resource version: ${from}, current: ${
          Math.min(store.resourceVersion, Number(from) - 1)
        }`,
        reason: "Timeout",
        details: {
          causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }],
          retryAfterSeconds: 1,
        },
        code: 504,
      }, { status: 504 });
    }
    const bookmarks = url.searchParams.get("allowWatchBookmarks") === "true";
    const timeout = Number(url.searchParams.get("timeoutSeconds") ?? 1800);
    const selector = labelFilter(url.searchParams.get("labelSelector"));
    const fields = fieldFilter(url.searchParams.get("fieldSelector"));
    let cleanup = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        let closed = false;
        let silent = false;
        const enqueue = (bytes: Uint8Array) => {
          if (!closed && !silent) controller.enqueue(bytes);
        };
        const send = (type: string, object: unknown) => enqueue(watchLine(type, object));
        // A stored event is encoded once for all watches (as kube-apiserver's watch cache does).
        const sendEvent = (e: StoredEvent) => enqueue(encodedEvent(e, metadataOnly));
        const matches = (e: StoredEvent) =>
          e.resource === resource && (!namespace || e.object.metadata.namespace === namespace) &&
          selector(e.object) && fields(e.object);
        const close = () => {
          if (closed) return;
          closed = true;
          cleanup();
          try {
            controller.close();
          } catch {
            // Already closed by the client.
          }
        };
        // Black-holed: nothing more on this stream, ever, and no FIN either.
        const handle = { close, silence: () => (silent = true) };
        watches.add(handle);
        let replay: StoredEvent[] | undefined;
        if (from === "" || from === "0") {
          replay = store.list(resource, namespace).filter((o) => selector(o) && fields(o)).map((
            o,
          ) => ({
            rv: Number(o.metadata.resourceVersion),
            resource,
            type: "ADDED" as const,
            object: o,
          }));
        } else {
          replay = store.eventsSince(resource, Number(from))?.filter(matches);
        }
        if (replay === undefined) {
          send("ERROR", {
            kind: "Status",
            apiVersion: "v1",
            metadata: {},
            status: "Failure",
            message: `too old resource version: ${from} (${store.compactedBelow - 1})`,
            reason: "Expired",
            code: 410,
          });
          close();
          return;
        }
        for (const e of replay) sendEvent(e);
        const unsubscribe = store.subscribe((e) => {
          if (matches(e)) sendEvent(e);
        });
        const bookmark = bookmarks
          ? setInterval(() =>
            send("BOOKMARK", {
              kind: info.kind,
              apiVersion: apiVersionOf(info),
              metadata: { resourceVersion: String(store.resourceVersion) },
            }), options.bookmarkMs ?? 60_000)
          : undefined;
        const timer = setTimeout(() => (silent ? undefined : close()), timeout * 1000);
        cleanup = () => {
          unsubscribe();
          clearInterval(bookmark);
          clearTimeout(timer);
          watches.delete(handle);
        };
        if (blackholed) handle.silence();
      },
      cancel() {
        cleanup();
      },
    });
    return new Response(body, { headers: { "content-type": "application/json" } });
  }

  const faults: Faults = {
    blackhole(on) {
      blackholed = on;
      if (on) {
        for (const w of watches) w.silence();
      } else {
        releaseHung();
        hung = new Promise<void>((resolve) => (releaseHung = resolve));
      }
    },
    throttle(count, retryAfterSeconds = 1) {
      throttled = { count, retryAfter: retryAfterSeconds };
    },
    lagWatches(count) {
      lagging = count;
    },
  };

  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 0,
      ...(options.tls ?? {}),
      onListen() {},
    }, handler);
    const socket = options.socketPath
      ? Deno.serve({ path: options.socketPath, onListen() {} }, handler)
      : undefined;
    const addr = server.addr as Deno.NetAddr;
    const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
    const meta = (o: Record<string, unknown>) => o.metadata as { name: string; namespace?: string };
    const infoOfKind = (kind: string) => {
      const info = registry.byKind(kind);
      if (!info) throw new Error(`test API server: unknown kind ${kind}`);
      return info;
    };
    resolve({
      url: `${options.tls ? "https" : "http"}://${host}:${addr.port}`,
      store,
      registry,
      requests,
      requestsBy,
      log,
      faults,
      apply(object) {
        const info = infoOfKind(String(object.kind));
        const m = meta(object);
        const key = m.namespace ? `${m.namespace}/${m.name}` : m.name;
        const stored = store.get(resourceKey(info), key);
        const next = { ...object, metadata: { ...meta(object), resourceVersion: "" } } as Obj;
        const updated = stored ? store.update(info, next) : store.create(info, object as Obj);
        return object.status !== undefined && info.statusSubresource
          ? store.update(info, { ...next, status: object.status } as Obj, { status: true })
          : updated;
      },
      create: (object) => store.create(infoOfKind(String(object.kind)), object as Obj),
      update: (object, opts) => store.update(infoOfKind(String(object.kind)), object as Obj, opts),
      delete: (kind, name, namespace) => store.delete(infoOfKind(kind), { name, namespace }),
      get(kind, name, namespace) {
        return store.get(resourceKey(infoOfKind(kind)), namespace ? `${namespace}/${name}` : name);
      },
      list(kind, namespace) {
        return store.list(resourceKey(infoOfKind(kind)), namespace);
      },
      dropWatches() {
        for (const w of [...watches]) w.close();
      },
      setAvailable(value) {
        available = value;
        if (!value) { for (const w of [...watches]) w.close(); }
      },
      async stop() {
        if (stopping) return;
        stopping = true;
        releaseHung();
        for (const w of [...watches]) w.close();
        await Promise.all([server.shutdown(), socket?.shutdown()]);
      },
    });
  });
}

/** `labelSelector` as the API server reads it (equality, !=, in, notin, exists, !exists). */
export function labelFilter(text: string | null): (o: Obj) => boolean {
  if (!text) return () => true;
  const terms = text.match(/([^,(]+(\([^)]*\))?)/g) ?? [];
  const tests = terms.map((raw) => {
    const term = raw.trim();
    let m: RegExpMatchArray | null;
    if ((m = term.match(/^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$/))) {
      const values = new Set(m[3].split(",").map((v) => v.trim()));
      const [key, op] = [m[1], m[2]];
      return (
        l: Record<string, string>,
      ) => (op === "in" ? key in l && values.has(l[key]) : !(key in l && values.has(l[key])));
    }
    if ((m = term.match(/^([^\s!=]+)\s*(==|=|!=)\s*(\S*)$/))) {
      const [key, op, value] = [m[1], m[2], m[3]];
      return (l: Record<string, string>) => (op === "!=" ? l[key] !== value : l[key] === value);
    }
    if (term.startsWith("!")) return (l: Record<string, string>) => !(term.slice(1) in l);
    return (l: Record<string, string>) => term in l;
  });
  return (o) => tests.every((t) => t((o.metadata.labels ?? {}) as Record<string, string>));
}

/** `fieldSelector`: metadata.name, metadata.namespace and spec.nodeName equalities. */
export function fieldFilter(text: string | null): (o: Obj) => boolean {
  if (!text) return () => true;
  const tests = text.split(",").map((term) => {
    const m = term.match(/^([\w.]+)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw new StatusError(400, "BadRequest", `invalid field selector: ${term}`);
    const [path, op, value] = [m[1], m[2], m[3]];
    return (o: Obj) => {
      const actual = path.split(".").reduce<unknown>(
        (v, k) => (v as Record<string, unknown> | undefined)?.[k],
        o,
      );
      return op === "!=" ? String(actual ?? "") !== value : String(actual ?? "") === value;
    };
  });
  return (o) => tests.every((t) => t(o));
}

/**
 * `n` realistic Pods spread over namespaces `team-<k>` and nodes `node-<k>`
 * (with the bulk of a real pod spec: containers, env, volumes, status
 * conditions), for memory and latency measurements. IPs count up from
 * `firstIp` (default 10.32.0.1).
 */
export function* syntheticPods(
  n: number,
  options: { nodes?: number; namespaces?: number; firstIp?: string } = {},
) {
  const nodes = options.nodes ?? 100;
  const namespaces = options.namespaces ?? 50;
  const first = (options.firstIp ?? "10.32.0.1").split(".").reduce(
    (a, o) => a * 256 + Number(o),
    0,
  );
  for (let i = 0; i < n; i++) {
    const ns = `team-${i % namespaces}`;
    const v = first + i;
    const ip = [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join(".");
    yield {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: `app-${i}`,
        namespace: ns,
        labels: {
          app: `app-${i % 200}`,
          "pod-template-hash": "5d9f7c8b6",
          tier: i % 3 ? "web" : "db",
        },
        annotations: { "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z" },
        ownerReferences: [{
          apiVersion: "apps/v1",
          kind: "ReplicaSet",
          name: `app-${i % 200}-5d9f7c8b6`,
          uid: `rs-${i % 200}`,
          controller: true,
          blockOwnerDeletion: true,
        }],
      },
      spec: {
        nodeName: `node-${i % nodes}`,
        serviceAccountName: "default",
        containers: [{
          name: "app",
          image: "registry.example/app:1.2.3",
          ports: [{ containerPort: 8080, protocol: "TCP" }],
          env: Array.from({ length: 8 }, (_, k) => ({ name: `SETTING_${k}`, value: `value-${k}` })),
          resources: { requests: { cpu: "100m", memory: "128Mi" }, limits: { memory: "256Mi" } },
          volumeMounts: [{
            name: "kube-api-access",
            mountPath: "/var/run/secrets/kubernetes.io/serviceaccount",
            readOnly: true,
          }],
        }],
        volumes: [{
          name: "kube-api-access",
          projected: {
            sources: [{ serviceAccountToken: { path: "token", expirationSeconds: 3607 } }],
          },
        }],
        tolerations: [{
          key: "node.kubernetes.io/not-ready",
          operator: "Exists",
          effect: "NoExecute",
          tolerationSeconds: 300,
        }],
      },
      status: {
        phase: "Running",
        podIP: ip,
        podIPs: [{ ip }],
        hostIP: `192.0.2.${11 + (i % nodes) % 200}`,
        conditions: ["Initialized", "Ready", "ContainersReady", "PodScheduled"].map((type) => ({
          type,
          status: "True",
          lastTransitionTime: "2026-01-01T00:00:00Z",
        })),
        containerStatuses: [{
          name: "app",
          ready: true,
          restartCount: 0,
          image: "registry.example/app:1.2.3",
          started: true,
        }],
      },
    } as unknown as Obj;
  }
}

/** Writes a kubeconfig for the server (token auth; CA when TLS). */
export function kubeconfigFor(url: string, token?: string, caPem?: string): string {
  const b64 = (text: string) => btoa(text);
  return JSON.stringify(
    {
      apiVersion: "v1",
      kind: "Config",
      "current-context": "test",
      clusters: [{
        name: "test",
        cluster: { server: url, ...(caPem ? { "certificate-authority-data": b64(caPem) } : {}) },
      }],
      users: [{ name: "test", user: token ? { token } : {} }],
      contexts: [{
        name: "test",
        context: { cluster: "test", user: "test", namespace: "kube-egress" },
      }],
    },
    null,
    2,
  );
}

/**
 * Control over stdin/stdout, one JSON object per line, for a server running
 * inside a namespace with no link to the test process:
 *   {"id":1,"op":"apply","object":{...}}  → {"id":1,"ok":true,"t":<ms epoch>,"result":{...}}
 * ops: apply, create, update, updateStatus, delete, get, list, compact,
 * dropWatches, available, requests, blackhole, throttle, lagWatches.
 */
export async function serveControl(server: TestApiServer) {
  const encoder = new TextEncoder();
  for await (const command of jsonCommands(Deno.stdin.readable)) {
    let reply: Record<string, unknown>;
    try {
      const result = ({
        apply: () => server.apply(command.object),
        create: () => server.create(command.object),
        update: () => server.update(command.object),
        updateStatus: () => server.update(command.object, { status: true }),
        delete: () => server.delete(command.kind, command.name, command.namespace),
        get: () => server.get(command.kind, command.name, command.namespace) ?? null,
        list: () => server.list(command.kind, command.namespace),
        compact: () => server.store.compact(),
        dropWatches: () => server.dropWatches(),
        blackhole: () => server.faults.blackhole(command.value),
        throttle: () => server.faults.throttle(command.count, command.retryAfterSeconds),
        lagWatches: () => server.faults.lagWatches(command.count),
        available: () => server.setAvailable(command.value),
        requests: () =>
          [
            ...(command.userAgent === undefined
              ? server.requests
              : server.requestsBy.get(command.userAgent) ?? []),
          ].sort(),
      } as Record<string, () => unknown>)[command.op]?.();
      reply = { id: command.id, ok: true, t: Date.now(), result: result ?? null };
    } catch (error) {
      reply = { id: command.id, ok: false, t: Date.now(), error: String(error) };
    }
    await Deno.stdout.write(encoder.encode(JSON.stringify(reply) + "\n"));
  }
}

if (import.meta.main) {
  const args = Deno.args;
  const flag = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const [hostname, port] = (flag("--listen") ?? "127.0.0.1:6443").split(":");
  const tlsDir = flag("--tls-dir");
  const server = await startTestApiServer({
    hostname,
    port: Number(port),
    token: flag("--token"),
    pods: Number(flag("--pods") ?? 0),
    firstPodIp: flag("--first-pod-ip"),
    bookmarkMs: flag("--bookmark-ms") ? Number(flag("--bookmark-ms")) : undefined,
    socketPath: flag("--socket"),
    tls: tlsDir
      ? {
        cert: await Deno.readTextFile(`${tlsDir}/server.crt`),
        key: await Deno.readTextFile(`${tlsDir}/server.key`),
      }
      : undefined,
  });
  await Deno.stdout.write(new TextEncoder().encode(JSON.stringify({ ready: server.url }) + "\n"));
  await serveControl(server);
  await server.stop();
}
