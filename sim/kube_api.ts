/**
 * A test Kubernetes API server (Deno.serve) speaking the real JSON protocol
 * for the resources kube-egress uses: paginated lists with resourceVersion,
 * streamed watches (ADDED/MODIFIED/DELETED, BOOKMARK, and an ERROR 410 for a
 * too-old version), get/create/update/merge-patch/delete, the status
 * subresource, finalizers and deletionTimestamp, 409 on stale updates and
 * existing names, PartialObjectMetadata lists and watches, bearer tokens and
 * optional TLS. The unmodified client code runs against it.
 *
 * In process: `startTestApiServer({ pods: 10_000 })`. As a process (e.g. inside
 * a simulator namespace): `deno run -A sim/kube_api.ts --listen 192.0.2.5:6443`,
 * controlled by JSON lines on stdin (see `serveControl`).
 */
import { GROUP, VERSION } from "../core/kube/api.ts";
import {
  KubeStore,
  mergePatch,
  type Obj,
  type ResourceInfo,
  StatusError,
  type StoredEvent,
} from "./kube_store.ts";
import { errorMessage } from "../core/errors.ts";

/** The resources the server knows. */
export const RESOURCES: readonly ResourceInfo[] = [
  {
    group: "",
    version: "v1",
    plural: "pods",
    kind: "Pod",
    namespaced: true,
    statusSubresource: true,
  },
  {
    group: "",
    version: "v1",
    plural: "namespaces",
    kind: "Namespace",
    namespaced: false,
    statusSubresource: true,
  },
  {
    group: "",
    version: "v1",
    plural: "nodes",
    kind: "Node",
    namespaced: false,
    statusSubresource: true,
  },
  {
    group: "",
    version: "v1",
    plural: "events",
    kind: "Event",
    namespaced: true,
    statusSubresource: false,
  },
  {
    group: "",
    version: "v1",
    plural: "configmaps",
    kind: "ConfigMap",
    namespaced: true,
    statusSubresource: false,
  },
  {
    group: "apps",
    version: "v1",
    plural: "replicasets",
    kind: "ReplicaSet",
    namespaced: true,
    statusSubresource: true,
  },
  {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    kind: "Lease",
    namespaced: true,
    statusSubresource: false,
  },
  {
    group: GROUP,
    version: VERSION,
    plural: "egressvips",
    kind: "EgressVIP",
    namespaced: false,
    statusSubresource: true,
  },
  {
    group: GROUP,
    version: VERSION,
    plural: "egresspolicies",
    kind: "EgressPolicy",
    namespaced: true,
    statusSubresource: true,
  },
  // The old egress-mapper CRDs (its deploy/crds: both namespaced), for `migrate` from the API.
  {
    group: "egress.mapper.com",
    version: "v1alpha1",
    plural: "vips",
    kind: "Vip",
    namespaced: true,
    statusSubresource: true,
  },
  {
    group: "egress.mapper.com",
    version: "v1alpha1",
    plural: "egresses",
    kind: "Egress",
    namespaced: true,
    statusSubresource: true,
  },
];

export interface TestApiServerOptions {
  readonly hostname?: string;
  readonly port?: number;
  /** Required bearer token; absent = no authentication. */
  readonly token?: string;
  /** PEM certificate and key: serve HTTPS. */
  readonly tls?: { readonly cert: string; readonly key: string };
  /** Bookmark interval for watches that asked for them. */
  readonly bookmarkMs?: number;
  /** Events kept for watch resumption; older versions get 410 Gone. */
  readonly historyLimit?: number;
  /** Pods to create at start (see `syntheticPods`). */
  readonly pods?: number;
  /** First IP of those pods. */
  readonly firstPodIp?: string;
}

