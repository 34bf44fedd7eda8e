/**
 * Our two ipsets: the pods set (pod IP → fwmark, O(1) per packet however many
 * pods are mapped) and the nosteer set (destinations never steered). Read from
 * `ipset save`, compared entry by entry, and updated incrementally with one
 * `ipset restore -exist`: adding a pod writes one line, not the whole set.
 */
import { formatCidr, parseCidr } from "./ip.ts";
import { hex } from "./marks.ts";
import { IPSET_V4, type IpsetFamily, PODS_SET_MAXELEM, SCRATCH_SUFFIX } from "./names.ts";
import type { SetChange } from "./operation.ts";
import { type LiveScopedSet, parseScopedSets, type WantedSet } from "./scoped.ts";

/** One pods-set entry: its mark and the packets/bytes it has steered. */
export interface PodEntry {
  readonly mark: number;
  readonly mask: number;
  readonly packets: number;
  readonly bytes: number;
}

export interface LiveSets {
  /** The pods set's `create` line when it exists. */
  readonly podsHeader?: string;
  readonly pods: ReadonlyMap<string, PodEntry>;
  readonly nosteerHeader?: string;
  readonly nosteer: ReadonlySet<string>;
  /** Destination-scoped sets (core/scoped.ts), by name; absent = none. */
  readonly scoped?: ReadonlyMap<string, LiveScopedSet>;
}

/** No sets of ours. */
export const NO_SETS: LiveSets = { pods: new Map(), nosteer: new Set() };

/** The options each set is created with; a live set whose header lacks one is rebuilt. */
function podsOptions(f: IpsetFamily): string {
  return `hash:ip family ${f.inet} hashsize 1024 maxelem ${PODS_SET_MAXELEM} counters skbinfo`;
}
function nosteerOptions(f: IpsetFamily): string {
  return `hash:net family ${f.inet} hashsize 64 maxelem 65536`;
}

/**
 * Parses `ipset save` output of our sets (other sets in the text are ignored).
 * The pods set can hold tens of thousands of entries and is read on every full
 * check, so its lines are scanned in place (no per-line strings but the IP);
 * the few other lines are split as usual.
 */
export function parseIpsetSave(text: string, f: IpsetFamily = IPSET_V4): LiveSets {
  const POD_ADD = `add ${f.pods} `;
  const NOSTEER_ADD = `add ${f.nosteer} `;
  let podsHeader: string | undefined;
  let nosteerHeader: string | undefined;
  const pods = new Map<string, PodEntry>();
  const nosteer = new Set<string>();
  for (let start = 0; start < text.length;) {
    let next = text.indexOf("\n", start);
    if (next < 0) next = text.length;
    let end = next;
    while (end > start && text.charCodeAt(end - 1) <= 32) end--;
    while (start < end && text.charCodeAt(start) <= 32) start++;
    if (text.startsWith(POD_ADD, start)) {
      scanPodEntry(text, start + POD_ADD.length, end, pods);
    } else if (text.startsWith(NOSTEER_ADD, start)) {
      const cidr = parseCidr(text.slice(start + NOSTEER_ADD.length, end).split(/\s+/)[0]);
      if (cidr) nosteer.add(formatCidr(cidr));
    } else if (text.startsWith("create ", start)) {
      const line = text.slice(start, end);
      const name = line.split(/\s+/)[1];
      if (name === f.pods) podsHeader = line;
      else if (name === f.nosteer) nosteerHeader = line;
    }
    start = next + 1;
  }
  const scoped = text.includes(` ${f.scopedPrefix}`) ? parseScopedSets(text, f) : undefined;
  return { podsHeader, pods, nosteerHeader, nosteer, ...(scoped?.size ? { scoped } : {}) };
}

/**
 * One pods-set entry from `text[from, end)`: "<ip> packets N bytes M skbmark
 * 0x5/0xff", option-value pairs in any order, unknown ones skipped (a hash:ip
 * set has no valueless options).
 */
function scanPodEntry(text: string, from: number, end: number, into: Map<string, PodEntry>) {
  const wordEnd = (at: number) => {
    const space = text.indexOf(" ", at);
    return space < 0 || space > end ? end : space;
  };
  let at = wordEnd(from);
  const ip = text.slice(from, at);
  let mark = 0;
  let mask = 0xffffffff;
  let packets = 0;
  let bytes = 0;
  while (at < end) {
    const key = at + 1;
    const value = wordEnd(key) + 1;
    at = wordEnd(value);
    if (text.startsWith("packets ", key)) packets = Number(text.slice(value, at));
    else if (text.startsWith("bytes ", key)) bytes = Number(text.slice(value, at));
    else if (text.startsWith("skbmark ", key)) {
      const slash = text.indexOf("/", value);
      if (slash < 0 || slash > at) mark = parseInt(text.slice(value, at), 16);
      else {
        mark = parseInt(text.slice(value, slash), 16);
        mask = parseInt(text.slice(slash + 1, at), 16);
      }
    }
  }
  into.set(ip, { mark, mask, packets, bytes });
}

