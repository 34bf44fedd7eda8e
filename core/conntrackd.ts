/**
 * NAT state replication with conntrackd (FTFW mode), decided here and rendered
 * as text. The holder of a VIP keeps the NAT mapping of every connection it
 * translates in its conntrack table; conntrackd copies those entries to the
 * other nodes' external caches as they change, and the node that takes a VIP
 * over commits its cache into its own table before it starts translating
 * (`conntrackd -c`), so the same connection keeps the same VIP port.
 *
 * Which entries: conntrackd 1.4.7 filters by layer-4 protocol, by address
 * (an entry's original source or reply source) and by TCP state; it has no
 * connmark filter. The configuration therefore accepts entries of TCP and UDP
 * whose original source is in the pod ranges: every connection our VIPs
 * translate is one, and the entries that are not ours stay in the peers'
 * external caches (userspace), never in their kernels unless committed.
 *
 * Topology: one conntrackd on multicast (the VRRP multicast case), or, where
 * the LAN has no multicast (`--vrrp-unicast-peers`), one conntrackd per peer,
 * since FTFW over UDP talks to exactly one destination. The port of a pair is
 * computed from the pair's positions in the shared peer list, so both ends
 * agree without talking.
 */

/** Where conntrackd syncs and what it may replicate. */
export interface ConntrackSyncSettings {
  /** The interface the sync messages use (the LAN one by default). */
  readonly interface: string;
  /** This node's address on that interface (the source of its sync messages). */
  readonly address: string;
  /** Pod ranges: entries whose original source is in them are replicated. */
  readonly podCidrs: readonly string[];
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

/** `conntrackd` arguments that commit an instance's external cache into the kernel table. */
export function commitArgs(configPath: string): string {
  return `-C ${configPath} -c`;
}

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
    ...settings.podCidrs.map((cidr) => `      IPv4_address ${cidr}`),
    "    }",
    "  }",
    "}",
  ];
}

/**
 * FTFW: acknowledged, resent on loss; a restarted conntrackd asks its peer for
 * the whole table (`StartupResync`), so a reload (a restart) loses nothing the
 * peer still has. The external cache is kept (committed at takeover only), so
 * a forwarder's own un-NATed entries of the same connections stay as they are
 * while it forwards.
 */
function sync(transport: string[]): string[] {
  return [
    "Sync {",
    "  Mode FTFW {",
    "    DisableExternalCache off",
    "    StartupResync on",
    "    ResendQueueSize 131072",
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
      ...sync(transport),
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
