// A Service without endpoints: with LB_F_REJECT_NO_ENDPOINTS the first packet
// is turned, in place, into ICMP port unreachable (ICMPv6 type 1 code 4) from
// the VIP back to the client and redirected out of the device it came in on;
// without the flag it is dropped and counted. Replies are rate-limited by a
// per-CPU token bucket.
//
// Address plan (IPv4 / IPv6):
//   client          198.18.0.40           2001:2::1:40
//   rejecting VIP   198.19.0.5            2001:2:0:ff::5     TCP :80, UDP :53, no endpoints
//   dropping VIP    198.19.0.6            2001:2:0:ff::6     TCP :80, UDP :53, no endpoints, no reject flag
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BpfHarness,
  NS_PER_SEC,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  countedOnce,
  flowFrame,
  monotonicNs,
  planOf,
  type Family,
  type FlowFrame,
  type L4Proto,
  FAMILIES,
  CASES,
} from '../lib/bpf-harness.js';
import {
  ICMP4,
  ICMP4_UNREACH,
  ICMP6,
  ICMP6_UNREACH,
  MAC,
  icmp4Error,
  icmp6Error,
  ipPacketOf,
  parseFrame,
} from '../lib/packet.js';
import { addService } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-no-endpoints';
const ROOT_LIMITED = '/sys/fs/bpf/strait-test-no-endpoints-limited';
const PORT: Record<L4Proto, number> = { tcp: 80, udp: 53 };
const IPV4_QUOTE_PAYLOAD = 64; // bytes after the quoted IPv4 header (icmp.h)
const IPV6_REPLY_MAX = 1280; // RFC 4443 2.4(c)

let h: BpfHarness | undefined;
let limited: BpfHarness | undefined;
const harness = (): BpfHarness => h!;

function seed(target: BpfHarness): void {
  for (const family of FAMILIES) {
    const p = planOf(family);
    for (const proto of ['tcp', 'udp'] as const) {
      const id = family * 10 + (proto === 'tcp' ? 1 : 2);
      addService(target.dp, { id, vip: p.vip(5), port: PORT[proto], proto, backends: [] });
      addService(target.dp, { id: id + 100, vip: p.vip(6), port: PORT[proto], proto, backends: [], flags: 0 });
    }
  }
}

function toVip(family: Family, proto: L4Proto, vip: number, extra: Partial<FlowFrame> = {}): Buffer {
  const p = planOf(family);
  return flowFrame(family, proto, { src: p.client(40), dst: p.vip(vip), sport: 51000, dport: PORT[proto], payload: 'knock knock', ...extra });
}

/**
 * The reply the datapath must build from `input`, written independently with
 * the packet library: MACs swapped, a fresh IP header from the VIP to the
 * client (TTL 64, id 0, no DF, traffic class/flow label 0), port unreachable,
 * the original datagram quoted (IPv4: header + 64 bytes; IPv6: up to a
 * 1280-byte reply), every checksum computed from scratch.
 */
function expectedReply(input: Buffer): Buffer {
  const p = parseFrame(input);
  const datagram = ipPacketOf(input).subarray(0, p.ip.totalLength);
  const common = { srcMac: p.eth.dst, dstMac: p.eth.src, src: p.ip.dst, dst: p.ip.src, ttl: 64 };
  if (p.ip.version === 4) {
    const quote = datagram.subarray(0, Math.min(datagram.length, p.ip.headerLength + IPV4_QUOTE_PAYLOAD));
    return icmp4Error({ ...common, id: 0, type: ICMP4.DEST_UNREACH, code: ICMP4_UNREACH.PORT, original: quote });
  }
  const quote = datagram.subarray(0, Math.min(datagram.length, IPV6_REPLY_MAX - 40 - 8));
  return icmp6Error({ ...common, type: ICMP6.DEST_UNREACH, code: ICMP6_UNREACH.PORT, original: quote });
}

beforeAll(() => {
  h = BpfHarness.open(ROOT);
  seed(h);
});

afterAll(() => {
  try {
    BpfHarness.destroy(h, ROOT);
  } finally {
    BpfHarness.destroy(limited, ROOT_LIMITED);
  }
});

