import assert from "node:assert/strict";
import {
  egressShCommandLine,
  EgressShUsageError,
  expandRunArgs,
  type LongOption,
  resolveLongOption,
} from "../cmd/egress_sh.ts";

/** A slice of run's options: egress.sh's, and new ones that share their prefixes. */
const OPTIONS: LongOption[] = [
  { long: "--interface", short: "-i", takesValue: true },
  { long: "--pod-subnet", short: "-p", takesValue: true },
  { long: "--service-subnet", short: "-s", takesValue: true },
  { long: "--podip-vip-mappings", short: "-v", takesValue: true },
  { long: "--vip-routeid-mappings", short: "-r", takesValue: true },
  { long: "--update-interval", short: "-u", takesValue: true },
  { long: "--delete", short: "-d", takesValue: false },
  { long: "--help", short: "-h", takesValue: false },
  { long: "--source", takesValue: true },
  { long: "--state-dir", takesValue: true },
  { long: "--vip-mode", takesValue: true },
  { long: "--vrrp-advert-interval", takesValue: true },
  { long: "--vrrp-preempt-delay", takesValue: true },
  { long: "--dry-run", takesValue: false },
];

Deno.test("egress.sh: flags with no command are run; commands and run's own line pass through", () => {
  assert.deepEqual(egressShCommandLine(["--update-interval=5", "-i", "eth0"], OPTIONS), [
    "run",
    "--update-interval=5",
    "-i",
    "eth0",
  ]);
  assert.deepEqual(egressShCommandLine(["-h"], OPTIONS), ["run", "-h"]);
  assert.deepEqual(egressShCommandLine(["--help"], OPTIONS), ["run", "--help"]);
  assert.deepEqual(egressShCommandLine(["status", "--pod=x"], OPTIONS), ["status", "--pod=x"]);
  assert.deepEqual(egressShCommandLine(["run", "--pod-=x"], OPTIONS), ["run", "--pod-subnet=x"]);
  assert.deepEqual(egressShCommandLine([], OPTIONS), []);
});

Deno.test("egress.sh: long options abbreviate as getopt_long allowed; egress.sh's own win ties", () => {
  const name = (n: string) => resolveLongOption(n, OPTIONS)?.long;
  assert.equal(name("--update"), "--update-interval");
  assert.equal(name("--inter"), "--interface");
  assert.equal(name("--pod-"), "--pod-subnet");
  assert.equal(name("--podip"), "--podip-vip-mappings");
  // Prefixes that new options share: the old option is what an old command line meant.
  assert.equal(name("--s"), "--service-subnet");
  assert.equal(name("--v"), "--vip-routeid-mappings");
  assert.equal(name("--d"), "--delete");
  assert.equal(name("--dry"), "--dry-run");
  assert.equal(name("--sta"), "--state-dir");
  assert.equal(name("--delete"), "--delete");
  assert.equal(name("--nope"), undefined, "unknown: commander names it");
  assert.throws(
    () => resolveLongOption("--pod", OPTIONS),
    /option '--pod' is ambiguous; possibilities: '--pod-subnet' '--podip-vip-mappings'/,
    "two of egress.sh's own: getopt refused it too",
  );
  assert.throws(
    () => resolveLongOption("--vrrp", OPTIONS),
    (e: Error) =>
      e instanceof EgressShUsageError &&
      /option '--vrrp' is ambiguous; possibilities: '--vrrp-advert-interval' '--vrrp-preempt-delay'/
        .test(e.message),
  );
});

Deno.test("egress.sh: an empty value means the default (${2:-$DEFAULT}); values are never rewritten", () => {
  assert.deepEqual(
    expandRunArgs(["--interface=", "-u", "", "--serv", "", "-di", "", "-v", "--update=5"], OPTIONS),
    ["-d", "-v", "--update=5"],
    "the value of -v is taken as it is, even when it looks like an option",
  );
  assert.deepEqual(expandRunArgs(["-ieth0", "-u5", "-di", "bond0"], OPTIONS), [
    "-ieth0",
    "-u5",
    "-di",
    "bond0",
  ]);
  assert.deepEqual(expandRunArgs(["--update-interval", "5", "--", "--pod"], OPTIONS), [
    "--update-interval",
    "5",
    "--",
    "--pod",
  ]);
  // New options keep their empty values: the usage error names them.
  assert.deepEqual(expandRunArgs(["--source="], OPTIONS), ["--source="]);
});
