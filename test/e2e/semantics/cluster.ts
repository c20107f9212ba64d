// What the Kubernetes-semantics checks (checks.ts) need from a cluster, so that the same checks
// run in the lab (lab-cluster.ts: namespace nodes, the lab playing kubelet) and on kind
// (../kind/kind-cluster.ts: real kubelets, strait as a DaemonSet). Everything goes through real
// API objects; traffic is real (the echo server answers with its pod name and the client address
// it saw); what a node's agent programmed is read as `strait lb list -o json` shows it.
import type { FrontendView, LbList } from '../../../src/cli/inspect.js';
import type { EchoMode, EchoSummary } from '../../../src/lab/echo-client.js';
import type { ContainerPort, EchoPorts } from '../../../src/lab/kubelet.js';

export type { FrontendView, LbList } from '../../../src/cli/inspect.js';
export type { EchoMode, EchoSummary } from '../../../src/lab/echo-client.js';

export interface ClusterNode {
  readonly name: string;
  readonly zone: string;
  /** The node's addresses, as an external client reaches them (NodePorts, health checks). */
  readonly addr4: string;
  readonly addr6: string | undefined;
}

export interface PodSpec {
  readonly name: string;
  readonly node: string;
  readonly labels?: Readonly<Record<string, string>>;
  /** The echo server's listeners (default HTTP 8080 "http", TCP 9000 "echo-tcp", UDP 9000 "echo-udp"); null: a client pod. */
  readonly serve?: EchoPorts | null;
  readonly containerPorts?: readonly ContainerPort[];
  /** Ready at once (default true). */
  readonly ready?: boolean;
}

export interface Pod {
  readonly name: string;
  readonly node: string;
  readonly addr4: string;
  readonly addr6: string | undefined;
}

export interface EchoSpec {
  readonly count?: number;
  readonly parallel?: number;
  readonly timeoutMs?: number;
  readonly reuse?: boolean;
  readonly intervalMs?: number;
  /** Bind the client side to this port (with reuse: one 5-tuple for every request). */
  readonly localPort?: number;
}

export interface HttpProbe {
  readonly status?: number;
  readonly body?: string;
  /** The error code when there was no answer (ECONNREFUSED, ETIMEDOUT, …). */
  readonly code?: string;
}

/** Where traffic starts: a (client) pod, or the external client outside the cluster. */
export type From = Pod | 'external';

export interface E2eCluster {
  readonly name: 'lab' | 'kind';
  readonly nodes: readonly ClusterNode[];
  /** The address a backend sees for the external client (IPv4 / IPv6). */
  readonly external: { readonly addr4: string; readonly addr6: string | undefined };
  /** Services get an IPv6 ClusterIP too when asked (RequireDualStack). */
  readonly dualStack: boolean;
  /** Kubernetes API as the admin; throws on non-2xx. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  api(method: string, path: string, body?: unknown): Promise<any>;
  /** JSON merge patch. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  patch(path: string, body: unknown): Promise<any>;
  /** Creates pods (Running, with IPs, Ready unless asked otherwise); returns them in order. */
  createPods(specs: readonly PodSpec[]): Promise<Pod[]>;
  /** Flips the pod's readiness (as its readiness probe would). */
  setReady(pod: string, ready: boolean): Promise<void>;
  /** Graceful deletion begins: terminating; still serving (and ready-probed) when serving is true. */
  startDeletion(pod: string, opts: { serving: boolean }): Promise<void>;
  /** The pod is gone (its server stopped, the object deleted). */
  finishDeletion(pod: string): Promise<void>;
  /** Runs the echo client from a pod or the external client. */
  echo(from: From, mode: EchoMode, to: string, spec?: EchoSpec): Promise<EchoSummary>;
  /** Routes prefix from the external client to a node (as a load balancer or router in front of it would). */
  externalRoute(prefix: string, viaNode: string): Promise<void>;
  /** GET url from the external client (a load balancer's health probe). */
  httpGet(from: 'external', url: string): Promise<HttpProbe>;
  /** What the node's agent programmed (the frontends `strait lb list` shows; cheap enough to poll). */
  frontends(node: string): Promise<readonly FrontendView[]>;
  /** `strait lb list -o json` run on the node: frontends, skipped Services and why, model errors. */
  lbList(node: string): Promise<LbList>;
  /** Polls cond until true; throws after timeoutMs naming `what` and the last detail. */
  waitFor(what: string, cond: () => Promise<boolean | string> | boolean | string, timeoutMs?: number): Promise<number>;
}
