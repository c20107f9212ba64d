// Service DNAT at uplink ingress: a packet to VIP:port leaves for one of the
// Service's backends with every checksum right; everything else is left
// alone; the first packet creates the flow's SERVICE and REPLY conntrack
// entries with the lifetime of its state; backend choice spreads flows and is
// stable per flow.
//
// Address plan (IPv4 / IPv6):
//   clients   198.18.0.10-11          2001:2::1:10-11
//   VIP       198.19.0.1              2001:2:0:ff::1       TCP :80, UDP :53
//   other     198.19.0.2 (no Service) 2001:2:0:ff::2
//   backends  198.18.1.1-3            2001:2::2:1-3        TCP :8080, UDP :5353
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  CT_DIR_REPLY,
  CT_DIR_SERVICE,
  CT_F_CLOSING,
  CT_F_ESTABLISHED,
  IPPROTO_TCP,
  IPPROTO_UDP,
  type CtEntry,
} from '../../src/bpf/abi.js';
import {
  BpfHarness,
  NS_PER_SEC,
  TC_ACT_OK,
  TC_ACT_UNSPEC,
  TEST_SETTINGS,
  countedOnce,
  expectChecksumsOk,
  expectLifetime,
  flowFrame,
  monotonicNs,
  planOf,
  type Family,
  type FlowFrame,
  type L4Proto,
  FAMILIES,
  CASES,
  VIP_PORT,
  TARGET_PORT,
} from '../lib/bpf-harness.js';
import {
  IPPROTO,
  internetChecksum,
  ipBytes,
  ipv4Icmp,
  ipv4Raw,
  ipv6Icmp,
  ipv6Raw,
  parseFrame,
  patch,
  pseudoHeader,
  rewrite,
  type TcpFlags,
} from '../lib/packet.js';
import { addService, type ServiceSpec } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-service-dnat';

let h: BpfHarness | undefined;
const services = new Map<string, ServiceSpec>();
const svc = (family: Family, proto: L4Proto): ServiceSpec => services.get(`${family}/${proto}`)!;
const harness = (): BpfHarness => h!;

/** A first packet of client port `sport` to the Service's VIP:port. */
function toVip(family: Family, proto: L4Proto, sport: number, extra: Partial<FlowFrame> = {}): Buffer {
  const p = planOf(family);
  return flowFrame(family, proto, { src: p.client(10), dst: p.vip(1), sport, dport: VIP_PORT[proto], payload: 'hello', ...extra });
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
          backends: [1, 2, 3].map((n) => ({ id: id * 10 + n, addr: p.backend(n), port: TARGET_PORT[proto] })),
        }),
      );
    }
  }
});

afterAll(() => BpfHarness.destroy(h, ROOT));

beforeEach(() => harness().clearFlows());

