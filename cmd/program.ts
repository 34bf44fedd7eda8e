/**
 * The CLI as commander reads it: every command, its flags and help, and the
 * usage errors. Loaded only for lines that are not the usual `run` (which
 * cmd/main.ts reads itself, cmd/run_args.ts): commander is CommonJS through
 * Node compatibility, ~40 ms to load.
 */
import { Command, Option } from "@commander-js/extra-typings";
import {
  controllerCommand,
  deleteCommand,
  planCommand,
  readOnce,
  runAction,
  runCommand,
  settingsFrom,
  settleBackend,
  statusCommand,
} from "./main.ts";
import { doctorCommand } from "./doctor_command.ts";
import { fatalLine, type LogFormat } from "./log.ts";
import {
  collectList,
  DATAPATH_FLAGS,
  type FlagSpec,
  PLACEMENT_FLAGS,
  RUN_FLAGS,
} from "./options.ts";
import type { Host } from "./system.ts";
import { errorMessage } from "../core/errors.ts";

/** After `run --help` (and `mod.ts --help`, which is run's, as `egress.sh --help` was). */
const RUN_HELP = `
Defaults, as egress.sh:
  With the mapping directories (--source files, the default) the agent does not place VIPs: each
  VIP must be on exactly one node already (keepalived-vip, kube-vip, MetalLB, a router), and the
  agent follows wherever it is (--vip-mode external). Without -u it applies once and exits.
  To let the agent place the VIPs itself (keepalived, one VRRP instance per VIP), add
  --vip-mode keepalived -u <seconds>; stop the other placement first (README "Migration").
  With --source kubernetes the agent always runs and places the VIPs (--vip-mode keepalived).
  On SIGTERM the rules stay in place (egress.sh removed them); --cleanup-on-exit removes them.

egress.sh's command lines work unchanged: with no command, flags mean run
(mod.ts --update-interval=5 ... = mod.ts run --update-interval=5 ...), and as with its getopt
a long option may be abbreviated (--update=5) and an empty value means the default.

Other commands: plan, status, delete, doctor, migrate, crds (mod.ts help <command>).`;

/** Adds flags as commander options (list flags repeat and comma-separate, cmd/options.ts). */
function addFlags(command: Command, specs: readonly FlagSpec[]): Command {
  for (const spec of specs) {
    const option = new Option(spec.flags, spec.description);
    if (spec.list) {
      const defaults = spec.defaultValue as string[];
      option.default(defaults).argParser((value: string, previous: string[]) =>
        collectList(value, previous, defaults)
      );
    } else if (spec.defaultValue !== undefined) option.default(spec.defaultValue);
    command.addOption(option as unknown as Option);
  }
  return command;
}

function addDatapathFlags(command: Command): Command {
  return addFlags(command, [...DATAPATH_FLAGS, ...PLACEMENT_FLAGS]);
}