/** True when a live header carries every option we create the set with. */
function headerFits(header: string | undefined, options: string): boolean {
  if (header === undefined) return false;
  const have = header.split(/\s+/).slice(2);
  const want = options.split(/\s+/);
  // "hashsize" grows with the set, so its value is not compared.
  return want.every((word, i) => want[i - 1] === "hashsize" || have.includes(word));
}

/** A pods-set entry as the words after the set name in an `add` line. */
function podArgs(ip: string, markMask: string): string {
  return `${ip} skbmark ${markMask}`;
}

/**
 * The set changes (one `ipset restore -exist`) that make the live sets equal the desired
 * ones. Scoped sets no longer wanted are not destroyed here (a rule may still
 * use them): see `staleScopedSets`.
 */
export function diffIpsets(
  live: LiveSets,
  desiredPods: ReadonlyMap<string, number>,
  markMask: number,
  desiredNosteer: readonly string[],
  desiredScoped: ReadonlyMap<string, WantedSet> = new Map(),
  f: IpsetFamily = IPSET_V4,
): SetChange[] {
  // Marks repeat (one per VIP): format each "mark/mask" once, not once per pod.
  const formatted = new Map<number, string>();
  const markText = (mark: number) => {
    let text = formatted.get(mark);
    if (text === undefined) formatted.set(mark, text = `${hex(mark)}/${hex(markMask)}`);
    return text;
  };
  const pods: SetContents = {
    keys: () => desiredPods.keys(),
    args: (ip) => podArgs(ip, markText(desiredPods.get(ip)!)),
    differs: (ip) => {
      const have = live.pods.get(ip);
      return have === undefined || have.mark !== desiredPods.get(ip) || have.mask !== markMask;
    },
    stale: () => [...live.pods.keys()].filter((ip) => !desiredPods.has(ip)),
  };
  const wantNosteer = new Set(desiredNosteer);
  const nosteer: SetContents = {
    keys: () => wantNosteer.values(),
    args: (cidr) => cidr,
    differs: (cidr) => !live.nosteer.has(cidr),
    stale: () => [...live.nosteer].filter((cidr) => !wantNosteer.has(cidr)),
  };
  const scoped = [...desiredScoped].flatMap(([name, want]) => {
    const have = live.scoped?.get(name);
    return diffOneSet(name, want.options, have?.header, {
      keys: () => want.entries.keys(),
      args: (key) => want.entries.get(key)!,
      differs: (key) => have?.entries.get(key) !== want.entries.get(key),
      stale: () => [...(have?.entries.keys() ?? [])].filter((key) => !want.entries.has(key)),
    });
  });
  return [
    ...diffOneSet(f.pods, podsOptions(f), live.podsHeader, pods),
    ...diffOneSet(f.nosteer, nosteerOptions(f), live.nosteerHeader, nosteer),
    ...scoped,
  ];
}

/** Changes that destroy scoped sets no longer wanted (run after the rules that used them are gone). */
export function staleScopedSets(
  live: LiveSets,
  desiredScoped: ReadonlyMap<string, WantedSet> = new Map(),
): SetChange[] {
  return [...(live.scoped?.keys() ?? [])].filter((name) => !desiredScoped.has(name)).sort()
    .map((set): SetChange => ({ verb: "destroy", set }));
}

/** The desired contents of one set, and how they compare with the live ones. */
interface SetContents {
  /** Desired keys, in the order they are written. */
  keys(): Iterable<string>;
  /** The key as a member of the set (the words after the set name in `ipset save`'s `add` line). */
  args(key: string): string;
  /** The live set lacks the key or holds it with other data. */
  differs(key: string): boolean;
  /** Live keys that are not desired. */
  stale(): string[];
}

/**
 * One set: create it when missing; rebuild it in a scratch set and swap it in
 * atomically when its type is wrong; otherwise add what is missing or changed
 * (`-exist` turns a re-add into an update) and delete what is stale.
 */
function diffOneSet(
  name: string,
  options: string,
  header: string | undefined,
  want: SetContents,
): SetChange[] {
  const changes: SetChange[] = [];
  const addAll = (set: string) => {
    for (const key of want.keys()) changes.push({ verb: "add", set, entry: want.args(key) });
  };
  if (header === undefined) {
    changes.push({ verb: "create", set: name, options });
    addAll(name);
  } else if (!headerFits(header, options)) {
    // A scratch set left by an interrupted pass is reused: create -exist, then flush.
    const scratch = name + SCRATCH_SUFFIX;
    changes.push({ verb: "create", set: scratch, options }, { verb: "flush", set: scratch });
    addAll(scratch);
    changes.push({ verb: "swap", set: scratch, with: name }, { verb: "destroy", set: scratch });
  } else {
    for (const key of want.keys()) {
      if (want.differs(key)) changes.push({ verb: "add", set: name, entry: want.args(key) });
    }
    for (const key of want.stale()) changes.push({ verb: "del", set: name, entry: key });
  }
  return changes;
}

