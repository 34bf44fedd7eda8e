/**
 * `deno task bench [section...] [--no-save]`: prints a table of figures per
 * section (never pass/fail) and appends them to bench/results.md with the
 * machine, date, commit and load average, so runs can be compared over time.
 *
 * Sections: planning, metrics (no root); apply, oneshot, react, agent, kube, forwarding and failover
 * (root: network namespaces).
 */
import $ from "dax";
import { isRoot } from "../cmd/tools.ts";
import {
  AGENT_NOTES,
  AGENT_RUNTIME,
  benchAgentFiles,
  DEFAULT_RUNTIME,
  renderAgent,
} from "./agent.ts";
import {
  APPLY_NOTES,
  applyLines,
  benchApply,
  benchOneShot,
  renderApply,
  renderOneShot,
} from "./apply.ts";
import { commitDescription, loadAverage, machineDescription, tearDownOnSignals } from "./lib.ts";
import {
  benchFailover,
  connectionLines,
  DIAGNOSTIC_FAULTS,
  failoverNotes,
  failoverNotes6,
  FAULTS,
  renderFailover,
  renderFailover6,
} from "./failover.ts";
import { benchForwarding, forwardingNotes, renderForwarding } from "./forwarding.ts";
import { benchPlanning, PLANNING_NOTES, renderPlanning } from "./planning.ts";
import { benchMetrics, METRICS_NOTES, renderMetrics } from "./metrics.ts";
import { benchReact, renderReact } from "./react.ts";
import { errorMessage } from "../core/errors.ts";
import {
  benchKubeDesign,
  createStepsNote,
  type Design,
  KUBE_NOTES,
  kubeLine,
  renderKube,
} from "./kube.ts";

/** What a section prints: its table and the notes that say how to read it. */
interface SectionResult {
  readonly table: string;
  readonly notes: readonly string[];
}

interface Section {
  readonly title: string;
  readonly needsRoot: boolean;
  run(): Promise<SectionResult>;
}

/** How the one-shot figures were taken (bench/apply.ts benchOneShot). */
const ONE_SHOT_NOTES = [
  `Each run, as the image's ENTRYPOINT starts it (no GLIBC_TUNABLES: an agent that keeps running sets malloc's itself, cmd/malloc.ts): ip netns exec <ns with eth0 192.0.2.11/24> deno run -A --cached-only --v8-flags=${AGENT_RUNTIME.DENO_V8_FLAGS} mod.ts run -i eth0 -p 10.0.0.0/8 -s 172.16.0.0/12 -v <pods> -r <vips> --state-dir <dir> --backend <backend> (1,000 pod files, 16 VIP files), from exec to exit; one run and delete first (not timed: V8's code cache is written then, as on a node that ran it before); per round first (no objects of ours), unchanged (in sync), then delete (not timed).`,
];