describe('DNAT of Service traffic', () => {
  it.each(CASES)('IPv%i %s: the first packet to VIP:port goes to a backend, target port, checksums right', (family, proto) => {
    const input = toVip(family, proto, 40000);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    const out = expectChecksumsOk(r.data);
    const backend = svc(family, proto).backends.find((b) => b.addr === out.ip.dst);
    expect(backend, `output dst ${out.ip.dst} is a backend`).toBeDefined();
    expect(out.l4.dport).toBe(TARGET_PORT[proto]);
    expect(r.data).toEqual(rewrite(input, { dst: out.ip.dst, dport: TARGET_PORT[proto] }));
    // The client side is untouched.
    expect(out.ip.src).toBe(planOf(family).client(10));
    expect(out.l4.sport).toBe(40000);
  });

  it.each(CASES)('IPv%i %s: later packets of the flow are translated the same way', (family, proto) => {
    const first = harness().ingress(toVip(family, proto, 40001));
    const dst = parseFrame(first.data).ip.dst;
    for (const payload of ['second', 'third packet, longer payload', '']) {
      const input = toVip(family, proto, 40001, { payload, flags: { ack: true, psh: true } });
      const r = harness().ingress(input);
      expect(r.retval).toBe(TC_ACT_OK);
      expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
      expectChecksumsOk(r.data);
      expect(r.data).toEqual(rewrite(input, { dst, dport: TARGET_PORT[proto] }));
    }
  });

  it('IPv4 UDP without checksum (0) keeps 0', () => {
    const input = toVip(4, 'udp', 40002, { checksum: 'zero' });
    expect(parseFrame(input).l4.checksum).toBe(0);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    const out = expectChecksumsOk(r.data, { udpZero: true });
    expect(out.l4.checksum).toBe(0);
    expect(r.data).toEqual(rewrite(input, { dst: out.ip.dst, dport: 5353 }));
  });

  it('IPv4 UDP whose translated checksum is 0 is sent as 0xffff, never as 0 ("no checksum")', () => {
    const p = planOf(4);
    const cport = 40003;
    // Learn the flow's backend; the payload does not take part in the choice.
    const probe = harness().ingress(toVip(4, 'udp', cport));
    const backend = parseFrame(probe.data).ip.dst;
    // A payload whose last 16-bit word cancels the translated datagram's sum.
    const body = Buffer.from('abcd\0\0');
    const asDelivered = flowFrame(4, 'udp', { src: p.client(10), dst: backend, sport: cport, dport: 5353, payload: body, checksum: 'zero' });
    const sumWord = internetChecksum(
      pseudoHeader(ipBytes(p.client(10)), ipBytes(backend), IPPROTO.UDP, 8 + body.length),
      asDelivered.subarray(14 + 20),
    );
    body.writeUInt16BE(sumWord, 4);
    const input = toVip(4, 'udp', cport, { payload: body });
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    const out = expectChecksumsOk(r.data);
    expect(out.ip.dst).toBe(backend);
    expect(out.l4.checksum).toBe(0xffff);
    expect(r.data).toEqual(rewrite(input, { dst: backend, dport: 5353 }));
  });

  it.each(['tcp', 'udp'] as const)('IPv4 %s with IP options: translated, options kept, header checksum right', (proto) => {
    // Router Alert (4 bytes) + a Timestamp option (12 bytes): IHL 9.
    const options = Buffer.from([0x94, 0x04, 0x00, 0x00, 0x44, 0x0c, 0x05, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
    const input = toVip(4, proto, 40004, { ipOptions: options });
    expect(parseFrame(input).ip.ihl).toBe(9);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    const out = expectChecksumsOk(r.data);
    expect(out.ip.options).toEqual(options);
    expect(out.l4.dport).toBe(TARGET_PORT[proto]);
    expect(r.data).toEqual(rewrite(input, { dst: out.ip.dst, dport: TARGET_PORT[proto] }));
  });

  it.each(CASES)('IPv%i %s: a zero-length payload is translated too', (family, proto) => {
    const input = toVip(family, proto, 40005, { payload: '' });
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    const out = expectChecksumsOk(r.data);
    expect(r.data).toEqual(rewrite(input, { dst: out.ip.dst, dport: TARGET_PORT[proto] }));
  });

  it.each(['tcp', 'udp'] as const)('IPv6 %s behind hop-by-hop and destination options: translated', (proto) => {
    const input = toVip(6, proto, 40006, { extHeaders: [{ type: 'hop' }, { type: 'dst' }] });
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    const out = expectChecksumsOk(r.data);
    expect(out.ip.extHeaders.map((e) => e.type)).toEqual(['hop', 'dst']);
    expect(r.data).toEqual(rewrite(input, { dst: out.ip.dst, dport: TARGET_PORT[proto] }));
  });
});

describe('traffic that is not for a Service is left alone', () => {
  type Case = [string, Family, () => Buffer];
  const cases: Case[] = FAMILIES.flatMap((family): Case[] => {
    const p = planOf(family);
    const base = { src: p.client(10), sport: 41000, payload: 'not ours' };
    const icmp = family === 4 ? ipv4Icmp : ipv6Icmp;
    return [
      [`IPv${family} TCP to another address, Service port`, family, () => flowFrame(family, 'tcp', { ...base, dst: p.vip(2), dport: 80 })],
      [`IPv${family} TCP to the VIP, another port`, family, () => flowFrame(family, 'tcp', { ...base, dst: p.vip(1), dport: 81 })],
      [`IPv${family} UDP to the VIP's TCP port`, family, () => flowFrame(family, 'udp', { ...base, dst: p.vip(1), dport: 80 })],
      [`IPv${family} TCP to the VIP's UDP port`, family, () => flowFrame(family, 'tcp', { ...base, dst: p.vip(1), dport: 53 })],
      [`IPv${family} TCP straight to a backend`, family, () => flowFrame(family, 'tcp', { ...base, dst: p.backend(1), dport: 8080 })],
      [`IPv${family} TCP from the VIP's port (reply-shaped, inbound)`, family, () => flowFrame(family, 'tcp', { src: p.vip(1), dst: p.client(10), sport: 80, dport: 41000, flags: { syn: true, ack: true } })],
      [`IPv${family} ICMP echo request to the VIP`, family, () => icmp({ src: p.client(10), dst: p.vip(1), id: 7, seq: 1, payload: 'ping' })],
    ];
  });

  it.each(cases)('%s: -1, untouched, counted as pass', (_name, _family, build) => {
    const input = build();
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(input);
    expect(r.counted).toEqual(countedOnce('pass', 'ingress', input));
    expect(harness().dp.maps.ct4.count() + harness().dp.maps.ct6.count()).toBe(0);
  });

  it('a non-IP frame (ARP) passes untouched', () => {
    const arp = patch(toVip(4, 'tcp', 41001), 12, [0x08, 0x06]);
    const r = harness().ingress(arp);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(arp);
    expect(r.counted).toEqual(countedOnce('pass', 'ingress', arp));
  });

  const unknown: [string, Family, number][] = FAMILIES.flatMap((family): [string, Family, number][] => [
    [`IPv${family} GRE`, family, 47],
    [`IPv${family} ESP`, family, IPPROTO.ESP],
    [`IPv${family} PIM`, family, 103],
  ]);
  unknown.push(['IPv6 no next header', 6, IPPROTO.NONE]);

  it.each(unknown)('%s to the VIP: -1, untouched, counted as pass_unknown_proto', (_name, family, proto) => {
    const p = planOf(family);
    // Bytes that would read as ports 41002 -> 80 if anyone took them for TCP/UDP.
    const payload = Buffer.from([0xa0, 0x2a, 0x00, 0x50, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    const raw = family === 4 ? ipv4Raw : ipv6Raw;
    const input = raw({ src: p.client(10), dst: p.vip(1), proto, payload });
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(input);
    expect(r.counted).toEqual(countedOnce('pass_unknown_proto', 'ingress', input));
  });
});

describe('conntrack entries of a new flow', () => {
  const SYN: Partial<TcpFlags> = { syn: true };
  const ACK: Partial<TcpFlags> = { ack: true };
  const tcpBits = (f: Partial<TcpFlags>): number =>
    (f.fin ? 0x01 : 0) | (f.syn ? 0x02 : 0) | (f.rst ? 0x04 : 0) | (f.psh ? 0x08 : 0) | (f.ack ? 0x10 : 0);

  type StateCase = [string, L4Proto, Partial<TcpFlags>[], number, bigint];
  const states: StateCase[] = [
    ['TCP SYN: handshake state, SYN lifetime', 'tcp', [SYN], 0, TEST_SETTINGS.ctTcpSynNs],
    ['TCP SYN then ACK: established', 'tcp', [SYN, ACK], CT_F_ESTABLISHED, TEST_SETTINGS.ctTcpEstablishedNs],
    ['TCP bare ACK (loose pickup): established at once', 'tcp', [ACK], CT_F_ESTABLISHED, TEST_SETTINGS.ctTcpEstablishedNs],
    ['TCP FIN after the handshake: closing', 'tcp', [SYN, ACK, { fin: true, ack: true }], CT_F_ESTABLISHED | CT_F_CLOSING, TEST_SETTINGS.ctTcpClosingNs],
    ['TCP RST after the handshake: closing', 'tcp', [SYN, ACK, { rst: true }], CT_F_ESTABLISHED | CT_F_CLOSING, TEST_SETTINGS.ctTcpClosingNs],
    ['TCP SYN then RST: closing', 'tcp', [SYN, { rst: true, ack: true }], CT_F_CLOSING, TEST_SETTINGS.ctTcpClosingNs],
    ['UDP: UDP lifetime, no flags', 'udp', [{}], 0, TEST_SETTINGS.ctUdpNs],
  ];
  const withFamilies = FAMILIES.flatMap((family) => states.map((s) => [`IPv${family} ${s[0]}`, family, ...s.slice(1)] as [string, Family, L4Proto, Partial<TcpFlags>[], number, bigint]));

  it.each(withFamilies)('%s', (_name, family, proto, packets, flags, lifetime) => {
    const p = planOf(family);
    const service = svc(family, proto);
    const cport = 42000;
    const before = monotonicNs();
    let dst = '';
    for (const f of packets) {
      const r = harness().ingress(toVip(family, proto, cport, { flags: f }));
      expect(r.retval).toBe(TC_ACT_OK);
      dst = parseFrame(r.data).ip.dst;
    }
    const after = monotonicNs();
    const backend = service.backends.find((b) => b.addr === dst)!;
    const protoNum = proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP;
    const ct = (family === 4 ? harness().dp.maps.ct4 : harness().dp.maps.ct6) as {
      lookup(k: object): CtEntry | undefined;
      count(): number;
    };
    const serviceKey = { saddr: p.client(10), daddr: p.vip(1), sport: cport, dport: VIP_PORT[proto], proto: protoNum, dir: CT_DIR_SERVICE };
    const replyKey = { saddr: backend.addr, daddr: p.client(10), sport: TARGET_PORT[proto], dport: cport, proto: protoNum, dir: CT_DIR_REPLY };
    const s = ct.lookup(serviceKey);
    const rep = ct.lookup(replyKey);
    expect(s, 'SERVICE entry').toBeDefined();
    expect(rep, 'REPLY entry').toBeDefined();
    expect(ct.count()).toBe(2);
    for (const e of [s!, rep!]) {
      expect(e.backendId).toBe(backend.id);
      expect(e.revNatId).toBe(service.id);
      expect(e.flags).toBe(flags);
      expectLifetime(e.expires, lifetime, before, after);
      const createdS = BigInt(e.created);
      expect(createdS >= before / NS_PER_SEC - 1n && createdS <= after / NS_PER_SEC).toBe(true);
    }
    // Both entries carry one deadline: the silent direction never expires first.
    expect(rep!.expires).toBe(s!.expires);
    // TCP flags seen are per direction: the client's on SERVICE, none yet on REPLY.
    expect(s!.tcpFlags).toBe(proto === 'tcp' ? packets.reduce((acc, f) => acc | tcpBits(f), 0) : 0);
    expect(rep!.tcpFlags).toBe(0);
  });
});

describe('backend selection', () => {
  const FLOWS = 600;

  it.each(CASES)('IPv%i %s: flows spread over every backend, each flow sticks to its backend', (family, proto) => {
    const service = svc(family, proto);
    const chosen = new Map<number, string>();
    for (let i = 0; i < FLOWS; i++) {
      const r = harness().ingress(toVip(family, proto, 20000 + i));
      expect(r.retval).toBe(TC_ACT_OK);
      chosen.set(i, parseFrame(r.data).ip.dst);
    }
    const counts = new Map<string, number>();
    for (const dst of chosen.values()) counts.set(dst, (counts.get(dst) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual(service.backends.map((b) => b.addr).sort());
    for (const [addr, n] of counts) expect(n, `${addr} got ${n} of ${FLOWS}`).toBeGreaterThan(FLOWS * 0.2);

    // The same flow again (conntrack hit) and after its entries are gone
    // (deterministic flow hash, unchanged slots): always the same backend.
    for (const pass of ['tracked', 'untracked']) {
      if (pass === 'untracked') harness().clearFlows();
      for (let i = 0; i < FLOWS; i += 7) {
        const r = harness().ingress(toVip(family, proto, 20000 + i, { flags: { ack: true } }));
        expect(parseFrame(r.data).ip.dst, `${pass} flow ${i}`).toBe(chosen.get(i));
      }
    }
  });
});
