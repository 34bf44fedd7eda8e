/**
 * The Lease loop, as client-go's leaderelection: the leader renews every
 * retry period, each attempt bounded by the renew deadline (counted from the
 * last successful renewal), and stops leading the moment that deadline passes,
 * whatever its requests are doing; the deadline is shorter than the lease
 * duration, so it has stopped before anyone else may take the lease. Replicas
 * that do not lead read the lease once per lease duration, timed to when the
 * lease they saw would expire, and watch it meanwhile: a lease handed back on
 * a clean stop is taken at once, not up to a lease duration later.
 */
import {
  leaseAction,
  type LeaseSpec,
  nextLeaseSpec,
  observe,
  type Observed,
  releasedLeaseSpec,
} from "../../core/kube/lease.ts";
import { LEASES } from "../../core/kube/resources.ts";
import type { Logger } from "../log.ts";
import { ApiError, type Bound, type KubeClient } from "./client.ts";
import { errorMessage } from "../../core/errors.ts";
import { Backoff } from "../../core/backoff.ts";
import { abortableSleep } from "../sleep.ts";

export interface ElectorOptions {
  readonly namespace: string;
  readonly name: string;
  /** This agent's identity (the node name). */
  readonly identity: string;
  readonly leaseDurationSeconds?: number;
  readonly renewDeadlineMs?: number;
  readonly retryPeriodMs?: number;
  /** Leadership changed. */
  readonly onChange: (leading: boolean) => void;
}

type LeaseObject = {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
  spec?: LeaseSpec;
};

export class LeaderElector {
  #leading = false;
  #observed?: Observed;
  #lastRenew = 0;
  #stopped = false;
  #timer?: ReturnType<typeof setTimeout>;
  #loop?: Promise<void>;
  #wake?: () => void;
  #lastError?: string;
  #demotion?: ReturnType<typeof setTimeout>;
  #watching?: Promise<void>;
  /** Aborts the requests under way when the elector stops. */
  readonly #abort = new AbortController();

  constructor(
    readonly client: KubeClient,
    readonly log: Logger,
    readonly options: ElectorOptions,
  ) {}

  get leading(): boolean {
    return this.#leading;
  }

  start(): this {
    this.#loop ??= this.#run();
    this.#watching ??= this.#watchLease();
    return this;
  }

  /**
   * While not leading: a watch of the Lease object (a field selector on its
   * name), so that a released lease is taken at once instead of at the next
   * read, which may be a lease duration away. Renewals seen on the watch move
   * the expiry we count to; the reads stay the source of truth.
   */
  async #watchLease() {
    const { namespace, name } = this.options;
    const signal = this.#abort.signal;
    const backoff = new Backoff(500, 10_000);
    while (!this.#stopped) {
      if (this.#leading) {
        await abortableSleep(this.options.retryPeriodMs ?? 2000, signal);
        continue;
      }
      try {
        const lease = await this.#get({ signal });
        const version = lease?.metadata.resourceVersion ?? "0";
        for await (
          const event of this.client.watch(LEASES, version, {
            signal,
            namespace,
            fieldSelector: `metadata.name=${name}`,
            timeoutSeconds: 300,
            onOpen: () => backoff.reset(),
          })
        ) {
          if (event.type === "BOOKMARK") continue;
          if (event.type === "ERROR") break;
          const spec = event.type === "DELETED" ? {} : (event.object as LeaseObject).spec ?? {};
          this.#observed = observe(this.#observed, spec, Date.now());
          if (!spec.holderIdentity || event.type === "DELETED") this.#wake?.();
          if (this.#leading) break;
        }
      } catch (error) {
        if (this.#stopped) break;
        this.#failed(error);
        await abortableSleep(backoff.take(), signal);
      }
    }
  }

  get #renewDeadlineMs(): number {
    return this.options.renewDeadlineMs ?? 10_000;
  }

