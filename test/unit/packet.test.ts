import { Buffer } from 'node:buffer';
import { describe, expect, it } from 'vitest';

import {
  ICMP4,
  ICMP4_UNREACH,
  ICMP6,
  ICMP6_UNREACH,
  IPPROTO,
  PLAN4,
  PLAN6,
  type ChecksumStatus,
  type L4Kind,
  canonicalIp,
  corrupt,
  fixChecksums,
  fragment4,
  fragment6,
  icmp4Error,
  icmp6Error,
  inLabRange,
  internetChecksum,
  ipPacketOf,
  ipv4Icmp,
  ipv4Raw,
  ipv4Tcp,
  ipv4Udp,
  ipv4UdpFragments,
  ipv6Icmp,
  ipv6Raw,
  ipv6Tcp,
  ipv6Udp,
  ipv6UdpFragments,
  parseFrame,
  parseIpPacket,
  patch,
  reassemble,
  rewrite,
  setIpv4Ihl,
  setIpv4TotalLength,
  truncate,
} from '../lib/packet.js';

// Address plan (lab ranges only).
const CLIENT4 = PLAN4.client(10); // 198.18.0.10
const VIP4 = PLAN4.vip(1); // 198.19.0.1
const BACKEND4 = PLAN4.backend(1); // 198.18.1.1
const NODE4 = PLAN4.node(1); // 198.18.2.1
const CLIENT6 = PLAN6.client(10); // 2001:2::1:10
const VIP6 = PLAN6.vip(1); // 2001:2:0:ff::1
const BACKEND6 = PLAN6.backend(1); // 2001:2::2:1
const NODE6 = PLAN6.node(1); // 2001:2::3:1

const v4 = { src: CLIENT4, dst: VIP4 };
const v6 = { src: CLIENT6, dst: VIP6 };
const payload = Buffer.from('strait packet library, odd length!');

/** ICMP port unreachable from `src` to `dst` quoting `original` (an IP packet). */
const portUnreach4 = (src: string, dst: string, original: Buffer): Buffer =>
  icmp4Error({ src, dst, type: ICMP4.DEST_UNREACH, code: ICMP4_UNREACH.PORT, original });
const portUnreach6 = (src: string, dst: string, original: Buffer): Buffer =>
  icmp6Error({ src, dst, type: ICMP6.DEST_UNREACH, code: ICMP6_UNREACH.PORT, original });

interface BuilderCase {
  name: string;
  frame: Buffer;
  version: 4 | 6;
  proto: number;
  kind: L4Kind;
  sport: number;
  dport: number;
}

const quotedUdp4 = ipPacketOf(ipv4Udp({ src: CLIENT4, dst: BACKEND4, sport: 1000, dport: 53, payload }));
const quoted6 = ipPacketOf(ipv6Tcp({ ...v6, sport: 40000, dport: 80, flags: { ack: true }, payload }));

