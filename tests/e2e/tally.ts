/** Sums over a measured failover that the fail-closed e2e tests assert on. */
import type { FailoverRun } from "../../sim/stream.ts";

/** Wrong-source packets on the wire, and the packets the streams sent that never arrived. */
export function tally(run: FailoverRun) {
  let sent = 0;
  let received = 0;
  for (const s of run.streams) {
    sent += s.sent.udp + s.sent.tcp;
    received += s.analysis.received.udp + s.analysis.received.tcp;
  }
  return { wrong: run.wrongSource, dropped: sent - received, sent, sources: run.wire.sources };
}
