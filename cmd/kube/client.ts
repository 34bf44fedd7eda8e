/**
 * A small Kubernetes API client on Deno's fetch: JSON requests, paginated
 * lists, streamed watches and patches, with a bearer token, a client
 * certificate or an exec plugin (cmd/kube/credentials.ts), over TLS verified
 * against the cluster's CA. As client-go: every request has a timeout, a 429
 * is retried after its Retry-After, a 401 re-reads the credential once, and a
 * watch that brings nothing (no event, no bookmark) for its idle limit is
 * ended, so a black-holed connection never freezes a cache. Every call names
 * a resource and a verb from core/kube/resources.ts, and a verb the agent was
 * not granted is refused here, before it ever reaches the API server.
 */
import { dirname } from "node:path";
import {
  type Connection,
  connectionFromKubeconfigs,
  inClusterConnection,
  type KubeconfigFile,
  kubeconfigPaths,
  SERVICE_ACCOUNT_DIR,
} from "../../core/kube/kubeconfig.ts";
import { Credentials, type TransportOptions } from "./credentials.ts";
import {
  ALL_PERMISSIONS,
  type Resource,
  resourceName,
  resourcePath,
  type Verb,
} from "../../core/kube/resources.ts";

/** A non-2xx answer: the HTTP status and the Status object's reason and message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** One event of a watch stream. */
export interface WatchEvent {
  readonly type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  readonly object: Record<string, unknown> & {
    metadata?: { resourceVersion?: string };
    code?: number;
  };
}

/** The list call's result, all pages together. */
export interface ListResult {
  readonly items: unknown[];
  readonly resourceVersion: string;
}

export interface ListOptions {
  /** Items per page (the API server's `limit`). */
  readonly pageSize?: number;
  /**
   * "0": any version the server has (its watch cache, no etcd quorum read;
   * the server may ignore `limit`); absent: the latest (a consistent read).
   */
  readonly resourceVersion?: string;
  /** Ask for PartialObjectMetadata (metadata only). */
  readonly metadataOnly?: boolean;
  /** A field selector, e.g. `metadata.name=node1` (one object of a collection). */
  readonly fieldSelector?: string;
  /** Called with each page's items as they arrive, instead of keeping them all. */
  readonly onItems?: (items: unknown[]) => void;
}

const PARTIAL = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
const PARTIAL_WATCH =
  "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

/** How long one request may take (client-go leaves it to callers; kubectl's default is none). */
export const REQUEST_TIMEOUT_MS = 30_000;
/** Retries of a 429 (each after its Retry-After, at most 10 s). */
const THROTTLE_RETRIES = 5;

/** A caller's bound on one request: its own abort signal and/or a shorter timeout. */
export interface Bound {
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
}

/** A request that got no answer in time (or a watch that fell silent). */
export class TimeoutError extends Error {}

/** A permission table as "group/plural verb" strings. */
function allowed(permissions: readonly { resource: Resource; verbs: readonly Verb[] }[]) {
  return new Set(
    permissions.flatMap((p) => p.verbs.map((v) => `${resourceName(p.resource)} ${v}`)),
  );
}

/** Who may do what: the agent and the controller pass theirs; `migrate` brings its own. */
export type Permissions = readonly { resource: Resource; verbs: readonly Verb[] }[];

export interface ClientOptions extends TransportOptions {
  readonly permissions?: Permissions;
  /** The User-Agent header (the agent and the controller name themselves apart). */
  readonly userAgent?: string;
  /** Timeout of every request but a watch's stream (default 30 s). */
  readonly requestTimeoutMs?: number;
}

export class KubeClient {
  readonly #connection: Connection;
  readonly #credentials: Credentials;
  readonly #userAgent: string;
  readonly #allowed: Set<string>;
  readonly #timeoutMs: number;

