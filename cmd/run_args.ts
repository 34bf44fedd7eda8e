/**
 * `run`'s command line read without commander. A one-shot run (a cron job,
 * the old DaemonSet's loop) pays for its whole process, and loading
 * commander, a CommonJS package run through Node compatibility, was ~40 ms
 * of its ~120 ms budget. So the usual `run` line is read here, exactly as
 * commander reads it (same options object: camel-cased keys, defaults, list
 * flags through `collectList`, getopt's forms `-ieth0`, `-di eth0`,
 * `--flag=value`, last value wins); anything else (help, an unknown or
 * malformed flag, an operand, `--`) is not read here at all: the caller
 * hands that line to commander, which prints the help or the error as before.
 * tests/run_args.test.ts: equal to commander's options for any line read here.
 */
import type { LongOption } from "./egress_sh.ts";
import { collectList, type FlagSpec } from "./options.ts";

/** A flag's letters as commander reads them from its spec. */
export interface FlagShape extends LongOption {
  /** Commander's attribute name: "--podip-vip-mappings" → "podipVipMappings". */
  readonly key: string;
  readonly spec: FlagSpec;
}

/** "-i, --interface <name>" → short -i, long --interface, takes a value, key "interface". */
export function flagShape(spec: FlagSpec): FlagShape {
  const match = /^(?:(-[A-Za-z]), )?(--[a-z][a-z0-9-]*)(?: <[^>]+>)?$/.exec(spec.flags);
  // Only the forms our specs use: a required value (<value>) or none.
  const long = match?.[2];
  if (!long || long.startsWith("--no-")) throw new Error(`unsupported flag spec ${spec.flags}`);
  const key = long.slice(2).replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
  return {
    ...(match![1] ? { short: match![1] } : {}),
    long,
    takesValue: spec.flags.endsWith(">"),
    key,
    spec,
  };
}

/** `run`'s long options for reading an egress.sh command line (cmd/egress_sh.ts), help last as commander lists it. */
export function runLongOptions(specs: readonly FlagSpec[]): LongOption[] {
  return [
    ...specs.map(flagShape).map(({ long, short, takesValue }) => ({ long, short, takesValue })),
    { long: "--help", short: "-h", takesValue: false },
  ];
}

/**
 * The options commander's `run` action would get for `args` (the words
 * after `run`), or undefined where commander must read the line: it holds
 * help, an unknown flag, a flag without its value, a value given to a flag
 * that takes none, an operand or `--`.
 */
export function readRunArgs(
  args: readonly string[],
  specs: readonly FlagSpec[],
): Record<string, unknown> | undefined {
  const shapes = specs.map(flagShape);
  const byFlag = new Map<string, FlagShape>();
  for (const shape of shapes) {
    byFlag.set(shape.long, shape);
    if (shape.short) byFlag.set(shape.short, shape);
  }
  const options: Record<string, unknown> = {};
  for (const { key, spec } of shapes) {
    if (spec.defaultValue !== undefined) options[key] = spec.defaultValue;
  }
  const set = (shape: FlagShape, value?: string) => {
    if (!shape.takesValue) options[shape.key] = true;
    else if (shape.spec.list) {
      options[shape.key] = collectList(
        value!,
        options[shape.key] as string[] | undefined,
        shape.spec.defaultValue as string[],
      );
    } else options[shape.key] = value;
  };
  let i = 0;
  // The rest of a cluster of short flags ("-di" after -d: "-i"), read as the next word.
  let group: string | undefined;
  while (i < args.length || group !== undefined) {
    const arg = group ?? args[i++];
    group = undefined;
    if (arg.length < 2 || arg[0] !== "-" || arg === "--") return undefined;
    const exact = byFlag.get(arg);
    if (exact) {
      if (!exact.takesValue) set(exact);
      else if (i < args.length) set(exact, args[i++]);
      else return undefined;
      continue;
    }
    if (arg.length > 2 && arg[1] !== "-") {
      const first = byFlag.get(`-${arg[1]}`);
      if (!first) return undefined;
      if (first.takesValue) set(first, arg.slice(2));
      else {
        set(first);
        group = `-${arg.slice(2)}`;
      }
      continue;
    }
    const eq = arg.indexOf("=");
    const named = eq > 2 ? byFlag.get(arg.slice(0, eq)) : undefined;
    if (!arg.startsWith("--") || !named?.takesValue) return undefined;
    set(named, arg.slice(eq + 1));
  }
  return options;
}
