// North-south benchmark: new TCP connections per second and request latency (p50/p99) from the
// lab's external client to a NodePort whose backend is on another node, through strait (SNAT and
// DSR, XDP off and on) and through the real kube-proxy (nftables and iptables modes) on twin
// nodes serving the same Service to the same backend, in one run; plus the same with a backend on
// the entry node itself (externalTrafficPolicy: Local).
//
//   make build bpffs k8s-bins && node_modules/.bin/node dist/bench/northsouth.js
//        [--count 2000] [--rounds 5] [--parallel 4] [--rows snat,dsr,…] [--keep] [--name labns]
//
// Lab (src/lab, name "labns" by default — it replaces a lab of that name): node1 runs the backend
// pod; each strait mode has its own entry node whose agent runs with that mode's flags (node2
// SNAT, then DSR = --dsr, SNAT + --xdp, DSR + --xdp where the agent has those flags); the
// kube-proxy twins come last (src/lab/kube-proxy.ts). Rows whose mode does not work are printed
// as "not available: <reason>" — from the agent's --help (no such flag), the XDP attachment seen
// on the entry node's uplink, or a failed probe request — never with a number.
//
// The fabric is made to behave like a wire for XDP by the lab itself (labUp's xdpFabric, the same
// mechanism `strait lab up --xdp` uses: XDP_PASS on the fabric-side veth peers, complete checksums
// from the senders — ext0 and the pods' eth0), for every row alike.
//
// Traffic: bench/northsouth-load.c (compiled here into build/bench/), the client in the external
// client's namespace (198.18.0.250), the server in the backend pods (4 worker processes).
// A connection = connect, one line, the one-line reply, close; P client processes in a closed
// loop make `count` connections per row and round. Latency is per connection, connect to reply.
// Rounds interleave the rows (order rotating each round); "vs kube-proxy nftables" is the
// median over rounds of the row's value divided by kube-proxy nftables' in the same round (the
// same path: remote or local), which cancels most of a shared machine's drift.
//
// Services (IPv4, TCP): ns-remote — NodePort 30080, port = targetPort = 30080 (DSR cannot remap
// ports), externalTrafficPolicy Cluster, its one endpoint the pod on node1; ns-local — NodePort
// 30081 → 30080, externalTrafficPolicy Local, a pod on node1 and on each kube-proxy twin.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { constants as osConstants, loadavg } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '../src/lab/control-plane.js';
import { kubeProxyPreflight, type KubeProxyMode } from '../src/lab/kube-proxy.js';
import { labUp, type Lab, type LabNode } from '../src/lab/lab.js';
import { UPLINK } from '../src/lab/layout.js';
import { STRAIT_MAIN, childEnv, labNodeBinary } from '../src/lab/programs.js';

const ROW_IDS = ['snat', 'dsr', 'snat-xdp', 'dsr-xdp', 'kp-nftables', 'kp-iptables', 'local-strait', 'local-kp-nftables', 'local-kp-iptables'] as const;
type RowId = (typeof ROW_IDS)[number];

