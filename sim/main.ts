/**
 * `deno task sim`: a bare-metal cluster in network namespaces, with the real
 * agent on every node and outside hosts that say which source they see.
 *
 *   deno task sim [flags]              the story: map, check, fail over, unmap, delete, tear down
 *   deno task sim up [flags]           build a cluster and leave it running for exploring
 *   deno task sim status [--run <id>]  nodes, VIPs, agents, mappings and a live source check
 *   deno task sim exec <ns> <cmd...>   run a command in one of the cluster's namespaces
 *   deno task sim down [--run <id>|--all]
 *   deno task sim api [--port <n>]     the test API server alone, for kubectl (sim/kube_api_local.ts)
 *
 * Exit codes: 0 every check held, 1 a check failed or something broke, 2 bad flags.
 */
import { Command, Option } from "@commander-js/extra-typings";
import $ from "dax";
import { describeIssues } from "../core/schema.ts";
import { table } from "../core/status.ts";
import { ensureTools, IMAGE_TOOLS, isRoot, SIM_TOOLS } from "../cmd/tools.ts";
import { agentLogPath, startDetachedAgent, stateDirOf, waitForLogLine } from "./agents.ts";
import { checkPods, checksLegend, renderChecks } from "./check.ts";
import { Cluster, type OutsideHost } from "./cluster.ts";
import {
  ClusterSpec,
  CniMode,
  DEFAULT_SPEC,
  MAX_NODES,
  MAX_PODS_PER_NODE,
  namespaceEntries,
  resolveNamespace,
} from "./layout.ts";
import { NetnsSet, newRunId, runNamespaces } from "./netns.ts";
import { ImageAgents } from "./image_agents.ts";
import { PrivateDockerd } from "../image/docker.ts";
import { findState, listStates, removeState, RUN_ID, saveState } from "./state.ts";
import { expectedSources, mappingsByIp, rogueLine, runStory, storyPlan } from "./story.ts";
import { overUnicast } from "./placement.ts";
import {
  keepalivedVips,
  manualVips,
  nodeAddresses,
  VIP_MODES,
  type VipDriver,
  type VipMode,
} from "./vip.ts";
import { IcmpWitness } from "./witness.ts";
import { errorMessage } from "../core/errors.ts";

/** Ends a command with an exit code and a message. */
class Exit extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

interface ClusterFlags {
  nodes: string;
  pods: string;
  cni: string;
  iface: string;
  rpFilter: string;
  vipMode: string;
  backend: string;
  family: string;
}

function addClusterFlags<C extends Command<[], Record<string, unknown>>>(command: C) {
  return command
    .option("-n, --nodes <n>", `number of nodes (1-${MAX_NODES})`, String(DEFAULT_SPEC.nodes))
    .option(
      "-m, --pods <n>",
      `pods per node (1-${MAX_PODS_PER_NODE})`,
      String(DEFAULT_SPEC.podsPerNode),
    )
    .addOption(
      new Option("--cni <mode>", "how pods on different nodes reach each other")
        .choices(CniMode.options).default(DEFAULT_SPEC.cni),
    )
    .option("-i, --iface <name>", "the nodes' LAN interface name", DEFAULT_SPEC.iface)
    .addOption(
      new Option(
        "--rp-filter <mode>",
        "the nodes' net.ipv4.conf.{all,default}.rp_filter: 0 off, 1 strict (most distributions), 2 loose",
      ).choices(["0", "1", "2"]).default(String(DEFAULT_SPEC.rpFilter)),
    )
    .addOption(
      new Option(
        "--vip-mode <mode>",
        "keepalived: the agents' keepalived (VRRP) places the VIPs and a failover stops the " +
          "holder's keepalived; manual: the simulator moves them (ip addr + gratuitous ARP)",
      ).choices(VIP_MODES).default("keepalived"),
    )
    .addOption(
      new Option("--backend <backend>", "the agents' datapath backend")
        .choices(["iptables", "nftables"]).default(DEFAULT_SPEC.backend),
    )
    .addOption(
      new Option(
        "--family <family>",
        "ipv4: IPv4 only; dual: LAN and outside hosts also get IPv6 from 2001:db8::/32, pods an " +
          "address of each family (fd00:10:244::/48), and the story maps a dual-stack and an " +
          "IPv6-only VIP",
      ).choices(["ipv4", "dual"]).default("ipv4"),
    );
}

