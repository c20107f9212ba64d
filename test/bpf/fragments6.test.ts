// IPv6 fragments follow their first fragment through the Service translation
// (frag6), under BPF_PROG_TEST_RUN: the first fragment of a datagram to a VIP
// is DNATed and recorded, later fragments (no UDP header) get the same
// backend address; reply fragments leaving a backend get the VIP back; a
// later fragment whose first was never seen is left alone. The fragments of
// each run are put back together and the UDP checksum checked against the
// addresses the datagram now carries. One IPv4 case checks that the shared
// fragment path still serves frag4.
//
// Address plan (2001:2::/48, 198.18.0.0/15; test/lib/packet.ts PLAN4/PLAN6):
//   client    2001:2::1:20                  198.18.0.20
//   VIP       2001:2:0:ff::20  UDP :53      198.19.0.20  UDP :53
//   backends  2001:2::2:21-23  UDP :5353    198.18.1.21  UDP :5353
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FRAG_REWRITE_DADDR, FRAG_REWRITE_SADDR, IPPROTO_UDP } from '../../src/bpf/abi.js';
import { Dataplane, type MetricSample, type TcDirection } from '../../src/bpf/dataplane.js';
import { packageRoot } from '../../src/bpf/native.js';
import { progTestRun, skbContext } from '../../src/bpf/test-run.js';
import {
  IPPROTO,
  PLAN4,
  PLAN6,
  internetChecksum,
  ipBytes,
  ipv4UdpFragments,
  ipv6UdpFragments,
  parseFrame,
  pseudoHeader,
  reassemble,
  type ParsedFrame,
} from '../lib/packet.js';
import { addService, type ServiceSpec } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-frag6';
const OBJECT = join(packageRoot(), 'build', 'bpf', 'strait_tc.o');

/** tc verdicts as BPF_PROG_TEST_RUN reports them. */
const TC_ACT_UNSPEC = -1;
const TC_ACT_OK = 0;

/** Small tables: the defaults reserve hundreds of MB of conntrack. */
const SIZES: Record<string, number> = {
  services4: 64,
  services6: 64,
  service_slots: 256,
  maglev: 4,
  backends4: 256,
  backends6: 256,
  revnat4: 64,
  revnat6: 64,
  ct4: 256,
  ct6: 256,
  frag4: 64,
  frag6: 64,
  snat4: 64,
  snat6: 64,
  affinity4: 64,
  affinity6: 64,
  source_ranges4: 16,
  source_ranges6: 16,
};

const CLIENT6 = PLAN6.client(20);
const VIP6 = PLAN6.vip(20);
const BACKENDS6 = [21, 22, 23].map((n) => PLAN6.backend(n));
const CLIENT4 = PLAN4.client(20);
const VIP4 = PLAN4.vip(20);
const BACKEND4 = PLAN4.backend(21);
const SPORT = 40000;

/** 4000 bytes that are not all alike, so a misplaced chunk shows. */
const PAYLOAD = Buffer.from(Array.from({ length: 4000 }, (_, i) => (i * 7 + (i >> 8)) & 0xff));
const FRAGMENT_SIZE = 1232; // fragment data per frame: 4 fragments for 4008 bytes of UDP

interface Run {
  retval: number;
  data: Buffer;
  parsed: ParsedFrame;
  /** reason → packets counted in this run's direction. */
  counted: Record<string, number>;
}

