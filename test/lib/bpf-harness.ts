// The BPF_PROG_TEST_RUN fixture of test/bpf: opens the datapath under a bpf
// root of the test file's own, runs crafted frames through strait_tc_ingress /
// strait_tc_egress and reports, with each run, exactly which counters moved
// (the metrics map read before and after), so every test can assert its
// verdict, its output bytes and its one counted reason together.
//
// Fails loudly without root: BPF tests never skip.
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { type LbSettings } from '../../src/bpf/abi.js';
import { Dataplane, type MetricSample, type TcDirection } from '../../src/bpf/dataplane.js';
import { packageRoot } from '../../src/bpf/native.js';
import { progTestRun } from '../../src/bpf/test-run.js';
import {
  PLAN4,
  PLAN6,
  ipv4Tcp,
  ipv4Udp,
  ipv6Tcp,
  ipv6Udp,
  parseFrame,
  type ChecksumMode,
  type Ipv6ExtHeader,
  type ParsedFrame,
  type TcpFlags,
} from './packet.js';

/** tc verdicts as BPF_PROG_TEST_RUN reports them. */
export const TC_ACT_UNSPEC = -1; // "not ours": TCX_NEXT / default action
export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;
export const TC_ACT_REDIRECT = 7; // bpf_redirect() under test run: nothing moves

export const NS_PER_SEC = 1_000_000_000n;

/** strait_tc.c built with STRAIT_TEST_HOOKS (ct4_race / ct6_race). */
export const TEST_OBJECT = join(packageRoot(), 'build', 'bpf', 'strait_tc_test.o');

/** Small tables: the defaults reserve hundreds of MB of conntrack. */
export const SMALL_MAP_SIZES: Readonly<Record<string, number>> = {
  services4: 1024,
  services6: 1024,
  service_slots: 4096,
  maglev: 16,
  backends4: 4096,
  backends6: 4096,
  revnat4: 1024,
  revnat6: 1024,
  ct4: 4096,
  ct6: 4096,
  frag4: 256,
  snat4: 256,
  snat6: 256,
  affinity4: 256,
  affinity6: 256,
  source_ranges4: 64,
  source_ranges6: 64,
  dsr_revnat4: 256,
  dsr_revnat6: 256,
  xdp_nexthop: 256,
  xdp_flow4: 1024,
  xdp_flow6: 1024,
};

/**
 * Settings every suite runs with: a fixed hash seed (backend choice is then a
 * pure function of flow and slots) and timeouts that differ from one another
 * and from the C defaults, so an entry's lifetime says which one applied.
 * No ICMP rate limit unless a test asks for one.
 */
export const TEST_SETTINGS: LbSettings = {
  ctTcpSynNs: 45n * NS_PER_SEC,
  ctTcpEstablishedNs: 7200n * NS_PER_SEC,
  ctTcpClosingNs: 7n * NS_PER_SEC,
  ctUdpNs: 90n * NS_PER_SEC,
  ctIcmpNs: 20n * NS_PER_SEC,
  fragNs: 2n * NS_PER_SEC,
  hashSeed: 0x5eed_c0de,
  icmpRate: 0,
  icmpBurst: 0,
};

/** One counter that moved during a run. */
export interface Counted {
  reason: string;
  dir: TcDirection;
  packets: bigint;
  bytes: bigint;
}

export interface RunResult {
  /** The tc verdict. */
  retval: number;
  /** The packet as the program left it. */
  data: Buffer;
  /** Every (reason, direction) counter that moved, with by how much. */
  counted: Counted[];
}

export interface HarnessOptions {
  objectPath?: string;
  mapSizes?: Record<string, number>;
  settings?: Partial<LbSettings>;
}

/** What a run of one packet of `frame` counted under `reason`, for toEqual. */
export function countedOnce(reason: string, dir: TcDirection, frame: Buffer): Counted[] {
  return [{ reason, dir, packets: 1n, bytes: BigInt(frame.length) }];
}

function snapshot(dp: Dataplane): Map<string, MetricSample> {
  return new Map(dp.readMetrics().map((m) => [`${m.dir}/${m.reason}`, m]));
}

