/**
 * Traffic streams for failover measurements. A mapped pod sends a steady
 * stream to an outside host — UDP every 10 ms on one long-lived flow (sequence
 * numbers) and a new TCP connection every 50 ms — and the host's reporter
 * logs every arrival with the source address it saw. `analyzeFailover` (pure)
 * then reads those arrivals: how long the VIP's traffic stopped around a
 * fault, and whether anything left with a wrong source.
 *
 * The whole measurement in one call:
 *
 * ```ts
 * const run = await measureFailover(cluster.outside, {
 *   vip: "192.0.2.50",
 *   senders: [{ tag: "pod2-1", ns: cluster.pod(2, 1).ns }],
 *   fault: () => cluster.setLanLink(holder, false),
 * });
 * // run.streams[0].analysis.gapMs, run.streams[0].analysis.wrongSource, run.wire.count
 * ```
 *
 * or by hand: `startStream` in the pod, `startCapture` at the outside host,
 * break something, stop both, `analyzeFailover` + `wireLeaks`.
 */
import { OUTSIDE_IP, type OutsideHost, type ReporterEvent, TCP_PORT, UDP_PORT } from "./cluster.ts";
import { eachLine, readyWithin, terminate } from "./children.ts";
import { startNetScript } from "./net_script.ts";
import type { Netns } from "./netns.ts";

const SENDER = new URL("./stream_sender.ts", import.meta.url).pathname;

export interface StreamOptions {
  /** Marks this stream's packets at the reporter ("<tag> u <seq>", "<tag> t <seq>"); no spaces. */
  readonly tag: string;
  /** Where to send (a host running sim/reporter.ts); default the routed outside host. */
  readonly target?: string;
  /** Default 10 ms. */
  readonly udpIntervalMs?: number;
  /** Default 50 ms. */
  readonly tcpIntervalMs?: number;
  /** Hard limit on the stream's life, whatever happens to the caller; default 120 s. */
  readonly maxMs?: number;
}

/** What the sender says it sent. */
export interface StreamSent {
  readonly udp: number;
  readonly tcp: number;
  readonly tcpConnected: number;
  readonly tcpFailed: number;
  /** TCP attempts skipped because too many were still pending (a long outage). */
  readonly tcpSkipped: number;
}

export interface Stream {
  readonly tag: string;
  /** Stops sending and returns the sender's counts. */
  stop(): Promise<StreamSent>;
}

/** Starts a stream from inside `from` (a pod's namespace); resolves once it is sending. */
export async function startStream(from: Netns, options: StreamOptions): Promise<Stream> {
  if (!/^[\w.-]+$/.test(options.tag)) throw new Error(`stream tag ${options.tag} must be one word`);
  const lines: string[] = [];
  const sender = await startNetScript(
    from,
    SENDER,
    [
      options.target ?? OUTSIDE_IP,
      String(TCP_PORT),
      String(UDP_PORT),
      options.tag,
      String(options.udpIntervalMs ?? 10),
      String(options.tcpIntervalMs ?? 50),
      String(options.maxMs ?? 120_000),
    ],
    (line) => lines.push(line),
    () => `stream ${options.tag} did not start`,
  );
  return {
    tag: options.tag,
    async stop() {
      await sender.stop();
      const summary = lines.at(-1);
      return summary
        ? JSON.parse(summary)
        : { udp: 0, tcp: 0, tcpConnected: 0, tcpFailed: 0, tcpSkipped: 0 };
    },
  };
}

/** One arrival of a stream, as the reporter logged it. */
export interface StreamArrival {
  readonly t: number;
  readonly proto: "udp" | "tcp";
  readonly seq: number;
  readonly src: string;
  readonly port?: number;
}

/** The arrivals of one stream, in arrival order. */
export function streamArrivals(events: readonly ReporterEvent[], tag: string): StreamArrival[] {
  const arrivals: StreamArrival[] = [];
  for (const event of events) {
    const [t, kind, seq] = event.data.split(" ");
    if (t !== tag || (kind !== "u" && kind !== "t") || !/^[0-9]+$/.test(seq ?? "")) continue;
    arrivals.push({
      t: event.t,
      proto: kind === "u" ? "udp" : "tcp",
      seq: Number(seq),
      src: event.src,
      port: event.port,
    });
  }
  return arrivals.sort((a, b) => a.t - b.t);
}

