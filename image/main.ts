/**
 * `deno task image`: builds the node image from the Dockerfile the way CI
 * does on a machine without registry access, and prints its size and what
 * is in it (tools and versions, checked against the pins).
 *
 *   deno task image [--tag kube-egress:0.1.0] [--save kube-egress.tar] [--docker unix:///var/run/docker.sock]
 *
 * Without --docker a private dockerd is started for the build (own data root
 * and socket, no bridge, no iptables rules) and removed afterwards with
 * everything it wrote: keep the image with --save (then `docker load -i`).
 * Exit codes: 0 built and clean, 1 a failure (or a pin / hygiene check
 * failed), 2 bad flags.
 */
import { Command } from "@commander-js/extra-typings";
import { ensureTools, IMAGE_TOOLS, isRoot } from "../cmd/tools.ts";
import { errorMessage } from "../core/errors.ts";
import { newRunId } from "../sim/netns.ts";
import { readDaemonSet } from "../sim/daemonset.ts";
import { buildImage, describeImage, pinMismatches, renderDescription } from "./build.ts";
import { Docker, PrivateDockerd } from "./docker.ts";

interface ImageFlags {
  tag: string;
  save?: string;
  docker?: string;
  debianImage?: string;
  denoImage?: string;
}

async function imageCommand(flags: ImageFlags): Promise<number> {
  const log = (line: string) => console.log(line);
  if (!flags.docker && !isRoot()) {
    console.error("image: a private dockerd needs root (or name a daemon with --docker)");
    return 1;
  }
  if (isRoot()) await ensureTools(IMAGE_TOOLS, { install: true, log });
  const runId = newRunId();
  let daemon: PrivateDockerd | undefined;
  const onSignal = () => {
    console.error("\ninterrupted: stopping the private dockerd");
    (daemon?.stop() ?? Promise.resolve()).finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    let docker: Docker;
    if (flags.docker) docker = new Docker(flags.docker);
    else {
      daemon = await PrivateDockerd.start(runId);
      docker = daemon.docker;
      log(`private dockerd of run ${runId}: ${daemon.dir} (removed at the end)`);
    }
    const built = await buildImage(docker, {
      tag: flags.tag,
      basePrefix: `${runId}-base`,
      debianImage: flags.debianImage,
      denoImage: flags.denoImage,
      // On a daemon that is not ours, the bases tagged with this run's id go again.
      removeBases: !daemon,
      log,
    });
    for (const base of built.bases) log(`base ${base}`);
    log(`built ${built.tag} in ${built.seconds.toFixed(1)} s`);
    const description = await describeImage(docker, built.tag);
    for (const line of renderDescription(description)) log(line);
    const problems = [
      ...pinMismatches(description),
      ...description.unwanted,
      ...description.missing.map((c) => `missing ${c}`),
    ];
    if (flags.save) {
      await docker.run(["save", "--output", flags.save, built.tag], { timeoutMs: 10 * 60_000 });
      log(`saved to ${flags.save} (docker load -i ${flags.save})`);
    } else if (daemon) {
      log("the private dockerd and the image go now: --save <file> keeps it");
    }
    if (problems.length > 0) {
      console.error(`image: ${problems.join("; ")}`);
      return 1;
    }
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await daemon?.stop();
  }
}

/** Runs the CLI; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  let code = 0;
  // The tag deploy/daemonset.yaml runs (fixed, IfNotPresent): a side-loaded build is used as it is.
  const defaultTag = (await readDaemonSet()).image;
  const program = new Command("deno task image")
    .description(
      "Build the node image from the Dockerfile on locally made bases (debootstrap, Deno from " +
        "npm), as CI does without registry access, and print its size and contents.",
    )
    .option("-t, --tag <name>", "tag of the image (default: deploy/daemonset.yaml's)", defaultTag)
    .option("--save <file>", "write the image to a tar file (docker load -i <file>)")
    .option("--docker <host>", "build with this docker daemon (e.g. unix:///var/run/docker.sock)")
    .option("--debian-image <ref>", "a Debian base the daemon has, instead of making one")
    .option("--deno-image <ref>", "a denoland/deno:bin image the daemon has, instead of making one")
    .exitOverride()
    .action(async (flags) => {
      try {
        code = await imageCommand(flags);
      } catch (error) {
        console.error(`image: ${errorMessage(error)}`);
        code = 1;
      }
    });
  try {
    await program.parseAsync(args, { from: "user" });
  } catch (error) {
    const e = error as { exitCode?: number; code?: string };
    if (e.code === "commander.helpDisplayed" || e.code === "commander.help") return 0;
    return 2;
  }
  return code;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