  private constructor(connection: Connection, options: ClientOptions) {
    this.#connection = connection;
    this.#allowed = allowed(options.permissions ?? ALL_PERMISSIONS);
    this.#userAgent = options.userAgent ?? "kube-egress";
    this.#credentials = new Credentials(connection, options);
    this.#timeoutMs = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  }

  /** The namespace of the kubeconfig context or of the pod (in-cluster). */
  get namespace(): string | undefined {
    return this.#connection.namespace;
  }

  get server(): string {
    return this.#connection.server;
  }

  /** Builds a client for a connection (TLS material is read here, and again as it rotates). */
  static async connect(
    connection: Connection,
    permissions: Permissions | ClientOptions = ALL_PERMISSIONS,
  ): Promise<KubeClient> {
    const options = Array.isArray(permissions)
      ? { permissions: permissions as Permissions }
      : permissions as ClientOptions;
    const client = new KubeClient(connection, options);
    await client.#credentials.transport();
    return client;
  }

  /**
   * Finds the API server: `kubeconfig` when given, else in-cluster (service
   * account) when running in a pod, else $KUBECONFIG (a list, merged as kubectl
   * merges it) or ~/.kube/config.
   */
  static async fromEnvironment(
    options: {
      kubeconfig?: string;
      context?: string;
      permissions?: Permissions;
      /** Where the service account files are (tests). */
      serviceAccountDir?: string;
      env?: Record<string, string>;
    } & Omit<ClientOptions, "permissions"> = {},
  ) {
    const env = options.env ?? Deno.env.toObject();
    const dir = options.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
    if (!options.kubeconfig) {
      const namespace = await Deno.readTextFile(`${dir}/namespace`).then(
        (t) => t.trim(),
        () => undefined,
      );
      const inCluster = inClusterConnection(env, namespace, dir);
      if (inCluster) return await KubeClient.connect(inCluster, options);
    }
    const paths = options.kubeconfig
      ? [options.kubeconfig]
      : kubeconfigPaths(env.KUBECONFIG, env.HOME ?? "/root");
    const files: KubeconfigFile[] = [];
    const problems: string[] = [];
    // yaml is loaded only for kubeconfig files: an agent in a pod uses its service account.
    const { parse } = await import("yaml");
    for (const path of paths) {
      try {
        files.push({ data: parse(await Deno.readTextFile(path)), dir: dirname(path), path });
      } catch (error) {
        problems.push(`${path}: ${error instanceof Error ? error.message : error}`);
      }
    }
    // kubectl skips missing files of a list; with none readable there is nothing to go on.
    if (files.length === 0 || (options.kubeconfig && problems.length > 0)) {
      throw new Error(
        `no Kubernetes API found: not in a pod and no kubeconfig readable (${problems.join("; ")})`,
      );
    }
    return await KubeClient.connect(connectionFromKubeconfigs(files, options.context), options);
  }

  async #headers(accept: string, contentType?: string): Promise<Headers> {
    const headers = new Headers({ accept, "user-agent": this.#userAgent });
    if (contentType) headers.set("content-type", contentType);
    const authorization = await this.#credentials.authorization();
    if (authorization) headers.set("authorization", authorization);
    return headers;
  }

  #check(resource: Resource, verb: Verb) {
    const key = `${resourceName(resource)} ${verb}`;
    if (!this.#allowed.has(key)) {
      throw new Error(`kube-egress is not granted "${key}" (see core/kube/resources.ts)`);
    }
  }

  /**
   * One request. The timeout covers the whole exchange, or for a stream
   * (`stream`) the wait for its headers; the caller bounds the body.
   */
  async #fetch(
    method: string,
    path: string,
    options: {
      query?: Record<string, string | undefined>;
      body?: unknown;
      accept?: string;
      contentType?: string;
      signal?: AbortSignal;
      stream?: boolean;
      timeoutMs?: number;
    } = {},
  ): Promise<Response> {
    let reauthenticated = false;
    for (let attempt = 0;; attempt++) {
      const transport = await this.#credentials.transport();
      const url = new URL(transport.base + path);
      for (const [k, v] of Object.entries(options.query ?? {})) {
        if (v !== undefined) url.searchParams.set(k, v);
      }
      const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
      const timeout = new AbortController();
      const timer = setTimeout(() => timeout.abort(), timeoutMs);
      const signal = options.signal
        ? AbortSignal.any([options.signal, timeout.signal])
        : timeout.signal;
      let response: Response;
      let text: string | undefined;
      try {
        response = await fetch(url, {
          method,
          headers: await this.#headers(options.accept ?? "application/json", options.contentType),
          body: options.body === undefined ? undefined : JSON.stringify(options.body),
          signal,
          ...(transport.client ? { client: transport.client } : {}),
        });
        if (!response.ok || !options.stream) text = await response.text();
      } catch (error) {
        if (timeout.signal.aborted && !options.signal?.aborted) {
          throw new TimeoutError(`${method} ${path}: no answer within ${timeoutMs} ms (timeout)`);
        }
        throw error;
      } finally {
        if (!options.stream) clearTimeout(timer);
      }
      if (options.stream) {
        clearTimeout(timer);
        if (response.ok) return response;
      }
      if (response.ok) {
        return new Response(text, { status: response.status, headers: response.headers });
      }
      if (response.status === 429 && attempt < THROTTLE_RETRIES) {
        // As client-go: wait as long as the server asks (bounded), then try again.
        const seconds = Number(response.headers.get("retry-after") ?? 1);
        await abortableSleep(
          Math.min(10_000, (Number.isFinite(seconds) ? seconds : 1) * 1000),
          options.signal,
        );
        if (options.signal?.aborted) throw new Error(`${method} ${path}: aborted`);
        continue;
      }
      if (response.status === 401 && !reauthenticated && this.#credentials.invalidate()) {
        reauthenticated = true; // a rotated token or an expired exec credential: once more
        continue;
      }
      let reason = response.statusText;
      let message = (text ?? "").slice(0, 500);
      try {
        const status = JSON.parse(text ?? "");
        reason = status.reason ?? reason;
        message = status.message ?? message;
      } catch {
        // Not a Status object.
      }
      throw new ApiError(
        response.status,
        reason,
        `${method} ${path}: ${response.status} ${message}`,
      );
    }
  }