const builderCases: BuilderCase[] = [
  {
    name: 'IPv4 TCP SYN',
    frame: ipv4Tcp({ ...v4, sport: 40000, dport: 80, flags: { syn: true }, seq: 1 }),
    ...{ version: 4, proto: 6, kind: 'tcp', sport: 40000, dport: 80 },
  },
  {
    name: 'IPv4 TCP with payload, IP and TCP options',
    frame: ipv4Tcp({
      ...v4,
      sport: 1,
      dport: 443,
      flags: { ack: true, psh: true },
      ack: 77,
      ipOptions: Buffer.from([0x94, 4, 0, 0]), // Router Alert
      tcpOptions: Buffer.from([2, 4, 5, 0xb4]), // MSS 1460
      payload,
    }),
    ...{ version: 4, proto: 6, kind: 'tcp', sport: 1, dport: 443 },
  },
  {
    name: 'IPv4 UDP',
    frame: ipv4Udp({ ...v4, sport: 5353, dport: 53, payload }),
    ...{ version: 4, proto: 17, kind: 'udp', sport: 5353, dport: 53 },
  },
  {
    name: 'IPv4 ICMP echo request',
    frame: ipv4Icmp({ ...v4, id: 0x4242, seq: 7, payload }),
    ...{ version: 4, proto: 1, kind: 'icmp', sport: 0x4242, dport: 0 },
  },
  {
    name: 'IPv4 ICMP echo reply',
    frame: ipv4Icmp({ src: VIP4, dst: CLIENT4, type: ICMP4.ECHO_REPLY, id: 9, seq: 1 }),
    ...{ version: 4, proto: 1, kind: 'icmp', sport: 9, dport: 0 },
  },
  {
    name: 'ICMPv4 port unreachable quoting UDP',
    frame: portUnreach4(BACKEND4, CLIENT4, quotedUdp4),
    ...{ version: 4, proto: 1, kind: 'icmp', sport: 0, dport: 0 },
  },
  {
    name: 'IPv4 raw SCTP',
    frame: ipv4Raw({ ...v4, proto: IPPROTO.SCTP, payload }),
    ...{ version: 4, proto: 132, kind: 'other', sport: 0, dport: 0 },
  },
  {
    name: 'IPv4 TCP in VLAN 42',
    frame: ipv4Tcp({ ...v4, vlan: 42, sport: 2, dport: 3, flags: { rst: true } }),
    ...{ version: 4, proto: 6, kind: 'tcp', sport: 2, dport: 3 },
  },
  {
    name: 'IPv6 TCP SYN',
    frame: ipv6Tcp({ ...v6, sport: 40000, dport: 80, flags: { syn: true } }),
    ...{ version: 6, proto: 6, kind: 'tcp', sport: 40000, dport: 80 },
  },
  {
    name: 'IPv6 UDP',
    frame: ipv6Udp({ ...v6, sport: 5353, dport: 53, payload }),
    ...{ version: 6, proto: 17, kind: 'udp', sport: 5353, dport: 53 },
  },
  {
    name: 'IPv6 ICMPv6 echo request',
    frame: ipv6Icmp({ ...v6, id: 0x4242, seq: 3, payload }),
    ...{ version: 6, proto: 58, kind: 'icmpv6', sport: 0x4242, dport: 0 },
  },
  {
    name: 'ICMPv6 packet too big quoting TCP',
    frame: icmp6Error({ src: NODE6, dst: CLIENT6, type: ICMP6.PACKET_TOO_BIG, code: 0, mtu: 1280, original: quoted6 }),
    ...{ version: 6, proto: 58, kind: 'icmpv6', sport: 0, dport: 0 },
  },
  {
    name: 'IPv6 raw unknown protocol',
    frame: ipv6Raw({ ...v6, proto: 253, payload }),
    ...{ version: 6, proto: 253, kind: 'other', sport: 0, dport: 0 },
  },
  {
    name: 'IPv6 UDP behind hop, dst and routing headers',
    frame: ipv6Udp({
      ...v6,
      sport: 7,
      dport: 8,
      payload,
      extHeaders: [{ type: 'hop' }, { type: 'dst', options: Buffer.from([1, 1, 0]) }, { type: 'routing' }],
    }),
    ...{ version: 6, proto: 17, kind: 'udp', sport: 7, dport: 8 },
  },
];

const checksummed = builderCases.filter((c) => c.kind !== 'other');

describe('builders parse back', () => {
  it.each(builderCases)('$name: addresses, protocol and ports', (c) => {
    const p = parseFrame(c.frame);
    expect(p.ip.version).toBe(c.version);
    expect(p.ip.proto).toBe(c.proto);
    expect(p.l4.kind).toBe(c.kind);
    expect([p.l4.sport, p.l4.dport]).toEqual([c.sport, c.dport]);
    expect(p.ip.truncated).toBe(false);
    expect(p.l4.truncated).toBe(false);
    expect(inLabRange(p.ip.src) && inLabRange(p.ip.dst)).toBe(true);
  });

  it.each(builderCases)('$name: IP header checksum is right', (c) => {
    expect(parseFrame(c.frame).ip.headerChecksumOk).toBe(true);
  });

  it.each(checksummed)('$name: L4 checksum is right', (c) => {
    const p = parseFrame(c.frame);
    expect(p.l4.checksumStatus).toBe('ok');
    expect(p.l4.checksum).toBe(p.l4.checksumExpected);
  });

  it.each(builderCases)('$name: fixChecksums leaves it unchanged', (c) => {
    expect(fixChecksums(c.frame).equals(c.frame)).toBe(true);
  });

  it('carries the TCP fields it was given', () => {
    const flags = { syn: true, ack: true, ece: true };
    const ip = { ...v4, ttl: 3, id: 0xbeef, df: true };
    const p = parseFrame(ipv4Tcp({ ...ip, sport: 1, dport: 2, flags, seq: 0xfffffff0, ack: 12345, window: 512 }));
    expect(p.l4.flags).toEqual({ fin: false, rst: false, psh: false, urg: false, cwr: false, ...flags });
    expect([p.l4.seq, p.l4.ack, p.l4.window, p.l4.dataOffset]).toEqual([0xfffffff0, 12345, 512, 5]);
    expect([p.ip.ttl, p.ip.id, p.ip.flags.df, p.ip.flags.mf, p.ip.ihl]).toEqual([3, 0xbeef, true, false, 5]);
  });

  it('carries IPv4 options and pads them to a multiple of 4', () => {
    const p = parseFrame(ipv4Udp({ ...v4, sport: 1, dport: 2, ipOptions: Buffer.from([0x94, 4, 0, 0, 1]) }));
    expect(p.ip.ihl).toBe(7);
    expect(p.ip.options).toEqual(Buffer.from([0x94, 4, 0, 0, 1, 0, 0, 0]));
  });

  it('carries the payload', () => {
    expect(parseFrame(ipv4Udp({ ...v4, sport: 1, dport: 2, payload })).payload).toEqual(payload);
    expect(parseFrame(ipv6Tcp({ ...v6, sport: 1, dport: 2, payload: 'hi' })).payload).toEqual(Buffer.from('hi'));
  });

  it('carries MACs and the VLAN tag', () => {
    const macs = { srcMac: '02:aa:bb:cc:dd:ee', dstMac: '02:00:00:00:00:99' };
    const p = parseFrame(ipv4Tcp({ ...v4, ...macs, vlan: 42, sport: 1, dport: 2 }));
    expect(p.eth).toEqual({ src: '02:aa:bb:cc:dd:ee', dst: '02:00:00:00:00:99', type: 0x0800, vlan: 42 });
  });
});

