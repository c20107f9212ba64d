// ICMP errors about translated flows: translated so path-MTU discovery and
// port unreachable work through a Service.
//   ingress: a router's "fragmentation needed" (IPv4, with the MTU) / "packet
//     too big" (IPv6) about our reply V:vp -> C:cp reaches the backend: outer
//     destination V -> B, quoted source V:vp -> B:bp;
//   egress: a backend's "port unreachable" about C:cp -> B:bp reaches the
//     client as if the VIP sent it: outer source B -> V, quoted destination
//     B:bp -> V:vp.
// Checksums that must be right afterwards: the outer IPv4 header, the ICMP /
// ICMPv6 checksum (with its pseudo-header) and the quoted IPv4 header. The
// quoted L4 checksum is left as the datapath found it (icmp.h: nobody
// verifies it, and an 8-byte TCP quote does not even hold it); the expected
// frames say so explicitly. ICMP errors about flows conntrack does not know
// pass untouched.
//
// Address plan (IPv4 / IPv6):
//   client    198.18.0.50             2001:2::1:50
//   VIP       198.19.0.1              2001:2:0:ff::1      TCP :80, UDP :53
//   backends  198.18.1.1-2            2001:2::2:1-2       :8080 (TCP), :5353 (UDP)
//   router    198.18.2.1              2001:2::3:1         (a hop that sends errors)
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  BpfHarness,
  TC_ACT_OK,
  TC_ACT_UNSPEC,
  countedOnce,
  flowFrame,
  planOf,
  type Family,
  type L4Proto,
  FAMILIES,
  CASES,
  VIP_PORT,
  TARGET_PORT,
} from '../lib/bpf-harness.js';
import {
  ICMP4,
  ICMP4_UNREACH,
  ICMP6,
  ICMP6_UNREACH,
  IPPROTO,
  icmp4Error,
  icmp6Error,
  internetChecksum,
  ipBytes,
  ipPacketOf,
  ipv4Icmp,
  ipv4UdpFragments,
  ipv6Icmp,
  parseFrame,
  pseudoHeader,
  rewrite,
  type PacketRewrite,
} from '../lib/packet.js';
import { addService, type ServiceSpec } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-icmp-errors';
const BIG = Buffer.alloc(1400, 0x42);

let h: BpfHarness | undefined;
const harness = (): BpfHarness => h!;
const services = new Map<string, ServiceSpec>();

/** Opens a flow from client port `cport` through the VIP; returns its backend. */
function open(family: Family, proto: L4Proto, cport: number): string {
  const p = planOf(family);
  const r = harness().ingress(flowFrame(family, proto, { src: p.client(50), dst: p.vip(1), sport: cport, dport: VIP_PORT[proto], payload: 'q' }));
  expect(r.retval).toBe(TC_ACT_OK);
  return parseFrame(r.data).ip.dst;
}

/** How much of the offending packet the error quotes. */
type Quote = 'header only' | 'header + 8 bytes' | 'as much as fits';
const quoteOf = (family: Family, packet: Buffer, q: Quote): Buffer => {
  const hl = family === 4 ? 20 : 40;
  const max = family === 4 ? 576 - 20 - 8 : 1280 - 40 - 8;
  const len = { 'header only': hl, 'header + 8 bytes': hl + 8, 'as much as fits': Math.min(packet.length, max) }[q];
  return packet.subarray(0, len);
};

/** A router's "too big" error to `to`, quoting `offending` (a frame). */
function tooBig(family: Family, from: string, to: string, offending: Buffer, q: Quote): Buffer {
  const original = quoteOf(family, ipPacketOf(offending), q);
  return family === 4
    ? icmp4Error({ src: from, dst: to, type: ICMP4.DEST_UNREACH, code: ICMP4_UNREACH.FRAG_NEEDED, mtu: 1200, original })
    : icmp6Error({ src: from, dst: to, type: ICMP6.PACKET_TOO_BIG, code: 0, mtu: 1280, original });
}