/** What `ipset list -t` tells about a set without listing its entries. */
export interface SetSummary {
  /** The set's header as a `create` line, comparable with `LiveSets` headers. */
  readonly header: string;
  readonly entries: number;
}

/**
 * Parses `ipset list -t` (every set's header, no entries): "Name:", "Type:",
 * "Header:" and "Number of entries:" of each set, by name.
 */
export function parseIpsetTerse(text: string): Map<string, SetSummary> {
  const summaries = new Map<string, SetSummary>();
  for (const block of text.split(/\n(?=Name: )/)) {
    const field = (name: string) => new RegExp(`^${name}: ?(.*)$`, "m").exec(block)?.[1].trim();
    const name = field("Name");
    const entries = Number(field("Number of entries"));
    if (name === undefined || !Number.isInteger(entries)) continue;
    summaries.set(name, {
      header: ["create", name, field("Type"), field("Header")].filter(Boolean).join(" "),
      entries,
    });
  }
  return summaries;
}

/**
 * Our sets as the caller last knew them, if the kernel's summary agrees: each
 * set present or absent alike, with as many entries. Otherwise undefined, and
 * the entries must be listed in full. The headers are taken from the summary,
 * so a set whose type changed behind our back is still rebuilt.
 *
 * The trade-off: an entry changed in place (same count, e.g. `ipset add -exist`
 * with another mark, or a delete plus an add) is not seen until the next full
 * listing; the agent lists in full on every interval resync.
 */
export function confirmSets(
  known: LiveSets,
  summary: ReadonlyMap<string, SetSummary>,
  f: IpsetFamily = IPSET_V4,
): LiveSets | undefined {
  const pods = summary.get(f.pods);
  const nosteer = summary.get(f.nosteer);
  const agrees = (header: string | undefined, live: SetSummary | undefined, size: number) =>
    live === undefined ? header === undefined : header !== undefined && live.entries === size;
  if (!agrees(known.podsHeader, pods, known.pods.size)) return undefined;
  if (!agrees(known.nosteerHeader, nosteer, known.nosteer.size)) return undefined;
  const liveScoped = [...summary.keys()].filter((name) => name.startsWith(f.scopedPrefix));
  if (liveScoped.length !== (known.scoped?.size ?? 0)) return undefined;
  const scoped = new Map<string, LiveScopedSet>();
  for (const name of liveScoped) {
    const have = known.scoped?.get(name);
    const sum = summary.get(name)!;
    if (!have || have.entries.size !== sum.entries) return undefined;
    scoped.set(name, { header: sum.header, entries: have.entries });
  }
  return {
    ...known,
    podsHeader: pods?.header,
    nosteerHeader: nosteer?.header,
    ...(scoped.size ? { scoped } : {}),
  };
}

/**
 * Our sets as they are once a transaction planned from `live` towards these
 * contents has been applied in full: the kernel's own header where it was kept,
 * ours where the set was created or rebuilt; counters read as zero.
 */
export function setsAfterApply(
  live: LiveSets,
  desiredPods: ReadonlyMap<string, number>,
  markMask: number,
  desiredNosteer: readonly string[],
  desiredScoped: ReadonlyMap<string, WantedSet> = new Map(),
  f: IpsetFamily = IPSET_V4,
): LiveSets {
  // One shared entry per mark: this copy is kept between passes.
  const entries = new Map<number, PodEntry>();
  const pods = new Map<string, PodEntry>();
  for (const [ip, mark] of desiredPods) {
    let entry = entries.get(mark);
    if (entry === undefined) {
      entries.set(mark, entry = { mark, mask: markMask, packets: 0, bytes: 0 });
    }
    pods.set(ip, entry);
  }
  const header = (have: string | undefined, name: string, options: string) =>
    headerFits(have, options) ? have : `create ${name} ${options}`;
  return {
    podsHeader: header(live.podsHeader, f.pods, podsOptions(f)),
    pods,
    nosteerHeader: header(live.nosteerHeader, f.nosteer, nosteerOptions(f)),
    nosteer: new Set(desiredNosteer),
    ...(desiredScoped.size
      ? {
        scoped: new Map(
          [...desiredScoped].map(([name, want]) => [name, {
            header: header(live.scoped?.get(name)?.header, name, want.options)!,
            entries: want.entries,
          }]),
        ),
      }
      : {}),
  };
}

/** Changes that destroy our sets (after the rules that use them are gone). */
export function deleteIpsets(live: LiveSets, f: IpsetFamily = IPSET_V4): SetChange[] {
  const names = [
    ...(live.podsHeader !== undefined ? [f.pods] : []),
    ...(live.nosteerHeader !== undefined ? [f.nosteer] : []),
    ...[...(live.scoped?.keys() ?? [])].sort(),
  ];
  return names.map((set): SetChange => ({ verb: "destroy", set }));
}