describe('checksum verification', () => {
  it.each(checksummed)('$name: a corrupted payload or L4 header byte fails the L4 checksum', (c) => {
    const p = parseFrame(c.frame);
    const at = p.offsets.payload < p.offsets.end ? p.offsets.end - 1 : p.offsets.l4;
    expect(parseFrame(corrupt(c.frame, at)).l4.checksumOk).toBe(false);
    expect(parseFrame(corrupt(c.frame, p.offsets.l4 + 1)).l4.checksumOk).toBe(false);
  });

  const withPseudoHeader = checksummed.filter((c) => c.kind !== 'icmp');
  it.each(withPseudoHeader)('$name: a changed source address fails the L4 checksum (pseudo-header)', (c) => {
    const p = parseFrame(c.frame);
    const srcAt = p.offsets.l3 + (c.version === 4 ? 12 : 8);
    const frame = fixIpv4HeaderOnly(corrupt(c.frame, srcAt + 3, 0x01));
    const q = parseFrame(frame);
    expect(q.ip.headerChecksumOk).toBe(true);
    expect(q.l4.checksumStatus).toBe('bad');
  });

  const ipv4Cases = builderCases.filter((c) => c.version === 4);
  it.each(ipv4Cases)('$name: a corrupted IPv4 header byte fails the header checksum', (c) => {
    const p = parseFrame(c.frame);
    const corrupted = corrupt(c.frame, p.offsets.l3 + 8); // TTL
    const q = parseFrame(corrupted);
    expect(q.ip.headerChecksumOk).toBe(false);
    const expected = Buffer.alloc(2);
    expected.writeUInt16BE(q.ip.headerChecksumExpected);
    expect(parseFrame(patch(corrupted, p.offsets.l3 + 10, expected)).ip.headerChecksumOk).toBe(true);
  });

  it('reports UDP checksum 0 over IPv4 as absent, over IPv6 as bad', () => {
    const four = parseFrame(ipv4Udp({ ...v4, sport: 1, dport: 2, payload, checksum: 'zero' }));
    expect([four.l4.checksum, four.l4.checksumStatus, four.l4.checksumOk]).toEqual([0, 'absent', false]);
    const six = parseFrame(ipv6Udp({ ...v6, sport: 1, dport: 2, payload, checksum: 'zero' }));
    expect([six.l4.checksum, six.l4.checksumStatus, six.l4.checksumOk]).toEqual([0, 'bad', false]);
  });

  it('sends a UDP checksum that computes to 0 as 0xffff', () => {
    // With a 2-byte payload equal to the checksum of the same datagram with a
    // zero payload, the sum becomes 0xffff and the checksum computes to 0.
    const zeroPayload = parseFrame(ipv4Udp({ ...v4, sport: 1, dport: 2, payload: Buffer.alloc(2) }));
    const word = Buffer.alloc(2);
    word.writeUInt16BE(zeroPayload.l4.checksum);
    const p = parseFrame(ipv4Udp({ ...v4, sport: 1, dport: 2, payload: word }));
    expect(p.l4.checksum).toBe(0xffff);
    expect(p.l4.checksumStatus).toBe('ok');
  });

  it('writes an explicit checksum value as given', () => {
    const p = parseFrame(ipv4Tcp({ ...v4, sport: 1, dport: 2, checksum: 0x1234 }));
    expect(p.l4.checksum).toBe(0x1234);
    expect(p.l4.checksumOk).toBe(false);
  });

  it('uses the routing header final destination in the IPv6 pseudo-header', () => {
    const routing = { type: 'routing', routingType: 2, segmentsLeft: 1, addresses: [BACKEND6] } as const;
    const frame = ipv6Udp({ ...v6, sport: 1, dport: 2, payload, extHeaders: [routing] });
    const p = parseFrame(frame);
    expect(p.ip.pseudoDst).toBe(BACKEND6);
    expect(p.l4.checksumStatus).toBe('ok');
    const plain = parseFrame(ipv6Udp({ src: CLIENT6, dst: BACKEND6, sport: 1, dport: 2, payload }));
    expect(p.l4.checksum).toBe(plain.l4.checksum);
  });

  it('matches a hand-computed IPv4/TCP SYN (known answer)', () => {
    // 198.18.0.1:40000 -> 198.19.0.1:80, id 0x1234, DF, TTL 64, seq 1, SYN, window 65535.
    //
    // IPv4 header words: 4500 0028 1234 4000 4006 [csum] c612 0001 c613 0001
    //   sum = 0x26389 -> fold 0x6389 + 0x2 = 0x638b -> checksum ~0x638b = 0x9c74
    // TCP pseudo-header: c612 0001 c613 0001 0006 0014 -> 0x18c41
    // TCP header words:  9c40 0050 0000 0001 0000 0000 5002 ffff [csum] 0000 -> 0x1ec92
    //   sum = 0x378d3 -> fold 0x78d3 + 0x3 = 0x78d6 -> checksum ~0x78d6 = 0x8729
    const expected = Buffer.from(
      '020000000002' + '020000000001' + '0800' +
        '4500' + '0028' + '1234' + '4000' + '4006' + '9c74' + 'c6120001' + 'c6130001' +
        '9c40' + '0050' + '00000001' + '00000000' + '5002' + 'ffff' + '8729' + '0000',
      'hex',
    );
    const frame = ipv4Tcp({
      ...{ src: PLAN4.client(1), dst: PLAN4.vip(1), id: 0x1234, df: true, ttl: 64 },
      ...{ sport: 40000, dport: 80, seq: 1, flags: { syn: true } },
    });
    expect(frame.toString('hex')).toBe(expected.toString('hex'));
    const p = parseFrame(expected);
    expect([p.ip.headerChecksumOk, p.l4.checksumStatus]).toEqual([true, 'ok']);
  });

  it('matches a hand-computed IPv6/UDP datagram (known answer, 32-bit pseudo-header length)', () => {
    // [2001:2::1:1]:5000 -> [2001:2:0:ff::1]:53, payload "ab", hop limit 64.
    //
    // Pseudo-header: src 2001 0002 0000 0000 0000 0000 0001 0001 -> 0x2005
    //                dst 2001 0002 0000 00ff 0000 0000 0000 0001 -> 0x2103
    //                length 0000 000a, zero 0000, next header 0011 -> 0x001b
    //                sum 0x4123
    // UDP words: 1388 0035 000a [csum] 6162 -> 0x7529
    //   sum = 0xb64c -> checksum ~0xb64c = 0x49b3
    const expected = Buffer.from(
      '020000000002' + '020000000001' + '86dd' +
        '60000000' + '000a' + '11' + '40' + '20010002000000000000000000010001' + '20010002000000ff0000000000000001' +
        '1388' + '0035' + '000a' + '49b3' + '6162',
      'hex',
    );
    const frame = ipv6Udp({ src: PLAN6.client(1), dst: PLAN6.vip(1), sport: 5000, dport: 53, payload: 'ab' });
    expect(frame.toString('hex')).toBe(expected.toString('hex'));
    expect(parseFrame(expected).l4.checksumStatus).toBe('ok');
  });

  it('computes the RFC 1071 example sum', () => {
    // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to 0xddf2 (after the carry); checksum is its complement.
    expect(internetChecksum(Buffer.from('0001f203f4f5f6f7', 'hex'))).toBe(~0xddf2 & 0xffff);
  });
});

