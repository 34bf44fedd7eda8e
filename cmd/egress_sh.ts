/**
 * egress.sh's command line, read the way its GNU getopt read it, so that an
 * old DaemonSet's `args` work unchanged on our image (whose entrypoint is
 * mod.ts): flags with no command are `run`; a long option may be abbreviated
 * as long as the abbreviation is unambiguous; an empty value means the
 * default (`${2:-$DEFAULT}` in the script). Commander already reads the rest
 * of getopt's forms: `--flag=value`, `-u5`, clusters such as `-di eth0`.
 */

/** One long option of a command, as commander declares it. */
export interface LongOption {
  /** "--update-interval" */
  readonly long: string;
  /** "-u" */
  readonly short?: string;
  /** Whether it takes a value (`<value>` or `[value]`). */
  readonly takesValue: boolean;
}

/** egress.sh's options (getopt --longoptions), the only ones an old command line can hold. */
export const EGRESS_SH_OPTIONS: readonly string[] = [
  "--delete",
  "--help",
  "--interface",
  "--pod-subnet",
  "--vip-routeid-mappings",
  "--service-subnet",
  "--update-interval",
  "--podip-vip-mappings",
];

/** egress.sh's options with a value (all but -d and -h): empty means the script's default. */
const DEFAULTED_WHEN_EMPTY = new Set(
  EGRESS_SH_OPTIONS.filter((o) => o !== "--delete" && o !== "--help"),
);

/** Thrown for a command line that getopt would have refused too. */
export class EgressShUsageError extends Error {}

/**
 * The long option a (possibly abbreviated) name stands for, by getopt_long's
 * rule: an exact name wins, else the one option it abbreviates. Where it
 * abbreviates several, egress.sh's own option wins (an old command line
 * cannot hold a new option); otherwise it is ambiguous.
 */
export function resolveLongOption(
  name: string,
  options: readonly LongOption[],
): LongOption | undefined {
  const exact = options.find((o) => o.long === name);
  if (exact) return exact;
  const matches = options.filter((o) => o.long.startsWith(name));
  if (matches.length <= 1) return matches[0];
  const old = matches.filter((o) => EGRESS_SH_OPTIONS.includes(o.long));
  if (old.length === 1) return old[0];
  throw new EgressShUsageError(
    `option '${name}' is ambiguous; possibilities: ${matches.map((o) => `'${o.long}'`).join(" ")}`,
  );
}

/**
 * Rewrites a `run` command line (without the command) into the form
 * commander reads: abbreviations spelled out, egress.sh's options with an
 * empty value dropped (the default applies). Everything after `--`, and
 * every value, is left as it is.
 */
export function expandRunArgs(args: readonly string[], options: readonly LongOption[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      out.push(...args.slice(i));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq < 0 ? arg : arg.slice(0, eq);
      const option = resolveLongOption(name, options);
      if (!option) {
        out.push(arg); // commander names the unknown option
        continue;
      }
      const inline = eq < 0 ? undefined : arg.slice(eq + 1);
      const value = inline ?? (option.takesValue ? args[i + 1] : undefined);
      if (option.takesValue && inline === undefined && i + 1 < args.length) i++;
      if (option.takesValue && value === "" && DEFAULTED_WHEN_EMPTY.has(option.long)) continue;
      out.push(inline === undefined ? option.long : `${option.long}=${inline}`);
      if (option.takesValue && inline === undefined && value !== undefined) out.push(value);
      continue;
    }
    if (arg.startsWith("-") && arg.length > 1) {
      // A cluster of short flags ("-di"), the last one perhaps with its value ("-ieth0").
      const short = shortWithValue(arg, options);
      if (short && short.value === undefined && i + 1 < args.length) {
        const value = args[++i];
        if (value === "" && DEFAULTED_WHEN_EMPTY.has(short.option.long)) {
          if (short.flagsBefore !== "-") out.push(short.flagsBefore); // "-di ''" keeps -d
          continue;
        }
        out.push(arg, value);
        continue;
      }
      out.push(arg);
      continue;
    }
    out.push(arg);
  }
  return out;
}

/**
 * The short option of a cluster that takes a value, if any ("-di" → -i with
 * its value in the next argument; "-ieth0" → -i with "eth0"), and the
 * cluster's flags before it.
 */
function shortWithValue(
  arg: string,
  options: readonly LongOption[],
): { option: LongOption; value?: string; flagsBefore: string } | undefined {
  for (let j = 1; j < arg.length; j++) {
    const option = options.find((o) => o.short === `-${arg[j]}`);
    if (!option) return undefined; // commander names the unknown flag
    if (option.takesValue) {
      const rest = arg.slice(j + 1);
      return { option, value: rest === "" ? undefined : rest, flagsBefore: arg.slice(0, j) };
    }
  }
  return undefined;
}

/**
 * An egress.sh command line for the program: flags with no command run the
 * agent (`mod.ts --update-interval=5 …` = `mod.ts run --update-interval=5 …`,
 * and `mod.ts --help` shows run's flags, as `egress.sh --help` did); `run`'s
 * own arguments are read as getopt read them.
 */
export function egressShCommandLine(
  args: readonly string[],
  runOptions: readonly LongOption[],
): string[] {
  if (args.length === 0) return [];
  const [first, ...rest] = args;
  if (first.startsWith("-") && first !== "--") return ["run", ...expandRunArgs(args, runOptions)];
  if (first === "run") return ["run", ...expandRunArgs(rest, runOptions)];
  return [...args];
}
