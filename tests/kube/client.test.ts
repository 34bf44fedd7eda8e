/**
 * cmd/kube/client.ts and credentials.ts as client-go behaves on a real
 * cluster: a timeout on every request, 429 with Retry-After, kubeconfig exec
 * plugins, merged $KUBECONFIG lists, tls-server-name, a CA that rotates, and
 * the in-cluster service account with a token file rotated while running.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { stringify } from "yaml";
import { KubeClient, TimeoutError } from "../../cmd/kube/client.ts";
import { NAMESPACES, PODS } from "../../core/kube/resources.ts";
import { startTestApiServer } from "../../sim/kube_api.ts";
import { certificates, Relay } from "./net.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** Fails (instead of hanging) when `promise` takes longer than `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms} ms`)), ms);
    }),
  ]);
}

Deno.test({
  name: "client: a black-holed connection fails the request at its timeout instead of hanging",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    const relay = Relay.start(api.url);
    const client = await KubeClient.connect({ server: relay.url }, { requestTimeoutMs: 300 });
    try {
      await client.list(NAMESPACES);
      relay.blackhole(true);
      const started = Date.now();
      await assert.rejects(within(client.list(NAMESPACES), 5000, "the list"), TimeoutError);
      assert.ok(Date.now() - started < 2000, `failed after ${Date.now() - started} ms`);
      // The server's own black hole (no answer at all) too.
      relay.blackhole(false);
      api.faults.blackhole(true);
      const direct = await KubeClient.connect({ server: api.url }, { requestTimeoutMs: 300 });
      await assert.rejects(within(direct.list(NAMESPACES), 5000, "the list"), TimeoutError);
      direct.close();
      api.faults.blackhole(false);
    } finally {
      client.close();
      relay.close();
      await api.stop();
    }
  },
});

Deno.test({
  name: "client: 429 Too Many Requests is retried after its Retry-After",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    const client = await KubeClient.connect({ server: api.url });
    try {
      api.faults.throttle(2, 1);
      const started = Date.now();
      const { items } = await within(client.list(PODS), 10_000, "the throttled list");
      assert.deepEqual(items, []);
      assert.ok(Date.now() - started >= 1900, "waited as the server asked");
    } finally {
      client.close();
      await api.stop();
    }
  },
});

/** A kubeconfig user with an exec plugin: a script that prints an ExecCredential. */
async function execPlugin(dir: string, token: string, expiresInS: number) {
  const script = join(dir, "credential-plugin.sh");
  await Deno.writeTextFile(
    script,
    `#!/bin/sh
# Counts its runs and checks what kubectl would give it.
echo run >> "${dir}/runs"
printf '%s' "$KUBERNETES_EXEC_INFO" > "${dir}/exec-info.json"
[ "$1" = "--cluster" ] || exit 3
expires=$(date -u -d "+${expiresInS} seconds" +%Y-%m-%dT%H:%M:%SZ)
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"%s"}}' "${token}" "$expires"
`,
  );
  await Deno.chmod(script, 0o755);
  return {
    script,
    runs: async () => (await Deno.readTextFile(join(dir, "runs"))).trim().split("\n").length,
  };
}