describe('ICMP errors', () => {
  const original = ipv4Udp({ src: CLIENT4, dst: BACKEND4, sport: 1000, dport: 53, payload });

  it('parses the quoted packet with its own checksums and ports', () => {
    const p = parseFrame(portUnreach4(BACKEND4, CLIENT4, ipPacketOf(original)));
    const e = p.l4.icmp?.embedded;
    expect(p.l4.icmp?.type).toBe(ICMP4.DEST_UNREACH);
    expect(e?.ip.src).toBe(CLIENT4);
    expect(e?.ip.headerChecksumOk).toBe(true);
    expect([e?.l4.sport, e?.l4.dport, e?.l4.checksumStatus]).toEqual([1000, 53, 'ok']);
  });

  it('parses a quote cut to IP header + 8 bytes', () => {
    const tcp = ipPacketOf(ipv4Tcp({ src: CLIENT4, dst: BACKEND4, sport: 1000, dport: 80, seq: 5, payload }));
    const fragNeeded = { type: ICMP4.DEST_UNREACH, code: ICMP4_UNREACH.FRAG_NEEDED, mtu: 1400 };
    const p = parseFrame(icmp4Error({ src: NODE4, dst: CLIENT4, ...fragNeeded, original: truncate(tcp, 28) }));
    const e = p.l4.icmp?.embedded;
    expect(p.l4.icmp?.mtu).toBe(1400);
    expect(p.l4.checksumStatus).toBe('ok');
    expect([e?.ip.truncated, e?.l4.truncated, e?.l4.sport, e?.l4.dport, e?.l4.seq]).toEqual([true, true, 1000, 80, 5]);
    expect(e?.l4.checksumStatus).toBe('unverifiable');
  });

  it('parses ICMPv6 errors with the MTU and quote', () => {
    const inner = ipPacketOf(ipv6Udp({ src: CLIENT6, dst: BACKEND6, sport: 9, dport: 53, payload }));
    const p = parseFrame(portUnreach6(BACKEND6, CLIENT6, inner));
    expect(p.l4.icmp?.embedded?.l4.dport).toBe(53);
    expect(p.l4.icmp?.embedded?.l4.checksumStatus).toBe('ok');
    expect(parseIpPacket(inner).ip.dst).toBe(BACKEND6);
  });

  it('fails the ICMP checksum when a quoted byte changes', () => {
    const frame = portUnreach4(BACKEND4, CLIENT4, ipPacketOf(original));
    const e = parseFrame(frame).l4.icmp?.embedded;
    const q = parseFrame(corrupt(frame, e!.offsets.l4));
    expect(q.l4.checksumOk).toBe(false);
    expect(q.l4.icmp?.embedded?.l4.checksumOk).toBe(false);
  });
});

