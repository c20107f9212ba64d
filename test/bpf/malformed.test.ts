// Malformed input is never mistranslated: truncated headers, bad IHL, lying
// length fields, IPv6 extension chains beyond the walker's bound, unknown
// protocols, zero-length payloads. Each either passes (-1) with the packet
// unchanged or is dropped (TC_ACT_SHOT) with the expected reason counted,
// at ingress (towards a Service) and at egress (a tracked flow's reply).
// Full maps: a full conntrack LRU evicts (no drop); a full Service map gives
// the writer a BpfMapError that names the map.
//
// Address plan (IPv4 / IPv6):
//   client    198.18.0.70             2001:2::1:70
//   VIP       198.19.0.1              2001:2:0:ff::1      TCP :80, UDP :53
//   backend   198.18.1.1              2001:2::2:1         TCP :8080, UDP :5353
//   VIPs      198.19.1.0/24           2001:2:0:ff::1:0/112 (filling the tiny maps)
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BpfMapError } from '../../src/bpf/errors.js';
import {
  BpfHarness,
  TC_ACT_OK,
  TC_ACT_SHOT,
  TC_ACT_UNSPEC,
  countedOnce,
  expectChecksumsOk,
  flowFrame,
  planOf,
  type Family,
  type L4Proto,
  FAMILIES,
  VIP_PORT,
  TARGET_PORT,
} from '../lib/bpf-harness.js';
import {
  IPPROTO,
  corrupt,
  ipv4Raw,
  ipv6Raw,
  parseFrame,
  patch,
  rewrite,
  setIpv4Ihl,
  setIpv4TotalLength,
  setIpv6PayloadLength,
  truncate,
  type Ipv6ExtHeader,
} from '../lib/packet.js';
import { addService, type ServiceSpec } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-malformed';
const ROOT_TINY = '/sys/fs/bpf/strait-test-malformed-tiny';
const CPORT = 54000;
const ETH = 14;

let h: BpfHarness | undefined;
let tiny: BpfHarness | undefined;
const harness = (): BpfHarness => h!;

/** A request to the VIP (ingress) or a reply of the tracked flow (egress). */
function base(family: Family, proto: L4Proto, dir: 'ingress' | 'egress', extra: { payload?: string; extHeaders?: readonly Ipv6ExtHeader[] } = {}): Buffer {
  const p = planOf(family);
  const f =
    dir === 'ingress'
      ? { src: p.client(70), dst: p.vip(1), sport: CPORT, dport: VIP_PORT[proto] }
      : { src: p.backend(1), dst: p.client(70), sport: TARGET_PORT[proto], dport: CPORT };
  return flowFrame(family, proto, { ...f, flags: dir === 'ingress' ? { syn: true } : { syn: true, ack: true }, payload: extra.payload ?? 'payload', ...(extra.extHeaders ? { extHeaders: extra.extHeaders } : {}) });
}

/** Cuts a frame after `l3Bytes` bytes of IP and fixes the IP length field to match (a consistent, short packet). */
function shortPacket(frame: Buffer, l3Bytes: number): Buffer {
  const cut = truncate(frame, ETH + l3Bytes);
  return parseFrame(frame).ip.version === 4 ? setIpv4TotalLength(cut, l3Bytes) : setIpv6PayloadLength(cut, l3Bytes - 40);
}

type Expect = 'pass' | 'pass_unknown_proto' | `drop_${string}`;
interface Case {
  name: string;
  family: Family;
  build: (dir: 'ingress' | 'egress') => Buffer;
  ingress: Expect;
  egress: Expect;
}

const cases: Case[] = [];
const add = (name: string, family: Family, build: Case['build'], ingress: Expect, egress: Expect = ingress): void => {
  cases.push({ name, family, build, ingress, egress });
};

