/**
 * Where the API server is and how to authenticate: a kubeconfig's current
 * context (server, CA, token or client certificate) or the in-cluster service
 * account. Parsing is pure; cmd/kube/client.ts reads the files.
 */
import { z } from "zod";
import { describeIssues } from "../schema.ts";

/** What the client needs; file references are resolved to absolute paths, data stays inline. */
export interface Connection {
  readonly server: string;
  /** PEM text of the CA bundle, or a path to it. */
  readonly ca?: { readonly data?: string; readonly file?: string };
  readonly token?: { readonly data?: string; readonly file?: string };
  readonly clientCert?: { readonly data?: string; readonly file?: string };
  readonly clientKey?: { readonly data?: string; readonly file?: string };
  /** Namespace of the context (in-cluster: the pod's namespace). */
  readonly namespace?: string;
}

const Cluster = z.object({
  server: z.url(),
  "certificate-authority": z.string().optional(),
  "certificate-authority-data": z.string().optional(),
  "insecure-skip-tls-verify": z.boolean().optional(),
});
const User = z.object({
  token: z.string().optional(),
  tokenFile: z.string().optional(),
  "client-certificate": z.string().optional(),
  "client-certificate-data": z.string().optional(),
  "client-key": z.string().optional(),
  "client-key-data": z.string().optional(),
  exec: z.unknown().optional(),
  "auth-provider": z.unknown().optional(),
});
const Context = z.object({
  cluster: z.string(),
  user: z.string().optional(),
  namespace: z.string().optional(),
});

const KubeconfigSchema = z.object({
  "current-context": z.string().optional(),
  clusters: z.array(z.object({ name: z.string(), cluster: Cluster })),
  users: z.array(z.object({ name: z.string(), user: User.optional().default({}) })).default([]),
  contexts: z.array(z.object({ name: z.string(), context: Context })),
});

const b64 = (text: string) =>
  new TextDecoder().decode(Uint8Array.from(atob(text), (c) => c.charCodeAt(0)));

function absolute(path: string, dir: string): string {
  return path.startsWith("/") ? path : `${dir.replace(/\/$/, "")}/${path}`;
}

/**
 * Reads a parsed kubeconfig (YAML already turned into data). `dir` is the
 * kubeconfig's directory, against which relative file paths are resolved.
 * Throws an Error naming what is missing or unsupported.
 */
export function connectionFromKubeconfig(
  data: unknown,
  dir: string,
  context?: string,
): Connection {
  const parsed = KubeconfigSchema.safeParse(data);
  if (!parsed.success) throw new Error(`invalid kubeconfig: ${describeIssues(parsed.error)}`);
  const config = parsed.data;
  const name = context ?? config["current-context"];
  if (!name) throw new Error("kubeconfig has no current-context (pass --context)");
  const ctx = config.contexts.find((c) => c.name === name)?.context;
  if (!ctx) throw new Error(`kubeconfig has no context ${name}`);
  const cluster = config.clusters.find((c) => c.name === ctx.cluster)?.cluster;
  if (!cluster) {
    throw new Error(`kubeconfig context ${name} names a missing cluster ${ctx.cluster}`);
  }
  const user = config.users.find((u) => u.name === ctx.user)?.user ?? {};
  if (user.exec || user["auth-provider"]) {
    throw new Error(
      `kubeconfig user ${ctx.user} uses an exec or auth-provider plugin, which kube-egress does not run; ` +
        "use a token or a client certificate",
    );
  }
  if (cluster["insecure-skip-tls-verify"]) {
    throw new Error(
      "insecure-skip-tls-verify is not supported: give the cluster's certificate-authority",
    );
  }
  const ref = (data?: string, file?: string, decode = true) =>
    data !== undefined
      ? { data: decode ? b64(data) : data }
      : file !== undefined
      ? { file: absolute(file, dir) }
      : undefined;
  return {
    server: cluster.server.replace(/\/$/, ""),
    ca: ref(cluster["certificate-authority-data"], cluster["certificate-authority"]),
    token: ref(user.token, user.tokenFile, false),
    clientCert: ref(user["client-certificate-data"], user["client-certificate"]),
    clientKey: ref(user["client-key-data"], user["client-key"]),
    namespace: ctx.namespace,
  };
}

/** The service account files every pod gets. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/**
 * In-cluster: the API server from KUBERNETES_SERVICE_HOST/PORT, the pod's
 * service account token (re-read as it rotates) and CA. Undefined when not in
 * a pod.
 */
export function inClusterConnection(
  env: Readonly<Record<string, string | undefined>>,
  namespace?: string,
): Connection | undefined {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) return undefined;
  const hostPart = host.includes(":") ? `[${host}]` : host;
  return {
    server: `https://${hostPart}:${port}`,
    ca: { file: `${SERVICE_ACCOUNT_DIR}/ca.crt` },
    token: { file: `${SERVICE_ACCOUNT_DIR}/token` },
    namespace,
  };
}