describe('fragments', () => {
  const datagram = Buffer.alloc(3001, 0).map((_, i) => (i * 7) & 0xff);

  it('splits an IPv4 UDP datagram on 8-byte boundaries with MF on all but the last', () => {
    const frags = ipv4UdpFragments({ ...v4, id: 0x77, sport: 1, dport: 2, payload: datagram, fragmentSize: 1024 });
    const parsed = frags.map(parseFrame);
    expect(parsed.map((p) => [p.ip.fragOffset, p.ip.flags.mf, p.l4.kind])).toEqual([
      [0, true, 'udp'],
      [1024, true, 'fragment'],
      [2048, false, 'fragment'],
    ]);
    expect(parsed.every((p) => p.ip.headerChecksumOk && p.ip.id === 0x77)).toBe(true);
    expect(parsed[0]?.l4.checksumStatus).toBe('unverifiable');
    expect([parsed[0]?.l4.sport, parsed[0]?.l4.dport]).toEqual([1, 2]);
  });

  it.each([
    ['in order', [0, 1, 2]],
    ['reversed', [2, 1, 0]],
    ['shuffled', [1, 2, 0]],
  ])('reassembles IPv4 fragments %s to the original datagram', (_, order) => {
    const whole = ipv4Udp({ ...v4, id: 0x77, sport: 1, dport: 2, payload: datagram });
    const frags = fragment4(whole, 1024);
    const again = reassemble(order.map((i) => frags[i]!));
    expect(again.equals(whole)).toBe(true);
    expect(parseFrame(again).l4.checksumStatus).toBe('ok');
  });

  it('copies only the copied-flag IPv4 options into later fragments', () => {
    // 0x94 Router Alert (copied), 0x07 Record Route (not copied).
    const opts = Buffer.from([0x94, 4, 0, 0, 0x07, 7, 4, 0, 0, 0, 0, 0]);
    const frags = fragment4(ipv4Udp({ ...v4, sport: 1, dport: 2, payload: datagram, ipOptions: opts }), 1600);
    expect(parseFrame(frags[0]!).ip.options).toEqual(opts);
    expect(parseFrame(frags[1]!).ip.options).toEqual(Buffer.from([0x94, 4, 0, 0]));
    const whole = ipv4Udp({ ...v4, sport: 1, dport: 2, payload: datagram, ipOptions: opts });
    expect(reassemble(frags).equals(whole)).toBe(true);
  });

  it('rejects a fragment size that is not a multiple of 8', () => {
    const odd = { ...v4, sport: 1, dport: 2, payload: datagram, fragmentSize: 1001 };
    expect(() => ipv4UdpFragments(odd)).toThrow(RangeError);
  });

  it('rejects a gap', () => {
    const frags = fragment4(ipv4Udp({ ...v4, sport: 1, dport: 2, payload: datagram }), 1024);
    expect(() => reassemble([frags[0]!, frags[2]!])).toThrow(/expected 1024/);
  });

  it('splits and reassembles IPv6 after the unfragmentable part', () => {
    const extHeaders = [{ type: 'hop' }, { type: 'dst' }] as const;
    const whole = ipv6Udp({ ...v6, sport: 1, dport: 2, payload: datagram, extHeaders });
    const frags = fragment6(whole, 1280, 0xabcdef);
    const parsed = frags.map(parseFrame);
    expect(parsed.map((p) => p.ip.extHeaders.map((e) => e.type))).toEqual([
      ['hop', 'frag', 'dst'],
      ['hop', 'frag'],
      ['hop', 'frag'],
    ]);
    expect(parsed.map((p) => [p.ip.fragOffset, p.ip.flags.mf, p.ip.id])).toEqual([
      [0, true, 0xabcdef],
      [1280, true, 0xabcdef],
      [2560, false, 0xabcdef],
    ]);
    expect(parsed[0]?.l4.kind).toBe('udp');
    expect(parsed[1]?.l4.kind).toBe('fragment');
    expect(reassemble([frags[2]!, frags[0]!, frags[1]!]).equals(whole)).toBe(true);
  });

  it('builds IPv6 UDP fragments directly', () => {
    const frags = ipv6UdpFragments({ ...v6, sport: 1, dport: 2, payload: datagram, fragmentSize: 1024, fragmentId: 5 });
    expect(frags).toHaveLength(3);
    expect(parseFrame(reassemble(frags)).l4.checksumStatus).toBe('ok');
  });
});

