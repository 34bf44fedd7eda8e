/**
 * Our two ipsets: the pods set (pod IP → fwmark, O(1) per packet however many
 * pods are mapped) and the nosteer set (destinations never steered). Read from
 * `ipset save`, compared entry by entry, and updated incrementally with one
 * `ipset restore -exist`: adding a pod writes one line, not the whole set.
 */
import { formatCidr, parseCidr } from "./ip.ts";
import { hex } from "./marks.ts";
import { NOSTEER_SET, PODS_SET, PODS_SET_MAXELEM, SCRATCH_SUFFIX } from "./names.ts";

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
}

/** The options each set is created with; a live set whose header lacks one is rebuilt. */
const PODS_OPTIONS =
  `hash:ip family inet hashsize 1024 maxelem ${PODS_SET_MAXELEM} counters skbinfo`;
const NOSTEER_OPTIONS = "hash:net family inet hashsize 64 maxelem 65536";

/** Parses `ipset save` output of our sets (other sets in the text are ignored). */
export function parseIpsetSave(text: string): LiveSets {
  let podsHeader: string | undefined;
  let nosteerHeader: string | undefined;
  const pods = new Map<string, PodEntry>();
  const nosteer = new Set<string>();
  for (const line of text.split("\n")) {
    const words = line.trim().split(/\s+/);
    if (words[0] === "create" && words[1] === PODS_SET) podsHeader = line.trim();
    else if (words[0] === "create" && words[1] === NOSTEER_SET) nosteerHeader = line.trim();
    else if (words[0] === "add" && words[1] === PODS_SET) {
      const option = (name: string) => {
        const i = words.indexOf(name);
        return i > 0 ? words[i + 1] : undefined;
      };
      const [mark, mask] = (option("skbmark") ?? "0x0").split("/");
      pods.set(words[2], {
        mark: parseInt(mark, 16),
        mask: mask === undefined ? 0xffffffff : parseInt(mask, 16),
        packets: Number(option("packets") ?? 0),
        bytes: Number(option("bytes") ?? 0),
      });
    } else if (words[0] === "add" && words[1] === NOSTEER_SET) {
      const cidr = parseCidr(words[2]);
      if (cidr) nosteer.add(formatCidr(cidr));
    }
  }
  return { podsHeader, pods, nosteerHeader, nosteer };
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
function podArgs(ip: string, mark: number, mask: number): string {
  return `${ip} skbmark ${hex(mark)}/${hex(mask)}`;
}

/** The `ipset restore -exist` lines that make the live sets equal the desired ones. */
export function diffIpsets(
  live: LiveSets,
  desiredPods: ReadonlyMap<string, number>,
  markMask: number,
  desiredNosteer: readonly string[],
): string[] {
  const wantPods = new Map([...desiredPods].map(([ip, mark]) => [ip, podArgs(ip, mark, markMask)]));
  const havePods = new Map([...live.pods].map(([ip, e]) => [ip, podArgs(ip, e.mark, e.mask)]));
  const wantNosteer = new Map(desiredNosteer.map((cidr) => [cidr, cidr]));
  const haveNosteer = new Map([...live.nosteer].map((cidr) => [cidr, cidr]));
  return [
    ...diffOneSet(PODS_SET, PODS_OPTIONS, live.podsHeader, wantPods, havePods),
    ...diffOneSet(NOSTEER_SET, NOSTEER_OPTIONS, live.nosteerHeader, wantNosteer, haveNosteer),
  ];
}

/**
 * One set, as key → entry words: create it when missing; rebuild it in a
 * scratch set and swap it in atomically when its type is wrong; otherwise add
 * what is missing or changed (`-exist` turns a re-add into an update) and
 * delete what is stale.
 */
function diffOneSet(
  name: string,
  options: string,
  header: string | undefined,
  want: ReadonlyMap<string, string>,
  have: ReadonlyMap<string, string>,
): string[] {
  const adds = (set: string, only?: (key: string, args: string) => boolean) =>
    [...want].filter(([key, args]) => !only || only(key, args)).map(([, args]) =>
      `add ${set} ${args}`
    );
  if (header === undefined) return [`create ${name} ${options}`, ...adds(name)];
  if (!headerFits(header, options)) {
    // A scratch set left by an interrupted pass is reused: create -exist, then flush.
    const scratch = name + SCRATCH_SUFFIX;
    return [
      `create ${scratch} ${options}`,
      `flush ${scratch}`,
      ...adds(scratch),
      `swap ${scratch} ${name}`,
      `destroy ${scratch}`,
    ];
  }
  const lines = adds(name, (key, args) => have.get(key) !== args);
  for (const key of have.keys()) if (!want.has(key)) lines.push(`del ${name} ${key}`);
  return lines;
}

/** Lines that destroy our sets (after the rules that use them are gone). */
export function deleteIpsets(live: LiveSets): string[] {
  const lines: string[] = [];
  if (live.podsHeader !== undefined) lines.push(`destroy ${PODS_SET}`);
  if (live.nosteerHeader !== undefined) lines.push(`destroy ${NOSTEER_SET}`);
  return lines;
}