/** A host's "port unreachable" to `to`, quoting `offending`. */
function portUnreachable(family: Family, from: string, to: string, offending: Buffer, q: Quote): Buffer {
  const original = quoteOf(family, ipPacketOf(offending), q);
  return family === 4
    ? icmp4Error({ src: from, dst: to, type: ICMP4.DEST_UNREACH, code: ICMP4_UNREACH.PORT, original })
    : icmp6Error({ src: from, dst: to, type: ICMP6.DEST_UNREACH, code: ICMP6_UNREACH.PORT, original });
}

/**
 * The translated error: `rewrite` changes the outer and quoted fields with
 * incremental checksum updates; then the quoted L4 checksum is put back as
 * it was (the datapath leaves it) and the ICMP checksum recomputed over the
 * result.
 */
function expectedXlate(input: Buffer, outer: PacketRewrite, inner: PacketRewrite): Buffer {
  const out = rewrite(input, { ...outer, inner });
  const q = parseFrame(input).l4.icmp!.embedded!;
  const at = q.l4.checksumOffset;
  if (at !== undefined) input.copy(out, at, at, at + 2);
  const p = parseFrame(out);
  const { l4, end } = p.offsets;
  out.writeUInt16BE(0, l4 + 2);
  const body = out.subarray(l4, end);
  const sum =
    p.ip.version === 4
      ? internetChecksum(body)
      : internetChecksum(pseudoHeader(ipBytes(p.ip.src), ipBytes(p.ip.dst), IPPROTO.ICMPV6, body.length), body);
  out.writeUInt16BE(sum, l4 + 2);
  return out;
}

/** Every checksum the translation must keep right. */
function expectIcmpChecksums(frame: Buffer): void {
  const p = parseFrame(frame);
  if (p.ip.version === 4) expect(p.ip.headerChecksumOk, 'outer IPv4 header').toBe(true);
  expect(p.l4.checksumStatus, 'ICMP checksum').toBe('ok');
  const q = p.l4.icmp?.embedded;
  expect(q, p.l4.icmp?.embeddedError).toBeDefined();
  if (q!.ip.version === 4) expect(q!.ip.headerChecksumOk, 'quoted IPv4 header').toBe(true);
}

beforeAll(() => {
  h = BpfHarness.open(ROOT);
  for (const family of FAMILIES) {
    const p = planOf(family);
    for (const proto of ['tcp', 'udp'] as const) {
      const id = family * 10 + (proto === 'tcp' ? 1 : 2);
      services.set(
        `${family}/${proto}`,
        addService(h.dp, {
          id,
          vip: p.vip(1),
          port: VIP_PORT[proto],
          proto,
          backends: [1, 2].map((n) => ({ id: id * 10 + n, addr: p.backend(n), port: TARGET_PORT[proto] })),
        }),
      );
    }
  }
});

afterAll(() => BpfHarness.destroy(h, ROOT));

beforeEach(() => harness().clearFlows());

type XCase = [string, Family, L4Proto, Quote];
const XCASES: XCase[] = CASES.flatMap(([f, p]): XCase[] => [
  [`IPv${f} ${p}, quoting header + 8 bytes`, f, p, 'header + 8 bytes'],
  [`IPv${f} ${p}, quoting as much as fits`, f, p, 'as much as fits'],
]);

