/**
 * The near end of the connection-rate benchmark, run inside a pod: opens TCP
 * connections one after another for `seconds` (each one complete once the
 * handshake is, then closed by us) and prints
 * {"connections": n, "seconds": s, "failures": f}.
 * The pod's namespace should allow reusing TIME_WAIT ports (tcp_tw_reuse).
 *
 * Usage: deno run --allow-net bench/connect_worker.ts <host> <port> <seconds>
 */
const [host, port, seconds] = [Deno.args[0], Number(Deno.args[1]), Number(Deno.args[2] ?? 2)];
const started = performance.now();
const deadline = started + seconds * 1000;
let connections = 0;
let failures = 0;
while (performance.now() < deadline && failures < 100) {
  try {
    const conn = await Deno.connect({ hostname: host, port });
    conn.close();
    connections++;
  } catch {
    failures++;
  }
}
console.log(JSON.stringify({
  connections,
  seconds: (performance.now() - started) / 1000,
  failures,
}));
