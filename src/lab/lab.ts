// The lab: a real Kubernetes control plane and namespace nodes on this machine (DESIGN "The lab").
//
//   const lab = await labUp({ nodes: 2, log });       // strait lab up --nodes 2
//   await lab.kubelet.createPod({ name: 'web-1', node: 'node1', labels: { app: 'web' } });
//   await lab.cp.api('POST', '/api/v1/namespaces/default/services', svc);
//   await lab.echoClient(lab.kubelet.pod('client').netns, 'http', '198.19.0.10:80', { count: 10 });
//   Lab.open() reconnects from another process; labDown() / lab.down() removes everything.
//
// Topology (addresses: src/lab/addresses.ts, names: src/lab/layout.ts):
//
//            strait-lab-ext  ext0 198.18.0.250        (the external client)
//                               │
//   strait-lab-fabric   br0 ────┴──── n1 ─── n2 …     (a bridge; no address, no routes)
//                                     │      │
//   strait-lab-node1  up0 198.18.0.1 ─┘      └─ up0 198.18.0.2  strait-lab-node2
//     lxc<hash> 198.18.17.1/32 ──── eth0 198.18.17.K/32  strait-lab-pod-<name>
//     routes: 198.18.17.K/32 dev lxc…; 198.18.18.0/24 via 198.18.0.2 (other nodes' pod CIDRs)
//
// Nodes forward (ip_forward, IPv6 forwarding), pods route 198.18.0.0/15 and 2001:2::/48 via their
// node; no namespace has a default route, and the root namespace gets no route at all: the agents
// run in the root namespace (one per node, its own bpf root and state dir), reach the apiserver on
// 127.0.0.1 and attach to `up0` and every `lxc*` of their node with --devices-netns.
// kube-proxy twin nodes (opts.kubeProxyNodes, after the strait nodes) run the real kube-proxy
// inside their namespace instead of an agent (src/lab/kube-proxy.ts).
// The lab plays kubelet (src/lab/kubelet.ts): Node objects, Pods, their IPs and readiness.
//
// Everything started is detached and recorded (pid files, lab.json) so that the lab outlives the
// command that made it; labDown() finds everything by name even without the state file, so
// `strait lab up` after a crash (which first runs down) succeeds.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import {
  FABRIC,
  LAB_ADVERTISE_ADDRESS,
  MAX_NODES,
  nodeAddresses,
  type NodeAddresses,
} from './addresses.js';
import {
  ControlPlane,
  REPO_ROOT,
  SERVICE_CLUSTER_IP_RANGE,
  createAgentServiceAccount,
  ensureK8sBinaries,
  killRecordedProcesses,
  recordedProcesses,
  startControlPlane,
} from './control-plane.js';
import { lbList, type FrontendView } from '../cli/inspect.js';
import type { EchoMode, EchoSummary } from './echo-client.js';
import {
  Namespaces,
  addrLine,
  livePid,
  routeLine,
  spawnDetached,
  strayProcesses,
  terminate,
  vethLines,
} from './host.js';
import { Kubelet, type PodRecord } from './kubelet.js';
import {
  createKubeProxyCredentials,
  kubeProxyPids,
  kubeProxyPreflight,
  kubeProxyReady,
  planKubeProxy,
  startKubeProxy,
  waitForKubeProxy,
  KUBE_PROXY_METRICS_PORT,
  type KubeProxyMode,
  type KubeProxyNode,
} from './kube-proxy.js';
import {
  DEFAULT_LAB_NAME,
  agentLoopback,
  labLayout,
  nodeBpfRoot,
  nodeName,
  nodeNamespace,
  nodeStateDir,
  POD_VETH_PREFIX,
  UPLINK,
  type LabLayout,
} from './layout.js';
import { STRAIT_MAIN, childEnv, labNodeBinary, labScriptArgs } from './programs.js';

const EXTERNAL_DEV = 'ext0';
/** kube-proxy's node health port; every node namespace has its own. */
export const NODE_HEALTH_PORT = 10256;
const ZONES = ['zone-a', 'zone-b'] as const;
/** The agent's token lives as long as the lab may (30 days; certificates the same). */
const LAB_LIFETIME_DAYS = 30;

/** A node as labNodes() plans it, before its agent runs. */
type PlannedNode = Omit<LabNode, 'metricsUrl' | 'healthzUrl'>;

export interface LabNode extends NodeAddresses {
  readonly index: number;
  readonly name: string;
  /** Its network namespace. */
  readonly ns: string;
  readonly zone: string;
  readonly bpfRoot: string;
  readonly stateDir: string;
  readonly agentLog: string;
  readonly agentPidFile: string;
  /** The loopback address of its agent's metrics listener (/metrics, /readyz). */
  readonly agentAddress: string;
  /** http://<agentAddress>:<port> of /metrics and /readyz: the port is ephemeral (read from the
   * agent's log), so a lab never takes 10249 from the host. */
  readonly metricsUrl: string;
  /** http://<node addr4>:10256 of node health (/healthz), served inside the node's namespace:
   * reachable from lab namespaces (the external client, pods), not from the root namespace. */
  readonly healthzUrl: string;
  /** Set on a kube-proxy twin node (src/lab/kube-proxy.ts): kube-proxy, not a strait agent, is its
   * Service dataplane; metricsUrl is then kube-proxy's, inside the node's namespace. */
  readonly kubeProxy?: KubeProxyNode;
}

