// The agent's health as /healthz, /livez and /readyz report it.
//
// Health follows kube-proxy's ProxyHealthServer
// (pkg/proxy/healthcheck/proxy_health.go): every change that needs a sync calls
// queuedUpdate(), every successful sync calls updated(); the agent is unhealthy
// when a queued change has waited longer than healthTimeout (kube-proxy uses
// 2 × --sync-period). A node being deleted, or tainted
// ToBeDeletedByClusterAutoscaler, makes /healthz (not /livez) fail, so load
// balancers drain it first. One difference: kube-proxy only starts judging after
// its first sync; strait also fails a first sync that is overdue.
//
// Readiness: the first sync has succeeded and every registered source (the
// Kubernetes API, the manifest directory) is connected. Losing the API makes
// the agent unready, never unhealthy: the dataplane keeps serving what it has.
import { systemClock, type Clock } from './clock.js';

/** kube-proxy's taint for nodes the cluster autoscaler is about to delete. */
export const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

/** What syncNode reads of a Node (the model's Node type leaves spec and deletion out). */
export interface NodeEligibilityInput {
  readonly metadata?: { readonly deletionTimestamp?: unknown };
  readonly spec?: { readonly taints?: readonly { readonly key?: string }[] };
}

export type SourceStatus = { readonly connected: true } | { readonly connected: false; readonly reason: string };

export interface ProxyHealthReport {
  readonly healthy: boolean;
  /** clock.now() of the last successful sync; undefined = none yet. */
  readonly lastUpdated: number | undefined;
  /** clock.now() of the oldest change not yet synced; undefined = none. */
  readonly oldestPending: number | undefined;
  readonly currentTime: number;
  readonly nodeEligible: boolean;
}

export interface ReadinessReport {
  readonly ready: boolean;
  /** Why not, one line each: "initial sync not done", "kubernetes: watch failed: …". */
  readonly reasons: readonly string[];
}

export interface AgentHealthOptions {
  /** How long a queued change may wait for a sync before the agent is unhealthy, ms. */
  readonly healthTimeoutMs: number;
  readonly clock?: Clock;
}

export class AgentHealth {
  readonly #clock: Clock;
  readonly #healthTimeoutMs: number;
  #lastUpdated: number | undefined;
  #oldestPending: number | undefined;
  #nodeEligible = true; // eligible while starting up, as kube-proxy
  readonly #sources = new Map<string, SourceStatus>();

  constructor(options: AgentHealthOptions) {
    this.#clock = options.clock ?? systemClock;
    this.#healthTimeoutMs = options.healthTimeoutMs;
  }

  /** A change arrived that the dataplane does not have yet. */
  queuedUpdate(): void {
    this.#oldestPending ??= this.#clock.now();
  }

  /** A sync succeeded: the dataplane matches what was queued before it started. */
  updated(): void {
    this.#lastUpdated = this.#clock.now();
    this.#oldestPending = undefined;
  }

  /** Reads this node's eligibility: not being deleted, not tainted for deletion. */
  syncNode(node: NodeEligibilityInput | undefined): void {
    if (node === undefined) return;
    const deleting = node.metadata?.deletionTimestamp !== undefined && node.metadata.deletionTimestamp !== null;
    const tainted = (node.spec?.taints ?? []).some((t) => t?.key === TO_BE_DELETED_TAINT);
    this.#nodeEligible = !deleting && !tainted;
  }

  /** Registers or updates a source that readiness waits for ("kubernetes", "manifests"). */
  setSource(name: string, status: SourceStatus): void {
    this.#sources.set(name, status);
  }

  /** The proxy's own health (kube-proxy's IsHealthy, /livez): nothing overdue. */
  isHealthy(): boolean {
    return this.livez().healthy;
  }

  /** /livez: the proxy's health, ignoring the node. */
  livez(): ProxyHealthReport {
    const currentTime = this.#clock.now();
    const overdue = this.#oldestPending !== undefined && currentTime - this.#oldestPending >= this.#healthTimeoutMs;
    return {
      healthy: !overdue,
      lastUpdated: this.#lastUpdated,
      oldestPending: this.#oldestPending,
      currentTime,
      nodeEligible: this.#nodeEligible,
    };
  }

  /** /healthz: the proxy's health and the node's eligibility. */
  healthz(): ProxyHealthReport {
    const live = this.livez();
    return { ...live, healthy: live.healthy && this.#nodeEligible };
  }

  readyz(): ReadinessReport {
    const reasons: string[] = [];
    if (this.#lastUpdated === undefined) reasons.push('initial sync not done');
    for (const [name, status] of [...this.#sources].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      if (!status.connected) reasons.push(`${name}: ${status.reason}`);
    }
    return { ready: reasons.length === 0, reasons };
  }
}
