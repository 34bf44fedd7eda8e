/**
 * The simulator's agents running from the node image, as the kubelet runs
 * the DaemonSet's pod on a real node: one container per node that shares the
 * node's network namespace (hostNetwork), with the DaemonSet's own security
 * context, hostPath mounts, arguments and environment, read from
 * deploy/daemonset.yaml.
 *
 * A node's namespace is made by a container: a holder started with
 * `--network none` (only loopback, no link anywhere), whose namespace is
 * named `<runId>-n<k>` (`ip netns attach`) before the cluster builds the
 * node in it. The agent containers then join it (`--network container:`).
 * What the simulator adds that a real pod gets from elsewhere: the mapping
 * directories named by the sim's flags, mounted read-only at the same path
 * (ConfigMap volumes, on a real node), and for `--kubeconfig` the pod's
 * service account (token, CA, namespace) and KUBERNETES_SERVICE_HOST/PORT,
 * as the kubelet projects them: the agents connect in-cluster.
 */
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { buildProgram } from "../cmd/program.ts";
import { SERVICE_ACCOUNT_DIR } from "../core/kube/kubeconfig.ts";
import { formatLine, type Level } from "../cmd/log.ts";
import type { Host } from "../cmd/system.ts";
import { buildImage } from "../image/build.ts";
import { Docker, PrivateDockerd } from "../image/docker.ts";
import { type AgentProcess, type AgentRuntime, nodeHostPath, watchAgent } from "./agents.ts";
import type { Cluster, SimNode } from "./cluster.ts";
import {
  type AgentPodSpec,
  type FlagDef,
  type HostMount,
  mergeAgentArgs,
  parseFlags,
  readDaemonSet,
  resolveEnv,
  securityFlags,
} from "./daemonset.ts";
import type { ExecResult, Netns } from "./netns.ts";

/** Every agent command's options, from the CLI itself (not written twice). */
export function agentFlagDefs(): { all: FlagDef[]; of: (command: string) => Set<string> } {
  const program = buildProgram({} as Host, () => {});
  const byCommand = new Map<string, FlagDef[]>();
  for (const command of program.commands) {
    byCommand.set(
      command.name(),
      command.options.map((o) => ({
        long: o.long!,
        short: o.short,
        takesValue: o.required || o.optional,
      })),
    );
  }
  const all = new Map<string, FlagDef>();
  for (const defs of byCommand.values()) for (const d of defs) all.set(d.long, d);
  return {
    all: [...all.values()],
    of: (command) => new Set((byCommand.get(command) ?? []).map((d) => d.long)),
  };
}

/** Flags whose value is a path on the machine that the container must see (mounted read-only). */
const INPUT_PATH_FLAGS = ["--podip-vip-mappings", "--vip-routeid-mappings", "--kubeconfig"];

const DOCKER_FORWARDING_WARNING = "WARNING: IPv4 forwarding is disabled. Networking will not work.";

/**
 * A JSON log line of the agent (the DaemonSet asks for --log-format=json) as
 * the text line the simulator's waits and role readers expect; any other
 * line as it is (undefined: the docker client's own remark, dropped).
 */
export function jsonLogToText(raw: string): string | undefined {
  // The docker client's remark on the private daemon (which must not turn forwarding on in the
  // root namespace); the node namespaces forward as the cluster set them up.
  if (raw === DOCKER_FORWARDING_WARNING) return undefined;
  if (!raw.startsWith("{")) return raw;
  try {
    const { time, level, msg, ...fields } = JSON.parse(raw) as Record<string, unknown>;
    if (typeof msg !== "string" || typeof level !== "string") return raw;
    return formatLine(
      "text",
      level as Level,
      msg,
      fields as Record<string, string | number | boolean>,
      new Date(String(time)),
    );
  } catch {
    return raw;
  }
}

/**
 * Where a hostPath of the DaemonSet is in the simulator: the kernel's
 * interfaces (/proc, /sys: per namespace of whoever reads them) and the
 * machine's xtables lock (which every iptables here takes, the simulator's
 * own included) are the machine's; every other path is the node's own
 * (`nodeHostPath`), e.g. /run/kube-egress is the node's state directory.
 */
