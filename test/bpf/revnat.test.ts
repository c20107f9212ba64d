// Reverse NAT at uplink egress: a backend's reply to a client of a tracked
// flow leaves from VIP:port with every checksum right and marks the flow as
// answered; a reply-shaped packet that conntrack does not know is left alone.
//
// Address plan (IPv4 / IPv6):
//   client    198.18.0.30             2001:2::1:30
//   VIP       198.19.0.1              2001:2:0:ff::1      TCP :80, UDP :53
//   backends  198.18.1.1-2            2001:2::2:1-2       :8080 (TCP), :5353 (UDP)
//   stranger  198.18.1.7              2001:2::2:7         (not a backend)
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  CT_DIR_REPLY,
  CT_DIR_SERVICE,
  CT_F_ESTABLISHED,
  CT_F_SEEN_REPLY,
  IPPROTO_TCP,
  IPPROTO_UDP,
  type Ct4Key,
  type Ct6Key,
  type CtEntry,
} from '../../src/bpf/abi.js';
import type { BpfMap } from '../../src/bpf/map.js';
import {
  BpfHarness,
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
import { ipv4Icmp, ipv6Icmp, ICMP4, ICMP6, parseFrame, rewrite, type TcpFlags } from '../lib/packet.js';
import { addService, type ServiceSpec } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-revnat';
const SYN_ACK: Partial<TcpFlags> = { syn: true, ack: true };

let h: BpfHarness | undefined;
const harness = (): BpfHarness => h!;
const services = new Map<string, ServiceSpec>();

const ctMap = (family: Family): BpfMap<Ct4Key | Ct6Key, CtEntry> =>
  (family === 4 ? harness().dp.maps.ct4 : harness().dp.maps.ct6) as BpfMap<Ct4Key | Ct6Key, CtEntry>;
const protoNum = (proto: L4Proto): number => (proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP);

/** Opens a flow from client port `cport` through the VIP; returns the backend it went to. */
function open(family: Family, proto: L4Proto, cport: number): string {
  const p = planOf(family);
  const r = harness().ingress(flowFrame(family, proto, { src: p.client(30), dst: p.vip(1), sport: cport, dport: VIP_PORT[proto], payload: 'q' }));
  expect(r.retval).toBe(TC_ACT_OK);
  return parseFrame(r.data).ip.dst;
}

/** A packet from `src`:`sport` to the client's `cport`. */
function reply(family: Family, proto: L4Proto, src: string, sport: number, cport: number, extra: Partial<FlowFrame> = {}): Buffer {
  return flowFrame(family, proto, { src, dst: planOf(family).client(30), sport, dport: cport, flags: SYN_ACK, payload: 'answer', ...extra });
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

describe('replies of tracked flows', () => {
  it.each(CASES)('IPv%i %s: the backend\'s reply leaves from VIP:port, checksums right', (family, proto) => {
    const b = open(family, proto, 50000);
    const input = reply(family, proto, b, TARGET_PORT[proto], 50000);
    const r = harness().egress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('revnat', 'egress', input));
    const out = expectChecksumsOk(r.data);
    expect(out.ip.src).toBe(planOf(family).vip(1));
    expect(out.l4.sport).toBe(VIP_PORT[proto]);
    expect(out.ip.dst).toBe(planOf(family).client(30));
    expect(out.l4.dport).toBe(50000);
    expect(r.data).toEqual(rewrite(input, { src: planOf(family).vip(1), sport: VIP_PORT[proto] }));
  });

  it.each(CASES)('IPv%i %s: the reply marks both entries seen-reply and keeps one deadline', (family, proto) => {
    const p = planOf(family);
    const b = open(family, proto, 50001);
    const t0 = monotonicNs();
    harness().egress(reply(family, proto, b, TARGET_PORT[proto], 50001));
    const t1 = monotonicNs();
    const s = ctMap(family).lookup({ saddr: p.client(30), daddr: p.vip(1), sport: 50001, dport: VIP_PORT[proto], proto: protoNum(proto), dir: CT_DIR_SERVICE })!;
    const rep = ctMap(family).lookup({ saddr: b, daddr: p.client(30), sport: TARGET_PORT[proto], dport: 50001, proto: protoNum(proto), dir: CT_DIR_REPLY })!;
    expect(s.flags).toBe(CT_F_SEEN_REPLY);
    expect(rep.flags).toBe(CT_F_SEEN_REPLY);
    expect(rep.expires).toBe(s.expires);
    // The deadline was refreshed by the reply: still the handshake's (TCP) or UDP's lifetime.
    expectLifetime(rep.expires, proto === 'tcp' ? TEST_SETTINGS.ctTcpSynNs : TEST_SETTINGS.ctUdpNs, t0, t1);
    // Flags seen are per direction: the reply's SYN+ACK on REPLY only.
    expect(rep.tcpFlags).toBe(proto === 'tcp' ? 0x12 : 0);
    expect(s.tcpFlags).toBe(proto === 'tcp' ? 0x02 : 0);
  });

  it.each(FAMILIES)('IPv%i TCP: the client\'s ACK after the reply makes the flow established, on both entries', (family) => {
    const p = planOf(family);
    const b = open(family, 'tcp', 50002);
    harness().egress(reply(family, 'tcp', b, 8080, 50002));
    const ack = flowFrame(family, 'tcp', { src: p.client(30), dst: p.vip(1), sport: 50002, dport: 80, flags: { ack: true } });
    expect(harness().ingress(ack).retval).toBe(TC_ACT_OK);
    const rep = ctMap(family).lookup({ saddr: b, daddr: p.client(30), sport: 8080, dport: 50002, proto: IPPROTO_TCP, dir: CT_DIR_REPLY })!;
    expect(rep.flags).toBe(CT_F_SEEN_REPLY | CT_F_ESTABLISHED);
  });

  it('IPv4 UDP reply without checksum (0) keeps 0', () => {
    const b = open(4, 'udp', 50003);
    const input = reply(4, 'udp', b, 5353, 50003, { checksum: 'zero' });
    const r = harness().egress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('revnat', 'egress', input));
    const out = expectChecksumsOk(r.data, { udpZero: true });
    expect(out.l4.checksum).toBe(0);
    expect(r.data).toEqual(rewrite(input, { src: planOf(4).vip(1), sport: 53 }));
  });

  it.each(CASES)('IPv%i %s: many replies in a row all leave from VIP:port', (family, proto) => {
    const b = open(family, proto, 50004);
    for (let i = 0; i < 20; i++) {
      const input = reply(family, proto, b, TARGET_PORT[proto], 50004, { flags: { ack: true, psh: true }, payload: `chunk ${i}`.repeat(i + 1) });
      const r = harness().egress(input);
      expect(r.retval).toBe(TC_ACT_OK);
      expectChecksumsOk(r.data);
      expect(r.data).toEqual(rewrite(input, { src: planOf(family).vip(1), sport: VIP_PORT[proto] }));
    }
  });
});