  get #durationMs(): number {
    return (this.options.leaseDurationSeconds ?? 15) * 1000;
  }

  async #run() {
    const period = this.options.retryPeriodMs ?? 2000;
    if (this.#renewDeadlineMs >= this.#durationMs) {
      throw new Error(
        "leader election: the renew deadline must be shorter than the lease duration",
      );
    }
    while (!this.#stopped) {
      // A leader's attempt may not outlast its renew deadline; the others' the request timeout.
      const bound = this.#leading
        ? {
          timeoutMs: Math.max(1, this.#lastRenew + this.#renewDeadlineMs - Date.now()),
          signal: this.#abort.signal,
        }
        : { signal: this.#abort.signal };
      await this.#tryOnce(bound).catch((error) => this.#failed(error));
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        this.#timer = setTimeout(resolve, this.#leading ? period : this.#followerDelay(period));
      });
    }
  }

  /** Until the lease we saw may be taken (its duration after we saw it change), at most its duration. */
  #followerDelay(period: number): number {
    const observed = this.#observed;
    if (!observed) return period;
    if ((observed.spec.holderIdentity ?? "") === "") return period;
    const duration = (observed.spec.leaseDurationSeconds ?? 15) * 1000;
    const untilFree = observed.atMs + duration - Date.now();
    // Never faster than the retry period, never slower than the duration; a little late, not early.
    return Math.min(duration, Math.max(period, untilFree + 50));
  }

  #failed(error: unknown) {
    const message = errorMessage(error);
    if (message !== this.#lastError) {
      this.log.warn("leader election: lease request failed", { error: message });
    }
    this.#lastError = message;
  }

  #set(leading: boolean, why: string) {
    if (!leading) clearTimeout(this.#demotion);
    if (leading === this.#leading) return;
    this.#leading = leading;
    this.log.info(
      leading ? "elected: this replica does the cluster-wide writes" : "no longer elected",
      {
        lease: `${this.options.namespace}/${this.options.name}`,
        why,
      },
    );
    this.options.onChange(leading);
  }

  async #get(bound: Bound = {}): Promise<LeaseObject | undefined> {
    try {
      return await this.client.get(
        LEASES,
        this.options.name,
        this.options.namespace,
        bound,
      ) as LeaseObject;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return undefined;
      throw error;
    }
  }

  async #tryOnce(bound: Bound) {
    const { identity, namespace, name } = this.options;
    const duration = this.options.leaseDurationSeconds ?? 15;
    // The deadline counts from before the request: the renewal may have been stored at once.
    const started = Date.now();
    const lease = await this.#get(bound);
    const now = Date.now();
    if (!lease) {
      try {
        await this.client.create(
          LEASES,
          {
            apiVersion: "coordination.k8s.io/v1",
            kind: "Lease",
            metadata: { name, namespace },
            spec: nextLeaseSpec({}, identity, duration, new Date()),
          },
          namespace,
          bound,
        );
        this.#renewed("created the lease", started);
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 409)) throw error;
      }
      return;
    }
    const spec = lease.spec ?? {};
    this.#observed = observe(this.#observed, spec, now);
    const action = leaseAction(this.#observed, identity, now);
    if (action === "wait") {
      this.#set(false, `held by ${spec.holderIdentity}`);
      return;
    }
    try {
      await this.client.update(LEASES, {
        ...lease,
        spec: nextLeaseSpec(spec, identity, duration, new Date()),
      } as LeaseObject, bound);
      this.#renewed(
        action === "acquire" ? `took over from ${spec.holderIdentity || "nobody"}` : "renewed",
        started,
      );
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        this.#set(false, "another agent updated the lease first");
        return;
      }
      throw error;
    }
  }

  #renewed(why: string, at = Date.now()) {
    this.#lastRenew = at;
    this.#lastError = undefined;
    this.#set(true, why);
    // Demoted exactly at the deadline, even while a renewal hangs in the network.
    clearTimeout(this.#demotion);
    this.#demotion = setTimeout(
      () => this.#set(false, "renew deadline passed"),
      at + this.#renewDeadlineMs - Date.now(),
    );
  }

  /** Stops the loop; a leader hands the lease back. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    clearTimeout(this.#timer);
    clearTimeout(this.#demotion);
    this.#wake?.();
    await this.#loop;
    await this.#watching;
    if (!this.#leading) return;
    try {
      // Within the pod's grace period, whatever the network does.
      const bound = { timeoutMs: 5000 };
      const lease = await this.#get(bound);
      if (lease?.spec?.holderIdentity === this.options.identity) {
        await this.client.update(LEASES, {
          ...lease,
          spec: releasedLeaseSpec(lease.spec, new Date()),
        }, bound);
      }
    } catch (error) {
      this.#failed(error);
    }
    this.#set(false, "stopping");
  }
}