describe('ingress: errors from the path about our replies reach the backend', () => {
  it.each(XCASES)('%s: too big to the VIP -> outer dst and quoted source become the backend', (_name, family, proto, q) => {
    const p = planOf(family);
    const b = open(family, proto, 52000);
    // Our reply as it left the node (reverse-NATed), too big for a link on the way.
    const ourReply = flowFrame(family, proto, { src: p.vip(1), dst: p.client(50), sport: VIP_PORT[proto], dport: 52000, flags: { ack: true }, payload: BIG });
    const input = tooBig(family, p.node(1), p.vip(1), ourReply, q);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('icmp_error_xlate', 'ingress', input));
    expectIcmpChecksums(r.data);
    const out = parseFrame(r.data);
    expect(out.ip.src).toBe(p.node(1));
    expect(out.ip.dst).toBe(b);
    expect(out.l4.icmp?.mtu).toBe(family === 4 ? 1200 : 1280);
    const quoted = out.l4.icmp!.embedded!;
    expect([quoted.ip.src, quoted.l4.sport, quoted.ip.dst, quoted.l4.dport]).toEqual([b, TARGET_PORT[proto], p.client(50), 52000]);
    expect(r.data).toEqual(expectedXlate(input, { dst: b }, { src: b, sport: TARGET_PORT[proto] }));
  });
});

describe('egress: a backend\'s errors about translated flows reach the client from the VIP', () => {
  it.each(XCASES)('%s: port unreachable from the backend -> outer src and quoted destination become VIP:port', (_name, family, proto, q) => {
    const p = planOf(family);
    const b = open(family, proto, 52100);
    // The client's packet as the backend got it (DNATed).
    const delivered = flowFrame(family, proto, { src: p.client(50), dst: b, sport: 52100, dport: TARGET_PORT[proto], payload: BIG });
    const input = portUnreachable(family, b, p.client(50), delivered, q);
    const r = harness().egress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('icmp_error_xlate', 'egress', input));
    expectIcmpChecksums(r.data);
    const out = parseFrame(r.data);
    expect(out.ip.src).toBe(p.vip(1));
    expect(out.ip.dst).toBe(p.client(50));
    const quoted = out.l4.icmp!.embedded!;
    expect([quoted.ip.src, quoted.l4.sport, quoted.ip.dst, quoted.l4.dport]).toEqual([p.client(50), 52100, p.vip(1), VIP_PORT[proto]]);
    expect(r.data).toEqual(expectedXlate(input, { src: p.vip(1) }, { dst: p.vip(1), dport: VIP_PORT[proto] }));
  });

  it.each(CASES)('IPv%i %s: an error from a hop between keeps its own source; the quote is translated', (family, proto) => {
    const p = planOf(family);
    const b = open(family, proto, 52200);
    const delivered = flowFrame(family, proto, { src: p.client(50), dst: b, sport: 52200, dport: TARGET_PORT[proto], payload: 'x' });
    const original = quoteOf(family, ipPacketOf(delivered), 'header + 8 bytes');
    const input =
      family === 4
        ? icmp4Error({ src: p.node(1), dst: p.client(50), type: ICMP4.TIME_EXCEEDED, code: 0, original })
        : icmp6Error({ src: p.node(1), dst: p.client(50), type: ICMP6.TIME_EXCEEDED, code: 0, original });
    const r = harness().egress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('icmp_error_xlate', 'egress', input));
    expectIcmpChecksums(r.data);
    expect(r.data).toEqual(expectedXlate(input, {}, { dst: p.vip(1), dport: VIP_PORT[proto] }));
  });
});

