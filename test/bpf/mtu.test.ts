// MTU and DSR (bpf/lib/dsr.h): the outer header must never blackhole a
// full-size packet. The backend's node lowers the MSS the backend announces
// in its SYN-ACK by the encapsulation overhead (the client→backend direction
// is the one tunnelled); the entry node answers a packet that would not fit
// once encapsulated with ICMP fragmentation needed / packet too big carrying
// the reduced MTU, from the frontend, instead of sending it — and the flow
// goes on with smaller packets.
//
// Address plan (IPv4 / IPv6), MTU 1500 everywhere (dsr_test hook):
//   entry node     198.18.2.1            2001:2::3:1
//   backend node   198.18.2.2            2001:2::3:2
//   client         198.18.0.10           2001:2::1:10
//   LoadBalancer   198.19.0.1            2001:2:0:ff::1       LB_F_DSR, :80 / :53
//   backend        198.18.1.1            2001:2::2:1          :80 / :53, on the backend node
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BE_F_LOCAL, LB_F_DSR, LB_F_REJECT_NO_ENDPOINTS, LB_KIND_LOAD_BALANCER } from '../../src/bpf/abi.js';
import {
  CASES,
  FAMILIES,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  VIP_PORT,
  countedOnce,
  expectChecksumsOk,
  flowFrame,
  planOf,
  useHarness,
  type Family,
  type FlowFrame,
  type L4Proto,
} from '../lib/bpf-harness.js';
import { DSR_OVERHEAD, expectEncapsulated, resetDsrNode, setTestMtu } from '../lib/dsr.js';
import { ICMP4, ICMP6, ipPacketOf, ipv4Tcp, ipv6Tcp, parseFrame } from '../lib/packet.js';
import { addService } from '../lib/services.js';

const ENTRY_ROOT = '/sys/fs/bpf/strait-test-mtu-entry';
const BACKEND_ROOT = '/sys/fs/bpf/strait-test-mtu-backend';
const MTU = 1500;
/** Fixed IP + L4 header bytes of a plain packet. */
const HEADERS: Readonly<Record<Family, Record<L4Proto, number>>> = {
  4: { tcp: 40, udp: 28 },
  6: { tcp: 60, udp: 48 },
};

const entry = useHarness(ENTRY_ROOT);
const backendNode = useHarness(BACKEND_ROOT);
const nodeAddr = (f: Family, n: 1 | 2) => planOf(f).node(n);
const backend = (f: Family) => planOf(f).backend(1);
const client = (f: Family) => planOf(f).client(10);
const vip = (f: Family) => planOf(f).vip(1);

beforeAll(() => {
  for (const [f, proto] of CASES) {
    const id = f * 100 + (proto === 'tcp' ? 10 : 50);
    const port = VIP_PORT[proto];
    const spec = { id, vip: vip(f), port, proto, kind: LB_KIND_LOAD_BALANCER, flags: LB_F_REJECT_NO_ENDPOINTS | LB_F_DSR };
    addService(entry().dp, { ...spec, backends: [{ id: id + 1, addr: backend(f), port }] });
    addService(backendNode().dp, { ...spec, backends: [{ id: id + 1, addr: backend(f), port, flags: BE_F_LOCAL }] });
  }
});

beforeEach(() => {
  resetDsrNode(entry(), 1);
  resetDsrNode(backendNode(), 2);
  setTestMtu(entry().dp, MTU);
  setTestMtu(backendNode().dp, MTU);
});

/** A client packet of exactly `l3` IP bytes (DF set on IPv4 unless `df` is false). */
function sized(f: Family, proto: L4Proto, l3: number, sport: number, extra: Partial<FlowFrame> & { df?: boolean } = {}): Buffer {
  const payload = Buffer.alloc(l3 - HEADERS[f][proto], 0x61);
  const frame = flowFrame(f, proto, { src: client(f), dst: vip(f), sport, dport: VIP_PORT[proto], payload, ...extra });
  if (f === 4 && extra.df !== false) {
    // DF: flags byte 6 of the IPv4 header; fix the header checksum
    frame[14 + 6] = (frame[14 + 6] ?? 0) | 0x40;
    frame.writeUInt16BE(0, 14 + 10);
    let sum = 0;
    for (let i = 14; i < 34; i += 2) sum += frame.readUInt16BE(i);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    frame.writeUInt16BE(~sum & 0xffff, 14 + 10);
  }
  expect(ipPacketOf(frame).length).toBe(l3);
  return frame;
}

