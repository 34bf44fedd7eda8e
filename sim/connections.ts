/**
 * Established connections through a failover (issue 17): mapped pods keep
 * long-lived TCP connections to an echo server on the outside host, each
 * writing every 10 ms; a connection survived when it was never reset and
 * every byte it sent came back. The longest silence between two echoes is
 * its stall. Packets that reached the outside host on the echo port with
 * another source than the VIP are counted from a packet capture (the server
 * only sees what reaches a socket).
 *
 * ```ts
 * const echo = await startEchoServer(cluster.outside.ns);
 * const capture = await startCapture(cluster.outside.ns, { ports: [ECHO_PORT] });
 * const conns = await startConnections(pod.ns, { count: 5 });
 * // break the holder ...
 * const summary = summarizeConnections(await conns.stop(), wrongSource(await capture.stop(), vip));
 * ```
 */
import { OUTSIDE_IP } from "./cluster.ts";
import { startNetScript } from "./net_script.ts";
import type { Netns } from "./netns.ts";
import type { WirePacket } from "./stream.ts";

/** The echo server's port on the outside host. */
export const ECHO_PORT = 7100;

const SERVER = new URL("./echo_server.ts", import.meta.url).pathname;
const SENDER = new URL("./connection_sender.ts", import.meta.url).pathname;

/** One connection, as its pod saw it. */
export interface ConnectionResult {
  readonly localPort: number;
  readonly sent: number;
  readonly echoed: number;
  readonly maxStallMs: number;
  /** What ended it early ("reset" for a TCP reset); absent: it lasted. */
  readonly error?: string;
}

export interface ConnectionsSummary {
  readonly survived: number;
  readonly total: number;
  readonly resets: number;
  /** The longest stall of any connection, ms. */
  readonly maxStallMs: number;
  readonly wrongSource: number;
}

/** Survived: never reset or closed, and every byte sent came back. */
export function survived(result: ConnectionResult): boolean {
  return result.error === undefined && result.echoed === result.sent && result.sent > 0;
}

/** Pure: the figures of a run. */
export function summarizeConnections(
  results: readonly ConnectionResult[],
  wrongSource: number,
): ConnectionsSummary {
  return {
    survived: results.filter(survived).length,
    total: results.length,
    resets: results.filter((r) => r.error === "reset").length,
    maxStallMs: results.reduce((max, r) => Math.max(max, r.maxStallMs), 0),
    wrongSource,
  };
}

/** The bench line: `<fault>: connections survived N/M, resets R, max stall S ms, wrong source W`. */
export function connectionsLine(fault: string, s: ConnectionsSummary): string {
  return `${fault}: connections survived ${s.survived}/${s.total}, resets ${s.resets}, ` +
    `max stall ${s.maxStallMs} ms, wrong source ${s.wrongSource}`;
}

/** The story line: `established connections: 10/10 survived (stall 80 ms)`. */
export function storyConnectionsLine(s: ConnectionsSummary): string {
  return `established connections: ${s.survived}/${s.total} survived (stall ${s.maxStallMs} ms)`;
}

/** Packets to the echo port whose source is not the VIP. */
export function wrongSourcePackets(packets: readonly WirePacket[], vip: string): number {
  return packets.filter((p) => p.dport === ECHO_PORT && p.src !== vip).length;
}

export interface EchoServer {
  /** Source address of every connection accepted so far. */
  readonly accepted: readonly string[];
  stop(): Promise<void>;
}

/** Starts the echo server inside `ns` (the outside host), listening on `address`. */
export async function startEchoServer(ns: Netns, address = OUTSIDE_IP): Promise<EchoServer> {
  const accepted: string[] = [];
  const server = await startNetScript(
    ns,
    SERVER,
    [address, String(ECHO_PORT)],
    (line) => {
      if (line.includes('"accepted"')) accepted.push(JSON.parse(line).accepted);
    },
    () => "the echo server did not start",
  );
  return { accepted, stop: () => server.stop() };
}

export interface Connections {
  /** Stops sending, waits for the echoes due, and returns each connection's result. */
  stop(): Promise<ConnectionResult[]>;
}

/** Opens `count` long-lived connections from inside `from` (a pod); resolves once all are open. */
export async function startConnections(
  from: Netns,
  options: { count: number; target?: string; intervalMs?: number; maxMs?: number },
): Promise<Connections> {
  const results: ConnectionResult[] = [];
  const sender = await startNetScript(
    from,
    SENDER,
    [
      options.target ?? OUTSIDE_IP,
      String(ECHO_PORT),
      String(options.count),
      String(options.intervalMs ?? 10),
      String(options.maxMs ?? 120_000),
    ],
    (line) => {
      if (line.includes('"localPort"')) results.push(JSON.parse(line));
    },
    () => "the connections could not be opened",
  );
  return {
    async stop() {
      await sender.stop();
      // A sender that died early reports nothing: its connections did not survive.
      while (results.length < options.count) {
        results.push({ localPort: 0, sent: 0, echoed: 0, maxStallMs: 0, error: "no report" });
      }
      return results;
    },
  };
}
