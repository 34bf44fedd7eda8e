/**
 * cmd/kube/leader.ts as client-go's leaderelection: a leader whose renewals
 * hang stops leading at its renew deadline, before another agent may take the
 * lease (never two writers); agents that do not lead read the lease once per
 * lease duration, not every retry period.
 */
import assert from "node:assert/strict";
import { KubeClient } from "../../cmd/kube/client.ts";
import { LeaderElector } from "../../cmd/kube/leader.ts";
import { createLogger } from "../../cmd/log.ts";
import { nextLeaseSpec } from "../../core/kube/lease.ts";
import { startTestApiServer } from "../../sim/kube_api.ts";
import { eventually } from "./fixtures.ts";
import { Relay } from "./net.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const LEASE = { namespace: "kube-egress", name: "kube-egress-leader" };

Deno.test({
  name:
    "leader: a leader whose renewals hang (black-holed) stops leading at its renew deadline, before anyone else leads",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    const relay = Relay.start(api.url);
    const changes: { who: string; leading: boolean; at: number }[] = [];
    const elector = async (who: string, server: string) =>
      new LeaderElector(await KubeClient.connect({ server }), createLogger("text", () => {}), {
        ...LEASE,
        identity: who,
        leaseDurationSeconds: 2,
        renewDeadlineMs: 1000,
        retryPeriodMs: 100,
        onChange: (leading) => changes.push({ who, leading, at: Date.now() }),
      }).start();
    const a = await elector("a", relay.url);
    await eventually(() => a.leading, "a leads");
    const b = await elector("b", api.url);
    try {
      await new Promise((r) => setTimeout(r, 300));
      const holed = Date.now();
      relay.blackhole(true);
      await eventually(() => changes.some((c) => c.who === "b" && c.leading), "b takes over");
      const aStopped = changes.find((c) => c.who === "a" && !c.leading);
      const bStarted = changes.find((c) => c.who === "b" && c.leading)!;
      assert.ok(aStopped, "a stopped leading");
      assert.ok(aStopped.at < bStarted.at, "a stopped before b started: never two leaders");
      assert.ok(
        aStopped.at - holed <= 1900,
        `a stopped ${aStopped.at - holed} ms after the black hole`,
      );
    } finally {
      relay.blackhole(false);
      await b.stop();
      await a.stop();
      relay.close();
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "leader: an agent that does not lead reads the lease once per lease duration, and takes it once it expires",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    const lease = () => api.get("Lease", LEASE.name, LEASE.namespace);
    api.apply({
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: LEASE,
      spec: nextLeaseSpec({}, "other", 2, new Date()),
    });
    // "other" renews every 300 ms (in process: not in the request log).
    const renewals = setInterval(() => {
      const current = lease()!;
      api.update({
        ...current,
        spec: nextLeaseSpec(current.spec as object, "other", 2, new Date()),
      });
    }, 300);
    const client = await KubeClient.connect({ server: api.url });
    const b = new LeaderElector(client, createLogger("text", () => {}), {
      ...LEASE,
      identity: "b",
      leaseDurationSeconds: 2,
      renewDeadlineMs: 1000,
      retryPeriodMs: 100,
      onChange: () => {},
    }).start();
    try {
      await new Promise((r) => setTimeout(r, 3000));
      const reads = api.log.filter((l) => l.includes(`/leases/${LEASE.name}`)).length;
      // client-go's followers would have read it 30 times (every retry period).
      assert.ok(reads <= 4, `${reads} lease reads in 3 s with a 2 s lease`);
      assert.equal(b.leading, false);
      clearInterval(renewals);
      await eventually(() => b.leading, "b takes the expired lease");
    } finally {
      clearInterval(renewals);
      await b.stop();
      client.close();
      await api.stop();
    }
  },
});

Deno.test({
  name:
    "leader: a lease handed back on a clean stop is taken by a standby at once (a Lease watch), not a lease duration later",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    const changes: { who: string; leading: boolean; at: number }[] = [];
    const elector = async (who: string) =>
      new LeaderElector(
        await KubeClient.connect({ server: api.url }),
        createLogger("text", () => {}),
        {
          ...LEASE,
          identity: who,
          // The shipped timings: a standby that only read the lease would wait up to 15 s.
          leaseDurationSeconds: 15,
          renewDeadlineMs: 10_000,
          retryPeriodMs: 2000,
          onChange: (leading) => changes.push({ who, leading, at: Date.now() }),
        },
      ).start();
    const a = await elector("a");
    await eventually(() => a.leading, "a leads");
    const b = await elector("b");
    try {
      // b has read the lease (held by a) and waits.
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(b.leading, false);
      const released = Date.now();
      await a.stop();
      for (let i = 0; i < 100 && !b.leading; i++) await new Promise((r) => setTimeout(r, 50));
      const took = changes.find((c) => c.who === "b" && c.leading);
      assert.ok(took, "b took the lease within 5 s of its release");
      assert.ok(
        took.at - released < 5000,
        `b took over ${took.at - released} ms after the release`,
      );
    } finally {
      await b.stop();
      await a.stop();
      await api.stop();
    }
  },
});
