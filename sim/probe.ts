/**
 * Asking an outside host which source address a pod's traffic arrives with.
 * TCP and UDP use the reporter's answer (socat in the pod's namespace); ICMP
 * sends a tagged ping and asks the host's tcpdump witness. Every probe has
 * short, bounded timeouts; a failed probe reads "timeout" or "error: ...".
 */
import type { Netns } from "./netns.ts";
import { TCP_PORT, UDP_PORT } from "./layout.ts";
import { type IcmpWitness, newTag } from "./witness.ts";

export type Proto = "tcp" | "udp" | "icmp";

/** The source the host at `target` saw over TCP or UDP, or "timeout" / "error: ...". */
export async function sourceSeen(
  from: Netns,
  target: string,
  proto: "tcp" | "udp",
  tag = "probe",
): Promise<string> {
  const v6 = target.includes(":");
  const host = v6 ? `[${target}]` : target;
  const address = proto === "tcp"
    ? `TCP${v6 ? "6" : ""}:${host}:${TCP_PORT},connect-timeout=2`
    : `UDP${v6 ? "6" : ""}:${host}:${UDP_PORT}`;
  const result = await from.exec(["socat", "-T", "2", "STDIO", address], {
    stdin: `${tag}\n`,
    timeoutMs: 5000,
  });
  const answer = result.stdout.trim();
  if (answer) return answer;
  if (result.code === 0) return "timeout";
  // socat says "<date> socat[pid] E connecting to AF=2 a.b.c.d:port: <reason>": keep the reason.
  const last = result.stderr.trim().split("\n").at(-1) ?? "";
  return `error: ${last.split(": ").at(-1) || `exit ${result.code}`}`;
}

/**
 * The source the witness saw on a tagged echo request from `from`. When the
 * request arrived but no reply came back, the source is followed by
 * "(no reply)": the way back is broken (e.g. reverse-path filtering).
 */
export async function icmpSourceSeen(
  from: Netns,
  target: string,
  witness: IcmpWitness,
): Promise<string> {
  await witness.ensureRunning();
  const tag = newTag();
  const ping = await from.exec(["ping", "-n", "-q", "-c", "1", "-W", "2", "-p", tag, target], {
    timeoutMs: 5000,
  });
  // After a reply the request surely arrived: only tcpdump's report may lag on a loaded machine.
  const src = await witness.sourceOf(tag, ping.code === 0 ? 5000 : 1500);
  if (src === undefined) {
    return ping.code === 0 ? `error: reply without a request (${witness.describe()})` : "timeout";
  }
  return ping.code === 0 ? src : `${src} (no reply)`;
}

/** True for an answer that is an address, IPv4 or IPv6 (not a timeout, error or missing reply). */
export function isAddress(answer: string): boolean {
  return /^\d+\.\d+\.\d+\.\d+$/.test(answer) || /^[0-9a-f:]+$/.test(answer) && answer.includes(":");
}

/**
 * The first address among a few tries: the first packet of a fresh path may
 * wait for ARP or be lost while a route changes. Wrong addresses are returned
 * at once, never retried away. Tries are spaced (0.25 s, then 0.5 s) so that
 * a path still settling after a move is not judged in one instant.
 */
export async function sourceSeenRetry(
  from: Netns,
  target: string,
  proto: Proto,
  options: { tries?: number; witness?: IcmpWitness } = {},
): Promise<string> {
  const tries = options.tries ?? 3;
  let last = "";
  for (let i = 0; i < tries; i++) {
    if (proto === "icmp") {
      if (!options.witness) throw new Error(`no ICMP witness at ${target}`);
      last = await icmpSourceSeen(from, target, options.witness);
    } else last = await sourceSeen(from, target, proto);
    if (isAddress(last)) return last;
    if (i + 1 < tries) await new Promise((r) => setTimeout(r, 250 * 2 ** i));
  }
  return last;
}