describe('entry node: a packet too big once encapsulated', () => {
  it.each(CASES)('IPv%i %s: a full-size packet is answered with frag needed / packet too big (MTU - overhead), from the frontend', (f, proto) => {
    const input = sized(f, proto, MTU, 41000);
    const r = entry().ingress(input);
    expect(r.retval, 'sent back out of its device').toBe(TC_ACT_REDIRECT);
    expect(r.counted).toEqual(countedOnce('frag_needed_reply', 'ingress', input));
    const out = parseFrame(r.data);
    expect(out.ip.src).toBe(vip(f));
    expect(out.ip.dst).toBe(client(f));
    expect(out.l4.checksumStatus, 'ICMP checksum').toBe('ok');
    if (f === 4) {
      expect(out.ip.headerChecksumOk).toBe(true);
      expect(out.l4.icmp).toMatchObject({ type: ICMP4.DEST_UNREACH, code: 4, mtu: MTU - DSR_OVERHEAD[4] });
    } else {
      expect(out.l4.icmp).toMatchObject({ type: ICMP6.PACKET_TOO_BIG, code: 0, mtu: MTU - DSR_OVERHEAD[6] });
    }
    // the quote is the client's packet as sent
    const quoted = out.l4.icmp?.embedded;
    expect(quoted?.ip.src).toBe(client(f));
    expect(quoted?.ip.dst).toBe(vip(f));
    expect(quoted?.l4.sport).toBe(41000);
    expect(quoted?.l4.dport).toBe(VIP_PORT[proto]);
  });

  it.each(CASES)('IPv%i %s: the largest packet that fits (MTU - overhead) is encapsulated', (f, proto) => {
    const input = sized(f, proto, MTU - DSR_OVERHEAD[f], 41001);
    const r = entry().ingress(input);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    expect(r.counted).toEqual(countedOnce('dsr_encap', 'ingress', input));
    const { outer } = expectEncapsulated(r.data, input, nodeAddr(f, 1), backend(f));
    expect(outer.ip.totalLength).toBe(MTU);
  });

  it.each(FAMILIES)('IPv%i udp: the flow goes on once the client sends smaller datagrams', (f) => {
    expect(entry().ingress(sized(f, 'udp', MTU, 41002)).counted[0]?.reason).toBe('frag_needed_reply');
    const smaller = sized(f, 'udp', MTU - DSR_OVERHEAD[f], 41002);
    const r = entry().ingress(smaller);
    expect(r.counted).toEqual(countedOnce('dsr_encap', 'ingress', smaller));
    expectEncapsulated(r.data, smaller, nodeAddr(f, 1), backend(f));
  });

  it('IPv4 udp without DF: answered all the same (the inner packet cannot be fragmented here, nor the outer one decapsulated in pieces)', () => {
    const input = sized(4, 'udp', MTU, 41003, { df: false });
    expect(parseFrame(input).ip.flags.df).toBe(false);
    const r = entry().ingress(input);
    expect(r.counted).toEqual(countedOnce('frag_needed_reply', 'ingress', input));
    expect(parseFrame(r.data).l4.icmp).toMatchObject({ type: ICMP4.DEST_UNREACH, code: 4, mtu: MTU - DSR_OVERHEAD[4] });
  });
});

/** Raw TCP options with MSS `mss` after `nops` NOPs, then `tail`. */
function mssOption(mss: number, nops = 0, tail: number[] = []): Buffer {
  return Buffer.from([...Array<number>(nops).fill(1), 2, 4, mss >> 8, mss & 0xff, ...tail]);
}

/** The backend's TCP segment to the client's port `dport`, with raw options. */
function backendTcp(f: Family, dport: number, flags: { syn?: boolean; ack?: boolean }, tcpOptions: Buffer): Buffer {
  const o = { src: backend(f), dst: client(f), sport: 80, dport, flags, seq: 5000, ack: 1001, tcpOptions };
  return f === 4 ? ipv4Tcp(o) : ipv6Tcp(o);
}

