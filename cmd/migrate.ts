/**
 * `mod.ts migrate`: reads the old stack's ConfigMaps and egress-mapper
 * Vip/Egress objects from YAML files or from the API, prints the new
 * EgressVIP/EgressPolicy objects as YAML (for review, or `| kubectl apply -f -`)
 * and, with --apply, creates them (existing ones are left alone).
 */
import { parseAllDocuments, stringify } from "yaml";
import { migrate, type Migration, type OldInputs } from "../core/kube/migrate.ts";
import { type PodRecord, podRecord } from "../core/kube/objects.ts";
import {
  EGRESS_POLICIES,
  EGRESS_VIPS,
  PODS,
  type Resource,
  type Verb,
} from "../core/kube/resources.ts";
import { ApiError, KubeClient } from "./kube/client.ts";

export const PODIP_VIP_CONFIGMAP = "podip-vip-mappings";
export const VIP_ROUTEID_CONFIGMAP = "vip-routeid-mappings";

type Obj = {
  kind?: string;
  metadata?: { name?: string };
  data?: Record<string, string>;
  items?: Obj[];
};

export interface MigrateOptions {
  readonly files: readonly string[];
  readonly fromApi: boolean;
  readonly apply: boolean;
  readonly kubeconfig?: string;
  /** Namespace of the old ConfigMaps. */
  readonly configMapNamespace: string;
  /** group/version of egress-mapper's CRDs. */
  readonly oldApi: string;
}

const CONFIGMAPS: Resource = { group: "", version: "v1", plural: "configmaps", namespaced: true };

/** egress-mapper's CRDs (deploy/crds in its repository): both namespaced, listed in every namespace. */
function oldResources(oldApi: string): { vips: Resource; egresses: Resource } {
  const [group, version] = oldApi.split("/");
  return {
    vips: { group, version, plural: "vips", namespaced: true },
    egresses: { group, version, plural: "egresses", namespaced: true },
  };
}

/** What migrate may ask the API server for (an admin's credentials, not the agent's). */
export function migratePermissions(oldApi: string): { resource: Resource; verbs: Verb[] }[] {
  const old = oldResources(oldApi);
  return [
    { resource: CONFIGMAPS, verbs: ["get"] },
    { resource: old.vips, verbs: ["list"] },
    { resource: old.egresses, verbs: ["list"] },
    { resource: PODS, verbs: ["list"] },
    { resource: EGRESS_VIPS, verbs: ["create"] },
    { resource: EGRESS_POLICIES, verbs: ["create"] },
  ];
}

/** Sorts old objects from YAML documents (Lists flattened) into migrate's inputs. */
export function inputsFromDocuments(documents: readonly unknown[]): OldInputs {
  const vipRouteIds: Record<string, string> = {};
  const podVips: Record<string, string> = {};
  const vips: unknown[] = [];
  const egresses: unknown[] = [];
  const visit = (doc: Obj | null) => {
    if (!doc || typeof doc !== "object") return;
    if (Array.isArray(doc.items)) doc.items.forEach(visit);
    else if (doc.kind === "ConfigMap" && doc.metadata?.name === VIP_ROUTEID_CONFIGMAP) {
      Object.assign(vipRouteIds, doc.data ?? {});
    } else if (doc.kind === "ConfigMap" && doc.metadata?.name === PODIP_VIP_CONFIGMAP) {
      Object.assign(podVips, doc.data ?? {});
    } else if (doc.kind === "Vip") vips.push(doc);
    else if (doc.kind === "Egress") egresses.push(doc);
  };
  documents.forEach((d) => visit(d as Obj));
  return { vipRouteIds, podVips, vips, egresses };
}

async function readFiles(files: readonly string[]): Promise<unknown[]> {
  const documents: unknown[] = [];
  for (const file of files) {
    const text = await Deno.readTextFile(file);
    for (const doc of parseAllDocuments(text)) {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0].message}`);
      documents.push(doc.toJS());
    }
  }
  return documents;
}

async function readApi(
  client: KubeClient,
  options: MigrateOptions,
): Promise<OldInputs & { pods: PodRecord[]; missing: string[] }> {
  // What is not there is said: a wrong namespace or group must not look like an empty old stack.
  const missing: string[] = [];
  const configMap = async (name: string) => {
    try {
      const cm = await client.get(CONFIGMAPS, name, options.configMapNamespace) as Obj;
      return cm.data ?? {};
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
      missing.push(
        `no ConfigMap ${options.configMapNamespace}/${name} (another --configmap-namespace?)`,
      );
      return {};
    }
  };
  const listOld = async (resource: Resource) => {
    try {
      return (await client.list(resource)).items;
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
      missing.push(
        `no ${resource.plural}.${resource.group}/${resource.version} in the API ` +
          "(egress-mapper's CRDs not installed, or another --old-api?)",
      );
      return [];
    }
  };
  const old = oldResources(options.oldApi);
  const pods = (await client.list(PODS)).items.map(podRecord).filter((p): p is PodRecord => !!p);
  return {
    vipRouteIds: await configMap(VIP_ROUTEID_CONFIGMAP),
    podVips: await configMap(PODIP_VIP_CONFIGMAP),
    vips: await listOld(old.vips),
    egresses: await listOld(old.egresses),
    pods,
    missing,
  };
}

/** Creates the objects; an existing object is reported and left as it is. */
async function applyObjects(client: KubeClient, migration: Migration): Promise<string[]> {
  const lines: string[] = [];
  for (const object of migration.objects) {
    const meta = object.metadata as { name: string; namespace?: string };
    const resource = object.kind === "EgressVIP" ? EGRESS_VIPS : EGRESS_POLICIES;
    const label = `${object.kind} ${meta.namespace ? `${meta.namespace}/` : ""}${meta.name}`;
    try {
      await client.create(resource, object, meta.namespace);
      lines.push(`created ${label}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        lines.push(`exists, left alone: ${label}`);
      } else throw error;
    }
  }
  return lines;
}

/** Runs migrate; returns what to print on stdout and stderr. */
export async function runMigrate(options: MigrateOptions): Promise<{ out: string; err: string[] }> {
  if (options.files.length === 0 && !options.fromApi) {
    throw new Error("give old YAML files (ConfigMaps, Vip, Egress objects) or --from-api");
  }
  const fileInputs = inputsFromDocuments(await readFiles(options.files));
  let client: KubeClient | undefined;
  if (options.fromApi || options.apply) {
    client = await KubeClient.fromEnvironment({
      kubeconfig: options.kubeconfig,
      permissions: migratePermissions(options.oldApi),
    });
  }
  try {
    let inputs: OldInputs = fileInputs;
    const missing: string[] = [];
    if (options.fromApi) {
      const api = await readApi(client!, options);
      inputs = {
        vipRouteIds: { ...api.vipRouteIds, ...fileInputs.vipRouteIds },
        podVips: { ...api.podVips, ...fileInputs.podVips },
        vips: [...api.vips, ...fileInputs.vips],
        egresses: [...api.egresses, ...fileInputs.egresses],
        pods: api.pods,
      };
      missing.push(...api.missing);
    }
    const migration = migrate(inputs);
    const err = [...missing, ...migration.problems].map((p) => `warning: ${p}`);
    const out = migration.objects.map((o) => `---\n${stringify(o, { lineWidth: 0 })}`).join("");
    if (options.apply) err.push(...await applyObjects(client!, migration));
    return { out, err };
  } finally {
    client?.close();
  }
}