function diff(before: Map<string, MetricSample>, after: Map<string, MetricSample>): Counted[] {
  const out: Counted[] = [];
  for (const [key, a] of after) {
    const b = before.get(key);
    const packets = a.packets - (b?.packets ?? 0n);
    const bytes = a.bytes - (b?.bytes ?? 0n);
    if (packets !== 0n || bytes !== 0n) out.push({ reason: a.reason, dir: a.dir, packets, bytes });
  }
  return out.sort((x, y) => `${x.dir}/${x.reason}`.localeCompare(`${y.dir}/${y.reason}`));
}

/** Throws unless the process may load BPF programs. */
export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) {
    throw new Error(`${what} needs root (BPF_PROG_TEST_RUN, bpffs pins): run the suite as root`);
  }
}

export class BpfHarness {
  private constructor(
    readonly dp: Dataplane,
    readonly bpfRoot: string,
  ) {}

  /** Opens the datapath under `bpfRoot`, removing whatever an earlier run left there. */
  static open(bpfRoot: string, opts: HarnessOptions = {}): BpfHarness {
    requireRoot(`BPF test (${bpfRoot})`);
    Dataplane.destroy(bpfRoot);
    const dp = Dataplane.open({
      bpfRoot,
      objectPath: opts.objectPath ?? TEST_OBJECT,
      mapSizes: { ...SMALL_MAP_SIZES, ...opts.mapSizes },
      settings: { ...TEST_SETTINGS, ...opts.settings },
    });
    return new BpfHarness(dp, bpfRoot);
  }

  run(dir: TcDirection, frame: Buffer): RunResult {
    const prog = this.dp.program(dir === 'ingress' ? 'strait_tc_ingress' : 'strait_tc_egress');
    const before = snapshot(this.dp);
    const r = progTestRun(prog, { data: frame });
    return { retval: r.retval, data: Buffer.from(r.data), counted: diff(before, snapshot(this.dp)) };
  }

  ingress(frame: Buffer): RunResult {
    return this.run('ingress', frame);
  }

  egress(frame: Buffer): RunResult {
    return this.run('egress', frame);
  }

  /** Every counter of the run so far (for whole-file assertions). */
  metrics(): Counted[] {
    return diff(new Map(), snapshot(this.dp));
  }

  /** Empties conntrack and fragment state between tests (Services stay). */
  clearFlows(): void {
    this.dp.maps.ct4.clear();
    this.dp.maps.ct6.clear();
    this.dp.maps.frag4.clear();
    // frag6 exists once IPv6 fragment tracking is in the object.
    (this.dp.maps as unknown as Partial<Record<string, { clear(): number }>>).frag6?.clear();
    this.clearXdpCaches();
    // Cached rewrites of the flows just forgotten (lib/flowcache.h), as the agent does.
    this.dp.bumpFlowEpoch();
  }

  /** XDP's caches (lib/xdp.h), derived from flows and routes: a test that changes a route mocks clears them. */
  clearXdpCaches(): void {
    this.dp.maps.xdpNexthop.clear();
    this.dp.maps.xdpFlow4.clear();
    this.dp.maps.xdpFlow6.clear();
  }

  /** Closes the maps and removes the bpf root; safe to call after a failed open. */
  static destroy(h: BpfHarness | undefined, bpfRoot: string): void {
    try {
      h?.dp.close();
    } finally {
      Dataplane.destroy(bpfRoot);
    }
  }
}

/**
 * The test file's harness: opened at `bpfRoot` before its tests (then `setup`
 * runs once, e.g. to write the file's Services), destroyed after them. Call at
 * the top of the file; the returned accessor is valid in tests and hooks.
 */
export function useHarness(
  bpfRoot: string,
  setup?: (h: BpfHarness) => void,
  opts: HarnessOptions = {},
): () => BpfHarness {
  let h: BpfHarness | undefined;
  beforeAll(() => {
    h = BpfHarness.open(bpfRoot, opts);
    setup?.(h);
  });
  afterAll(() => BpfHarness.destroy(h, bpfRoot));
  return () => {
    if (!h) throw new Error(`the BPF harness at ${bpfRoot} is not open (outside the file's tests?)`);
    return h;
  };
}

