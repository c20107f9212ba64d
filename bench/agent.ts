// Agent benchmark: the node agent with S Services × E endpoints (one
// EndpointSlice each) in real kernel maps, beside kube-proxy (nftables mode)
// with the same objects in the same run.
//
//   make build bpffs k8s-bins      # and nftables (apt) for the kube-proxy column
//   node_modules/.bin/node dist/bench/agent.js --services 10000 --endpoints 10 --flips 1000 [--kube-proxy auto|off|on] [--kp-flips 200]
//
// strait, in this process: an Agent whose source is its own object store
// (source kind "store"), real maps under a fresh /sys/fs/bpf root (destroyed at
// the end), runner min interval 0, no periodic sync during the run.
//  - cold start: the store already holds every object; from agent.start()
//    (loading the BPF object, creating the maps) to the last service entry
//    in the kernel map;
//  - flip: one endpoint's ready condition toggled in its slice (a store
//    upsert, as the watch does on an API event), timed until the kernel map
//    shows the Service's new backend count (the service entry is written last
//    in the hitless order, after its backends and slots), polled between event
//    loop turns; flips alternate down/up on random endpoints;
//  - peak RSS: process.resourceUsage().maxRSS at the end (the bench's own
//    objects are the store's: nothing is kept twice; the store keeps their
//    slim projections). The Agent applies its heap policy when it is made
//    (src/agent/heap.ts), before the store is filled, as `strait agent` does
//    before its watch fills it.
//
// kube-proxy (the cached build, ~/.cache/strait/k8s-*/bin, lab/build-k8s.sh),
// nftables mode in a network namespace made for the run (deleted after), against
// a real kube-apiserver + etcd (src/lab/control-plane.ts) holding the same
// Services and slices (selector-less Services with explicit cluster IPs, so no
// controller touches the slices). Its namespace has only a loopback: the
// apiserver and its metrics are reached through Unix sockets relayed by a
// small node process inside it. Numbers come from kube-proxy itself:
//  - cold start: process start to the end of its first sync (which waits for
//    the initial lists, so it programs every Service; polled on /metrics), and
//    that sync's own duration;
//  - flips: the same toggle written to the API (a merge patch of the slice's
//    endpoints), timed until /metrics counts one more sync
//    (kubeproxy_sync_proxy_rules_duration_seconds_count, IPv4 proxier), and
//    that sync's own duration (the growth of its _sum); min sync period 1 ms
//    (kube-proxy reads 0 as unset: 1 s). This end-to-end time includes the API
//    write and the watch, which strait's (a store upsert) does not;
//  - peak RSS: VmHWM of the process.
// Addresses: cluster IPs 198.19.192.0/18 (inside the control plane's service
// CIDR), endpoints 198.18.0.0/16 (see endpointOf). Data only: no packet is sent.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect, createServer, type Server } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { IPPROTO_TCP, LB_SCOPE_EXTERNAL } from '../src/bpf/abi.js';
import { Dataplane } from '../src/bpf/dataplane.js';
import { Agent } from '../src/agent/agent.js';
import { silentLogger, type LogFields, type Logger } from '../src/agent/logger.js';
import type { EndpointSlice, Service } from '../src/model/k8s-types.js';
import { startControlPlane, type ControlPlane } from '../src/lab/control-plane.js';