// ---- IPv4 ----
add('IPv4: version 6 in the IPv4 header', 4, (d) => patch(base(4, 'tcp', d), ETH, [0x65]), 'drop_invalid_l3');
add('IPv4: IP header only, total length claims more', 4, (d) => truncate(base(4, 'tcp', d), ETH + 20), 'drop_invalid_l3');
add('IPv4: IHL 4', 4, (d) => setIpv4Ihl(base(4, 'tcp', d), 4), 'drop_invalid_ihl');
add('IPv4: IHL 0', 4, (d) => setIpv4Ihl(base(4, 'tcp', d), 0), 'drop_invalid_ihl');
add('IPv4: IHL 15, beyond the packet', 4, (d) => setIpv4Ihl(base(4, 'udp', d, { payload: '' }), 15), 'drop_invalid_ihl');
add('IPv4: total length beyond the packet', 4, (d) => setIpv4TotalLength(base(4, 'tcp', d), base(4, 'tcp', d).length), 'drop_invalid_l3');
add('IPv4: total length below the header length', 4, (d) => setIpv4TotalLength(base(4, 'tcp', d), 19), 'drop_invalid_l3');
add('IPv4: TCP header cut to the ports (4 bytes)', 4, (d) => shortPacket(base(4, 'tcp', d), 24), 'drop_invalid_l4', 'pass');
add('IPv4: TCP header cut at 19 bytes', 4, (d) => shortPacket(base(4, 'tcp', d), 39), 'drop_invalid_l4', 'pass');
add('IPv4: TCP header cut to 2 bytes (no ports)', 4, (d) => shortPacket(base(4, 'tcp', d), 22), 'pass');
add('IPv4: UDP header cut at 6 bytes', 4, (d) => shortPacket(base(4, 'udp', d), 26), 'drop_invalid_l4', 'pass');
add('IPv4: protocol TCP, zero-length IP payload', 4, (d) => shortPacket(base(4, 'tcp', d), 20), 'pass');
add('IPv4: protocol UDP, zero-length IP payload', 4, (d) => shortPacket(base(4, 'udp', d), 20), 'pass');
add('IPv4: unknown protocol 253 (experimental), port-shaped bytes', 4, (d) => {
  const p = planOf(4);
  const payload = Buffer.from([0xd2, 0xf0, 0x00, 0x50, 0, 0, 0, 0]);
  return d === 'ingress' ? ipv4Raw({ src: p.client(70), dst: p.vip(1), proto: 253, payload }) : ipv4Raw({ src: p.backend(1), dst: p.client(70), proto: 253, payload });
}, 'pass_unknown_proto');
add('IPv4: protocol 0, zero-length payload', 4, (d) => {
  const p = planOf(4);
  return d === 'ingress' ? ipv4Raw({ src: p.client(70), dst: p.vip(1), proto: 0, payload: '' }) : ipv4Raw({ src: p.backend(1), dst: p.client(70), proto: 0, payload: '' });
}, 'pass_unknown_proto');