const sections: Record<string, Section> = {
  planning: {
    title: "Planning: snapshot → desired state → payload (pure core)",
    needsRoot: false,
    run: async () => ({ table: renderPlanning(await benchPlanning()), notes: PLANNING_NOTES }),
  },
  metrics: {
    title: "Metrics endpoint: work per scrape and prom-client's load cost",
    needsRoot: false,
    run: async () => ({ table: renderMetrics(await benchMetrics()), notes: METRICS_NOTES }),
  },
  apply: {
    title: "Applying in a network namespace",
    needsRoot: true,
    run: async () => {
      const figures = await benchApply();
      const lines = applyLines(figures);
      const oneShot = await benchOneShot();
      for (const line of lines) console.log(line);
      return {
        table: [lines.join("\n"), renderApply(figures), renderOneShot(oneShot)].join("\n\n"),
        notes: APPLY_NOTES,
      };
    },
  },
  oneshot: {
    title: "One-shot `mod.ts run` (no -u) as a whole process, 1,000 mappings (also part of apply)",
    needsRoot: true,
    run: async () => ({ table: renderOneShot(await benchOneShot()), notes: ONE_SHOT_NOTES }),
  },
  react: {
    title: "Reaction of a running agent (mod.ts run -u 300) to a VIP moving",
    needsRoot: true,
    run: async () => ({
      table: renderReact([...(await benchReact(1000)), ...(await benchReact(10000))]),
      notes: [
        "Time from `ip addr add/del` of the VIP until the agent logs the new role (after its transaction is in the kernel); the address monitor triggers the pass, not the 300 s resync.",
      ],
    }),
  },
  agent: {
    title: "The running agent: memory and pod event → rules in force, 10,000 pods",
    needsRoot: true,
    run: async () => ({
      table: renderAgent([
        await benchAgentFiles(DEFAULT_RUNTIME),
        await benchAgentFiles(AGENT_RUNTIME),
      ]),
      notes: AGENT_NOTES,
    }),
  },
  kube: {
    title:
      "Kubernetes source at scale: watch-all (every agent watches every Pod) vs slices (the controller publishes EgressSlices), 3 real agents and a fleet of 500 watchers",
    needsRoot: true,
    run: async () => {
      const sizes = (Deno.env.get("BENCH_KUBE_PODS") ?? "10000,50000,100000").split(",")
        .map(Number);
      const watchers = Number(Deno.env.get("BENCH_KUBE_WATCHERS") ?? 500);
      const designs = (Deno.env.get("BENCH_KUBE_DESIGNS") ?? "watch-all,slices").split(
        ",",
      ) as Design[];
      const figures = [];
      const failures: string[] = [];
      for (const pods of sizes) {
        for (const design of designs) {
          console.error(`[kube] ${pods} pods, ${design}`);
          try {
            const f = await benchKubeDesign(pods, design, { watchers });
            console.log(kubeLine(f));
            figures.push(f);
          } catch (error) {
            // One size that cannot run here must not lose the others' figures.
            const line = `kube ${design} ${pods} pods: not measured: ${errorMessage(error)}`;
            console.error(line);
            failures.push(line);
          }
        }
      }
      const lines = [...figures.map(kubeLine), ...failures];
      return {
        table: [lines.join("\n"), renderKube(figures)].join("\n\n"),
        notes: [...KUBE_NOTES, ...figures.map(createStepsNote)],
      };
    },
  },
  forwarding: {
    title: "Forwarding cost in the simulator (iperf3 throughput, new connections/s)",
    needsRoot: true,
    run: async () => {
      const options = {
        rounds: Number(Deno.env.get("BENCH_ROUNDS") ?? 7),
        seconds: Number(Deno.env.get("BENCH_SECONDS") ?? 2),
        progress: (line: string) => console.error(`[forwarding] ${line}`),
        // BENCH_BACKEND=nftables: the same rounds on the nftables backend.
        backend: Deno.env.get("BENCH_BACKEND") === "nftables"
          ? "nftables" as const
          : "iptables" as const,
      };
      const result = await benchForwarding(options);
      return { table: renderForwarding(result), notes: forwardingNotes(result, options) };
    },
  },
  failover: {
    title:
      "VIP failover in the simulator (keepalived mode, NAT state sync): gap, wrong-source packets, established connections",
    needsRoot: true,
    run: async () => {
      const unicast = Deno.env.get("BENCH_VRRP") === "unicast";
      const advert = Deno.env.get("BENCH_ADVERT");
      const advertInterval = advert ? Number(advert) : undefined;
      const guardEnv = Deno.env.get("BENCH_GUARD");
      const guard = guardEnv === "nodes" || guardEnv === "off" ? guardEnv : undefined;
      const rogue = Deno.env.get("BENCH_ROGUE") === "1";
      const only = Deno.env.get("BENCH_FAULTS")?.split(",").map((f) => f.trim());
      const faults = only
        ? [...FAULTS, ...DIAGNOSTIC_FAULTS].filter((f) => only.includes(f))
        : undefined;
      const backendEnv = Deno.env.get("BENCH_BACKEND");
      const backend = backendEnv === "nftables" || backendEnv === "iptables"
        ? backendEnv
        : undefined;
      const figures = await benchFailover({
        runs: Number(Deno.env.get("BENCH_RUNS") ?? 5),
        unicast,
        advertInterval,
        guard,
        rogue,
        faults,
        syncPeers: Deno.env.get("BENCH_SYNC") === "peers",
        holderPod: Deno.env.get("BENCH_HOLDER_POD") === "1",
        ...(backend ? { backend } : {}),
        progress: (line: string) => console.error(`[failover] ${line}`),
      });
      return {
        // The line per fault, each alone on its line (read by scripts).
        table: `${renderFailover(figures)}\n\n${connectionLines(figures).join("\n")}\n\n${
          renderFailover6(figures)
        }`,
        notes: [
          ...failoverNotes(figures, unicast, advertInterval, guard, rogue, backend),
          ...failoverNotes6(figures),
        ],
      };
    },
  },
};

const RESULTS = new URL("./results.md", import.meta.url).pathname;

/** Scripts started in subprocesses or namespaces with --cached-only. */
const WORKERS = [
  "../mod.ts",
  "../sim/reporter.ts",
  "../sim/kube_api.ts",
  "../sim/stream_sender.ts",
  "./planning_worker.ts",
  "./apply_worker.ts",
  "./accept_server.ts",
  "./connect_worker.ts",
].map((p) => new URL(p, import.meta.url).pathname);

async function main(args: string[]): Promise<number> {
  tearDownOnSignals();
  const save = !args.includes("--no-save");
  const names = args.filter((a) => !a.startsWith("--"));
  const wanted = names.length > 0 ? names : Object.keys(sections);
  const unknown = wanted.filter((n) => !(n in sections));
  if (unknown.length > 0) {
    console.error(
      `unknown section(s) ${unknown.join(", ")}; known: ${Object.keys(sections).join(", ")}`,
    );
    return 2;
  }
  await $`${Deno.execPath()} cache ${WORKERS}`.quiet();
  const header = [
    `## ${new Date().toISOString().replace(/\.\d+Z$/, "Z")} · commit ${await commitDescription()}`,
    "",
    `Machine: ${await machineDescription()}`,
  ].join("\n");
  console.log(header);
  const blocks: string[] = [header];
  for (const name of wanted) {
    const section = sections[name];
    const command = `deno task bench ${name}`;
    const loadBefore = loadAverage();
    let body: string;
    if (section.needsRoot && !isRoot()) {
      body = "skipped: needs root (network namespaces)";
    } else {
      const result = await section.run();
      body = [
        "```",
        result.table,
        "```",
        "",
        ...result.notes.map((n) => `- ${n}`),
      ].join("\n");
    }
    const block = [
      `### ${name}: ${section.title}`,
      "",
      `Command: \`${command}\` · load average (1 min) ${loadBefore.toFixed(2)} before, ${
        loadAverage().toFixed(2)
      } after`,
      "",
      body,
    ].join("\n");
    console.log("\n" + block);
    blocks.push(block);
  }
  if (save) {
    await Deno.writeTextFile(RESULTS, "\n" + blocks.join("\n\n") + "\n", { append: true });
    // Kept in the repository's format, so that `deno task check` stays green.
    await $`${Deno.execPath()} fmt --quiet ${RESULTS}`;
    console.log(`\nappended to ${RESULTS}`);
  }
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
