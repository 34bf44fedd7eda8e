/**
 * Where the API server is and how to authenticate: a kubeconfig's current
 * context (server, CA, tls-server-name, token, client certificate or an exec
 * credential plugin), merged from a $KUBECONFIG list as kubectl merges it, or
 * the in-cluster service account. Parsing is pure; cmd/kube/ reads the files
 * and runs the plugins.
 */
import { z } from "zod";
import { describeIssues } from "../schema.ts";

/** A credential plugin (client.authentication.k8s.io ExecCredential), as kubectl runs it. */
export interface ExecPlugin {
  readonly apiVersion: string;
  /** Absolute when the kubeconfig gave a relative path with a separator. */
  readonly command: string;
  readonly args: readonly string[];
  readonly env: readonly { readonly name: string; readonly value: string }[];
  readonly provideClusterInfo: boolean;
  readonly installHint?: string;
}

/** What the client needs; file references are resolved to absolute paths, data stays inline. */
export interface Connection {
  readonly server: string;
  /** PEM text of the CA bundle, or a path to it (re-read as it rotates). */
  readonly ca?: { readonly data?: string; readonly file?: string };
  /** The name the server's certificate must carry, when it is not the server URL's host. */
  readonly tlsServerName?: string;
  readonly token?: { readonly data?: string; readonly file?: string };
  readonly clientCert?: { readonly data?: string; readonly file?: string };
  readonly clientKey?: { readonly data?: string; readonly file?: string };
  readonly exec?: ExecPlugin;
  /** Namespace of the context (in-cluster: the pod's namespace). */
  readonly namespace?: string;
}

const Cluster = z.object({
  server: z.url(),
  "certificate-authority": z.string().optional(),
  "certificate-authority-data": z.string().optional(),
  "insecure-skip-tls-verify": z.boolean().optional(),
  "tls-server-name": z.string().optional(),
});
const Exec = z.object({
  apiVersion: z.enum(["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"], {
    error: "must be client.authentication.k8s.io/v1 or v1beta1",
  }),
  command: z.string().min(1),
  args: z.array(z.string()).nullish(),
  env: z.array(z.object({ name: z.string(), value: z.string() })).nullish(),
  provideClusterInfo: z.boolean().optional(),
  installHint: z.string().optional(),
  interactiveMode: z.enum(["Never", "IfAvailable", "Always"]).optional(),
});
const User = z.object({
  token: z.string().optional(),
  tokenFile: z.string().optional(),
  "client-certificate": z.string().optional(),
  "client-certificate-data": z.string().optional(),
  "client-key": z.string().optional(),
  "client-key-data": z.string().optional(),
  exec: Exec.optional(),
  "auth-provider": z.unknown().optional(),
});
const Context = z.object({
  cluster: z.string(),
  user: z.string().optional(),
  namespace: z.string().optional(),
});

const list = <T extends z.ZodType>(entry: T) => z.array(entry).nullish().transform((v) => v ?? []);

const KubeconfigSchema = z.object({
  "current-context": z.string().optional(),
  clusters: list(z.object({ name: z.string(), cluster: Cluster })),
  users: list(z.object({ name: z.string(), user: User.optional().default({}) })),
  contexts: list(z.object({ name: z.string(), context: Context })),
});
type Kubeconfig = z.output<typeof KubeconfigSchema>;

const b64 = (text: string) =>
  new TextDecoder().decode(Uint8Array.from(atob(text), (c) => c.charCodeAt(0)));

function absolute(path: string, dir: string): string {
  return path.startsWith("/") ? path : `${dir.replace(/\/$/, "")}/${path}`;
}

/** One kubeconfig file: its parsed data and its directory (for relative paths). */
export interface KubeconfigFile {
  readonly data: unknown;
  readonly dir: string;
  /** For messages. */
  readonly path?: string;
}

/**
 * Reads kubeconfig files as kubectl merges a $KUBECONFIG list: the first file
 * that sets current-context wins, and each cluster, user and context comes
 * from the first file that defines that name (relative paths resolved against
 * that file's directory). Throws an Error naming what is missing or unsupported.
 */
