/** cmd/kube/guard_events.ts: the guard's alerts as Warning Events on the EgressVIP, bounded. */
import assert from "node:assert/strict";
import { KubeClient } from "../../cmd/kube/client.ts";
import {
  GUARD_EVENT_INTERVAL_MS,
  guardEventMessage,
  GuardEvents,
} from "../../cmd/kube/guard_events.ts";
import { KubeSource } from "../../cmd/kube/source.ts";
import { createLogger } from "../../cmd/log.ts";
import { startTestApiServer } from "../../sim/kube_api.ts";
import { eventually, vipObject } from "./fixtures.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test("guard events: the message names the MAC or address, and a claim on the holder is a conflict", () => {
  const claim = {
    kind: "claim",
    vip: "192.0.2.50",
    from: "9e:ef:de:a2:52:8a",
    packets: 3,
    defended: true,
  } as const;
  assert.match(
    guardEventMessage({ ...claim, defended: false }, "node2", true),
    /held by node2; not defended \(no node list\)/,
  );
  assert.match(
    guardEventMessage(claim, "node2", true),
    /^address conflict: MAC 9e:ef:de:a2:52:8a claims 192\.0\.2\.50, held by node2; node2 re-announced it/,
  );
  assert.match(
    guardEventMessage(claim, "node1", false),
    /MAC 9e:ef:de:a2:52:8a claims 192\.0\.2\.50 but is no node/,
  );
  assert.match(
    guardEventMessage(
      { kind: "advert", vip: "192.0.2.50", from: "192.0.2.250", packets: 9 },
      "n1",
      false,
    ),
    /VRRP advert for 192\.0\.2\.50's router id from 192\.0\.2\.250/,
  );
  assert.match(
    guardEventMessage(
      { kind: "next-hop", vip: "192.0.2.50", from: "9e:ef:de:a2:52:8a", packets: 2 },
      "n1",
      false,
    ),
    /dropped 2 packet\(s\) of pods mapped to 192\.0\.2\.50 towards MAC 9e:ef:de:a2:52:8a/,
  );
});

Deno.test({
  name: "guard events: one Warning per VIP, kind and offender per minute, on the EgressVIP",
  ...opts,
  fn: async () => {
    const api = await startTestApiServer();
    const client = await KubeClient.connect({ server: api.url });
    const log = createLogger("text", () => {});
    const source = new KubeSource(client, log).start();
    let now = 1_000_000;
    try {
      api.apply(vipObject("office", { ip: "192.0.2.50" }));
      await source.waitForSync();
      await eventually(() => source.vips.store.size === 1, "the VIP");
      const events = new GuardEvents(client, source, log, "node2", () => now);
      events.transition("192.0.2.50", "none", "holder");
      const claim = {
        kind: "claim",
        vip: "192.0.2.50",
        from: "9e:ef:de:a2:52:8a",
        packets: 3,
      } as const;
      events.guardAlert(claim);
      events.guardAlert(claim); // the same offender again at once: no second Event
      events.guardAlert({ kind: "advert", vip: "192.0.2.50", from: "192.0.2.250", packets: 1 });
      events.guardAlert({ kind: "claim", vip: "192.0.2.99", from: "x", packets: 1 }); // no such VIP
      const list = () =>
        api.list("Event", "default") as unknown as {
          reason: string;
          message: string;
          type: string;
          involvedObject: { name: string; kind: string };
        }[];
      await eventually(() => list().length === 2, "two Events");
      now += GUARD_EVENT_INTERVAL_MS;
      events.guardAlert(claim);
      await eventually(() => list().length === 3, "the same offender a minute later");
      const [conflict] = list().filter((e) => e.reason === "ForeignARPClaim");
      assert.equal(conflict.type, "Warning");
      assert.deepEqual(conflict.involvedObject.kind, "EgressVIP");
      assert.equal(conflict.involvedObject.name, "office");
      assert.match(conflict.message, /address conflict: MAC 9e:ef:de:a2:52:8a/);
      assert.ok(list().some((e) => e.reason === "ForeignVRRPAdvert"));
    } finally {
      await source.stop();
      client.close();
      await api.stop();
    }
  },
});
