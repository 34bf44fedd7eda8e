/**
 * The sending half of sim/stream.ts, run inside a pod's namespace: one UDP
 * socket (one long-lived flow: same source port throughout) sends
 * "<tag> u <seq>" every `udpMs`, and a new TCP connection carrying
 * "<tag> t <seq>" is opened every `tcpMs`, until SIGTERM or `maxMs`. Prints
 * {"ready":true} once sending, and a JSON summary of what it sent at the end.
 *
 * Usage: deno run --allow-net sim/stream_sender.ts <target> <tcpPort> <udpPort> <tag> <udpMs> <tcpMs> <maxMs>
 */
import dgram from "node:dgram";

const [target, tcpPort, udpPort, tag, udpMs, tcpMs, maxMs] = Deno.args;
/** TCP connections still trying (SYN retransmits) are bounded so a long outage cannot pile up sockets. */
const MAX_PENDING_TCP = 100;
const TCP_GIVE_UP_MS = 3000;
const encoder = new TextEncoder();

const sent = { udp: 0, tcp: 0, tcpConnected: 0, tcpFailed: 0, tcpSkipped: 0 };
const v6 = target.includes(":");
const udp = dgram.createSocket(v6 ? "udp6" : "udp4");
udp.on("message", () => {}); // the reporter answers; the answers are not needed here
udp.on("error", () => {});
await new Promise<void>((resolve) => udp.bind(0, v6 ? "::" : "0.0.0.0", resolve));

let pending = 0;
async function connectOnce(seq: number) {
  if (pending >= MAX_PENDING_TCP) {
    sent.tcpSkipped++;
    return;
  }
  pending++;
  sent.tcp++;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const conn = await Promise.race([
      Deno.connect({ hostname: target, port: Number(tcpPort) }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("timeout")), TCP_GIVE_UP_MS);
      }),
    ]);
    sent.tcpConnected++;
    await conn.write(encoder.encode(`${tag} t ${seq}\n`)).catch(() => {});
    await conn.read(new Uint8Array(64)).catch(() => null);
    conn.close();
  } catch {
    sent.tcpFailed++;
  } finally {
    clearTimeout(timer);
    pending--;
  }
}

/** Calls `fn(seq)` every `period` ms on a fixed schedule (no drift), until stopped. */
function every(period: number, fn: (seq: number) => void): () => void {
  const start = performance.now();
  let seq = 0;
  let timer: ReturnType<typeof setTimeout>;
  const tick = () => {
    fn(seq++);
    timer = setTimeout(tick, Math.max(0, start + seq * period - performance.now()));
  };
  tick();
  return () => clearTimeout(timer);
}

const stops = [
  every(Number(udpMs), (seq) => {
    sent.udp++;
    udp.send(`${tag} u ${seq}\n`, Number(udpPort), target);
  }),
  every(Number(tcpMs), (seq) => void connectOnce(seq)),
];
console.log(JSON.stringify({ ready: true }));

await new Promise<void>((resolve) => {
  Deno.addSignalListener("SIGTERM", () => resolve());
  setTimeout(resolve, Number(maxMs));
});
for (const stop of stops) stop();
console.log(JSON.stringify(sent));
udp.close();
Deno.exit(0);