  /** GET one object. */
  async get(
    resource: Resource,
    name: string,
    namespace?: string,
    bound: Bound = {},
  ): Promise<Record<string, unknown>> {
    this.#check(resource, "get");
    const response = await this.#fetch("GET", resourcePath(resource, { namespace, name }), bound);
    return await response.json();
  }

  /** POST a new object. */
  async create(
    resource: Resource,
    object: Record<string, unknown>,
    namespace?: string,
    bound: Bound = {},
  ) {
    this.#check(resource, "create");
    const response = await this.#fetch("POST", resourcePath(resource, { namespace }), {
      body: object,
      contentType: "application/json",
      ...bound,
    });
    return await response.json() as Record<string, unknown>;
  }

  /**
   * PUT an object (or its status when the resource is "<plural>/status").
   * The object's metadata.resourceVersion makes it optimistic: 409 when stale.
   */
  async update(
    resource: Resource,
    object: {
      metadata: { name: string; namespace?: string; [key: string]: unknown };
      [key: string]: unknown;
    },
    bound: Bound = {},
  ) {
    this.#check(resource, "update");
    const [, sub] = resource.plural.split("/");
    const path = resourcePath(resource, {
      namespace: object.metadata.namespace,
      name: object.metadata.name,
      subresource: sub,
    });
    const response = await this.#fetch("PUT", path, {
      body: object,
      contentType: "application/json",
      ...bound,
    });
    return await response.json() as Record<string, unknown>;
  }

  /** DELETE one object (it may stay, with deletionTimestamp, until its finalizers are gone). */
  async delete(resource: Resource, name: string, namespace?: string, bound: Bound = {}) {
    this.#check(resource, "delete");
    const response = await this.#fetch(
      "DELETE",
      resourcePath(resource, { namespace, name }),
      bound,
    );
    return await response.json() as Record<string, unknown>;
  }

  /**
   * PATCH an object: a JSON merge patch (RFC 7396) by default, or a JSON
   * patch (RFC 6902, a list of operations). Touches only what the patch names;
   * a metadata.resourceVersion in a merge patch (or a `test` of it) makes it
   * optimistic.
   */
  async patch(
    resource: Resource,
    name: string,
    namespace: string | undefined,
    patch: unknown,
    type: "merge" | "json" = "merge",
  ): Promise<Record<string, unknown>> {
    this.#check(resource, "patch");
    const [, sub] = resource.plural.split("/");
    const response = await this.#fetch(
      "PATCH",
      resourcePath(resource, { namespace, name, subresource: sub }),
      {
        body: patch,
        contentType: type === "merge"
          ? "application/merge-patch+json"
          : "application/json-patch+json",
      },
    );
    return await response.json() as Record<string, unknown>;
  }

  /**
   * Lists a collection page by page (`limit`/`continue`), so that a large
   * cluster never arrives as one huge body.
   */
  async list(resource: Resource, options: ListOptions = {}): Promise<ListResult> {
    this.#check(resource, "list");
    const items: unknown[] = [];
    let next: string | undefined;
    let resourceVersion = "";
    do {
      const response = await this.#fetch("GET", resourcePath(resource), {
        query: {
          limit: String(options.pageSize ?? 500),
          continue: next,
          // Only the first page names a version; the continue token carries it after that.
          resourceVersion: next ? undefined : options.resourceVersion,
          fieldSelector: options.fieldSelector,
        },
        accept: options.metadataOnly ? PARTIAL : "application/json",
      });
      const page = await response.json() as {
        items?: unknown[];
        metadata?: { resourceVersion?: string; continue?: string };
      };
      if (options.onItems) options.onItems(page.items ?? []);
      else items.push(...(page.items ?? []));
      resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
      next = page.metadata?.continue || undefined;
    } while (next);
    return { items, resourceVersion };
  }

  /**
   * Watches a collection from `resourceVersion`, yielding events until the
   * server ends the stream (its timeout), the connection drops, `signal`
   * aborts, or nothing at all (no event, no bookmark) arrives for `idleMs`:
   * then it throws a TimeoutError, since a black-holed connection would
   * otherwise wait forever. Bookmarks are requested so that an idle watch
   * keeps a fresh resourceVersion to resume from (and shows it is alive).
   */
  async *watch(
    resource: Resource,
    resourceVersion: string,
    options: {
      signal?: AbortSignal;
      timeoutSeconds?: number;
      metadataOnly?: boolean;
      fieldSelector?: string;
      /** Watch in this namespace only (a namespaced resource; RBAC may grant no more). */
      namespace?: string;
      /** Silence that ends the watch (default: twice kube-apiserver's bookmark minute). */
      idleMs?: number;
      /** Called once the server accepted the watch (its stream is open). */
      onOpen?: () => void;
    } = {},
  ): AsyncGenerator<WatchEvent> {
    this.#check(resource, "watch");
    const idleMs = options.idleMs ?? 120_000;
    const stop = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
    const response = await this.#fetch(
      "GET",
      resourcePath(resource, { namespace: options.namespace }),
      {
        query: {
          watch: "true",
          resourceVersion,
          allowWatchBookmarks: "true",
          timeoutSeconds: String(options.timeoutSeconds ?? 300),
          fieldSelector: options.fieldSelector,
        },
        accept: options.metadataOnly ? PARTIAL_WATCH : "application/json",
        signal,
        stream: true,
      },
    );
    options.onOpen?.();
    let silent = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        silent = true;
        stop.abort();
      }, idleMs);
    };
    arm();
    let buffer = "";
    try {
      for await (const chunk of response.body!.pipeThrough(new TextDecoderStream())) {
        arm();
        buffer += chunk;
        let newline: number;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline).trim();
          buffer = buffer.slice(newline + 1);
          if (line) yield JSON.parse(line) as WatchEvent;
        }
      }
    } catch (error) {
      if (silent) {
        throw new TimeoutError(
          `watch of ${resource.plural} silent for ${idleMs} ms (no event, no bookmark): restarting it`,
        );
      }
      throw error;
    } finally {
      clearTimeout(timer);
      stop.abort();
    }
    if (buffer.trim()) yield JSON.parse(buffer) as WatchEvent;
  }

  /** Closes pooled connections. */
  close() {
    this.#credentials.close();
  }
}

function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
