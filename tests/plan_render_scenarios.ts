/**
 * Passes whose `plan` output (renderTransaction) is kept as fixtures in
 * tests/fixtures/plan_render/: both backends, both families, every tool (ip,
 * ipset, iptables, nft, sysctl, conntrack of both kinds, conntrackd), and
 * delete. The fixtures were rendered by the code before operations were typed
 * (core/operation.ts): typing them changed no byte of what runs.
 */
import { nftAfterApply, NO_NFTABLES } from "../core/nftables.ts";
import { type NatSync, planDelete, planPass, renderTransaction } from "../core/plan.ts";
import { type RawSnapshot, validateSnapshot } from "../core/snapshot.ts";
import { FakeKernel } from "./fake_kernel.ts";
import { raw, testConfig } from "./helpers.ts";

/** The passes, by fixture name, each the `plan` text of its transaction. */
export function planRenderScenarios(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const backend of ["iptables", "nftables"] as const) {
    const config = testConfig({
      backend,
      podCidrs: ["10.244.0.0/16", "fd00:10:244::/56"],
      serviceCidrs: ["10.96.0.0/12", "fd00:10:96::/112"],
      excludeCidrs: ["192.0.2.0/28"],
    });
    const inputs = (extra: Record<string, string>): RawSnapshot => {
      const r = raw(
        { "192.0.2.50": "5", "192.0.2.51": "6", "2001:db8::50": "5", "2001:db8::51": "6" },
        {
          "10.244.1.5": "192.0.2.50",
          "10.244.2.7": "192.0.2.51",
          "fd00:10:244:1::5": "2001:db8::50",
          ...extra,
        },
      );
      // A destination-scoped pod (its class sets and rules) and one failing closed.
      return {
        ...r,
        pods: [...r.pods, {
          origin: "pods/scoped",
          podIp: "10.244.1.9",
          vip: "192.0.2.51",
          destinations: ["203.0.113.0/24"],
        }],
        failClosed: [{ origin: "guard/0", podIp: "10.244.1.5" }],
      };
    };
    const kernel = new FakeKernel();
    kernel.interfaces.set("eth0", ["192.0.2.11", "2001:db8::11", "2001:db8::51"]);
    kernel.sysctls["net.ipv4.conf.all.rp_filter"] = 1;
    kernel.mainRoutes.push(
      { dst: "10.244.1.0/24", dev: "cni0" },
      { dst: "10.244.2.0/24", dev: "vxlan0", gateway: "10.244.2.0", flags: ["onlink"] },
      { dst: "fd00:10:244:1::/64", dev: "cni0" },
    );
    // The fake kernel has no nftables: our table is as the last pass left it.
    let nft = NO_NFTABLES;
    const pass = (name: string, snap: RawSnapshot, sync?: NatSync) => {
      const { desired, transaction } = planPass(
        validateSnapshot(snap, config).snapshot,
        config,
        { ...kernel.live(config), nft },
        sync ? { natSync: sync } : {},
      );
      out[`${backend}-${name}`] = renderTransaction(transaction);
      kernel.apply({ steps: transaction.steps.filter((s) => s.op.tool !== "nft") });
      if (backend === "nftables") nft = nftAfterApply(desired);
    };
    pass("first", inputs({}));
    // Takes .50 over and gives ::51 up, with a pod newly mapped and NAT state synced.
    kernel.interfaces.set("eth0", ["192.0.2.11", "192.0.2.50", "2001:db8::11"]);
    pass("takeover", inputs({ "10.244.1.6": "192.0.2.51" }), {
      commits: [{ config: "/run/ke/conntrackd-mcast.conf" }],
      localPodCidrs: ["10.244.1.0/24", "fd00:10:244:1::/64"],
    });
    // A VIP removed, a pod gone.
    pass(
      "removed",
      raw({ "192.0.2.50": "5", "2001:db8::50": "5" }, { "10.244.1.5": "192.0.2.50" }),
    );
    out[`${backend}-delete`] = renderTransaction(
      planDelete({ ...kernel.live(config), nft }, config, { "net.ipv4.conf.eth0.rp_filter": 1 }),
    );
  }
  return out;
}
