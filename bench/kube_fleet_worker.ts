/**
 * A simulated fleet of agents for `bench kube`: `--watchers` watch
 * connections of one design in one process, each counting the bytes the API
 * server sends it and when an awaited address first reaches it, the way an
 * agent's watch would. Driven over stdin/stdout (JSON lines):
 * - `{"op":"await","marker":"10.244.1.2"}`: from now, note when each watcher first sees it;
 * - `{"op":"seen"}`: how many saw it and the arrival times (ms since the epoch);
 * - `{"op":"bytes"}`: bytes received by all watches so far;
 * - `{"op":"sync","sample":n,"concurrency":c}`: n full lists of what an agent of
 *   the design lists at start (as after a rollout), c at a time: bytes and ms.
 */
import { jsonCommands } from "../sim/json_commands.ts";

const args = Deno.args;
const flag = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const server = flag("--server")!;
const token = flag("--token")!;
const watchers = Number(flag("--watchers") ?? 500);
const design = flag("--design") ?? "slices";
const client = Deno.createHttpClient({
  caCerts: [await Deno.readTextFile(flag("--ca")!)],
  http2: false,
});
const headers = { authorization: `Bearer ${token}`, accept: "application/json" };

const GROUP = "/apis/egress.kube-egress.io/v1alpha1";
/** What an agent of each design watches (the collections that carry pod changes first). */
const WATCHED = design === "watch-all"
  ? ["/api/v1/pods", `${GROUP}/egressvips`]
  : [`${GROUP}/egressslices`, `${GROUP}/egressvips`];
/** What it lists at start. */
const LISTED = design === "watch-all"
  ? [
    "/api/v1/pods",
    "/api/v1/namespaces",
    "/api/v1/nodes",
    "/apis/apps/v1/replicasets",
    `${GROUP}/egressvips`,
    `${GROUP}/egresspolicies`,
  ]
  : [`${GROUP}/egressslices`, `${GROUP}/egressvips`, "/api/v1/nodes"];

let bytes = 0;
let marker: string | undefined;
const seen = new Map<number, number>();

async function versionOf(path: string): Promise<string> {
  const r = await fetch(`${server}${path}?limit=1`, { headers, client });
  const body = await r.json() as { metadata?: { resourceVersion?: string } };
  return body.metadata?.resourceVersion ?? "0";
}

async function watch(id: number, path: string, version: string) {
  const url = `${server}${path}?watch=true&allowWatchBookmarks=true&timeoutSeconds=3600` +
    `&resourceVersion=${version}`;
  const r = await fetch(url, { headers, client });
  const decoder = new TextDecoder();
  let tail = "";
  for await (const chunk of r.body!) {
    bytes += chunk.byteLength;
    // An agent parses the event; the marker is in it when the change concerns the address
    // (the end of the last chunk is kept: a marker may straddle two).
    const text = tail + decoder.decode(chunk, { stream: true });
    tail = text.slice(-32);
    if (marker === undefined || seen.has(id)) continue;
    if (text.includes(marker)) seen.set(id, Date.now());
  }
}

async function list(path: string): Promise<number> {
  let total = 0;
  let next: string | undefined;
  do {
    const url = `${server}${path}?limit=500&resourceVersion=${next ? "" : "0"}` +
      (next ? `&continue=${encodeURIComponent(next)}` : "");
    const r = await fetch(url, { headers, client });
    const text = await r.text();
    total += new TextEncoder().encode(text).byteLength;
    next = (JSON.parse(text) as { metadata?: { continue?: string } }).metadata?.continue ||
      undefined;
  } while (next);
  return total;
}

const versions = await Promise.all(WATCHED.map(versionOf));
for (let id = 0; id < watchers; id++) {
  WATCHED.forEach((path, k) => void watch(id, path, versions[k]).catch(() => {}));
}
// Every watch open (the server answers the headers at once).
await new Promise((r) => setTimeout(r, 1000 + watchers * 4));
const encoder = new TextEncoder();
await Deno.stdout.write(encoder.encode(JSON.stringify({ ready: true, watchers }) + "\n"));

for await (const command of jsonCommands(Deno.stdin.readable)) {
  let reply: Record<string, unknown> = {};
  if (command.op === "await") {
    marker = `"${command.marker}"`;
    seen.clear();
  } else if (command.op === "seen") {
    reply = { count: seen.size, times: [...seen.values()] };
  } else if (command.op === "bytes") {
    reply = { bytes };
  } else if (command.op === "sync") {
    const started = performance.now();
    let synced = 0;
    let next = 0;
    const worker = async () => {
      while (next < command.sample) {
        next++;
        for (const path of LISTED) synced += await list(path);
      }
    };
    await Promise.all(Array.from({ length: command.concurrency }, worker));
    reply = { bytes: synced, ms: performance.now() - started };
  }
  await Deno.stdout.write(encoder.encode(JSON.stringify({ id: command.id, ...reply }) + "\n"));
}
