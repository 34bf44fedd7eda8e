/**
 * Object metadata as kube-apiserver validates it for every kind
 * (apimachinery's ValidateObjectMeta and ValidateObjectMetaUpdate): names
 * (DNS subdomain, or DNS label for Namespaces), labels, annotations, complete
 * owner references with at most one controller, finalizer names, and on update
 * the rule "no new finalizers can be added if the object is being deleted",
 * plus a resourceVersion on every update of a custom resource.
 */
import type { FieldError } from "./kube_errors.ts";
import type { Meta } from "./kube_store.ts";

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const SUBDOMAIN_HELP =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', " +
  "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for " +
  "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_HELP =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and " +
  "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used " +
  "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/** Name rules of a kind: Namespaces are DNS labels, (almost) everything else DNS subdomains. */
export function nameErrors(name: string, kind: string, field = "metadata.name"): FieldError[] {
  if (name === "") {
    return [{ field, type: "Required value", detail: "name or generateName is required" }];
  }
  const label = kind === "Namespace";
  const max = label ? 63 : 253;
  const errors: FieldError[] = [];
  if (name.length > max) {
    errors.push({
      field,
      type: "Invalid value",
      value: name,
      detail: `must be no more than ${max} characters`,
    });
  }
  if (!(label ? DNS1123_LABEL : DNS1123_SUBDOMAIN).test(name)) {
    errors.push({
      field,
      type: "Invalid value",
      value: name,
      detail: label ? LABEL_HELP : SUBDOMAIN_HELP,
    });
  }
  return errors;
}

/** A label or annotation key: an optional DNS subdomain prefix and a qualified name. */
function keyErrors(key: string, field: string): FieldError[] {
  const slash = key.lastIndexOf("/");
  const [prefix, name] = slash >= 0 ? [key.slice(0, slash), key.slice(slash + 1)] : ["", key];
  const bad = (detail: string): FieldError => ({
    field,
    type: "Invalid value",
    value: key,
    detail,
  });
  if (slash >= 0 && (prefix === "" || prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) {
    return [bad("prefix part " + SUBDOMAIN_HELP)];
  }
  if (name.length > 63) return [bad("name part must be no more than 63 characters")];
  if (!QUALIFIED_NAME.test(name)) {
    return [bad(
      "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end " +
        "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used " +
        "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
    )];
  }
  return [];
}

interface OwnerReference {
  apiVersion?: string;
  kind?: string;
  name?: string;
  uid?: string;
  controller?: boolean;
}

/** Metadata of a new or updated object (the parts every kind shares). */
export function validateMeta(meta: Meta, kind: string): FieldError[] {
  const errors: FieldError[] = [];
  if (meta.name !== undefined) errors.push(...nameErrors(meta.name, kind));
  const labels = (meta.labels ?? {}) as Record<string, unknown>;
  for (const [key, value] of Object.entries(labels)) {
    errors.push(...keyErrors(key, "metadata.labels"));
    if (typeof value !== "string" || value.length > 63 || !LABEL_VALUE.test(value)) {
      errors.push({
        field: "metadata.labels",
        type: "Invalid value",
        value,
        detail: "a valid label must be an empty string or consist of alphanumeric characters, " +
          "'-', '_' or '.', and must start and end with an alphanumeric character, at most 63 characters",
      });
    }
  }
  const annotations = (meta.annotations ?? {}) as Record<string, unknown>;
  let size = 0;
  for (const [key, value] of Object.entries(annotations)) {
    errors.push(...keyErrors(key.toLowerCase(), "metadata.annotations"));
    size += key.length + String(value).length;
  }
  if (size > 256 * 1024) {
    errors.push({
      field: "metadata.annotations",
      type: "Too long",
      detail: "must have at most 262144 bytes",
    });
  }
  const owners = (meta.ownerReferences ?? []) as OwnerReference[];
  owners.forEach((o) => {
    const field = "metadata.ownerReferences";
    if (!o.apiVersion) {
      errors.push({
        field: `${field}.apiVersion`,
        type: "Invalid value",
        value: "",
        detail: "version must not be empty",
      });
    }
    if (!o.kind) {
      errors.push({
        field: `${field}.kind`,
        type: "Invalid value",
        value: "",
        detail: "kind must not be empty",
      });
    }
    if (!o.name) {
      errors.push({
        field: `${field}.name`,
        type: "Invalid value",
        value: "",
        detail: "name must not be empty",
      });
    }
    if (!o.uid) {
      errors.push({
        field: `${field}.uid`,
        type: "Invalid value",
        value: "",
        detail: "uid must not be empty",
      });
    }
  });
  const controllers = owners.filter((o) => o.controller === true);
  if (controllers.length > 1) {
    errors.push({
      field: "metadata.ownerReferences",
      type: "Invalid value",
      value: owners,
      detail: `Only one reference can have Controller set to true. Found "true" in references for ${
        controllers.map((o) => `${o.kind}/${o.name}`).join(" and ")
      }`,
    });
  }
  for (const finalizer of meta.finalizers ?? []) {
    errors.push(...keyErrors(finalizer, "metadata.finalizers"));
  }
  return errors;
}

/** What an update may not change, and the finalizer rule of objects being deleted. */
export function validateMetaUpdate(
  next: Meta,
  old: Meta,
  options: { requireResourceVersion: boolean },
): FieldError[] {
  const errors: FieldError[] = [];
  if (options.requireResourceVersion && !next.resourceVersion) {
    errors.push({
      field: "metadata.resourceVersion",
      type: "Invalid value",
      value: 0,
      detail: "must be specified for an update",
    });
  }
  if (old.deletionTimestamp) {
    const added = (next.finalizers ?? []).filter((f) => !(old.finalizers ?? []).includes(f));
    if (added.length > 0) {
      errors.push({
        field: "metadata.finalizers",
        type: "Forbidden",
        detail:
          `no new finalizers can be added if the object is being deleted, found new finalizers ${
            JSON.stringify(added)
          }`,
      });
    }
  }
  return errors;
}