interface Args {
  count: number;
  rounds: number;
  parallel: number;
  timeoutMs: number;
  rows: RowId[];
  keep: boolean;
  name: string;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { count: 2000, rounds: 5, parallel: 4, timeoutMs: 2000, rows: [...ROW_IDS], keep: false, name: 'labns' };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1] ?? '';
    if (flag === '--count') args.count = Number(value);
    else if (flag === '--rounds') args.rounds = Number(value);
    else if (flag === '--parallel') args.parallel = Number(value);
    else if (flag === '--timeout-ms') args.timeoutMs = Number(value);
    else if (flag === '--name') args.name = value;
    else if (flag === '--rows') {
      args.rows = value.split(',').map((r) => {
        if (!(ROW_IDS as readonly string[]).includes(r)) throw new Error(`--rows: ${r} is not one of ${ROW_IDS.join(',')}`);
        return r as RowId;
      });
    } else if (flag === '--keep') {
      args.keep = true;
      continue;
    } else if (flag === '--help') {
      console.log(`usage: northsouth.js [--count 2000] [--rounds 5] [--parallel 4] [--timeout-ms 2000] [--rows ${ROW_IDS.join(',')}] [--keep] [--name labns]`);
      process.exit(0);
    } else throw new Error(`unknown argument ${flag}`);
    i++;
  }
  for (const [k, v] of [['--count', args.count], ['--rounds', args.rounds], ['--parallel', args.parallel], ['--timeout-ms', args.timeoutMs]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${k}: want a positive integer, got ${v}`);
  }
  return args;
}

const REMOTE_PORT = 30080;
const LOCAL_PORT = 30081;
const SERVER_PORT = 30080;
const LOAD_SRC = join(REPO_ROOT, 'bench', 'northsouth-load.c');
const LOAD_BIN = join(REPO_ROOT, 'build', 'bench', 'northsouth-load');

// ---- the rows -------------------------------------------------------------------------------

interface Row {
  readonly id: RowId;
  readonly path: 'remote' | 'local';
  readonly label: string;
  /** The row it is compared with (kube-proxy nftables on the same path). */
  readonly baseline: RowId;
  /** Entry node, once planned. */
  node?: string;
  readonly dataplane: 'strait' | KubeProxyMode;
  /** strait rows: XDP on the entry node's uplink. */
  readonly xdp?: boolean;
  readonly port: number;
  /** Why there is no number (set at planning, readiness or probe). */
  unavailable?: string;
  /** What the backend saw as the client (from the probe's reply). */
  backendSaw?: string;
  notes: string[];
}

function rowsPlan(): Row[] {
  const r = (id: RowId, path: Row['path'], label: string, dataplane: Row['dataplane'], xdp?: boolean): Row => ({
    id, path, label, dataplane, ...(xdp === undefined ? {} : { xdp }),
    baseline: path === 'remote' ? 'kp-nftables' : 'local-kp-nftables',
    port: path === 'remote' ? REMOTE_PORT : LOCAL_PORT,
    notes: [],
  });
  return [
    r('snat', 'remote', 'strait SNAT, XDP off', 'strait', false),
    r('dsr', 'remote', 'strait DSR, XDP off', 'strait', false),
    r('snat-xdp', 'remote', 'strait SNAT, XDP on', 'strait', true),
    r('dsr-xdp', 'remote', 'strait DSR, XDP on', 'strait', true),
    r('kp-nftables', 'remote', 'kube-proxy nftables', 'nftables'),
    r('kp-iptables', 'remote', 'kube-proxy iptables', 'iptables'),
    r('local-strait', 'local', 'strait (ETP Local)', 'strait', false),
    r('local-kp-nftables', 'local', 'kube-proxy nftables (ETP Local)', 'nftables'),
    r('local-kp-iptables', 'local', 'kube-proxy iptables (ETP Local)', 'iptables'),
  ];
}

/** The flags `strait agent --help` lists. */
function agentFlags(): Set<string> {
  const out = execFileSync(labNodeBinary(), [STRAIT_MAIN, 'agent', '--help'], { encoding: 'utf8', env: childEnv() });
  return new Set([...out.matchAll(/^\s+(--[a-z0-9-]+)/gm)].map((m) => m[1] as string));
}

interface NodePlan {
  /** strait nodes in order (node1 = the backend node), with their extra agent flags. */
  strait: { rows: RowId[]; args: string[] }[];
  kubeProxy: KubeProxyMode[];
}

/** Gives each wanted, possible row an entry node; marks the others unavailable. */
function planNodes(rows: Row[], wanted: Set<RowId>, flags: Set<string>, binDir: string): NodePlan {
  const dsr = flags.has('--dsr');
  const xdp = flags.has('--xdp');
  // The backend node runs DSR's receiving side where the agent has it, as every node of a DSR cluster does.
  const plan: NodePlan = { strait: [{ rows: ['local-strait'], args: dsr ? ['--dsr'] : [] }], kubeProxy: [] };
  const need: Record<string, string[]> = { snat: [], dsr: ['--dsr'], 'snat-xdp': ['--xdp'], 'dsr-xdp': ['--dsr', '--xdp'] };
  for (const row of rows) {
    if (!wanted.has(row.id)) continue;
    if (row.id === 'local-strait') continue;
    if (row.dataplane === 'strait') {
      const flagsNeeded = need[row.id] ?? [];
      const missing = flagsNeeded.filter((f) => !(f === '--dsr' ? dsr : xdp));
      if (missing.length > 0) {
        row.unavailable = `strait agent has no ${missing.join(' / ')} flag (strait agent --help)`;
        continue;
      }
      plan.strait.push({ rows: [row.id], args: flagsNeeded });
    } else if (row.path === 'remote') {
      const problems = kubeProxyPreflight([row.dataplane], binDir);
      if (problems.length > 0) {
        row.unavailable = problems.join('; ');
        continue;
      }
      plan.kubeProxy.push(row.dataplane);
    }
  }
  // Local kube-proxy rows ride on the remote rows' twin nodes.
  for (const row of rows) {
    if (row.path !== 'local' || row.dataplane === 'strait' || !wanted.has(row.id)) continue;
    if (!plan.kubeProxy.includes(row.dataplane)) {
      const problems = kubeProxyPreflight([row.dataplane], binDir);
      if (problems.length > 0) row.unavailable = problems.join('; ');
      else plan.kubeProxy.push(row.dataplane);
    }
  }
  return plan;
}

// ---- measuring ------------------------------------------------------------------------------

/** What northsouth-load client prints. */
interface LoadResult {
  ok: number;
  failed: number;
  errnos: Record<string, number>;
  firstReply: string;
  elapsedNs: number;
  latNs: number[];
}

// the first name of each number (EAGAIN, not its alias EWOULDBLOCK)
const errnoNames = new Map<number, string>();
for (const [k, v] of Object.entries(osConstants.errno)) if (!errnoNames.has(v)) errnoNames.set(v, k);
function describeErrnos(e: Record<string, number>): string {
  return Object.entries(e)
    .map(([n, c]) => {
      const name = errnoNames.get(Number(n)) ?? `errno ${n}`;
      const what = name === 'EINPROGRESS' ? 'connect timed out' : name === 'EAGAIN' ? 'no reply in time' : name;
      return `${what} ×${c}`;
    })
    .join(', ');
}

async function load(lab: Lab, to: string, count: number, parallel: number, timeoutMs: number): Promise<LoadResult> {
  const argv = ['client', '--to', to, '--count', String(count), '--parallel', String(parallel), '--timeout-ms', String(timeoutMs)];
  const budget = 60_000 + Math.ceil(count / parallel) * timeoutMs * 2;
  const r = await lab.ns.exec(lab.state.external.ns, LOAD_BIN, argv, { timeoutMs: budget, check: true });
  return JSON.parse(r.stdout) as LoadResult;
}

interface Counters {
  rx: number;
  tx: number;
}

async function uplinkCounters(lab: Lab, node: LabNode): Promise<Counters> {
  const out = await lab.ns.ip(node.ns, ['-j', '-s', 'link', 'show', UPLINK]);
  const link = (JSON.parse(out) as { stats64?: { rx: { packets: number }; tx: { packets: number } } }[])[0];
  return { rx: link?.stats64?.rx.packets ?? NaN, tx: link?.stats64?.tx.packets ?? NaN };
}

/** The XDP program on the node's uplink, if any ("xdpgeneric id 42"). */
async function uplinkXdp(lab: Lab, node: LabNode): Promise<string | undefined> {
  const out = await lab.ns.ip(node.ns, ['-j', '-d', 'link', 'show', UPLINK]);
  const link = (JSON.parse(out) as { xdp?: { mode?: number; prog?: { id?: number }; attached?: { mode?: number; prog?: { id?: number } }[] } }[])[0];
  if (!link?.xdp) return undefined;
  const modes = ['none', 'native', 'generic', 'offload', 'multi'];
  const id = link.xdp.prog?.id ?? link.xdp.attached?.[0]?.prog?.id;
  return `xdp ${modes[link.xdp.mode ?? 0] ?? link.xdp.mode}${id === undefined ? '' : ` id ${id}`}`;
}

/** The entry node's dataplane holds the NodePort (strait: its maps; kube-proxy: its rules). */
async function programmed(lab: Lab, node: LabNode, port: number): Promise<boolean | string> {
  if (!node.kubeProxy) {
    const f = await lab.frontend(node.name, node.addr4, port, 'TCP');
    return f !== undefined && f.backends.length > 0 ? true : `no frontend ${node.addr4}:${port} with backends in its maps`;
  }
  if (node.kubeProxy.mode === 'nftables') {
    const r = await lab.ns.exec(node.ns, 'nft', ['list', 'map', 'ip', 'kube-proxy', 'service-nodeports'], { check: false });
    return new RegExp(`tcp \\. ${port} : goto`).test(r.stdout) || `${port} not in kube-proxy's service-nodeports map`;
  }
  const r = await lab.ns.exec(node.ns, 'iptables-save', ['-t', 'nat'], { check: false });
  return new RegExp(`-A KUBE-NODEPORTS .*--dport ${port} `).test(r.stdout) || `no KUBE-NODEPORTS rule for ${port}`;
}

