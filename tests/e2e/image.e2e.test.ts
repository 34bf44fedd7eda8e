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
import { buildImage, describeImage, megabytes, pinMismatches } from "../../image/build.ts";
import { PrivateDockerd } from "../../image/docker.ts";
import { type AgentProcess, stateDirOf } from "../../sim/agents.ts";
import { renderChecks } from "../../sim/check.ts";
import { Cluster, OUTSIDE_IP } from "../../sim/cluster.ts";
import {
  egressPolicy,
  egressVip,
  podObject,
  startApiWithNodes,
  startKubeAgents,
  startKubeController,
} from "../../sim/kube_sim.ts";
import { sourceSeen } from "../../sim/probe.ts";
import { ImageAgents } from "../../sim/image_agents.ts";
import { newRunId, runNamespaces } from "../../sim/netns.ts";
import { runStory } from "../../sim/story.ts";
import { keepalivedVips, placeVip } from "../../sim/vip.ts";

const VIP = "192.0.2.50";
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
    "e2e image: built from the Dockerfile on local bases (pins = labels, no compilers or package lists); the story holds with every agent in a container under the DaemonSet's limits; the Kubernetes source works from it in-cluster",
  ...e2e,
  fn: async () => {
    const runId = newRunId();
    const daemon = await PrivateDockerd.start(runId);
    let cluster: Cluster | undefined;
    try {
      const built = await buildImage(daemon.docker, {
        tag: `${runId}/kube-egress:test`,
        basePrefix: `${runId}-base`,
        log: () => {},
      });
      const agents = await ImageAgents.forImage(daemon.docker, built.tag);
      const image = await describeImage(daemon.docker, built.tag);
      console.log(`image ${megabytes(image.bytes)}: ${image.deno}`);
      assert.deepEqual(pinMismatches(image), [], "every tool is installed at its pinned version");
      assert.deepEqual(image.unwanted, []);
      assert.deepEqual(image.missing, [], "every command the agent may run (na6 too) is on PATH");
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
      const names = (await daemon.docker.run(["ps", "-a", "--format", "{{.Names}}"])).split("\n")
        .filter((n) => /-agent-\d+$/.test(n));
      assert.equal(names.length, 3, names.join(" "));
      const inspected = JSON.parse(await daemon.docker.run(["inspect", ...names])) as Inspect[];
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
      const changed = await daemon.docker.run(["diff", names[0]]);
      console.log(`written in ${names[0]} outside its mounts:\n${changed}`);
      await cluster.destroy();
      assert.deepEqual(await runNamespaces(runId), []);

      // The Kubernetes source from the image: in-cluster (the pod's service account), TLS to
      // the test API server, the Lease, status written by the holder's agent.
      cluster = await Cluster.create({ nodes: 2, podsPerNode: 1 }, {
        agents: await ImageAgents.forImage(daemon.docker, built.tag),
      });
      const k = cluster;
      const api = await startApiWithNodes(k);
      const kubeAgents: AgentProcess[] = [];
      try {
        await api.apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: "default" } });
        await api.apply(egressVip("office", { ip: VIP, routeId: 5 }));
        await api.apply(egressPolicy("default", "apps", {
          vip: "office",
          podSelector: { matchLabels: { egress: "office" } },
        }));
        await placeVip(k.nodes, VIP, k.node(1), k.spec.iface);
        // The controller (its Deployment) from source; the agents from the image.
        kubeAgents.push(startKubeController(k, api));
        kubeAgents.push(...startKubeAgents(k, api));
        const pod = k.pod(2, 1);
        await api.apply(podObject(pod, "app", { labels: { egress: "office" } }));
        let seen = "";
        for (let i = 0; i < 60 && seen !== VIP; i++) {
          seen = await sourceSeen(pod.ns, OUTSIDE_IP, "tcp");
          if (seen !== VIP) await new Promise((r) => setTimeout(r, 250));
        }
        assert.equal(seen, VIP, "node2's pod leaves as the VIP through node1");
        let holder: string | undefined;
        for (let i = 0; i < 60 && holder !== "node1"; i++) {
          holder = (await api.get<{ status?: { holder?: string } }>("EgressVIP", "office"))?.status
            ?.holder;
          if (holder !== "node1") await new Promise((r) => setTimeout(r, 250));
        }
        assert.equal(holder, "node1", "the holder's agent wrote status.holder");
        assert.ok(
          kubeAgents.some((a) => a.lines.some((l) => l.includes("elected"))),
          "the controller was elected",
        );
      } finally {
        for (const agent of kubeAgents) await agent.stop();
        await api.stop();
      }
    } finally {
      await cluster?.destroy();
      await daemon.stop();
    }
    assert.deepEqual(await runNamespaces(runId), []);
    await assert.rejects(Deno.stat(daemon.dir), Deno.errors.NotFound);
  },
});