describe('port unreachable for a Service without endpoints', () => {
  type Case = [string, Family, L4Proto, Partial<FlowFrame>];
  const cases: Case[] = CASES.flatMap(([family, proto]): Case[] => [
    [`IPv${family} ${proto}, short packet (quoted whole)`, family, proto, {}],
    [`IPv${family} ${proto}, empty payload`, family, proto, { payload: '' }],
    [`IPv${family} ${proto}, 1400-byte payload (quote trimmed)`, family, proto, { payload: Buffer.alloc(1400, 0x5a) }],
  ]);
  cases.push(['IPv4 tcp with IP options (quote covers header + 64)', 4, 'tcp', { ipOptions: Buffer.from([0x94, 0x04, 0, 0]), payload: Buffer.alloc(200, 1) }]);
  cases.push(['IPv6 udp behind a destination options header', 6, 'udp', { extHeaders: [{ type: 'dst' }] }]);

  it.each(cases)('%s: redirected back as ICMP port unreachable from the VIP', (_name, family, proto, extra) => {
    const input = toVip(family, proto, 5, extra);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    // Counted once, with the bytes as they arrived.
    expect(r.counted).toEqual(countedOnce('no_endpoints_reply', 'ingress', input));

    const out = parseFrame(r.data);
    expect(out.eth).toMatchObject({ src: MAC.dst, dst: MAC.src });
    expect(out.ip.src).toBe(planOf(family).vip(5));
    expect(out.ip.dst).toBe(planOf(family).client(40));
    if (family === 4) {
      expect(out.ip.headerChecksumOk).toBe(true);
      expect(out.l4.icmp).toMatchObject({ type: 3, code: 3 });
    } else {
      expect(out.l4.icmp).toMatchObject({ type: 1, code: 4 });
    }
    expect(out.l4.checksumStatus).toBe('ok');
    // The quoted original: the client's packet, as sent, to VIP:port.
    const quoted = out.l4.icmp?.embedded;
    expect(quoted, out.l4.icmp?.embeddedError).toBeDefined();
    expect(quoted!.ip.src).toBe(planOf(family).client(40));
    expect(quoted!.ip.dst).toBe(planOf(family).vip(5));
    expect(quoted!.l4.sport).toBe(51000);
    expect(quoted!.l4.dport).toBe(PORT[proto]);
    if (family === 4) expect(quoted!.ip.headerChecksumOk).toBe(true);
    expect(r.data).toEqual(expectedReply(input));
  });

  it('an Ethernet-padded IPv4 frame quotes only the datagram, not the padding', () => {
    const datagram = toVip(4, 'udp', 5, { payload: '' });
    const input = Buffer.concat([datagram, Buffer.alloc(18, 0xee)]); // padded to 60 bytes as on the wire
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    expect(r.data).toEqual(expectedReply(datagram));
  });
});

describe('a Service without endpoints and without the reject flag', () => {
  it.each(CASES)('IPv%i %s: dropped, counted drop_no_endpoints, packet untouched', (family, proto) => {
    const input = toVip(family, proto, 6);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(r.counted).toEqual(countedOnce('drop_no_endpoints', 'ingress', input));
    expect(r.data).toEqual(input);
  });
});

describe('rate limit of the replies', () => {
  // The bucket is per CPU: pin this process's main thread (the one that
  // calls BPF_PROG_TEST_RUN) to one CPU so every run meets the same bucket.
  const pid = String(process.pid);
  let savedMask = '';
  const BURST = 3;

  beforeAll(() => {
    savedMask = /:\s*([0-9a-f,]+)\s*$/.exec(execFileSync('taskset', ['-p', pid], { encoding: 'utf8' }))?.[1] ?? '';
    execFileSync('taskset', ['-p', '-c', '0', pid]);
    limited = BpfHarness.open(ROOT_LIMITED, { settings: { icmpRate: 1, icmpBurst: BURST } });
    seed(limited);
  });

  afterAll(() => {
    if (savedMask) execFileSync('taskset', ['-p', savedMask, pid]);
  });

  it('a full bucket answers a burst, then drops (drop_icmp_rate_limited) until tokens come back', () => {
    const l = limited!;
    // Full bucket on every CPU, filled half a second ago (rate 1/s: no token accrues within the test).
    l.dp.maps.icmpRatelimit.update(0, { lastNs: monotonicNs() - NS_PER_SEC / 2n, tokens: BigInt(BURST) });
    const frames = [toVip(4, 'tcp', 5), toVip(6, 'udp', 5), toVip(4, 'udp', 5), toVip(6, 'tcp', 5), toVip(4, 'tcp', 5)];
    const verdicts = frames.map((input, i) => {
      const r = l.ingress(input);
      if (i < BURST) {
        expect(r.counted).toEqual(countedOnce('no_endpoints_reply', 'ingress', input));
        expect(r.data).toEqual(expectedReply(input));
      } else {
        expect(r.counted).toEqual(countedOnce('drop_icmp_rate_limited', 'ingress', input));
        expect(r.data).toEqual(input);
      }
      return r.retval;
    });
    expect(verdicts).toEqual([TC_ACT_REDIRECT, TC_ACT_REDIRECT, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_SHOT]);

    // Two refill periods later (the bucket's clock moved back 2 s): two more replies, then a drop.
    const [b] = l.dp.maps.icmpRatelimit.lookup(0)!;
    expect(b!.tokens).toBe(0n);
    l.dp.maps.icmpRatelimit.update(0, { lastNs: monotonicNs() - 2n * NS_PER_SEC - NS_PER_SEC / 2n, tokens: 0n });
    expect([0, 1, 2].map(() => l.ingress(toVip(4, 'udp', 5)).retval)).toEqual([TC_ACT_REDIRECT, TC_ACT_REDIRECT, TC_ACT_SHOT]);
  });

  it('an empty bucket drops at once; a Service without the reject flag never takes a token', () => {
    const l = limited!;
    l.dp.maps.icmpRatelimit.update(0, { lastNs: monotonicNs() - NS_PER_SEC / 2n, tokens: 1n });
    const silent = toVip(6, 'tcp', 6);
    expect(l.ingress(silent).counted).toEqual(countedOnce('drop_no_endpoints', 'ingress', silent));
    expect(l.ingress(toVip(6, 'tcp', 5)).retval).toBe(TC_ACT_REDIRECT);
    const over = toVip(4, 'tcp', 5);
    const r = l.ingress(over);
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(r.counted).toEqual(countedOnce('drop_icmp_rate_limited', 'ingress', over));
  });
});
