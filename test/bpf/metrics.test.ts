// Metrics: every packet is counted exactly once, under exactly one reason,
// in the direction it was seen, with its length as it arrived (packets and
// bytes). One row per outcome the datapath can reach under
// BPF_PROG_TEST_RUN; the other suites assert the same one-counter delta for
// each of their cases. Outcomes not reachable here: drop_ct_full and
// drop_frag_full (LRU maps evict instead of failing, malformed.test.ts),
// drop_csum and drop_icmp_reply_failed (helper failures),
// drop_icmp_rate_limited (no-endpoints.test.ts, needs its own settings).
//
// Address plan (IPv4 / IPv6):
//   client     198.18.0.80             2001:2::1:80
//   VIP        198.19.0.1              2001:2:0:ff::1     TCP :80, UDP :53 (one backend)
//   empty VIPs 198.19.0.2 (reject),    2001:2:0:ff::2     TCP :80, no endpoints
//              198.19.0.3 (drop)       2001:2:0:ff::3
//   broken     198.19.0.4              2001:2:0:ff::4     TCP :80: slot to a missing backend
//              198.19.0.5              2001:2:0:ff::5     TCP :80: unknown algorithm
//   backend    198.18.1.1              2001:2::2:1        TCP :8080, UDP :5353
//   router     198.18.2.1              2001:2::3:1
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ct4Key, ct6Key, ctEntry, CT_DIR_SERVICE, IPPROTO_TCP, type Ct4Key, type Ct6Key, type CtEntry } from '../../src/bpf/abi.js';
import type { BpfMap } from '../../src/bpf/map.js';
import {
  BpfHarness,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  TC_ACT_UNSPEC,
  TEST_OBJECT,
  flowFrame,
  planOf,
  type Counted,
  type Family,
  type FlowFrame,
  type RunResult,
  FAMILIES,
} from '../lib/bpf-harness.js';
import {
  ICMP4,
  ICMP4_UNREACH,
  ICMP6,
  icmp4Error,
  icmp6Error,
  ipPacketOf,
  ipv4Raw,
  ipv4UdpFragments,
  ipv6Raw,
  ipv6UdpFragments,
  setIpv4Ihl,
  setIpv4TotalLength,
  truncate,
} from '../lib/packet.js';
import { addService } from '../lib/services.js';
import type { TcDirection } from '../../src/bpf/dataplane.js';

const ROOT = '/sys/fs/bpf/strait-test-metrics';

let h: BpfHarness | undefined;
const harness = (): BpfHarness => h!;

/** Every run of this file, to check the counters' totals at the end. */
const runs: { dir: TcDirection; bytes: number }[] = [];
function run(dir: TcDirection, frame: Buffer): RunResult {
  runs.push({ dir, bytes: frame.length });
  return harness().run(dir, frame);
}

const client = (f: Family, sport: number, dst: string, extra: Partial<FlowFrame> = {}, proto: 'tcp' | 'udp' = 'tcp'): Buffer =>
  flowFrame(f, proto, { src: planOf(f).client(80), dst, sport, dport: proto === 'tcp' ? 80 : 53, payload: 'm'.repeat(sport % 97), ...extra });
const fromBackend = (f: Family, cport: number, proto: 'tcp' | 'udp' = 'tcp'): Buffer =>
  flowFrame(f, proto, { src: planOf(f).backend(1), dst: planOf(f).client(80), sport: proto === 'tcp' ? 8080 : 5353, dport: cport, flags: { syn: true, ack: true }, payload: 'reply' });

/** Opens a flow from `sport` (not counted in any row's delta). */
function open(f: Family, sport: number, proto: 'tcp' | 'udp' = 'tcp'): void {
  expect(run('ingress', client(f, sport, planOf(f).vip(1), {}, proto)).retval).toBe(TC_ACT_OK);
}

interface Row {
  reason: string;
  dir: TcDirection;
  verdict: number;
  /** Runs what the row needs first, returns the packet whose outcome is the row's. */
  packet: () => Buffer;
}

