// Fragments: tc sees them before reassembly, so only the first fragment
// carries the ports. The first fragment of a datagram to a Service is
// translated and recorded; later fragments of the same datagram follow it
// (same new address), so the datagram reassembles at the backend whole, with
// a UDP checksum that verifies against the backend's address. The same holds
// for a backend's fragmented reply at egress. A later fragment whose first
// was never seen is left alone (frag.h: it cannot tell cheaply whether it is
// Service traffic).
//
// Address plan (IPv4 / IPv6):
//   client    198.18.0.60             2001:2::1:60
//   VIP       198.19.0.1              2001:2:0:ff::1      UDP :53 (one backend)
//   other     198.19.0.2 (no Service) 2001:2:0:ff::2
//   backend   198.18.1.1              2001:2::2:1         UDP :5353
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FRAG_REWRITE_DADDR, FRAG_REWRITE_SADDR, IPPROTO_UDP } from '../../src/bpf/abi.js';
import {
  BpfHarness,
  TC_ACT_OK,
  TC_ACT_UNSPEC,
  countedOnce,
  flowFrame,
  planOf,
  type Family,
  FAMILIES,
} from '../lib/bpf-harness.js';
import {
  ipv4UdpFragments,
  ipv6UdpFragments,
  parseFrame,
  reassemble,
  rewrite,
  type ParsedFrame,
} from '../lib/packet.js';
import { addService } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-fragments';
const PAYLOAD = Buffer.from(Array.from({ length: 4000 }, (_, i) => (i * 7 + 3) & 0xff));
const FRAG_SIZE = 1448; // a multiple of 8: three fragments of a 4008-byte UDP datagram

let h: BpfHarness | undefined;
const harness = (): BpfHarness => h!;

/** The UDP datagram client:cport -> dst:53 in fragments (IPv4 id / IPv6 fragment id `id`). */
function fragments(family: Family, o: { src: string; dst: string; sport: number; dport: number; id: number; checksum?: 'zero' }): Buffer[] {
  return family === 4
    ? ipv4UdpFragments({ ...o, payload: PAYLOAD, fragmentSize: FRAG_SIZE })
    : ipv6UdpFragments({ ...o, payload: PAYLOAD, fragmentSize: FRAG_SIZE, fragmentId: o.id });
}

const toVip = (family: Family, cport: number, id: number, extra: { checksum?: 'zero'; dst?: string } = {}): Buffer[] => {
  const p = planOf(family);
  return fragments(family, { src: p.client(60), dst: extra.dst ?? p.vip(1), sport: cport, dport: 53, id, ...(extra.checksum ? { checksum: extra.checksum } : {}) });
};

/** Asserts the reassembled datagram is the original one, addressed and checksummed as expected. */
function expectWhole(out: Buffer[], want: { src: string; dst: string; sport: number; dport: number; udpZero?: boolean }): ParsedFrame {
  const whole = parseFrame(reassemble(out));
  expect([whole.ip.src, whole.ip.dst, whole.l4.sport, whole.l4.dport]).toEqual([want.src, want.dst, want.sport, want.dport]);
  expect(whole.payload).toEqual(PAYLOAD);
  expect(whole.l4.checksumStatus, 'UDP checksum of the reassembled datagram').toBe(want.udpZero ? 'absent' : 'ok');
  if (whole.ip.version === 4) expect(whole.ip.headerChecksumOk).toBe(true);
  return whole;
}

beforeAll(() => {
  h = BpfHarness.open(ROOT);
  for (const family of FAMILIES) {
    const p = planOf(family);
    addService(h.dp, { id: family, vip: p.vip(1), port: 53, proto: 'udp', backends: [{ id: family * 10, addr: p.backend(1), port: 5353 }] });
  }
});

afterAll(() => BpfHarness.destroy(h, ROOT));

beforeEach(() => harness().clearFlows());