export interface FailoverAnalysis {
  /**
   * The longest silence of good packets (source = the VIP) that ends after
   * the fault: from the last good packet via the old holder to the first good
   * packet via the new one, in ms. Undefined when no good packet came after
   * the fault.
   */
  readonly gapMs: number | undefined;
  /** Arrival time of the last good packet before the gap (the fault time if there was none). */
  readonly lastBefore: number | undefined;
  /** Arrival time of the first good packet after the gap. */
  readonly firstAfter: number | undefined;
  /** Packets that arrived with another source than the VIP (a node or pod address): must be 0. */
  readonly wrongSource: number;
  /** Those packets' sources, with counts. */
  readonly wrongSources: Readonly<Record<string, number>>;
  readonly received: { readonly udp: number; readonly tcp: number };
  /** UDP sequence numbers missing between the first and the last one received. */
  readonly udpLost: number;
}

/**
 * Reads a stream's arrivals around a fault at `faultAt` (ms since the epoch,
 * the reporters' clock). Only arrivals up to `until` count (default: all), so
 * that a later move (a node taking its VIP back) is not mistaken for the
 * failover.
 */
export function analyzeFailover(
  events: readonly ReporterEvent[],
  options: { tag: string; vip: string; faultAt: number; until?: number },
): FailoverAnalysis {
  const until = options.until ?? Infinity;
  const arrivals = streamArrivals(events, options.tag).filter((a) => a.t <= until);
  const wrongSources: Record<string, number> = {};
  for (const a of arrivals) {
    if (a.src !== options.vip) wrongSources[a.src] = (wrongSources[a.src] ?? 0) + 1;
  }
  const good = arrivals.filter((a) => a.src === options.vip).map((a) => a.t);
  let gapMs: number | undefined;
  let lastBefore: number | undefined;
  let firstAfter: number | undefined;
  for (let i = 0; i < good.length; i++) {
    if (good[i] <= options.faultAt) continue;
    const previous = i > 0 ? good[i - 1] : options.faultAt;
    const gap = good[i] - previous;
    if (gapMs === undefined || gap > gapMs) {
      gapMs = gap;
      lastBefore = previous;
      firstAfter = good[i];
    }
  }
  const udpSeqs = arrivals.filter((a) => a.proto === "udp").map((a) => a.seq);
  const distinct = new Set(udpSeqs);
  let [low, high] = [Infinity, -Infinity];
  for (const seq of distinct) [low, high] = [Math.min(low, seq), Math.max(high, seq)];
  const udpLost = distinct.size === 0 ? 0 : high - low + 1 - distinct.size;
  return {
    gapMs,
    lastBefore,
    firstAfter,
    wrongSource: arrivals.length - good.length,
    wrongSources,
    received: {
      udp: udpSeqs.length,
      tcp: arrivals.length - udpSeqs.length,
    },
    udpLost,
  };
}

/** A packet seen on the wire at the outside host (tcpdump). */
export interface WirePacket {
  /** ms since the epoch. */
  readonly t: number;
  readonly proto: "udp" | "tcp";
  readonly src: string;
  readonly sport: number;
  readonly dst: string;
  readonly dport: number;
  /** TCP flags as tcpdump prints them ("S", "S.", ".", "P.", "F.", "R"). */
  readonly flags?: string;
}

/**
 * Parses one line of `tcpdump -n -tt` ("<epoch.us> IP a.b.c.d.port > e.f.g.h.port: UDP|Flags ...",
 * or "IP6 x::y.port > ..." for IPv6). UDP to ports 7000-7009 may be printed as
 * AFS rx ("[|rx] (2)", "rx data ..."): still UDP.
 */
export function parseTcpdumpLine(line: string): WirePacket | undefined {
  const match =
    /^(\d+\.\d+) IP6? (\d+\.\d+\.\d+\.\d+|[0-9a-f:]+)\.(\d+) > (\d+\.\d+\.\d+\.\d+|[0-9a-f:]+)\.(\d+):\s+(UDP|\[\|rx\]|rx |Flags \[([^\]]*)\])/
      .exec(
        line,
      );
  if (!match) return undefined;
  return {
    t: Math.round(Number(match[1]) * 1000),
    proto: match[6].startsWith("Flags") ? "tcp" : "udp",
    src: match[2],
    sport: Number(match[3]),
    dst: match[4],
    dport: Number(match[5]),
    ...(match[7] === undefined ? {} : { flags: match[7] }),
  };
}

/** A running packet capture. */
export interface Capture {
  /** Stops capturing and returns the packets seen. */
  stop(): Promise<WirePacket[]>;
}

/**
 * Captures, inside `ns` (the outside host), every packet arriving for the
 * reporter's ports. The reporter only sees what reaches a socket; a stray
 * packet with a pod or node source (a TCP ACK of a connection the host never
 * accepted) shows up only here.
 */
