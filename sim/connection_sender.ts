/**
 * The pod's half of sim/connections.ts: `count` long-lived TCP connections
 * to an echo server, each writing 8 bytes every `intervalMs` and reading the
 * echoes, until SIGTERM or `maxMs`. Then it waits (bounded) for the echoes
 * still due and prints one JSON line per connection: bytes sent and echoed,
 * the longest silence between two echoes, and the error that ended it, if any
 * (a reset is "reset").
 *
 * Usage: deno run --allow-net sim/connection_sender.ts <target> <port> <count> <intervalMs> <maxMs>
 */
const [target, port, count, intervalMs, maxMs] = Deno.args;
const DRAIN_MS = 3000;

interface Result {
  localPort: number;
  sent: number;
  echoed: number;
  maxStallMs: number;
  error?: string;
}

function describe(error: unknown): string {
  const text = String(error);
  return /reset|ECONNRESET|Broken pipe|EPIPE/i.test(text) ? "reset" : text;
}

const conns = await Promise.all(
  Array.from(
    { length: Number(count) },
    () => Deno.connect({ hostname: target, port: Number(port) }),
  ),
);
let sending = true;
const done = new Promise<void>((resolve) => {
  Deno.addSignalListener("SIGTERM", () => resolve());
  setTimeout(resolve, Number(maxMs));
});
const runs = conns.map(async (conn): Promise<Result> => {
  const result: Result = {
    localPort: (conn.localAddr as Deno.NetAddr).port,
    sent: 0,
    echoed: 0,
    maxStallMs: 0,
  };
  let last = performance.now();
  let closing = false;
  const reading = (async () => {
    const buffer = new Uint8Array(4096);
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) {
          if (result.echoed < result.sent) result.error ??= "closed by the server";
          return;
        }
        const now = performance.now();
        if (sending) result.maxStallMs = Math.max(result.maxStallMs, now - last);
        last = now;
        result.echoed += n;
        if (!sending && result.echoed >= result.sent) return;
      }
    } catch (error) {
      if (!closing) result.error ??= describe(error);
    }
  })();
  const payload = new Uint8Array(8);
  while (sending && result.error === undefined) {
    try {
      await conn.write(payload);
      result.sent += payload.length;
    } catch (error) {
      result.error ??= describe(error);
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, Number(intervalMs)));
  }
  // The echoes still due: bounded, a connection that lost them did not survive.
  const drainUntil = performance.now() + DRAIN_MS;
  while (
    result.error === undefined && result.echoed < result.sent && performance.now() < drainUntil
  ) await new Promise((resolve) => setTimeout(resolve, 20));
  void reading;
  result.maxStallMs = Math.round(result.maxStallMs);
  closing = true;
  try {
    conn.close();
  } catch {
    // Closed already.
  }
  return result;
});
console.log(JSON.stringify({ ready: true }));
await done;
sending = false;
for (const result of await Promise.all(runs)) console.log(JSON.stringify(result));
Deno.exit(0);
