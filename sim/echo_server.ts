/**
 * The outside host's echo server for long-lived connections (sim/connections.ts):
 * every byte read is written back. Prints {"ready":true}, then one line per
 * accepted connection with the peer address it came from (the source the
 * outside world sees).
 *
 * Usage: deno run --allow-net sim/echo_server.ts <address> <port>
 */
const [hostname, port] = Deno.args;
const listener = Deno.listen({ hostname, port: Number(port) });
console.log(JSON.stringify({ ready: true }));
for await (const conn of listener) {
  const peer = conn.remoteAddr as Deno.NetAddr;
  console.log(JSON.stringify({ accepted: peer.hostname, port: peer.port }));
  (async () => {
    const buffer = new Uint8Array(4096);
    try {
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) break;
        await conn.write(buffer.subarray(0, n));
      }
    } catch {
      // Reset by the peer: its side reports it.
    }
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  })();
}