export interface LabTimings {
  /** Building or checking the cached Kubernetes binaries. */
  binariesMs: number;
  /** Cleaning an earlier lab. */
  cleanMs: number;
  controlPlaneMs: number;
  topologyMs: number;
  nodesMs: number;
  agentsMs: number;
  totalMs: number;
}

export interface LabState {
  readonly version: 1;
  readonly name: string;
  readonly prefix: string;
  readonly createdAt: string;
  readonly nodes: readonly LabNode[];
  readonly fabricNs: string;
  readonly external: { readonly ns: string; readonly dev: string; readonly addr4: string; readonly addr6: string };
  readonly controlPlaneDir: string;
  readonly server: string;
  readonly adminKubeconfig: string;
  readonly agentKubeconfig: string;
  readonly serviceCidrs: string;
  readonly timings: LabTimings;
  /** The fabric carries XDP_TX / XDP redirects (agents with --xdp; see xdpFabricLines()): pods the
   * kubelet creates later get tx checksum offload off too. Absent in older state files = false. */
  readonly xdpFabric?: boolean;
}

export interface LabUpOptions {
  /** Lab name (default "lab"): names every namespace, bpf root and the state dir. */
  readonly name?: string;
  /** Number of nodes (default 2, at most 20). */
  readonly nodes?: number;
  /** Progress lines (default: none). */
  readonly log?: (line: string) => void;
  /** The agents' --min-sync-period (default 250ms). */
  readonly minSyncPeriod?: string;
  /** Extra `strait agent` flags for every node. */
  readonly agentArgs?: readonly string[];
  /** More `strait agent` flags for single nodes, by node name (after agentArgs). */
  readonly nodeAgentArgs?: Readonly<Record<string, readonly string[]>>;
  /** kube-proxy twin nodes, one per entry, numbered after the `nodes` strait nodes: their Service
   * dataplane is the real kube-proxy in that mode (src/lab/kube-proxy.ts). Default none. */
  readonly kubeProxyNodes?: readonly KubeProxyMode[];
  /** Every agent runs with `--xdp` (XDP on the uplinks), and the fabric is made to carry XDP. */
  readonly xdp?: boolean;
  /** Make the fabric carry XDP_TX / redirects (see xdpFabricLines()) whatever the agents run —
   * for comparisons that want every node on the same fabric. Default: on when any agent runs with
   * `--xdp` (xdp, agentArgs or nodeAgentArgs). */
  readonly xdpFabric?: boolean;
}

/** Does this lab need an XDP-capable fabric: any agent with --xdp, or asked for. */
export function wantsXdpFabric(opts: LabUpOptions): boolean {
  if (opts.xdpFabric !== undefined) return opts.xdpFabric;
  const all = [...(opts.agentArgs ?? []), ...Object.values(opts.nodeAgentArgs ?? {}).flat()];
  return opts.xdp === true || all.includes('--xdp');
}

/** The XDP_PASS program the fabric-side veth peers get (bpf/empty_xdp.c). */
export const EMPTY_XDP_OBJECT = join(REPO_ROOT, 'build', 'bpf', 'empty_xdp.o');

// ---- preflight ------------------------------------------------------------------------------

function preflight(opts: LabUpOptions = {}): void {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push(`the lab needs root (uid 0), running as uid ${process.getuid?.() ?? '?'}`);
  let mounts = '';
  try {
    mounts = readFileSync('/proc/mounts', 'utf8');
  } catch {
    /* reported below */
  }
  if (!/^\S+ \/sys\/fs\/bpf bpf /m.test(mounts)) problems.push('bpffs is not mounted at /sys/fs/bpf (make bpffs)');
  for (const [path, how] of [
    [STRAIT_MAIN, 'make ts'],
    [join(REPO_ROOT, 'build', 'bpf', 'strait_tc.o'), 'make bpf'],
    [join(REPO_ROOT, 'build', 'native', 'libstrait.so'), 'make native'],
    ...(wantsXdpFabric(opts) ? [[EMPTY_XDP_OBJECT, 'make bpf'] as const] : []),
  ] as const) {
    if (!existsSync(path)) problems.push(`${path} is missing (${how}, or make build)`);
  }
  if (problems.length > 0) throw new Error(`cannot bring the lab up:\n  ${problems.join('\n  ')}`);
}

// ---- up -------------------------------------------------------------------------------------