export function connectionFromKubeconfigs(
  files: readonly KubeconfigFile[],
  context?: string,
): Connection {
  const parsed = files.map((f) => {
    const result = KubeconfigSchema.safeParse(f.data ?? {});
    if (!result.success) {
      throw new Error(
        `invalid kubeconfig${f.path ? ` ${f.path}` : ""}: ${describeIssues(result.error)}`,
      );
    }
    return { config: result.data, dir: f.dir };
  });
  const name = context ??
    parsed.find((p) => p.config["current-context"])?.config["current-context"];
  if (!name) throw new Error("kubeconfig has no current-context (pass --context)");
  const first = <T extends { name: string }>(pick: (c: Kubeconfig) => T[], entry: string) => {
    for (const p of parsed) {
      const found = pick(p.config).find((e) => e.name === entry);
      if (found) return { entry: found, dir: p.dir };
    }
    return undefined;
  };
  const ctx = first((c) => c.contexts, name)?.entry.context;
  if (!ctx) throw new Error(`kubeconfig has no context ${name}`);
  const clusterEntry = first((c) => c.clusters, ctx.cluster);
  if (!clusterEntry) {
    throw new Error(`kubeconfig context ${name} names a missing cluster ${ctx.cluster}`);
  }
  const cluster = clusterEntry.entry.cluster;
  const userEntry = ctx.user ? first((c) => c.users, ctx.user) : undefined;
  const user = userEntry?.entry.user ?? {};
  const userDir = userEntry?.dir ?? clusterEntry.dir;
  if (user["auth-provider"]) {
    throw new Error(
      `kubeconfig user ${ctx.user} uses an auth-provider plugin (removed from kubectl in 1.26); ` +
        "use an exec plugin (client.authentication.k8s.io/v1), a token or a client certificate",
    );
  }
  if (cluster["insecure-skip-tls-verify"]) {
    throw new Error(
      "insecure-skip-tls-verify is not supported: give the cluster's certificate-authority",
    );
  }
  const ref = (dir: string, data?: string, file?: string, decode = true) =>
    data !== undefined
      ? { data: decode ? b64(data) : data }
      : file !== undefined
      ? { file: absolute(file, dir) }
      : undefined;
  const exec = user.exec;
  return {
    server: cluster.server.replace(/\/$/, ""),
    ca: ref(
      clusterEntry.dir,
      cluster["certificate-authority-data"],
      cluster["certificate-authority"],
    ),
    ...(cluster["tls-server-name"] ? { tlsServerName: cluster["tls-server-name"] } : {}),
    token: ref(userDir, user.token, user.tokenFile, false),
    clientCert: ref(userDir, user["client-certificate-data"], user["client-certificate"]),
    clientKey: ref(userDir, user["client-key-data"], user["client-key"]),
    ...(exec
      ? {
        exec: {
          apiVersion: exec.apiVersion,
          // kubectl: a relative command with a separator is relative to the kubeconfig.
          command: exec.command.includes("/") ? absolute(exec.command, userDir) : exec.command,
          args: exec.args ?? [],
          env: exec.env ?? [],
          provideClusterInfo: exec.provideClusterInfo === true,
          ...(exec.installHint ? { installHint: exec.installHint } : {}),
        },
      }
      : {}),
    namespace: ctx.namespace,
  };
}

/** One kubeconfig (see `connectionFromKubeconfigs`). */
export function connectionFromKubeconfig(data: unknown, dir: string, context?: string): Connection {
  return connectionFromKubeconfigs([{ data, dir }], context);
}

/** The files of a $KUBECONFIG value, in order, empty entries and duplicates dropped (as kubectl). */
export function kubeconfigPaths(value: string | undefined, home: string): string[] {
  const paths = (value ?? "").split(":").filter((p) => p !== "");
  return paths.length > 0 ? [...new Set(paths)] : [`${home}/.kube/config`];
}

/**
 * The ExecCredential a plugin prints: a token (and when it expires) or a
 * client certificate. Throws naming the problem.
 */
export function parseExecCredential(text: string, apiVersion: string): {
  token?: string;
  clientCertificateData?: string;
  clientKeyData?: string;
  expiresAt?: number;
} {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error("the exec plugin did not print an ExecCredential (not JSON)");
  }
  const parsed = z.object({
    apiVersion: z.literal(apiVersion, { error: `must be ${apiVersion}, as the kubeconfig asks` }),
    kind: z.literal("ExecCredential"),
    status: z.object({
      token: z.string().optional(),
      clientCertificateData: z.string().optional(),
      clientKeyData: z.string().optional(),
      expirationTimestamp: z.string().optional(),
    }),
  }).safeParse(data);
  if (!parsed.success) throw new Error(`invalid ExecCredential: ${describeIssues(parsed.error)}`);
  const status = parsed.data.status;
  if (!status.token && !(status.clientCertificateData && status.clientKeyData)) {
    throw new Error(
      "invalid ExecCredential: status has neither a token nor a client certificate and key",
    );
  }
  const expiresAt = status.expirationTimestamp ? Date.parse(status.expirationTimestamp) : undefined;
  return {
    ...(status.token ? { token: status.token } : {}),
    ...(status.clientCertificateData
      ? { clientCertificateData: status.clientCertificateData, clientKeyData: status.clientKeyData }
      : {}),
    ...(expiresAt !== undefined && !Number.isNaN(expiresAt) ? { expiresAt } : {}),
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
  dir = SERVICE_ACCOUNT_DIR,
): Connection | undefined {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) return undefined;
  const hostPart = host.includes(":") ? `[${host}]` : host;
  return {
    server: `https://${hostPart}:${port}`,
    ca: { file: `${dir}/ca.crt` },
    token: { file: `${dir}/token` },
    namespace,
  };
}