/** Builds the program; `host` is injectable so the CLI can be tested without root. */
export function buildProgram(
  host: Host,
  done: (code: number) => void,
  logFormat: LogFormat = "text",
): Command {
  const program = new Command("kube-egress")
    .description(
      "Static egress IPs for Kubernetes pods on bare metal: steer mapped pods' traffic to the node holding their VIP and SNAT it there.",
    )
    .exitOverride() as unknown as Command;
  // With JSON logs, stderr carries only JSON lines: usage errors too, without the help text.
  program.configureOutput({
    writeErr: (text) => console.error(text.replace(/\n$/, "")),
    outputError: (text, write) =>
      write(logFormat === "json" ? fatalLine("json", text.trim().replace(/^error: /, "")) : text),
  });
  if (logFormat === "text") program.showHelpAfterError();
  const action =
    (fn: (options: Record<string, unknown>, host: Host) => Promise<number>) =>
    async (options: Record<string, unknown>) => done(await runAction(fn, options, host, logFormat));

  addFlags(
    program.command("run")
      .description(
        "program this node from the mapping directories (the egress.sh replacement: its flags work " +
          "unchanged, also without the word run) or from the Kubernetes API",
      ) as unknown as Command,
    RUN_FLAGS,
  )
    .addHelpText("after", RUN_HELP)
    .action(action(runCommand) as never);

  addDatapathFlags(
    program.command("plan").description(
      "print the exact payloads a pass would write and the diff against the node, changing nothing",
    ) as unknown as Command,
  ).action(action(planCommand) as never);

  addDatapathFlags(
    program.command("delete").description(
      "remove exactly what kube-egress created on this node",
    ) as unknown as Command,
  )
    .option("--dry-run", "print what would be removed")
    .action(action(deleteCommand) as never);

  addDatapathFlags(
    program.command("status").description(
      "VIPs held here, mappings in force and per-VIP counters",
    ) as unknown as Command,
  )
    .option("--json", "print JSON instead of a table")
    .action(action(statusCommand) as never);

  program.command("controller")
    .description(
      "the cluster-wide controller (a Deployment, deploy/controller.yaml): while it holds the Lease, select pods once for the cluster and publish EgressSlices, statuses, finalizers and Events",
    )
    .option("--kubeconfig <path>", "kubeconfig (default: in-cluster, $KUBECONFIG, ~/.kube/config)")
    .option(
      "--lease-namespace <namespace>",
      "namespace of the leader-election Lease (default: the pod's or kubeconfig context's, else kube-egress)",
    )
    .option(
      "--identity <name>",
      "this replica's name in the Lease (default: $POD_NAME, else the host name)",
    )
    .option("--log-format <format>", "text or json", "text")
    .action(action(controllerCommand) as never);

  program.command("crds")
    .description("print the CustomResourceDefinitions (deploy/crds.yaml) as YAML")
    .action(async () => {
      const { renderCrdsYaml } = await import("../core/kube/crd.ts");
      Deno.stdout.writeSync(new TextEncoder().encode(renderCrdsYaml()));
      done(0);
    });

  program.command("migrate")
    .description(
      "turn the old ConfigMaps (podip-vip-mappings, vip-routeid-mappings) and egress-mapper Vip/Egress objects into EgressVIP/EgressPolicy objects (printed as YAML)",
    )
    .argument("[files...]", "YAML files with the old ConfigMaps and Vip/Egress objects (Lists too)")
    .option("--from-api", "also read them from the Kubernetes API (and name pods by their IPs)")
    .option("--apply", "create the new objects in the API (existing ones are left alone)")
    .option("--kubeconfig <path>", "kubeconfig (default: in-cluster, $KUBECONFIG, ~/.kube/config)")
    .option(
      "--configmap-namespace <ns>",
      "namespace of the old ConfigMaps (egress-mapper and kube-egress's examples: default)",
      "default",
    )
    .option(
      "--old-api <group/version>",
      "API of egress-mapper's Vip/Egress CRDs",
      "egress.mapper.com/v1alpha1",
    )
    .action(async (files: string[], options: Record<string, unknown>) => {
      try {
        const { runMigrate } = await import("./migrate.ts");
        const result = await runMigrate({
          files,
          fromApi: options.fromApi === true,
          apply: options.apply === true,
          kubeconfig: options.kubeconfig as string | undefined,
          configMapNamespace: String(options.configmapNamespace),
          oldApi: String(options.oldApi),
        });
        for (const line of result.err) console.error(line);
        Deno.stdout.writeSync(new TextEncoder().encode(result.out));
        done(0);
      } catch (error) {
        console.error(`kube-egress: ${errorMessage(error)}`);
        done(1);
      }
    });

  program.command("uninstall")
    .description(
      "before `kubectl delete -k deploy/` (or to finish one that hangs): delete every EgressPolicy and EgressVIP, releasing the in-use finalizer, without the agents",
    )
    .option("--kubeconfig <path>", "kubeconfig (default: in-cluster, $KUBECONFIG, ~/.kube/config)")
    .action(async (options: Record<string, unknown>) => {
      try {
        const { uninstall } = await import("./kube/uninstall.ts");
        for (
          const line of await uninstall({ kubeconfig: options.kubeconfig as string | undefined })
        ) {
          console.log(line);
        }
        done(0);
      } catch (error) {
        console.error(`kube-egress: ${errorMessage(error)}`);
        done(1);
      }
    });

  addDatapathFlags(
    program.command("doctor").description(
      "check this node for what breaks egress (backend, marks, rp_filter, forwarding, chain order, duplicate VIPs, tools, route tables); exit 1 on a failed check",
    ) as unknown as Command,
  )
    .option("--json", "print JSON instead of a report")
    .option("--no-arp", "do not send ARP probes for the VIPs (skips duplicate-vip)")
    .option("--skip <checks>", "comma-separated check ids to skip")
    .action(
      action(async (options, host) => {
        const settings = settingsFrom(options);
        await settleBackend(settings);
        return doctorCommand(settings, options, host, () => readOnce(settings));
      }) as never,
    );

  return program;
}

/**
 * Runs a command line through commander (help, usage errors and every
 * command) and returns its exit code.
 */
export async function runProgram(
  args: string[],
  host: Host,
  logFormat: LogFormat,
): Promise<number> {
  let code = 0;
  const program = buildProgram(host, (c) => (code = c), logFormat);
  try {
    await program.parseAsync(args, { from: "user" });
  } catch (error) {
    // exitOverride: commander reports help/usage through exceptions.
    const e = error as { exitCode?: number; code?: string };
    if (
      e.code === "commander.helpDisplayed" || e.code === "commander.help" ||
      e.code === "commander.version"
    ) return 0;
    return typeof e.exitCode === "number" && e.exitCode !== 0 ? 2 : 0;
  }
  if (args.length === 0) program.outputHelp();
  return code;
}