function labNodes(layout: LabLayout, count: number): PlannedNode[] {
  const nodes: PlannedNode[] = [];
  for (let i = 1; i <= count; i++) {
    const name = nodeName(i);
    const stateDir = nodeStateDir(layout, name);
    const agentAddress = agentLoopback(layout, i);
    nodes.push({
      index: i,
      name,
      ns: nodeNamespace(layout, name),
      zone: ZONES[(i - 1) % ZONES.length] as string,
      ...nodeAddresses(i),
      bpfRoot: nodeBpfRoot(layout, name),
      stateDir,
      agentLog: join(stateDir, 'agent.log'),
      agentPidFile: join(stateDir, 'agent.pid'),
      agentAddress,
    });
  }
  return nodes;
}

/**
 * A fabric that carries XDP like a wire (PITFALLS "XDP on veth"): a frame an agent's XDP program
 * sends back out of its uplink (XDP_TX) or redirects lands on the ring of the veth peer, which only
 * NAPI services — so every fabric-side peer n<N> gets an XDP_PASS program; and the senders (the
 * external client's ext0 here, pods' eth0 in the kubelet) compute full checksums (tx offload
 * off), as packets on a real wire carry them, where a veth passes CHECKSUM_PARTIAL along, which
 * native XDP_TX loses. `ip -n <fabric>` lines, then the ethtool call in the external namespace.
 */
function xdpFabricLines(nodes: readonly PlannedNode[]): string[] {
  return nodes.map((n) => `link set dev n${n.index} xdpdrv obj ${EMPTY_XDP_OBJECT} sec xdp`);
}

/** `ethtool -K <dev> tx off` inside a lab namespace: full checksums from that sender (see above). */
export async function txChecksumOff(ns: Namespaces, netns: string, dev: string): Promise<void> {
  await ns.exec(netns, 'ethtool', ['-K', dev, 'tx', 'off']);
}

async function buildTopology(ns: Namespaces, layout: LabLayout, nodes: readonly PlannedNode[], xdpFabric = false): Promise<void> {
  await ns.add(layout.fabricNs);
  await ns.batch(layout.fabricNs, ['link add br0 type bridge', 'link set br0 up']);
  // Namespaces one after the other (`ip netns add` is not safe to run in parallel), then the rest at once.
  for (const n of nodes) {
    await ns.add(n.ns, {
      'net.ipv4.ip_forward': 1,
      'net.ipv6.conf.all.forwarding': 1,
      'net.ipv6.conf.default.forwarding': 1,
      // A NodePort packet DNATed to another node leaves through the interface it came in by.
      'net.ipv4.conf.all.send_redirects': 0,
      'net.ipv4.conf.default.send_redirects': 0,
    });
  }
  await ns.add(layout.externalNs);

  const fabricLines: string[] = [];
  for (const n of nodes) fabricLines.push(...vethLines(`n${n.index}`, n.ns, UPLINK), `link set n${n.index} master br0`);
  fabricLines.push(...vethLines('ext', layout.externalNs, EXTERNAL_DEV), 'link set ext master br0');
  if (xdpFabric) fabricLines.push(...xdpFabricLines(nodes));
  await ns.batch(layout.fabricNs, fabricLines);
  if (xdpFabric) await txChecksumOff(ns, layout.externalNs, EXTERNAL_DEV);

  await Promise.all([
    ...nodes.map((n) =>
      ns.batch(n.ns, [
        addrLine(UPLINK, `${n.addr4}/24`),
        addrLine(UPLINK, `${n.addr6}/64`),
        `link set ${UPLINK} up`,
        ...nodes.filter((o) => o !== n).flatMap((o) => [
          routeLine(o.podCidr4, { via: o.addr4, dev: UPLINK }),
          routeLine(o.podCidr6, { via: o.addr6, dev: UPLINK }),
        ]),
      ]),
    ),
    ns.batch(layout.externalNs, [
      addrLine(EXTERNAL_DEV, `${FABRIC.external4}/24`),
      addrLine(EXTERNAL_DEV, `${FABRIC.external6}/64`),
      `link set ${EXTERNAL_DEV} up`,
    ]),
  ]);
}

async function registerNode(cp: ControlPlane, n: PlannedNode): Promise<void> {
  await cp.api('POST', '/api/v1/nodes', {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: n.name,
      labels: { 'kubernetes.io/hostname': n.name, 'kubernetes.io/os': 'linux', 'topology.kubernetes.io/zone': n.zone },
    },
    spec: { podCIDR: n.podCidr4, podCIDRs: [n.podCidr4, n.podCidr6] },
  });
  const now = new Date().toISOString();
  await cp.patch(`/api/v1/nodes/${n.name}/status`, {
    status: {
      addresses: [
        { type: 'InternalIP', address: n.addr4 },
        { type: 'InternalIP', address: n.addr6 },
        { type: 'Hostname', address: n.name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'StraitLab', message: `network namespace ${n.ns}`, lastHeartbeatTime: now, lastTransitionTime: now }],
    },
  });
}

