// loadBalancerSourceRanges at uplink ingress: a LoadBalancer frontend with
// LB_F_SOURCE_RANGES serves only clients inside the ranges compile wrote into
// source_ranges{4,6} under its service id ({prefixlen = 32 + CIDR length,
// service id, address}); anything else is dropped and counted
// (drop_source_range) before any other work: no conntrack entry, no SNAT
// port, no ICMP. Established flows are checked too (the ranges may shrink).
//
// Address plan (IPv4 / IPv6):
//   allowed clients  198.18.0.10-11 (in 198.18.0.0/28)    2001:2::1:10-11 (in 2001:2::1:0/120)
//   other client     198.18.0.200                        2001:2::1:200
//   single host      198.18.0.201/32                     2001:2::1:201/128
//   LoadBalancer     198.19.0.2 :80/TCP :53/UDP           2001:2:0:ff::2, remote backend (SNAT)
//   LoadBalancer     198.19.0.5 (local backend)           2001:2:0:ff::5, no endpoints: 198.19.0.6 / ff::6
//   other Service    198.19.0.7, whose ranges hold the other client (must not leak)
//   backends         198.18.1.1 (another node), 198.18.1.9 (local)
//   node             198.18.2.1 / 2001:2::3:1; SNAT 61000-61999; FIB mocked
import { beforeEach, describe, expect, it } from 'vitest';
import {
  BE_F_LOCAL,
  LB_F_REJECT_NO_ENDPOINTS,
  LB_F_SOURCE_RANGES,
  LB_KIND_LOAD_BALANCER,
} from '../../src/bpf/abi.js';
import {
  BpfHarness,
  CASES,
  TARGET_PORT,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  VIP_PORT,
  countedOnce,
  flowFrame,
  planOf,
  useHarness,
  type Family,
  type L4Proto,
} from '../lib/bpf-harness.js';
import { resetNorthSouth } from '../lib/north-south.js';
import { parseFrame } from '../lib/packet.js';
import { addService } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-source-ranges';

const harness = useHarness(ROOT, installServices);
const dp = () => harness().dp;

const ids = (f: Family, proto: L4Proto) => {
  const base = f * 100 + (proto === 'tcp' ? 10 : 50);
  return { remote: base + 1, local: base + 2, empty: base + 3, other: base + 4 };
};

function allowRange(f: Family, serviceId: number, cidr: string): void {
  const [addr, len] = cidr.split('/') as [string, string];
  const key = { prefixlen: 32 + Number(len), serviceId, addr };
  if (f === 4) dp().maps.sourceRanges4.update(key, { allow: 1 });
  else dp().maps.sourceRanges6.update(key, { allow: 1 });
}

const ALLOWED: Readonly<Record<Family, string[]>> = {
  4: ['198.18.0.0/28', '198.18.0.201/32'],
  6: ['2001:2::1:0/120', '2001:2::1:201/128'],
};

/** The file's Services, written once. */
function installServices(h: BpfHarness): void {
  for (const [f, proto] of CASES) {
    const p = planOf(f);
    const id = ids(f, proto);
    const port = VIP_PORT[proto];
    const flags = LB_F_SOURCE_RANGES | LB_F_REJECT_NO_ENDPOINTS;
    const remote = { id: id.remote * 10, addr: p.backend(1), port: TARGET_PORT[proto] };
    const local = { id: id.local * 10, addr: p.backend(9), port: TARGET_PORT[proto], flags: BE_F_LOCAL };
    addService(h.dp, { id: id.remote, vip: p.vip(2), port, proto, kind: LB_KIND_LOAD_BALANCER, flags, backends: [remote] });
    addService(h.dp, { id: id.local, vip: p.vip(5), port, proto, kind: LB_KIND_LOAD_BALANCER, flags, backends: [local] });
    addService(h.dp, { id: id.empty, vip: p.vip(6), port, proto, kind: LB_KIND_LOAD_BALANCER, flags, backends: [] });
    addService(h.dp, { id: id.other, vip: p.vip(7), port, proto, kind: LB_KIND_LOAD_BALANCER, flags, backends: [remote] });
    for (const cidr of ALLOWED[f]) for (const svc of [id.remote, id.local, id.empty]) allowRange(f, svc, cidr);
    // Another Service allows the other client: its entry must not open ours.
    allowRange(f, id.other, f === 4 ? '198.18.0.200/32' : '2001:2::1:200/128');
  }
}

