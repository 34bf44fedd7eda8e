/**
 * kubeconfig's `tls-server-name`: TLS must verify the server's certificate
 * against a name that is not the host the client connects to (an API server
 * reached by IP, or through a load balancer, whose certificate names
 * `kubernetes.default`). Deno's fetch verifies the URL's host and has no
 * server-name option, so requests go to `https://<tls-server-name>:<port>`
 * through a local HTTP CONNECT tunnel on loopback that connects every tunnel
 * to the server's real address: the TLS session (SNI and verification) is the
 * client's own, end to end; the tunnel only moves bytes.
 */

export interface Tunnel {
  /** The proxy URL for Deno.createHttpClient. */
  readonly url: string;
  close(): void;
}

/** Starts a tunnel whose every CONNECT goes to `hostname:port`. */
export function serverNameTunnel(hostname: string, port: number): Tunnel {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  const closeQuietly = (c: Deno.Conn) => {
    if (!open.delete(c)) return;
    try {
      c.close();
    } catch {
      // Closed already.
    }
  };
  (async () => {
    for await (const client of listener) {
      open.add(client);
      void (async () => {
        let upstream: Deno.Conn | undefined;
        try {
          // The CONNECT request line and headers end with an empty line.
          const buffer = new Uint8Array(8192);
          let head = "";
          while (!head.includes("\r\n\r\n")) {
            const n = await client.read(buffer);
            if (n === null) return;
            head += new TextDecoder().decode(buffer.subarray(0, n));
            if (head.length > 8192) return;
          }
          if (!head.startsWith("CONNECT ")) return;
          upstream = await Deno.connect({ hostname, port });
          open.add(upstream);
          await client.write(
            new TextEncoder().encode("HTTP/1.1 200 Connection Established\r\n\r\n"),
          );
          const rest = head.slice(head.indexOf("\r\n\r\n") + 4);
          if (rest) await upstream.write(new TextEncoder().encode(rest));
          await Promise.all([
            client.readable.pipeTo(upstream.writable).catch(() => {}),
            upstream.readable.pipeTo(client.writable).catch(() => {}),
          ]);
        } catch {
          // One side went away.
        } finally {
          closeQuietly(client);
          if (upstream) closeQuietly(upstream);
        }
      })();
    }
  })().catch(() => {});
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    close() {
      listener.close();
      for (const c of [...open]) closeQuietly(c);
    },
  };
}