function startAgent(n: PlannedNode, agentKubeconfig: string, opts: LabUpOptions): number {
  mkdirSync(n.stateDir, { recursive: true });
  const args = [
    STRAIT_MAIN, 'agent',
    '--kubeconfig', agentKubeconfig,
    '--node-name', n.name,
    '--bpf-root', n.bpfRoot,
    '--devices', `${UPLINK},${POD_VETH_PREFIX}*`,
    '--devices-netns', n.ns,
    '--metrics-addr', `${n.agentAddress}:0`,
    // Node health and the health-check node ports listen inside the node's namespace, on its own
    // addresses, where the external client and other nodes probe them as a load balancer would.
    '--healthz-addr', `:${NODE_HEALTH_PORT}`,
    '--health-netns', n.ns,
    '--state-dir', n.stateDir,
    '--min-sync-period', opts.minSyncPeriod ?? '250ms',
    '--log-format', 'json',
    ...(opts.xdp && !(opts.agentArgs ?? []).includes('--xdp') ? ['--xdp'] : []),
    ...(opts.agentArgs ?? []),
    ...(opts.nodeAgentArgs?.[n.name] ?? []),
  ];
  return spawnDetached(labNodeBinary(), args, { logPath: n.agentLog, pidFile: n.agentPidFile, env: childEnv() });
}

function httpGet(url: string, timeoutMs = 2_000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function tail(path: string, lines: number): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Where the agent says its HTTP servers listen (its JSON "listening" log lines; the last wins). */
function agentListeners(logPath: string): { metrics?: string; healthz?: string } {
  const out: { metrics?: string; healthz?: string } = {};
  let text = '';
  try {
    text = readFileSync(logPath, 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n')) {
    if (!line.includes('"listening"')) continue;
    try {
      const l = JSON.parse(line) as { msg?: string; server?: string; address?: string };
      if (l.msg === 'listening' && (l.server === 'metrics' || l.server === 'healthz') && l.address) out[l.server] = `http://${l.address}`;
    } catch {
      /* a partial line */
    }
  }
  return out;
}

/** Waits for /readyz = 200 of every node's agent; throws with the log tail of a dead or slow one. */
async function waitForAgents(nodes: readonly PlannedNode[], timeoutMs: number): Promise<LabNode[]> {
  return Promise.all(
    nodes.map(async (n) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (livePid(n.agentPidFile, n.bpfRoot) === undefined) {
          throw new Error(`the agent of ${n.name} exited:\n${tail(n.agentLog, 20)}`);
        }
        const { metrics, healthz } = agentListeners(n.agentLog);
        try {
          if (metrics && healthz && (await httpGet(`${metrics}/readyz`)).status === 200) {
            return { ...n, metricsUrl: metrics, healthzUrl: `http://${n.addr4}:${/:(\d+)$/.exec(healthz)?.[1] ?? NODE_HEALTH_PORT}` };
          }
        } catch {
          /* not listening yet */
        }
        if (Date.now() > deadline) throw new Error(`the agent of ${n.name} is not ready after ${timeoutMs} ms:\n${tail(n.agentLog, 20)}`);
        await sleep(100);
      }
    }),
  );
}

/**
 * Brings a lab up (after removing whatever an earlier one left): control plane, topology, Node
 * objects, one agent per node. Throws (after cleaning up) when any part fails.
 */
