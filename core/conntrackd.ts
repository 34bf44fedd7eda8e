/**
 * NAT state replication with conntrackd (FTFW mode), decided here and its
 * configuration rendered as text (the takeover's commit is an operation,
 * `ConntrackdCommit`, rendered in core/render.ts). The holder of a VIP keeps the NAT mapping of every connection it
 * translates in its conntrack table; conntrackd copies those entries to the
 * other nodes' external caches as they change, and the node that takes a VIP
 * over commits its cache into its own table before it starts translating
 * (`conntrackd -c`), so the same connection keeps the same VIP port.
 *
 * Which entries: conntrackd 1.4.7 filters by layer-4 protocol, by address
 * (an entry's original source or reply source, src/filter.c) and by TCP
 * state; it has no connmark filter. Every node also tracks its own pods'
 * connections, un-NATed, while it forwards them to the holder: those must not
 * be replicated, or a peer's cache would hold two versions of one connection
 * and the commit would keep either. So each node replicates TCP and UDP
 * entries whose source is a pod of another node (the pod ranges minus this
 * node's own, `rangesExcept`): on the holder of a VIP those are exactly the
 * connections it translates for other nodes' pods; a forwarder has none of
 * them, except pod-to-pod traffic, which stays in the peers' external caches
 * (userspace) and only enters a kernel with a commit, as an identical copy.
 * Not replicated: the holder's own pods' connections (a holder that dies
 * takes its pods with it; see README for the faults where the pods live).
 *
 * Topology: one conntrackd on multicast (the VRRP multicast case), or, where
 * the LAN has no multicast (`--vrrp-unicast-peers`), one conntrackd per peer,
 * since FTFW over UDP talks to exactly one destination. The port of a pair is
 * computed from the pair's positions in the shared peer list, so both ends
 * agree without talking.
 */
import { type Cidr, cidrHalves, cidrsOverlap, compareCidrs, formatCidr, parseCidr } from "./ip.ts";

/**
 * `ranges` minus `excluded`, as few CIDRs as cover the rest exactly, sorted.
 * (10.244.0.0/16 minus 10.244.1.0/24: 10.244.0.0/24, 10.244.2.0/23, ...).
 */
export function rangesExcept(ranges: readonly string[], excluded: readonly string[]): string[] {
  const cut = excluded.map(parseCidr).filter((c): c is Cidr => c !== undefined);
  const out: Cidr[] = [];
  const split = (range: Cidr) => {
    if (cut.some((c) => c.prefix <= range.prefix && cidrsOverlap(c, range))) return;
    if (!cut.some((c) => cidrsOverlap(c, range))) {
      out.push(range);
      return;
    }
    for (const half of cidrHalves(range)) split(half);
  };
  for (const text of ranges) {
    const range = parseCidr(text);
    if (range) split(range);
  }
  return out.sort(compareCidrs).map(formatCidr);
}

/** Where conntrackd syncs and what it may replicate. */
export interface ConntrackSyncSettings {
  /** The interface the sync messages use (the LAN one by default). */
  readonly interface: string;
  /** This node's address on that interface (the source of its sync messages). */
  readonly address: string;
  /** Pod ranges: entries whose source is in them are replicated... */
  readonly podCidrs: readonly string[];
  /** ...except this node's own pod ranges (its pods' connections it forwards un-NATed). */
  readonly localPodCidrs: readonly string[];
  /** The nodes' addresses (same list on every node); empty: multicast. */
  readonly peers: readonly string[];
  /** Multicast group or first unicast port; default 3780. */
  readonly basePort?: number;
}

/** One conntrackd this node runs. */
export interface ConntrackdInstance {
  /** "mcast" or the peer's address: names the files of the instance. */
  readonly name: string;
  /** The rendered configuration (byte-equal for equal inputs). */
  readonly config: string;
}

/** conntrackd's state and files of one instance, under the agent's state directory. */
export interface ConntrackdPaths {
  readonly lock: string;
  readonly socket: string;
  readonly log: string;
}

/** conntrackd's multicast group for our sync messages (organisation-local scope). */
export const SYNC_GROUP = "239.255.71.80";
export const SYNC_BASE_PORT = 3780;

