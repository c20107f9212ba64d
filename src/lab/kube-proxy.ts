// kube-proxy twin nodes: lab nodes whose Service dataplane is the real kube-proxy (the cached
// build of lab/build-k8s.sh) in nftables or iptables mode instead of a strait agent, so that
// benchmarks and tests can send the same traffic to the same Services and backends through both.
//
//   const lab = await labUp({ nodes: 2, kubeProxyNodes: ['nftables', 'iptables'] });
//   // node3: kube-proxy nftables, node4: kube-proxy iptables (strait lab up --nodes 2
//   //   --kube-proxy-nodes 2 --kube-proxy-mode nftables,iptables)
//
// A twin node is an ordinary lab node (namespace, uplink on the fabric, pod CIDR, routes, Node
// object, pods through the lab's kubelet) with kube-proxy running *inside* its namespace
// (`ip netns exec`), so its rules and conntrack are the node's own:
//   --proxy-mode nftables|iptables  --hostname-override <node>
//   --detect-local-mode NodeCIDR     pod traffic = this node's pod CIDRs (from its Node object).
//       The lab's pod CIDRs 198.18.(16+N).0/24 are covered by 198.18.16.0/19 in IPv4, but their
//       IPv6 twins 2001:2:0:(16+N)::/64 share no prefix that leaves out the fabric 2001:2::/64
//       (the external client), so a --cluster-cidr would count the external client as a pod in
//       IPv6; the node's own CIDRs are exact.
//   --nodeport-addresses <node addr4>/32,<node addr6>/128   NodePorts on the node's addresses, as
//       the strait agents serve them
//   --conntrack-max-per-core 0, --conntrack-tcp-timeout-established 0,
//   --conntrack-tcp-timeout-close-wait 0   leave conntrack sysctls alone (nf_conntrack_max is not
//       writable from a non-initial namespace, and the host's settings are not ours to change)
//   --iptables-localhost-nodeports=false   no route_localnet sysctl
//   --metrics-bind-address 127.0.0.1:10249 (the node namespace's own loopback)
//   --healthz-bind-address 0.0.0.0:10256   node health on the node's addresses inside its
//       namespace, where the agents' node health listens too (lab.ts NODE_HEALTH_PORT)
//   --oom-score-adj 0                       not the default -999: the machine is shared
// Credentials: ServiceAccount kube-system/kube-proxy bound to the bootstrap ClusterRole
// system:node-proxier, as kubeadm sets it up; token from the TokenRequest API.
//
// Reaching kube-apiserver: it listens on the root namespace's 127.0.0.1 and the node namespace
// has no route out of the lab (and gets none). Two src/lab/netns-relay.ts processes join the two
// loopbacks through Unix sockets in the node's state dir: one in the root namespace
// (apiserver.sock → 127.0.0.1:<apiserver port>), one in the node namespace (its
// 127.0.0.1:<apiserver port> → apiserver.sock, and kube-proxy-metrics.sock → its
// 127.0.0.1:10249). The kubeconfig therefore names the same https://127.0.0.1:<port> as the
// agents' (the serving certificate covers it). No address, route or link is added.
//
// Teardown: kube-proxy and the inner relay die with the node namespace; the root relay is found
// by its pid file (kubeProxyPids) or, after a crash, as a stray `node` naming the state dir.
// Rules and conntrack entries live in the namespace and go with it.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { delimiter, join } from 'node:path';
import { writeKubeconfig, type ControlPlane } from './control-plane.js';
import { livePid, spawnDetached, type Namespaces } from './host.js';
import { childEnv, labNodeBinary, labScriptArgs } from './programs.js';

export type KubeProxyMode = 'nftables' | 'iptables';
export const KUBE_PROXY_MODES: readonly KubeProxyMode[] = ['nftables', 'iptables'];

/** kube-proxy's metrics port inside a twin node's namespace (its default). */
export const KUBE_PROXY_METRICS_PORT = 10249;

/** What a twin node records about its kube-proxy (in lab.json, under the node). */
export interface KubeProxyNode {
  readonly mode: KubeProxyMode;
  readonly bin: string;
  readonly log: string;
  readonly pidFile: string;
  /** Relay in the root namespace: apiSocket → kube-apiserver. */
  readonly apiRelayPidFile: string;
  readonly apiRelayLog: string;
  readonly apiSocket: string;
  /** Relay in the node's namespace: its 127.0.0.1:<apiserver port> → apiSocket; metricsSocket → its 127.0.0.1:10249. */
  readonly nodeRelayPidFile: string;
  readonly nodeRelayLog: string;
  /** kube-proxy's /metrics from the root namespace (http over this Unix socket). */
  readonly metricsSocket: string;
}

/** The node fields kube-proxy needs (a LabNode has them all). */
export interface KubeProxyHost {
  readonly name: string;
  readonly ns: string;
  readonly addr4: string;
  readonly addr6: string;
  readonly stateDir: string;
  readonly kubeProxy?: KubeProxyNode;
}

