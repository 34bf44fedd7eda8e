/**
 * denoland/deno#21749 (open): over HTTP/2 with a reused connection, a fetch
 * body read can stall for good after a fair amount of data. Measured here on
 * our Deno against the test API server over TLS: full paginated lists of N
 * pods (500 per page, as the agents list) in rounds, with six watches open on
 * the same client (as an agent has), once with HTTP/2 allowed (Deno's default,
 * negotiated by ALPN) and once with HTTP/1.1 only (what the agent uses). A
 * body read that takes longer than 10 s counts as a stall (aborted, retried).
 *
 *   deno run -A bench/h2_stall.ts [rounds=20] [pods=10000]
 */
import { startLocalApi } from "../sim/kube_api_local.ts";

const rounds = Number(Deno.args[0] ?? 20);
const pods = Number(Deno.args[1] ?? 10_000);
const STALL_MS = 10_000;

const api = await startLocalApi({ pods, bookmarkMs: 1000 });
const base = api.server.url;
const auth = { authorization: `Bearer ${api.token}` };

async function run(label: string, http2: boolean) {
  const client = Deno.createHttpClient({ caCerts: [api.ca], http2, http1: true });
  const watches = new AbortController();
  for (const path of ["pods", "namespaces", "nodes", "events", "configmaps", "serviceaccounts"]) {
    void fetch(`${base}/api/v1/${path}?watch=true&allowWatchBookmarks=true&timeoutSeconds=600`, {
      client,
      headers: auth,
      signal: watches.signal,
    }).then(async (r) => {
      for await (const _ of r.body!) { /* keep reading */ }
    }).catch(() => {});
  }
  const times: number[] = [];
  let stalls = 0;
  let bytes = 0;
  const started = performance.now();
  for (let round = 0; round < rounds; round++) {
    let next: string | undefined;
    do {
      const url = new URL(`${base}/api/v1/pods`);
      url.searchParams.set("limit", "500");
      if (next) url.searchParams.set("continue", next);
      const t0 = performance.now();
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), STALL_MS);
      try {
        const response = await fetch(url, { client, headers: auth, signal: abort.signal });
        const text = await response.text();
        bytes += text.length;
        next = JSON.parse(text).metadata?.continue || undefined;
        times.push(performance.now() - t0);
      } catch {
        stalls++; // the page is asked for again
      } finally {
        clearTimeout(timer);
      }
    } while (next);
  }
  watches.abort();
  client.close();
  times.sort((a, b) => a - b);
  const q = (p: number) =>
    times[Math.min(times.length - 1, Math.floor(p * times.length))]?.toFixed(1);
  return {
    label,
    pages: times.length,
    stalls,
    mib: (bytes / 2 ** 20).toFixed(0),
    median: q(0.5),
    p99: q(0.99),
    seconds: ((performance.now() - started) / 1000).toFixed(1),
  };
}

const results = [await run("HTTP/2 (ALPN, pooled)", true), await run("HTTP/1.1 only", false)];
console.log(
  `Deno ${Deno.version.deno}; ${pods} pods, ${rounds} full lists of 500-item pages, 6 watches open`,
);
console.log(
  "| transport | pages | stalls (>10 s) | MiB read | page median ms | page p99 ms | total s |",
);
console.log("| --- | --- | --- | --- | --- | --- | --- |");
for (const r of results) {
  console.log(
    `| ${r.label} | ${r.pages} | ${r.stalls} | ${r.mib} | ${r.median} | ${r.p99} | ${r.seconds} |`,
  );
}
await api.stop();