interface Args {
  services: number;
  endpoints: number;
  flips: number;
  kubeProxy: 'auto' | 'on' | 'off';
  kpFlips: number;
  seed: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { services: 10_000, endpoints: 10, flips: 1000, kubeProxy: 'auto', kpFlips: 200, seed: 1 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1] ?? '';
    if (flag === '--services') args.services = Number(value);
    else if (flag === '--endpoints') args.endpoints = Number(value);
    else if (flag === '--flips') args.flips = Number(value);
    else if (flag === '--kp-flips') args.kpFlips = Number(value);
    else if (flag === '--seed') args.seed = Number(value);
    else if (flag === '--kube-proxy' && (value === 'auto' || value === 'on' || value === 'off')) args.kubeProxy = value;
    else if (flag === '--help') {
      console.log('usage: agent.js [--services 10000] [--endpoints 10] [--flips 1000] [--kube-proxy auto|on|off] [--kp-flips 200] [--seed 1]');
      process.exit(0);
    } else throw new Error(`unknown argument ${flag}`);
    i++;
  }
  if (args.services > 16384) throw new Error('--services: at most 16384 (198.19.192.0/18)');
  if (args.endpoints < 2 || args.endpoints > 1000) throw new Error('--endpoints: 2 to 1000');
  return args;
}

// ---- the objects ----------------------------------------------------------------------------

const NAMESPACE = 'bench';
const SERVICE_PORT = 80;
const TARGET_PORT = 8080;
const vip = (i: number): string => `198.19.${192 + (i >> 8)}.${i & 255}`;
/**
 * Endpoint k of Service i: 198.18.0.0/16 holds 65,536 addresses, so Services
 * come in blocks of ⌊65536 / E⌋, each block on its own target port (8080, 8081…):
 * every (address, port) is distinct, as every backend must be.
 */
function endpointOf(i: number, k: number, perService: number): { addr: string; port: number } {
  const perBlock = Math.floor(65536 / perService);
  const j = (i % perBlock) * perService + k;
  return { addr: `198.18.${(j >> 8) & 255}.${j & 255}`, port: TARGET_PORT + Math.floor(i / perBlock) };
}

function makeService(i: number): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: NAMESPACE, name: `svc-${i}` },
    spec: {
      type: 'ClusterIP',
      clusterIP: vip(i),
      clusterIPs: [vip(i)],
      ipFamilies: ['IPv4'],
      ports: [{ name: 'http', port: SERVICE_PORT, protocol: 'TCP', targetPort: 'http' }],
    },
  } as Service;
}

/** The slice of Service i; `down`: the endpoint index that is not ready, if any. */
function makeSlice(i: number, perService: number, down: number | undefined, version: number): EndpointSlice {
  const endpoints = [];
  for (let k = 0; k < perService; k++) {
    const ready = k !== down;
    endpoints.push({
      addresses: [endpointOf(i, k, perService).addr],
      conditions: { ready, serving: ready, terminating: false },
      nodeName: `node-${k % 3}`,
    });
  }
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      namespace: NAMESPACE,
      name: `svc-${i}-0`,
      labels: { 'kubernetes.io/service-name': `svc-${i}` },
      // the store takes an object with a new resourceVersion as a change
      ...(version > 0 ? { resourceVersion: String(version) } : {}),
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: endpointOf(i, 0, perService).port, protocol: 'TCP' }],
    endpoints,
  } as EndpointSlice;
}

/** A flip: endpoint `endpoint` of Service `service` goes down (even flips) or back up (odd ones). */
interface Flip {
  readonly service: number;
  readonly endpoint: number;
  readonly down: boolean;
}