// ---- IPv6 ----
const dstOpts = (n: number): Ipv6ExtHeader[] => Array.from({ length: n }, () => ({ type: 'dst' }) as const);
add('IPv6: IP header only, payload length claims more', 6, (d) => truncate(base(6, 'tcp', d), ETH + 40), 'drop_invalid_l3');
add('IPv6: version 4 in the IPv6 header', 6, (d) => patch(base(6, 'tcp', d), ETH, [0x46]), 'drop_invalid_l3');
add('IPv6: payload length beyond the packet', 6, (d) => setIpv6PayloadLength(base(6, 'tcp', d), 1000), 'drop_invalid_l3');
add('IPv6: 9 extension headers (beyond the walker\'s 8)', 6, (d) => base(6, 'tcp', d, { extHeaders: dstOpts(9) }), 'drop_ipv6_ext_chain');
add('IPv6: 12 extension headers', 6, (d) => base(6, 'udp', d, { extHeaders: [{ type: 'hop' }, ...dstOpts(11)] }), 'drop_ipv6_ext_chain');
add('IPv6: extension header announced, packet ends first', 6, (d) => shortPacket(base(6, 'tcp', d, { extHeaders: dstOpts(1) }), 40), 'drop_invalid_l3');
add('IPv6: TCP header cut to the ports (4 bytes)', 6, (d) => shortPacket(base(6, 'tcp', d), 44), 'drop_invalid_l4', 'pass');
add('IPv6: TCP header cut at 19 bytes behind 2 extension headers', 6, (d) => shortPacket(base(6, 'tcp', d, { extHeaders: dstOpts(2) }), 40 + 16 + 19), 'drop_invalid_l4', 'pass');
add('IPv6: TCP header cut to 2 bytes (no ports)', 6, (d) => shortPacket(base(6, 'tcp', d), 42), 'pass');
add('IPv6: UDP header cut at 6 bytes', 6, (d) => shortPacket(base(6, 'udp', d), 46), 'drop_invalid_l4', 'pass');
add('IPv6: next header TCP, nothing after the IPv6 header', 6, (d) => shortPacket(base(6, 'tcp', d), 40), 'pass');
add('IPv6: no next header (59), zero-length payload', 6, (d) => {
  const p = planOf(6);
  return d === 'ingress' ? ipv6Raw({ src: p.client(70), dst: p.vip(1), proto: IPPROTO.NONE, payload: '' }) : ipv6Raw({ src: p.backend(1), dst: p.client(70), proto: IPPROTO.NONE, payload: '' });
}, 'pass_unknown_proto');
add('IPv6: unknown protocol behind 3 extension headers', 6, (d) => {
  const p = planOf(6);
  const payload = Buffer.from([0xd2, 0xf0, 0x00, 0x50, 0, 0, 0, 0]);
  const extHeaders = [{ type: 'hop' }, { type: 'routing' }, { type: 'dst' }] as const;
  return d === 'ingress'
    ? ipv6Raw({ src: p.client(70), dst: p.vip(1), proto: 253, payload, extHeaders })
    : ipv6Raw({ src: p.backend(1), dst: p.client(70), proto: 253, payload, extHeaders });
}, 'pass_unknown_proto');

const table = cases.flatMap((c) => (['ingress', 'egress'] as const).map((dir) => [`${c.name} (${dir})`, c, dir] as [string, Case, 'ingress' | 'egress']));

beforeAll(() => {
  h = BpfHarness.open(ROOT);
  for (const family of FAMILIES) {
    const p = planOf(family);
    for (const proto of ['tcp', 'udp'] as const) {
      const id = family * 10 + (proto === 'tcp' ? 1 : 2);
      addService(h.dp, { id, vip: p.vip(1), port: VIP_PORT[proto], proto, backends: [{ id: id * 10, addr: p.backend(1), port: TARGET_PORT[proto] }] });
    }
  }
});

afterAll(() => {
  try {
    BpfHarness.destroy(h, ROOT);
  } finally {
    BpfHarness.destroy(tiny, ROOT_TINY);
  }
});

beforeEach(() => {
  // A tracked flow for every family and protocol, so the egress cases are
  // replies conntrack knows: anything but a well-formed reply must still pass.
  harness().clearFlows();
  for (const family of FAMILIES) {
    for (const proto of ['tcp', 'udp'] as const) {
      expect(harness().ingress(base(family, proto, 'ingress')).retval).toBe(TC_ACT_OK);
    }
  }
});

