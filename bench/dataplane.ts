// Dataplane benchmark: ns per packet of the tc ingress program under
// BPF_PROG_TEST_RUN, for a flow's first packet and for an established flow, with
// 1, 1,000 and 100,000 Services in the maps, beside an empty tc program (the
// floor) measured the same way in the same run.
//
//   make bench                      # all sizes, defaults below
//   node dist/bench/dataplane.js --services 1,1000,100000 --repeat 1000000 --rounds 7 --first 20000
//
// "established" runs one packet `repeat` times in the kernel (the kernel's mean). The kernel
// reruns the program on the bytes the previous run left, so a packet DNATed to another address
// would take the lookup-miss path from its second run on. The measured Service therefore has a
// partner: A = VIP:80 whose backends are B:8080, and B = a frontend at B:8080 whose backends
// are VIP:80. A packet C -> A becomes C -> B (address, port and both checksums rewritten),
// the next run translates it back to C -> A through B's established flow, and so on: every run
// does the whole established work on a real rewrite. Both flows are opened first (SYN), the
// verdict, the service_dnat counter and the bytes after an even number of runs are checked;
// "first packet" needs a new flow every run, so it makes `first` calls of one run
// each with a fresh source port and averages the kernel-measured durations; the
// floor is measured both ways so the two columns compare like with like.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Dataplane } from '../src/bpf/dataplane.js';
import { progTestRun, skbContext } from '../src/bpf/test-run.js';
import { IPPROTO_TCP, LB_F_REJECT_NO_ENDPOINTS, LB_KIND_CLUSTER_IP, LB_SCOPE_EXTERNAL } from '../src/bpf/abi.js';
import { packageRoot } from '../src/bpf/native.js';
import { loadObject } from '../src/bpf/object.js';
import { ipv4Tcp } from '../test/lib/packet.js';

interface Args {
  services: number[];
  repeat: number;
  first: number;
  backendsPerService: number;
  rounds: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { services: [1, 1000, 100000], repeat: 1_000_000, first: 20_000, backendsPerService: 2, rounds: 7 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1] ?? '';
    if (flag === '--services') args.services = value.split(',').map(Number);
    else if (flag === '--repeat') args.repeat = Number(value);
    else if (flag === '--first') args.first = Number(value);
    else if (flag === '--backends') args.backendsPerService = Number(value);
    else if (flag === '--rounds') args.rounds = Number(value);
    else if (flag === '--help') {
      console.log('usage: dataplane.js [--services 1,1000,100000] [--repeat N] [--rounds N] [--first N] [--backends N]');
      process.exit(0);
    } else continue;
    i++;
  }
  return args;
}

// Frontend i: 198.19.0.0/16 address, the port moves on every 65,536 Services.
const vip = (i: number): string => `198.19.${(i >> 8) & 255}.${i & 255}`;
const vipPort = (i: number): number => 80 + (i >> 16);
const CLIENT = '198.18.0.2';
/** The measured Service's partner frontend (outside the vip() range), see the top comment. */
const PARTNER = '198.18.100.1';
const PARTNER_PORT = 8080;

/**
 * `services` frontends (at least the pair): vip(0..services-2) with `perService` backends each,
 * and the partner of Service `target` (see the top comment), the frontend
 * PARTNER:PARTNER_PORT at index services-1, whose backends are
 * vip(target):vipPort(target), while Service `target`'s backends are the partner. Every other
 * Service's backends are on their own VIP:port (never reached by the bench's packets).
 */
function fill(dp: Dataplane, services: number, perService: number, target: number): void {
  const svc = [];
  const slots = [];
  const backends = [];
  const revnat = [];
  const frontend = (i: number): { addr: string; port: number } =>
    i === services - 1 ? { addr: PARTNER, port: PARTNER_PORT } : { addr: vip(i), port: vipPort(i) };
  const backendOf = (i: number): { addr: string; port: number } =>
    i === target ? frontend(services - 1) : i === services - 1 ? frontend(target) : frontend(i);
  for (let i = 0; i < services; i++) {
    const id = i + 1;
    const fe = frontend(i);
    const be = backendOf(i);
    svc.push([
      { addr: fe.addr, port: fe.port, proto: IPPROTO_TCP, scope: LB_SCOPE_EXTERNAL },
      { serviceId: id, backendCount: perService, revNatId: id, affinityTimeout: 0, flags: LB_F_REJECT_NO_ENDPOINTS, kind: LB_KIND_CLUSTER_IP, algorithm: 0 },
    ] as const);
    revnat.push([id, { addr: fe.addr, port: fe.port }] as const);
    for (let s = 1; s <= perService; s++) {
      const backendId = i * perService + s;
      backends.push([backendId, { addr: be.addr, nodeAddr: '0.0.0.0', port: be.port, proto: IPPROTO_TCP, state: 0, flags: 0, zone: 0 }] as const);
      slots.push([{ serviceId: id, slot: s }, { backendId }] as const);
    }
  }
  // Hitless order: backends, slots, then the service entries.
  dp.maps.backends4.batchUpdate(backends);
  dp.maps.serviceSlots.batchUpdate(slots);
  dp.maps.revnat4.batchUpdate(revnat);
  dp.maps.services4.batchUpdate(svc);
}

function packet(i: number, sport: number, flags: { syn?: boolean; ack?: boolean }): Buffer {
  return ipv4Tcp({ src: CLIENT, dst: vip(i), sport, dport: vipPort(i), flags, seq: 1, ack: flags.ack ? 1 : 0, payload: '' });
}

