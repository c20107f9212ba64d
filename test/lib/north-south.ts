// Fixtures of the north-south BPF tests (test/bpf/snat, source-ranges,
// etp-local): the node facts in the `config` map, and the FIB mock of
// strait_tc_test.o (bpf/lib/fib.h STRAIT_TEST_HOOKS), since under
// BPF_PROG_TEST_RUN bpf_fib_lookup() would consult the routes of whatever
// namespace runs the test.
import { bytes, struct, u32, type CodecValue } from '../../src/bpf/codec.js';
import { u32Codec } from '../../src/bpf/abi.js';
import type { Dataplane } from '../../src/bpf/dataplane.js';
import type { BpfHarness } from './bpf-harness.js';
import { PLAN4, PLAN6, formatIp } from './packet.js';

/** This node's addresses: the SNAT source and the NodePort frontend. */
export const NODE = { 4: PLAN4.node(1), 6: PLAN6.node(1) } as const;
/** What the mocked FIB answers: out of ifindex 7, from UPLINK_MAC to NEXT_HOP_MAC. */
export const FIB_IFINDEX = 7;
export const UPLINK_MAC = '02:00:00:00:0a:01';
export const NEXT_HOP_MAC = '02:00:00:00:0b:02';
export const SNAT_MIN = 61000;
export const SNAT_MAX = 61999;

/** bpf_fib_lookup() results (uapi enum). */
export const FIB = { SUCCESS: 0, NOT_FWDED: 4, NO_NEIGH: 7, FRAG_NEEDED: 8 } as const;

/** bpf/lib/fib.h struct fib_test_entry. */
export const fibTestEntry = struct('fib_test_entry', {
  ifindex: u32,
  ret: u32,
  smac: bytes(6),
  dmac: bytes(6),
  src: bytes(16),
  dst: bytes(16),
  lookups: u32,
});
export type FibTestEntry = CodecValue<typeof fibTestEntry>;

const macBuf = (mac: string): Buffer => Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));

/** Make the datapath's route lookups answer `ret` (default success) through FIB_IFINDEX. */
export function mockFib(dp: Dataplane, ret: number = FIB.SUCCESS): void {
  const m = dp.map('fib_test', u32Codec, fibTestEntry);
  try {
    m.update(0, {
      ifindex: FIB_IFINDEX,
      ret,
      smac: macBuf(UPLINK_MAC),
      dmac: macBuf(NEXT_HOP_MAC),
      src: Buffer.alloc(16),
      dst: Buffer.alloc(16),
      lookups: 0,
    });
  } finally {
    m.close();
  }
}

/** The last route lookup the datapath made (addresses as text), and how many it made. */
export function lastFibLookup(dp: Dataplane, family: 4 | 6): { src: string; dst: string; lookups: number } {
  const m = dp.map('fib_test', u32Codec, fibTestEntry);
  try {
    const e = m.lookup(0);
    if (!e) throw new Error('fib_test has no entry');
    const n = family === 4 ? 4 : 16;
    return { src: formatIp(e.src.subarray(0, n)), dst: formatIp(e.dst.subarray(0, n)), lookups: e.lookups };
  } finally {
    m.close();
  }
}

export interface NodeConfigSpec {
  addr4?: string;
  addr6?: string;
  snatMin?: number;
  snatMax?: number;
}

/** Writes the `config` entry the agent would: node addresses and the SNAT range. */
export function setNodeConfig(dp: Dataplane, spec: NodeConfigSpec = {}): void {
  dp.maps.config.update(0, {
    addr4: spec.addr4 ?? NODE[4],
    addr6: spec.addr6 ?? NODE[6],
    uplinkIfindex: [FIB_IFINDEX, 0, 0, 0],
    modes: 0,
    nodeportMin: 30000,
    nodeportMax: 32767,
    snatPortMin: spec.snatMin ?? SNAT_MIN,
    snatPortMax: spec.snatMax ?? SNAT_MAX,
  });
}

/** Empties the SNAT maps (between tests; conntrack: BpfHarness.clearFlows). */
export function clearSnat(dp: Dataplane): void {
  dp.maps.snat4.clear();
  dp.maps.snat6.clear();
}

/** Between tests: no flows, no SNAT state, the node's `config` (`spec`) and the FIB mock answering success. */
export function resetNorthSouth(h: BpfHarness, spec: NodeConfigSpec = {}): void {
  h.clearFlows();
  clearSnat(h.dp);
  setNodeConfig(h.dp, spec);
  mockFib(h.dp);
}
