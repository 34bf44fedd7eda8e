/**
 * End-to-end: the node image users run. Built from the Dockerfile, unchanged,
 * on locally made bases with a private dockerd (as `deno task image` does),
 * checked for what operators expect of it, and then the simulator's story
 * with every node's agent running from it, in a container sharing the node's
 * namespace under deploy/daemonset.yaml's security context, mounts, args and
 * env. Needs root; skipped otherwise. (Every e2e suite can run this way:
 * KE_SIM_AGENTS=image, see tests/e2e/cluster.ts.)
 */
import assert from "node:assert/strict";
import $ from "dax";
import { describeImage, megabytes, pinMismatches } from "../../image/build.ts";
import { stateDirOf } from "../../sim/agents.ts";
import { renderChecks } from "../../sim/check.ts";
import { Cluster } from "../../sim/cluster.ts";
import { ImageAgents } from "../../sim/image_agents.ts";
import { newRunId, runNamespaces } from "../../sim/netns.ts";
import { runStory } from "../../sim/story.ts";
import { keepalivedVips } from "../../sim/vip.ts";
import { e2e } from "./cluster.ts";

interface Inspect {
  Name: string;
  Args: string[];
  Config: { Env: string[] };
  HostConfig: {
    CapAdd: string[] | null;
    CapDrop: string[] | null;
    Privileged: boolean;
    SecurityOpt: string[] | null;
    NetworkMode: string;
    Memory: number;
  };
  Mounts: { Source: string; Destination: string; RW: boolean }[];
}

Deno.test({
  name:
    "e2e image: built from the Dockerfile on local bases (pins = labels, no compilers or package lists); the story holds with every agent in a container under the DaemonSet's limits",
  ...e2e,
  fn: async () => {
    const runId = newRunId();
    const agents = await ImageAgents.start(runId, () => {});
    let cluster: Cluster | undefined;
    try {
      const image = await describeImage(agents.docker, agents.image);
      console.log(`image ${megabytes(image.bytes)}: ${image.deno}`);
      assert.deepEqual(pinMismatches(image), [], "every tool is installed at its pinned version");
      assert.deepEqual(image.unwanted, []);
      assert.ok(image.tools.every((t) => t.says !== ""), JSON.stringify(image.tools));
      const head = (await $`git rev-parse HEAD`.text()).trim();
      assert.match(image.labels["org.opencontainers.image.revision"], new RegExp(`^${head}`));
      for (const key of ["source", "version", "title"]) {
        assert.ok(`org.opencontainers.image.${key}` in image.labels, key);
      }

      cluster = await Cluster.create({}, { runId, agents });
      const c = cluster;
      const result = await runStory(c, {
        driver: keepalivedVips(c.nodes, c.spec.iface, (n) => stateDirOf(c, n)),
      });
      assert.ok(
        result.ok,
        [
          ...result.phases.map((p) => `${p.title}\n${renderChecks(p.checks)}`),
          ...result.baselineDiff,
        ]
          .join("\n"),
      );
      assert.equal(result.failover?.wrongSource, 0);
      assert.deepEqual(result.baseline.map((b) => b.equal), [true, true, true]);

      // What docker was asked for is what the DaemonSet says (the agents' containers are kept
      // until the cluster is destroyed).
      const names = (await agents.docker.run(["ps", "-a", "--format", "{{.Names}}"])).split("\n")
        .filter((n) => /-agent-\d+$/.test(n));
      assert.equal(names.length, 3, names.join(" "));
      const inspected = JSON.parse(await agents.docker.run(["inspect", ...names])) as Inspect[];
      for (const container of inspected) {
        const node = /-(node\d+)-agent-/.exec(container.Name)![1];
        const host = container.HostConfig;
        assert.deepEqual([...host.CapAdd ?? []].sort(), ["NET_ADMIN", "NET_RAW"]);
        assert.deepEqual(host.CapDrop, ["ALL"]);
        assert.equal(host.Privileged, false);
        assert.ok(host.SecurityOpt?.includes("no-new-privileges"));
        assert.equal(host.Memory, 384 * 1024 * 1024);
        assert.match(host.NetworkMode, /^container:/);
        assert.ok(container.Config.Env.includes(`NODE_NAME=${node}`));
        assert.ok(container.Config.Env.includes("KUBE_EGRESS_PROC_SYS=/host/proc/sys"));
        assert.ok(container.Args.includes("--log-format=json"), "the DaemonSet's own flags");
        const mounts = Object.fromEntries(container.Mounts.map((m) => [m.Destination, m]));
        assert.equal(mounts["/host/proc/sys/net"]?.Source, "/proc/sys/net");
        assert.equal(mounts["/run/xtables.lock"]?.Source, "/run/xtables.lock");
        assert.equal(
          mounts["/run/kube-egress"]?.Source,
          stateDirOf(c, c.nodes.find((n) => n.name === node)!),
        );
      }
      // What the agent wrote outside its mounts (nothing it needs to keep: a read-only root
      // file system would only lose Deno's caches).
      const changed = await agents.docker.run(["diff", names[0]]);
      console.log(`written in ${names[0]} outside its mounts:\n${changed}`);
    } finally {
      if (cluster) await cluster.destroy();
      else await agents.destroy();
    }
    assert.deepEqual(await runNamespaces(runId), []);
    await assert.rejects(Deno.stat(agents.daemon!.dir), Deno.errors.NotFound);
  },
});
