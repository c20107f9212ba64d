// The lab plays kubelet: Pods are real API objects bound to lab nodes, their "containers" are
// network namespaces attached to the node by a veth, running the echo server. What a kubelet
// reports — IPs, phase, the Ready condition — goes through the status subresource, so the real
// EndpointSlice controller turns them into slices.
//
//   const web = await lab.kubelet.createPod({ name: 'web-1', node: 'node1', labels: { app: 'web' } });
//   await lab.kubelet.setReady('web-1', false);              // out of rotation (ready=false)
//   await lab.kubelet.deletePod('web-1');                     // terminating, then gone
//   await lab.kubelet.startDeletion('web-1', { serving: true }); … finishDeletion('web-1')
//
// A pod on node N with index K gets 198.18.(16+N).K/32 and 2001:2:0:(16+N)::K/128 on eth0; its
// host-side veth lxc<8 hex> (in the node namespace) has the node's pod gateway .1 / ::1 and a
// host route to the pod. Pod records live in <state dir>/pods/<namespace>_<name>.json, address
// reservations in <state dir>/ipam/<node>/<K> (created exclusively, so concurrent creators never
// share an address).
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { podAddresses } from './addresses.js';
import type { ControlPlane } from './control-plane.js';
import { Namespaces, addrLine, livePid, routeLine, terminate, vethLines } from './host.js';
import type { LabNode } from './lab.js';
import { POD_VETH_PREFIX, podNamespace, type LabLayout } from './layout.js';
import { childEnv, labNodeBinary, labScriptArgs } from './programs.js';

export interface KubeletContext {
  readonly layout: LabLayout;
  readonly nodes: readonly LabNode[];
  readonly cp: ControlPlane;
  readonly ns: Namespaces;
  /** The lab's fabric carries XDP (lab.ts xdpFabricLines()): pods send full checksums (tx offload
   * off on eth0), or replies an agent's XDP program transmits arrive with bad ones. */
  readonly xdpFabric?: boolean;
}

/** The echo server's listeners in a pod (src/lab/echo-server.ts). */
export interface EchoPorts {
  readonly http?: number;
  readonly tcp?: number;
  readonly udp?: number;
}

export interface ContainerPort {
  readonly name?: string;
  readonly containerPort: number;
  readonly protocol?: 'TCP' | 'UDP' | 'SCTP';
}

/** Default listeners: HTTP 8080 ("http"), TCP 9000 ("echo-tcp"), UDP 9000 ("echo-udp"). */
export const DEFAULT_ECHO_PORTS: EchoPorts = { http: 8080, tcp: 9000, udp: 9000 };

export interface CreatePodOptions {
  readonly name: string;
  /** Kubernetes namespace (default "default"). */
  readonly namespace?: string;
  /** Lab node name (node1, node2, …). */
  readonly node: string;
  readonly labels?: Readonly<Record<string, string>>;
  /** The echo server's listeners (default DEFAULT_ECHO_PORTS); null: no server (a client pod). */
  readonly serve?: EchoPorts | null;
  /** spec.containers[0].ports (default: one named port per listener of `serve`). */
  readonly containerPorts?: readonly ContainerPort[];
  /** Report Ready at once (default true). */
  readonly ready?: boolean;
  /** How long to wait for the node's agent to attach to the pod's veth (default 15 s). */
  readonly attachTimeoutMs?: number;
}

export interface PodRecord {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly node: string;
  readonly nodeIndex: number;
  readonly podIndex: number;
  /** The pod's network namespace. */
  readonly netns: string;
  /** Its veth in the node's namespace (eth0 inside the pod). */
  readonly hostVeth: string;
  readonly addr4: string;
  readonly addr6: string;
  readonly ipamFile: string;
  readonly serve: EchoPorts | null;
  readonly pidFile: string | null;
  readonly logPath: string | null;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function defaultContainerPorts(serve: EchoPorts): ContainerPort[] {
  const out: ContainerPort[] = [];
  if (serve.http !== undefined) out.push({ name: 'http', containerPort: serve.http, protocol: 'TCP' });
  if (serve.tcp !== undefined) out.push({ name: 'echo-tcp', containerPort: serve.tcp, protocol: 'TCP' });
  if (serve.udp !== undefined) out.push({ name: 'echo-udp', containerPort: serve.udp, protocol: 'UDP' });
  return out;
}

export class Kubelet {
  constructor(readonly ctx: KubeletContext) {}