function partnerPacket(sport: number, flags: { syn?: boolean; ack?: boolean }): Buffer {
  return ipv4Tcp({ src: CLIENT, dst: PARTNER, sport, dport: PARTNER_PORT, flags, seq: 1, ack: flags.ack ? 1 : 0, payload: '' });
}

/** Packets counted as service_dnat (ingress), summed over CPUs. */
function dnatCount(dp: Dataplane): number {
  return Number(dp.readMetrics().find((m) => m.reason === 'service_dnat' && m.dir === 'ingress')?.packets ?? 0n);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

function meanSingleRuns(fd: number, count: number, make: (n: number) => Buffer, ctx: Buffer): number {
  let total = 0;
  for (let n = 0; n < count; n++) total += progTestRun(fd, { data: make(n), ctx, repeat: 1 }).durationNs;
  return total / count;
}

interface Row {
  services: number;
  floorRepeat: number;
  established: number;
  floorSingle: number;
  firstPacket: number;
}

function measure(args: Args, services: number, floorFd: number): Row {
  const root = join('/sys/fs/bpf', `strait-bench-${process.pid}-${services}`);
  Dataplane.destroy(root);
  const dp = Dataplane.open({
    bpfRoot: root,
    mapSizes: { ct4: 262144, ct6: 1024, frag4: 1024, frag6: 1024, snat4: 1024, snat6: 1024, affinity4: 1024, affinity6: 1024 },
  });
  try {
    const frontends = Math.max(services, 2);
    const target = Math.floor((frontends - 1) / 2);
    fill(dp, frontends, args.backendsPerService, target);
    const prog = dp.program('strait_tc_ingress').fd;
    const ctx = skbContext({ ifindex: 1 });
    // Established: open both flows of the pair with a SYN each, then time ACKs that bounce
    // between them (an even repeat count ends on the bytes it started from).
    for (const syn of [packet(target, 40000, { syn: true }), partnerPacket(40000, { syn: true })]) {
      const first = progTestRun(prog, { data: syn, ctx });
      if (first.retval !== 0) throw new Error(`SYN of the measured pair returned ${first.retval}, expected TC_ACT_OK`);
    }
    const ack = packet(target, 40000, { ack: true });
    const once = progTestRun(prog, { data: ack, ctx });
    if (!once.data.equals(partnerPacket(40000, { ack: true }))) {
      throw new Error('an ACK to the measured Service did not come out as the same ACK to its partner: not the DNAT path');
    }
    const repeat = args.repeat + (args.repeat % 2);
    // Rounds alternate program and floor so frequency changes and neighbours hit both alike.
    const est: number[] = [];
    const flo: number[] = [];
    const dnatBefore = dnatCount(dp);
    for (let r = 0; r < args.rounds; r++) {
      const run = progTestRun(prog, { data: ack, ctx, repeat });
      if (run.retval !== 0) throw new Error(`established run ${r} ended with verdict ${run.retval}, not TC_ACT_OK: not the translated path`);
      if (!run.data.equals(ack)) throw new Error(`established run ${r}: ${repeat} rewrites did not give the packet back (addresses, ports or checksums)`);
      est.push(run.durationNs);
      flo.push(progTestRun(floorFd, { data: ack, ctx, repeat }).durationNs);
    }
    const translated = dnatCount(dp) - dnatBefore;
    if (translated !== args.rounds * repeat) {
      throw new Error(`${translated} of ${args.rounds * repeat} established runs were translated: the bench measured another path`);
    }
    const established = median(est);
    const floorRepeat = median(flo);
    // First packets: a new source port (and so a new flow) per run.
    const firstPacket = meanSingleRuns(prog, args.first, (n) => packet(target, 1024 + (n % 60000), { syn: true }), ctx);
    const floorSingle = meanSingleRuns(floorFd, args.first, (n) => packet(target, 1024 + (n % 60000), { syn: true }), ctx);
    return { services: frontends, floorRepeat, established, floorSingle, firstPacket };
  } finally {
    dp.close();
    Dataplane.destroy(root);
    rmSync(root, { recursive: true, force: true });
  }
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const floorRoot = join('/sys/fs/bpf', `strait-bench-${process.pid}-floor`);
  const floor = loadObject({ file: join(packageRoot(), 'build', 'bpf', 'empty_tc.o'), bpfRoot: floorRoot, onIncompatiblePin: 'replace' });
  const rows: Row[] = [];
  try {
    const floorFd = floor.programs.get('empty_tc');
    if (floorFd === undefined) throw new Error('empty_tc.o has no program empty_tc');
    for (const n of args.services) rows.push(measure(args, n, floorFd));
  } finally {
    floor.close();
    rmSync(floorRoot, { recursive: true, force: true });
  }
  const base = rows[0];
  const f = (x: number): string => x.toFixed(1);
  console.log(`\nstrait tc ingress, BPF_PROG_TEST_RUN, IPv4 TCP, ${args.backendsPerService} backends/Service`);
  console.log(`established: median of ${args.rounds} rounds of repeat ${args.repeat}; first packet: ${args.first} single runs\n`);
  console.log('| Services | empty tc (repeat) | established ns/pkt | vs 1 Service | empty tc (single) | first packet ns/pkt | vs 1 Service |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const e = base ? `${f((r.established / base.established - 1) * 100)}%` : '';
    const p = base ? `${f((r.firstPacket / base.firstPacket - 1) * 100)}%` : '';
    console.log(`| ${r.services} | ${f(r.floorRepeat)} | ${f(r.established)} | ${e} | ${f(r.floorSingle)} | ${f(r.firstPacket)} | ${p} |`);
  }
  console.log(`\n${JSON.stringify({ bench: 'dataplane', args, rows })}`);
}

main();
