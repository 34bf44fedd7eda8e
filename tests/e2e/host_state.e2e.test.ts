/**
 * The machine's own state stays out: (1) agents started by hand in several
 * node namespaces of one machine with the default flags share one state
 * directory (namespaces do not separate files): the second is refused and
 * told why; (2) the unit suite passes on a machine where agents ran before,
 * with their files in /run/kube-egress and /etc/kube-egress and their
 * variables in the environment. The machine is shared: the "earlier agent's"
 * files live in overlays of /run and /etc inside a private mount namespace
 * (unshare), invisible to every other process.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type AgentProcess, modCommandLine, spawnAgent, startAgent } from "../../sim/agents.ts";
import { holdersOf, ranking, waitForPlacement } from "../../sim/placement.ts";
import { MACHINE_VARIABLES } from "../host_env.ts";
import { e2e, withCluster } from "./cluster.ts";

const VIP = "192.0.2.50";
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

Deno.test({
  name:
    "e2e host state: agents in several node namespaces with one default state directory: the second is refused, naming the owner",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      const [node1, node2] = cluster.nodes;
      await cluster.writeMappings({ [cluster.pod(1, 1).ip]: VIP }, { [VIP]: 5 });
      // The machine's /run/kube-egress, as every hand-started agent's default.
      const shared = join(cluster.workDir, "machine-run-kube-egress");
      const byHand = ["env", `KUBE_EGRESS_STATE_DIR=${shared}`];
      const run = (extra: string[] = []) =>
        modCommandLine(["run", ...cluster.agentFlags(), ...extra]);
      const agents: AgentProcess[] = [];
      try {
        const first = spawnAgent(node1, [...byHand, ...run(["-u", "30"])]);
        agents.push(first);
        await first.waitFor(/agent running/, 60_000);

        // Another node's agent: refused at once, with both namespaces and the fix.
        const second = await node2.ns.exec([...byHand, ...run(["-u", "30"])], {
          timeoutMs: 60_000,
        });
        assert.equal(second.code, 1, second.stderr);
        assert.match(
          second.stderr,
          new RegExp(
            `state directory ${escape(shared)} belongs to the kube-egress agent of another ` +
              `network namespace: pid ${first.pid} \\(node \\S+, since [^)]+\\) in network ` +
              `namespace ${node1.ns.name} net:\\[\\d+\\], while this process runs in ` +
              `${node2.ns.name} net:\\[\\d+\\]\\. .*need one --state-dir each`,
          ),
        );
        // One-shot commands there would record or give back node1's sysctls: refused too.
        for (
          const command of [run(), run(["-d"]), modCommandLine(["delete", ...cluster.agentFlags()])]
        ) {
          const r = await node2.ns.exec([...byHand, ...command], { timeoutMs: 60_000 });
          assert.equal(r.code, 1, `${command.join(" ")}: ${r.stderr}`);
          assert.match(r.stderr, /belongs to the kube-egress agent of another network namespace/);
        }
        // status shows node2's datapath, but not node1's VRRP state as node2's.
        const status = await node2.ns.exec(
          [
            ...byHand,
            ...modCommandLine(["status", ...cluster.agentFlags(), "--vip-mode", "keepalived"]),
          ],
          { timeoutMs: 60_000 },
        );
        assert.equal(status.code, 0, status.stderr);
        assert.match(status.stderr, /VRRP state not shown .*another network namespace/);
        assert.doesNotMatch(status.stdout, /placement:/);

        // A second agent on the same node waits for a predecessor, then is refused.
        const same = await node1.ns.exec([...byHand, ...run(["-u", "30"])], { timeoutMs: 60_000 });
        assert.equal(same.code, 1, same.stderr);
        assert.match(same.stderr, /waiting for the agent that owns the state directory to stop/);
        assert.match(
          same.stderr,
          new RegExp(`another kube-egress agent is running on this node .*: pid ${first.pid} `),
        );

        // Once the owner is gone (its lock goes with it), another may take the directory.
        assert.equal(await first.stop(), 0);
        agents.length = 0;
        const after = spawnAgent(node2, [...byHand, ...run(["-u", "30"])]);
        agents.push(after);
        await after.waitFor(/agent running/, 60_000);
      } finally {
        for (const agent of agents) await agent.stop().catch(() => {});
      }
    }),
});

Deno.test({
  name:
    "e2e host state: an agent killed with SIGKILL leaves no lock: its successor starts at once and retires the keepalived it left",
  ...e2e,
  fn: () =>
    withCluster(async (cluster) => {
      await cluster.writeMappings({ [cluster.pod(3, 1).ip]: VIP }, { [VIP]: 5 });
      const agents = cluster.nodes.map((node) => startAgent(cluster, node, [], 300));
      try {
        const holder = ranking(cluster, VIP)[0];
        await waitForPlacement(cluster, agents, VIP, holder, 30_000);
        const index = holder.index - 1;
        await agents[index].stop("SIGKILL"); // keepalived (not a holder of the lock) lives on
        assert.deepEqual(await holdersOf(cluster, VIP), [holder.name], "the orphan still holds it");
        agents[index] = startAgent(cluster, holder, [], 300);
        await agents[index].waitFor(/stopping a keepalived left by an earlier agent run/, 30_000);
        await waitForPlacement(cluster, agents, VIP, holder, 30_000);
        assert.ok(
          !agents[index].lines.some((l) => /waiting for the agent that owns/.test(l)),
          "the dead agent's lock went with it",
        );
      } finally {
        for (const agent of agents) await agent.stop().catch(() => {});
      }
    }),
});

/**
 * What an agent of the machine left behind, under /run and /etc: its state
 * directory (a keepalived that still runs behind the pid file: a process of
 * that name) and a `sim up` record; `id` names what must never show outside.
 */
