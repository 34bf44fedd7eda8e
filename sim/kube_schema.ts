/**
 * What apiextensions-apiserver does with a custom resource before storing it,
 * against the CRD's structural openAPIV3Schema: prune unknown fields (and
 * nulls of non-nullable fields), validate types, required fields, enums,
 * patterns, formats, bounds and sizes, then evaluate the `x-kubernetes-
 * validations` CEL rules of every node that passed (sim/kube_cel.ts). Errors are
 * field errors worded as the real server words them (sim/kube_errors.ts).
 */
import { isIPv4 } from "../core/ip.ts";
import { evaluate } from "./kube_cel.ts";
import type { FieldError } from "./kube_errors.ts";

export interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  items?: Schema;
  required?: string[];
  enum?: unknown[];
  pattern?: string;
  format?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  nullable?: boolean;
  "x-kubernetes-preserve-unknown-fields"?: boolean;
  "x-kubernetes-validations"?: {
    rule: string;
    message?: string;
    messageExpression?: string;
    fieldPath?: string;
    reason?: string;
  }[];
  [key: string]: unknown;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v);

/**
 * Removes what the schema does not know (apiextensions' pruning), returning the
 * pruned copy and the paths of the removed fields ("spec.foo"), which the
 * server reports as warnings or, with fieldValidation=Strict, refuses.
 */
export function prune(
  value: unknown,
  schema: Schema | undefined,
  path: string,
  unknown: string[],
): unknown {
  if (!schema || schema["x-kubernetes-preserve-unknown-fields"] && !schema.properties) {
    return structuredClone(value);
  }
  if (Array.isArray(value)) {
    return value.map((v, i) => prune(v, schema.items, `${path}[${i}]`, unknown));
  }
  if (!isObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [key, child] of Object.entries(value)) {
    const at = path ? `${path}.${key}` : key;
    // ObjectMeta is the API server's, whatever the CRD's schema says of it.
    if (path === "" && key === "metadata") {
      out[key] = structuredClone(child);
      continue;
    }
    const known = schema.properties?.[key] ??
      (isObject(schema.additionalProperties) ? schema.additionalProperties : undefined);
    if (!known && !schema["x-kubernetes-preserve-unknown-fields"]) {
      if (!(path === "" && (key === "apiVersion" || key === "kind" || key === "metadata"))) {
        unknown.push(at);
        continue;
      }
    }
    // Nulls of fields that are not nullable are dropped, as the real server does.
    if (child === null && !known?.nullable) continue;
    out[key] = prune(child, known, at, unknown);
  }
  return out;
}

function typeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function matchesType(value: unknown, type: string): boolean {
  const actual = typeOf(value);
  return actual === type || (type === "number" && actual === "integer");
}

const FORMATS: Record<string, (s: string) => boolean> = {
  ipv4: isIPv4,
  "date-time": (s) =>
    /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(s) &&
    !Number.isNaN(Date.parse(s)),
};

/** Validates a (pruned) value; appends field errors. */
export function validate(value: unknown, schema: Schema, path: string, errors: FieldError[]): void {
  if (schema.type && !matchesType(value, schema.type)) {
    errors.push({
      field: path,
      type: "Invalid value",
      value: typeOf(value),
      detail: `${path} in body must be of type ${schema.type}: ${JSON.stringify(typeOf(value))}`,
    });
    return;
  }
  if (schema.enum && !schema.enum.some((e) => e === value)) {
    errors.push({
      field: path,
      type: "Unsupported value",
      value,
      detail: `supported values: ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}`,
    });
  }
  if (typeof value === "string") {
    if (schema.maxLength !== undefined && [...value].length > schema.maxLength) {
      errors.push({
        field: path,
        type: "Too long",
        detail: `may not be more than ${schema.maxLength} bytes`,
      });
    }
    if (schema.minLength !== undefined && [...value].length < schema.minLength) {
      errors.push({
        field: path,
        type: "Invalid value",
        value,
        detail: `${path} in body should be at least ${schema.minLength} chars long`,
      });
    }
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, "u").test(value)) {
      errors.push({
        field: path,
        type: "Invalid value",
        value,
        detail: `${path} in body should match '${schema.pattern}'`,
      });
    }
    const format = schema.format ? FORMATS[schema.format] : undefined;
    if (format && !format(value)) {
      errors.push({
        field: path,
        type: "Invalid value",
        value,
        detail: `${path} in body must be of type ${schema.format}: ${JSON.stringify(value)}`,
      });
    }
  }
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) {
      errors.push({
        field: path,
        type: "Invalid value",
        value,
        detail: `${path} in body should be greater than or equal to ${schema.minimum}`,
      });
    }
    if (schema.maximum !== undefined && value > schema.maximum) {
      errors.push({
        field: path,
        type: "Invalid value",
        value,
        detail: `${path} in body should be less than or equal to ${schema.maximum}`,
      });
    }
  }
  if (Array.isArray(value)) {
    if (schema.maxItems !== undefined && value.length > schema.maxItems) {
      errors.push({
        field: path,
        type: "Too many",
        value: value.length,
        detail: `must have at most ${schema.maxItems} items`,
      });
    }
    if (schema.minItems !== undefined && value.length < schema.minItems) {
      errors.push({
        field: path,
        type: "Invalid value",
        value: value.length,
        detail: `${path} in body should have at least ${schema.minItems} items`,
      });
    }
    if (schema.items) value.forEach((v, i) => validate(v, schema.items!, `${path}[${i}]`, errors));
  }
  if (isObject(value)) {
    for (const key of schema.required ?? []) {
      if (!(key in value)) {
        errors.push({ field: path ? `${path}.${key}` : key, type: "Required value" });
      }
    }
    for (const [key, child] of Object.entries(value)) {
      const sub = schema.properties?.[key] ??
        (isObject(schema.additionalProperties) ? schema.additionalProperties : undefined);
      if (sub) validate(child, sub, path ? `${path}.${key}` : key, errors);
    }
  }
  // CEL rules run on every node of the right type (a type error returned above), whatever
  // the value validation of its children said: kube-apiserver reports both.
  celRules(value, schema, path, errors);
}

function celRules(value: unknown, schema: Schema, path: string, errors: FieldError[]) {
  for (const rule of schema["x-kubernetes-validations"] ?? []) {
    let ok: unknown;
    try {
      ok = evaluate(rule.rule, value);
    } catch (error) {
      errors.push({
        field: path,
        type: "Invalid value",
        value: typeOf(value) === "object" ? "object" : value,
        detail: `rule compile/evaluation error: ${error instanceof Error ? error.message : error}`,
      });
      continue;
    }
    if (ok === true) continue;
    let message = rule.message ?? `failed rule: ${rule.rule}`;
    if (rule.messageExpression) {
      try {
        const text = evaluate(rule.messageExpression, value);
        if (typeof text === "string" && text.trim() !== "") message = text;
      } catch {
        // The real server falls back to `message` too.
      }
    }
    const field = rule.fieldPath ? `${path}${rule.fieldPath}` : path;
    const shown = isObject(value) ? "object" : Array.isArray(value) ? "array" : value;
    errors.push(
      rule.reason === "FieldValueRequired"
        ? { field, type: "Required value", detail: message }
        : rule.reason === "FieldValueForbidden"
        ? { field, type: "Forbidden", detail: message }
        : { field, type: "Invalid value", value: shown, detail: message },
    );
  }
}
