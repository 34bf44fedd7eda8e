/**
 * Paths joined as node:path's `join` joins them (POSIX), without loading
 * node:path: Node compatibility costs a one-shot run ~10 ms to load, and the
 * files it reads and the messages that name them need nothing more than this.
 */

/** `join("/etc/x/", "a")` = "/etc/x/a": the parts joined by "/", then normalized (".", "..", repeated slashes). */
export function joinPath(...parts: readonly string[]): string {
  const joined = parts.filter((p) => p !== "").join("/");
  if (joined === "") return ".";
  const absolute = joined.startsWith("/");
  const trailing = joined.endsWith("/");
  const segments: string[] = [];
  for (const segment of joined.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment !== "..") segments.push(segment);
    else if (segments.length > 0 && segments[segments.length - 1] !== "..") segments.pop();
    else if (!absolute) segments.push("..");
  }
  const path = segments.join("/");
  if (path === "") return absolute ? "/" : trailing ? "./" : ".";
  return `${absolute ? "/" : ""}${path}${trailing ? "/" : ""}`;
}
