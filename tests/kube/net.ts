/**
 * Network helpers for the Kubernetes client tests: a TCP relay to the test
 * API server that can black-hole one client's connections (no FIN, no data,
 * as a dead load balancer or lost NAT state does) while others go on, and
 * certificates made with openssl for TLS tests.
 */
import { join } from "node:path";
import { makeCertificates } from "../../sim/kube_api_local.ts";

/** A loopback TCP relay; `blackhole(true)` stops forwarding without closing anything. */
export class Relay {
  #holed = false;
  readonly #conns = new Set<Deno.Conn>();
  private constructor(readonly listener: Deno.Listener, readonly target: Deno.NetAddr) {}

  static start(target: string): Relay {
    const url = new URL(target);
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const relay = new Relay(listener, {
      transport: "tcp",
      hostname: url.hostname,
      port: Number(url.port),
    });
    void relay.#accept();
    return relay;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.listener.addr as Deno.NetAddr).port}`;
  }

  blackhole(on: boolean) {
    this.#holed = on;
  }

  async #accept() {
    for await (const conn of this.listener) {
      this.#conns.add(conn);
      void (async () => {
        let upstream: Deno.Conn | undefined;
        try {
          upstream = await Deno.connect({ hostname: this.target.hostname, port: this.target.port });
          this.#conns.add(upstream);
          await Promise.all([this.#pipe(conn, upstream), this.#pipe(upstream, conn)]);
        } catch {
          // A side closed.
        } finally {
          for (const c of [conn, upstream]) {
            if (c && this.#conns.delete(c)) {
              try {
                c.close();
              } catch {
                // Closed already.
              }
            }
          }
        }
      })();
    }
  }

  async #pipe(from: Deno.Conn, to: Deno.Conn) {
    const buffer = new Uint8Array(64 * 1024);
    for (;;) {
      const n = await from.read(buffer);
      if (n === null) return;
      // Black-holed: the bytes are swallowed; nothing is closed.
      if (this.#holed) continue;
      let written = 0;
      while (written < n) written += await to.write(buffer.subarray(written, n));
    }
  }

  close() {
    this.listener.close();
    for (const c of this.#conns) {
      try {
        c.close();
      } catch {
        // Closed already.
      }
    }
    this.#conns.clear();
  }
}

/** A CA and a server certificate for `san` (e.g. "DNS:kube-api.test"), in `dir`/`name`. */
export async function certificates(dir: string, san: string, name = "ca") {
  return await makeCertificates(join(dir, name), san);
}
