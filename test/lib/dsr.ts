// Fixtures of the DSR / MTU / XDP BPF tests (test/bpf/dsr, mtu, xdp): the
// node facts with NODE_MODE_DSR, the MTU hook of the test objects
// (bpf/lib/dsr.h dsr_test), two "nodes" (an entry node and the backend's
// node, each a bpf root of its own) and the checks every encapsulated frame
// must pass.
import { expect } from 'vitest';
import { u32Codec, NODE_MODE_DSR, IPPROTO_TCP, IPPROTO_UDP } from '../../src/bpf/abi.js';
import { struct, u32, type CodecValue } from '../../src/bpf/codec.js';
import type { Dataplane } from '../../src/bpf/dataplane.js';
import { planOf, type BpfHarness } from './bpf-harness.js';
import { FIB_IFINDEX, NEXT_HOP_MAC, SNAT_MAX, SNAT_MIN, UPLINK_MAC, clearSnat, mockFib } from './north-south.js';
import { ipPacketOf, parseFrame, parseIpPacket, type ParsedFrame, type ParsedPacket } from './packet.js';

/** IPIP / IPv6-in-IPv6 protocol numbers. */
export const IPPROTO_IPIP = 4;
export const IPPROTO_IPV6 = 41;
export const DSR_OVERHEAD = { 4: 20, 6: 40 } as const;

/** bpf/lib/dsr.h struct dsr_test_entry. */
export const dsrTestEntry = struct('dsr_test_entry', { mtu: u32, restore: u32 });
export type DsrTestEntry = CodecValue<typeof dsrTestEntry>;

/** Make every device and route of the test objects have this MTU (0: the real ones). */
export function setTestMtu(dp: Dataplane, mtu: number): void {
  const m = dp.map('dsr_test', u32Codec, dsrTestEntry);
  try {
    m.update(0, { mtu, restore: 0 });
  } finally {
    m.close();
  }
}

export interface DsrNodeSpec {
  addr4: string;
  addr6: string;
  /** NODE_MODE_DSR; default true. */
  dsr?: boolean;
}

/** The `config` entry of a node with DSR on (and a SNAT range, so that non-DSR flows are SNATed as usual). */
export function setDsrNodeConfig(dp: Dataplane, spec: DsrNodeSpec): void {
  dp.maps.config.update(0, {
    addr4: spec.addr4,
    addr6: spec.addr6,
    uplinkIfindex: [FIB_IFINDEX, 0, 0, 0],
    modes: spec.dsr === false ? 0 : NODE_MODE_DSR,
    nodeportMin: 30000,
    nodeportMax: 32767,
    snatPortMin: SNAT_MIN,
    snatPortMax: SNAT_MAX,
  });
}

/**
 * Between tests: node `n` of the pair (1 the entry node, 2 the backend's
 * node, at planOf(f).node(n)) with no flows, SNAT or DSR state, DSR on and
 * the FIB mock answering success.
 */
export function resetDsrNode(h: BpfHarness, n: 1 | 2): void {
  h.clearFlows();
  clearSnat(h.dp);
  h.dp.maps.dsrRevnat4.clear();
  h.dp.maps.dsrRevnat6.clear();
  setDsrNodeConfig(h.dp, { addr4: planOf(4).node(n), addr6: planOf(6).node(n) });
  mockFib(h.dp);
}

export const l4Number = (proto: 'tcp' | 'udp'): number => (proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP);

export interface Encapsulated {
  outer: ParsedFrame;
  inner: ParsedPacket;
}

/**
 * Asserts `out` is `original` (an Ethernet frame) encapsulated by DSR from
 * `from` to `to`: MACs from the mocked FIB, a fresh outer header (IPIP /
 * IPv6-in-IPv6, TTL 64, DF, right lengths and header checksum, the inner
 * TOS / traffic class and flow label), and the inner packet byte for byte
 * the original one.
 */
export function expectEncapsulated(out: Buffer, original: Buffer, from: string, to: string): Encapsulated {
  const outer = parseFrame(out);
  const innerBytes = ipPacketOf(original);
  const family = outer.ip.version;
  expect(outer.eth.dst, 'next hop MAC (FIB)').toBe(NEXT_HOP_MAC);
  expect(outer.eth.src, 'uplink MAC (FIB)').toBe(UPLINK_MAC);
  expect(outer.ip.src, 'outer source: this node').toBe(from);
  expect(outer.ip.dst, 'outer destination: the backend').toBe(to);
  expect(outer.ip.proto, 'outer protocol').toBe(family === 4 ? IPPROTO_IPIP : IPPROTO_IPV6);
  expect(outer.ip.ttl, 'outer TTL').toBe(64);
  expect(outer.ip.totalLength, 'outer length').toBe(innerBytes.length + DSR_OVERHEAD[family]);
  expect(out.length, 'frame length').toBe(original.length + DSR_OVERHEAD[family]);
  const orig = parseFrame(original);
  expect(outer.ip.tos, 'TOS / traffic class kept').toBe(orig.ip.tos);
  if (family === 4) {
    expect(outer.ip.headerChecksumOk, 'outer header checksum').toBe(true);
    expect(outer.ip.flags.df, 'outer DF').toBe(true);
    expect(outer.ip.isFragment).toBe(false);
  } else {
    expect(outer.ip.flowLabel, 'flow label kept').toBe(orig.ip.flowLabel);
    expect(outer.ip.extHeaders).toEqual([]);
  }
  expect(outer.payload.equals(innerBytes), 'inner packet unchanged').toBe(true);
  const inner = parseIpPacket(outer.payload);
  expect(inner.l4.checksumStatus, 'inner L4 checksum').toBe('ok');
  return { outer, inner };
}

/** The frame of an IP packet, with the given MACs. */
export function frameOf(ipPacket: Buffer, family: 4 | 6, srcMac = NEXT_HOP_MAC, dstMac = UPLINK_MAC): Buffer {
  const eth = Buffer.alloc(14);
  Buffer.from(dstMac.split(':').map((h) => parseInt(h, 16))).copy(eth, 0);
  Buffer.from(srcMac.split(':').map((h) => parseInt(h, 16))).copy(eth, 6);
  eth.writeUInt16BE(family === 4 ? 0x0800 : 0x86dd, 12);
  return Buffer.concat([eth, ipPacket]);
}
