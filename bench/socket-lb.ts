// Socket LB benchmark: connection rate (connect, one request, close) and the
// latency of that request (p50/p99, connect included) from a pod through a
// ClusterIP translated at connect() by strait_sock.o, against the same client
// going straight to the backends' own addresses, in the same run (rounds
// interleaved, order alternating), with 1 and 10,000 Services in the maps.
//
//   make build && node dist/bench/socket-lb.js [--services 1,10000] [--count 3000]
//        [--parallel 4] [--rounds 6]
//
// Lab: topology 'st-bsl-' (test/lib/netns.ts) — the client is pod b1
// (198.18.11.2), the Service 198.19.0.1:80 has pods b2 and b3 (echo server on
// 8080), "direct" goes round b2 and b3 connection by connection (--backends 1: b2 only). Every client runs
// in a cgroup made for the run (<cgroup2 mount>/strait-test-benchsock-<pid>), to
// which the socket programs are attached: direct connects pass through the
// connect4 program too (a lookup miss), as they do on a node where socket LB
// covers every process. A third column runs direct outside the cgroup: the cost
// of that miss. Client and servers are bench/socket-lb-load.c (built here into
// build/bench/), so the numbers are the kernel's connection path, not a
// runtime's: P client processes, each connect → one line → reply → close.
import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { IPPROTO_TCP, LB_F_REJECT_NO_ENDPOINTS, LB_KIND_CLUSTER_IP, LB_SCOPE_EXTERNAL } from '../src/bpf/abi.js';
import { Dataplane } from '../src/bpf/dataplane.js';
import { SocketLb } from '../src/bpf/socket-lb.js';
import { TestCgroup } from '../test/lib/cgroup.js';
import { REPO_ROOT, hostPort, topology, type Topology } from '../test/lib/netns.js';
import { addService, metric } from '../test/lib/services.js';

interface Args {
  services: number[];
  count: number;
  parallel: number;
  rounds: number;
  /** Backends of the measured Service (1 or 2): pods b2[, b3]. */
  backends: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { services: [1, 10_000], count: 20_000, parallel: 2, rounds: 6, backends: 2 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1] ?? '';
    if (flag === '--services') args.services = value.split(',').map(Number);
    else if (flag === '--count') args.count = Number(value);
    else if (flag === '--parallel') args.parallel = Number(value);
    else if (flag === '--rounds') args.rounds = Number(value);
    else if (flag === '--backends') args.backends = Number(value);
    else if (flag === '--help') {
      console.log('usage: socket-lb.js [--services 1,10000] [--count N] [--parallel P] [--rounds R] [--backends 1|2]');
      process.exit(0);
    } else continue;
    i++;
  }
  return args;
}

const PORT = 8080;
const LOAD_SRC = join(REPO_ROOT, 'bench', 'socket-lb-load.c');
const LOAD_BIN = join(REPO_ROOT, 'build', 'bench', 'socket-lb-load');

/** What socket-lb-load client prints. */
interface LoadResult {
  ok: number;
  failed: number;
  firstErrno: number;
  elapsedNs: number;
  latNs: number[];
}
const VIP = '198.19.0.1';
/** Filler Service i (i ≥ 1): 198.19.1.0 upwards, never used for traffic. */
const fillerVip = (i: number): string => `198.19.${1 + ((i >> 8) & 255)}.${i & 255}`;

/** Services 2..n: each with two backends (addresses repeat: only map contents matter). */
function fill(dp: Dataplane, from: number, to: number, topo: Topology): void {
  const svc = [];
  const slots = [];
  const backends = [];
  const revnat = [];
  for (let i = from; i < to; i++) {
    const id = 1000 + i;
    svc.push([
      { addr: fillerVip(i), port: 80, proto: IPPROTO_TCP, scope: LB_SCOPE_EXTERNAL },
      { serviceId: id, backendCount: 2, revNatId: id, affinityTimeout: 0, flags: LB_F_REJECT_NO_ENDPOINTS, kind: LB_KIND_CLUSTER_IP, algorithm: 0 },
    ] as const);
    revnat.push([id, { addr: fillerVip(i), port: 80 }] as const);
    for (let s = 1; s <= 2; s++) {
      const backendId = 100_000 + i * 2 + s;
      const b = topo.backends[s]!;
      backends.push([backendId, { addr: b.addr4, nodeAddr: '0.0.0.0', port: PORT, proto: IPPROTO_TCP, state: 0, flags: 0, zone: 0 }] as const);
      slots.push([{ serviceId: id, slot: s }, { backendId }] as const);
    }
  }
  dp.maps.backends4.batchUpdate(backends);
  dp.maps.serviceSlots.batchUpdate(slots);
  dp.maps.revnat4.batchUpdate(revnat);
  dp.maps.services4.batchUpdate(svc);
}

type Mode = 'vip' | 'direct' | 'direct-outside';

interface Sample {
  ok: number;
  failed: number;
  ms: number;
  latencies: number[];
  /** Per round: connections per second, p50 and p99 (ms) of that run. */
  rounds: { rate: number; p50: number; p99: number }[];
}