function mssOf(frame: Buffer): number | undefined {
  const p = parseFrame(frame);
  const opts = frame.subarray(p.offsets.l4 + 20, p.offsets.l4 + p.l4.dataOffset * 4);
  for (let i = 0; i < opts.length; ) {
    const kind = opts[i]!;
    if (kind === 0) return undefined;
    if (kind === 1) {
      i++;
      continue;
    }
    if (kind === 2) return opts.readUInt16BE(i + 2);
    i += opts[i + 1]!;
  }
  return undefined;
}

describe("backend's node: the backend's SYN-ACK announces an MSS that fits the tunnel", () => {
  /** Records the DSR flow (the client's SYN through the tunnel) and returns the backend's SYN-ACK. */
  function synAck(f: Family, sport: number, tcpOptions: Buffer): Buffer {
    const syn = entry().ingress(flowFrame(f, 'tcp', { src: client(f), dst: vip(f), sport, dport: 80, payload: '' }));
    expect(backendNode().ingress(syn.data).counted[0]?.reason).toBe('dsr_decap');
    return backendTcp(f, sport, { syn: true, ack: true }, tcpOptions);
  }
  // the MSS value lands at TCP offsets 22, 23 (straddles two 32-bit words), 25 and 32
  const layouts = [
    { name: 'MSS first', opts: (m: number) => mssOption(m) },
    { name: 'after one NOP', opts: (m: number) => mssOption(m, 1, [1, 1, 1]) },
    { name: 'after three NOPs', opts: (m: number) => mssOption(m, 3, [0]) },
    { name: 'after a timestamp', opts: (m: number) => Buffer.from([8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, ...mssOption(m)]) },
    { name: 'Linux order: MSS, SACK-permitted, timestamp, NOP, window scale', opts: (m: number) => Buffer.from([...mssOption(m), 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]) },
  ];
  const cases = FAMILIES.flatMap((f) => layouts.map((l) => [f, l.name, l.opts] as const));

  it.each(cases)('IPv%i, %s: 1460 becomes MTU - overhead - headers, checksum right', (f, _name, opts) => {
    const input = synAck(f, 42000, opts(1460));
    const r = backendNode().egress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('dsr_revnat', 'egress', input));
    const out = expectChecksumsOk(r.data);
    expect(out.ip.src).toBe(vip(f));
    expect(mssOf(r.data)).toBe(MTU - DSR_OVERHEAD[f] - (f === 4 ? 20 : 40) - 20);
    // nothing else in the options moved
    const before = parseFrame(input);
    const optsIn = input.subarray(before.offsets.l4 + 20, before.offsets.payload);
    const optsOut = r.data.subarray(out.offsets.l4 + 20, out.offsets.payload);
    expect(optsOut.length).toBe(optsIn.length);
    const diff = [...optsOut].flatMap((b, i) => (b !== optsIn[i] ? [i] : []));
    expect(diff.length).toBeGreaterThan(0);
    expect(diff.length).toBeLessThanOrEqual(2);
  });

  it.each(FAMILIES)('IPv%i: an MSS already small enough is left alone', (f) => {
    const input = synAck(f, 42001, mssOption(1200));
    const r = backendNode().egress(input);
    expect(mssOf(r.data)).toBe(1200);
    expectChecksumsOk(r.data);
  });

  it.each(FAMILIES)('IPv%i: only SYN-ACKs: a plain ACK with an option that looks like MSS is not touched', (f) => {
    const input = synAck(f, 42002, mssOption(1460));
    const ack = backendTcp(f, 42002, { ack: true }, mssOption(1460));
    backendNode().egress(input);
    const r = backendNode().egress(ack);
    expect(r.counted).toEqual(countedOnce('dsr_revnat', 'egress', ack));
    expect(mssOf(r.data)).toBe(1460);
  });

  it.each(FAMILIES)('IPv%i: a malformed option list (length 0) is left as it is', (f) => {
    const input = synAck(f, 42003, Buffer.from([3, 0, 2, 4, 5, 0xb4]));
    const r = backendNode().egress(input);
    expect(r.counted).toEqual(countedOnce('dsr_revnat', 'egress', input));
    const out = expectChecksumsOk(r.data);
    expect(r.data.subarray(out.offsets.l4 + 20, out.offsets.l4 + 26).equals(Buffer.from([3, 0, 2, 4, 5, 0xb4]))).toBe(true);
  });
});