/** A running test API server. */
export interface TestApiServer {
  readonly url: string;
  readonly store: KubeStore;
  /** "group/plural[/status] verb" of every request served (authorised or not). */
  readonly requests: Set<string>;
  /** Creates (or replaces) objects, returning the stored versions. */
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

function infoOfKind(kind: string): ResourceInfo {
  const info = RESOURCES.find((r) => r.kind === kind);
  if (!info) throw new Error(`test API server: unknown kind ${kind}`);
  return info;
}

function status(code: number, reason: string, message: string): Response {
  return Response.json(
    { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code },
    { status: code },
  );
}

/** Parses /api/v1/... and /apis/group/version/... into resource, namespace, name, subresource. */
export function parsePath(path: string) {
  const parts = path.split("/").filter(Boolean);
  let group: string;
  let rest: string[];
  if (parts[0] === "api" && parts.length >= 2) {
    group = "";
    rest = parts.slice(2);
  } else if (parts[0] === "apis" && parts.length >= 3) {
    group = parts[1];
    rest = parts.slice(3);
  } else return undefined;
  let namespace: string | undefined;
  if (rest[0] === "namespaces" && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [plural, name, subresource] = rest;
  const info = RESOURCES.find((r) => r.group === group && r.plural === plural);
  return info ? { info, namespace, name, subresource } : undefined;
}

function partial(object: Obj): Obj {
  return { apiVersion: "meta.k8s.io/v1", kind: "PartialObjectMetadata", metadata: object.metadata };
}

/** Starts the server; resolves once it listens. */
export function startTestApiServer(options: TestApiServerOptions = {}): Promise<TestApiServer> {
  const store = new KubeStore(options.historyLimit ?? 10_000);
  const requests = new Set<string>();
  const watches = new Set<{ close(): void }>();
  let available = true;

  const podInfo = infoOfKind("Pod");
  for (const object of syntheticPods(options.pods ?? 0, { firstIp: options.firstPodIp })) {
    // Like kubelet: the pod is created, then its status (IP, phase) is written.
    const created = store.create(podInfo, object);
    store.update(podInfo, { ...created, status: object.status }, { status: true });
  }

  const handler = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const target = parsePath(url.pathname);
    if (!target) return status(404, "NotFound", `the server could not find ${url.pathname}`);
    const { info, namespace, name, subresource } = target;
    const isWatch = url.searchParams.get("watch") === "true" ||
      url.searchParams.get("watch") === "1";
    const verb = request.method === "GET"
      ? (isWatch ? "watch" : name ? "get" : "list")
      : ({ POST: "create", PUT: "update", PATCH: "patch", DELETE: "delete" } as Record<
        string,
        string
      >)[
        request.method
      ] ?? request.method.toLowerCase();
    requests.add(
      `${info.group || "core"}/${info.plural}${subresource ? `/${subresource}` : ""} ${verb}`,
    );
    if (!available) return status(503, "ServiceUnavailable", "the test API server is unavailable");
    if (options.token && request.headers.get("authorization") !== `Bearer ${options.token}`) {
      return status(401, "Unauthorized", "Unauthorized");
    }
    const resource = `${info.group}/${info.plural}`;
    const metadataOnly = (request.headers.get("accept") ?? "").includes("as=PartialObjectMetadata");
    try {
      if (verb === "watch") return watch(info, namespace, url, metadataOnly);
      if (verb === "list") {
        const limit = Number(url.searchParams.get("limit") ?? 0);
        const token = url.searchParams.get("continue");
        let after = "";
        let rv = store.resourceVersion;
        if (token) {
          const decoded = JSON.parse(atob(token));
          if (decoded.rv + 1 < store.compactedBelow) {
            throw new StatusError(410, "Expired", "The provided continue parameter is too old");
          }
          after = decoded.after;
          rv = decoded.rv;
        }
        // Later pages are served from the current objects, not a snapshot at the first
        // page's version (as etcd would): an object changed meanwhile shows its newer
        // state, and the watch from the list's version replays the change anyway.
        const all = store.list(resource, namespace);
        const keyOf = (o: Obj) => `${o.metadata.namespace ?? ""}/${o.metadata.name}`;
        const remaining = after ? all.filter((o) => keyOf(o) > after) : all;
        const page = limit > 0 ? remaining.slice(0, limit) : remaining;
        const more = limit > 0 && remaining.length > limit;
        return Response.json({
          apiVersion: metadataOnly
            ? "meta.k8s.io/v1"
            : (info.group ? `${info.group}/${info.version}` : "v1"),
          kind: metadataOnly ? "PartialObjectMetadataList" : `${info.kind}List`,
          metadata: {
            resourceVersion: String(rv),
            ...(more ? { continue: btoa(JSON.stringify({ rv, after: keyOf(page.at(-1)!) })) } : {}),
          },
          items: metadataOnly ? page.map(partial) : page,
        });
      }
      const key = namespace ? `${namespace}/${name}` : name!;
      if (verb === "get") {
        const object = store.get(resource, key);
        if (!object) throw new StatusError(404, "NotFound", `${info.plural} "${name}" not found`);
        return Response.json(object);
      }
      if (verb === "delete") return Response.json(store.delete(info, { name: name!, namespace }));
      const body = await request.json() as Obj;
      body.metadata ??= { name: name ?? "" };
      if (info.namespaced) body.metadata.namespace = namespace;
      if (verb === "create") return Response.json(store.create(info, body), { status: 201 });
      if (name !== body.metadata.name && verb === "update") {
        throw new StatusError(400, "BadRequest", "the name in the body does not match the URL");
      }
      if (verb === "update") {
        return Response.json(store.update(info, body, { status: subresource === "status" }));
      }
      if (verb === "patch") {
        const stored = store.get(resource, key);
        if (!stored) throw new StatusError(404, "NotFound", `${info.plural} "${name}" not found`);
        const merged = mergePatch(stored, body) as Obj;
        merged.metadata.resourceVersion = stored.metadata.resourceVersion;
        return Response.json(store.update(info, merged, { status: subresource === "status" }));
      }
      return status(405, "MethodNotAllowed", `${request.method} is not supported`);
    } catch (error) {
      if (error instanceof StatusError) return status(error.code, error.reason, error.message);
      return status(500, "InternalError", errorMessage(error));
    }
  };

  /** A watch: replay since the version asked for (or everything for "" / "0"), then live events. */
  function watch(
    info: ResourceInfo,
    namespace: string | undefined,
    url: URL,
    metadataOnly: boolean,
  ) {
    const resource = `${info.group}/${info.plural}`;
    const from = url.searchParams.get("resourceVersion") ?? "";
    const bookmarks = url.searchParams.get("allowWatchBookmarks") === "true";
    const timeout = Number(url.searchParams.get("timeoutSeconds") ?? 1800);
    const encoder = new TextEncoder();
    let cleanup = () => {};
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        let closed = false;
        const send = (type: string, object: unknown) => {
          if (!closed) controller.enqueue(encoder.encode(JSON.stringify({ type, object }) + "\n"));
        };
        const show = (o: Obj) => (metadataOnly ? partial(o) : o);
        const matches = (e: StoredEvent) =>
          e.resource === resource && (!namespace || e.object.metadata.namespace === namespace);
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
        const handle = { close };
        watches.add(handle);
        let replay: StoredEvent[] | undefined;
        if (from === "" || from === "0") {
          replay = store.list(resource, namespace).map((o) => ({
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
        for (const e of replay) send(e.type, show(e.object));
        const unsubscribe = store.subscribe((e) => {
          if (matches(e)) send(e.type, show(e.object));
        });
        const bookmark = bookmarks
          ? setInterval(() =>
            send("BOOKMARK", {
              kind: info.kind,
              apiVersion: info.group ? `${info.group}/${info.version}` : "v1",
              metadata: { resourceVersion: String(store.resourceVersion) },
            }), options.bookmarkMs ?? 1000)
          : undefined;
        const timer = setTimeout(close, timeout * 1000);
        cleanup = () => {
          unsubscribe();
          clearInterval(bookmark);
          clearTimeout(timer);
          watches.delete(handle);
        };
      },
      cancel() {
        cleanup();
      },
    });
    return new Response(body, { headers: { "content-type": "application/json" } });
  }

  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 0,
      ...(options.tls ?? {}),
      onListen() {},
    }, handler);
    const addr = server.addr as Deno.NetAddr;
    const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
    const meta = (o: Record<string, unknown>) => o.metadata as { name: string; namespace?: string };
    resolve({
      url: `${options.tls ? "https" : "http"}://${host}:${addr.port}`,
      store,
      requests,
      apply(object) {
        const info = infoOfKind(String(object.kind));
        const m = meta(object);
        const key = m.namespace ? `${m.namespace}/${m.name}` : m.name;
        const stored = store.get(`${info.group}/${info.plural}`, key);
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
        const info = infoOfKind(kind);
        return store.get(`${info.group}/${info.plural}`, namespace ? `${namespace}/${name}` : name);
      },
      list(kind, namespace) {
        const info = infoOfKind(kind);
        return store.list(`${info.group}/${info.plural}`, namespace);
      },
      dropWatches() {
        for (const w of [...watches]) w.close();
      },
      setAvailable(value) {
        available = value;
        if (!value) { for (const w of [...watches]) w.close(); }
      },
      async stop() {
        for (const w of [...watches]) w.close();
        await server.shutdown();
      },
    });
  });
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
 * dropWatches, available, requests.
 */
export async function serveControl(server: TestApiServer) {
  const encoder = new TextEncoder();
  let buffer = "";
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (!line) continue;
      const command = JSON.parse(line);
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
          available: () => server.setAvailable(command.value),
          requests: () => [...server.requests].sort(),
        } as Record<string, () => unknown>)[command.op]?.();
        reply = { id: command.id, ok: true, t: Date.now(), result: result ?? null };
      } catch (error) {
        reply = { id: command.id, ok: false, t: Date.now(), error: String(error) };
      }
      await Deno.stdout.write(encoder.encode(JSON.stringify(reply) + "\n"));
    }
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
    bookmarkMs: Number(flag("--bookmark-ms") ?? 1000),
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
