/**
 * The outside host's witness: answers every TCP connection and UDP datagram
 * with the source address it saw, and logs each one as a JSON line
 * ({"t": ms since epoch, "proto": "tcp"|"udp", "src": "a.b.c.d", "port": <source port>,
 * "data": "..."}) on stdout, so the simulator can both ask and watch. The source
 * port tells NAT bindings apart: a flow SNATed by another holder shows another port.
 *
 * With "dual" it also listens on :: (the namespace has net.ipv6.bindv6only=1,
 * so IPv4 sources stay a.b.c.d) and answers IPv6 peers the same way.
 *
 * Usage (inside a namespace): deno run --allow-net sim/reporter.ts <tcpPort> <udpPort> [dual]
 */
import dgram from "node:dgram";

const [tcpPort = "7000", udpPort = "7001", family] = Deno.args;
const dual = family === "dual";
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function record(proto: string, src: string, port: number, data: string) {
  console.log(JSON.stringify({ t: Date.now(), proto, src, port, data: data.trim().slice(0, 64) }));
}

function udpWitness(type: "udp4" | "udp6", address: string) {
  const udp = dgram.createSocket({ type, ipv6Only: type === "udp6" });
  udp.on("message", (message, peer) => {
    record("udp", peer.address, peer.port, message.toString());
    udp.send(`${peer.address}\n`, peer.port, peer.address);
  });
  // A reply that cannot be sent (a rogue on the LAN answering for the VIP) must not end the witness.
  udp.on("error", () => {});
  udp.bind(Number(udpPort), address);
}
udpWitness("udp4", "0.0.0.0");
if (dual) udpWitness("udp6", "::");

const listeners = [
  Deno.listen({ port: Number(tcpPort), hostname: "0.0.0.0" }),
  ...(dual ? [Deno.listen({ port: Number(tcpPort), hostname: "::" })] : []),
];
console.log(
  JSON.stringify({ t: Date.now(), proto: "ready", src: "", data: `${tcpPort}/${udpPort}` }),
);
/** Accepts for ever: a connection reset before it is accepted (ECONNABORTED) is skipped. */
async function* connections(listener: Deno.Listener): AsyncGenerator<Deno.Conn> {
  while (true) {
    try {
      yield await listener.accept();
    } catch (error) {
      if (error instanceof Deno.errors.BadResource) return;
    }
  }
}

async function serve(listener: Deno.Listener) {
  for await (const conn of connections(listener)) answer(conn);
}

function answer(conn: Deno.Conn) {
  (async () => {
    const { hostname: src, port } = conn.remoteAddr as Deno.NetAddr;
    const buffer = new Uint8Array(64);
    // Read what the client says first (a tag), with a short limit, then answer.
    const read = await Promise.race([
      conn.read(buffer),
      new Promise<null>((r) => setTimeout(() => r(null), 200)),
    ]);
    record("tcp", src, port, read ? decoder.decode(buffer.subarray(0, read)) : "");
    await conn.write(encoder.encode(`${src}\n`)).catch(() => {});
    conn.close();
  })().catch(() => {});
}

await Promise.all(listeners.map(serve));