export async function labUp(opts: LabUpOptions = {}): Promise<Lab> {
  const log = opts.log ?? (() => {});
  const layout = labLayout(opts.name ?? DEFAULT_LAB_NAME);
  const count = opts.nodes ?? 2;
  if (!Number.isInteger(count) || count < 1 || count > MAX_NODES) throw new Error(`--nodes: want 1..${MAX_NODES}, got ${count}`);
  const kpModes = opts.kubeProxyNodes ?? [];
  if (count + kpModes.length > MAX_NODES) throw new Error(`--nodes ${count} + --kube-proxy-nodes ${kpModes.length}: at most ${MAX_NODES} nodes in all`);
  preflight(opts);
  const xdpFabric = wantsXdpFabric(opts);
  const t0 = performance.now();
  const since = (t: number) => Math.round(performance.now() - t);
  const timings: LabTimings = { binariesMs: 0, cleanMs: 0, controlPlaneMs: 0, topologyMs: 0, nodesMs: 0, agentsMs: 0, totalMs: 0 };

  let t = performance.now();
  const binDir = await ensureK8sBinaries(log);
  timings.binariesMs = since(t);
  const kpProblems = kubeProxyPreflight(kpModes, binDir);
  if (kpProblems.length > 0) throw new Error(`cannot bring the lab's kube-proxy nodes up:\n  ${kpProblems.join('\n  ')}`);

  t = performance.now();
  const cleaned = await labDown({ name: layout.name });
  timings.cleanMs = since(t);
  if (cleaned.removedAnything) log(`removed what an earlier lab left: ${describeDown(cleaned)}`);

  mkdirSync(layout.stateDir, { recursive: true, mode: 0o700 });
  // kube-proxy twin nodes come after the strait nodes: node<count+1>, …
  const planned = labNodes(layout, count + kpModes.length).map((n, i) =>
    i < count ? n : { ...n, kubeProxy: planKubeProxy(n.stateDir, kpModes[i - count] as KubeProxyMode, binDir) },
  );
  const ns = new Namespaces(layout.prefix);
  try {
    const cpStart = performance.now();
    const topoStart = performance.now();
    const [cp] = await Promise.all([
      startControlPlane({
        binDir,
        dir: layout.controlPlaneDir,
        detached: true,
        controllerManager: true,
        advertiseAddress: LAB_ADVERTISE_ADDRESS,
        certDays: LAB_LIFETIME_DAYS,
        log: (l) => log(`control plane: ${l}`),
      }).then((c) => {
        timings.controlPlaneMs = since(cpStart);
        return c;
      }),
      buildTopology(ns, layout, planned, xdpFabric).then(() => {
        timings.topologyMs = since(topoStart);
        log(`topology: fabric${xdpFabric ? ' (XDP-capable: XDP_PASS on the node peers, tx checksum offload off on senders)' : ''}, ${count} node namespace(s), external client in ${timings.topologyMs} ms`);
      }),
    ]);

    t = performance.now();
    const sa = await createAgentServiceAccount(cp, { expirationSeconds: LAB_LIFETIME_DAYS * 86_400 });
    for (const n of planned) await registerNode(cp, n);
    timings.nodesMs = since(t);
    log(`registered Node objects ${planned.map((n) => `${n.name} (${n.zone})`).join(', ')}`);

    t = performance.now();
    const straitNodes = planned.filter((n) => !n.kubeProxy);
    const kpNodes = planned.filter((n) => n.kubeProxy);
    for (const n of straitNodes) startAgent(n, sa.kubeconfigPath, opts);
    if (kpNodes.length > 0) {
      const kubeconfig = await createKubeProxyCredentials(cp, LAB_LIFETIME_DAYS * 86_400);
      for (const n of kpNodes) await startKubeProxy(ns, n, { kubeconfig, apiserverPort: cp.apiserverPort });
    }
    const [ready] = await Promise.all([waitForAgents(straitNodes, 60_000), Promise.all(kpNodes.map((n) => waitForKubeProxy(n, 60_000)))]);
    const nodes: LabNode[] = planned.map((n) =>
      n.kubeProxy
        ? { ...n, metricsUrl: `http://127.0.0.1:${KUBE_PROXY_METRICS_PORT}`, healthzUrl: `http://${n.addr4}:${NODE_HEALTH_PORT}` }
        : (ready.find((r) => r.name === n.name) as LabNode),
    );
    timings.agentsMs = since(t);
    log(`agents ready in ${timings.agentsMs} ms${kpNodes.length > 0 ? `; kube-proxy on ${kpNodes.map((n) => `${n.name} (${n.kubeProxy?.mode})`).join(', ')}` : ''}`);

    timings.totalMs = since(t0);
    const state: LabState = {
      version: 1,
      name: layout.name,
      prefix: layout.prefix,
      createdAt: new Date().toISOString(),
      nodes,
      fabricNs: layout.fabricNs,
      external: { ns: layout.externalNs, dev: EXTERNAL_DEV, addr4: FABRIC.external4, addr6: FABRIC.external6 },
      controlPlaneDir: layout.controlPlaneDir,
      server: cp.server,
      adminKubeconfig: cp.kubeconfigPath,
      agentKubeconfig: sa.kubeconfigPath,
      serviceCidrs: SERVICE_CLUSTER_IP_RANGE,
      timings,
      ...(xdpFabric ? { xdpFabric } : {}),
    };
    writeFileSync(layout.stateFile, JSON.stringify(state, null, 2));
    return new Lab(layout, state, cp);
  } catch (e) {
    await labDown({ name: layout.name }).catch(() => undefined);
    throw e;
  }
}

// ---- the lab handle -------------------------------------------------------------------------

export interface EchoClientSpec {
  readonly count?: number;
  readonly size?: number;
  readonly timeoutMs?: number;
  readonly parallel?: number;
  readonly reuse?: boolean;
  readonly intervalMs?: number;
  /** Bind the client side to this port (with reuse: one 5-tuple for every request). */
  readonly localPort?: number;
}

export class Lab {
  readonly ns: Namespaces;
  readonly kubelet: Kubelet;

  constructor(readonly layout: LabLayout, readonly state: LabState, readonly cp: ControlPlane) {
    this.ns = new Namespaces(layout.prefix);
    this.kubelet = new Kubelet({ layout, nodes: state.nodes, cp, ns: this.ns, xdpFabric: state.xdpFabric === true });
  }

  /** The running lab `name` (from its state file); throws when it is not up. */
  static open(name: string = DEFAULT_LAB_NAME): Lab {
    const layout = labLayout(name);
    let state: LabState;
    try {
      state = JSON.parse(readFileSync(layout.stateFile, 'utf8')) as LabState;
    } catch {
      throw new Error(`lab ${name} is not up (no ${layout.stateFile}): strait lab up${name === DEFAULT_LAB_NAME ? '' : ` --name ${name}`}`);
    }
    return new Lab(layout, state, ControlPlane.attach(state.controlPlaneDir));
  }

