// keepalived as the simulation runs it for a VRRP speaker of its own (the
// keepalived-vip DaemonSet, a rogue router): in the foreground, VRRP only,
// its VIPs released on exit, pid files in its directory.
import { join } from "node:path";
import { eachLine } from "./children.ts";
import type { Netns } from "./netns.ts";

/**
 * Starts keepalived in `ns` on the configuration `conf`, pid files in `dir`;
 * each line it logs is appended to `log`.
 */
export function spawnVrrpKeepalived(
  ns: Netns,
  dir: string,
  conf: string,
  log: string[],
): Deno.ChildProcess {
  const child = ns.spawn([
    "keepalived",
    "--dont-fork",
    "--log-console",
    "--release-vips",
    "--vrrp",
    "--use-file",
    conf,
    "--pid",
    join(dir, "keepalived.pid"),
    "--vrrp_pid",
    join(dir, "vrrp.pid"),
  ], { stderr: "piped" });
  eachLine(child.stderr!, (line) => log.push(line)).catch(() => {});
  return child;
}
