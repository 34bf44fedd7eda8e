/**
 * Backend 2: native nftables (core/nftables.ts). A pass is one `nft -f`
 * transaction: declarations, changed chains and element updates together,
 * so there is no ordering between set and rule updates.
 */
import type { DatapathPlanner } from "./datapath.ts";
import { nftAfterApply, nftRolesInForce, planNftables, removeNftables } from "./nftables.ts";
import { step } from "./operation.ts";

export const nftablesPlanner: DatapathPlanner = {
  backend: "nftables",
  plan(intent, live) {
    return step("update our nftables table", { tool: "nft", ops: planNftables(intent, live.nft) });
  },
  remove(live) {
    return step("remove our nftables table", { tool: "nft", ops: removeNftables(live.nft) });
  },
  rolesInForce(live, mask, family = "ipv4") {
    return nftRolesInForce(live.nft, mask, family);
  },
  podsInForce(live, family = "ipv4") {
    const elements = family === "ipv4" ? live.nft : live.nft.ipv6;
    if (elements === undefined) return new Set();
    // The scoped map's keys are "pod . range".
    return new Set([
      ...elements.pods.keys(),
      ...[...elements.scoped.keys()].map((key) => key.split(" . ")[0]),
    ]);
  },
  afterApply(_live, intent) {
    return { nft: nftAfterApply(intent) };
  },
};