  get nodes(): readonly LabNode[] {
    return this.state.nodes;
  }

  node(name: string): LabNode {
    const n = this.state.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name} in lab ${this.layout.name} (has ${this.state.nodes.map((x) => x.name).join(', ')})`);
    return n;
  }

  /** Runs src/lab/echo-client in a lab namespace and returns its summary. */
  async echoClient(netns: string, mode: EchoMode, to: string, spec: EchoClientSpec = {}): Promise<EchoSummary> {
    const count = spec.count ?? 1;
    const timeoutMs = spec.timeoutMs ?? 2_000;
    const args = [...labScriptArgs('echo-client'), mode, '--to', to, '--count', String(count), '--timeout-ms', String(timeoutMs)];
    if (spec.size !== undefined) args.push('--size', String(spec.size));
    if (spec.parallel !== undefined) args.push('--parallel', String(spec.parallel));
    if (spec.reuse) args.push('--reuse');
    if (spec.intervalMs !== undefined) args.push('--interval-ms', String(spec.intervalMs));
    if (spec.localPort !== undefined) args.push('--local-port', String(spec.localPort));
    const budget = 15_000 + (count * (timeoutMs + (spec.intervalMs ?? 0))) / Math.max(1, spec.reuse ? 1 : (spec.parallel ?? 1));
    const r = await this.ns.exec(netns, labNodeBinary(), args, { timeoutMs: budget, check: false, env: childEnv() });
    if (r.code !== 0) throw new Error(`echo-client ${mode} --to ${to} in ${netns}: exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}\n${r.stderr.trim()}`);
    return JSON.parse(r.stdout) as EchoSummary;
  }

  /**
   * GET url from inside a lab namespace (the external client, a pod, a node), as a load balancer's
   * probe would: the status and body, or the error code (ECONNREFUSED, ETIMEDOUT, …).
   */
  async httpGet(netns: string, url: string, timeoutMs = 3_000): Promise<{ status?: number; body?: string; code?: string }> {
    const script = `
      const http = require('node:http');
      http.get(${JSON.stringify(url)}, { timeout: ${timeoutMs}, agent: false }, (res) => {
        let body = ''; res.setEncoding('utf8'); res.on('data', (d) => body += d);
        res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body })));
      }).on('error', (e) => console.log(JSON.stringify({ code: e.code ?? e.message })))
        .on('timeout', function () { this.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })); });`;
    const r = await this.ns.exec(netns, labNodeBinary(), ['-e', script], { timeoutMs: timeoutMs + 15_000, check: false, env: childEnv() });
    if (r.code !== 0) throw new Error(`GET ${url} in ${netns}: exit ${r.code ?? r.signal}\n${r.stderr.trim()}`);
    return JSON.parse(r.stdout) as { status?: number; body?: string; code?: string };
  }

  /** Every agent still runs and answers /readyz. */
  async agentsReady(timeoutMs = 10_000): Promise<void> {
    await waitForAgents(this.state.nodes.filter((n) => !n.kubeProxy), timeoutMs);
  }

  /** What the node's agent programmed, read from its pinned maps (as `strait lb list`). */
  async frontends(node: string): Promise<FrontendView[]> {
    const n = this.node(node);
    const { Dataplane } = await import('../bpf/dataplane.js');
    const maps = Dataplane.openPinned(n.bpfRoot);
    try {
      return [...lbList(maps, undefined).frontends];
    } finally {
      for (const m of Object.values(maps)) m?.close();
    }
  }

  /** The frontends of a Service port on a node (address:port, external scope). */
  async frontend(node: string, address: string, port: number, protocol = 'TCP'): Promise<FrontendView | undefined> {
    return (await this.frontends(node)).find((f) => f.address === address && f.port === port && f.protocol === protocol && f.scope === 'external');
  }

  /** Polls cond until it holds; throws after timeoutMs naming `what` (and the last detail cond gave). */
  async waitFor(what: string, cond: () => Promise<boolean | string> | boolean | string, timeoutMs = 20_000): Promise<number> {
    const t0 = performance.now();
    let last: string | boolean = false;
    for (;;) {
      last = await cond();
      if (last === true) return Math.round(performance.now() - t0);
      if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${typeof last === 'string' ? `: ${last}` : ''}`);
      await sleep(50);
    }
  }

  down(log?: (line: string) => void): Promise<DownReport> {
    return labDown({ name: this.layout.name, ...(log ? { log } : {}) });
  }
}

// ---- down -----------------------------------------------------------------------------------

export interface DownReport {
  readonly name: string;
  readonly processes: readonly number[];
  readonly namespaces: readonly string[];
  readonly bpfRoots: readonly string[];
  readonly stateDir: boolean;
  readonly removedAnything: boolean;
}