describe('IPv6 extension chains', () => {
  it.each([
    { name: 'hop', ext: [{ type: 'hop' as const }], types: ['hop'], length: 48 },
    {
      name: 'dst with 6 bytes of options (no padding)',
      ext: [{ type: 'dst' as const, options: Buffer.from([1, 4, 0, 0, 0, 0]) }],
      types: ['dst'],
      length: 48,
    },
    {
      name: 'dst with 7 bytes of options (PadN to the next 8)',
      ext: [{ type: 'dst' as const, options: Buffer.from([1, 5, 0, 0, 0, 0, 0]) }],
      types: ['dst'],
      length: 56,
    },
    {
      name: 'routing type 4 with two segments',
      ext: [{ type: 'routing' as const, routingType: 4, addresses: [BACKEND6, NODE6] }],
      types: ['routing'],
      length: 80,
    },
    { name: 'atomic fragment', ext: [{ type: 'frag' as const, id: 99 }], types: ['frag'], length: 48 },
    {
      name: 'hop, dst, routing, frag, dst',
      ext: (['hop', 'dst', 'routing', 'frag', 'dst'] as const).map((type) => ({ type })),
      types: ['hop', 'dst', 'routing', 'frag', 'dst'],
      length: 80,
    },
    {
      name: 'twelve dst headers',
      ext: Array.from({ length: 12 }, () => ({ type: 'dst' as const })),
      types: new Array<string>(12).fill('dst'),
      length: 40 + 96,
    },
  ])('$name: walks the chain to TCP', ({ ext, types, length }) => {
    const p = parseFrame(ipv6Tcp({ ...v6, sport: 40000, dport: 80, flags: { syn: true }, extHeaders: ext }));
    expect(p.ip.extHeaders.map((e) => e.type)).toEqual(types);
    expect(p.ip.headerLength).toBe(length);
    expect(p.ip.nextHeader).toBe(p.ip.extHeaders[0]?.code);
    expect(p.ip.extHeaders.at(-1)?.nextHeader).toBe(IPPROTO.TCP);
    expect([p.ip.proto, p.l4.kind, p.l4.dport, p.l4.checksumStatus]).toEqual([6, 'tcp', 80, 'ok']);
  });

  it('reports routing header fields', () => {
    const srh = { type: 'routing', routingType: 4, segmentsLeft: 1, addresses: [BACKEND6, NODE6] } as const;
    const p = parseFrame(ipv6Udp({ ...v6, sport: 1, dport: 2, extHeaders: [srh] }));
    expect(p.ip.extHeaders[0]).toMatchObject(srh);
    expect(p.ip.pseudoDst).toBe(BACKEND6);
    expect(p.l4.checksumStatus).toBe('ok');
  });

  it('throws on a chain cut short', () => {
    const frame = ipv6Tcp({ ...v6, sport: 1, dport: 2, extHeaders: [{ type: 'hop' }, { type: 'dst' }] });
    expect(() => parseFrame(truncate(frame, 14 + 40 + 12))).toThrow(/extension header 60/);
  });
});

