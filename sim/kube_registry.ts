/**
 * The resources the test API server serves: the built-in kinds kube-egress
 * and `kubectl apply -k deploy/` touch, and custom resources defined by
 * CustomResourceDefinition objects (ours are installed at start, as after
 * `kubectl apply -k deploy/`; a CRD created through the API registers its kind
 * the moment it is stored). Each custom resource keeps its CRD's schema,
 * printer columns and names, for validation, discovery, OpenAPI and Table.
 */
import { customResourceDefinition } from "../core/kube/crd.ts";
import { KINDS } from "../core/kube/api.ts";
import type { Schema } from "./kube_schema.ts";
import type { ResourceInfo } from "./kube_store.ts";

export interface PrinterColumn {
  readonly name: string;
  readonly type: string;
  readonly jsonPath: string;
  readonly description?: string;
  readonly priority?: number;
  readonly format?: string;
}

/** A served resource: what the store needs, and what discovery and validation need. */
export interface ServedResource extends ResourceInfo {
  readonly singular: string;
  readonly shortNames: readonly string[];
  readonly categories: readonly string[];
  readonly verbs: readonly string[];
  /** A custom resource: validated against `schema`, no strategic merge patch, RV on update. */
  readonly custom: boolean;
  readonly schema?: Schema;
  readonly columns?: readonly PrinterColumn[];
}

const ALL_VERBS = [
  "create",
  "delete",
  "deletecollection",
  "get",
  "list",
  "patch",
  "update",
  "watch",
];

function builtin(
  group: string,
  version: string,
  plural: string,
  kind: string,
  namespaced: boolean,
  options: { status?: boolean; shortNames?: string[]; categories?: string[] } = {},
): ServedResource {
  return {
    group,
    version,
    plural,
    kind,
    namespaced,
    statusSubresource: options.status ?? false,
    singular: kind.toLowerCase(),
    shortNames: options.shortNames ?? [],
    categories: options.categories ?? [],
    verbs: ALL_VERBS,
    custom: false,
  };
}

const BUILTINS: readonly ServedResource[] = [
  builtin("", "v1", "pods", "Pod", true, { status: true, shortNames: ["po"], categories: ["all"] }),
  builtin("", "v1", "namespaces", "Namespace", false, { status: true, shortNames: ["ns"] }),
  builtin("", "v1", "nodes", "Node", false, { status: true, shortNames: ["no"] }),
  builtin("", "v1", "events", "Event", true, { shortNames: ["ev"] }),
  builtin("", "v1", "configmaps", "ConfigMap", true, { shortNames: ["cm"] }),
  builtin("", "v1", "serviceaccounts", "ServiceAccount", true, { shortNames: ["sa"] }),
  builtin("", "v1", "resourcequotas", "ResourceQuota", true, {
    status: true,
    shortNames: ["quota"],
  }),
  builtin("apps", "v1", "replicasets", "ReplicaSet", true, {
    status: true,
    shortNames: ["rs"],
    categories: ["all"],
  }),
  builtin("apps", "v1", "daemonsets", "DaemonSet", true, {
    status: true,
    shortNames: ["ds"],
    categories: ["all"],
  }),
  builtin("apps", "v1", "deployments", "Deployment", true, {
    status: true,
    shortNames: ["deploy"],
    categories: ["all"],
  }),
  builtin("coordination.k8s.io", "v1", "leases", "Lease", true),
  builtin("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false),
  builtin("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", false),
  builtin("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
  builtin("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true),
  builtin("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", false, {
    shortNames: ["pc"],
  }),
  builtin(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    "CustomResourceDefinition",
    false,
    {
      status: true,
      shortNames: ["crd", "crds"],
    },
  ),
];

// deno-lint-ignore no-explicit-any
type Crd = any;

/** The served resource of a CRD's storage version, or undefined when the CRD is unusable. */
export function resourceOfCrd(crd: Crd): ServedResource | undefined {
  const spec = crd?.spec;
  const version = spec?.versions?.find((v: Crd) => v.storage) ?? spec?.versions?.[0];
  if (!spec?.group || !spec?.names?.plural || !spec?.names?.kind || !version) return undefined;
  return {
    group: spec.group,
    version: version.name,
    plural: spec.names.plural,
    kind: spec.names.kind,
    namespaced: spec.scope === "Namespaced",
    statusSubresource: version.subresources?.status !== undefined,
    singular: spec.names.singular ?? spec.names.kind.toLowerCase(),
    shortNames: spec.names.shortNames ?? [],
    categories: spec.names.categories ?? [],
    verbs: ALL_VERBS,
    custom: true,
    schema: version.schema?.openAPIV3Schema,
    columns: version.additionalPrinterColumns,
  };
}

/** egress-mapper's old CRDs (its deploy/crds: both namespaced, with status), for `migrate --from-api`. */
function oldCrd(kind: string, plural: string): Crd {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: `${plural}.egress.mapper.com` },
    spec: {
      group: "egress.mapper.com",
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
      scope: "Namespaced",
      versions: [{
        name: "v1alpha1",
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: {
          openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true },
        },
      }],
    },
  };
}

/** The CRDs installed at start: ours (deploy/crds.yaml) and egress-mapper's. */
export function initialCrds(): Crd[] {
  return [
    ...(Object.keys(KINDS) as (keyof typeof KINDS)[]).map((k) => customResourceDefinition(k)),
    oldCrd("Vip", "vips"),
    oldCrd("Egress", "egresses"),
  ];
}

/** Every served resource, built-ins first; CRDs add and replace theirs. */
export class Registry {
  readonly #resources = new Map<string, ServedResource>();

  constructor() {
    for (const r of BUILTINS) this.#resources.set(`${r.group}/${r.plural}`, r);
  }

  /** Registers (or updates) the kind of a stored CRD. */
  define(crd: Crd): ServedResource | undefined {
    const resource = resourceOfCrd(crd);
    if (resource) this.#resources.set(`${resource.group}/${resource.plural}`, resource);
    return resource;
  }

  /** Forgets the kind of a deleted CRD. */
  undefine(crd: Crd): void {
    const resource = resourceOfCrd(crd);
    if (resource) this.#resources.delete(`${resource.group}/${resource.plural}`);
  }

  get all(): ServedResource[] {
    return [...this.#resources.values()];
  }

  byPath(group: string, version: string, plural: string): ServedResource | undefined {
    const r = this.#resources.get(`${group}/${plural}`);
    return r && r.version === version ? r : undefined;
  }

  byKind(kind: string, apiVersion?: string): ServedResource | undefined {
    return this.all.find((r) =>
      r.kind === kind &&
      (apiVersion === undefined || apiVersion === (r.group ? `${r.group}/${r.version}` : r.version))
    );
  }
}
