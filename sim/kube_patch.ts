/**
 * The three patch types kube-apiserver takes from kubectl and controllers:
 * JSON patch (RFC 6902, `fast-json-patch`, with `test` operations), JSON merge
 * patch (RFC 7396, `json-merge-patch`) and, for built-in kinds only, strategic
 * merge patch: maps merge, lists of known kinds merge by their key (containers
 * by name, ...), with the directives kubectl sends ($patch, $setElementOrder,
 * $deleteFromPrimitiveList, $retainKeys). Custom resources refuse strategic
 * merge patch with 415, as apiextensions-apiserver does.
 */
import jsonpatch from "fast-json-patch";
import mergePatchLib from "json-merge-patch";
import { StatusError } from "./kube_store.ts";

export const PATCH_TYPES = {
  json: "application/json-patch+json",
  merge: "application/merge-patch+json",
  strategic: "application/strategic-merge-patch+json",
} as const;

/** Merge keys of lists in the built-in kinds we serve (by field name; strategy "merge"). */
const MERGE_KEYS: Record<string, string> = {
  containers: "name",
  initContainers: "name",
  ephemeralContainers: "name",
  env: "name",
  volumes: "name",
  volumeMounts: "mountPath",
  volumeDevices: "devicePath",
  ports: "containerPort",
  imagePullSecrets: "name",
  ownerReferences: "uid",
  conditions: "type",
  addresses: "type",
  hostAliases: "ip",
  topologySpreadConstraints: "topologyKey",
};
/** Lists of scalars merged as sets. */
const SET_LISTS = new Set(["finalizers"]);

type Json = Record<string, unknown>;
const isMap = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v);

/** Applies a strategic merge patch (the subset kubectl's apply, edit, label and annotate send). */
export function strategicMerge(target: unknown, patch: unknown): unknown {
  if (!isMap(patch)) return structuredClone(patch);
  if (patch.$patch === "replace") {
    const { $patch: _, ...rest } = patch;
    return structuredClone(rest);
  }
  if (patch.$patch === "delete") return undefined;
  const out: Json = isMap(target) ? structuredClone(target) : {};
  const retain = Array.isArray(patch.$retainKeys)
    ? new Set(patch.$retainKeys as string[])
    : undefined;
  for (const [key, value] of Object.entries(patch)) {
    if (key === "$retainKeys" || key === "$patch") continue;
    if (key.startsWith("$setElementOrder/")) continue;
    if (key.startsWith("$deleteFromPrimitiveList/")) {
      const field = key.slice("$deleteFromPrimitiveList/".length);
      const drop = new Set(value as unknown[]);
      if (Array.isArray(out[field])) {
        out[field] = (out[field] as unknown[]).filter((v) => !drop.has(v));
      }
      continue;
    }
    if (value === null) {
      delete out[key];
      continue;
    }
    if (Array.isArray(value)) {
      out[key] = mergeList(key, out[key], value, patch[`$setElementOrder/${key}`]);
      continue;
    }
    const merged = strategicMerge(out[key], value);
    if (merged === undefined) delete out[key];
    else out[key] = merged;
  }
  if (retain) { for (const key of Object.keys(out)) if (!retain.has(key)) delete out[key]; }
  return out;
}

function mergeList(field: string, current: unknown, patch: unknown[], order: unknown): unknown[] {
  const key = MERGE_KEYS[field];
  const have = Array.isArray(current) ? current : [];
  if (SET_LISTS.has(field)) return [...new Set([...have, ...patch])];
  if (!key || !patch.every(isMap)) return structuredClone(patch);
  if (patch.length === 1 && (patch[0] as Json).$patch === "replace") return [];
  const out = have.map((item) => structuredClone(item)) as Json[];
  for (const item of patch as Json[]) {
    const index = out.findIndex((o) => isMap(o) && o[key] === item[key]);
    if (item.$patch === "delete") {
      if (index >= 0) out.splice(index, 1);
    } else if (index >= 0) out[index] = strategicMerge(out[index], item) as Json;
    else out.push(strategicMerge({}, item) as Json);
  }
  if (Array.isArray(order)) {
    const rank = new Map(order.map((o, i) => [(o as Json)[key], i]));
    out.sort((a, b) => (rank.get(a[key]) ?? Infinity) - (rank.get(b[key]) ?? Infinity));
  }
  return out;
}

/** Applies a patch of the given content type; `custom` = a custom resource (no strategic patches). */
export function applyPatch(
  stored: unknown,
  body: string,
  contentType: string,
  custom: boolean,
): Json {
  const type = contentType.split(";")[0].trim();
  let patch: unknown;
  try {
    patch = JSON.parse(body);
  } catch (error) {
    throw new StatusError(
      400,
      "BadRequest",
      `error decoding patch: ${error instanceof Error ? error.message : error}`,
    );
  }
  if (type === PATCH_TYPES.json) {
    if (!Array.isArray(patch)) {
      throw new StatusError(400, "BadRequest", "json patch must be an array");
    }
    try {
      return jsonpatch.applyPatch(
        structuredClone(stored),
        patch as jsonpatch.Operation[],
        true,
        false,
      )
        .newDocument as Json;
    } catch (error) {
      const e = error as { name?: string; message?: string };
      // kube-apiserver: a failed "test" (or a path that is not there) is 422, not 409.
      throw new StatusError(
        422,
        "Invalid",
        `the server rejected our request due to an error in our request: ${e.message}`,
      );
    }
  }
  if (type === PATCH_TYPES.merge) {
    return mergePatchLib.apply(structuredClone(stored), patch) as Json;
  }
  if (type === PATCH_TYPES.strategic && !custom) return strategicMerge(stored, patch) as Json;
  throw new StatusError(
    415,
    "UnsupportedMediaType",
    `the body of the request was in an unknown format - accepted media types include: ${PATCH_TYPES.json}, ${PATCH_TYPES.merge}` +
      (custom ? "" : `, ${PATCH_TYPES.strategic}`),
  );
}