  #node(name: string): LabNode {
    const n = this.ctx.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name} in lab ${this.ctx.layout.name} (has ${this.ctx.nodes.map((x) => x.name).join(', ')})`);
    return n;
  }

  #recordPath(namespace: string, name: string): string {
    return join(this.ctx.layout.podsDir, `${namespace}_${name}.json`);
  }

  #podPath(namespace: string, name: string): string {
    return `/api/v1/namespaces/${namespace}/pods/${name}`;
  }

  /** The record of a pod this lab created; throws when there is none. */
  pod(name: string, namespace = 'default'): PodRecord {
    try {
      return JSON.parse(readFileSync(this.#recordPath(namespace, name), 'utf8')) as PodRecord;
    } catch {
      throw new Error(`no pod ${namespace}/${name} in lab ${this.ctx.layout.name}`);
    }
  }

  /** Every pod this lab created (and not yet deleted). */
  pods(): PodRecord[] {
    if (!existsSync(this.ctx.layout.podsDir)) return [];
    return readdirSync(this.ctx.layout.podsDir)
      .filter((e) => e.endsWith('.json'))
      .map((e) => JSON.parse(readFileSync(join(this.ctx.layout.podsDir, e), 'utf8')) as PodRecord);
  }

  /** Reserves the lowest free pod index on a node. */
  #allocate(node: LabNode, owner: string): { podIndex: number; ipamFile: string } {
    const dir = join(this.ctx.layout.ipamDir, node.name);
    mkdirSync(dir, { recursive: true });
    for (let k = 2; k <= 254; k++) {
      const ipamFile = join(dir, String(k));
      try {
        closeSync(openSync(ipamFile, 'wx'));
        writeFileSync(ipamFile, `${owner}\n`);
        return { podIndex: k, ipamFile };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
    }
    throw new Error(`node ${node.name} has no free pod address (253 pods)`);
  }

  /**
   * Creates a Pod bound to a node, as kubelet would run it: the API object (Pending), the pod's
   * network namespace and veth, the echo server; waits until the node's agent has attached its
   * programs to the veth (the pod's network is ready), then reports Running with its IPs and
   * Ready (unless opts.ready is false). On failure everything made for it is removed.
   */
  async createPod(opts: CreatePodOptions): Promise<PodRecord> {
    const namespace = opts.namespace ?? 'default';
    const { name } = opts;
    if (!NAME_RE.test(name) || name.length > 40) throw new Error(`pod name ${JSON.stringify(name)}: want a DNS label of at most 40 characters`);
    if (!NAME_RE.test(namespace)) throw new Error(`bad namespace ${JSON.stringify(namespace)}`);
    const node = this.#node(opts.node);
    const serve = opts.serve === undefined ? DEFAULT_ECHO_PORTS : opts.serve;
    const ports = opts.containerPorts ?? (serve ? defaultContainerPorts(serve) : []);
    const { cp, ns, layout } = this.ctx;

    const created = await cp.api('POST', `/api/v1/namespaces/${namespace}/pods`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace, labels: { ...(opts.labels ?? {}) } },
      spec: {
        nodeName: node.name,
        automountServiceAccountToken: false,
        enableServiceLinks: false,
        terminationGracePeriodSeconds: 30,
        containers: [{ name: 'echo', image: 'strait.invalid/lab/echo-server', ports: ports.map((p) => ({ protocol: 'TCP', ...p })) }],
      },
    });
    const hash = createHash('sha1').update(`${namespace}/${name}`).digest('hex').slice(0, 8);
    const { podIndex, ipamFile } = this.#allocate(node, `${namespace}/${name}`);
    const { addr4, addr6 } = podAddresses(node.index, podIndex);
    const key = `${namespace}_${name}`;
    const rec: PodRecord = {
      namespace,
      name,
      uid: String(created?.metadata?.uid ?? ''),
      node: node.name,
      nodeIndex: node.index,
      podIndex,
      netns: podNamespace(layout, namespace, name),
      hostVeth: `${POD_VETH_PREFIX}${hash}`,
      addr4,
      addr6,
      ipamFile,
      serve,
      pidFile: serve ? join(layout.podsDir, `${key}.pid`) : null,
      logPath: serve ? join(layout.podsDir, `${key}.log`) : null,
    };
    mkdirSync(layout.podsDir, { recursive: true });
    writeFileSync(this.#recordPath(namespace, name), JSON.stringify(rec, null, 2));
    try {
      await ns.add(rec.netns);
      await ns.batch(node.ns, [
        ...vethLines(rec.hostVeth, rec.netns, 'eth0'),
        addrLine(rec.hostVeth, `${node.podGateway4}/32`),
        addrLine(rec.hostVeth, `${node.podGateway6}/128`),
        routeLine(`${addr4}/32`, { dev: rec.hostVeth }),
        routeLine(`${addr6}/128`, { dev: rec.hostVeth }),
      ]);
      await ns.batch(rec.netns, [
        addrLine('eth0', `${addr4}/32`),
        addrLine('eth0', `${addr6}/128`),
        'link set eth0 up',
        routeLine(`${node.podGateway4}/32`, { dev: 'eth0' }),
        routeLine('198.18.0.0/15', { via: node.podGateway4, dev: 'eth0' }),
        routeLine(`${node.podGateway6}/128`, { dev: 'eth0' }),
        routeLine('2001:2::/48', { via: node.podGateway6, dev: 'eth0' }),
      ]);
      if (this.ctx.xdpFabric) await ns.exec(rec.netns, 'ethtool', ['-K', 'eth0', 'tx', 'off']);
      // A kube-proxy twin node has no agent to attach: its pod network is ready once routed.
      const waits: Promise<void>[] = node.kubeProxy ? [] : [this.#waitForAttach(node, rec.hostVeth, opts.attachTimeoutMs ?? 15_000)];
      if (serve) waits.push(this.#startServer(rec, serve));
      await Promise.all(waits);
      await this.#reportStatus(rec, node, opts.ready ?? true);
      return rec;
    } catch (e) {
      await this.#removePod(rec).catch(() => undefined);
      await cp.request('DELETE', this.#podPath(namespace, name), { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0 }).catch(() => undefined);
      throw new Error(`pod ${namespace}/${name} on ${node.name}: ${(e as Error).message}`);
    }
  }

  async #startServer(rec: PodRecord, serve: EchoPorts): Promise<void> {
    if (!rec.pidFile || !rec.logPath) return;
    const args = [...labScriptArgs('echo-server'), '--name', rec.name];
    if (serve.http !== undefined) args.push('--http', String(serve.http));
    if (serve.tcp !== undefined) args.push('--tcp', String(serve.tcp));
    if (serve.udp !== undefined) args.push('--udp', String(serve.udp));
    this.ctx.ns.spawn(rec.netns, labNodeBinary(), args, { logPath: rec.logPath, pidFile: rec.pidFile, env: childEnv() });
    const deadline = Date.now() + 15_000;
    for (;;) {
      let log = '';
      try {
        log = readFileSync(rec.logPath, 'utf8');
      } catch {
        /* not yet */
      }
      if (/^ready$/m.test(log)) return;
      if (livePid(rec.pidFile, 'echo-server') === undefined && log !== '') throw new Error(`echo server exited:\n${log.trim()}`);
      if (Date.now() > deadline) throw new Error(`echo server not ready after 15 s:\n${log.trim()}`);
      await sleep(25);
    }
  }

  /** The node's agent attached to the veth: its tcx link pin (or clsact record) exists. */
  async #waitForAttach(node: LabNode, veth: string, timeoutMs: number): Promise<void> {
    const links = join(node.bpfRoot, 'links');
    const tcx = join(links, `${node.ns}-${veth}-ingress`);
    const clsact = `clsact:${veth}:ingress:`;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (existsSync(tcx)) return;
      try {
        if (readdirSync(links).some((e) => e.startsWith(clsact))) return;
      } catch {
        /* no links yet */
      }
      if (Date.now() > deadline) throw new Error(`the agent of ${node.name} did not attach to ${veth} within ${timeoutMs} ms (see ${node.agentLog})`);
      await sleep(50);
    }
  }

  async #reportStatus(rec: PodRecord, node: LabNode, ready: boolean): Promise<void> {
    const now = new Date().toISOString();
    const cond = (type: string, status: boolean) => ({ type, status: status ? 'True' : 'False', lastTransitionTime: now });
    await this.ctx.cp.patch(`${this.#podPath(rec.namespace, rec.name)}/status`, {
      status: {
        phase: 'Running',
        hostIP: node.addr4,
        hostIPs: [{ ip: node.addr4 }, { ip: node.addr6 }],
        podIP: rec.addr4,
        podIPs: [{ ip: rec.addr4 }, { ip: rec.addr6 }],
        startTime: now,
        conditions: [cond('PodScheduled', true), cond('Initialized', true), cond('ContainersReady', ready), cond('Ready', ready)],
        containerStatuses: [{
          name: 'echo', ready, started: true, restartCount: 0, image: 'strait.invalid/lab/echo-server', imageID: '',
          state: { running: { startedAt: now } },
        }],
      },
    });
  }

  /** Flips the pod's Ready (and ContainersReady) condition, as a readiness probe would. */
  async setReady(name: string, ready: boolean, namespace = 'default'): Promise<void> {
    const rec = this.pod(name, namespace);
    const now = new Date().toISOString();
    const cond = (type: string, status: boolean) => ({ type, status: status ? 'True' : 'False', lastTransitionTime: now });
    await this.ctx.cp.patch(`${this.#podPath(namespace, rec.name)}/status`, {
      status: {
        conditions: [cond('PodScheduled', true), cond('Initialized', true), cond('ContainersReady', ready), cond('Ready', ready)],
        containerStatuses: [{
          name: 'echo', ready, started: true, restartCount: 0, image: 'strait.invalid/lab/echo-server', imageID: '',
          state: { running: { startedAt: now } },
        }],
      },
    });
  }

  /**
   * Graceful deletion, first half: DELETE with a grace period (the API keeps the pod with a
   * deletionTimestamp: terminating). The server keeps running; Ready stays as it is when
   * opts.serving is true (terminating + serving), else turns false (the container is stopping).
   */
  async startDeletion(name: string, opts: { namespace?: string; graceSeconds?: number; serving?: boolean } = {}): Promise<void> {
    const namespace = opts.namespace ?? 'default';
    this.pod(name, namespace);
    await this.ctx.cp.api('DELETE', this.#podPath(namespace, name), {
      apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: opts.graceSeconds ?? 30,
    });
    if (!opts.serving) await this.setReady(name, false, namespace);
  }

  /** Graceful deletion, second half: stop the server, remove the pod's network, delete the object. */
  async finishDeletion(name: string, namespace = 'default'): Promise<void> {
    const rec = this.pod(name, namespace);
    await this.#removePod(rec);
    const r = await this.ctx.cp.request('DELETE', this.#podPath(namespace, name), { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0 });
    if (r.status !== 200 && r.status !== 404) throw new Error(`DELETE pod ${namespace}/${name}: HTTP ${r.status}`);
  }

  /** Deletes a pod through its terminating phase (held for terminatingMs, default 0). */
  async deletePod(name: string, opts: { namespace?: string; terminatingMs?: number; serving?: boolean } = {}): Promise<void> {
    const namespace = opts.namespace ?? 'default';
    await this.startDeletion(name, { namespace, ...(opts.serving !== undefined ? { serving: opts.serving } : {}) });
    if (opts.terminatingMs) await sleep(opts.terminatingMs);
    await this.finishDeletion(name, namespace);
  }

  async #removePod(rec: PodRecord): Promise<void> {
    const pid = rec.pidFile ? livePid(rec.pidFile, 'echo-server') : undefined;
    if (pid !== undefined) await terminate([pid], 2_000);
    if ((await this.ctx.ns.list()).includes(rec.netns)) await this.ctx.ns.delete(rec.netns);
    for (const f of [rec.ipamFile, rec.pidFile, this.#recordPath(rec.namespace, rec.name)]) {
      if (f) {
        try {
          unlinkSync(f);
        } catch {
          /* already gone */
        }
      }
    }
    if (rec.logPath) rmSync(rec.logPath, { force: true });
  }
}