describe('rewrite', () => {
  const status = (f: Buffer): [boolean, ChecksumStatus] => {
    const p = parseFrame(f);
    return [p.ip.headerChecksumOk, p.l4.checksumStatus];
  };

  it.each([
    {
      name: 'IPv4 TCP DNAT',
      before: ipv4Tcp({ ...v4, sport: 40000, dport: 80, flags: { syn: true }, payload }),
      changes: { dst: BACKEND4, dport: 8080 },
      after: ipv4Tcp({ src: CLIENT4, dst: BACKEND4, sport: 40000, dport: 8080, flags: { syn: true }, payload }),
    },
    {
      name: 'IPv4 UDP SNAT + DNAT + TTL',
      before: ipv4Udp({ ...v4, sport: 1000, dport: 53, payload }),
      changes: { src: NODE4, sport: 33000, dst: BACKEND4, dport: 5353, ttl: 63 },
      after: ipv4Udp({ src: NODE4, dst: BACKEND4, sport: 33000, dport: 5353, payload, ttl: 63 }),
    },
    {
      name: 'IPv4 UDP without checksum stays without',
      before: ipv4Udp({ ...v4, sport: 1000, dport: 53, payload, checksum: 'zero' }),
      changes: { dst: BACKEND4 },
      after: ipv4Udp({ src: CLIENT4, dst: BACKEND4, sport: 1000, dport: 53, payload, checksum: 'zero' }),
    },
    {
      name: 'IPv6 TCP reverse NAT',
      before: ipv6Tcp({ src: BACKEND6, dst: CLIENT6, sport: 8080, dport: 40000, flags: { syn: true, ack: true } }),
      changes: { src: VIP6, sport: 80 },
      after: ipv6Tcp({ src: VIP6, dst: CLIENT6, sport: 80, dport: 40000, flags: { syn: true, ack: true } }),
    },
    {
      name: 'ICMPv6 echo identifier',
      before: ipv6Icmp({ ...v6, id: 1, seq: 2, payload }),
      changes: { dst: BACKEND6, sport: 7 },
      after: ipv6Icmp({ src: CLIENT6, dst: BACKEND6, id: 7, seq: 2, payload }),
    },
    {
      name: 'ICMPv4 error about a DNATed flow, reverse translated',
      before: portUnreach4(BACKEND4, CLIENT4, ipPacketOf(ipv4Udp({ ...v4, dst: BACKEND4, sport: 1000, dport: 5353 }))),
      changes: { src: VIP4, inner: { dst: VIP4, dport: 53 } },
      after: portUnreach4(VIP4, CLIENT4, ipPacketOf(ipv4Udp({ ...v4, sport: 1000, dport: 53 }))),
    },
    {
      name: 'ICMPv6 error about a DNATed flow, reverse translated',
      before: portUnreach6(BACKEND6, CLIENT6, ipPacketOf(ipv6Tcp({ ...v6, dst: BACKEND6, sport: 1000, dport: 8080 }))),
      changes: { src: VIP6, inner: { dst: VIP6, dport: 80 } },
      after: portUnreach6(VIP6, CLIENT6, ipPacketOf(ipv6Tcp({ ...v6, sport: 1000, dport: 80 }))),
    },
  ])('$name equals building the translated packet', ({ before, changes, after }) => {
    const out = rewrite(before, changes);
    expect(out.toString('hex')).toBe(after.toString('hex'));
  });

  it('updates a first fragment incrementally so the reassembled datagram checks out', () => {
    const datagram = { ...v4, id: 3, sport: 1, dport: 53, payload: Buffer.alloc(2000, 1) };
    const frags = ipv4UdpFragments({ ...datagram, fragmentSize: 1024 });
    const translated = [rewrite(frags[0]!, { dst: BACKEND4, dport: 5353 }), rewrite(frags[1]!, { dst: BACKEND4 })];
    expect(status(translated[0]!)).toEqual([true, 'unverifiable']);
    expect(status(reassemble(translated))).toEqual([true, 'ok']);
  });

  it('keeps a wrong checksum wrong (as an incremental update does)', () => {
    const bad = ipv4Tcp({ ...v4, sport: 1, dport: 2, checksum: 0x1234 });
    expect(status(rewrite(bad, { dst: BACKEND4 }))).toEqual([true, 'bad']);
    expect(status(fixChecksums(rewrite(bad, { dst: BACKEND4 })))).toEqual([true, 'ok']);
  });

  it('rewrites a quote cut short without touching bytes that are not there', () => {
    const inner = truncate(ipPacketOf(ipv4Tcp({ src: CLIENT4, dst: BACKEND4, sport: 1000, dport: 8080, payload })), 28);
    const fragNeeded = { type: ICMP4.DEST_UNREACH, code: ICMP4_UNREACH.FRAG_NEEDED, mtu: 1400 };
    const before = icmp4Error({ src: BACKEND4, dst: CLIENT4, ...fragNeeded, original: inner });
    const p = parseFrame(rewrite(before, { src: VIP4, inner: { dst: VIP4, dport: 80 } }));
    const e = p.l4.icmp?.embedded;
    expect([p.ip.headerChecksumOk, p.l4.checksumStatus, e?.ip.headerChecksumOk]).toEqual([true, 'ok', true]);
    expect([e?.ip.dst, e?.l4.dport]).toEqual([VIP4, 80]);
  });
});