async function plantEarlierAgent(
  upper: { run: string; etc: string },
  keepalivedPid: number,
  id: string,
): Promise<void> {
  const state = join(upper.run, "kube-egress");
  await Deno.mkdir(state, { recursive: true });
  await Deno.writeTextFile(
    join(state, "vips.json"),
    JSON.stringify({
      mode: "keepalived",
      node: "machine",
      running: true,
      advertInterval: 0.1,
      preemptDelay: 5,
      vips: [
        { vip: "192.0.2.50", routeId: 5, vrid: 5, priority: 250, state: "MASTER" },
        { vip: "192.0.2.51", routeId: 6, vrid: 6, priority: 3, state: "BACKUP" },
      ],
      ineligible: [],
    }),
  );
  await Deno.writeTextFile(join(state, "rp_filter.json"), '{"net.ipv4.conf.eth0.rp_filter": 1}\n');
  await Deno.writeTextFile(join(state, "keepalived.pid"), `${keepalivedPid}\n`);
  await Deno.writeTextFile(
    join(state, "agent.lock"),
    JSON.stringify({
      pid: 1,
      node: "machine",
      netns: "net:[1]",
      pidns: "pid:[1]",
      startTicks: 0,
      since: "2026-01-01T00:00:00.000Z",
    }),
  );
  await Deno.mkdir(join(upper.run, "kube-egress-sim"), { recursive: true });
  await Deno.writeTextFile(join(upper.run, "kube-egress-sim", `${id}.json`), "{}");
  for (
    const [dir, name, value] of [
      ["podip_vip_mapping", "10.244.1.5", "192.0.2.99"],
      ["vip_routeid_mapping", "192.0.2.99", "9"],
    ]
  ) {
    await Deno.mkdir(join(upper.etc, "kube-egress", dir), { recursive: true });
    await Deno.writeTextFile(join(upper.etc, "kube-egress", dir, name), value);
  }
}

Deno.test({
  name:
    "e2e host state: the unit tests pass on a machine where an agent ran before (/run/kube-egress, /etc/kube-egress, its environment)",
  ...e2e,
  fn: async () => {
    const root = await Deno.makeTempDir({ prefix: "kube-egress-machine-" });
    const id = root.split("/").at(-1)!;
    // A process named keepalived (a copy of sleep) for the earlier agent's pid file.
    await Deno.copyFile("/usr/bin/sleep", join(root, "keepalived"));
    const keepalived = new Deno.Command(join(root, "keepalived"), { args: ["600"] }).spawn();
    try {
      const upper = { run: join(root, "run"), etc: join(root, "etc") };
      for (const dir of ["run", "etc", "run-work", "etc-work"]) await Deno.mkdir(join(root, dir));
      await plantEarlierAgent(upper, keepalived.pid, id);
      await Deno.writeTextFile(
        join(root, "kubeconfig"),
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n" +
          "users: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n" +
          "current-context: x\n",
      );
      // The earlier agent's environment: everything deno task test would move, pointing at the machine.
      const env: Record<string, string> = { ...Deno.env.toObject() };
      for (const name of MACHINE_VARIABLES) delete env[name];
      Object.assign(env, {
        NODE_NAME: "machine",
        KUBE_EGRESS_PROC_SYS: join(root, "no-proc-sys"),
        KUBECONFIG: join(root, "kubeconfig"),
        NO_COLOR: "1",
      });
      const unit = [
        ...[...Deno.readDirSync("tests")].filter((e) => e.name.endsWith(".test.ts")).map((e) =>
          `tests/${e.name}`
        ),
        "tests/kube/",
      ].sort();
      // Overlays: the machine's /run and /etc plus the earlier agent's files, in this process only.
      const script = [
        "set -e",
        `mount -t overlay overlay -o lowerdir=/run,upperdir=${upper.run},workdir=${root}/run-work /run`,
        `mount -t overlay overlay -o lowerdir=/etc,upperdir=${upper.etc},workdir=${root}/etc-work /etc`,
        'exec "$@"',
      ].join("\n");
      const result = await new Deno.Command("unshare", {
        args: [
          "--mount",
          "--propagation",
          "private",
          "sh",
          "-c",
          script,
          "sh",
          Deno.execPath(),
          "test",
          "-A",
          "--no-check",
          ...unit,
        ],
        env,
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const out = new TextDecoder().decode(result.stdout) + new TextDecoder().decode(result.stderr);
      const failures = out.split("\n").filter((l) => /FAILED|error:/.test(l)).slice(0, 20);
      assert.equal(
        result.code,
        0,
        `unit tests failed on the used machine:\n${failures.join("\n")}`,
      );
      assert.match(out, /ok \| \d+ passed/);
      // And nothing of it showed outside the private mount namespace.
      assert.equal(await Deno.stat(`/run/kube-egress-sim/${id}.json`).catch(() => null), null);
    } finally {
      keepalived.kill("SIGKILL");
      await keepalived.status;
      await Deno.remove(root, { recursive: true });
    }
  },
});
