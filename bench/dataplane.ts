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
// would take the lookup-miss path from its second run on: every bench backend is its own
// frontend (backend address:port = VIP:port), so each run does the full established work
// (frontend, conntrack and backend lookups, rewrite, checksums) on an unchanged packet, and the
// run's verdict and the service_dnat counter are checked to prove it;
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

function fill(dp: Dataplane, services: number, perService: number): void {
  const svc = [];
  const slots = [];
  const backends = [];
  const revnat = [];
  for (let i = 0; i < services; i++) {
    const id = i + 1;
    svc.push([
      { addr: vip(i), port: vipPort(i), proto: IPPROTO_TCP, scope: LB_SCOPE_EXTERNAL },
      { serviceId: id, backendCount: perService, revNatId: id, affinityTimeout: 0, flags: LB_F_REJECT_NO_ENDPOINTS, kind: LB_KIND_CLUSTER_IP, algorithm: 0 },
    ] as const);
    revnat.push([id, { addr: vip(i), port: vipPort(i) }] as const);
    for (let s = 1; s <= perService; s++) {
      const backendId = i * perService + s;
      backends.push([backendId, { addr: vip(i), nodeAddr: '0.0.0.0', port: vipPort(i), proto: IPPROTO_TCP, state: 0, flags: 0, zone: 0 }] as const);
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
    fill(dp, services, args.backendsPerService);
    const prog = dp.program('strait_tc_ingress').fd;
    const ctx = skbContext({ ifindex: 1 });
    const target = Math.floor(services / 2);
    // Established: create the flow with a SYN, then time its ACKs.
    const syn = packet(target, 40000, { syn: true });
    const first = progTestRun(prog, { data: syn, ctx });
    if (first.retval !== 0) throw new Error(`SYN to service ${target} returned ${first.retval}, expected TC_ACT_OK`);
    const ack = packet(target, 40000, { ack: true });
    // Rounds alternate program and floor so frequency changes and neighbours hit both alike.
    const est: number[] = [];
    const flo: number[] = [];
    const dnatBefore = dnatCount(dp);
    for (let r = 0; r < args.rounds; r++) {
      const run = progTestRun(prog, { data: ack, ctx, repeat: args.repeat });
      if (run.retval !== 0) throw new Error(`established run ${r} ended with verdict ${run.retval}, not TC_ACT_OK: not the translated path`);
      est.push(run.durationNs);
      flo.push(progTestRun(floorFd, { data: ack, ctx, repeat: args.repeat }).durationNs);
    }
    const translated = dnatCount(dp) - dnatBefore;
    if (translated !== args.rounds * args.repeat) {
      throw new Error(`${translated} of ${args.rounds * args.repeat} established runs were translated: the bench measured another path`);
    }
    const established = median(est);
    const floorRepeat = median(flo);
    // First packets: a new source port (and so a new flow) per run.
    const firstPacket = meanSingleRuns(prog, args.first, (n) => packet(target, 1024 + (n % 60000), { syn: true }), ctx);
    const floorSingle = meanSingleRuns(floorFd, args.first, (n) => packet(target, 1024 + (n % 60000), { syn: true }), ctx);
    return { services, floorRepeat, established, floorSingle, firstPacket };
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