Deno.test({
  name:
    "kubeconfig: an exec credential plugin (client.authentication.k8s.io/v1) is run, its token used, run again before it expires",
  ...opts,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const api = await startTestApiServer({ token: "from-the-plugin" });
    try {
      const plugin = await execPlugin(dir, "from-the-plugin", 11);
      const kubeconfig = join(dir, "config");
      await Deno.writeTextFile(
        kubeconfig,
        stringify({
          apiVersion: "v1",
          kind: "Config",
          "current-context": "eks",
          clusters: [{ name: "eks", cluster: { server: api.url } }],
          contexts: [{ name: "eks", context: { cluster: "eks", user: "aws" } }],
          users: [{
            name: "aws",
            user: {
              exec: {
                apiVersion: "client.authentication.k8s.io/v1",
                // Relative with a separator: relative to the kubeconfig, as kubectl.
                command: "./credential-plugin.sh",
                args: ["--cluster", "eks"],
                env: [{ name: "AWS_PROFILE", value: "test" }],
                interactiveMode: "Never",
                provideClusterInfo: true,
              },
            },
          }],
        }),
      );
      const client = await KubeClient.fromEnvironment({ kubeconfig, env: {} });
      try {
        await client.list(NAMESPACES);
        await client.list(NAMESPACES);
        assert.equal(await plugin.runs(), 1, "the credential is cached until it nears expiry");
        const info = JSON.parse(await Deno.readTextFile(join(dir, "exec-info.json")));
        assert.equal(info.kind, "ExecCredential");
        assert.equal(info.spec.interactive, false);
        assert.equal(info.spec.cluster.server, api.url);
        await new Promise((r) => setTimeout(r, 1500)); // 11 s expiry, refreshed 10 s early
        await client.list(NAMESPACES);
        assert.equal(await plugin.runs(), 2, "run again before the credential expires");
      } finally {
        client.close();
      }
    } finally {
      await api.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "kubeconfig: a $KUBECONFIG list is merged as kubectl merges it (first current-context, first definition of each name)",
  ...opts,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const api = await startTestApiServer({ token: "t0ken" });
    try {
      await Deno.mkdir(join(dir, "a"));
      await Deno.mkdir(join(dir, "b"));
      await Deno.writeTextFile(join(dir, "b", "token"), "t0ken\n");
      // a: the context; b: the cluster and the user (with a token file relative to b).
      await Deno.writeTextFile(
        join(dir, "a", "config"),
        stringify({
          "current-context": "prod",
          contexts: [{
            name: "prod",
            context: { cluster: "prod", user: "admin", namespace: "egress" },
          }],
        }),
      );
      await Deno.writeTextFile(
        join(dir, "b", "config"),
        stringify({
          "current-context": "other",
          clusters: [{ name: "prod", cluster: { server: api.url } }],
          users: [{ name: "admin", user: { tokenFile: "token" } }],
          contexts: [{ name: "prod", context: { cluster: "nope" } }],
        }),
      );
      const client = await KubeClient.fromEnvironment({
        env: {
          KUBECONFIG: `${join(dir, "missing")}:${join(dir, "a", "config")}:${
            join(dir, "b", "config")
          }`,
        },
      });
      try {
        assert.equal(client.namespace, "egress");
        assert.deepEqual((await client.list(NAMESPACES)).items, []);
      } finally {
        client.close();
      }
    } finally {
      await api.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "kubeconfig: tls-server-name is the name the certificate is verified against; a rotated CA file is read again",
  ...opts,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const first = await certificates(dir, "DNS:kube-api.internal", "ca1");
    const second = await certificates(dir, "DNS:kube-api.internal", "ca2");
    let api = await startTestApiServer({ tls: { cert: first.cert, key: first.key } });
    const port = new URL(api.url).port;
    try {
      const caFile = join(dir, "ca.crt");
      await Deno.writeTextFile(caFile, first.ca);
      const kubeconfig = join(dir, "config");
      await Deno.writeTextFile(
        kubeconfig,
        stringify({
          "current-context": "c",
          clusters: [{
            name: "c",
            // The certificate names kube-api.internal, not 127.0.0.1.
            cluster: {
              server: `https://127.0.0.1:${port}`,
              "certificate-authority": "ca.crt",
              "tls-server-name": "kube-api.internal",
            },
          }],
          contexts: [{ name: "c", context: { cluster: "c" } }],
        }),
      );
      const client = await KubeClient.fromEnvironment({ kubeconfig, env: {}, reloadMs: 200 });
      try {
        await client.list(NAMESPACES);
        // The server gets a certificate from a new CA; the CA file follows.
        await api.stop();
        api = await startTestApiServer({
          port: Number(port),
          tls: { cert: second.cert, key: second.key },
        });
        await assert.rejects(client.list(NAMESPACES));
        await Deno.writeTextFile(caFile, second.ca);
        await new Promise((r) => setTimeout(r, 300));
        await client.list(NAMESPACES);
      } finally {
        client.close();
      }
    } finally {
      await api.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "in-cluster: service account token, ca.crt and namespace files; a token rotated while running is read again on 401",
  ...opts,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const tls = await certificates(dir, "IP:127.0.0.1");
    let accepted = "token-1";
    const api = await startTestApiServer({
      tls: { cert: tls.cert, key: tls.key },
      tokens: () => [accepted],
    });
    try {
      const sa = join(dir, "serviceaccount");
      await Deno.mkdir(sa);
      await Deno.writeTextFile(join(sa, "token"), "token-1");
      await Deno.writeTextFile(join(sa, "ca.crt"), tls.ca);
      await Deno.writeTextFile(join(sa, "namespace"), "kube-egress\n");
      const client = await KubeClient.fromEnvironment({
        serviceAccountDir: sa,
        env: {
          KUBERNETES_SERVICE_HOST: "127.0.0.1",
          KUBERNETES_SERVICE_PORT: new URL(api.url).port,
        },
      });
      try {
        assert.equal(client.namespace, "kube-egress");
        await client.list(NAMESPACES);
        // kubelet rotates the projected token; the old one stops working at once.
        await Deno.writeTextFile(join(sa, "token"), "token-2");
        accepted = "token-2";
        await client.list(NAMESPACES);
      } finally {
        client.close();
      }
    } finally {
      await api.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
