/**
 * The old kube-egress input format: two directories (mounted ConfigMaps) where
 * each file's name is the key and its trimmed content the value. Dot-entries
 * (ConfigMap `..data` links, editor leftovers) are not mappings and are skipped.
 *
 * IPv6 addresses are keys too ("fd00:10:244::5" → "2001:db8::50"). A ConfigMap
 * key cannot hold a colon (keys are `[-._a-zA-Z0-9]+`), so a key may also write
 * the colons of an IPv6 address as dashes, as the ipv6-literal.net names do:
 * "fd00-10-244--5" is fd00:10:244::5. No IPv4 address has a dash.
 */
import type { Problem, RawPod, RawSnapshot, RawVip } from "./snapshot.ts";

/** One directory entry as read from disk: its content, or why it could not be read. */
export type FileEntry =
  | { readonly path: string; readonly name: string; readonly content: string }
  | { readonly path: string; readonly name: string; readonly error: string };

/** True for names that are not mappings: hidden files and ConfigMap internals. */
export function isIgnoredName(name: string): boolean {
  return name.startsWith(".");
}

/** The address a file name stands for: the name, or an IPv6 address with its colons written as dashes. */
export function keyOfName(name: string): string {
  return name.includes("-") && !name.includes(":") ? name.replaceAll("-", ":") : name;
}

/** Turns the two directories' entries into a raw snapshot for validation. */
export function rawSnapshotFromFiles(
  podVipFiles: readonly FileEntry[],
  vipRouteFiles: readonly FileEntry[],
): RawSnapshot {
  const problems: Problem[] = [];
  const pods: RawPod[] = [];
  const vips: RawVip[] = [];
  for (const file of podVipFiles) {
    if (isIgnoredName(file.name)) continue;
    if ("error" in file) problems.push({ origin: file.path, reason: `unreadable: ${file.error}` });
    else pods.push({ origin: file.path, podIp: keyOfName(file.name), vip: file.content.trim() });
  }
  for (const file of vipRouteFiles) {
    if (isIgnoredName(file.name)) continue;
    if ("error" in file) problems.push({ origin: file.path, reason: `unreadable: ${file.error}` });
    else vips.push({ origin: file.path, ip: keyOfName(file.name), routeId: file.content.trim() });
  }
  return { pods, vips, problems };
}
