/**
 * Field errors as kube-apiserver words them (k8s.io/apimachinery
 * pkg/util/validation/field): "spec.ip: Required value", "spec.routeId:
 * Invalid value: 0: ...", and the 422 Status that gathers them, with
 * `details.causes`, which kubectl prints and clients read.
 */

export type FieldErrorType =
  | "Required value"
  | "Invalid value"
  | "Unsupported value"
  | "Forbidden"
  | "Too many"
  | "Too long"
  | "Duplicate value";

export interface FieldError {
  readonly field: string;
  readonly type: FieldErrorType;
  /** The offending value (shown for Invalid/Unsupported/Too many/Duplicate). */
  readonly value?: unknown;
  readonly detail?: string;
}

const REASONS: Record<FieldErrorType, string> = {
  "Required value": "FieldValueRequired",
  "Invalid value": "FieldValueInvalid",
  "Unsupported value": "FieldValueNotSupported",
  Forbidden: "FieldValueForbidden",
  "Too many": "FieldValueTooMany",
  "Too long": "FieldValueTooLong",
  "Duplicate value": "FieldValueDuplicate",
};

/** A value as field errors print it: strings quoted, numbers bare, the rest as JSON. */
function shown(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return String(value);
  return JSON.stringify(value) ?? "null";
}

/** The part after "<field>: ". */
export function errorBody(e: FieldError): string {
  const withValue = e.type === "Invalid value" || e.type === "Unsupported value" ||
    e.type === "Too many" || e.type === "Duplicate value";
  const head = withValue && e.value !== undefined ? `${e.type}: ${shown(e.value)}` : e.type;
  return e.detail ? `${head}: ${e.detail}` : head;
}

export function errorText(e: FieldError): string {
  return `${e.field}: ${errorBody(e)}`;
}

/** The 422 Status of an invalid object (apierrors.NewInvalid). */
export function invalidStatus(
  qualifiedKind: { kind: string; group: string },
  name: string,
  errors: readonly FieldError[],
) {
  const list = errors.map(errorText);
  const kind = qualifiedKind.group
    ? `${qualifiedKind.kind}.${qualifiedKind.group}`
    : qualifiedKind.kind;
  return {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message: `${kind} "${name}" is invalid: ${
      list.length === 1 ? list[0] : `[${list.join(", ")}]`
    }`,
    reason: "Invalid",
    details: {
      name,
      group: qualifiedKind.group,
      kind: qualifiedKind.kind,
      causes: errors.map((e) => ({
        reason: REASONS[e.type],
        message: errorBody(e),
        field: e.field,
      })),
    },
    code: 422,
  };
}
