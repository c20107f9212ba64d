// Agent benchmark: the node agent with S Services × E endpoints (one
// EndpointSlice each) in real kernel maps, beside kube-proxy (nftables mode)
// with the same objects in the same run.
//
//   make bench-agent
//   node dist/bench/agent.js --services 10000 --endpoints 10 --flips 1000 [--kube-proxy auto|off|on] [--kp-flips 200]
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
//    objects are the store's: nothing is kept twice).
//
// kube-proxy (the cached build, ~/.cache/strait/k8s-*/bin, lab/build-k8s.sh),
// nftables mode in a network namespace made for the run (deleted after), against
// a real kube-apiserver + etcd (src/lab/control-plane.ts) holding the same
// Services and slices (selector-less Services with explicit cluster IPs, so no
// controller touches the slices). Its namespace has only a loopback: the
// apiserver and its metrics are reached through Unix sockets relayed by a
// small node process inside it. Numbers come from kube-proxy itself:
//  - cold start: process start to the end of its first full sync (the
//    "SyncProxyRules complete" log line), and that sync's own duration;
//  - flips: the same toggle written to the API; each sync's elapsed time
//    from its log line (-v=2), and the end-to-end time from the API write to
//    that line; kubeproxy_sync_proxy_rules_duration_seconds from /metrics as a
//    cross-check;
//  - peak RSS: VmHWM of the process.
// Addresses: cluster IPs 198.19.192.0/18 (inside the control plane's service
// CIDR), endpoints 198.18.0.0/16 (see endpointOf). Data only: no packet is sent.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { IPPROTO_TCP, LB_SCOPE_EXTERNAL } from '../src/bpf/abi.js';
import { Dataplane } from '../src/bpf/dataplane.js';
import { Agent } from '../src/agent/agent.js';
import { silentLogger, type LogFields, type Logger } from '../src/agent/logger.js';
import type { EndpointSlice, Service } from '../src/model/k8s-types.js';

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
    nodeName: 'node-0',
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
    await agent.stop();
    Dataplane.destroy(bpfRoot);
    rmSync(bpfRoot, { recursive: true, force: true });
    rmSync(stateDir, { recursive: true, force: true });
  }
}

// ---- main -----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const flips = planFlips(args, args.flips, args.seed);
  const s = await runStrait(args, flips);

  console.log(`\nagent sync, ${args.services} Services × ${args.endpoints} endpoints (${args.services * args.endpoints} backends), ${args.flips} flips`);
  console.log('\n| | strait |');
  console.log('|---|---:|');
  console.log(`| cold start, ms | ${ms(s.coldMs)} |`);
  console.log(`| first sync, ms | ${ms(s.firstSyncMs)} |`);
  console.log(`| flip p50, ms | ${ms(percentile(s.flipMs, 50))} |`);
  console.log(`| flip p99, ms | ${ms(percentile(s.flipMs, 99))} |`);
  console.log(`| flip sync p50, ms | ${ms(percentile(s.flipSyncMs, 50))} |`);
  console.log(`| flip sync p99, ms | ${ms(percentile(s.flipSyncMs, 99))} |`);
  console.log(`| peak RSS, MB | ${s.maxRssMb.toFixed(0)} |`);
  console.log(`\n${JSON.stringify({ bench: 'agent', args, strait: { openMs: s.openMs, coldMs: s.coldMs, firstSyncMs: s.firstSyncMs, flipP50: percentile(s.flipMs, 50), flipP99: percentile(s.flipMs, 99), flipSyncP50: percentile(s.flipSyncMs, 50), flipSyncP99: percentile(s.flipSyncMs, 99), maxRssMb: s.maxRssMb } })}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