export function simHostPath(cluster: Cluster, node: SimNode, path: string): string {
  if (path === "/run/xtables.lock" || /^\/(proc|sys)(\/|$)/.test(path)) return path;
  return nodeHostPath(cluster, node, path);
}

/** Prepares a hostPath as the kubelet does for its type (creating what `…OrCreate` asks for). */
async function prepareHostPath(path: string, mount: HostMount): Promise<void> {
  const exists = await Deno.stat(path).then((s) => s, () => undefined);
  switch (mount.type) {
    case "DirectoryOrCreate":
      if (!exists) await Deno.mkdir(path, { recursive: true, mode: 0o755 });
      return;
    case "FileOrCreate":
      if (!exists) {
        await Deno.mkdir(path.replace(/\/[^/]+$/, "") || "/", { recursive: true });
        // Never truncates: an existing lock file stays as it is.
        (await Deno.open(path, { create: true, append: true, mode: 0o644 })).close();
      }
      return;
    case "Directory":
    case "File":
    case "":
      if (!exists) throw new Error(`hostPath ${path} (volume ${mount.name}) does not exist`);
  }
}

/** The image runtime of one cluster (or of several, one after the other). */
export class ImageAgents implements AgentRuntime {
  readonly #containers: string[] = [];
  readonly #running = new Map<string, string>();
  readonly #flags = agentFlagDefs();
  #counter = 0;

  constructor(
    readonly docker: Docker,
    readonly image: string,
    readonly pod: AgentPodSpec,
    /** The image's entrypoint (what `docker exec` runs, without its init). */
    readonly entrypoint: readonly string[],
    /** A daemon this runtime started and stops in `destroy` (undefined: the caller's). */
    readonly daemon?: PrivateDockerd,
  ) {}

  get description(): string {
    return `from the image ${this.image}, one container per node in the node's namespace, ` +
      `with deploy/daemonset.yaml's security context, mounts, args and env`;
  }

  /**
   * Starts a private dockerd, builds the image from the Dockerfile (local
   * bases, cached) and reads the DaemonSet: everything `sim --agents image`
   * needs. On failure the daemon is stopped again.
   */
  static async start(
    runId: string,
    log: (line: string) => void,
    /** Told the daemon at once, so that a Ctrl-C during the build can stop it. */
    onDaemon: (daemon: PrivateDockerd) => void = () => {},
  ): Promise<ImageAgents> {
    const daemon = await PrivateDockerd.start(runId);
    onDaemon(daemon);
    try {
      log(`private dockerd of run ${runId} in ${daemon.dir}; building the image`);
      const built = await buildImage(daemon.docker, {
        tag: `${runId}/kube-egress:sim`,
        basePrefix: `${runId}-base`,
        log,
      });
      log(`built ${built.tag} in ${built.seconds.toFixed(1)} s`);
      return await ImageAgents.forImage(daemon.docker, built.tag, daemon);
    } catch (error) {
      await daemon.stop();
      throw error;
    }
  }

  /** A runtime for an image the daemon already has. */
  static async forImage(docker: Docker, image: string, daemon?: PrivateDockerd) {
    const [inspect] = JSON.parse(await docker.run(["image", "inspect", image])) as {
      Config: { Entrypoint: string[] | null };
    }[];
    const entrypoint = [...(inspect.Config.Entrypoint ?? [])];
    // `kubectl exec` needs no init: drop tini (and its "--").
    if (entrypoint[0] === "tini" || entrypoint[0]?.endsWith("/tini")) {
      entrypoint.splice(0, entrypoint.indexOf("--") + 1 || 1);
    }
    return new ImageAgents(docker, image, await readDaemonSet(), entrypoint, daemon);
  }