beforeEach(() => resetNorthSouth(harness()));

const packet = (f: Family, proto: L4Proto, client: string, vip: number, sport = 41000) =>
  flowFrame(f, proto, { src: client, dst: planOf(f).vip(vip), sport, dport: VIP_PORT[proto], payload: 'hi' });

const ctCount = (f: Family) => (f === 4 ? dp().maps.ct4 : dp().maps.ct6).count();
const snatCount = (f: Family) => (f === 4 ? dp().maps.snat4 : dp().maps.snat6).count();

describe('loadBalancerSourceRanges', () => {
  it.each(CASES)('IPv%i %s: clients inside a range are served (remote backend: SNAT; local: DNAT)', (f, proto) => {
    const p = planOf(f);
    for (const client of [p.client(10), p.client(11), p.client(201)]) {
      const r = harness().ingress(packet(f, proto, client, 2));
      expect(r.retval, client).toBe(TC_ACT_REDIRECT);
      expect(r.counted.map((c) => c.reason), client).toEqual(['service_snat']);
    }
    const local = harness().ingress(packet(f, proto, p.client(10), 5));
    expect(local.retval).toBe(TC_ACT_OK);
    expect(parseFrame(local.data).ip.src).toBe(p.client(10));
  });

  it.each(CASES)('IPv%i %s: a client outside every range is dropped and counted, before conntrack or SNAT', (f, proto) => {
    const input = packet(f, proto, planOf(f).client(200), 2);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(r.counted).toEqual(countedOnce('drop_source_range', 'ingress', input));
    expect(r.data).toEqual(input);
    expect([ctCount(f), snatCount(f)]).toEqual([0, 0]);
  });

  it.each(CASES)('IPv%i %s: another Service\'s ranges do not open this one', (f, proto) => {
    const p = planOf(f);
    const mine = harness().ingress(packet(f, proto, p.client(200), 2));
    expect(mine.counted.map((c) => c.reason)).toEqual(['drop_source_range']);
    const theirs = harness().ingress(packet(f, proto, p.client(200), 7));
    expect(theirs.counted.map((c) => c.reason)).toEqual(['service_snat']);
  });

  it.each(CASES)('IPv%i %s: a denied client of a Service without endpoints is dropped, not sent ICMP', (f, proto) => {
    const input = packet(f, proto, planOf(f).client(200), 6);
    const r = harness().ingress(input);
    expect(r.counted).toEqual(countedOnce('drop_source_range', 'ingress', input));
    const allowed = harness().ingress(packet(f, proto, planOf(f).client(10), 6));
    expect(allowed.counted.map((c) => c.reason)).toEqual(['no_endpoints_reply']);
  });

  it.each(CASES)('IPv%i %s: a flow whose range is removed is cut at its next packet', (f, proto) => {
    const p = planOf(f);
    const single = f === 4 ? '198.18.0.201' : '2001:2::1:201';
    const first = harness().ingress(packet(f, proto, p.client(201), 2, 41001));
    expect(first.counted.map((c) => c.reason)).toEqual(['service_snat']);
    const key = { prefixlen: f === 4 ? 64 : 160, serviceId: ids(f, proto).remote, addr: single };
    try {
      if (f === 4) dp().maps.sourceRanges4.delete(key);
      else dp().maps.sourceRanges6.delete(key);
      const next = harness().ingress(packet(f, proto, p.client(201), 2, 41001));
      expect(next.counted.map((c) => c.reason)).toEqual(['drop_source_range']);
    } finally {
      allowRange(f, ids(f, proto).remote, `${single}/${f === 4 ? 32 : 128}`);
    }
  });
});
