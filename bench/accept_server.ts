/**
 * The far end of the connection-rate benchmark: accepts TCP connections and
 * closes each once the client has closed it (the client closes first, so no
 * TIME_WAIT piles up here to collide with later connections on the same
 * translated ports). Prints "ready" once listening.
 *
 * Usage (inside a namespace): deno run --allow-net bench/accept_server.ts <port>
 */
const listener = Deno.listen({ port: Number(Deno.args[0] ?? 7100), hostname: "0.0.0.0" });
console.log("ready");
for await (const conn of listener) {
  (async () => {
    const buffer = new Uint8Array(64);
    while ((await conn.read(buffer)) !== null);
  })().catch(() => {}).finally(() => conn.close());
}
