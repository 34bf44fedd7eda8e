/**
 * Asking an outside host which source address a pod's traffic arrives with.
 * TCP and UDP use the reporter's answer; both run socat inside the pod's
 * namespace with short, bounded timeouts.
 */
import type { Netns } from "./netns.ts";
import { TCP_PORT, UDP_PORT } from "./cluster.ts";

export type Proto = "tcp" | "udp";

/** The source the host at `target` saw, or "timeout" / "error: ..." when nothing came back. */
export async function sourceSeen(
  from: Netns,
  target: string,
  proto: Proto,
  tag = "probe",
): Promise<string> {
  const address = proto === "tcp"
    ? `TCP:${target}:${TCP_PORT},connect-timeout=2`
    : `UDP:${target}:${UDP_PORT}`;
  const result = await from.exec(["socat", "-T", "2", "STDIO", address], {
    stdin: `${tag}\n`,
    timeoutMs: 5000,
  });
  const answer = result.stdout.trim();
  if (answer) return answer;
  return result.code === 0
    ? "timeout"
    : `error: ${result.stderr.trim().split("\n").at(-1) ?? result.code}`;
}

/** The first answer among a few tries (the first packet of a fresh path may need ARP). */
export async function sourceSeenRetry(
  from: Netns,
  target: string,
  proto: Proto,
  tries = 3,
): Promise<string> {
  let last = "";
  for (let i = 0; i < tries; i++) {
    last = await sourceSeen(from, target, proto);
    if (!last.startsWith("error") && last !== "timeout") return last;
  }
  return last;
}