interface Sample {
  ok: number;
  failed: number;
  errnos: Record<string, number>;
  ms: number;
  lat: number[];
  rx: number;
  tx: number;
  rounds: { rate: number; p50: number; p99: number }[];
}

function percentile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
}

function median(xs: number[]): number {
  return percentile([...xs].sort((a, b) => a - b), 0.5);
}

// ---- main -----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('the north-south bench needs root (the lab: namespaces, BPF)');
  mkdirSync(join(REPO_ROOT, 'build', 'bench'), { recursive: true });
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', LOAD_BIN, LOAD_SRC], { stdio: 'inherit' });
  const { ensureK8sBinaries } = await import('../src/lab/control-plane.js');
  const binDir = await ensureK8sBinaries((l) => console.error(`  ${l}`));

  const rows = rowsPlan();
  const wanted = new Set(args.rows);
  const flags = agentFlags();
  const plan = planNodes(rows, wanted, flags, binDir);

  const load0 = loadavg();
  const t0 = performance.now();
  let lab: Lab | undefined;
  // An entry node whose agent dies at start (a mode's flag accepted but failing) costs its row,
  // not the run: that row becomes "not available" and the lab comes up again without it.
  while (lab === undefined) {
    const nodeAgentArgs: Record<string, string[]> = {};
    for (const row of rows) delete row.node;
    plan.strait.forEach((n, i) => {
      const name = `node${i + 1}`;
      if (n.args.length > 0) nodeAgentArgs[name] = n.args;
      for (const id of n.rows) (rows.find((x) => x.id === id) as Row).node = name;
    });
    plan.kubeProxy.forEach((mode, i) => {
      const name = `node${plan.strait.length + i + 1}`;
      for (const row of rows) if (row.dataplane === mode) row.node = name;
    });
    console.error(`lab ${args.name}: ${plan.strait.length} strait node(s) ${JSON.stringify(nodeAgentArgs)}, kube-proxy ${plan.kubeProxy.join(', ') || 'none'}`);
    try {
      lab = await labUp({ name: args.name, nodes: plan.strait.length, kubeProxyNodes: plan.kubeProxy, nodeAgentArgs, xdpFabric: true, log: (l) => console.error(`  [lab] ${l}`) });
    } catch (e) {
      const msg = (e as Error).message;
      const m = /the agent of node(\d+) (exited|is not ready)/.exec(msg);
      const i = m ? Number(m[1]) - 1 : 0;
      if (i < 1 || i >= plan.strait.length) throw e; // the backend node, or not an agent: nothing to leave out
      const failed = plan.strait.splice(i, 1)[0] as NodePlan['strait'][number];
      const lines = msg.split('\n').filter((l) => l.trim() !== '');
      const why = [lines[0], ...lines.slice(1).slice(-3)].join(' | ');
      for (const id of failed.rows) (rows.find((x) => x.id === id) as Row).unavailable = `the agent with ${failed.args.join(' ')} failed at start: ${why}`;
      console.error(`lab: ${msg}`);
    }
  }
  const stop = (): void => {
    console.error('interrupted: taking the lab down');
    void lab.down().finally(() => process.exit(130));
  };
  if (!args.keep) process.once('SIGINT', stop);
  const measured: Row[] = [];
  const samples = new Map<RowId, Sample>();
  try {
    // many short connections from one address: reuse TIME_WAIT ports after 1 s, as a busy client does
    await lab.ns.sysctls(lab.state.external.ns, { 'net.ipv4.tcp_tw_reuse': 1, 'net.ipv4.ip_local_port_range': '1024 65000' });

    // backends: the remote one on node1 (also node1's local one), a local one on each twin
    const benchDir = join(lab.layout.stateDir, 'bench');
    mkdirSync(benchDir, { recursive: true });
    const podsOn: { name: string; node: string; labels: Record<string, string> }[] = [
      { name: 'ns-backend', node: 'node1', labels: { app: 'ns-remote', 'ns-local': 'yes' } },
      ...lab.nodes.filter((n) => n.kubeProxy).map((n) => ({ name: `ns-local-${n.name}`, node: n.name, labels: { 'ns-local': 'yes' } })),
    ];
    for (const p of podsOn) {
      const rec = await lab.kubelet.createPod({
        name: p.name, node: p.node, labels: p.labels, serve: null,
        containerPorts: [{ name: 'load', containerPort: SERVER_PORT, protocol: 'TCP' }],
      });
      const logPath = join(benchDir, `${p.name}.log`);
      lab.ns.spawn(rec.netns, LOAD_BIN, ['server', '--port', String(SERVER_PORT), '--workers', '4', '--name', p.name], { logPath, pidFile: join(benchDir, `${p.name}.pid`) });
      await lab.waitFor(`the load server of ${p.name}`, () => existsSync(logPath) && /^ready$/m.test(readFileSync(logPath, 'utf8')), 10_000);
    }
    const svc = (name: string, port: number, selector: Record<string, string>, etp: 'Cluster' | 'Local') => ({
      apiVersion: 'v1', kind: 'Service', metadata: { name },
      spec: { type: 'NodePort', externalTrafficPolicy: etp, selector, ports: [{ name: 'load', protocol: 'TCP', port, targetPort: SERVER_PORT, nodePort: port }] },
    });
    await lab.cp.api('POST', '/api/v1/namespaces/default/services', svc('ns-remote', REMOTE_PORT, { app: 'ns-remote' }, 'Cluster'));
    await lab.cp.api('POST', '/api/v1/namespaces/default/services', svc('ns-local', LOCAL_PORT, { 'ns-local': 'yes' }, 'Local'));

    // readiness, XDP state, probe
    for (const row of rows) {
      if (!wanted.has(row.id) || row.unavailable !== undefined || row.node === undefined) continue;
      const node = lab.node(row.node);
      try {
        await lab.waitFor(`${row.label} on ${node.name} to program ${node.addr4}:${row.port}`, () => programmed(lab, node, row.port), 30_000);
      } catch (e) {
        row.unavailable = (e as Error).message;
        continue;
      }
      if (row.xdp !== undefined) {
        const xdp = await uplinkXdp(lab, node);
        if (row.xdp && xdp === undefined) {
          row.unavailable = `the agent of ${node.name} (--xdp) attached no XDP program to ${UPLINK}`;
          continue;
        }
        if (!row.xdp && xdp !== undefined) {
          row.unavailable = `${node.name}'s ${UPLINK} has an XDP program (${xdp}) although --xdp is off`;
          continue;
        }
        if (xdp) row.notes.push(xdp);
      }
      if (row.dataplane === 'strait') {
        const f = await lab.frontend(node.name, node.addr4, row.port, 'TCP');
        if (f && f.flags.length > 0) row.notes.push(`frontend flags ${f.flags.join(',')}`);
      }
      const to = `${node.addr4}:${row.port}`;
      let probe: LoadResult | undefined;
      const errnos: Record<string, number> = {};
      for (let i = 0; i < 3 && (probe === undefined || probe.ok === 0); i++) {
        probe = await load(lab, to, 1, 1, args.timeoutMs);
        for (const [k, v] of Object.entries(probe.errnos)) errnos[k] = (errnos[k] ?? 0) + v;
      }
      if (!probe || probe.ok === 0) {
        row.unavailable = `probe to ${to} failed 3 times: ${describeErrnos(errnos)}`;
        continue;
      }
      row.backendSaw = probe.firstReply.split(' ')[1]?.replace(/:\d+$/, '') ?? '?';
      // DSR and ETP Local keep the client's address; SNAT and kube-proxy's masquerade show the entry node's
      const keepsClient = row.path === 'local' || row.id === 'dsr' || row.id === 'dsr-xdp';
      const expected = keepsClient ? lab.state.external.addr4 : node.addr4;
      if (row.backendSaw !== expected) row.notes.push(`backend saw ${row.backendSaw}, expected ${expected}${keepsClient && row.path === 'remote' ? ': served as SNAT, not DSR' : ''}`);
      measured.push(row);
    }
    for (const row of rows) if (wanted.has(row.id) && row.unavailable === undefined && !measured.includes(row)) row.unavailable = 'no entry node';
    console.error(`measuring ${measured.map((r) => r.id).join(', ') || 'nothing'}; not available: ${rows.filter((r) => wanted.has(r.id) && r.unavailable).map((r) => `${r.id} (${r.unavailable})`).join('; ') || 'none'}`);

    // warm-up (caches, ARP, conntrack tables), not counted
    for (const row of measured) await load(lab, `${lab.node(row.node as string).addr4}:${row.port}`, Math.min(500, args.count), args.parallel, args.timeoutMs);

    for (const row of measured) samples.set(row.id, { ok: 0, failed: 0, errnos: {}, ms: 0, lat: [], rx: 0, tx: 0, rounds: [] });
    for (let r = 0; r < args.rounds; r++) {
      const order = measured.map((_, i) => measured[(i + r) % measured.length] as Row);
      for (const row of order) {
        const node = lab.node(row.node as string);
        const before = await uplinkCounters(lab, node);
        const res = await load(lab, `${node.addr4}:${row.port}`, args.count, args.parallel, args.timeoutMs);
        const after = await uplinkCounters(lab, node);
        const s = samples.get(row.id) as Sample;
        s.ok += res.ok;
        s.failed += res.failed;
        for (const [k, v] of Object.entries(res.errnos)) s.errnos[k] = (s.errnos[k] ?? 0) + v;
        s.ms += res.elapsedNs / 1e6;
        s.rx += after.rx - before.rx;
        s.tx += after.tx - before.tx;
        const lat = res.latNs.map((n) => n / 1e6).sort((a, b) => a - b);
        for (const l of lat) s.lat.push(l);
        s.rounds.push({ rate: res.ok / (res.elapsedNs / 1e9), p50: percentile(lat, 0.5), p99: percentile(lat, 0.99) });
      }
      console.error(`  round ${r + 1}/${args.rounds} done`);
    }
  } finally {
    if (args.keep) console.error(`lab ${args.name} left up (--keep): strait lab down --name ${args.name}`);
    else await lab.down();
  }
  const load1 = loadavg();
  const seconds = (performance.now() - t0) / 1000;

  // ---- report ---------------------------------------------------------------------------------
  const f3 = (x: number): string => (Number.isFinite(x) ? x.toFixed(3) : 'n/a');
  const ratio = (x: number): string => (Number.isFinite(x) ? `×${x.toFixed(2)}` : '—');
  const vs = (row: Row, k: 'rate' | 'p50' | 'p99'): number => {
    const base = samples.get(row.baseline);
    const mine = samples.get(row.id);
    if (!base || !mine) return NaN;
    return median(mine.rounds.map((x, i) => x[k] / (base.rounds[i]?.[k] ?? NaN)));
  };
  console.log(`\nnorth-south: TCP connect + one request + close, external client → NodePort (IPv4); ${args.rounds} rounds × ${args.count} connections per row,`);
  console.log(`${args.parallel} client processes (bench/northsouth-load.c); "vs nft": median over rounds of value / kube-proxy nftables' on the same path in the same round`);
  console.log(`(conn/s: higher is better; latency: lower is better). Load average ${load0.map((x) => x.toFixed(1)).join(' ')} → ${load1.map((x) => x.toFixed(1)).join(' ')}; ${seconds.toFixed(0)} s in all.\n`);
  console.log('| backend | dataplane | entry node | backend saw | conn/s | vs nft | p50 ms | vs nft | p99 ms | vs nft | failed | entry up0 rx+tx pkts/conn |');
  console.log('|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  const json: unknown[] = [];
  for (const row of rows) {
    if (!wanted.has(row.id)) continue;
    const s = samples.get(row.id);
    const where = row.path === 'remote' ? 'remote' : 'local';
    if (!s || row.unavailable !== undefined) {
      console.log(`| ${where} | ${row.label} | ${row.node ?? '—'} | — | not available: ${row.unavailable ?? 'not measured'} | | | | | | | |`);
      json.push({ id: row.id, label: row.label, unavailable: row.unavailable ?? 'not measured' });
      continue;
    }
    const lat = s.lat.sort((a, b) => a - b);
    const rate = (s.ok / s.ms) * 1000;
    const p50 = percentile(lat, 0.5);
    const p99 = percentile(lat, 0.99);
    const pkts = (s.rx + s.tx) / Math.max(1, s.ok + s.failed);
    const notes = row.notes.length > 0 ? ` (${row.notes.join('; ')})` : '';
    const failed = s.failed > 0 ? `${s.failed} (${describeErrnos(s.errnos)})` : '0';
    console.log(`| ${where} | ${row.label}${notes} | ${row.node} | ${row.backendSaw} | ${Math.round(rate)} | ${ratio(vs(row, 'rate'))} | ${f3(p50)} | ${ratio(vs(row, 'p50'))} | ${f3(p99)} | ${ratio(vs(row, 'p99'))} | ${failed} | ${pkts.toFixed(1)} |`);
    json.push({ id: row.id, label: row.label, node: row.node, backendSaw: row.backendSaw, connPerSec: rate, p50, p99, failed: s.failed, errnos: s.errnos,
      rateVsNft: vs(row, 'rate'), p50VsNft: vs(row, 'p50'), p99VsNft: vs(row, 'p99'), uplinkPacketsPerConn: pkts, notes: row.notes, rounds: s.rounds });
  }
  console.log(`\n${JSON.stringify({ bench: 'northsouth', args, loadavg: [load0, load1], rows: json })}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