function rows(f: Family): [string, Row][] {
  const p = planOf(f);
  const base = 60000 + f * 100;
  const raw = f === 4 ? ipv4Raw : ipv6Raw;
  const r: [string, Row][] = [
    ['pass: not for a Service', { reason: 'pass', dir: 'ingress', verdict: TC_ACT_UNSPEC, packet: () => client(f, base, p.node(9)) }],
    ['service_dnat: first packet to a VIP', { reason: 'service_dnat', dir: 'ingress', verdict: TC_ACT_OK, packet: () => client(f, base + 1, p.vip(1)) }],
    ['service_dnat: a tracked flow\'s later packet', { reason: 'service_dnat', dir: 'ingress', verdict: TC_ACT_OK, packet: () => (open(f, base + 2), client(f, base + 2, p.vip(1), { flags: { ack: true } })) }],
    ['ct_race_joined: lost the insert race', {
      reason: 'ct_race_joined', dir: 'ingress', verdict: TC_ACT_OK, packet: () => {
        const key = { saddr: p.client(80), daddr: p.vip(1), sport: base + 3, dport: 80, proto: IPPROTO_TCP, dir: CT_DIR_SERVICE };
        const race = (f === 4 ? harness().dp.map('ct4_race', ct4Key, ctEntry) : harness().dp.map('ct6_race', ct6Key, ctEntry)) as BpfMap<Ct4Key | Ct6Key, CtEntry>;
        race.update(key, { expires: 2n ** 64n - 1n, backendId: f * 10, revNatId: f * 10 + 1, flags: 0, tcpFlags: 2, created: 0 });
        return client(f, base + 3, p.vip(1));
      },
    }],
    ['no_endpoints_reply: rejecting Service without endpoints', { reason: 'no_endpoints_reply', dir: 'ingress', verdict: TC_ACT_REDIRECT, packet: () => client(f, base + 4, p.vip(2)) }],
    ['drop_no_endpoints: Service without endpoints, no reject', { reason: 'drop_no_endpoints', dir: 'ingress', verdict: TC_ACT_SHOT, packet: () => client(f, base + 5, p.vip(3)) }],
    ['drop_backend_missing: the slot names a backend that does not exist', { reason: 'drop_backend_missing', dir: 'ingress', verdict: TC_ACT_SHOT, packet: () => client(f, base + 6, p.vip(4)) }],
    ['drop_unsupported: an algorithm this datapath does not know', { reason: 'drop_unsupported', dir: 'ingress', verdict: TC_ACT_SHOT, packet: () => client(f, base + 7, p.vip(5)) }],
    ['drop_tcp_invalid: RST without a flow', { reason: 'drop_tcp_invalid', dir: 'ingress', verdict: TC_ACT_SHOT, packet: () => client(f, base + 8, p.vip(1), { flags: { rst: true } }) }],
    ['drop_invalid_l4: TCP header cut after the ports', {
      reason: 'drop_invalid_l4', dir: 'ingress', verdict: TC_ACT_SHOT, packet: () => {
        const full = client(f, base + 9, p.vip(1), { payload: '' });
        const cut = truncate(full, 14 + (f === 4 ? 20 : 40) + 6);
        if (f === 4) return setIpv4TotalLength(cut, 26);
        cut.writeUInt16BE(6, 14 + 4);
        return cut;
      },
    }],
    ['drop_ipv6_ext_chain / drop_invalid_ihl: L3 the parser refuses', f === 4
      ? { reason: 'drop_invalid_ihl', dir: 'ingress', verdict: TC_ACT_SHOT, packet: () => setIpv4Ihl(client(f, base + 10, p.vip(1)), 3) }
      : { reason: 'drop_ipv6_ext_chain', dir: 'ingress', verdict: TC_ACT_SHOT, packet: () => client(f, base + 10, p.vip(1), { extHeaders: Array.from({ length: 9 }, () => ({ type: 'dst' }) as const) }) }],
    ['drop_invalid_l3: length field beyond the packet', {
      reason: 'drop_invalid_l3', dir: 'ingress', verdict: TC_ACT_SHOT, packet: () => {
        const frame = client(f, base + 11, p.vip(1));
        if (f === 4) return setIpv4TotalLength(frame, 1400);
        const out = Buffer.from(frame);
        out.writeUInt16BE(1400, 14 + 4);
        return out;
      },
    }],
    ['pass_unknown_proto: GRE to the VIP', { reason: 'pass_unknown_proto', dir: 'ingress', verdict: TC_ACT_UNSPEC, packet: () => raw({ src: p.client(80), dst: p.vip(1), proto: 47, payload: 'gre' }) }],
    ['pass_fragment: later fragment, first never seen', {
      reason: 'pass_fragment', dir: 'ingress', verdict: TC_ACT_UNSPEC, packet: () => {
        const o = { src: p.client(80), dst: p.vip(1), sport: base + 12, dport: 53, payload: Buffer.alloc(2000, 7), fragmentSize: 1024 };
        return (f === 4 ? ipv4UdpFragments({ ...o, id: base + 12 }) : ipv6UdpFragments({ ...o, fragmentId: base + 12 }))[1]!;
      },
    }],
    ['frag_xlate: later fragment after its first', {
      reason: 'frag_xlate', dir: 'ingress', verdict: TC_ACT_OK, packet: () => {
        const o = { src: p.client(80), dst: p.vip(1), sport: base + 13, dport: 53, payload: Buffer.alloc(2000, 7), fragmentSize: 1024 };
        const frags = f === 4 ? ipv4UdpFragments({ ...o, id: base + 13 }) : ipv6UdpFragments({ ...o, fragmentId: base + 13 });
        expect(run('ingress', frags[0]!).retval).toBe(TC_ACT_OK);
        return frags[1]!;
      },
    }],
    ['icmp_error_xlate: too big about our reply', {
      reason: 'icmp_error_xlate', dir: 'ingress', verdict: TC_ACT_OK, packet: () => {
        open(f, base + 14);
        const ourReply = flowFrame(f, 'tcp', { src: p.vip(1), dst: p.client(80), sport: 80, dport: base + 14, flags: { ack: true }, payload: 'r' });
        const original = ipPacketOf(ourReply).subarray(0, (f === 4 ? 20 : 40) + 8);
        return f === 4
          ? icmp4Error({ src: p.node(1), dst: p.vip(1), type: ICMP4.DEST_UNREACH, code: ICMP4_UNREACH.FRAG_NEEDED, mtu: 1200, original })
          : icmp6Error({ src: p.node(1), dst: p.vip(1), type: ICMP6.PACKET_TOO_BIG, code: 0, mtu: 1280, original });
      },
    }],
    // egress
    ['pass: not a tracked reply', { reason: 'pass', dir: 'egress', verdict: TC_ACT_UNSPEC, packet: () => fromBackend(f, base + 20) }],
    ['revnat: a tracked flow\'s reply', { reason: 'revnat', dir: 'egress', verdict: TC_ACT_OK, packet: () => (open(f, base + 21), fromBackend(f, base + 21)) }],
    ['pass_reply_untracked: tracked reply, frontend gone', {
      reason: 'pass_reply_untracked', dir: 'egress', verdict: TC_ACT_UNSPEC, packet: () => {
        // A flow of the "missing backend" Service's sibling whose rev-NAT entry was never written.
        open(f, base + 22);
        const key = { saddr: p.backend(1), daddr: p.client(80), sport: 8080, dport: base + 22, proto: IPPROTO_TCP, dir: 1 };
        const ct = (f === 4 ? harness().dp.maps.ct4 : harness().dp.maps.ct6) as BpfMap<Ct4Key | Ct6Key, CtEntry>;
        ct.update(key, { ...ct.lookup(key)!, revNatId: 999 });
        return fromBackend(f, base + 22);
      },
    }],
    ['pass_unknown_proto: GRE leaving', { reason: 'pass_unknown_proto', dir: 'egress', verdict: TC_ACT_UNSPEC, packet: () => raw({ src: p.backend(1), dst: p.client(80), proto: 47, payload: 'gre' }) }],
    ['frag_xlate: a reply\'s later fragment', {
      reason: 'frag_xlate', dir: 'egress', verdict: TC_ACT_OK, packet: () => {
        open(f, base + 23, 'udp');
        const o = { src: p.backend(1), dst: p.client(80), sport: 5353, dport: base + 23, payload: Buffer.alloc(2000, 9), fragmentSize: 1024 };
        const frags = f === 4 ? ipv4UdpFragments({ ...o, id: base + 23 }) : ipv6UdpFragments({ ...o, fragmentId: base + 23 });
        expect(run('egress', frags[0]!).retval).toBe(TC_ACT_OK);
        return frags[1]!;
      },
    }],
    ['pass_fragment: a later reply fragment, first never seen', {
      reason: 'pass_fragment', dir: 'egress', verdict: TC_ACT_UNSPEC, packet: () => {
        const o = { src: p.backend(1), dst: p.client(80), sport: 5353, dport: base + 24, payload: Buffer.alloc(2000, 9), fragmentSize: 1024 };
        return (f === 4 ? ipv4UdpFragments({ ...o, id: base + 24 }) : ipv6UdpFragments({ ...o, fragmentId: base + 24 }))[1]!;
      },
    }],
    ['icmp_error_xlate: the backend\'s port unreachable', {
      reason: 'icmp_error_xlate', dir: 'egress', verdict: TC_ACT_OK, packet: () => {
        open(f, base + 25, 'udp');
        const delivered = flowFrame(f, 'udp', { src: p.client(80), dst: p.backend(1), sport: base + 25, dport: 5353, payload: 'd' });
        const original = ipPacketOf(delivered);
        return f === 4
          ? icmp4Error({ src: p.backend(1), dst: p.client(80), type: ICMP4.DEST_UNREACH, code: ICMP4_UNREACH.PORT, original })
          : icmp6Error({ src: p.backend(1), dst: p.client(80), type: ICMP6.DEST_UNREACH, code: 4, original });
      },
    }],
    ['drop_invalid_ihl / drop_ipv6_ext_chain at egress', f === 4
      ? { reason: 'drop_invalid_ihl', dir: 'egress', verdict: TC_ACT_SHOT, packet: () => setIpv4Ihl(fromBackend(f, base + 26), 2) }
      : { reason: 'drop_ipv6_ext_chain', dir: 'egress', verdict: TC_ACT_SHOT, packet: () => flowFrame(f, 'tcp', { src: p.backend(1), dst: p.client(80), sport: 8080, dport: base + 26, extHeaders: Array.from({ length: 10 }, () => ({ type: 'hop' }) as const) }) }],
  ];
  return r.map(([name, row]) => [`IPv${f} ${row.dir}: ${name}`, row]);
}

