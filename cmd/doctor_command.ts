/**
 * `kube-egress doctor`: collects the facts, runs the checks, prints the
 * report (or JSON) on stdout. Exit 1 when a check failed, 0 otherwise
 * (warnings included), so it can gate a rollout or an init container.
 */
import { CHECKS, diagnose, renderDoctor, summarize } from "../core/doctor.ts";
import type { RawSnapshot } from "../core/snapshot.ts";
import type { CommonSettings } from "./options.ts";
import type { Host } from "./system.ts";
import { UsageError } from "./exit.ts";

/** Runs doctor with validated settings and its own flags; returns the exit code. */
export async function doctorCommand(
  settings: CommonSettings,
  flags: Record<string, unknown>,
  host: Host,
  readInputs: () => Promise<RawSnapshot>,
): Promise<number> {
  const skip = String(flags.skip ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  const known = new Set(CHECKS.map((c) => c.id));
  const unknown = skip.filter((id) => !known.has(id));
  if (unknown.length > 0) {
    throw new UsageError(
      `--skip: unknown check(s) ${unknown.join(", ")}; checks are ${[...known].join(", ")}`,
    );
  }
  // dax comes with the doctor's probes: loaded only for `doctor`.
  const { collectFacts } = await import("./doctor.ts");
  const facts = await collectFacts(host, {
    config: settings.config,
    readInputs,
    arp: flags.arp !== false,
    natSync: settings.conntrackSync.syncMode === "on"
      ? { commits: [], localPodCidrs: [] }
      : undefined,
  });
  const reports = diagnose(facts, skip);
  const failed = reports.some((r) => r.verdict === "fail");
  if (flags.json) {
    console.log(
      JSON.stringify({ ok: !failed, summary: summarize(reports), checks: reports }, null, 2),
    );
  } else console.log(renderDoctor(reports).trimEnd());
  return failed ? 1 : 0;
}
