/**
 * `run`'s command line read without commander (cmd/run_args.ts): for every
 * line it reads, the options are exactly the ones commander gives `run`'s
 * action; lines it does not read (help, errors) are left to commander; and
 * the modules a one-shot run loads hold none of the packages it need not load.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { buildProgram } from "../cmd/program.ts";
import { RUN_FLAGS } from "../cmd/options.ts";
import { flagShape, readRunArgs, runLongOptions } from "../cmd/run_args.ts";
import type { Host } from "../cmd/system.ts";

/** The options commander hands `run`'s action for `args`, or undefined where it refuses the line. */
async function commanderOptions(args: readonly string[]) {
  const program = buildProgram({} as Host, () => {});
  const run = program.commands.find((c) => c.name() === "run")!;
  let options: Record<string, unknown> | undefined;
  run.action(
    ((o: Record<string, unknown>) => {
      options = { ...o };
    }) as never,
  );
  const silent = { writeOut: () => {}, writeErr: () => {}, outputError: () => {} };
  program.configureOutput(silent);
  run.configureOutput(silent);
  try {
    await program.parseAsync(["run", ...args], { from: "user" });
  } catch {
    return undefined;
  }
  return options;
}

const shapes = RUN_FLAGS.map(flagShape);
const valued = shapes.filter((s) => s.takesValue);
const booleans = shapes.filter((s) => !s.takesValue);
const value = fc.constantFrom(
  "eth0",
  "",
  "10.0.0.0/8,10.1.0.0/16",
  " 10.2.0.0/16 , ",
  "5",
  "-d",
  "--help",
  "a=b",
  "json",
);

/** Words commander reads as `run`'s flags. */
const wellFormed = fc.oneof(
  fc.tuple(fc.constantFrom(...valued), value, fc.nat(3)).map(([s, v, form]) =>
    form === 0
      ? [s.long, v]
      : form === 1
      ? [`${s.long}=${v}`]
      : s.short && form === 2
      ? [s.short, v]
      : s.short && v !== ""
      ? [`${s.short}${v}`]
      : [s.long, v]
  ),
  fc.constantFrom(...booleans).map((s) => [s.short ?? s.long]),
  fc.constantFrom(...booleans).map((s) => [s.long]),
  // A cluster of short flags, the last one perhaps taking a value ("-di eth0", "-dieth0").
  fc.tuple(
    fc.array(fc.constantFrom(...booleans.filter((s) => s.short)), { minLength: 1, maxLength: 3 }),
    fc.option(fc.constantFrom(...valued.filter((s) => s.short))),
    value,
    fc.boolean(),
  ).map(([flags, last, v, attached]) => {
    const letters = flags.map((s) => s.short!.slice(1)).join("");
    if (!last) return [`-${letters}`];
    return attached && v !== ""
      ? [`-${letters}${last.short!.slice(1)}${v}`]
      : [`-${letters}${last.short!.slice(1)}`, v];
  }),
);

/** Words commander refuses or answers with help. */
const noise = fc.constantFrom(
  ["--"],
  ["-h"],
  ["--help"],
  ["-dh"],
  ["operand"],
  ["-"],
  ["-z"],
  ["--unknown"],
  ["--inter"],
  ["--dry-run=yes"],
  ["-i"],
  ["-5"],
  ["-d-i=eth0"],
  ["--=x"],
);

Deno.test("run args: every line read without commander gives exactly commander's options", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.oneof({ weight: 4, arbitrary: wellFormed }, { weight: 1, arbitrary: noise }), {
        maxLength: 8,
      }),
      async (words) => {
        const args = words.flat();
        const fast = readRunArgs(args, RUN_FLAGS);
        if (fast !== undefined) assert.deepEqual(fast, await commanderOptions(args));
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("run args: the lines commander reads as flags are all read, none left to commander", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(wellFormed, { maxLength: 8 }), async (words) => {
      const args = words.flat();
      const expected = await commanderOptions(args);
      assert.notEqual(expected, undefined);
      assert.deepEqual(readRunArgs(args, RUN_FLAGS), expected);
    }),
    { numRuns: 300 },
  );
});

Deno.test("run args: help, operands, unknown flags and missing values are left to commander", async () => {
  for (
    const args of [
      ["-h"],
      ["--help"],
      ["-dh"],
      ["-i", "eth0", "--help"],
      ["extra"],
      ["--", "-d"],
      ["-z"],
      ["--unknown"],
      ["--dry-run=yes"],
      ["-i"],
      ["-di"],
      ["-"],
      ["-5"],
    ]
  ) {
    assert.equal(readRunArgs(args, RUN_FLAGS), undefined, args.join(" "));
    assert.equal(await commanderOptions(args), undefined, args.join(" "));
  }
  // A value is a value, whatever it looks like (commander's rule for a flag that needs one).
  assert.equal(readRunArgs(["-i", "--help"], RUN_FLAGS)?.interface, "--help");
});

Deno.test("run args: run's long options in commander's order, help last", () => {
  const program = buildProgram({} as Host, () => {});
  const run = program.commands.find((c) => c.name() === "run")!;
  assert.deepEqual(runLongOptions(RUN_FLAGS), [
    ...run.options.map((o) => ({
      long: o.long!,
      short: o.short,
      takesValue: o.required || o.optional,
    })),
    { long: "--help", short: "-h", takesValue: false },
  ]);
});

/** The modules a module loads before any of its code runs: its static imports, transitively. */
async function staticGraph(path: string): Promise<string[]> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL(path, import.meta.url).pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  const info = JSON.parse(new TextDecoder().decode(output.stdout)) as {
    roots: string[];
    modules: {
      specifier: string;
      dependencies?: { code?: { specifier: string }; isDynamic?: boolean }[];
    }[];
    redirects: Record<string, string>;
  };
  const bySpecifier = new Map(info.modules.map((m) => [m.specifier, m]));
  const resolve = (s: string) => info.redirects[s] ?? s;
  const loaded = new Set<string>();
  const visit = (specifier: string) => {
    const s = resolve(specifier);
    if (loaded.has(s)) return;
    loaded.add(s);
    for (const d of bySpecifier.get(s)?.dependencies ?? []) {
      if (d.code && !d.isDynamic) visit(d.code.specifier);
    }
  };
  visit(info.roots[0]);
  return [...loaded];
}

function assertNone(names: readonly string[], unwanted: readonly string[]) {
  for (const u of unwanted) assert.deepEqual(names.filter((n) => n.includes(u)), [], u);
}

Deno.test("run args: a one-shot run loads neither commander nor dax, yaml, prom-client or the Kubernetes client", async () => {
  const names = await staticGraph("../mod.ts");
  assertNone(names, ["commander", "dax", "yaml", "prom-client", "/cmd/kube/", "node:"]);
  // Sanity: the graph was read (the CLI and the core are there).
  assert.ok(names.some((n) => n.endsWith("/cmd/main.ts")));
});

Deno.test("run args: the running agent's placement and Kubernetes client load no dax (~20 MiB) and no yaml", async () => {
  for (const path of ["../cmd/keepalived.ts", "../cmd/kube/client.ts", "../cmd/kube/source.ts"]) {
    const names = await staticGraph(path);
    assertNone(names, ["commander", "dax", "yaml"]);
    assert.ok(names.some((n) => n.endsWith(path.slice(2))), path);
  }
});