describe('malformation helpers', () => {
  const frame = ipv4Tcp({ ...v4, sport: 1, dport: 2, payload });

  it.each([3, 4])('IHL %i < 5 is rejected by the parser, with a valid header checksum', (ihl) => {
    const bad = setIpv4Ihl(frame, ihl);
    expect(bad.readUInt8(14)).toBe(0x40 | ihl);
    expect(() => parseFrame(bad)).toThrow(/IHL/);
  });

  it('IHL beyond the packet is rejected', () => {
    expect(() => parseFrame(truncate(setIpv4Ihl(frame, 15), 14 + 40))).toThrow(/options/);
  });

  it('IHL change without checksum fix leaves the header checksum wrong', () => {
    const p = parseFrame(setIpv4Ihl(frame, 6, { fixChecksum: false }));
    expect(p.ip.headerChecksumOk).toBe(false);
  });

  it('a total length beyond the buffer reads as truncated', () => {
    const p = parseFrame(setIpv4TotalLength(frame, 1000));
    expect([p.ip.headerChecksumOk, p.ip.truncated, p.l4.checksumStatus]).toEqual([true, true, 'unverifiable']);
  });

  it('a TCP header cut short reads as truncated with the fields that are there', () => {
    const p = parseFrame(truncate(frame, 14 + 20 + 10));
    expect([p.l4.truncated, p.l4.sport, p.l4.dport, p.l4.checksumOffset]).toEqual([true, 1, 2, undefined]);
  });

  it('patch writes bytes at an offset', () => {
    const p = parseFrame(patch(frame, 14 + 20, [0, 9]));
    expect(p.l4.sport).toBe(9);
    expect(p.l4.checksumOk).toBe(false);
  });

  it('an Ethernet frame too short for its header throws', () => {
    expect(() => parseFrame(truncate(frame, 13))).toThrow(/Ethernet/);
  });
});

describe('address plan', () => {
  it.each([
    [PLAN4.client(10), '198.18.0.10'],
    [PLAN4.vip(1), '198.19.0.1'],
    [PLAN4.backend(255), '198.18.1.255'],
    [PLAN6.client(10), '2001:2::1:10'],
    [PLAN6.vip(1), '2001:2:0:ff::1'],
    [PLAN6.vip(0), '2001:2:0:ff::'],
    [PLAN6.backend(2), '2001:2::2:2'],
  ])('%s is %s and in the lab range', (got, want) => {
    expect(got).toBe(want);
    expect(inLabRange(got)).toBe(true);
  });

  it.each(['192.0.2.1', '198.20.0.1', '2001:db8::1', '2001:2:1::1'])('%s is outside the lab ranges', (addr) => {
    expect(inLabRange(addr)).toBe(false);
  });

  it.each([
    ['2001:0002:0000:0000:0000:0000:0001:0010', '2001:2::1:10'],
    ['2001:2:0:0:1:0:0:1', '2001:2::1:0:0:1'],
    ['2001:2::', '2001:2::'],
    ['::ffff:198.18.0.1', '::ffff:c612:1'],
    ['2001:2:0:1:1:1:1:1', '2001:2:0:1:1:1:1:1'],
  ])('canonical form of %s is %s', (addr, want) => {
    expect(canonicalIp(addr)).toBe(want);
  });
});

/** Refresh only the IPv4 header checksum (so an L4 failure is the L4's own). */
function fixIpv4HeaderOnly(frame: Buffer): Buffer {
  const p = parseFrame(frame);
  if (p.ip.version !== 4) return frame;
  const { l3 } = p.offsets;
  const out = Buffer.from(frame);
  out.writeUInt16BE(0, l3 + 10);
  out.writeUInt16BE(internetChecksum(out.subarray(l3, l3 + p.ip.headerLength)), l3 + 10);
  return out;
}