interface Row {
  services: number;
  mode: Mode;
  /** Pooled over every round. */
  connPerSec: number;
  p50: number;
  p99: number;
  failed: number;
  /** Median over rounds of this mode's value / direct's in the same round (1 = equal). */
  rateVsDirect: number;
  p50VsDirect: number;
  p99VsDirect: number;
}

/** Latency of the VIP and the direct path from one interleaved client run per round. */
interface Interleaved {
  services: number;
  vipP50: number;
  vipP99: number;
  directP50: number;
  directP99: number;
  /** Median over rounds of VIP / direct within the round. */
  p50Ratio: number;
  p99Ratio: number;
  connections: number;
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

function median(xs: number[]): number {
  return percentile([...xs].sort((a, b) => a - b), 0.5);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('the socket-LB bench needs root (namespaces, BPF, cgroups)');
  const root = join('/sys/fs/bpf', `strait-bench-sock-${process.pid}`);
  const cgroup = TestCgroup.create('strait-test-benchsock-');
  let topo: Topology | undefined;
  let dp: Dataplane | undefined;
  let sock: SocketLb | undefined;
  const rows: Row[] = [];
  const interleaved: Interleaved[] = [];
  try {
    topo = await topology('st-bsl-', { backends: 3 });
    const t = topo;
    const client = t.backends[0]!;
    // many short connections from one address: reuse TIME_WAIT ports, as a busy client does
    await t.lab.sysctls(client.ns, { 'net.ipv4.tcp_tw_reuse': 1, 'net.ipv4.ip_local_port_range': '1024 65000' });
    mkdirSync(join(REPO_ROOT, 'build', 'bench'), { recursive: true });
    execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', LOAD_BIN, LOAD_SRC], { stdio: 'inherit' });
    for (const b of t.backends.slice(1)) {
      await t.lab.spawn(b.ns, LOAD_BIN, ['server', '--port', String(PORT)], { label: `load server in ${b.ns}` }).waitForLine('ready');
    }
    const maxServices = Math.max(...args.services);
    dp = Dataplane.open({
      bpfRoot: root,
      mapSizes: {
        services4: maxServices + 1024,
        service_slots: 2 * maxServices + 1024,
        backends4: 2 * maxServices + 1024,
        revnat4: maxServices + 1024,
        ct4: 65536,
        ct6: 1024,
        sock_revnat4: 262144,
        sock_revnat6: 1024,
      },
    });
    sock = SocketLb.open({ dataplane: dp, destroyObjectPath: null });
    sock.attach(cgroup.path);
    addService(dp, {
      id: 1,
      vip: VIP,
      port: 80,
      proto: 'tcp',
      backends: t.backends.slice(1, 1 + args.backends).map((b, i) => ({ id: 10 + i, addr: b.addr4, port: PORT })),
    });

    let loaded = 1;
    for (const services of args.services) {
      if (services > loaded) {
        fill(dp, loaded, services, t);
        loaded = services;
      }
      const samples: Record<Mode, Sample> = {
        vip: { ok: 0, failed: 0, ms: 0, latencies: [], rounds: [] },
        direct: { ok: 0, failed: 0, ms: 0, latencies: [], rounds: [] },
        'direct-outside': { ok: 0, failed: 0, ms: 0, latencies: [], rounds: [] },
      };
      const xlate0 = metric(dp, 'sock_xlate', 'egress');
      for (let r = 0; r < args.rounds; r++) {
        const direct = t.backends.slice(1, 1 + args.backends).map((b) => hostPort(b.addr4, PORT));
        const runs: [Mode, string[], boolean][] = [
          ['vip', [hostPort(VIP, 80)], true],
          ['direct', direct, true],
          ['direct-outside', direct, false],
        ];
        if (r % 2 === 1) runs.reverse();
        for (const [mode, to, inCgroup] of runs) {
          const argv = ['client', ...to.flatMap((a) => ['--to', a]), '--count', String(args.count), '--parallel', String(args.parallel)];
          if (inCgroup) argv.push('--cgroup', cgroup.reachablePath);
          const out = await t.lab.exec(client.ns, LOAD_BIN, argv, { timeoutMs: 120_000, check: true });
          const s = JSON.parse(out.stdout) as LoadResult;
          if (s.failed > 0) console.error(`${mode} ${to}: ${s.failed} failed, first errno ${s.firstErrno}`);
          const acc = samples[mode];
          acc.ok += s.ok;
          acc.failed += s.failed;
          acc.ms += s.elapsedNs / 1e6;
          const lat = s.latNs.map((ns) => ns / 1e6);
          for (const l of lat) acc.latencies.push(l);
          lat.sort((a, b) => a - b);
          acc.rounds.push({ rate: s.ok / (s.elapsedNs / 1e9), p50: percentile(lat, 0.5), p99: percentile(lat, 0.99) });
        }
      }
      // Interleaved: one client run whose connections alternate VIP, backend, VIP, backend
      // (load-common.h: connection i goes to target (i / P) % targets), so both paths see
      // the same moments of a shared machine; latencies split by path afterwards.
      const inter = { vip: [] as number[], direct: [] as number[], rounds: [] as { p50: number; p99: number }[] };
      for (let r = 0; r < args.rounds; r++) {
        const to = t.backends.slice(1, 1 + args.backends).flatMap((b) => [hostPort(VIP, 80), hostPort(b.addr4, PORT)]);
        const argv = ['client', ...to.flatMap((a) => ['--to', a]), '--count', String(2 * args.count), '--parallel', String(args.parallel), '--cgroup', cgroup.reachablePath];
        const out = await t.lab.exec(client.ns, LOAD_BIN, argv, { timeoutMs: 240_000, check: true });
        const s = JSON.parse(out.stdout) as LoadResult;
        // latNs lists successful connections only: with a failure the split by index is off.
        if (s.failed > 0) throw new Error(`interleaved round ${r}: ${s.failed} connections failed (first errno ${s.firstErrno})`);
        const vip: number[] = [];
        const direct: number[] = [];
        s.latNs.forEach((ns, i) => (Math.floor(i / args.parallel) % to.length) % 2 === 0 ? vip.push(ns / 1e6) : direct.push(ns / 1e6));
        inter.vip.push(...vip);
        inter.direct.push(...direct);
        vip.sort((a, b) => a - b);
        direct.sort((a, b) => a - b);
        inter.rounds.push({ p50: percentile(vip, 0.5) / percentile(direct, 0.5), p99: percentile(vip, 0.99) / percentile(direct, 0.99) });
      }
      inter.vip.sort((a, b) => a - b);
      inter.direct.sort((a, b) => a - b);
      interleaved.push({
        services,
        vipP50: percentile(inter.vip, 0.5),
        vipP99: percentile(inter.vip, 0.99),
        directP50: percentile(inter.direct, 0.5),
        directP99: percentile(inter.direct, 0.99),
        p50Ratio: median(inter.rounds.map((x) => x.p50)),
        p99Ratio: median(inter.rounds.map((x) => x.p99)),
        connections: inter.vip.length + inter.direct.length,
      });

      const translated = metric(dp, 'sock_xlate', 'egress') - xlate0;
      if (translated < BigInt(samples.vip.ok)) throw new Error(`only ${translated} connects translated for ${samples.vip.ok} through the VIP`);
      const direct = samples.direct.rounds;
      const vsDirect = (m: Sample, k: 'rate' | 'p50' | 'p99'): number => median(m.rounds.map((x, i) => x[k] / (direct[i]?.[k] ?? NaN)));
      for (const mode of ['vip', 'direct', 'direct-outside'] as const) {
        const s = samples[mode];
        const lat = s.latencies.sort((a, b) => a - b);
        rows.push({
          services,
          mode,
          connPerSec: (s.ok / s.ms) * 1000,
          p50: percentile(lat, 0.5),
          p99: percentile(lat, 0.99),
          failed: s.failed,
          rateVsDirect: vsDirect(s, 'rate'),
          p50VsDirect: vsDirect(s, 'p50'),
          p99VsDirect: vsDirect(s, 'p99'),
        });
      }
    }
  } finally {
    sock?.close();
    dp?.close();
    Dataplane.destroy(root);
    rmSync(root, { recursive: true, force: true });
    await topo?.destroy();
    cgroup.destroy();
  }

  const pct = (x: number): string => `${(x * 100).toFixed(1)}%`;
  const f3 = (x: number): string => x.toFixed(3);
  console.log(`\nsocket LB: TCP connect + one request + close, pod → ClusterIP (${args.backends} backends) vs pod → backend`);
  console.log(`${args.rounds} rounds × ${args.count} connections per path, ${args.parallel} client processes (bench/socket-lb-load.c);`);
  console.log('"vs direct": median over rounds of the ratio to direct-in-the-cgroup measured in the same round\n');
  console.log('| Services | path | conn/s | vs direct | p50 ms | vs direct | p99 ms | vs direct | failed |');
  console.log('|---:|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const path = r.mode === 'vip' ? 'ClusterIP (socket LB)' : r.mode === 'direct' ? 'direct, in the cgroup' : 'direct, outside the cgroup';
    console.log(
      `| ${r.services} | ${path} | ${Math.round(r.connPerSec)} | ${pct(r.rateVsDirect)} | ${f3(r.p50)} | ${pct(r.p50VsDirect)} | ${f3(r.p99)} | ${pct(r.p99VsDirect)} | ${r.failed} |`,
    );
  }
  console.log('\ninterleaved: one client run per round alternating ClusterIP and direct connections (both in the cgroup);');
  console.log('"VIP / direct": median over rounds of the ratio within the round\n');
  console.log('| Services | connections | ClusterIP p50 ms | direct p50 ms | VIP / direct p50 | ClusterIP p99 ms | direct p99 ms | VIP / direct p99 |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of interleaved) {
    console.log(
      `| ${r.services} | ${r.connections} | ${f3(r.vipP50)} | ${f3(r.directP50)} | ${pct(r.p50Ratio)} | ${f3(r.vipP99)} | ${f3(r.directP99)} | ${pct(r.p99Ratio)} |`,
    );
  }
  console.log(`\n${JSON.stringify({ bench: 'socket-lb', args, rows, interleaved })}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
