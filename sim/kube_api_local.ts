/**
 * The test API server for real clients from the shell: HTTPS on loopback
 * with a CA and a server certificate made for the run, a bearer token, and a
 * kubeconfig that kubectl and @kubernetes/client-node read as they are.
 * `deno task sim api` runs one until Ctrl-C; tests start one in process.
 * Optionally it also listens on a Unix socket, which a relay inside a
 * simulator namespace forwards to (sim/kube_sim.ts), so agents in node
 * namespaces and kubectl in the shell see one and the same API server.
 */
import $ from "dax";
import { join } from "node:path";
import { stringify } from "yaml";
import { startTestApiServer, type TestApiServer, type TestApiServerOptions } from "./kube_api.ts";

export interface LocalApi {
  readonly server: TestApiServer;
  readonly kubeconfigPath: string;
  readonly dir: string;
  readonly token: string;
  /** The CA that signed the server's certificate (PEM). */
  readonly ca: string;
  stop(): Promise<void>;
}

/**
 * A CA and a server certificate for the given subjectAltNames
 * ("IP:127.0.0.1,IP:192.0.2.5"): webpki refuses a self-signed leaf as its own CA.
 */
export async function makeCertificates(dir: string, san: string) {
  await Deno.mkdir(dir, { recursive: true });
  const at = (f: string) => join(dir, f);
  await $`openssl req -x509 -newkey rsa:2048 -nodes -keyout ${at("ca.key")} -out ${
    at("ca.crt")
  } -days 2 -subj /CN=kube-egress-test-ca`
    .quiet();
  await $`openssl req -newkey rsa:2048 -nodes -keyout ${at("server.key")} -out ${
    at("server.csr")
  } -subj /CN=kube-apiserver`
    .quiet();
  await Deno.writeTextFile(at("ext.cnf"), `subjectAltName=${san}\nbasicConstraints=CA:FALSE\n`);
  await $`openssl x509 -req -in ${at("server.csr")} -CA ${at("ca.crt")} -CAkey ${
    at("ca.key")
  } -CAcreateserial -out ${at("server.crt")} -days 2 -extfile ${at("ext.cnf")}`.quiet();
  return {
    ca: await Deno.readTextFile(at("ca.crt")),
    cert: await Deno.readTextFile(at("server.crt")),
    key: await Deno.readTextFile(at("server.key")),
  };
}

/** A kubeconfig (YAML) for a server URL, a CA and a token. */
export function kubeconfigYaml(
  url: string,
  ca: string,
  token: string,
  namespace = "default",
): string {
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    "current-context": "kube-egress-test",
    clusters: [{
      name: "kube-egress-test",
      cluster: { server: url, "certificate-authority-data": btoa(ca) },
    }],
    users: [{ name: "kube-egress-test", user: { token } }],
    contexts: [{
      name: "kube-egress-test",
      context: { cluster: "kube-egress-test", user: "kube-egress-test", namespace },
    }],
  });
}

/**
 * Starts the server on 127.0.0.1 (any free port unless given) over HTTPS and
 * writes `<dir>/kubeconfig`. Extra SANs let relays reach it by other addresses.
 */
export async function startLocalApi(
  options: Omit<TestApiServerOptions, "tls" | "token" | "hostname"> & {
    dir?: string;
    extraSans?: string[];
  } = {},
): Promise<LocalApi> {
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "kube-egress-api-" });
  const sans = ["IP:127.0.0.1", "DNS:localhost", ...(options.extraSans ?? [])].join(",");
  const tls = await makeCertificates(join(dir, "tls"), sans);
  const token = crypto.randomUUID();
  const server = await startTestApiServer({
    ...options,
    hostname: "127.0.0.1",
    tls: { cert: tls.cert, key: tls.key },
    token,
  });
  const kubeconfigPath = join(dir, "kubeconfig");
  await Deno.writeTextFile(kubeconfigPath, kubeconfigYaml(server.url, tls.ca, token), {
    mode: 0o600,
  });
  return {
    server,
    kubeconfigPath,
    dir,
    token,
    ca: tls.ca,
    async stop() {
      await server.stop();
      if (!options.dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** `deno task sim api`: serve until Ctrl-C; print exactly `export KUBECONFIG=<path>`. */
export async function apiCommand(
  options: { port?: number; bookmarkMs?: number } = {},
): Promise<number> {
  // A fresh cluster: `kubectl apply -k deploy/` installs the CRDs.
  const api = await startLocalApi({
    port: options.port ?? 0,
    bookmarkMs: options.bookmarkMs,
    installCrds: false,
  });
  console.log(`export KUBECONFIG=${api.kubeconfigPath}`);
  console.error(
    `test API server on ${api.server.url} (Ctrl-C stops it and removes ${api.dir}); ` +
      "try: kubectl apply -k deploy/ && kubectl apply -f deploy/examples/ && kubectl get evip,epol -A",
  );
  const stopped = Promise.withResolvers<void>();
  const onSignal = () => stopped.resolve();
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  await stopped.promise;
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  await api.stop();
  return 0;
}