describe('malformed packets are passed untouched or dropped with their reason', () => {
  it.each(table)('%s', (_name, c, dir) => {
    const input = c.build(dir);
    const want = c[dir];
    const r = harness().run(dir, input);
    expect(r.retval).toBe(want.startsWith('drop_') ? TC_ACT_SHOT : TC_ACT_UNSPEC);
    expect(r.counted).toEqual(countedOnce(want, dir, input));
    expect(r.data).toEqual(input);
  });

  it.each(FAMILIES)('IPv%i: the well-formed packets the cases start from are translated (the cases test what they say)', (family) => {
    for (const proto of ['tcp', 'udp'] as const) {
      const req = base(family, proto, 'ingress');
      expect(harness().ingress(req).data).toEqual(rewrite(req, { dst: planOf(family).backend(1), dport: TARGET_PORT[proto] }));
      const rep = base(family, proto, 'egress');
      expect(harness().egress(rep).data).toEqual(rewrite(rep, { src: planOf(family).vip(1), sport: VIP_PORT[proto] }));
    }
  });

  it('IPv6: 8 extension headers (the walker\'s bound) are walked and the packet translated', () => {
    const input = base(6, 'tcp', 'ingress', { extHeaders: dstOpts(8) });
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    expectChecksumsOk(r.data);
    expect(r.data).toEqual(rewrite(input, { dst: planOf(6).backend(1), dport: 8080 }));
  });

  it('IPv4: an Ethernet-padded frame (total length below the frame) is translated, padding untouched', () => {
    const datagram = base(4, 'udp', 'ingress', { payload: '' });
    const input = Buffer.concat([datagram, Buffer.alloc(60 - datagram.length, 0xee)]);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.data).toEqual(Buffer.concat([rewrite(datagram, { dst: planOf(4).backend(1), dport: 5353 }), Buffer.alloc(60 - datagram.length, 0xee)]));
  });

  it('IPv4: the total length ends inside the TCP header while the frame goes on: not translated from bytes outside the datagram', () => {
    // 20 bytes of IP + 10 of TCP claimed; the rest of the TCP header sits in
    // what is, for IP, Ethernet padding. Nothing past the datagram may be
    // read as its L4 header.
    const input = setIpv4TotalLength(base(4, 'tcp', 'ingress', { payload: '' }), 30);
    const r = harness().ingress(input);
    expect(r.data).toEqual(input);
    expect(r.counted).toEqual(countedOnce('drop_invalid_l4', 'ingress', input));
    expect(r.retval).toBe(TC_ACT_SHOT);
  });

  it.each(FAMILIES)('IPv%i: bad checksums stay bad: translation never repairs a corrupted packet', (family) => {
    const good = base(family, 'tcp', 'ingress');
    const p = parseFrame(good);
    let input = corrupt(good, p.l4.checksumOffset!, 0x01);
    if (family === 4) input = corrupt(input, ETH + 10, 0x01);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    const out = parseFrame(r.data);
    expect(out.l4.checksumStatus).toBe('bad');
    if (family === 4) expect(out.ip.headerChecksumOk).toBe(false);
    expect(r.data).toEqual(rewrite(input, { dst: planOf(family).backend(1), dport: 8080 }));
  });

  // The kernel's test run refuses these before the program sees them, so the
  // datapath's own DROP_INVALID_L3 for a cut IP header is only reachable
  // with real traffic; the rows pin the refusal, so a kernel that starts
  // accepting them makes these cases fail instead of passing unchecked.
  const refused: [string, () => Buffer][] = [
    ['13 bytes: shorter than an Ethernet header', () => Buffer.alloc(13)],
    ['IPv4: Ethernet header only (EtherType IPv4, no IP header)', () => truncate(base(4, 'tcp', 'ingress'), ETH)],
    ['IPv4: IP header cut at 19 bytes', () => truncate(base(4, 'tcp', 'ingress'), ETH + 19)],
    ['IPv6: Ethernet header only (EtherType IPv6, no IP header)', () => truncate(base(6, 'tcp', 'ingress'), ETH)],
    ['IPv6: IP header cut at 39 bytes', () => truncate(base(6, 'tcp', 'ingress'), ETH + 39)],
  ];
  it.each(refused)('%s: BPF_PROG_TEST_RUN refuses the frame (EINVAL); nothing is counted', (_name, build) => {
    const before = harness().metrics();
    expect(() => harness().ingress(build())).toThrow(/EINVAL/);
    expect(harness().metrics()).toEqual(before);
  });
});