describe('reply-shaped packets conntrack does not know are left alone', () => {
  type Case = [string, Family, L4Proto, (b: string) => Buffer];
  const cases: Case[] = CASES.flatMap(([family, proto]): Case[] => {
    const p = planOf(family);
    const tp = TARGET_PORT[proto];
    return [
      [`IPv${family} ${proto}: no flow ever opened from that client port`, family, proto, (b) => reply(family, proto, b, tp, 50999)],
      [`IPv${family} ${proto}: from the flow's backend address, another source port`, family, proto, (b) => reply(family, proto, b, tp + 1, 50100)],
      [`IPv${family} ${proto}: from an address that is not the flow's backend`, family, proto, () => reply(family, proto, p.backend(7), tp, 50100)],
      [`IPv${family} ${proto}: to another client address`, family, proto, (b) => flowFrame(family, proto, { src: b, dst: p.client(31), sport: tp, dport: 50100, flags: SYN_ACK })],
      [`IPv${family} ${proto}: already from VIP:port (no double translation)`, family, proto, () => reply(family, proto, p.vip(1), VIP_PORT[proto], 50100)],
    ];
  });

  it.each(cases)('%s: -1, untouched, counted as pass', (_name, family, proto, build) => {
    const b = open(family, proto, 50100);
    const input = build(b);
    const r = harness().egress(input);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(input);
    expect(r.counted).toEqual(countedOnce('pass', 'egress', input));
  });

  it.each(CASES)('IPv%i %s: a reply whose entry expired is left alone', (family, proto) => {
    const p = planOf(family);
    const b = open(family, proto, 50101);
    const key = { saddr: b, daddr: p.client(30), sport: TARGET_PORT[proto], dport: 50101, proto: protoNum(proto), dir: CT_DIR_REPLY };
    const e = ctMap(family).lookup(key)!;
    ctMap(family).update(key, { ...e, expires: 1n });
    const input = reply(family, proto, b, TARGET_PORT[proto], 50101);
    const r = harness().egress(input);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(input);
    expect(r.counted).toEqual(countedOnce('pass', 'egress', input));
  });

  it.each(CASES)('IPv%i %s: a tracked reply whose frontend is gone is left alone, counted pass_reply_untracked', (family, proto) => {
    const b = open(family, proto, 50102);
    const svc = services.get(`${family}/${proto}`)!;
    const revnat = family === 4 ? harness().dp.maps.revnat4 : harness().dp.maps.revnat6;
    const saved = revnat.lookup(svc.id)!;
    revnat.delete(svc.id);
    try {
      const input = reply(family, proto, b, TARGET_PORT[proto], 50102);
      const r = harness().egress(input);
      expect(r.retval).toBe(TC_ACT_UNSPEC);
      expect(r.data).toEqual(input);
      expect(r.counted).toEqual(countedOnce('pass_reply_untracked', 'egress', input));
    } finally {
      (revnat as BpfMap<number, typeof saved>).update(svc.id, saved);
    }
  });

  it.each(FAMILIES)('IPv%i: an ICMP echo reply leaving is not ours', (family) => {
    const p = planOf(family);
    const input =
      family === 4
        ? ipv4Icmp({ src: p.backend(1), dst: p.client(30), type: ICMP4.ECHO_REPLY, id: 9, seq: 1 })
        : ipv6Icmp({ src: p.backend(1), dst: p.client(30), type: ICMP6.ECHO_REPLY, id: 9, seq: 1 });
    const r = harness().egress(input);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(input);
    expect(r.counted).toEqual(countedOnce('pass', 'egress', input));
  });
});