/** "nftables,iptables" → modes; throws on anything else. */
export function parseKubeProxyModes(spec: string): KubeProxyMode[] {
  const modes = spec.split(',').map((m) => m.trim()).filter((m) => m !== '');
  for (const m of modes) {
    if (!(KUBE_PROXY_MODES as readonly string[]).includes(m)) throw new Error(`--kube-proxy-mode: ${JSON.stringify(m)} is not one of ${KUBE_PROXY_MODES.join(', ')}`);
  }
  if (modes.length === 0) throw new Error('--kube-proxy-mode: empty');
  return modes as KubeProxyMode[];
}

/** The record of a twin node's kube-proxy (paths in its state dir). */
export function planKubeProxy(stateDir: string, mode: KubeProxyMode, binDir: string): KubeProxyNode {
  return {
    mode,
    bin: join(binDir, 'kube-proxy'),
    log: join(stateDir, 'kube-proxy.log'),
    pidFile: join(stateDir, 'kube-proxy.pid'),
    apiRelayPidFile: join(stateDir, 'apiserver-relay.pid'),
    apiRelayLog: join(stateDir, 'apiserver-relay.log'),
    apiSocket: join(stateDir, 'apiserver.sock'),
    nodeRelayPidFile: join(stateDir, 'node-relay.pid'),
    nodeRelayLog: join(stateDir, 'node-relay.log'),
    metricsSocket: join(stateDir, 'kube-proxy-metrics.sock'),
  };
}

function onPath(cmd: string): boolean {
  const dirs = (process.env['PATH'] ?? '').split(delimiter).concat(['/usr/sbin', '/sbin']);
  return dirs.some((d) => d !== '' && existsSync(join(d, cmd)));
}

/** The tools each mode runs (kube-proxy execs them inside the namespace). */
const MODE_TOOLS: Record<KubeProxyMode, { tools: readonly string[]; pkg: string }> = {
  nftables: { tools: ['nft'], pkg: 'nftables' },
  iptables: { tools: ['iptables', 'iptables-save', 'iptables-restore', 'ip6tables', 'ip6tables-save', 'ip6tables-restore'], pkg: 'iptables' },
};

/** Why twin nodes of these modes cannot run here (empty: they can). */
export function kubeProxyPreflight(modes: readonly KubeProxyMode[], binDir: string): string[] {
  const problems: string[] = [];
  if (modes.length > 0 && !existsSync(join(binDir, 'kube-proxy'))) problems.push(`${join(binDir, 'kube-proxy')} is missing (make k8s-bins)`);
  for (const mode of new Set(modes)) {
    const missing = MODE_TOOLS[mode].tools.filter((t) => !onPath(t));
    if (missing.length > 0) problems.push(`kube-proxy ${mode} mode needs ${missing.join(', ')} (apt-get install ${MODE_TOOLS[mode].pkg}, or make deps)`);
  }
  return problems;
}

/**
 * kube-proxy's identity: ServiceAccount kube-system/kube-proxy bound to system:node-proxier, and a
 * kubeconfig with a TokenRequest token in the control plane's dir. Returns the kubeconfig path.
 */
export async function createKubeProxyCredentials(cp: ControlPlane, expirationSeconds: number): Promise<string> {
  const create = async (path: string, obj: unknown): Promise<void> => {
    const r = await cp.request('POST', path, obj);
    if (r.status !== 409 && (r.status < 200 || r.status > 299)) throw new Error(`POST ${path}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  };
  await create('/api/v1/namespaces/kube-system/serviceaccounts', { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'kube-proxy', namespace: 'kube-system' } });
  await create('/apis/rbac.authorization.k8s.io/v1/clusterrolebindings', {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: { name: 'strait-lab:kube-proxy' },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:node-proxier' },
    subjects: [{ kind: 'ServiceAccount', name: 'kube-proxy', namespace: 'kube-system' }],
  });
  const tr = await cp.api('POST', '/api/v1/namespaces/kube-system/serviceaccounts/kube-proxy/token', {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { expirationSeconds },
  });
  const token = String(tr.status?.token ?? '');
  if (!token) throw new Error('TokenRequest for kube-system/kube-proxy returned no token');
  const path = join(cp.dir, 'kube-system-kube-proxy.kubeconfig');
  writeKubeconfig(path, cp.server, cp.caPem, { token }, 'kube-proxy');
  return path;
}

/** kube-proxy's command line for a twin node (see the file comment for each flag's reason). */
export function kubeProxyArgs(node: KubeProxyHost, mode: KubeProxyMode, kubeconfig: string): string[] {
  return [
    `--proxy-mode=${mode}`,
    `--kubeconfig=${kubeconfig}`,
    `--hostname-override=${node.name}`,
    '--detect-local-mode=NodeCIDR',
    `--nodeport-addresses=${node.addr4}/32,${node.addr6}/128`,
    '--conntrack-max-per-core=0',
    '--conntrack-tcp-timeout-established=0',
    '--conntrack-tcp-timeout-close-wait=0',
    '--iptables-localhost-nodeports=false',
    `--metrics-bind-address=127.0.0.1:${KUBE_PROXY_METRICS_PORT}`,
    '--healthz-bind-address=0.0.0.0:10256',
    '--oom-score-adj=0',
    '--v=2',
  ];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function tail(path: string, lines: number): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function waitForReadyLine(what: string, logPath: string, pidFile: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let log = '';
    try {
      log = readFileSync(logPath, 'utf8');
    } catch {
      /* not yet */
    }
    if (/^ready$/m.test(log)) return;
    if (livePid(pidFile, 'netns-relay') === undefined && log !== '') throw new Error(`${what} exited:\n${log.trim()}`);
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${timeoutMs} ms:\n${log.trim()}`);
    await sleep(25);
  }
}