describe.each(FAMILIES)('IPv%i fragments of a datagram to a Service', (family) => {
  const p = planOf(family);

  it('the first fragment is translated, the later ones follow: the datagram reaches the backend whole', () => {
    const frags = toVip(family, 53000, 0x4401);
    expect(frags).toHaveLength(3);
    const out = frags.map((input, i) => {
      const r = harness().ingress(input);
      expect(r.retval, `fragment ${i}`).toBe(TC_ACT_OK);
      expect(r.counted).toEqual(countedOnce(i === 0 ? 'service_dnat' : 'frag_xlate', 'ingress', input));
      const f = parseFrame(r.data);
      expect(f.ip.dst).toBe(p.backend(1));
      if (family === 4) expect(f.ip.headerChecksumOk, `fragment ${i} header checksum`).toBe(true);
      expect(r.data).toEqual(rewrite(input, i === 0 ? { dst: p.backend(1), dport: 5353 } : { dst: p.backend(1) }));
      return r.data;
    });
    expectWhole(out, { src: p.client(60), dst: p.backend(1), sport: 53000, dport: 5353 });
  });

  it('a later fragment whose first was never seen is left alone (pass_fragment)', () => {
    const [, second, third] = toVip(family, 53001, 0x4402);
    for (const input of [second!, third!]) {
      const r = harness().ingress(input);
      expect(r.retval).toBe(TC_ACT_UNSPEC);
      expect(r.data).toEqual(input);
      expect(r.counted).toEqual(countedOnce('pass_fragment', 'ingress', input));
    }
  });

  it('a later fragment of another datagram (other id) does not follow a recorded first', () => {
    const [first] = toVip(family, 53002, 0x4403);
    const [, stranger] = toVip(family, 53002, 0x4404);
    expect(harness().ingress(first!).retval).toBe(TC_ACT_OK);
    const r = harness().ingress(stranger!);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(stranger);
    expect(r.counted).toEqual(countedOnce('pass_fragment', 'ingress', stranger!));
  });

  it('reordered: a later fragment before its first passes untranslated; those after the first follow', () => {
    const [first, second, third] = toVip(family, 53003, 0x4405);
    const early = harness().ingress(third!);
    expect(early.retval).toBe(TC_ACT_UNSPEC);
    expect(early.data).toEqual(third);
    expect(harness().ingress(first!).retval).toBe(TC_ACT_OK);
    const late = harness().ingress(second!);
    expect(late.retval).toBe(TC_ACT_OK);
    expect(late.data).toEqual(rewrite(second!, { dst: p.backend(1) }));
  });

  it('fragments of a datagram to no Service are left alone', () => {
    const frags = toVip(family, 53004, 0x4406, { dst: p.vip(2) });
    frags.forEach((input, i) => {
      const r = harness().ingress(input);
      expect(r.retval).toBe(TC_ACT_UNSPEC);
      expect(r.data).toEqual(input);
      expect(r.counted).toEqual(countedOnce(i === 0 ? 'pass' : 'pass_fragment', 'ingress', input));
    });
  });

  it('a backend\'s fragmented reply leaves from the VIP whole: the first is reverse-NATed, the later ones follow', () => {
    const open = harness().ingress(flowFrame(family, 'udp', { src: p.client(60), dst: p.vip(1), sport: 53005, dport: 53, payload: 'q' }));
    expect(open.retval).toBe(TC_ACT_OK);
    const frags = fragments(family, { src: p.backend(1), dst: p.client(60), sport: 5353, dport: 53005, id: 0x4407 });
    const out = frags.map((input, i) => {
      const r = harness().egress(input);
      expect(r.retval, `reply fragment ${i}`).toBe(TC_ACT_OK);
      expect(r.counted).toEqual(countedOnce(i === 0 ? 'revnat' : 'frag_xlate', 'egress', input));
      expect(r.data).toEqual(rewrite(input, i === 0 ? { src: p.vip(1), sport: 53 } : { src: p.vip(1) }));
      return r.data;
    });
    expectWhole(out, { src: p.vip(1), dst: p.client(60), sport: 53, dport: 53005 });
  });

  it('a later reply fragment whose first was never seen is left alone', () => {
    const [, second] = fragments(family, { src: p.backend(1), dst: p.client(60), sport: 5353, dport: 53006, id: 0x4408 });
    const r = harness().egress(second!);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(second);
    expect(r.counted).toEqual(countedOnce('pass_fragment', 'egress', second!));
  });

  it('ingress and egress records do not cross: a reply fragment does not follow an ingress first', () => {
    // The same {src, dst, id, proto} seen at ingress as a request must not steer an egress fragment.
    const [first, second] = toVip(family, 53007, 0x4409);
    expect(harness().ingress(first!).retval).toBe(TC_ACT_OK);
    const r = harness().egress(second!);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(second);
  });
});

describe('IPv4 specifics', () => {
  it('a fragmented datagram without UDP checksum (0) keeps 0', () => {
    const p = planOf(4);
    const frags = toVip(4, 53100, 0x4501, { checksum: 'zero' });
    const out = frags.map((input) => {
      const r = harness().ingress(input);
      expect(r.retval).toBe(TC_ACT_OK);
      return r.data;
    });
    expect(parseFrame(out[0]!).l4.checksum).toBe(0);
    expectWhole(out, { src: p.client(60), dst: p.backend(1), sport: 53100, dport: 5353, udpZero: true });
  });

  it('the first fragment records where the rest go, keyed by the datagram as it arrived', () => {
    const p = planOf(4);
    const [first] = toVip(4, 53101, 0x4502);
    harness().ingress(first!);
    expect(harness().dp.maps.frag4.lookup({ saddr: p.client(60), daddr: p.vip(1), id: 0x4502, proto: IPPROTO_UDP })).toEqual({
      addr: p.backend(1),
      rewrite: FRAG_REWRITE_DADDR,
    });
    harness().ingress(flowFrame(4, 'udp', { src: p.client(60), dst: p.vip(1), sport: 53102, dport: 53, payload: 'q' }));
    const [reply] = fragments(4, { src: p.backend(1), dst: p.client(60), sport: 5353, dport: 53102, id: 0x4503 });
    harness().egress(reply!);
    expect(harness().dp.maps.frag4.lookup({ saddr: p.backend(1), daddr: p.client(60), id: 0x4503, proto: IPPROTO_UDP })).toEqual({
      addr: p.vip(1),
      rewrite: FRAG_REWRITE_SADDR,
    });
  });
});
