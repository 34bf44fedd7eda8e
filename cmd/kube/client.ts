/**
 * A small Kubernetes API client on Deno's fetch: JSON requests, paginated
 * lists and streamed watches, with a bearer token (re-read from its file, as
 * service account tokens rotate) or a client certificate, over TLS verified
 * against the cluster's CA. Every call names a resource and a verb from
 * core/kube/resources.ts, and a verb the agent was not granted is refused here,
 * before it ever reaches the API server.
 */
import { dirname } from "node:path";
import { parse } from "yaml";
import {
  type Connection,
  connectionFromKubeconfig,
  inClusterConnection,
  SERVICE_ACCOUNT_DIR,
} from "../../core/kube/kubeconfig.ts";
import {
  AGENT_PERMISSIONS,
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
  /** Ask for PartialObjectMetadata (metadata only). */
  readonly metadataOnly?: boolean;
  /** Called with each page's items as they arrive, instead of keeping them all. */
  readonly onItems?: (items: unknown[]) => void;
}

const PARTIAL = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
const PARTIAL_WATCH =
  "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

/** Reads a file reference's text. */
async function readRef(ref?: { data?: string; file?: string }): Promise<string | undefined> {
  if (!ref) return undefined;
  return ref.data ?? await Deno.readTextFile(ref.file!);
}

/** A permission table as "group/plural verb" strings. */
function allowed(permissions: readonly { resource: Resource; verbs: readonly Verb[] }[]) {
  return new Set(
    permissions.flatMap((p) => p.verbs.map((v) => `${resourceName(p.resource)} ${v}`)),
  );
}

/** Who may do what: the agent's table by default; `migrate` brings its own. */
export type Permissions = readonly { resource: Resource; verbs: readonly Verb[] }[];

export class KubeClient {
  readonly #connection: Connection;
  readonly #http?: Deno.HttpClient;
  readonly #userAgent = "kube-egress";
  readonly #allowed: Set<string>;
  #token?: { value: string; readAt: number };

  private constructor(connection: Connection, permissions: Permissions, http?: Deno.HttpClient) {
    this.#connection = connection;
    this.#allowed = allowed(permissions);
    this.#http = http;
  }

  /** The namespace of the kubeconfig context or of the pod (in-cluster). */
  get namespace(): string | undefined {
    return this.#connection.namespace;
  }

  get server(): string {
    return this.#connection.server;
  }

  /** Builds a client for a connection (TLS material is read once here). */
  static async connect(
    connection: Connection,
    permissions: Permissions = AGENT_PERMISSIONS,
  ): Promise<KubeClient> {
    const [ca, cert, key] = await Promise.all([
      readRef(connection.ca),
      readRef(connection.clientCert),
      readRef(connection.clientKey),
    ]);
    const needsClient = connection.server.startsWith("https:") && (ca || cert);
    const http = needsClient
      ? Deno.createHttpClient({
        ...(ca ? { caCerts: [ca] } : {}),
        ...(cert && key ? { cert, key } : {}),
      })
      : undefined;
    return new KubeClient(connection, permissions, http);
  }

