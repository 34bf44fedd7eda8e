/**
 * The Lease loop: every retry period, read the lease and renew or try to
 * acquire it (core/kube/lease.ts decides). Leadership is lost when a renewal
 * has not succeeded within the renew deadline; on a clean stop a leader
 * releases the lease so that another agent takes over at once.
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
import { ApiError, type KubeClient } from "./client.ts";
import { errorMessage } from "../../core/errors.ts";

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
    return this;
  }

  async #run() {
    const period = this.options.retryPeriodMs ?? 2000;
    while (!this.#stopped) {
      await this.#tryOnce().catch((error) => this.#failed(error));
      if (
        this.#leading && Date.now() - this.#lastRenew > (this.options.renewDeadlineMs ?? 10_000)
      ) {
        this.#set(false, "renew deadline passed");
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        this.#timer = setTimeout(resolve, period);
      });
    }
  }

  #failed(error: unknown) {
    const message = errorMessage(error);
    if (message !== this.#lastError) {
      this.log.warn("leader election: lease request failed", { error: message });
    }
    this.#lastError = message;
  }

  #set(leading: boolean, why: string) {
    if (leading === this.#leading) return;
    this.#leading = leading;
    this.log.info(
      leading ? "elected: this agent does the cluster-wide writes" : "no longer elected",
      {
        lease: `${this.options.namespace}/${this.options.name}`,
        why,
      },
    );
    this.options.onChange(leading);
  }

  async #get(): Promise<LeaseObject | undefined> {
    try {
      return await this.client.get(
        LEASES,
        this.options.name,
        this.options.namespace,
      ) as LeaseObject;
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return undefined;
      throw error;
    }
  }

  async #tryOnce() {
    const { identity, namespace, name } = this.options;
    const duration = this.options.leaseDurationSeconds ?? 15;
    const lease = await this.#get();
    const now = Date.now();
    if (!lease) {
      try {
        await this.client.create(LEASES, {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name, namespace },
          spec: nextLeaseSpec({}, identity, duration, new Date()),
        }, namespace);
        this.#renewed("created the lease");
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
      } as LeaseObject);
      this.#renewed(
        action === "acquire" ? `took over from ${spec.holderIdentity || "nobody"}` : "renewed",
      );
    } catch (error) {
      if (error instanceof ApiError && error.status === 409) {
        this.#set(false, "another agent updated the lease first");
        return;
      }
      throw error;
    }
  }

  #renewed(why: string) {
    this.#lastRenew = Date.now();
    this.#lastError = undefined;
    this.#set(true, why);
  }

  /** Stops the loop; a leader hands the lease back. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#wake?.();
    await this.#loop;
    if (!this.#leading) return;
    try {
      const lease = await this.#get();
      if (lease?.spec?.holderIdentity === this.options.identity) {
        await this.client.update(LEASES, {
          ...lease,
          spec: releasedLeaseSpec(lease.spec, new Date()),
        });
      }
    } catch (error) {
      this.#failed(error);
    }
    this.#set(false, "stopping");
  }
}