  #name(cluster: Cluster, node: SimNode, what: string): string {
    const name = `${cluster.runId}-${node.name}-${what}`;
    this.#containers.push(name);
    return name;
  }

  /** The container that holds node `suffix`'s namespace: its own, empty one. */
  #holder(cluster: Cluster, suffix: string): string {
    return `${cluster.runId}-${suffix}-netns`;
  }

  async nodeNamespace(cluster: Cluster, suffix: string): Promise<Netns> {
    const name = this.#holder(cluster, suffix);
    this.#containers.push(name);
    await this.docker.run([
      "run",
      "--detach",
      "--name",
      name,
      "--network",
      "none",
      "--cap-drop",
      "ALL",
      "--security-opt",
      "no-new-privileges",
      "--entrypoint",
      "tini",
      this.image,
      "--",
      "sleep",
      "infinity",
    ]);
    const pid = Number(
      (await this.docker.run(["inspect", "--format", "{{.State.Pid}}", name])).trim(),
    );
    if (!(pid > 0)) throw new Error(`container ${name} is not running`);
    return await cluster.namespaces.attach(suffix, pid);
  }

  /**
   * The service account the kubelet projects into the pod, made from the
   * simulator's kubeconfig (its server, token and CA): the token, ca.crt and
   * namespace files, and the API server's address for
   * KUBERNETES_SERVICE_HOST/PORT. Undefined when the kubeconfig has no token
   * and CA (then it is mounted as it is).
   */
  async #serviceAccount(cluster: Cluster, kubeconfig: string) {
    const config = parseYaml(await Deno.readTextFile(kubeconfig)) as {
      "current-context"?: string;
      contexts?: { name: string; context: { cluster: string; user: string } }[];
      clusters?: {
        name: string;
        cluster: { server: string; "certificate-authority-data"?: string };
      }[];
      users?: { name: string; user: { token?: string } }[];
    };
    const context = config.contexts?.find((c) => c.name === config["current-context"])?.context;
    const server = config.clusters?.find((c) => c.name === context?.cluster)?.cluster;
    const token = config.users?.find((u) => u.name === context?.user)?.user.token;
    const ca = server?.["certificate-authority-data"];
    if (!server || !token || !ca) return undefined;
    const url = new URL(server.server);
    const dir = join(cluster.workDir, "serviceaccount");
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(join(dir, "token"), token);
    await Deno.writeTextFile(join(dir, "ca.crt"), atob(ca));
    await Deno.writeTextFile(join(dir, "namespace"), this.pod.namespace);
    return {
      dir,
      host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: url.port || (url.protocol === "https:" ? "443" : "80"),
    };
  }

  /**
   * What the kubelet gives the DaemonSet's pod on `node` (`docker run` flags),
   * and the agent's argv for `command`.
   */
  async #prepare(
    cluster: Cluster,
    node: SimNode,
    command: string,
    args: readonly string[],
  ): Promise<{ flags: string[]; argv: string[] }> {
    const suffix = cluster.layout.nodes[node.index - 1].suffix;
    const flags = [
      "--network",
      `container:${this.#holder(cluster, suffix)}`,
      ...securityFlags(this.pod),
    ];
    for (const mount of this.pod.mounts) {
      const source = simHostPath(cluster, node, mount.hostPath);
      await prepareHostPath(source, mount);
      flags.push(
        "--mount",
        `type=bind,source=${source},target=${mount.mountPath}${mount.readOnly ? ",readonly" : ""}`,
      );
    }
    const env = resolveEnv(this.pod.env, {
      nodeName: node.name,
      podName: `${this.pod.daemonSet}-${node.name}`,
      namespace: this.pod.namespace,
      nodeIp: node.ip,
    });
    let pairs = parseFlags(args, this.#flags.all);
    // A kubeconfig with a token becomes the pod's service account: the agent finds the API
    // server as in every real installation (in-cluster), not through a file.
    const kubeconfig = pairs.find(([name]) => name === "--kubeconfig")?.[1];
    const account = typeof kubeconfig === "string"
      ? await this.#serviceAccount(cluster, kubeconfig)
      : undefined;
    if (account) {
      pairs = pairs.filter(([name]) => name !== "--kubeconfig");
      flags.push(
        "--mount",
        `type=bind,source=${account.dir},target=${SERVICE_ACCOUNT_DIR},readonly`,
      );
      env.KUBERNETES_SERVICE_HOST = account.host;
      env.KUBERNETES_SERVICE_PORT = account.port;
    }
    // The simulator's inputs: what a ConfigMap or Secret volume would bring.
    const inputs = pairs.filter(([name]) => INPUT_PATH_FLAGS.includes(name))
      .map(([, path]) => String(path));
    for (const path of new Set(inputs)) {
      flags.push("--mount", `type=bind,source=${path},target=${path},readonly`);
    }
    for (const [key, value] of Object.entries(env)) flags.push("--env", `${key}=${value}`);
    const simArgs = pairs.map(([name, value]) => (value === true ? name : `${name}=${value}`));
    return { flags, argv: this.agentArgs(command, simArgs) };
  }

  /**
   * The agent's argv for `command`: the DaemonSet's flags, replaced by the
   * simulator's where it names the same flag. Unless told otherwise the
   * agents read the mapping directories (`--source files`).
   */
  agentArgs(command: string, args: readonly string[]): string[] {
    const [first, ...daemonSetFlags] = this.pod.args;
    if (first !== "run") {
      throw new Error(`deploy/daemonset.yaml: the container's args start with ${first}, not run`);
    }
    const withSource = args.some((a) => a === "--source" || a.startsWith("--source="))
      ? args
      : ["--source", "files", ...args];
    const accepted = this.#flags.of(command);
    return [
      command,
      ...mergeAgentArgs(daemonSetFlags, withSource, this.#flags.all, (f) => accepted.has(f)),
    ];
  }

  start(cluster: Cluster, node: SimNode, args: readonly string[]): AgentProcess {
    const name = this.#name(cluster, node, `agent-${++this.#counter}`);
    // Until `docker run` has the flags ready, a stop must wait for it.
    let kill: (signal: Deno.Signal) => void = () => {};
    const ready = this.#prepare(cluster, node, "run", args).then(({ flags, argv }) => {
      const child = this.docker.spawn([
        "run",
        "--name",
        name,
        "--init=false",
        ...flags,
        this.image,
        ...argv,
      ]);
      kill = (signal) => {
        this.docker.exec(["kill", "--signal", signal, name], { timeoutMs: 10_000 }).catch(() => {});
      };
      this.#running.set(node.name, name);
      child.status.then(() => {
        if (this.#running.get(node.name) === name) this.#running.delete(node.name);
      });
      return child;
    });
    return lazyAgent(node, ready, (signal) => kill(signal));
  }

  async command(
    cluster: Cluster,
    node: SimNode,
    command: string,
    args: readonly string[],
    timeoutMs: number,
  ): Promise<ExecResult> {
    const { flags, argv } = await this.#prepare(cluster, node, command, args);
    const running = this.#running.get(node.name);
    // While the node's agent runs, as `kubectl exec` into its pod (same PID namespace: status
    // sees its keepalived); otherwise a one-off container of the same pod.
    const dockerArgs = running ? ["exec", running, ...this.entrypoint, ...argv] : [
      "run",
      "--rm",
      "--name",
      this.#name(cluster, node, `${command}-${++this.#counter}`),
      ...flags,
      this.image,
      ...argv,
    ];
    const r = await this.docker.exec(dockerArgs, { timeoutMs });
    return {
      code: r.code,
      stdout: r.stdout,
      stderr: r.stderr.split("\n").map(jsonLogToText).filter((l) => l !== undefined).join("\n"),
    };
  }

  #destroyed: Promise<void> | undefined;

  destroy(): Promise<void> {
    this.#destroyed ??= (async () => {
      await this.docker.removeContainers(this.#containers.splice(0));
      await this.daemon?.stop();
    })();
    return this.#destroyed;
  }
}

/** An AgentProcess whose child starts once `ready` resolves (log lines flow from then on). */
function lazyAgent(
  node: SimNode,
  ready: Promise<Deno.ChildProcess>,
  kill: (signal: Deno.Signal) => void,
): AgentProcess {
  let inner: AgentProcess | undefined;
  const lines: string[] = [];
  const started = ready.then((child) => {
    inner = watchAgent(node, child, kill, jsonLogToText);
    return inner;
  });
  started.catch((error) => lines.push(`[sim] the agent container did not start: ${error}`));
  return {
    node,
    get lines() {
      return inner?.lines ?? lines;
    },
    get pid() {
      return inner?.pid ?? 0;
    },
    async stop(signal) {
      return await (await started).stop(signal);
    },
    async waitFor(pattern, timeoutMs, since) {
      return await (await started).waitFor(pattern, timeoutMs, since);
    },
  };
}