/** The UDP port a unicast pair uses: both nodes derive it from the shared, sorted peer list. */
export function pairPort(peers: readonly string[], a: string, b: string, base = SYNC_BASE_PORT) {
  const sorted = [...new Set(peers)].sort();
  const i = sorted.indexOf(a);
  const j = sorted.indexOf(b);
  if (i < 0 || j < 0 || i === j) return undefined;
  const [low, high] = i < j ? [i, j] : [j, i];
  return base + 1 + low * sorted.length + high;
}

function general(paths: ConntrackdPaths, settings: ConntrackSyncSettings): string[] {
  return [
    "General {",
    "  Systemd off",
    "  HashSize 32768",
    "  HashLimit 262144",
    `  LogFile ${paths.log}`,
    "  Syslog off",
    `  LockFile ${paths.lock}`,
    `  UNIX {`,
    `    Path ${paths.socket}`,
    "  }",
    "  NetlinkBufferSize 2097152",
    "  NetlinkBufferSizeMaxGrowth 8388608",
    "  NetlinkOverrunResync on",
    "  NetlinkEventsReliable on",
    "  Filter From Userspace {",
    "    Protocol Accept {",
    "      TCP",
    "      UDP",
    "    }",
    "    Address Accept {",
    ...rangesExcept(settings.podCidrs, settings.localPodCidrs).map((cidr) =>
      `      IPv4_address ${cidr}`
    ),
    "    }",
    "  }",
    "}",
  ];
}

/**
 * A pair of nodes (unicast) syncs in FTFW mode: acknowledged, resent on loss.
 * Several nodes on one multicast group use NOTRACK: FTFW tracks one sequence
 * of messages per receiver, and with three senders on a group it takes their
 * interleaved sequences for losses (measured: entries missing from a peer's
 * cache at takeover); NOTRACK sends every change as it happens and a periodic
 * full resync. Either way a restarted conntrackd asks for the whole table
 * (`StartupResync`), so a reload (a restart) loses nothing a peer still has,
 * and the external cache is kept (committed at takeover only), so a
 * forwarder's own entries of the same connections stay as they are while it
 * forwards.
 */
function sync(mode: "FTFW" | "NOTRACK", transport: string[]): string[] {
  return [
    "Sync {",
    `  Mode ${mode} {`,
    "    DisableExternalCache off",
    "    StartupResync on",
    ...(mode === "FTFW" ? ["    ResendQueueSize 131072"] : []),
    "  }",
    ...transport,
    "}",
  ];
}

/** The conntrackd instances of this node: one on multicast, or one per unicast peer. */
export function conntrackdInstances(
  settings: ConntrackSyncSettings,
  pathsOf: (name: string) => ConntrackdPaths,
): ConntrackdInstance[] {
  const base = settings.basePort ?? SYNC_BASE_PORT;
  const render = (name: string, transport: string[]) => ({
    name,
    config: [
      `# kube-egress: NAT state sync (${name}). Rendered by the agent: do not edit.`,
      ...sync(name === "mcast" ? "NOTRACK" : "FTFW", transport),
      ...general(pathsOf(name), settings),
    ].join("\n") + "\n",
  });
  if (settings.peers.length === 0) {
    return [render("mcast", [
      "  Multicast {",
      `    IPv4_address ${SYNC_GROUP}`,
      `    Group ${base}`,
      `    IPv4_interface ${settings.address}`,
      `    Interface ${settings.interface}`,
      "    SndSocketBuffer 1249280",
      "    RcvSocketBuffer 1249280",
      "    Checksum on",
      "  }",
    ])];
  }
  // Every node's list names every node; this node's own address is added if
  // the list leaves it out, so that the pair ports still agree.
  const peers = [...new Set([...settings.peers, settings.address])].sort();
  return peers.filter((p) => p !== settings.address).flatMap((peer) => {
    const port = pairPort(peers, settings.address, peer, base);
    if (port === undefined) return [];
    return [render(peer, [
      "  UDP {",
      `    IPv4_address ${settings.address}`,
      `    IPv4_Destination_Address ${peer}`,
      `    Port ${port}`,
      `    Interface ${settings.interface}`,
      "    SndSocketBuffer 1249280",
      "    RcvSocketBuffer 1249280",
      "    Checksum on",
      "  }",
    ])];
  });
}