function specFrom(flags: ClusterFlags): ClusterSpec {
  const parsed = ClusterSpec.safeParse({
    nodes: Number(flags.nodes),
    podsPerNode: Number(flags.pods),
    cni: flags.cni,
    iface: flags.iface,
    rpFilter: Number(flags.rpFilter),
    backend: flags.backend,
    // IPv4 stays the spec without a family (its state files and output as before).
    ...(flags.family === "dual" ? { family: "dual" } : {}),
  });
  if (!parsed.success) {
    throw new Exit(
      2,
      `invalid flags: ${
        describeIssues(parsed.error, {
          nodes: "--nodes",
          podsPerNode: "--pods",
          cni: "--cni",
          iface: "--iface",
          rpFilter: "--rp-filter",
          backend: "--backend",
          family: "--family",
        })
      }`,
    );
  }
  return parsed.data;
}

function vipDriver(mode: VipMode, cluster: Cluster): VipDriver {
  switch (mode) {
    case "manual":
      return manualVips(cluster.nodes, cluster.spec.iface);
    case "keepalived":
      return keepalivedVips(cluster.nodes, cluster.spec.iface, (n) => stateDirOf(cluster, n));
  }
}

/** Root, the tools, and the agent's modules in Deno's cache (agents run with --cached-only). */
async function prepare(): Promise<void> {
  if (!isRoot()) {
    throw new Exit(1, "the simulator needs root: it creates network namespaces (use sudo)");
  }
  try {
    await ensureTools(SIM_TOOLS, { install: true, log: (l) => console.log(l) });
  } catch (error) {
    throw new Exit(1, errorMessage(error));
  }
  const root = new URL("..", import.meta.url).pathname;
  await $`${Deno.execPath()} cache ${root}mod.ts ${root}sim/reporter.ts`.quiet();
}

/**
 * Runs `body` with the cluster it builds, tearing the cluster down on
 * failure and on Ctrl-C (and on success unless `keep`).
 */