describe('full maps', () => {
  /** Service i of the tiny maps: 198.19.1.i / 2001:2:0:ff::1:i, TCP :80 -> backend 2. */
  const spec = (family: Family, i: number): ServiceSpec => ({
    id: family * 100 + i,
    vip: family === 4 ? `198.19.1.${i}` : `2001:2:0:ff::1:${i}`,
    port: 80,
    proto: 'tcp',
    backends: [{ id: family * 100 + i, addr: planOf(family).backend(2), port: 8080 }],
  });

  beforeAll(() => {
    // services4/services6 hold 4 entries: fill them.
    tiny = BpfHarness.open(ROOT_TINY, { mapSizes: { ct4: 8, ct6: 8, services4: 4, services6: 4, backends4: 64, backends6: 64 } });
    for (const family of FAMILIES) for (let i = 1; i <= 4; i++) addService(tiny.dp, spec(family, i));
  });

  it.each(FAMILIES)('IPv%i: a full Service map gives the writer a BpfMapError that names the map', (family) => {
    let err: unknown;
    try {
      addService(tiny!.dp, spec(family, 5));
    } catch (e: unknown) {
      err = e;
    }
    expect(err).toBeInstanceOf(BpfMapError);
    const e = err as BpfMapError;
    expect(e.mapName).toBe(`services${family}`);
    expect(e.operation).toBe('update');
    expect(e.full).toBe(true);
    expect(e.message).toContain(`services${family}`);
    expect(e.message).toContain('full');
    expect(e.message).toContain(family === 4 ? '198.19.1.5' : '2001:2:0:ff::1:5');
    // The Services already there still work.
    const input = flowFrame(family, 'tcp', { src: planOf(family).client(70), dst: spec(family, 4).vip, sport: 54999, dport: 80 });
    expect(tiny!.ingress(input).retval).toBe(TC_ACT_OK);
  });

  it.each(FAMILIES)('IPv%i: a full conntrack LRU evicts old flows: new flows are translated, nothing is dropped', (family) => {
    // What a full conntrack does (documented, not a counted drop): ct4/ct6
    // are LRU maps, so an insert evicts the least recently used entries and
    // never fails. An evicted flow's reply leaves untranslated (pass) until
    // the client's next packet picks the flow up again (same backend while
    // the slots are unchanged: the flow hash is deterministic).
    const p = planOf(family);
    const vip = family === 4 ? '198.19.1.1' : '2001:2:0:ff::1:1';
    const ct = family === 4 ? tiny!.dp.maps.ct4 : tiny!.dp.maps.ct6;
    expect(ct.maxEntries).toBe(8);
    const flows = 50;
    for (let i = 0; i < flows; i++) {
      const input = flowFrame(family, 'tcp', { src: p.client(70), dst: vip, sport: 55000 + i, dport: 80 });
      const r = tiny!.ingress(input);
      expect(r.retval, `flow ${i}`).toBe(TC_ACT_OK);
      expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    }
    expect(ct.count()).toBeLessThanOrEqual(8);
    expect(tiny!.metrics().filter((m) => m.reason.startsWith('drop_'))).toEqual([]);

    // The oldest flow was evicted: its reply passes untranslated ...
    const reply = flowFrame(family, 'tcp', { src: p.backend(2), dst: p.client(70), sport: 8080, dport: 55000, flags: { syn: true, ack: true } });
    const lost = tiny!.egress(reply);
    expect(lost.retval).toBe(TC_ACT_UNSPEC);
    expect(lost.counted).toEqual(countedOnce('pass', 'egress', reply));
    // ... until the client's next packet re-creates its entries.
    const ack = flowFrame(family, 'tcp', { src: p.client(70), dst: vip, sport: 55000, dport: 80, flags: { ack: true } });
    expect(tiny!.ingress(ack).data).toEqual(rewrite(ack, { dst: p.backend(2), dport: 8080 }));
    expect(tiny!.egress(reply).data).toEqual(rewrite(reply, { src: vip, sport: 80 }));
  });
});