export function describeDown(r: DownReport): string {
  const parts: string[] = [];
  if (r.processes.length > 0) parts.push(`${r.processes.length} process(es)`);
  if (r.namespaces.length > 0) parts.push(`${r.namespaces.length} network namespace(s)`);
  if (r.bpfRoots.length > 0) parts.push(`bpf root(s) ${r.bpfRoots.join(', ')}`);
  if (r.stateDir) parts.push('the state dir');
  return parts.length > 0 ? parts.join(', ') : 'nothing';
}

/** The lab's bpf roots present now (/sys/fs/bpf/strait-<name>-*). */
export function labBpfRoots(layout: LabLayout): string[] {
  try {
    return readdirSync(layout.bpfParent)
      .filter((e) => e.startsWith(`${layout.prefix}-`))
      .map((e) => join(layout.bpfParent, e));
  } catch {
    return [];
  }
}

/**
 * Removes everything of lab `name`, found by name whether or not a state file exists: the
 * agents, pod and other processes, the control plane, the namespaces (and with them every veth,
 * the bridge and the tc attachments), the bpf roots, the state dir. Idempotent.
 */
export async function labDown(opts: { name?: string; log?: (line: string) => void } = {}): Promise<DownReport> {
  const log = opts.log ?? (() => {});
  const layout = labLayout(opts.name ?? DEFAULT_LAB_NAME);
  const ns = new Namespaces(layout.prefix);
  const killed = new Set<number>();

  // 1. Agents, kube-proxies and their relays, pod servers (pid files; each verified by its command
  //    line), gracefully.
  const pids: number[] = [];
  if (existsSync(layout.stateDir)) {
    for (const e of readdirSync(layout.stateDir)) {
      const pidFile = join(layout.stateDir, e, 'agent.pid');
      const pid = livePid(pidFile, join(layout.bpfParent, `${layout.prefix}-${e}`));
      if (pid !== undefined) pids.push(pid);
      pids.push(...kubeProxyPids(join(layout.stateDir, e))); // a twin node's kube-proxy and relays
    }
    for (const rec of readPodRecords(layout)) {
      const pid = rec.pidFile ? livePid(rec.pidFile, 'echo-server') : undefined;
      if (pid !== undefined) pids.push(pid);
    }
  }
  if (pids.length > 0) log(`stopping ${pids.length} agent and pod process(es)`);
  await terminate(pids, 3_000);
  for (const p of pids) killed.add(p);

  // 2. Namespaces: whatever still runs inside is killed, then the namespace goes (with its veths).
  const namespaces = await ns.list();
  for (const n of namespaces) await ns.delete(n);
  if (namespaces.length > 0) log(`deleted ${namespaces.length} network namespace(s)`);

  // 3. The control plane, and processes of a crash that no pid file names.
  const cpPids = recordedProcesses(layout.controlPlaneDir);
  if (cpPids.length > 0) {
    log('stopping the control plane');
    // Its state is thrown away: no need to wait out kube-apiserver's graceful shutdown.
    await terminate(cpPids, 1_000);
    killRecordedProcesses(layout.controlPlaneDir);
    for (const p of cpPids) killed.add(p);
  }
  const strays = strayProcesses(layout.stateDir);
  if (strays.length > 0) {
    await terminate(strays, 2_000);
    for (const p of strays) killed.add(p);
  }

  // 4. Pins: maps, tcx links (their devices are gone with the namespaces), settings.
  const bpfRoots = labBpfRoots(layout);
  for (const root of bpfRoots) {
    try {
      const { Dataplane } = await import('../bpf/dataplane.js');
      Dataplane.destroy(root);
    } catch {
      /* no native library: plain removal unpins all the same */
    }
    rmSync(root, { recursive: true, force: true });
  }

  const stateDir = existsSync(layout.stateDir);
  rmSync(layout.stateDir, { recursive: true, force: true });
  const processes = [...killed];
  return {
    name: layout.name,
    processes,
    namespaces,
    bpfRoots,
    stateDir,
    removedAnything: processes.length > 0 || namespaces.length > 0 || bpfRoots.length > 0 || stateDir,
  };
}

function readPodRecords(layout: LabLayout): PodRecord[] {
  try {
    return readdirSync(layout.podsDir)
      .filter((e) => e.endsWith('.json'))
      .flatMap((e) => {
        try {
          return [JSON.parse(readFileSync(join(layout.podsDir, e), 'utf8')) as PodRecord];
        } catch {
          return [];
        }
      });
  } catch {
    return [];
  }
}

// ---- status ---------------------------------------------------------------------------------

export interface NodeStatus {
  readonly name: string;
  readonly ns: string;
  readonly zone: string;
  readonly addresses: readonly string[];
  /** "strait", or "kube-proxy nftables|iptables" on a twin node (agentPid/agentReady are then kube-proxy's). */
  readonly dataplane: string;
  readonly agentPid: number | null;
  readonly agentReady: boolean;
  readonly bpfRoot: string;
  readonly lastSync: string | null;
  readonly services: number | null;
  readonly frontends: number | null;
  readonly backends: number | null;
  readonly lastError: string | null;
}