beforeAll(() => {
  h = BpfHarness.open(ROOT, { objectPath: TEST_OBJECT });
  for (const f of FAMILIES) {
    const p = planOf(f);
    addService(h.dp, { id: f * 10 + 1, vip: p.vip(1), port: 80, proto: 'tcp', backends: [{ id: f * 10, addr: p.backend(1), port: 8080 }] });
    addService(h.dp, { id: f * 10 + 2, vip: p.vip(1), port: 53, proto: 'udp', backends: [{ id: f * 10 + 5, addr: p.backend(1), port: 5353 }] });
    addService(h.dp, { id: f * 10 + 3, vip: p.vip(2), port: 80, proto: 'tcp', backends: [] });
    addService(h.dp, { id: f * 10 + 4, vip: p.vip(3), port: 80, proto: 'tcp', backends: [], flags: 0 });
    // A slot naming backend id 9999, which is never written.
    addService(h.dp, { id: f * 10 + 6, vip: p.vip(4), port: 80, proto: 'tcp', backends: [{ id: f * 10, addr: p.backend(1), port: 8080 }] });
    h.dp.maps.serviceSlots.update({ serviceId: f * 10 + 6, slot: 1 }, { backendId: 9999 });
    addService(h.dp, { id: f * 10 + 7, vip: p.vip(5), port: 80, proto: 'tcp', backends: [{ id: f * 10, addr: p.backend(1), port: 8080 }], algorithm: 7 });
  }
});

