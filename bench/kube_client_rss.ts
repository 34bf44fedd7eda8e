/**
 * Why kube-egress has its own small Kubernetes client: memory of a process
 * that lists and watches N pods (default 10,000, from the test API server in a
 * subprocess on 127.0.0.1), with our KubeSource (all six collections) and with
 * @kubernetes/client-node's informer (pods only).
 *
 *   deno run -A bench/kube_client_rss.ts [pods]
 *
 * client-node is imported by a computed specifier, so it is downloaded only
 * when this comparison runs and never enters the product's dependencies.
 */
import { KubeClient } from "../cmd/kube/client.ts";
import { KubeSource } from "../cmd/kube/source.ts";
import { createLogger } from "../cmd/log.ts";

const CLIENT_NODE = ["npm:@kubernetes", "client-node@1.4.0"].join("/");
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
const peakMiB = () =>
  (Number(/VmHWM:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]) / 1024).toFixed(0);

/** Child mode: measure one client against `url`, print one JSON line. */
async function measure(kind: string, url: string) {
  await import("../mod.ts"); // the agent's code is loaded either way
  const loaded = mib(Deno.memoryUsage().rss);
  const started = performance.now();
  let items = 0;
  if (kind === "ours") {
    const client = await KubeClient.connect({ server: url });
    const source = new KubeSource(client, createLogger("text", () => {})).start();
    await source.waitForSync(120_000);
    items = source.pods.store.size;
  } else {
    // deno-lint-ignore no-explicit-any
    const k8s: any = await import(CLIENT_NODE);
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      // client-node refuses plain HTTP unless TLS verification is "skipped".
      clusters: [{ name: "t", server: url, skipTLSVerify: true }],
      users: [{ name: "u" }],
      contexts: [{ name: "c", cluster: "t", user: "u" }],
      currentContext: "c",
    });
    const api = kc.makeApiClient(k8s.CoreV1Api);
    const informer = k8s.makeInformer(kc, "/api/v1/pods", () => api.listPodForAllNamespaces());
    informer.on("error", (e: unknown) => console.error("informer error", e));
    await informer.start();
    // The informer's start resolves before its list is in the cache: wait for it (bounded).
    for (let i = 0; i < 1200 && informer.list().length < Number(Deno.args[3]); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    items = informer.list().length;
  }
  const syncMs = performance.now() - started;
  await new Promise((r) => setTimeout(r, 1000));
  const m = Deno.memoryUsage();
  console.log(JSON.stringify({
    kind,
    items,
    syncMs: Math.round(syncMs),
    loadedMiB: loaded,
    rssMiB: mib(m.rss),
    heapMiB: mib(m.heapUsed),
    peakMiB: peakMiB(),
  }));
  Deno.exit(0);
}

async function main(pods: number) {
  const server = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../sim/kube_api.ts", import.meta.url).pathname,
      "--listen",
      "127.0.0.1:0",
      "--pods",
      String(pods),
    ],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const first = (await reader.read()).value ?? "";
  const url = JSON.parse(first.split("\n")[0]).ready as string;
  try {
    console.log(
      `| client | pods listed | time to sync (ms) | RSS after loading code (MiB) | RSS synced (MiB) | JS heap (MiB) | peak RSS (MiB) |`,
    );
    console.log(`| --- | --- | --- | --- | --- | --- | --- |`);
    for (const kind of ["ours", "client-node"]) {
      const out = await new Deno.Command(Deno.execPath(), {
        // --no-lock: client-node must not enter deno.lock.
        args: [
          "run",
          "-A",
          "--no-lock",
          import.meta.filename!,
          "--measure",
          kind,
          url,
          String(pods),
        ],
        stderr: "null",
      }).output();
      const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "{}";
      const r = JSON.parse(line);
      const label = kind === "ours"
        ? "kube-egress KubeSource (6 collections)"
        : "@kubernetes/client-node informer (pods)";
      console.log(
        `| ${label} | ${r.items} | ${r.syncMs} | ${r.loadedMiB} | ${r.rssMiB} | ${r.heapMiB} | ${r.peakMiB} |`,
      );
    }
  } finally {
    server.kill("SIGTERM");
    await server.status;
  }
}

if (import.meta.main) {
  if (Deno.args[0] === "--measure") await measure(Deno.args[1], Deno.args[2]);
  else await main(Number(Deno.args[0] ?? 10_000));
}
