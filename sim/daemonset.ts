/**
 * The agent's pod as deploy/daemonset.yaml declares it, read (never written
 * twice) so that the simulator can run the image exactly as the kubelet
 * would: the container's arguments and environment, its security context,
 * its hostPath mounts and its resource limits. Pure: parsing, and the
 * translation to `docker run` flags.
 */
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { describeIssues } from "../core/schema.ts";

const EnvVar = z.object({
  name: z.string().min(1),
  value: z.string().optional(),
  valueFrom: z.object({ fieldRef: z.object({ fieldPath: z.string() }).strict() }).strict()
    .optional(),
}).strict();

const VolumeMount = z.object({
  name: z.string(),
  mountPath: z.string().startsWith("/"),
  readOnly: z.boolean().optional(),
  mountPropagation: z.enum(["None", "HostToContainer"]).optional(),
}).strict();

const HOST_PATH_TYPES = ["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File"] as const;

const Volume = z.object({
  name: z.string(),
  hostPath: z.object({
    path: z.string().startsWith("/"),
    type: z.enum(HOST_PATH_TYPES).optional(),
  }).strict(),
}).strict();

const SecurityContext = z.object({
  privileged: z.boolean().optional(),
  allowPrivilegeEscalation: z.boolean().optional(),
  runAsUser: z.number().int().optional(),
  runAsGroup: z.number().int().optional(),
  runAsNonRoot: z.boolean().optional(),
  readOnlyRootFilesystem: z.boolean().optional(),
  capabilities: z.object({
    add: z.array(z.string()).optional(),
    drop: z.array(z.string()).optional(),
  }).strict().optional(),
  seccompProfile: z.object({
    type: z.enum(["RuntimeDefault", "Unconfined", "Localhost"]),
    localhostProfile: z.string().optional(),
  }).strict().optional(),
  // No SELinux or AppArmor on the simulator's machines: accepted, not enforced.
  seLinuxOptions: z.record(z.string(), z.string()).optional(),
  appArmorProfile: z.object({ type: z.string() }).passthrough().optional(),
}).strict();

const Quantity = z.union([z.string(), z.number()]);
const Resources = z.object({
  requests: z.record(z.string(), Quantity).optional(),
  limits: z.record(z.string(), Quantity).optional(),
});

const Container = z.object({
  name: z.string(),
  image: z.string(),
  args: z.array(z.string()).default([]),
  env: z.array(EnvVar).default([]),
  securityContext: SecurityContext.default({}),
  volumeMounts: z.array(VolumeMount).default([]),
  resources: Resources.default({}),
});

const DaemonSet = z.object({
  kind: z.literal("DaemonSet"),
  metadata: z.object({ name: z.string(), namespace: z.string().default("default") }),
  spec: z.object({
    template: z.object({
      spec: z.object({
        hostNetwork: z.literal(true, { message: "the agent needs hostNetwork: true" }),
        containers: z.array(Container).length(1, { message: "exactly one container (the agent)" }),
        volumes: z.array(Volume).default([]),
      }),
    }),
  }),
});

export type EnvSpec = z.output<typeof EnvVar>;
export type SecurityContextSpec = z.output<typeof SecurityContext>;

/** One hostPath volume as the container sees it. */
export interface HostMount {
  readonly name: string;
  readonly hostPath: string;
  readonly type: typeof HOST_PATH_TYPES[number];
  readonly mountPath: string;
  readonly readOnly: boolean;
}

/** The agent container of the DaemonSet, with its volumes resolved. */
export interface AgentPodSpec {
  readonly namespace: string;
  readonly daemonSet: string;
  readonly image: string;
  /** The container's args: the command (`run`) and its flags. */
  readonly args: readonly string[];
  readonly env: readonly EnvSpec[];
  readonly securityContext: SecurityContextSpec;
  readonly mounts: readonly HostMount[];
  readonly resources: z.output<typeof Resources>;
}

/** Parses the DaemonSet's YAML; throws naming the file and the field on anything it cannot run. */
export function parseDaemonSet(text: string, origin = "deploy/daemonset.yaml"): AgentPodSpec {
  const parsed = DaemonSet.safeParse(parseYaml(text));
  if (!parsed.success) throw new Error(`${origin}: ${describeIssues(parsed.error)}`);
  const ds = parsed.data;
  const pod = ds.spec.template.spec;
  const [container] = pod.containers;
  const volumes = new Map(pod.volumes.map((v) => [v.name, v]));
  const mounts = container.volumeMounts.map((m): HostMount => {
    const volume = volumes.get(m.name);
    if (!volume) throw new Error(`${origin}: volumeMount ${m.name} names no hostPath volume`);
    return {
      name: m.name,
      hostPath: volume.hostPath.path,
      type: volume.hostPath.type ?? "",
      mountPath: m.mountPath,
      readOnly: m.readOnly ?? false,
    };
  });
  return {
    namespace: ds.metadata.namespace,
    daemonSet: ds.metadata.name,
    image: container.image,
    args: container.args,
    env: container.env,
    securityContext: container.securityContext,
    mounts,
    resources: container.resources,
  };
}

/** Reads deploy/daemonset.yaml of this checkout. */
export async function readDaemonSet(
  path = new URL("../deploy/daemonset.yaml", import.meta.url).pathname,
): Promise<AgentPodSpec> {
  return parseDaemonSet(await Deno.readTextFile(path), path);
}

/** A Kubernetes quantity in bytes ("384Mi", "1G", "1024"). */
export function bytesOf(quantity: string | number): number {
  const match = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$/.exec(String(quantity));
  if (!match) throw new Error(`not a memory quantity: ${quantity}`);
  const units: Record<string, number> = {
    "": 1,
    Ki: 1024,
    Mi: 1024 ** 2,
    Gi: 1024 ** 3,
    Ti: 1024 ** 4,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
  };
  return Math.round(Number(match[1]) * units[match[2] ?? ""]);
}

