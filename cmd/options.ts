/**
 * Command-line flags: the old egress.sh flags (same letters, names, defaults)
 * plus the new ones, declared once for every command and validated by zod.
 * A bad flag is a usage error naming the flag and the value.
 */
import { z } from "zod";
import { DATAPATH_DEFAULTS, DatapathConfig, describeIssues } from "../core/schema.ts";

/** A flag every command shares: letters, description, default. */
export interface FlagSpec {
  readonly flags: string;
  readonly description: string;
  readonly defaultValue?: string | boolean | string[];
  /** Repeatable and comma-separated: "-p a -p b" or "-p a,b". */
  readonly list?: boolean;
}

export const DEFAULT_PODIP_VIP_DIR = "/etc/kube-egress/podip_vip_mapping/";
export const DEFAULT_VIP_ROUTEID_DIR = "/etc/kube-egress/vip_routeid_mapping/";

/** Flags that shape the datapath and name the inputs (every command). */
export const DATAPATH_FLAGS: readonly FlagSpec[] = [
  {
    flags: "-i, --interface <name>",
    description: "LAN interface that holds the VIPs",
    defaultValue: DATAPATH_DEFAULTS.interface,
  },
  {
    flags: "-p, --pod-subnet <cidr>",
    description: "pod range(s); repeat or comma-separate",
    defaultValue: [...DATAPATH_DEFAULTS.podCidrs],
    list: true,
  },
  {
    flags: "-s, --service-subnet <cidr>",
    description: "service range(s); repeat or comma-separate",
    defaultValue: [...DATAPATH_DEFAULTS.serviceCidrs],
    list: true,
  },
  {
    flags: "-v, --podip-vip-mappings <dir>",
    description: "directory of files named <pod IP> containing <VIP>",
    defaultValue: DEFAULT_PODIP_VIP_DIR,
  },
  {
    flags: "-r, --vip-routeid-mappings <dir>",
    description: "directory of files named <VIP> containing <route id 1-252>",
    defaultValue: DEFAULT_VIP_ROUTEID_DIR,
  },
  {
    flags: "--exclude-cidr <cidr>",
    description:
      "destination(s) never steered, besides pod and service ranges; repeat or comma-separate",
    defaultValue: [],
    list: true,
  },
  {
    flags: "--mark-mask <mask>",
    description:
      "fwmark bits we may use (8 consecutive bits; default keeps clear of kube-proxy, Calico, Cilium)",
    defaultValue: DATAPATH_DEFAULTS.markMask,
  },
  {
    flags: "--rule-priority <n>",
    description: "priority of our ip rules",
    defaultValue: String(DATAPATH_DEFAULTS.rulePriority),
  },
  {
    flags: "--route-protocol <n>",
    description: "route protocol number tagging our ip rules and routes",
    defaultValue: String(DATAPATH_DEFAULTS.routeProtocol),
  },
  { flags: "--log-format <format>", description: "text or json", defaultValue: "text" },
];

/** Flag labels for error messages, keyed by the config field they feed. */
const LABELS: Record<string, string> = {
  interface: "--interface",
  podCidrs: "--pod-subnet",
  serviceCidrs: "--service-subnet",
  excludeCidrs: "--exclude-cidr",
  markMask: "--mark-mask",
  rulePriority: "--rule-priority",
  routeProtocol: "--route-protocol",
  podSubnet: "--pod-subnet",
  serviceSubnet: "--service-subnet",
  excludeCidr: "--exclude-cidr",
  podipVipMappings: "--podip-vip-mappings",
  vipRouteidMappings: "--vip-routeid-mappings",
  updateInterval: "--update-interval",
  logFormat: "--log-format",
};

const integerText = z.string().regex(/^[0-9]+$/, { error: "must be a whole number" }).transform(
  Number,
);

/** What commander hands over (camel-cased flag names), checked and turned into settings. */
export const CommonFlags = z.object({
  interface: z.string(),
  podSubnet: z.array(z.string()),
  serviceSubnet: z.array(z.string()),
  excludeCidr: z.array(z.string()),
  markMask: z.string(),
  rulePriority: integerText,
  routeProtocol: integerText,
  podipVipMappings: z.string().min(1, { error: "must name a directory" }),
  vipRouteidMappings: z.string().min(1, { error: "must name a directory" }),
  logFormat: z.enum(["text", "json"], { error: 'must be "text" or "json"' }),
}).transform((flags, ctx) => {
  const config = DatapathConfig.safeParse({
    interface: flags.interface,
    podCidrs: flags.podSubnet,
    serviceCidrs: flags.serviceSubnet,
    excludeCidrs: flags.excludeCidr,
    markMask: flags.markMask,
    rulePriority: flags.rulePriority,
    routeProtocol: flags.routeProtocol,
  }, { reportInput: true });
  if (!config.success) {
    for (const issue of config.error.issues) ctx.addIssue({ ...issue, code: "custom" } as never);
    return z.NEVER;
  }
  return {
    config: config.data,
    podVipDir: flags.podipVipMappings,
    vipRouteDir: flags.vipRouteidMappings,
    logFormat: flags.logFormat,
  };
});
export type CommonSettings = z.output<typeof CommonFlags>;

/** `-u` as in egress.sh: seconds between passes; absent or empty = apply once and exit. */
export const updateInterval = z.union([z.undefined(), z.literal(""), z.string()]).transform(
  (text, ctx) => {
    if (text === undefined || text === "") return undefined;
    const seconds = Number(text);
    if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 86400) {
      ctx.addIssue({
        code: "custom",
        input: text,
        message: "must be a number of seconds between 0 and 86400",
      });
      return z.NEVER;
    }
    return seconds;
  },
);

/** Validates flags; on failure returns one message naming each bad flag. */
export function parseFlags<T extends z.ZodType>(
  schema: T,
  flags: unknown,
): { ok: true; value: z.output<T> } | { ok: false; message: string } {
  const parsed = schema.safeParse(flags, { reportInput: true });
  if (parsed.success) return { ok: true, value: parsed.data };
  return { ok: false, message: describeIssues(parsed.error, LABELS) };
}

/** Splits repeated, comma-separated list flags into one list. */
export function collectList(
  value: string,
  previous: string[] | undefined,
  defaults: readonly string[],
): string[] {
  const base = previous === undefined || previous === defaults ? [] : previous;
  return [...base, ...value.split(",").map((v) => v.trim()).filter(Boolean)];
}
