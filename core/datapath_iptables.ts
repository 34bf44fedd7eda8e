/**
 * Backend 1: iptables + ipset, per family: iptables and the IPv4 sets, and
 * ip6tables and the IPv6 sets (`IPSET_V6`), each rendered from its family's
 * part of the intent with the same rules (core/desired.ts, core/ipset.ts,
 * core/scoped.ts). A pass writes a family's set changes, then one
 * `iptables-restore --noflush` (`ip6tables-restore`) of our chains, then
 * destroys the destination sets no rule uses any more. A family without pod
 * ranges gets nothing, and loses what we left of it.
 */
import { type DatapathPlanner, enabledPart, liveFamily } from "./datapath.ts";
import { parseRoleRule, renderIptables, type VipRole } from "./desired.ts";
import { FAMILIES, type Family } from "./intent.ts";
import { deleteIpsets, diffIpsets, NO_SETS, setsAfterApply, staleScopedSets } from "./ipset.ts";
import { deleteIptables, diffIptables } from "./iptables.ts";
import { IPSETS } from "./names.ts";
import { type Step, step } from "./operation.ts";
import type { LiveFamily } from "./plan.ts";

const TOOLS = {
  ipv4: { nft: "ip", label: "" },
  ipv6: { nft: "ip6", label: "IPv6 " },
} as const;

function removeFamily(live: LiveFamily, family: Family, flavour: "nft" | "legacy"): Step[] {
  const tools = TOOLS[family];
  // iptables-nft-save lists a table that does not exist as if it held only its
  // built-in chains: a table is ours to remove only if our chain or jump is in it.
  const emptied = flavour === "nft"
    ? (["mangle", "nat"] as const).filter((t) => {
      const table = live.iptables[t];
      return table.onlyOurs && (table.chainExists || table.hookRules.length > 0);
    })
    : [];
  return [
    ...step(`remove our ${tools.label}jumps and chains`, {
      tool: "iptables",
      family,
      tables: deleteIptables(live.iptables),
    }),
    ...step(`destroy our ${tools.label}sets`, {
      tool: "ipset",
      family,
      changes: deleteIpsets(live.sets, IPSETS[family]),
    }),
    ...step(`remove ${tools.label}tables that only we used`, {
      tool: "nft",
      ops: emptied.map((name) => ({ op: "delete table", table: { family: tools.nft, name } })),
    }),
  ];
}

export const iptablesPlanner: DatapathPlanner = {
  backend: "iptables",

  plan(dual, live) {
    return FAMILIES.flatMap((family) => {
      const have = liveFamily(live, family);
      if (have === undefined) return [];
      const intent = enabledPart(dual, family);
      // Off (no pod range of this family): nothing of ours, and what we left goes.
      if (intent.podCidrs.length === 0) {
        return removeFamily(have, family, live.backend).filter((s) => s.op.tool !== "nft");
      }
      const f = IPSETS[family];
      const { label } = TOOLS[family];
      const { chains, scopedSets } = renderIptables(intent, f);
      return [
        ...step(`update ${label}pod and nosteer sets`, {
          tool: "ipset",
          family,
          changes: diffIpsets(
            have.sets,
            intent.podMarks,
            intent.mask,
            intent.noSteer,
            scopedSets,
            f,
          ),
        }),
        ...step(`rewrite our ${label}chains and jumps`, {
          tool: "iptables",
          family,
          tables: diffIptables(have.iptables, chains),
        }),
        ...step(`destroy ${label}destination-scoped sets no rule uses any more`, {
          tool: "ipset",
          family,
          changes: staleScopedSets(have.sets, scopedSets),
        }),
      ];
    });
  },

  remove(live): Step[] {
    return FAMILIES.flatMap((family) => {
      const have = liveFamily(live, family);
      return have === undefined ? [] : removeFamily(have, family, live.backend);
    });
  },

  rolesInForce(live, mask, family = "ipv4") {
    const roles = new Map<number, VipRole["role"]>();
    for (const rule of liveFamily(live, family)?.iptables.nat.rules ?? []) {
      const parsed = parseRoleRule(rule);
      if (parsed && parsed.mask === mask) roles.set(parsed.mark, parsed.role);
    }
    return roles;
  },

  podsInForce(live, family = "ipv4") {
    const sets = liveFamily(live, family)?.sets ?? NO_SETS;
    const scopedPods = `${IPSETS[family].scopedPrefix}p-`;
    return new Set([
      ...sets.pods.keys(),
      ...[...sets.scoped ?? []].flatMap(([name, set]) =>
        name.startsWith(scopedPods) ? [...set.entries.keys()] : []
      ),
    ]);
  },

  afterApply(live, dual) {
    // The IPv4 sets; IPv6's are listed on every pass that reads them.
    const intent = enabledPart(dual, "ipv4");
    if (intent.podCidrs.length === 0) return { sets: NO_SETS };
    const { scopedSets } = renderIptables(intent);
    return {
      sets: setsAfterApply(live.sets, intent.podMarks, intent.mask, intent.noSteer, scopedSets),
    };
  },
};