async function withCluster<T>(
  build: (
    track: (cluster: Cluster) => void,
    onTeardown: (fn: () => Promise<void>) => void,
  ) => Promise<Cluster>,
  body: (cluster: Cluster) => Promise<T>,
  keep = false,
): Promise<T> {
  let cluster: Cluster | undefined;
  let teardown: Promise<void> | undefined;
  // What the build made before the cluster existed (an image runtime): torn down like it.
  const extra: (() => Promise<void>)[] = [];
  // Ctrl-C reaches every process of the terminal's group, often more than
  // once: the first signal tears down, later ones wait for that teardown.
  const onSignal = () => {
    teardown ??= (async () => {
      console.error("\ninterrupted: tearing the simulated cluster down");
      await cluster?.destroy();
      for (const fn of extra) await fn();
      const left = cluster ? await runNamespaces(cluster.runId) : [];
      if (left.length > 0) console.error(`namespaces left behind: ${left.join(" ")}`);
      Deno.exit(130);
    })();
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let ok = false;
  try {
    cluster = await build((c) => (cluster = c), (fn) => extra.push(fn));
    const result = await body(cluster);
    ok = true;
    return result;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    if (cluster && (!ok || !keep)) {
      await cluster.destroy();
      for (const fn of extra) await fn();
      const left = await runNamespaces(cluster.runId);
      console.log(
        left.length === 0
          ? `torn down: run ${cluster.runId} left no namespace, process or file`
          : `warning: namespaces left behind: ${left.join(" ")}`,
      );
    } else if (!cluster) { for (const fn of extra) await fn(); }
  }
}

async function storyCommand(
  flags: ClusterFlags & { agents: string; source?: string; rogue?: boolean; vrrp?: string },
): Promise<number> {
  const spec = specFrom(flags);
  if (flags.source === "kubernetes" && flags.agents === "image") {
    throw new Exit(
      2,
      "invalid flags: --source kubernetes runs the agents as processes (no --agents image)",
    );
  }
  if (spec.family === "dual") {
    const other = flags.source === "kubernetes"
      ? "--source kubernetes"
      : flags.agents === "image"
      ? "--agents image"
      : flags.rogue
      ? "--rogue"
      : flags.vrrp === "unicast"
      ? "--vrrp unicast"
      : flags.vipMode !== "keepalived"
      ? `--vip-mode ${flags.vipMode}`
      : undefined;
    if (other) {
      throw new Exit(
        2,
        `invalid flags: --family dual tells the files story with the agents' keepalived ` +
          `(no ${other})`,
      );
    }
  }
  await prepare();
  if (flags.source === "kubernetes") return await kubeStoryCommand(spec);
  if (spec.family === "dual") return await dualStoryCommand(spec);
  if (flags.agents === "image") {
    try {
      await ensureTools(IMAGE_TOOLS, { install: true, log: (l) => console.log(l) });
    } catch (error) {
      throw new Exit(1, errorMessage(error));
    }
  }
  const started = performance.now();
  const ok = await withCluster(
    async (track, onTeardown) => {
      const runId = newRunId();
      let agents: ImageAgents | undefined;
      if (flags.agents === "image") {
        let daemon: PrivateDockerd | undefined;
        // Stopping the daemon also ends a build under way (ImageAgents.start then fails).
        onTeardown(async () => await daemon?.stop());
        agents = await ImageAgents.start(runId, (line) => console.log(line), (d) => (daemon = d));
        console.log(`agents run ${agents.description}`);
      }
      return await Cluster.create(spec, {
        runId,
        progress: (line) => console.log(line),
        onCreate: track,
        agents,
      });
    },
    async (cluster) => {
      let driver = vipDriver(flags.vipMode as VipMode, cluster);
      if (flags.vrrp === "unicast" && driver.mode === "keepalived") {
        driver = await overUnicast(cluster, driver);
      }
      const result = await runStory(cluster, {
        driver,
        say: (line) => console.log(line),
        rogue: flags.rogue === true,
      });
      const checks = result.phases.filter((p) => !p.informational).flatMap((p) => p.checks);
      const failed = checks.filter((c) => !c.ok).length;
      const f = result.failover;
      console.log(
        `\n${result.ok ? "all checks ✓" : "some checks ✗"}: ${
          checks.length - failed
        }/${checks.length} ` +
          `pod checks held` +
          (f?.streamer
            ? `; failover of ${f.vip} ${f.from} → ${f.to}: gap ${f.gapMs ?? "∞"} ms, ` +
              `${f.wrongSource} packet(s) with a wrong source`
            : "") +
          (result.rogue
            ? `; ${rogueLine(result.rogue)}; replies while the rogue was present: ` +
              `${result.rogue.repliedChecks[0]}/${result.rogue.repliedChecks[1]} checks`
            : "") +
          `; rulesets equal to the baseline on ${
            result.baseline.filter((b) => b.equal).length
          }/${result.baseline.length} nodes`,
      );
      return result.ok;
    },
  );
  console.log(`took ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return ok ? 0 : 1;
}

/** `--family dual`: the dual-stack story (sim/dual_story.ts). */
async function dualStoryCommand(spec: ClusterSpec): Promise<number> {
  const { runDualStory, dualSummaryLine } = await import("./dual_story.ts");
  const started = performance.now();
  const ok = await withCluster(
    (track) => Cluster.create(spec, { progress: (line) => console.log(line), onCreate: track }),
    async (cluster) => {
      const result = await runDualStory(cluster, {
        driver: vipDriver("keepalived", cluster),
        say: (line) => console.log(line),
      });
      console.log(`\n${dualSummaryLine(result)}`);
      return result.ok;
    },
  );
  console.log(`took ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return ok ? 0 : 1;
}

/** `--source kubernetes`: the Kubernetes story with the test API server and real kubectl. */
async function kubeStoryCommand(spec: ClusterSpec): Promise<number> {
  if (!(await $.commandExists("kubectl"))) {
    throw new Exit(
      1,
      "--source kubernetes drives kubectl, which is not installed (kubectl on the PATH)",
    );
  }
  const { runKubeStory } = await import("./kube_story.ts");
  const started = performance.now();
  const ok = await withCluster(
    (track) => Cluster.create(spec, { progress: (line) => console.log(line), onCreate: track }),
    async (cluster) => {
      const result = await runKubeStory(cluster, { say: (line) => console.log(line) });
      const pods = result.checks.flatMap((c) => c.checks);
      console.log(
        `\n${result.ok ? "all checks ✓" : "some checks ✗"}: ${
          result.steps.filter((s) => s.ok).length
        }/` +
          `${result.steps.length} steps, ${
            pods.filter((c) => c.ok).length
          }/${pods.length} pod checks held; ` +
          `rulesets equal to the baseline on ${result.baseline.filter((b) => b.equal).length}/` +
          `${result.baseline.length} nodes`,
      );
      return result.ok;
    },
  );
  console.log(`took ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return ok ? 0 : 1;
}

async function upCommand(flags: ClusterFlags): Promise<number> {
  const spec = specFrom(flags);
  const vipMode = flags.vipMode as VipMode;
  await prepare();
  return await withCluster(
    (track) =>
      Cluster.create(spec, {
        progress: (line) => console.log(line),
        detached: true,
        onCreate: track,
      }),
    async (cluster) => {
      const plan = storyPlan(cluster.layout);
      await cluster.writeMappings(mappingsByIp(cluster, plan.mappings), plan.vips);
      const driver = vipDriver(vipMode, cluster);
      console.log(
        `starting the agent (mod.ts run -u 30 ${
          driver.agentFlags.join(" ")
        }) in every node namespace`,
      );
      for (const node of cluster.nodes) startDetachedAgent(cluster, node, driver.agentFlags);
      const holders = await driver.settle(
        new Map([...plan.holders].map(([vip, index]) => [vip, cluster.node(index)])),
      );
      await Promise.all(
        cluster.nodes.flatMap((node) =>
          [...holders].map(([vip, holder]) =>
            waitForLogLine(
              agentLogPath(cluster, node),
              new RegExp(
                `VIP role vip=${vip.replaceAll(".", "\\.")} from=\\S+ to=${
                  node === holder ? "holder" : "forwarder"
                }`,
              ),
              60_000,
            )
          )
        ),
      );
      console.log(
        "VIPs: " + [...holders].map(([vip, node]) => `${vip} on ${node.name}`).join(", "),
      );
      const [vipA, holderNodeA] = [...holders][0];
      const holderA = holderNodeA.name;
      await saveState({
        runId: cluster.runId,
        spec,
        workDir: cluster.workDir,
        vipMode,
        vips: { ...plan.vips },
        createdAt: new Date().toISOString(),
      });
      console.log(`\nrun ${cluster.runId} is up.\n`);
      console.log(namespaceTable(cluster));
      console.log(`
mappings (edit them; the agents follow within a second):
  ${cluster.podVipDir}   files <pod IP> containing <VIP>
  ${cluster.vipRouteDir}   files <VIP> containing <route id>
agent logs: ${cluster.logDir}/

  deno task sim status                       VIP holders, agents, mappings, live source check
  deno task sim exec pod2-1 ping -c1 ${cluster.outside.ip}
  deno task sim exec node1 iptables-save     any command in any namespace above
  deno task sim exec ${holderA} ip link set ${spec.iface} down   pull ${holderA}'s cable: ${vipA} fails over
  deno task sim down                         remove everything of this run`);
      return 0;
    },
    true,
  );
}

function namespaceTable(cluster: Cluster): string {
  return table(
    ["NAMESPACE", "ALSO CALLED", "WHAT"],
    namespaceEntries(cluster.layout).map((
      e,
    ) => [`${cluster.runId}-${e.suffix}`, e.aliases.join(", "), e.what]),
  );
}

/** Agent processes in a node namespace: pids whose command line runs mod.ts. */
async function agentPids(cluster: Cluster, nodeIndex: number): Promise<number[]> {
  const pids = await cluster.node(nodeIndex).ns.pids();
  const agents: number[] = [];
  for (const pid of pids) {
    const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
    const args = cmdline.split("\0");
    if (args.some((a) => a.endsWith("/mod.ts")) && args.includes("run")) agents.push(pid);
  }
  return agents;
}

async function statusCommand(options: { run?: string; check: boolean }): Promise<number> {
  if (!isRoot()) throw new Exit(1, "sim status needs root (it reads the cluster's namespaces)");
  const state = await findState(parseRunId(options.run));
  const existing = await runNamespaces(state.runId);
  if (existing.length === 0) {
    throw new Exit(
      1,
      `run ${state.runId} is recorded but its namespaces are gone (a reboot?); ` +
        `\`deno task sim down --run ${state.runId}\` forgets it`,
    );
  }
  const cluster = await Cluster.attach(state.runId, state.spec, state.workDir);
  const { spec } = cluster;
  console.log(
    `run ${state.runId}, up since ${state.createdAt}: ${spec.nodes} nodes, ${spec.podsPerNode} ` +
      `pods each, CNI ${spec.cni}, interface ${spec.iface}, rp_filter ${spec.rpFilter}, ` +
      `VIPs ${state.vipMode}\n`,
  );
  const vips = Object.keys(state.vips);
  const rows = await Promise.all(cluster.nodes.map(async (node) => {
    const [addresses, agents] = await Promise.all([
      nodeAddresses(node, spec.iface),
      agentPids(cluster, node.index),
    ]);
    return [
      node.name,
      node.ns.name,
      node.ip,
      vips.filter((v) => addresses.includes(v)).join(", ") || "-",
      agents.length ? `running (pid ${agents.join(", ")})` : "not running",
    ];
  }));
  console.log(table(["NODE", "NAMESPACE", "ADDRESS", "HOLDS", "AGENT"], rows));

  const mappings = await cluster.readMappings().catch(() => ({
    pods: {} as Record<string, string>,
    vips: {} as Record<string, string>,
  }));
  const byName = new Map(
    cluster.pods.filter((p) => mappings.pods[p.ip]).map((p) => [p.name, mappings.pods[p.ip]]),
  );
  console.log(
    `\nmappings (${cluster.podVipDir}): ` +
      ([...byName].map(([pod, vip]) => `${pod} → ${vip}`).join(", ") || "none"),
  );
  console.log(`agent logs: ${cluster.logDir}/`);
  if (!options.check) return 0;

  const witnesses: IcmpWitness[] = [];
  try {
    const hosts: OutsideHost[] = [];
    for (const host of cluster.outsideHosts) {
      const icmp = await IcmpWitness.start(host.ns);
      witnesses.push(icmp);
      hosts.push({ ...host, icmp });
    }
    const checks = await checkPods(cluster, expectedSources(cluster.pods, byName), { hosts });
    console.log(`\n${checksLegend(cluster)}`);
    console.log(renderChecks(checks));
    return checks.every((c) => c.ok) ? 0 : 1;
  } finally {
    for (const w of witnesses) await w.stop();
  }
}

async function execCommand(
  namespace: string,
  command: string[],
  options: { run?: string },
): Promise<number> {
  if (!isRoot()) throw new Exit(1, "sim exec needs root (ip netns exec)");
  const state = await findState(parseRunId(options.run));
  const cluster = await Cluster.attach(state.runId, state.spec, state.workDir);
  const suffix = resolveNamespace(cluster.layout, state.runId, namespace);
  if (!suffix) {
    throw new Exit(
      2,
      `no namespace "${namespace}" in run ${state.runId}:\n${namespaceTable(cluster)}`,
    );
  }
  const result = await $`ip netns exec ${`${state.runId}-${suffix}`} ${command}`
    .stdin("inherit").noThrow();
  return result.code;
}

async function downCommand(options: { run?: string; all?: boolean }): Promise<number> {
  if (!isRoot()) throw new Exit(1, "sim down needs root (it deletes network namespaces)");
  const runId = parseRunId(options.run);
  const { states } = await listStates();
  let targets: { runId: string; workDir?: string }[];
  if (options.all) targets = states;
  else if (runId !== undefined) {
    // A run that crashed before recording itself can still be removed by id.
    targets = [states.find((s) => s.runId === runId) ?? { runId }];
  } else targets = [await findState()];
  if (targets.length === 0) console.log("no simulated cluster is up");
  for (const target of targets) {
    const namespaces = await NetnsSet.adopt(target.runId);
    const count = namespaces.all.length;
    await namespaces.destroy();
    for (const dir of [target.workDir, ...await runWorkDirs(target.runId)]) {
      // A private dockerd of `--agents image` that a killed run left running goes first.
      if (dir && /-docker-[0-9a-f]+$/.test(dir)) await PrivateDockerd.stopLeftover(dir);
      else if (dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
    await removeState(target.runId);
    console.log(`run ${target.runId}: removed ${count} namespace(s), their processes and files`);
  }
  return 0;
}

/** Work directories a run made with Deno.makeTempDir ("<tmp>/<runId>-..."), found by name. */
async function runWorkDirs(runId: string): Promise<string[]> {
  const tmp = Deno.env.get("TMPDIR") ?? "/tmp";
  const dirs: string[] = [];
  for await (const entry of Deno.readDir(tmp)) {
    if (entry.isDirectory && entry.name.startsWith(`${runId}-`)) dirs.push(`${tmp}/${entry.name}`);
  }
  return dirs;
}

function parseRunId(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  const parsed = RUN_ID.safeParse(text);
  if (!parsed.success) throw new Exit(2, `invalid flags: --run ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/** Builds the CLI; `done` receives the exit code. */
export function buildProgram(done: (code: number) => void) {
  const action =
    <A extends unknown[]>(fn: (...args: A) => Promise<number>) => async (...args: A) => {
      try {
        done(await fn(...args));
      } catch (error) {
        const code = error instanceof Exit ? error.code : 1;
        console.error(`sim: ${errorMessage(error)}`);
        done(code);
      }
    };
  const program = new Command("deno task sim")
    .description(
      "A bare-metal cluster in network namespaces (LAN, router, outside hosts, nodes, pods), with " +
        "the real kube-egress agent on every node. Without a command: the story (map pods to two " +
        "VIPs, check the sources seen outside over TCP/UDP/ICMP, fail a VIP over, remove a " +
        "mapping, delete, compare every node's ruleset with its baseline, tear down). " +
        "Needs root. Exit code 0 only if every check held.",
    )
    .enablePositionalOptions()
    .showHelpAfterError()
    .exitOverride();

  addClusterFlags(
    program.command("story", { isDefault: true })
      .description("tell the whole story and tear everything down (the default command)")
      .addOption(
        new Option(
          "--agents <where>",
          "process: the agent runs as a process in each node namespace; image: from the node " +
            "image (built first, with a private dockerd), in a container per node with " +
            "deploy/daemonset.yaml's security context, mounts, args and env",
        ).choices(["process", "image"]).default("process"),
      )
      .addOption(
        new Option(
          "--source <source>",
          "files: the mapping directories (the old kube-egress); kubernetes: the test API server " +
            "and real kubectl (EgressVIP/EgressPolicy objects, statuses, deletion, uninstall)",
        ).choices(["files", "kubernetes"]).default("files"),
      )
      .option(
        "--rogue",
        "add a host on the LAN that is no node: it advertises every VIP's router id with VRRP " +
          "priority 255, answers ARP for the VIPs and sends gratuitous ARPs for them, from after " +
          "the first check through the failover; prints `rogue: packets attracted <N>, adverts " +
          "refused <A>, alerts <E>`",
      )
      .addOption(
        new Option(
          "--vrrp <transport>",
          "multicast: adverts to 224.0.0.18; unicast: every node drops multicast adverts and " +
            "the agents run with --vrrp-unicast-peers <every node> (keepalived mode)",
        ).choices(["multicast", "unicast"]).default("multicast"),
      ),
  ).action(
    action((flags) =>
      storyCommand(
        flags as unknown as ClusterFlags & {
          agents: string;
          source?: string;
          rogue?: boolean;
          vrrp?: string;
        },
      )
    ),
  );

  addClusterFlags(
    program.command("up").description(
      "build a cluster, start the agents, map pods to two VIPs, and leave it running " +
        "(explore it with status/exec; remove it with down)",
    ),
  ).action(action((flags) => upCommand(flags as unknown as ClusterFlags)));

  program.command("status")
    .description("VIP holders, agents and mappings of the running cluster, and a live source check")
    .option("--run <id>", "which cluster (when more than one is up)")
    .option("--no-check", "skip the live source check")
    .action(action((options) => statusCommand(options)));

  program.command("exec")
    .description(
      "run a command in a namespace of the running cluster, e.g. `exec pod1-1 ping -c1 198.51.100.10`; " +
        "namespaces: node1, pod1-2, outside, lanhost, router, switch, svc-backend, or n1, n1p2, ...",
    )
    .argument("<namespace>", "node1, pod1-2, outside, lanhost, router, switch, svc-backend, ...")
    .argument("<command...>", "the command and its arguments")
    .option("--run <id>", "which cluster (when more than one is up)")
    .passThroughOptions()
    .action(action((namespace, command, options) => execCommand(namespace, command, options)));

  program.command("api")
    .description(
      "run the test Kubernetes API server alone on loopback (HTTPS) until Ctrl-C, for kubectl and " +
        "other clients; prints `export KUBECONFIG=<path>`",
    )
    .option("--port <n>", "port on 127.0.0.1 (default: any free one)")
    .option("--bookmark-ms <ms>", "watch bookmark interval (kube-apiserver: about a minute)")
    .action(action(async (options) => {
      const { apiCommand } = await import("./kube_api_local.ts");
      return await apiCommand({
        port: options.port === undefined ? undefined : Number(options.port),
        bookmarkMs: options.bookmarkMs === undefined ? undefined : Number(options.bookmarkMs),
      });
    }));

  program.command("down")
    .description("delete the running cluster's namespaces, processes and files (only that run's)")
    .option("--run <id>", "which cluster (when more than one is up)")
    .option("--all", "every cluster started with `up`")
    .action(action((options) => downCommand(options)));

  return program;
}

/** Runs the CLI and returns its exit code. */
export async function main(args: string[]): Promise<number> {
  let code = 0;
  const program = buildProgram((c) => (code = c));
  try {
    await program.parseAsync(args, { from: "user" });
  } catch (error) {
    const e = error as { exitCode?: number; code?: string };
    if (e.code === "commander.helpDisplayed" || e.code === "commander.help") return 0;
    return typeof e.exitCode === "number" && e.exitCode !== 0 ? 2 : 0;
  }
  return code;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