  /**
   * Finds the API server: `kubeconfig` when given, else in-cluster (service
   * account) when running in a pod, else $KUBECONFIG or ~/.kube/config.
   */
  static async fromEnvironment(
    options: { kubeconfig?: string; context?: string; permissions?: Permissions } = {},
  ) {
    const env = Deno.env.toObject();
    if (!options.kubeconfig) {
      const namespace = await Deno.readTextFile(`${SERVICE_ACCOUNT_DIR}/namespace`).then(
        (t) => t.trim(),
        () => undefined,
      );
      const inCluster = inClusterConnection(env, namespace);
      if (inCluster) return await KubeClient.connect(inCluster, options.permissions);
    }
    const path = options.kubeconfig ?? env.KUBECONFIG?.split(":")[0] ??
      `${env.HOME ?? "/root"}/.kube/config`;
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      throw new Error(
        `no Kubernetes API found: not in a pod and kubeconfig ${path} unreadable (${
          error instanceof Error ? error.message : error
        })`,
      );
    }
    return await KubeClient.connect(
      connectionFromKubeconfig(parse(text), dirname(path), options.context),
      options.permissions,
    );
  }

  async #headers(accept: string, contentType?: string): Promise<Headers> {
    const headers = new Headers({ accept, "user-agent": this.#userAgent });
    if (contentType) headers.set("content-type", contentType);
    const ref = this.#connection.token;
    if (ref?.data) headers.set("authorization", `Bearer ${ref.data}`);
    else if (ref?.file) {
      // Projected service account tokens rotate: re-read at most once a minute.
      if (!this.#token || Date.now() - this.#token.readAt > 60_000) {
        this.#token = { value: (await Deno.readTextFile(ref.file)).trim(), readAt: Date.now() };
      }
      headers.set("authorization", `Bearer ${this.#token.value}`);
    }
    return headers;
  }

  #check(resource: Resource, verb: Verb) {
    const key = `${resourceName(resource)} ${verb}`;
    if (!this.#allowed.has(key)) {
      throw new Error(`kube-egress is not granted "${key}" (see core/kube/resources.ts)`);
    }
  }

  async #fetch(
    method: string,
    path: string,
    options: {
      query?: Record<string, string | undefined>;
      body?: unknown;
      accept?: string;
      contentType?: string;
      signal?: AbortSignal;
    } = {},
  ): Promise<Response> {
    const url = new URL(this.#connection.server + path);
    for (const [k, v] of Object.entries(options.query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, v);
    }
    const response = await fetch(url, {
      method,
      headers: await this.#headers(options.accept ?? "application/json", options.contentType),
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: options.signal,
      ...(this.#http ? { client: this.#http } : {}),
    });
    if (!response.ok) {
      const text = await response.text();
      let reason = response.statusText;
      let message = text.slice(0, 500);
      try {
        const status = JSON.parse(text);
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
    return response;
  }

  /** GET one object. */
  async get(
    resource: Resource,
    name: string,
    namespace?: string,
  ): Promise<Record<string, unknown>> {
    this.#check(resource, "get");
    const response = await this.#fetch("GET", resourcePath(resource, { namespace, name }));
    return await response.json();
  }

  /** POST a new object. */
  async create(resource: Resource, object: Record<string, unknown>, namespace?: string) {
    this.#check(resource, "create");
    const response = await this.#fetch("POST", resourcePath(resource, { namespace }), {
      body: object,
      contentType: "application/json",
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
    });
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
        query: { limit: String(options.pageSize ?? 500), continue: next },
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
   * server ends the stream (its timeout), the connection drops, or `signal`
   * aborts. Bookmarks are requested so that an idle watch keeps a fresh
   * resourceVersion to resume from.
   */
  async *watch(
    resource: Resource,
    resourceVersion: string,
    options: {
      signal?: AbortSignal;
      timeoutSeconds?: number;
      metadataOnly?: boolean;
      /** Called once the server accepted the watch (its stream is open). */
      onOpen?: () => void;
    } = {},
  ): AsyncGenerator<WatchEvent> {
    this.#check(resource, "watch");
    const response = await this.#fetch("GET", resourcePath(resource), {
      query: {
        watch: "true",
        resourceVersion,
        allowWatchBookmarks: "true",
        timeoutSeconds: String(options.timeoutSeconds ?? 300),
      },
      accept: options.metadataOnly ? PARTIAL_WATCH : "application/json",
      signal: options.signal,
    });
    options.onOpen?.();
    let buffer = "";
    for await (const chunk of response.body!.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line) yield JSON.parse(line) as WatchEvent;
      }
    }
    if (buffer.trim()) yield JSON.parse(buffer) as WatchEvent;
  }

  /** Closes pooled connections. */
  close() {
    this.#http?.close();
  }
}