/** Starts the relays and kube-proxy of a twin node (detached, pid files in its state dir). */
export async function startKubeProxy(ns: Namespaces, node: KubeProxyHost, opts: { kubeconfig: string; apiserverPort: number }): Promise<void> {
  const kp = node.kubeProxy;
  if (!kp) throw new Error(`${node.name} is not a kube-proxy node`);
  mkdirSync(node.stateDir, { recursive: true });
  const relay = [labNodeBinary(), ...labScriptArgs('netns-relay')] as const;
  spawnDetached(relay[0], [...relay.slice(1), '--forward', `unix:${kp.apiSocket}=tcp:127.0.0.1:${opts.apiserverPort}`], {
    logPath: kp.apiRelayLog, pidFile: kp.apiRelayPidFile, env: childEnv(),
  });
  await waitForReadyLine(`the apiserver relay of ${node.name}`, kp.apiRelayLog, kp.apiRelayPidFile, 15_000);
  ns.spawn(node.ns, relay[0], [
    ...relay.slice(1),
    '--forward', `tcp:127.0.0.1:${opts.apiserverPort}=unix:${kp.apiSocket}`,
    '--forward', `unix:${kp.metricsSocket}=tcp:127.0.0.1:${KUBE_PROXY_METRICS_PORT}`,
  ], { logPath: kp.nodeRelayLog, pidFile: kp.nodeRelayPidFile, env: childEnv() });
  await waitForReadyLine(`the relay in ${node.ns}`, kp.nodeRelayLog, kp.nodeRelayPidFile, 15_000);
  ns.spawn(node.ns, kp.bin, kubeProxyArgs(node, kp.mode, opts.kubeconfig), { logPath: kp.log, pidFile: kp.pidFile, env: childEnv() });
}

/** GET http://…/metrics of a twin node's kube-proxy (through its metrics socket). */
export function kubeProxyMetrics(kp: KubeProxyNode, timeoutMs = 3_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath: kp.metricsSocket, path: '/metrics', timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => {
        if (res.statusCode === 200) resolve(body);
        else reject(new Error(`kube-proxy /metrics: HTTP ${res.statusCode}`));
      });
    });
    req.on('timeout', () => req.destroy(new Error('kube-proxy /metrics: timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** Completed rule syncs per IP family (kubeproxy_sync_proxy_rules_duration_seconds_count). */
export function kubeProxySyncs(metrics: string): { ipv4: number; ipv6: number; any: number } {
  const out = { ipv4: 0, ipv6: 0, any: 0 };
  for (const line of metrics.split('\n')) {
    const m = /^kubeproxy_sync_proxy_rules_duration_seconds_count(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (m === null) continue;
    const n = Number(m[2]);
    out.any += n;
    if (m[1]?.includes('"IPv4"')) out.ipv4 += n;
    if (m[1]?.includes('"IPv6"')) out.ipv6 += n;
  }
  return out;
}

/** The twin node's kube-proxy runs and has synced its rules at least once. */
export async function kubeProxyReady(node: KubeProxyHost): Promise<boolean> {
  const kp = node.kubeProxy;
  if (!kp || livePid(kp.pidFile, 'kube-proxy') === undefined) return false;
  try {
    return kubeProxySyncs(await kubeProxyMetrics(kp)).any > 0;
  } catch {
    return false;
  }
}

/** Waits for kubeProxyReady(); throws with the log tail of a dead or slow kube-proxy. */
export async function waitForKubeProxy(node: KubeProxyHost, timeoutMs: number): Promise<void> {
  const kp = node.kubeProxy;
  if (!kp) throw new Error(`${node.name} is not a kube-proxy node`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (livePid(kp.pidFile, 'kube-proxy') === undefined) throw new Error(`kube-proxy (${kp.mode}) of ${node.name} exited:\n${tail(kp.log, 30)}`);
    if (await kubeProxyReady(node)) return;
    if (Date.now() > deadline) throw new Error(`kube-proxy (${kp.mode}) of ${node.name} has not synced after ${timeoutMs} ms:\n${tail(kp.log, 30)}`);
    await sleep(200);
  }
}

/** Live pids of a node state dir's kube-proxy and relays (for lab down; empty for strait nodes). */
export function kubeProxyPids(stateDir: string): number[] {
  const out: number[] = [];
  for (const [file, mark] of [['kube-proxy.pid', 'kube-proxy'], ['node-relay.pid', 'netns-relay'], ['apiserver-relay.pid', 'netns-relay']] as const) {
    const pid = livePid(join(stateDir, file), mark);
    if (pid !== undefined) out.push(pid);
  }
  return out;
}