export interface LabStatus {
  readonly name: string;
  /** up: state file and every process; degraded: state file but something is missing; down: no state file. */
  readonly state: 'up' | 'degraded' | 'down';
  readonly createdAt: string | null;
  readonly server: string | null;
  readonly adminKubeconfig: string | null;
  readonly controlPlane: { readonly pids: readonly number[]; readonly ready: boolean } | null;
  readonly nodes: readonly NodeStatus[];
  readonly pods: readonly PodRecord[];
  readonly external: LabState['external'] | null;
  /** Lab namespaces and bpf roots present (also when down: leftovers that `lab down` removes). */
  readonly namespaces: readonly string[];
  readonly bpfRoots: readonly string[];
  readonly problems: readonly string[];
}

export async function labStatus(name: string = DEFAULT_LAB_NAME): Promise<LabStatus> {
  const layout = labLayout(name);
  const namespaces = await new Namespaces(layout.prefix).list();
  const bpfRoots = labBpfRoots(layout);
  let state: LabState | undefined;
  try {
    state = JSON.parse(readFileSync(layout.stateFile, 'utf8')) as LabState;
  } catch {
    state = undefined;
  }
  if (!state) {
    return {
      name, state: 'down', createdAt: null, server: null, adminKubeconfig: null, controlPlane: null, nodes: [], pods: [], external: null,
      namespaces, bpfRoots, problems: namespaces.length + bpfRoots.length > 0 ? ['leftovers of an earlier lab: strait lab down removes them'] : [],
    };
  }
  const problems: string[] = [];
  const cp = ControlPlane.attach(state.controlPlaneDir);
  const cpPids = cp.runningPids();
  let cpReady = false;
  try {
    cpReady = (await cp.request('GET', '/readyz', undefined, { timeoutMs: 2_000 })).status === 200;
  } catch {
    cpReady = false;
  }
  if (cpPids.length < 3) problems.push(`control plane: ${cpPids.length} of 3 processes run`);
  if (!cpReady) problems.push('kube-apiserver is not ready');
  const nodes: NodeStatus[] = [];
  for (const n of state.nodes) {
    if (n.kubeProxy) {
      const kp = n.kubeProxy;
      const kpPid = livePid(kp.pidFile, 'kube-proxy') ?? null;
      const kpReady = kpPid !== null && (await kubeProxyReady(n));
      if (kpPid === null) problems.push(`kube-proxy (${kp.mode}) of ${n.name} is not running (log: ${kp.log})`);
      else if (!kpReady) problems.push(`kube-proxy (${kp.mode}) of ${n.name} has not synced (log: ${kp.log})`);
      if (!namespaces.includes(n.ns)) problems.push(`namespace ${n.ns} is missing`);
      nodes.push({
        name: n.name, ns: n.ns, zone: n.zone, addresses: [n.addr4, n.addr6], dataplane: `kube-proxy ${kp.mode}`, agentPid: kpPid, agentReady: kpReady,
        bpfRoot: '', lastSync: null, services: null, frontends: null, backends: null, lastError: null,
      });
      continue;
    }
    const pid = livePid(n.agentPidFile, n.bpfRoot) ?? null;
    let ready = false;
    try {
      ready = pid !== null && (await httpGet(`${agentListeners(n.agentLog).metrics ?? n.metricsUrl}/readyz`)).status === 200;
    } catch {
      ready = false;
    }
    let st: { lastSync?: string | null; services?: number; frontends?: number; backends?: number; lastError?: string | null } = {};
    try {
      st = JSON.parse(readFileSync(join(n.stateDir, `${n.bpfRoot.split('/').pop()}.status.json`), 'utf8'));
    } catch {
      /* no sync yet */
    }
    if (pid === null) problems.push(`the agent of ${n.name} is not running (log: ${n.agentLog})`);
    else if (!ready) problems.push(`the agent of ${n.name} is not ready`);
    if (!namespaces.includes(n.ns)) problems.push(`namespace ${n.ns} is missing`);
    nodes.push({
      name: n.name, ns: n.ns, zone: n.zone, addresses: [n.addr4, n.addr6], dataplane: 'strait', agentPid: pid, agentReady: ready, bpfRoot: n.bpfRoot,
      lastSync: st.lastSync ?? null, services: st.services ?? null, frontends: st.frontends ?? null, backends: st.backends ?? null,
      lastError: st.lastError ?? null,
    });
  }
  return {
    name,
    state: problems.length === 0 ? 'up' : 'degraded',
    createdAt: state.createdAt,
    server: state.server,
    adminKubeconfig: state.adminKubeconfig,
    controlPlane: { pids: cpPids, ready: cpReady },
    nodes,
    pods: readPodRecords(layout),
    external: state.external,
    namespaces,
    bpfRoots,
    problems,
  };
}
