/**
 * Destination-scoped egress: pods whose policy restricts where their traffic
 * is steered (EgressPolicy destinationCIDRs / excludedCIDRs).
 *
 * Design: pods are grouped into *classes*, one per distinct (destinations,
 * excluded) pair; the common unrestricted pods stay in the pods set and its
 * one rule, untouched. Each class has its own sets, named by a stable hash of
 * the class (so every node and every pass names them alike):
 *   kube-egress-sp-<id>  hash:ip skbinfo  pod IP → mark (like the pods set)
 *   kube-egress-sd-<id>  hash:net         its destinations (absent: all)
 *   kube-egress-sx-<id>  hash:net         its excluded ranges (absent: none)
 * and one mangle rule that marks a class pod's connection only when the
 * destination is in sd and not in sx. Per packet that is one rule per class,
 * each a few O(1) set lookups: the cost grows with the number of distinct
 * destination configurations (a handful), never with pods or ranges.
 * (A single hash:net,net set would do it with one rule, but that set type is
 * not available on every kernel, this machine's included.)
 */
import { formatCidr, parseCidr } from "./ip.ts";
import { hex } from "./marks.ts";
import { MARK_CHAIN, NOSTEER_SET } from "./names.ts";
import type { ScopedClass } from "./intent.ts";

/** Every scoped set's name starts with this. */
export const SCOPED_PREFIX = "kube-egress-s";

export const SCOPED_PODS_OPTIONS =
  "hash:ip family inet hashsize 64 maxelem 1048576 counters skbinfo";
export const SCOPED_NETS_OPTIONS = "hash:net family inet hashsize 64 maxelem 65536";

/** A set as we want it: its create options and entries (key → words after the set name). */
export interface WantedSet {
  readonly options: string;
  readonly entries: ReadonlyMap<string, string>;
}

/** A scoped set as read back: its create line and entries (key → words after the set name). */
export interface LiveScopedSet {
  readonly header: string;
  readonly entries: ReadonlyMap<string, string>;
  /** Pod sets: each entry's packet and byte counters (the sets are created with `counters`). */
  readonly counters?: ReadonlyMap<string, { readonly packets: number; readonly bytes: number }>;
}

export function scopedSetNames(id: string) {
  return {
    pods: `${SCOPED_PREFIX}p-${id}`,
    destinations: `${SCOPED_PREFIX}d-${id}`,
    excluded: `${SCOPED_PREFIX}x-${id}`,
  };
}

export { isScoped, type ScopedClass, scopedClasses } from "./intent.ts";

/** The class's mangle rule, in iptables-save form. */
export function scopedRule(cls: ScopedClass): string {
  const names = scopedSetNames(cls.id);
  return `-A ${MARK_CHAIN} -m set --match-set ${names.pods} src ${scopeMatch(cls)}` +
    ` -m conntrack --ctdir ORIGINAL -j SET --map-set ${names.pods} src --map-mark`;
}

/** The class's INVALID packets to its destinations are marked too, as `markInvalidRule` does for the pods set. */
export function scopedMarkInvalidRule(cls: ScopedClass): string {
  const names = scopedSetNames(cls.id);
  return `-A ${MARK_CHAIN} -m set --match-set ${names.pods} src ${scopeMatch(cls)}` +
    ` -m conntrack --ctstate INVALID -j SET --map-set ${names.pods} src --map-mark`;
}

/** The class's pods' packets of a connection picked up from the server's side, as `markReplyRule` does for the pods set. */
export function scopedMarkReplyRule(cls: ScopedClass, mask: number): string {
  const names = scopedSetNames(cls.id);
  return `-A ${MARK_CHAIN} -m set --match-set ${names.pods} src ${scopeMatch(cls)}` +
    ` -m conntrack --ctdir REPLY -m connmark ! --mark 0x0/${
      hex(mask)
    } -j SET --map-set ${names.pods} src --map-mark`;
}

/** Destinations a class steers: not never-steered, within its destinations, outside its exclusions. */
function scopeMatch(cls: ScopedClass): string {
  const names = scopedSetNames(cls.id);
  return `-m set ! --match-set ${NOSTEER_SET} dst` +
    (cls.destinations ? ` -m set --match-set ${names.destinations} dst` : "") +
    (cls.excluded ? ` -m set ! --match-set ${names.excluded} dst` : "");
}

/** Every scoped set the classes need, by name. */
export function wantedScopedSets(
  classes: readonly ScopedClass[],
  markMask: number,
): Map<string, WantedSet> {
  const sets = new Map<string, WantedSet>();
  const nets = (list: readonly string[]) => new Map(list.map((c) => [c, c]));
  for (const cls of classes) {
    const names = scopedSetNames(cls.id);
    sets.set(names.pods, {
      options: SCOPED_PODS_OPTIONS,
      entries: new Map(
        [...cls.podMarks].map(([ip, mark]) => [ip, `${ip} skbmark ${hex(mark)}/${hex(markMask)}`]),
      ),
    });
    if (cls.destinations) {
      sets.set(names.destinations, {
        options: SCOPED_NETS_OPTIONS,
        entries: nets(cls.destinations),
      });
    }
    if (cls.excluded) {
      sets.set(names.excluded, { options: SCOPED_NETS_OPTIONS, entries: nets(cls.excluded) });
    }
  }
  return sets;
}

/** Normalizes one `add` line's words after the set name, as `wantedScopedSets` writes them. */
function entryOf(words: readonly string[]): [string, string] | undefined {
  const key = words[0];
  const at = words.indexOf("skbmark");
  if (at >= 0) return [key, `${key} skbmark ${words[at + 1]}`];
  const cidr = parseCidr(key);
  if (!cidr) return undefined;
  const text = formatCidr(cidr);
  return [text, text];
}

/** Parses the scoped sets out of `ipset save` text (other sets are ignored). */
export function parseScopedSets(text: string): Map<string, LiveScopedSet> {
  const sets = new Map<
    string,
    {
      header: string;
      entries: Map<string, string>;
      counters?: Map<string, { packets: number; bytes: number }>;
    }
  >();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    const words = line.split(/\s+/);
    if (!words[1]?.startsWith(SCOPED_PREFIX)) continue;
    if (words[0] === "create") sets.set(words[1], { header: line, entries: new Map() });
    else if (words[0] === "add") {
      const set = sets.get(words[1]);
      const entry = entryOf(words.slice(2));
      if (!set || !entry) continue;
      set.entries.set(entry[0], entry[1]);
      const packets = words.indexOf("packets");
      const bytes = words.indexOf("bytes");
      if (packets > 0 && bytes > 0) {
        set.counters ??= new Map();
        set.counters.set(entry[0], {
          packets: Number(words[packets + 1]),
          bytes: Number(words[bytes + 1]),
        });
      }
    }
  }
  return sets;
}
