/**
 * The outside host's ICMP witness: tcpdump in the host's namespace prints
 * every echo request that arrives, with its source and its bytes. A probe
 * sends a ping whose padding carries a random tag and asks the witness which
 * source the tagged packet came from, so parallel probes never mix up.
 */
import { eachLine } from "./children.ts";
import type { Netns } from "./netns.ts";

/** One echo request as tcpdump printed it. */
interface Capture {
  readonly src: string;
  hex: string;
}

const HEADER = /\bIP (\d+\.\d+\.\d+\.\d+) > \d+\.\d+\.\d+\.\d+: ICMP echo request\b/;
/** An ICMPv6 echo request (dual-stack witnesses). */
const HEADER6 = /\bIP6 ([0-9a-f:]+) > [0-9a-f:]+: ICMP6, echo request\b/;
const HEX_LINE = /^\s+0x[0-9a-f]+:\s+((?:[0-9a-f]{2,4}\s?)+)/;

/** Parses tcpdump `-n -x` output into captures (exported for tests). */
export function parseTcpdump(lines: readonly string[], into: Capture[] = []): Capture[] {
  for (const line of lines) {
    const header = HEADER.exec(line) ?? HEADER6.exec(line);
    if (header) into.push({ src: header[1], hex: "" });
    else {
      const hex = HEX_LINE.exec(line);
      if (hex && into.length > 0) into[into.length - 1].hex += hex[1].replace(/\s+/g, "");
    }
  }
  return into;
}

/** A fresh tag for `ping -p` (8 bytes as 16 hex digits). */
export function newTag(): string {
  return [...crypto.getRandomValues(new Uint8Array(8))].map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}

const TCPDUMP_ARGS = (iface: string, ipv6: boolean) => [
  "tcpdump",
  "-l",
  "-n",
  "-x",
  "--immediate-mode",
  "-Q",
  "in",
  "-i",
  iface,
  // ICMPv6 echo requests: type 128 right after the fixed header (no extension headers).
  ipv6
    ? "icmp[icmptype] == icmp-echo or (icmp6 and ip6[40] == 128)"
    : "icmp[icmptype] == icmp-echo",
];

/** How often a witness whose tcpdump died is restarted before it gives up. */
const MAX_RESTARTS = 5;

export class IcmpWitness {
  readonly #captures: Capture[] = [];
  #stopped = false;
  #child!: Deno.ChildProcess;
  #exit: Deno.CommandStatus | undefined;
  /** The end of tcpdump's stderr (its start-up line, its exit statistics), for error messages. */
  #stderr = "";
  #restarts = 0;

  private constructor(
    readonly ns: Netns,
    readonly iface: string,
    readonly ipv6: boolean,
  ) {}

  /** What the witness has seen so far, for error messages. */
  describe(): string {
    const state = this.#exit
      ? `tcpdump exited (code ${this.#exit.code}${
        this.#exit.signal ? `, ${this.#exit.signal}` : ""
      }): ${this.#stderr.trim().split("\n").slice(-2).join(" / ")}`
      : "tcpdump running";
    return `${state}, ${this.#captures.length} request(s) seen in ${this.ns.name}` +
      (this.#restarts ? `, restarted ${this.#restarts} time(s)` : "");
  }

  /** Starts tcpdump on `iface` and waits until it is capturing (`ipv6`: ICMPv6 echo requests too). */
  static async start(
    ns: Netns,
    iface = "eth0",
    timeoutMs = 20_000,
    options: { ipv6?: boolean } = {},
  ): Promise<IcmpWitness> {
    const witness = new IcmpWitness(ns, iface, options.ipv6 === true);
    await witness.#spawn(timeoutMs);
    return witness;
  }

  async #spawn(timeoutMs: number): Promise<void> {
    const child = this.ns.spawn(TCPDUMP_ARGS(this.iface, this.ipv6), {
      stdout: "piped",
      stderr: "piped",
    });
    this.#child = child;
    this.#exit = undefined;
    child.status.then((status) => {
      if (this.#child === child) this.#exit = status;
    }).catch(() => {});
    eachLine(child.stdout, (line) => parseTcpdump([line], this.#captures)).catch(() => {});
    let listening!: (ok: boolean) => void;
    const isListening = new Promise<boolean>((r) => (listening = r));
    // stderr is read to its end (never cancelled: tcpdump would die of SIGPIPE on its next line).
    (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr = (this.#stderr + chunk).slice(-2000);
        if (this.#stderr.includes("listening on")) listening(true);
      }
      listening(false);
    })().catch(() => listening(false));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    const ok = await Promise.race([isListening, timeout]).finally(() => clearTimeout(timer));
    if (!ok) {
      await this.stop();
      throw new Error(
        `tcpdump in ${this.ns.name} did not start: ${this.#stderr.trim() || "no output"}`,
      );
    }
  }

  /**
   * Restarts tcpdump if it died (a few times at most), so one lost capture
   * process does not fail every later probe. Requests sent while it was down
   * are not seen; the probe's retry sends a new one.
   */
  async ensureRunning(): Promise<void> {
    if (this.#stopped || this.#exit === undefined || this.#restarts >= MAX_RESTARTS) return;
    this.#restarts++;
    console.error(`[sim] ICMP witness restarted: ${this.describe()}`);
    await this.#spawn(20_000);
  }

  /** The source of the echo request carrying `tag`, or undefined if none came within `timeoutMs`. */
  async sourceOf(tag: string, timeoutMs = 1500): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const hit = this.#captures.find((c) => c.hex.includes(tag));
      if (hit) return hit.src;
      if (Date.now() >= deadline || this.#stopped) return undefined;
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Ends tcpdump. Safe to call twice. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await this.#child.status.catch(() => {});
  }
}