/** mulberry32: the same flips for the same seed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function planFlips(args: Args, count: number, seed: number): Flip[] {
  const rnd = random(seed);
  const flips: Flip[] = [];
  while (flips.length < count) {
    const service = Math.floor(rnd() * args.services);
    const endpoint = Math.floor(rnd() * args.endpoints);
    flips.push({ service, endpoint, down: true });
    if (flips.length < count) flips.push({ service, endpoint, down: false });
  }
  return flips;
}

// ---- statistics -----------------------------------------------------------------------------

/** Nearest-rank percentile. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))] as number;
}

const ms = (x: number): string => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) : 'n/a');

// ---- strait ---------------------------------------------------------------------------------

interface StraitResult {
  openMs: number;
  coldMs: number;
  firstSyncMs: number;
  flipMs: number[];
  flipSyncMs: number[];
  maxRssMb: number;
}

/** Resolves on the agent's next 'sync' log line with its fields. */
class SyncWatcher implements Logger {
  #waiters: ((f: LogFields) => void)[] = [];
  readonly errors: string[] = [];
  next(): Promise<LogFields> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
  debug(): void {}
  info(msg: string, fields?: LogFields): void {
    if (msg !== 'sync') return;
    for (const w of this.#waiters.splice(0)) w(fields ?? {});
  }
  warn(msg: string, fields?: LogFields): void {
    this.errors.push(`${msg} ${JSON.stringify(fields)}`);
  }
  error(msg: string, fields?: LogFields): void {
    this.errors.push(`${msg} ${JSON.stringify(fields)}`);
  }
  child(): Logger {
    return silentLogger;
  }
  enabled(level: string): boolean {
    return level !== 'debug';
  }
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function until(what: string, check: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await turn();
  }
}

async function runStrait(args: Args, flips: readonly Flip[]): Promise<StraitResult> {
  const bpfRoot = join('/sys/fs/bpf', `strait-bench-agent-${process.pid}`);
  const stateDir = mkdtempSync(join(tmpdir(), 'strait-bench-agent-'));
  Dataplane.destroy(bpfRoot);
  const log = new SyncWatcher();
  const agent = new Agent({
    nodeName: 'bench-node',
    source: { kind: 'store' },
    bpfRoot,
    stateDir,
    devices: [],
    devicesNetns: undefined,
    tcMode: 'auto',
    metricsAddr: '',
    healthzAddr: '',
    healthCheckBindAddresses: [],
    minSyncPeriodMs: 0,
    syncPeriodMs: 3_600_000,
    nodePortAddresses: undefined,
    nodeAddresses: ['198.18.255.254'],
    // the LB maps' defaults (100,000 frontends, 1,000,000 backends and slots) fit; the datapath's own maps stay small
    mapSizes: { ct4: 1024, ct6: 1024, frag4: 1024, frag6: 1024, snat4: 1024, snat6: 1024, affinity4: 1024, affinity6: 1024 },
    log,
  });
  const key = (i: number) => ({ addr: vip(i), port: SERVICE_PORT, proto: IPPROTO_TCP, scope: LB_SCOPE_EXTERNAL });
  try {
    for (let i = 0; i < args.services; i++) {
      agent.store.upsert('Service', makeService(i));
      agent.store.upsert('EndpointSlice', makeSlice(i, args.endpoints, undefined, 0));
    }
    agent.store.markSynced('Service');
    agent.store.markSynced('EndpointSlice');
    agent.store.markSynced('Node');

    const first = log.next();
    const t0 = performance.now();
    await agent.start();
    const openMs = performance.now() - t0;
    const services4 = agent.dataplane.maps.services4;
    const last = key(args.services - 1);
    await until('the cold start', () => services4.lookup(last)?.backendCount === args.endpoints);
    const coldMs = performance.now() - t0;
    const firstSyncMs = Number((await first)['durationMs']);
    if (services4.count() !== args.services) throw new Error(`services4 holds ${services4.count()} entries, want ${args.services}`);

    const flipMs: number[] = [];
    const flipSyncMs: number[] = [];
    let version = 1;
    for (const f of flips) {
      const want = f.down ? args.endpoints - 1 : args.endpoints;
      const k = key(f.service);
      const synced = log.next();
      const start = performance.now();
      agent.store.upsert('EndpointSlice', makeSlice(f.service, args.endpoints, f.down ? f.endpoint : undefined, ++version));
      await until(`flip ${version}`, () => services4.lookup(k)?.backendCount === want, 10_000);
      flipMs.push(performance.now() - start);
      flipSyncMs.push(Number((await synced)['durationMs']));
    }
    if (log.errors.length > 0) throw new Error(`agent reported: ${log.errors.slice(0, 5).join('; ')}`);
    return { openMs, coldMs, firstSyncMs, flipMs, flipSyncMs, maxRssMb: process.resourceUsage().maxRSS / 1024 };
  } finally {
    await agent.stop().catch((e: unknown) => console.error('agent stop:', e));
    Dataplane.destroy(bpfRoot);
    rmSync(bpfRoot, { recursive: true, force: true });
    rmSync(stateDir, { recursive: true, force: true });
  }
}

// ---- kube-proxy -----------------------------------------------------------------------------

interface KubeProxyResult {
  coldMs: number;
  firstSyncMs: number;
  flipMs: number[];
  flipSyncMs: number[];
  maxRssMb: number;
  nftElements: number;
}

/** The cached kube-proxy (lab/build-k8s.sh), or why there is none to run. */
function findKubeProxy(): { bin: string } | { missing: string } {
  const cache = process.env['STRAIT_CACHE'] ?? join(homedir(), '.cache', 'strait');
  const dirs = existsSync(cache) ? readdirSync(cache).filter((d) => d.startsWith('k8s-')).sort() : [];
  const bin = dirs.map((d) => join(cache, d, 'bin', 'kube-proxy')).filter((b) => existsSync(b)).pop();
  if (bin === undefined) return { missing: `no cached kube-proxy under ${cache}/k8s-*/bin (make k8s-bins)` };
  if (spawnSync('nft', ['--version'], { stdio: 'ignore' }).status !== 0) return { missing: 'no nft binary (apt-get install nftables): kube-proxy nftables mode needs it' };
  if (process.getuid?.() !== 0) return { missing: 'not root (a network namespace is needed)' };
  return { bin };
}

/** Creates `items` through `create`, `parallel` at a time. */
async function createAll<T>(items: readonly T[], parallel: number, create: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await create(items[next++] as T);
  };
  await Promise.all(Array.from({ length: parallel }, worker));
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message}`);
}

/** Relays each connection to `target` (the other end of a namespace boundary). */
function relay(listen: string | { port: number; host: string }, target: string | { port: number; host: string }): Server {
  const server = createServer((c) => {
    const u = typeof target === 'string' ? connect(target) : connect(target.port, target.host);
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  if (typeof listen === 'string') server.listen(listen);
  else server.listen(listen.port, listen.host);
  return server;
}

/** The same relay, run inside the namespace by a node child process. */
const NETNS_RELAY = `
const net = require('node:net');
const pipe = (c, u) => { c.pipe(u).pipe(c); c.on('error', () => u.destroy()); u.on('error', () => c.destroy()); };
net.createServer((c) => pipe(c, net.connect(process.env.API_SOCK))).listen(Number(process.env.API_PORT), '127.0.0.1');
net.createServer((c) => pipe(c, net.connect(10249, '127.0.0.1'))).listen(process.env.METRICS_SOCK);
`;

function fetchMetrics(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve(body));
    });
    req.on('error', reject).on('timeout', () => req.destroy(new Error('metrics: timeout'))).end();
  });
}

/** kubeproxy_sync_proxy_rules_duration_seconds of the IPv4 proxier: syncs so far and their total seconds. */
function syncCounter(text: string): { count: number; sum: number } {
  const out = { count: 0, sum: 0 };
  for (const line of text.split('\n')) {
    const m = /^kubeproxy_sync_proxy_rules_duration_seconds_(count|sum)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (m === null || (m[2] !== undefined && m[2].includes('ip_family') && !m[2].includes('"IPv4"'))) continue;
    out[m[1] as 'count' | 'sum'] += Number(m[3]);
  }
  return out;
}

async function runKubeProxy(args: Args, flips: readonly Flip[], bin: string): Promise<KubeProxyResult> {
  const ns = `st-bench-kp-${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'strait-bench-kp-'));
  const apiSock = join(dir, 'api.sock');
  const metricsSock = join(dir, 'metrics.sock');
  let cp: ControlPlane | undefined;
  let hostRelay: Server | undefined;
  const children: ChildProcess[] = [];
  try {
    const t0 = performance.now();
    cp = await startControlPlane({ log: (l) => console.error(`  ${l}`) });
    const api = cp;
    await api.api('POST', '/api/v1/namespaces', { metadata: { name: NAMESPACE } });
    await api.api('POST', '/api/v1/nodes', {
      metadata: { name: 'bench-node', labels: { 'kubernetes.io/hostname': 'bench-node' } },
      status: { addresses: [{ type: 'InternalIP', address: '198.18.255.254' }] },
    });
    const indices = Array.from({ length: args.services }, (_, i) => i);
    await createAll(indices, 16, (i) => api.api('POST', `/api/v1/namespaces/${NAMESPACE}/services`, makeService(i)));
    await createAll(indices, 16, (i) =>
      api.api('POST', `/apis/discovery.k8s.io/v1/namespaces/${NAMESPACE}/endpointslices`, makeSlice(i, args.endpoints, undefined, 0)),
    );
    console.error(`  ${args.services} Services and slices created in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    // the namespace: loopback only; the apiserver and the metrics through Unix sockets
    run('ip', ['netns', 'add', ns]);
    run('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    hostRelay = relay(apiSock, { port: cp.apiserverPort, host: '127.0.0.1' });
    const inner = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', NETNS_RELAY], {
      env: { ...process.env, API_SOCK: apiSock, API_PORT: String(cp.apiserverPort), METRICS_SOCK: metricsSock },
      stdio: 'inherit',
    });
    children.push(inner);
    await until('the namespace relay', () => existsSync(metricsSock), 10_000);

    const config = join(dir, 'kube-proxy.yaml');
    writeFileSync(
      config,
      [
        'apiVersion: kubeproxy.config.k8s.io/v1alpha1',
        'kind: KubeProxyConfiguration',
        'mode: nftables',
        'hostnameOverride: bench-node',
        'metricsBindAddress: 127.0.0.1:10249',
        'healthzBindAddress: 127.0.0.1:10256',
        'clientConnection:',
        `  kubeconfig: ${cp.kubeconfigPath}`,
        'nftables:',
        '  minSyncPeriod: 1ms', // as strait's runner (0 here): every change synced at once (kube-proxy reads 0 as "unset": 1 s)
        '  syncPeriod: 1h', // no periodic full sync during the run
        'conntrack:', // leave the namespace's conntrack settings alone
        '  maxPerCore: 0',
        '  tcpEstablishedTimeout: 0s',
        '  tcpCloseWaitTimeout: 0s',
        '',
      ].join('\n'),
    );
    const logFile = join(dir, 'kube-proxy.log');
    const log = createWriteStream(logFile);
    const start = performance.now();
    const kp = spawn('ip', ['netns', 'exec', ns, bin, `--config=${config}`, '--v=2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(kp);
    kp.stdout?.pipe(log);
    kp.stderr?.pipe(log);
    const metrics = async (): Promise<{ count: number; sum: number }> => {
      try {
        return syncCounter(await fetchMetrics(metricsSock));
      } catch {
        return { count: 0, sum: 0 };
      }
    };
    // cold start: its first sync waits for the initial lists, so it programs every Service
    let m = await metrics();
    const deadline = performance.now() + 300_000;
    while (m.count < 1) {
      if (kp.exitCode !== null || performance.now() > deadline) {
        throw new Error(`kube-proxy did not sync (exit ${kp.exitCode}); log ${logFile}:\n${readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 5));
      m = await metrics();
    }
    const coldMs = performance.now() - start;
    const firstSyncMs = m.sum * 1000;
    const listed = spawnSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'map', 'ip', 'kube-proxy', 'service-ips'], { encoding: 'utf8', maxBuffer: 256 << 20 });
    const nftElements = (listed.stdout.match(/ : goto /g) ?? []).length;

    const flipMs: number[] = [];
    const flipSyncMs: number[] = [];
    for (const f of flips) {
      const before = m;
      const t = performance.now();
      await api.patch(`/apis/discovery.k8s.io/v1/namespaces/${NAMESPACE}/endpointslices/svc-${f.service}-0`, {
        endpoints: makeSlice(f.service, args.endpoints, f.down ? f.endpoint : undefined, 0).endpoints,
      });
      while ((m = await metrics()).count <= before.count) {
        if (performance.now() - t > 60_000) throw new Error('kube-proxy: no sync after a flip within 60 s');
      }
      flipMs.push(performance.now() - t);
      flipSyncMs.push(((m.sum - before.sum) / (m.count - before.count)) * 1000);
    }
    const status = readFileSync(`/proc/${kp.pid}/status`, 'utf8');
    const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
    return { coldMs, firstSyncMs, flipMs, flipSyncMs, maxRssMb: hwm / 1024, nftElements };
  } finally {
    for (const c of children.reverse()) {
      if (c.exitCode !== null || c.pid === undefined) continue;
      c.kill('SIGTERM');
      await new Promise((r) => c.once('exit', r));
    }
    hostRelay?.close();
    spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    await cp?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- main -----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const flips = planFlips(args, args.flips, args.seed);
  // strait first: its peak RSS is read before the kube-proxy part fills this process with API traffic
  const s = await runStrait(args, flips);

  let k: KubeProxyResult | undefined;
  let kpNote = '';
  if (args.kubeProxy !== 'off') {
    const found = findKubeProxy();
    if ('missing' in found) {
      if (args.kubeProxy === 'on') throw new Error(`--kube-proxy on: ${found.missing}`);
      kpNote = `kube-proxy not run: ${found.missing}`;
    } else {
      console.error('kube-proxy (nftables) with the same objects:');
      k = await runKubeProxy(args, planFlips(args, args.kpFlips, args.seed), found.bin);
    }
  } else kpNote = 'kube-proxy not run (--kube-proxy off)';

  const p = (xs: readonly number[], q: number): number => percentile(xs, q);
  const rows: [string, number, number | undefined][] = [
    ['cold start: start → every Service programmed, ms', s.coldMs, k?.coldMs],
    ['first (full) sync, ms', s.firstSyncMs, k?.firstSyncMs],
    ['flip: change → maps/rules written, p50, ms', p(s.flipMs, 50), k === undefined ? undefined : p(k.flipMs, 50)],
    ['flip: change → maps/rules written, p99, ms', p(s.flipMs, 99), k === undefined ? undefined : p(k.flipMs, 99)],
    ['flip: sync duration, p50, ms', p(s.flipSyncMs, 50), k === undefined ? undefined : p(k.flipSyncMs, 50)],
    ['flip: sync duration, p99, ms', p(s.flipSyncMs, 99), k === undefined ? undefined : p(k.flipSyncMs, 99)],
    ['peak RSS, MB', s.maxRssMb, k?.maxRssMb],
  ];
  console.log(`\nagent sync, ${args.services} Services × ${args.endpoints} endpoints (${args.services * args.endpoints} backends); flips: strait ${args.flips}, kube-proxy ${k === undefined ? 0 : args.kpFlips}`);
  console.log('\n| | strait | kube-proxy nftables | strait / kube-proxy |');
  console.log('|---|---:|---:|---:|');
  for (const [name, a, b] of rows) {
    console.log(`| ${name} | ${name.startsWith('peak') ? a.toFixed(0) : ms(a)} | ${b === undefined ? '—' : name.startsWith('peak') ? b.toFixed(0) : ms(b)} | ${b === undefined ? '—' : (a / b).toFixed(3)} |`);
  }
  if (kpNote !== '') console.log(`\n${kpNote}`);
  if (k !== undefined) console.log(`\nkube-proxy's service-ips map held ${k.nftElements} elements after its first sync.`);
  console.log(`\n${JSON.stringify({ bench: 'agent', args, strait: { ...s, flipMs: undefined, flipSyncMs: undefined }, kubeProxy: k && { ...k, flipMs: undefined, flipSyncMs: undefined }, rows })}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