/** A Kubernetes CPU quantity in millicores ("50m", "0.5", "2"). */
export function milliCpuOf(quantity: string | number): number {
  const match = /^(\d+(?:\.\d+)?)(m)?$/.exec(String(quantity));
  if (!match) throw new Error(`not a CPU quantity: ${quantity}`);
  return Math.round(Number(match[1]) * (match[2] ? 1 : 1000));
}

/** What a pod field reference resolves to on a node (the kubelet's downward API). */
export interface PodFacts {
  readonly nodeName: string;
  readonly podName: string;
  readonly namespace: string;
  /** hostNetwork: the pod's IP is the node's. */
  readonly nodeIp: string;
}

/** The container's environment, field references resolved as the kubelet does. */
export function resolveEnv(env: readonly EnvSpec[], facts: PodFacts): Record<string, string> {
  const fields: Record<string, string> = {
    "spec.nodeName": facts.nodeName,
    "metadata.name": facts.podName,
    "metadata.namespace": facts.namespace,
    "status.podIP": facts.nodeIp,
    "status.hostIP": facts.nodeIp,
  };
  const out: Record<string, string> = {};
  for (const e of env) {
    if (e.valueFrom) {
      const value = fields[e.valueFrom.fieldRef.fieldPath];
      if (value === undefined) {
        throw new Error(
          `env ${e.name}: fieldRef ${e.valueFrom.fieldRef.fieldPath} is not simulated`,
        );
      }
      out[e.name] = value;
    } else out[e.name] = e.value ?? "";
  }
  return out;
}

/**
 * `docker run` flags for the security context and resources, as the kubelet
 * asks of its runtime: capabilities, privilege, user, no-new-privileges,
 * seccomp (the runtime's default profile unless Unconfined: stricter than a
 * kubelet without --seccomp-default, so what works here works there),
 * read-only root, memory and CPU.
 */
export function securityFlags(spec: AgentPodSpec): string[] {
  const sc = spec.securityContext;
  const flags: string[] = [];
  if (sc.privileged) flags.push("--privileged");
  for (const cap of sc.capabilities?.drop ?? []) flags.push("--cap-drop", cap);
  for (const cap of sc.capabilities?.add ?? []) flags.push("--cap-add", cap);
  if (sc.allowPrivilegeEscalation === false) flags.push("--security-opt", "no-new-privileges");
  if (sc.seccompProfile?.type === "Unconfined") flags.push("--security-opt", "seccomp=unconfined");
  if (sc.seccompProfile?.type === "Localhost") {
    throw new Error("seccompProfile Localhost is not simulated");
  }
  if (sc.runAsUser !== undefined || sc.runAsGroup !== undefined) {
    flags.push(
      "--user",
      `${sc.runAsUser ?? 0}${sc.runAsGroup !== undefined ? `:${sc.runAsGroup}` : ""}`,
    );
  }
  if (sc.runAsNonRoot && (sc.runAsUser ?? 0) === 0) {
    throw new Error("runAsNonRoot with user 0: the kubelet would refuse to start the container");
  }
  if (sc.readOnlyRootFilesystem) flags.push("--read-only");
  const { limits = {}, requests = {} } = spec.resources;
  if (limits.memory !== undefined) flags.push("--memory", String(bytesOf(limits.memory)));
  if (limits.cpu !== undefined) flags.push("--cpus", String(milliCpuOf(limits.cpu) / 1000));
  // The kubelet's cpu.shares for a request: milli-CPUs * 1024 / 1000, at least 2.
  if (requests.cpu !== undefined) {
    flags.push(
      "--cpu-shares",
      String(Math.max(2, Math.floor(milliCpuOf(requests.cpu) * 1024 / 1000))),
    );
  }
  return flags;
}

/** One option of an agent command: its long and short names, and whether it takes a value. */
export interface FlagDef {
  readonly long: string;
  readonly short?: string;
  readonly takesValue: boolean;
}

/** Flags parsed into (long name, value) pairs; `true` for a switch. */
export function parseFlags(
  args: readonly string[],
  defs: readonly FlagDef[],
): [string, string | true][] {
  const byName = new Map<string, FlagDef>();
  for (const d of defs) {
    byName.set(d.long, d);
    if (d.short) byName.set(d.short, d);
  }
  const out: [string, string | true][] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const def = byName.get(name);
    if (!def) throw new Error(`unknown agent flag ${name}`);
    if (!def.takesValue) out.push([def.long, true]);
    else if (eq > 0) out.push([def.long, arg.slice(eq + 1)]);
    else {
      if (i + 1 >= args.length) throw new Error(`agent flag ${name} needs a value`);
      out.push([def.long, args[++i]]);
    }
  }
  return out;
}

/**
 * The agent's argv: the DaemonSet's flags, where `overrides` name a flag
 * theirs replace every occurrence (repeatable flags too); flags the command
 * does not take are dropped (the DaemonSet's are for `run`). Values are
 * written `--flag=value`, as the DaemonSet does.
 */
export function mergeAgentArgs(
  daemonSetFlags: readonly string[],
  overrides: readonly string[],
  defs: readonly FlagDef[],
  accepted: (long: string) => boolean = () => true,
): string[] {
  const base = parseFlags(daemonSetFlags, defs);
  const mine = parseFlags(overrides, defs);
  const replaced = new Set(mine.map(([name]) => name));
  return [...base.filter(([name]) => !replaced.has(name)), ...mine]
    .filter(([name]) => accepted(name))
    .map(([name, value]) => (value === true ? name : `${name}=${value}`));
}