describe('IPv6 fragments follow their first fragment (frag6)', () => {
  let dp: Dataplane;

  const snapshot = (): Map<string, MetricSample> =>
    new Map(dp.readMetrics().map((m) => [`${m.dir}/${m.reason}`, m]));

  function run(dir: TcDirection, frame: Buffer): Run {
    const before = snapshot();
    const r = progTestRun(dp.program(dir === 'ingress' ? 'strait_tc_ingress' : 'strait_tc_egress'), {
      data: frame,
      ctx: skbContext(),
    });
    const counted: Record<string, number> = {};
    for (const [key, m] of snapshot()) {
      const moved = m.packets - (before.get(key)?.packets ?? 0n);
      if (moved === 0n) continue;
      expect(m.dir, `${m.reason} counted in the other direction`).toBe(dir);
      counted[m.reason] = Number(moved);
    }
    const data = Buffer.from(r.data);
    return { retval: r.retval, data, parsed: parseFrame(data), counted };
  }

  /** The UDP checksum of a whole (reassembled) datagram, checked by hand against src/dst. */
  function expectUdpChecksum(frame: Buffer, src: string, dst: string): void {
    const p = parseFrame(frame);
    expect(p.ip.isFragment).toBe(false);
    expect(p.l4.kind).toBe('udp');
    expect(p.l4.checksumStatus).toBe('ok');
    const udp = frame.subarray(p.offsets.l4, p.offsets.end);
    expect(internetChecksum(pseudoHeader(ipBytes(src), ipBytes(dst), IPPROTO_UDP, udp.length), udp)).toBe(0);
  }

  const request = (id: number, extHeaders?: Parameters<typeof ipv6UdpFragments>[0]['extHeaders']) =>
    ipv6UdpFragments({
      src: CLIENT6,
      dst: VIP6,
      sport: SPORT,
      dport: 53,
      payload: PAYLOAD,
      fragmentSize: FRAGMENT_SIZE,
      fragmentId: id,
      ...(extHeaders ? { extHeaders } : {}),
    });

  beforeAll(() => {
    if (process.getuid?.() !== 0) throw new Error('test/bpf needs root (BPF_PROG_TEST_RUN, bpffs pins)');
    Dataplane.destroy(ROOT);
    dp = Dataplane.open({ bpfRoot: ROOT, objectPath: OBJECT, mapSizes: SIZES, settings: { hashSeed: 0xf4a6 } });
    const svc6: ServiceSpec = {
      id: 60,
      vip: VIP6,
      port: 53,
      proto: 'udp',
      backends: BACKENDS6.map((addr, i) => ({ id: 600 + i, addr, port: 5353 })),
    };
    addService(dp, svc6);
    addService(dp, { id: 40, vip: VIP4, port: 53, proto: 'udp', backends: [{ id: 400, addr: BACKEND4, port: 5353 }] });
  });

  afterAll(() => {
    try {
      dp?.close();
    } finally {
      Dataplane.destroy(ROOT);
    }
  });

  beforeEach(() => {
    dp.maps.ct4.clear();
    dp.maps.ct6.clear();
    dp.maps.frag4.clear();
    dp.maps.frag6.clear();
  });

  it('the first fragment is translated and recorded, later fragments follow; the datagram checks out at the backend', () => {
    const id = 0x5354_0001;
    const frags = request(id);
    expect(frags.length).toBe(4);

    const first = run('ingress', frags[0]!);
    expect(first.retval).toBe(TC_ACT_OK);
    expect(first.counted).toEqual({ service_dnat: 1 });
    const backend = first.parsed.ip.dst;
    expect(BACKENDS6).toContain(backend);
    expect(first.parsed.ip.src).toBe(CLIENT6);
    expect(first.parsed.l4.sport).toBe(SPORT);
    expect(first.parsed.l4.dport).toBe(5353);
    expect(first.parsed.ip.id).toBe(id);

    // Keyed as the fragments arrive: client, VIP, identification, next header.
    const entries = [...dp.maps.frag6.entries()];
    expect(entries).toEqual([
      [
        { saddr: CLIENT6, daddr: VIP6, id, proto: IPPROTO_UDP },
        { addr: backend, rewrite: FRAG_REWRITE_DADDR },
      ],
    ]);

    const out = [first.data];
    for (const f of frags.slice(1)) {
      const r = run('ingress', f);
      expect(r.retval).toBe(TC_ACT_OK);
      expect(r.counted).toEqual({ frag_xlate: 1 });
      expect(r.parsed.l4.kind).toBe('fragment');
      expect(r.parsed.ip.src).toBe(CLIENT6);
      expect(r.parsed.ip.dst).toBe(backend);
      // Only the destination address changed.
      const expected = Buffer.from(f);
      ipBytes(backend).copy(expected, 14 + 24);
      expect(r.data.equals(expected)).toBe(true);
      out.push(r.data);
    }

    const whole = reassemble(out);
    expectUdpChecksum(whole, CLIENT6, backend);
    const p = parseFrame(whole);
    expect(p.ip.dst).toBe(backend);
    expect(p.l4.dport).toBe(5353);
    expect(p.payload.equals(PAYLOAD)).toBe(true);
  });

  it('reply fragments leaving the backend follow the first one back to the VIP', () => {
    const first = run('ingress', request(0x5354_0002)[0]!);
    expect(first.counted).toEqual({ service_dnat: 1 });
    const backend = first.parsed.ip.dst;

    const replyId = 0x0bac_0001;
    const frags = ipv6UdpFragments({
      src: backend,
      dst: CLIENT6,
      sport: 5353,
      dport: SPORT,
      payload: PAYLOAD,
      fragmentSize: FRAGMENT_SIZE,
      fragmentId: replyId,
    });
    const head = run('egress', frags[0]!);
    expect(head.retval).toBe(TC_ACT_OK);
    expect(head.counted).toEqual({ revnat: 1 });
    expect(head.parsed.ip.src).toBe(VIP6);
    expect(head.parsed.l4.sport).toBe(53);
    expect(dp.maps.frag6.lookup({ saddr: backend, daddr: CLIENT6, id: replyId, proto: IPPROTO_UDP })).toEqual({
      addr: VIP6,
      rewrite: FRAG_REWRITE_SADDR,
    });

    const out = [head.data];
    for (const f of frags.slice(1)) {
      const r = run('egress', f);
      expect(r.retval).toBe(TC_ACT_OK);
      expect(r.counted).toEqual({ frag_xlate: 1 });
      expect(r.parsed.ip.src).toBe(VIP6);
      expect(r.parsed.ip.dst).toBe(CLIENT6);
      out.push(r.data);
    }
    const whole = reassemble(out);
    expectUdpChecksum(whole, VIP6, CLIENT6);
    const p = parseFrame(whole);
    expect(p.l4.sport).toBe(53);
    expect(p.payload.equals(PAYLOAD)).toBe(true);
  });

  it('a later fragment whose first was never seen passes untouched, in both directions', () => {
    const frags = request(0x5354_0003);
    for (const dir of ['ingress', 'egress'] as const) {
      const r = run(dir, frags[2]!);
      expect(r.retval).toBe(TC_ACT_UNSPEC);
      expect(r.counted).toEqual({ pass_fragment: 1 });
      expect(r.data.equals(frags[2]!)).toBe(true);
    }
    // Another datagram's record does not adopt it: the identification is part of the key.
    const other = request(0x5354_0004);
    expect(run('ingress', other[0]!).counted).toEqual({ service_dnat: 1 });
    const stray = run('ingress', frags[1]!);
    expect(stray.retval).toBe(TC_ACT_UNSPEC);
    expect(stray.counted).toEqual({ pass_fragment: 1 });
    expect(stray.data.equals(frags[1]!)).toBe(true);
    // An ingress record is not applied to egress fragments with the same key.
    const tail = other[1]!;
    const egress = run('egress', tail);
    expect(egress.retval).toBe(TC_ACT_UNSPEC);
    expect(egress.counted).toEqual({ pass_fragment: 1 });
    expect(egress.data.equals(tail)).toBe(true);
    expect(dp.maps.frag6.count()).toBe(1);
  });

  it('the key is the fragment header next header: a destination options header after it does not split the datagram', () => {
    const id = 0x5354_0005;
    const frags = request(id, [{ type: 'dst' }]);
    // The fragmentable part starts with the destination options header.
    expect(parseFrame(frags[1]!).ip.extHeaders.find((e) => e.type === 'frag')?.nextHeader).toBe(IPPROTO.DSTOPTS);

    const first = run('ingress', frags[0]!);
    expect(first.counted).toEqual({ service_dnat: 1 });
    expect(first.parsed.ip.proto).toBe(IPPROTO_UDP);
    const backend = first.parsed.ip.dst;
    expect(dp.maps.frag6.lookup({ saddr: CLIENT6, daddr: VIP6, id, proto: IPPROTO.DSTOPTS })).toEqual({
      addr: backend,
      rewrite: FRAG_REWRITE_DADDR,
    });
    const out = [first.data];
    for (const f of frags.slice(1)) {
      const r = run('ingress', f);
      expect(r.counted).toEqual({ frag_xlate: 1 });
      expect(r.parsed.ip.dst).toBe(backend);
      out.push(r.data);
    }
    expectUdpChecksum(reassemble(out), CLIENT6, backend);
  });

  it('IPv4 fragments still follow theirs through the shared fragment path (frag4)', () => {
    const frags = ipv4UdpFragments({
      src: CLIENT4,
      dst: VIP4,
      id: 0x4242,
      sport: SPORT,
      dport: 53,
      payload: PAYLOAD,
      fragmentSize: FRAGMENT_SIZE,
    });
    const first = run('ingress', frags[0]!);
    expect(first.counted).toEqual({ service_dnat: 1 });
    expect(first.parsed.ip.dst).toBe(BACKEND4);
    const out = [first.data];
    for (const f of frags.slice(1)) {
      const r = run('ingress', f);
      expect(r.retval).toBe(TC_ACT_OK);
      expect(r.counted).toEqual({ frag_xlate: 1 });
      expect(r.parsed.ip.dst).toBe(BACKEND4);
      expect(r.parsed.ip.headerChecksumOk).toBe(true);
      out.push(r.data);
    }
    const whole = reassemble(out);
    expectUdpChecksum(whole, CLIENT4, BACKEND4);
    expect(parseFrame(whole).payload.equals(PAYLOAD)).toBe(true);
    expect(dp.maps.frag6.count()).toBe(0);
  });
});
