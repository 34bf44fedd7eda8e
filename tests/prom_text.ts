/**
 * A strict reader of the Prometheus text exposition format (version 0.0.4),
 * for tests: it throws on anything the format does not allow, so the metrics
 * tests check the whole exposition, not only the values they look for.
 * Rules from the format's specification: metric and label name syntax, HELP
 * and TYPE lines (TYPE once, before the samples), label value escaping,
 * float values, one block per family, no duplicate series, and histogram
 * buckets cumulative with the +Inf bucket equal to _count.
 */

export interface PromSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface PromFamily {
  readonly name: string;
  type: string;
  help: string;
  readonly samples: PromSample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

function parseValue(text: string, line: string): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) {
    throw new Error(`bad value "${text}" in: ${line}`);
  }
  return Number(text);
}

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf("=", i);
    const name = text.slice(i, eq);
    if (eq < 0 || !LABEL_NAME.test(name)) throw new Error(`bad label name in: ${line}`);
    if (name in labels) throw new Error(`label ${name} twice in: ${line}`);
    if (text[eq + 1] !== '"') throw new Error(`label value not quoted in: ${line}`);
    let value = "";
    let j = eq + 2;
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === "\\") {
        const next = text[++j];
        if (next === "n") value += "\n";
        else if (next === "\\" || next === '"') value += next;
        else throw new Error(`bad escape \\${next} in: ${line}`);
      } else if (text[j] === "\n") throw new Error(`raw newline in label value: ${line}`);
      else value += text[j];
    }
    if (j >= text.length) throw new Error(`unterminated label value in: ${line}`);
    labels[name] = value;
    i = j + 1;
    if (text[i] === ",") i++;
    else if (i < text.length) throw new Error(`expected , between labels in: ${line}`);
  }
  return labels;
}

/** The family a sample name belongs to (histogram/summary suffixes folded). */
function familyOf(name: string, families: Map<string, PromFamily>): string {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    const base = name.slice(0, -suffix.length);
    if (
      name.endsWith(suffix) && ["histogram", "summary"].includes(families.get(base)?.type ?? "")
    ) {
      return base;
    }
  }
  return name;
}

/** Parses and checks an exposition; returns the families by name. */
export function parsePromText(text: string): Map<string, PromFamily> {
  const families = new Map<string, PromFamily>();
  const closed = new Set<string>();
  let current: string | undefined;
  const series = new Set<string>();
  const family = (name: string) => {
    if (!METRIC_NAME.test(name)) throw new Error(`bad metric name ${name}`);
    let f = families.get(name);
    if (!f) {
      f = { name, type: "untyped", help: "", samples: [] };
      families.set(name, f);
    }
    if (current !== name) {
      if (closed.has(name)) throw new Error(`family ${name} is split into several blocks`);
      if (current) closed.add(current);
      current = name;
    }
    return f;
  };
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (meta) {
      const f = family(meta[2]);
      if (meta[1] === "TYPE") {
        if (!TYPES.has(meta[3])) throw new Error(`bad type in: ${line}`);
        if (f.samples.length > 0) throw new Error(`TYPE after samples: ${line}`);
        f.type = meta[3];
      } else {
        if (/\\[^\\n]/.test(meta[3].replaceAll("\\\\", ""))) {
          throw new Error(`bad escape in HELP: ${line}`);
        }
        f.help = meta[3].replaceAll("\\n", "\n").replaceAll("\\\\", "\\");
      }
      continue;
    }
    if (line.startsWith("#")) continue;
    const m = /^([^\s{]+)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(line);
    if (!m) throw new Error(`bad sample line: ${line}`);
    const labels = m[2] ? parseLabels(m[2], line) : {};
    const f = family(familyOf(m[1], families));
    const id = m[1] + JSON.stringify(Object.entries(labels).sort());
    if (series.has(id)) throw new Error(`duplicate series: ${line}`);
    series.add(id);
    f.samples.push({ name: m[1], labels, value: parseValue(m[3], line) });
  }
  for (const f of families.values()) if (f.type === "histogram") checkHistogram(f);
  return families;
}

function checkHistogram(f: PromFamily) {
  const groups = new Map<string, PromSample[]>();
  for (const s of f.samples) {
    const { le: _le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  for (const samples of groups.values()) {
    const buckets = samples.filter((s) => s.name === `${f.name}_bucket`);
    const count = samples.find((s) => s.name === `${f.name}_count`);
    if (!count || !samples.some((s) => s.name === `${f.name}_sum`)) {
      throw new Error(`histogram ${f.name} lacks _sum or _count`);
    }
    let previous = { le: -Infinity, value: 0 };
    for (const b of buckets) {
      const le = parseValue(b.labels.le ?? "", `le of ${f.name}`);
      if (le <= previous.le || b.value < previous.value) {
        throw new Error(`histogram ${f.name} buckets not increasing/cumulative`);
      }
      previous = { le, value: b.value };
    }
    if (previous.le !== Infinity || previous.value !== count.value) {
      throw new Error(`histogram ${f.name}: +Inf bucket missing or not equal to _count`);
    }
  }
}

/** The value of one series, or undefined. */
export function sampleValue(
  families: Map<string, PromFamily>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (
        s.name === name && Object.keys(labels).length === Object.keys(s.labels).length &&
        Object.entries(labels).every(([k, v]) => s.labels[k] === v)
      ) return s.value;
    }
  }
  return undefined;
}