describe('ICMP errors about flows conntrack does not know pass untouched', () => {
  type Case = [string, 'ingress' | 'egress', Family, L4Proto, () => Buffer];
  const cases: Case[] = CASES.flatMap(([family, proto]): Case[] => {
    const p = planOf(family);
    const vp = VIP_PORT[proto];
    const tp = TARGET_PORT[proto];
    const reply = (cport: number): Buffer => flowFrame(family, proto, { src: p.vip(1), dst: p.client(50), sport: vp, dport: cport, flags: { ack: true }, payload: 'r' });
    const delivered = (cport: number, b: string): Buffer => flowFrame(family, proto, { src: p.client(50), dst: b, sport: cport, dport: tp, payload: 'd' });
    const f = `IPv${family} ${proto}`;
    return [
      [`${f}: too big to the VIP about a reply to a port no flow uses`, 'ingress', family, proto, () => tooBig(family, p.node(1), p.vip(1), reply(52999), 'header + 8 bytes')],
      [`${f}: too big to another address than the quoted source`, 'ingress', family, proto, () => tooBig(family, p.node(1), p.node(2), reply(52300), 'header + 8 bytes')],
      [`${f}: too big quoting only the IP header (no ports)`, 'ingress', family, proto, () => tooBig(family, p.node(1), p.vip(1), reply(52300), 'header only')],
      [`${f}: port unreachable about a flow never opened`, 'egress', family, proto, () => portUnreachable(family, p.backend(1), p.client(50), delivered(52998, p.backend(1)), 'header + 8 bytes')],
      [`${f}: port unreachable about the flow, from a backend it does not use`, 'egress', family, proto, () => portUnreachable(family, p.backend(7), p.client(50), delivered(52300, p.backend(7)), 'header + 8 bytes')],
    ];
  });

  it.each(cases)('%s', (_name, dir, family, proto, build) => {
    // A live flow on client port 52300, so "unknown" means unknown, not "no flows at all".
    open(family, proto, 52300);
    const input = build();
    const r = harness().run(dir, input);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(input);
    expect(r.counted).toEqual(countedOnce('pass', dir, input));
  });

  it.each(CASES)('IPv%i %s: an error about a tracked flow whose backend is gone passes', (family, proto) => {
    const p = planOf(family);
    const b = open(family, proto, 52400);
    const svc = services.get(`${family}/${proto}`)!;
    const be = svc.backends.find((x) => x.addr === b)!;
    const backends = family === 4 ? harness().dp.maps.backends4 : harness().dp.maps.backends6;
    const saved = backends.lookup(be.id)!;
    backends.delete(be.id);
    try {
      const ourReply = flowFrame(family, proto, { src: p.vip(1), dst: p.client(50), sport: VIP_PORT[proto], dport: 52400, payload: 'r' });
      const input = tooBig(family, p.node(1), p.vip(1), ourReply, 'header + 8 bytes');
      const r = harness().ingress(input);
      expect(r.retval).toBe(TC_ACT_UNSPEC);
      expect(r.data).toEqual(input);
      expect(r.counted).toEqual(countedOnce('pass', 'ingress', input));
    } finally {
      (backends as { update(k: number, v: typeof saved): void }).update(be.id, saved);
    }
  });

  it('IPv4: an error quoting a later fragment (no ports in it) passes', () => {
    const p = planOf(4);
    open(4, 'udp', 52500);
    const frags = ipv4UdpFragments({ src: p.vip(1), dst: p.client(50), sport: 53, dport: 52500, payload: BIG, fragmentSize: 512, id: 77 });
    const input = icmp4Error({ src: p.node(1), dst: p.vip(1), type: ICMP4.DEST_UNREACH, code: ICMP4_UNREACH.FRAG_NEEDED, mtu: 500, original: ipPacketOf(frags[1]!).subarray(0, 28) });
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(input);
    expect(r.counted).toEqual(countedOnce('pass', 'ingress', input));
  });

  it.each(FAMILIES)('IPv%i: echo requests and replies are not errors: they pass', (family) => {
    const p = planOf(family);
    const frames =
      family === 4
        ? [ipv4Icmp({ src: p.client(50), dst: p.vip(1), id: 1, seq: 1 }), ipv4Icmp({ src: p.node(1), dst: p.vip(1), type: ICMP4.ECHO_REPLY, id: 1 })]
        : [ipv6Icmp({ src: p.client(50), dst: p.vip(1), id: 1, seq: 1 }), ipv6Icmp({ src: p.node(1), dst: p.vip(1), type: ICMP6.ECHO_REPLY, id: 1 })];
    for (const input of frames) {
      for (const dir of ['ingress', 'egress'] as const) {
        const r = harness().run(dir, input);
        expect(r.retval).toBe(TC_ACT_UNSPEC);
        expect(r.data).toEqual(input);
        expect(r.counted).toEqual(countedOnce('pass', dir, input));
      }
    }
  });
});