afterAll(() => BpfHarness.destroy(h, ROOT));

describe('each outcome moves exactly its counter, in its direction, by one packet and its bytes', () => {
  it.each(FAMILIES.flatMap(rows))('%s', (_name, row) => {
    const input = row.packet();
    const r = run(row.dir, input);
    expect(r.retval).toBe(row.verdict);
    expect(r.counted).toEqual([{ reason: row.reason, dir: row.dir, packets: 1n, bytes: BigInt(input.length) }] satisfies Counted[]);
  });
});

describe('counters add up', () => {
  it('a hundred packets of different sizes: packets and bytes are their count and sum', () => {
    const p = planOf(4);
    open(4, 61000);
    const before = harness().metrics().find((m) => m.reason === 'service_dnat' && m.dir === 'ingress');
    let bytes = 0n;
    for (let i = 0; i < 100; i++) {
      const input = client(4, 61000, p.vip(1), { flags: { ack: true }, payload: 'z'.repeat(i * 13) });
      bytes += BigInt(input.length);
      expect(run('ingress', input).retval).toBe(TC_ACT_OK);
    }
    const after = harness().metrics().find((m) => m.reason === 'service_dnat' && m.dir === 'ingress')!;
    expect(after.packets - (before?.packets ?? 0n)).toBe(100n);
    expect(after.bytes - (before?.bytes ?? 0n)).toBe(bytes);
  });

  it('the same reason is counted apart per direction', () => {
    const input = client(6, 61100, planOf(6).node(9));
    expect(run('ingress', input).counted).toEqual([{ reason: 'pass', dir: 'ingress', packets: 1n, bytes: BigInt(input.length) }]);
    expect(run('egress', input).counted).toEqual([{ reason: 'pass', dir: 'egress', packets: 1n, bytes: BigInt(input.length) }]);
  });

  it('every packet this file ran was counted exactly once (totals per direction)', () => {
    const all = harness().metrics();
    for (const dir of ['ingress', 'egress'] as const) {
      const mine = runs.filter((r) => r.dir === dir);
      const counted = all.filter((m) => m.dir === dir);
      expect(counted.reduce((s, m) => s + m.packets, 0n)).toBe(BigInt(mine.length));
      expect(counted.reduce((s, m) => s + m.bytes, 0n)).toBe(mine.reduce((s, r) => s + BigInt(r.bytes), 0n));
    }
    expect(all.find((m) => m.reason === 'unspec')).toBeUndefined();
  });
});
