/**
 * One line per event that matters, as text for people or JSON for log
 * pipelines. Lines go to stderr so that `plan` and `status` output on stdout
 * stays clean for pipes.
 */

export type LogFormat = "text" | "json";
export type Level = "info" | "warn" | "error";
export type Fields = Record<string, string | number | boolean | undefined>;

export interface Logger {
  info(message: string, fields?: Fields): void;
  warn(message: string, fields?: Fields): void;
  error(message: string, fields?: Fields): void;
}

function quote(value: string | number | boolean): string {
  const text = String(value);
  return /^[^\s"=]+$/.test(text) ? text : JSON.stringify(text);
}

/** Formats one log line (exported for tests). */
export function formatLine(
  format: LogFormat,
  level: Level,
  message: string,
  fields: Fields,
  now: Date,
): string {
  const defined = Object.entries(fields).filter(([, v]) => v !== undefined) as [
    string,
    string | number | boolean,
  ][];
  if (format === "json") {
    return JSON.stringify({
      time: now.toISOString(),
      level,
      msg: message,
      ...Object.fromEntries(defined),
    });
  }
  const tail = defined.map(([k, v]) => `${k}=${quote(v)}`).join(" ");
  return `${now.toISOString()} ${level.toUpperCase().padEnd(5)} ${message}${
    tail ? " " + tail : ""
  }`;
}

/** A logger writing to stderr (or to `sink`, for tests). */
export function createLogger(
  format: LogFormat = "text",
  sink: (line: string) => void = console.error,
): Logger {
  const emit = (level: Level) => (message: string, fields: Fields = {}) =>
    sink(formatLine(format, level, message, fields, new Date()));
  return { info: emit("info"), warn: emit("warn"), error: emit("error") };
}

/**
 * The log format asked for on a command line, found before the flags are
 * parsed, so that even usage errors come out as JSON with `--log-format json`.
 */
export function logFormatFromArgs(args: readonly string[]): LogFormat {
  const at = args.indexOf("--log-format");
  const value = at >= 0 ? args[at + 1] : args.find((a) => a.startsWith("--log-format="))?.slice(13);
  return value === "json" ? "json" : "text";
}

/** A fatal message of a command: "kube-egress: message" as text, an error line as JSON. */
export function fatalLine(format: LogFormat, message: string, now = new Date()): string {
  return format === "json"
    ? formatLine("json", "error", message, {}, now)
    : `kube-egress: ${message}`;
}
