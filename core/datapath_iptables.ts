/**
 * Backend 1: iptables + ipset. The intent is rendered as our two chains
 * (core/desired.ts) and our sets (core/ipset.ts, core/scoped.ts); a pass
 * writes the set changes, then one `iptables-restore --noflush` of our chains,
 * then destroys the destination sets no rule uses any more.
 */
import { type DatapathPlanner, step } from "./datapath.ts";
import { parseRoleRule, renderIptables, type VipRole } from "./desired.ts";
import { deleteIpsets, diffIpsets, setsAfterApply, staleScopedSets } from "./ipset.ts";
import { deleteIptables, diffIptables } from "./iptables.ts";
import { intentOfFamily } from "./intent.ts";
import type { Step } from "./plan.ts";

export const iptablesPlanner: DatapathPlanner = {
  backend: "iptables",

  plan(dual, live) {
    const intent = intentOfFamily(dual, "ipv4");
    const { chains, scopedSets } = renderIptables(intent);
    return [
      ...step(
        "ipset",
        "update pod and nosteer sets",
        diffIpsets(live.sets, intent.podMarks, intent.mask, intent.noSteer, scopedSets),
      ),
      ...step("iptables", "rewrite our chains and jumps", diffIptables(live.iptables, chains)),
      ...step(
        "ipset",
        "destroy destination-scoped sets no rule uses any more",
        staleScopedSets(live.sets, scopedSets),
      ),
    ];
  },

  remove(live): Step[] {
    // iptables-nft-save lists a table that does not exist as if it held only its
    // built-in chains: a table is ours to remove only if our chain or jump is in it.
    const emptied = live.backend === "nft"
      ? (["mangle", "nat"] as const).filter((t) => {
        const table = live.iptables[t];
        return table.onlyOurs && (table.chainExists || table.hookRules.length > 0);
      })
      : [];
    return [
      ...step("iptables", "remove our jumps and chains", deleteIptables(live.iptables)),
      ...step("ipset", "destroy our sets", deleteIpsets(live.sets)),
      ...step(
        "nft",
        "remove tables that only we used",
        emptied.map((t) => `delete table ip ${t}`),
      ),
    ];
  },

  rolesInForce(live, mask) {
    const roles = new Map<number, VipRole["role"]>();
    for (const rule of live.iptables.nat.rules) {
      const parsed = parseRoleRule(rule);
      if (parsed && parsed.mask === mask) roles.set(parsed.mark, parsed.role);
    }
    return roles;
  },

  afterApply(live, dual) {
    const intent = intentOfFamily(dual, "ipv4");
    const { scopedSets } = renderIptables(intent);
    return {
      sets: setsAfterApply(live.sets, intent.podMarks, intent.mask, intent.noSteer, scopedSets),
    };
  },
};