export async function startCapture(
  ns: Netns,
  options: { iface?: string; ports?: readonly number[] } = {},
): Promise<Capture> {
  const ports = options.ports ?? [TCP_PORT, UDP_PORT];
  const filter = ports.map((p) => `dst port ${p}`).join(" or ");
  const child = ns.spawn(
    ["tcpdump", "-n", "-l", "-tt", "-Q", "in", "-i", options.iface ?? "eth0", filter],
    { stdout: "piped" },
  );
  const packets: WirePacket[] = [];
  let listening!: () => void;
  const ready = new Promise<void>((resolve) => (listening = resolve));
  const errorLines: string[] = [];
  eachLine(child.stderr, (line) => {
    errorLines.push(line);
    if (line.includes("listening on")) listening();
  }).catch(() => {});
  const reading = eachLine(child.stdout, (line) => {
    const packet = parseTcpdumpLine(line);
    if (packet) packets.push(packet);
  }).catch(() => {});
  await readyWithin(child, ready, 10_000, () => `tcpdump did not start: ${errorLines.join(" | ")}`);
  return {
    async stop() {
      await terminate(child, reading);
      return packets;
    },
  };
}

/** Packets on the wire whose source is none of the VIPs, by source: what leaked. */
export function wireLeaks(
  packets: readonly WirePacket[],
  vips: string | readonly string[],
): { count: number; sources: Record<string, number>; packets: WirePacket[] } {
  const allowed = new Set(typeof vips === "string" ? [vips] : vips);
  const sources: Record<string, number> = {};
  const leaked = packets.filter((p) => !allowed.has(p.src));
  for (const p of leaked) sources[p.src] = (sources[p.src] ?? 0) + 1;
  return { count: leaked.length, sources, packets: leaked };
}

/** One failover measured: per stream, and on the wire. */
export interface FailoverRun {
  /** When the fault was injected (ms since the epoch). */
  readonly faultAt: number;
  readonly streams: readonly {
    readonly tag: string;
    readonly sent: StreamSent;
    readonly analysis: FailoverAnalysis;
  }[];
  /** Packets that reached the outside host with another source than the VIP. */
  readonly wire: {
    readonly count: number;
    readonly sources: Record<string, number>;
    readonly packets: readonly WirePacket[];
  };
  /** The worst stream's gap (undefined if some stream never resumed). */
  readonly gapMs: number | undefined;
  /**
   * Packets that left with a wrong source: counted on the wire, which sees
   * every packet the reporter logged and also those no socket accepted.
   */
  readonly wrongSource: number;
}

/**
 * Streams from every sender to `outside` (which must run the reporter),
 * captures its wire, injects `fault` after `beforeMs` of steady traffic, keeps
 * streaming for `afterMs`, and analyzes. Everything started here is stopped
 * here, also on failure.
 */
export async function measureFailover(outside: OutsideHost, options: {
  /** The source every sender's packets must have (a sender may name its own `vip`). */
  readonly vip: string;
  readonly senders: readonly {
    readonly tag: string;
    readonly ns: Netns;
    readonly vip?: string;
    /** Where this sender streams to (default `outside.ip`; `outside.ip6` for IPv6). */
    readonly target?: string;
  }[];
  readonly fault: () => Promise<unknown>;
  readonly beforeMs?: number;
  readonly afterMs?: number;
}): Promise<FailoverRun> {
  const capture = await startCapture(outside.ns);
  const streams: Stream[] = [];
  let packets: WirePacket[] = [];
  let faultAt = 0;
  const sent: StreamSent[] = [];
  try {
    for (const sender of options.senders) {
      streams.push(
        await startStream(sender.ns, { tag: sender.tag, target: sender.target ?? outside.ip }),
      );
    }
    await new Promise((r) => setTimeout(r, options.beforeMs ?? 1000));
    faultAt = Date.now();
    await options.fault();
    await new Promise((r) => setTimeout(r, options.afterMs ?? 3000));
  } finally {
    for (const stream of streams) sent.push(await stream.stop());
    packets = await capture.stop();
  }
  const until = Date.now();
  const results = options.senders.map((sender, i) => ({
    tag: sender.tag,
    sent: sent[i],
    analysis: analyzeFailover(outside.events, {
      tag: sender.tag,
      vip: sender.vip ?? options.vip,
      faultAt,
      until,
    }),
  }));
  const wire = wireLeaks(packets, [options.vip, ...options.senders.flatMap((s) => s.vip ?? [])]);
  const gaps = results.map((r) => r.analysis.gapMs);
  return {
    faultAt,
    streams: results,
    wire,
    gapMs: gaps.some((g) => g === undefined) ? undefined : Math.max(...(gaps as number[])),
    wrongSource: wire.count,
  };
}