/**
 * Parses a frame and asserts that every checksum it carries is right by
 * independent recomputation: the IPv4 header, and the L4 checksum ('ok', or
 * 'absent' where `udpZero` says an IPv4 UDP checksum of 0 is expected).
 */
export function expectChecksumsOk(frame: Buffer, opts: { udpZero?: boolean } = {}): ParsedFrame {
  const p = parseFrame(frame);
  if (p.ip.version === 4) expect(p.ip.headerChecksumOk, 'IPv4 header checksum').toBe(true);
  expect(p.l4.checksumStatus, `${p.l4.kind} checksum`).toBe(opts.udpZero ? 'absent' : 'ok');
  return p;
}

/** Monotonic now in ns: the clock conntrack deadlines use (CLOCK_MONOTONIC). */
export function monotonicNs(): bigint {
  return process.hrtime.bigint();
}

/**
 * Asserts a conntrack deadline set between `before` and `after` (monotonic ns)
 * is `lifetime` away, within a second either way (the datapath reads the
 * coarse clock, which lags by up to a tick).
 */
export function expectLifetime(expires: bigint, lifetime: bigint, before: bigint, after: bigint): void {
  const slack = NS_PER_SEC;
  expect(expires >= before + lifetime - slack, `expires ${expires} ≥ ${before} + ${lifetime} - 1s`).toBe(true);
  expect(expires <= after + lifetime + slack, `expires ${expires} ≤ ${after} + ${lifetime} + 1s`).toBe(true);
}

// ---------------------------------------------------------------------------
// Frames by family: one vocabulary for the IPv4 and IPv6 halves of a table
// ---------------------------------------------------------------------------

export type Family = 4 | 6;
export type L4Proto = 'tcp' | 'udp';

/** The plan every BPF test file shares: both families, TCP and UDP, and the ports of its Services. */
export const FAMILIES: readonly Family[] = [4, 6];
export const CASES: readonly (readonly [Family, L4Proto])[] = [
  [4, 'tcp'],
  [4, 'udp'],
  [6, 'tcp'],
  [6, 'udp'],
];
export const VIP_PORT: Readonly<Record<L4Proto, number>> = { tcp: 80, udp: 53 };
export const TARGET_PORT: Readonly<Record<L4Proto, number>> = { tcp: 8080, udp: 5353 };

export interface FlowFrame {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** TCP only; default SYN. */
  flags?: Partial<TcpFlags>;
  seq?: number;
  ack?: number;
  payload?: Uint8Array | string;
  checksum?: ChecksumMode;
  /** IPv4 only. */
  ipOptions?: Buffer;
  id?: number;
  /** IPv6 only. */
  extHeaders?: readonly Ipv6ExtHeader[];
}

/** A TCP or UDP frame of either family, every checksum right unless `checksum` says otherwise. */
export function flowFrame(family: Family, proto: L4Proto, f: FlowFrame): Buffer {
  const common = {
    src: f.src,
    dst: f.dst,
    sport: f.sport,
    dport: f.dport,
    ...(f.payload !== undefined ? { payload: f.payload } : {}),
    ...(f.checksum !== undefined ? { checksum: f.checksum } : {}),
  };
  const tcp = { ...common, flags: f.flags ?? { syn: true }, seq: f.seq ?? 1000, ack: f.ack ?? 0 };
  if (family === 4) {
    const ip = { ...(f.ipOptions ? { ipOptions: f.ipOptions } : {}), id: f.id ?? 0x1234 };
    return proto === 'tcp' ? ipv4Tcp({ ...ip, ...tcp }) : ipv4Udp({ ...ip, ...common });
  }
  const ip = f.extHeaders ? { extHeaders: f.extHeaders } : {};
  return proto === 'tcp' ? ipv6Tcp({ ...ip, ...tcp }) : ipv6Udp({ ...ip, ...common });
}

/** The address plan of a family (packet.ts PLAN4 / PLAN6). */
export function planOf(family: Family): typeof PLAN4 {
  return family === 4 ? PLAN4 : PLAN6;
}
