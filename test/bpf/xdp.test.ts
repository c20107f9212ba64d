// XDP on the uplink (bpf/strait_xdp.c, lib/xdp.h): frontend lookup,
// loadBalancerSourceRanges drops, and DSR forwarding (encapsulation, XDP_TX /
// redirect) before an skb exists, with the conntrack entries tc keeps; the
// rest goes on to tc with XDP_PASS, uncounted. XDP is an accelerator: what it
// sends is byte for byte what tc would send, and a flow either one started
// is continued by the other.
//
// The XDP test object adopts the maps of the tc test object (one bpf root):
//   node           198.18.2.1            2001:2::3:1          config addr, DSR mode
//   clients        198.18.0.10-11        2001:2::1:10-11      inside the source ranges
//   outsider       198.18.5.1            2001:2:0:5::1        outside them
//   DSR LB         198.19.0.1            2001:2:0:ff::1       LB_F_DSR, :80 / :53
//   no-DSR LB      198.19.0.2            2001:2:0:ff::2       (SNAT), same backend
//   local LB       198.19.0.3            2001:2:0:ff::3       LB_F_DSR, backend on this node
//   ranged LB      198.19.0.4            2001:2:0:ff::4       LB_F_DSR | LB_F_SOURCE_RANGES:
//                                                             198.18.0.0/24, 2001:2::1:0/112
//   empty LB       198.19.0.5            2001:2:0:ff::5       LB_F_DSR, no endpoints
//   backend        198.18.1.1            2001:2::2:1          :80 / :53, another node
//   local backend  198.18.1.9            2001:2::2:9          BE_F_LOCAL
//   FIB (mocked)   out of ifindex 1 (the test run's own device: XDP_TX) or 7 (redirect)
//
// The established path's two levels (lib/xdp.h): per-CPU slots (xdp_flow_cache)
// and the shared LRU (xdp_flow4/6), both invalidated by the flow epoch the agent
// bumps after every map change; tests that change maps bump it as the agent does.
// XDP test runs cannot be pinned to a CPU, so a slot a test relies on is copied
// to every CPU (replicateSlot).
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  BE_F_LOCAL,
  CT_DIR_SERVICE,
  CT_F_DSR,
  CT_F_CLOSING,
  CT_F_ESTABLISHED,
  CT_F_SNAT,
  IPPROTO_TCP,
  LB_F_DSR,
  LB_F_REJECT_NO_ENDPOINTS,
  LB_F_SOURCE_RANGES,
  LB_KIND_LOAD_BALANCER,
  u32Codec,
  type XdpFlowSlot,
} from '../../src/bpf/abi.js';
import type { MetricSample } from '../../src/bpf/dataplane.js';
import { packageRoot } from '../../src/bpf/native.js';
import { progTestRun } from '../../src/bpf/test-run.js';
import { XdpProgram } from '../../src/bpf/xdp.js';
import {
  BpfHarness,
  CASES,
  FAMILIES,
  VIP_PORT,
  countedOnce,
  flowFrame,
  planOf,
  type Counted,
  type Family,
  type FlowFrame,
  type L4Proto,
} from '../lib/bpf-harness.js';
import { DSR_OVERHEAD, expectEncapsulated, setDsrNodeConfig, setTestMtu } from '../lib/dsr.js';
import { FIB, NEXT_HOP_MAC, UPLINK_MAC, clearSnat, fibTestEntry, lastFibLookup } from '../lib/north-south.js';
import { ipv4Tcp, ipv6Tcp, parseFrame } from '../lib/packet.js';
import { addService, setBackends, writeBackend, type BackendSpec, type ServiceSpec } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-xdp';
const XDP_TEST_OBJECT = join(packageRoot(), 'build', 'bpf', 'strait_xdp_test.o');
const XDP = { DROP: 1, PASS: 2, TX: 3, REDIRECT: 4 } as const;
const TC_ACT_REDIRECT = 7;
/** BPF_PROG_TEST_RUN's XDP frames arrive on the loopback device of the test's namespace. */
const TEST_RUN_IFINDEX = 1;

let h: BpfHarness | undefined;
let xdp: XdpProgram | undefined;
const harness = (): BpfHarness => h!;
const dp = () => harness().dp;

const node = (f: Family) => planOf(f).node(1);
const backend = (f: Family) => planOf(f).backend(1);
const client = (f: Family, n = 10) => planOf(f).client(n);
const outsider = (f: Family) => (f === 4 ? '198.18.5.1' : '2001:2:0:5::1');
const fe = (f: Family, proto: L4Proto, n: 1 | 2 | 3 | 4 | 5) => ({ addr: planOf(f).vip(n), port: VIP_PORT[proto] });
const svcId = (f: Family, proto: L4Proto, n: number) => f * 100 + (proto === 'tcp' ? 10 : 50) + n;
const DSR_FLAGS = LB_F_REJECT_NO_ENDPOINTS | LB_F_DSR;
/** The backend on another node every DSR frontend starts with. */
const remoteBackend = (f: Family, proto: L4Proto): BackendSpec => ({ id: svcId(f, proto, 0), addr: backend(f), port: VIP_PORT[proto] });
/** Frontend n of the table at the top, as the test's beforeAll writes it. */
function serviceSpec(f: Family, proto: L4Proto, n: 1 | 2 | 3 | 4 | 5): ServiceSpec {
  const port = VIP_PORT[proto];
  const remote = remoteBackend(f, proto);
  const local = { id: svcId(f, proto, 9), addr: planOf(f).backend(9), port, flags: BE_F_LOCAL };
  const [flags, backends] = {
    1: [DSR_FLAGS, [remote]],
    2: [LB_F_REJECT_NO_ENDPOINTS, [remote]],
    3: [DSR_FLAGS, [local]],
    4: [DSR_FLAGS | LB_F_SOURCE_RANGES, [remote]],
    5: [DSR_FLAGS, []],
  }[n] as [number, BackendSpec[]];
  return { id: svcId(f, proto, n), vip: fe(f, proto, n).addr, port, proto, kind: LB_KIND_LOAD_BALANCER, flags, backends };
}
/** The loadBalancerSourceRanges entry of frontend 4 (the clients' /24, /112). */
const rangeOf = (f: Family, proto: L4Proto) =>
  f === 4
    ? { prefixlen: 32 + 24, serviceId: svcId(4, proto, 4), addr: '198.18.0.0' }
    : { prefixlen: 32 + 112, serviceId: svcId(6, proto, 4), addr: '2001:2::1:0' };

function toFrontend(f: Family, proto: L4Proto, to: { addr: string; port: number }, sport: number, extra: Partial<FlowFrame> = {}): Buffer {
  return flowFrame(f, proto, { src: client(f), dst: to.addr, sport, dport: to.port, payload: 'hello', ...extra });
}

function snapshot(): Map<string, MetricSample> {
  return new Map(dp().readMetrics().map((m) => [`${m.dir}/${m.reason}`, m]));
}

/** Runs one frame through the XDP program; `counted` is every counter that moved. */
function runXdp(frame: Buffer): { retval: number; data: Buffer; counted: Counted[] } {
  const before = snapshot();
  const r = progTestRun(xdp!.fd, { data: frame });
  const counted: Counted[] = [];
  for (const [key, a] of snapshot()) {
    const b = before.get(key);
    const packets = a.packets - (b?.packets ?? 0n);
    const bytes = a.bytes - (b?.bytes ?? 0n);
    if (packets !== 0n || bytes !== 0n) counted.push({ reason: a.reason, dir: a.dir, packets, bytes });
  }
  return { retval: r.retval, data: Buffer.from(r.data), counted };
}

/** Route lookups answer `ret` out of `ifindex` with the north-south MACs. */
function mockFibVia(ifindex: number, ret: number = FIB.SUCCESS): void {
  const m = dp().map('fib_test', u32Codec, fibTestEntry);
  const mac = (s: string) => Buffer.from(s.split(':').map((x) => parseInt(x, 16)));
  try {
    m.update(0, { ifindex, ret, smac: mac(UPLINK_MAC), dmac: mac(NEXT_HOP_MAC), src: Buffer.alloc(16), dst: Buffer.alloc(16), lookups: 0 });
  } finally {
    m.close();
  }
}

function ctEntries(f: Family) {
  return f === 4 ? [...dp().maps.ct4.entries()] : [...dp().maps.ct6.entries()];
}

beforeAll(() => {
  h = BpfHarness.open(ROOT);
  xdp = XdpProgram.open({ dataplane: h.dp, objectPath: XDP_TEST_OBJECT });
  for (const [f, proto] of CASES) {
    for (const n of [1, 2, 3, 4, 5] as const) addService(h.dp, serviceSpec(f, proto, n));
    if (f === 4) h.dp.maps.sourceRanges4.update(rangeOf(4, proto), { allow: 1 });
    else h.dp.maps.sourceRanges6.update(rangeOf(6, proto), { allow: 1 });
  }
  h.dp.bumpFlowEpoch();
});

afterAll(() => {
  xdp?.close();
  BpfHarness.destroy(h, ROOT);
});

beforeEach(() => {
  harness().clearFlows();
  clearSnat(dp());
  setDsrNodeConfig(dp(), { addr4: node(4), addr6: node(6) });
  mockFibVia(TEST_RUN_IFINDEX);
  setTestMtu(dp(), 0);
});

describe('XDP: what it leaves to tc (XDP_PASS, uncounted, untouched, no state)', () => {
  it.each(CASES)('IPv%i %s: not a frontend', (f, proto) => {
    const input = toFrontend(f, proto, { addr: planOf(f).vip(200), port: 80 }, 40000);
    const r = runXdp(input);
    expect(r).toMatchObject({ retval: XDP.PASS, counted: [] });
    expect(r.data.equals(input)).toBe(true);
  });

  const cases: [string, (f: Family, proto: L4Proto) => Buffer, () => void][] = [
    ['a frontend without LB_F_DSR (SNAT is tc\'s)', (f, p) => toFrontend(f, p, fe(f, p, 2), 40001), () => {}],
    ['a backend on this node', (f, p) => toFrontend(f, p, fe(f, p, 3), 40002), () => {}],
    ['a frontend without endpoints (tc rejects it)', (f, p) => toFrontend(f, p, fe(f, p, 5), 40003), () => {}],
    ['no neighbour entry yet (tc resolves it)', (f, p) => toFrontend(f, p, fe(f, p, 1), 40004), () => mockFibVia(TEST_RUN_IFINDEX, FIB.NO_NEIGH)],
    ['no route (tc counts the drop)', (f, p) => toFrontend(f, p, fe(f, p, 1), 40005), () => mockFibVia(TEST_RUN_IFINDEX, FIB.NOT_FWDED)],
    ['too big once encapsulated (tc answers with ICMP)', (f, p) => toFrontend(f, p, fe(f, p, 1), 40006, { payload: Buffer.alloc(1400) }), () => setTestMtu(dp(), 1420)],
    ['DSR mode off on the node', (f, p) => toFrontend(f, p, fe(f, p, 1), 40007), () => setDsrNodeConfig(dp(), { addr4: node(4), addr6: node(6), dsr: false })],
  ];
  const table = FAMILIES.flatMap((f) => (['tcp', 'udp'] as const).flatMap((p) => cases.map(([name, frame, setup]) => [f, p, name, frame, setup] as const)));
  it.each(table)('IPv%i %s: %s', (f, proto, _name, frame, setup) => {
    setup();
    const input = frame(f, proto);
    const r = runXdp(input);
    expect(r).toMatchObject({ retval: XDP.PASS, counted: [] });
    expect(r.data.equals(input)).toBe(true);
    expect(ctEntries(f)).toHaveLength(0);
  });

  it.each(FAMILIES)('IPv%i tcp: a RST without a flow (tc drops and counts it)', (f) => {
    const r = runXdp(toFrontend(f, 'tcp', fe(f, 'tcp', 1), 40008, { flags: { rst: true } }));
    expect(r).toMatchObject({ retval: XDP.PASS, counted: [] });
  });

  it('IPv6 with an extension header (DSR carries plain packets only)', () => {
    const input = ipv6Tcp({ src: client(6), dst: fe(6, 'tcp', 1).addr, sport: 40009, dport: 80, flags: { syn: true }, extHeaders: [{ type: 'dst' }] });
    expect(runXdp(input)).toMatchObject({ retval: XDP.PASS, counted: [] });
  });

  it.each(FAMILIES)("IPv%i udp: a flow tc tracks without DSR (SNAT) stays with tc", (f) => {
    setDsrNodeConfig(dp(), { addr4: node(4), addr6: node(6), dsr: false });
    const input = toFrontend(f, 'udp', fe(f, 'udp', 1), 40010);
    expect(harness().ingress(input).counted[0]?.reason).toBe('service_snat');
    setDsrNodeConfig(dp(), { addr4: node(4), addr6: node(6) });
    const r = runXdp(input);
    expect(r).toMatchObject({ retval: XDP.PASS, counted: [] });
    expect(ctEntries(f).some(([, e]) => (e.flags & CT_F_SNAT) !== 0)).toBe(true);
  });
});

describe('XDP: loadBalancerSourceRanges', () => {
  it.each(CASES)('IPv%i %s: a client outside every range is dropped and counted', (f, proto) => {
    const input = flowFrame(f, proto, { src: outsider(f), dst: fe(f, proto, 4).addr, sport: 40020, dport: VIP_PORT[proto], payload: 'x' });
    const r = runXdp(input);
    expect(r.retval).toBe(XDP.DROP);
    expect(r.counted).toEqual(countedOnce('drop_source_range', 'ingress', input));
    expect(ctEntries(f)).toHaveLength(0);
  });

  it.each(CASES)('IPv%i %s: a client inside a range goes on (DSR here)', (f, proto) => {
    const input = toFrontend(f, proto, fe(f, proto, 4), 40021);
    const r = runXdp(input);
    expect(r.retval).toBe(XDP.TX);
    expect(r.counted).toEqual(countedOnce('xdp_dsr_encap', 'ingress', input));
  });

  it.each(FAMILIES)('IPv%i tcp: tc drops the same client with XDP off', (f) => {
    const input = flowFrame(f, 'tcp', { src: outsider(f), dst: fe(f, 'tcp', 4).addr, sport: 40022, dport: 80, payload: 'x' });
    expect(harness().ingress(input).counted).toEqual(countedOnce('drop_source_range', 'ingress', input));
  });
});

describe('XDP: DSR forwarding', () => {
  it.each(CASES)('IPv%i %s: a new flow is encapsulated and sent back out (XDP_TX), with the conntrack entry tc makes', (f, proto) => {
    const input = toFrontend(f, proto, fe(f, proto, 1), 40030);
    const r = runXdp(input);
    expect(r.retval).toBe(XDP.TX);
    expect(r.counted).toEqual(countedOnce('xdp_dsr_encap', 'ingress', input));
    expectEncapsulated(r.data, input, node(f), backend(f));
    const ct = ctEntries(f);
    expect(ct).toHaveLength(1);
    const [key, e] = ct[0]!;
    expect(key).toMatchObject({ saddr: client(f), daddr: fe(f, proto, 1).addr, sport: 40030, dport: VIP_PORT[proto], dir: CT_DIR_SERVICE });
    expect(e.flags & CT_F_DSR).toBe(CT_F_DSR);
    expect(e.backendId).toBe(svcId(f, proto, 0));
  });

  it.each(CASES)('IPv%i %s: byte for byte what tc sends for the same packet', (f, proto) => {
    const input = toFrontend(f, proto, fe(f, proto, 1), 40031);
    const viaXdp = runXdp(input);
    harness().clearFlows();
    const viaTc = harness().ingress(input);
    expect(viaTc.retval).toBe(TC_ACT_REDIRECT);
    expect(viaXdp.data.equals(viaTc.data)).toBe(true);
  });

  it.each(FAMILIES)('IPv%i tcp: another egress device than the ingress one: bpf_redirect (XDP_REDIRECT)', (f) => {
    mockFibVia(7);
    const input = toFrontend(f, 'tcp', fe(f, 'tcp', 1), 40032);
    const r = runXdp(input);
    expect(r.retval).toBe(XDP.REDIRECT);
    expect(r.counted).toEqual(countedOnce('xdp_dsr_encap', 'ingress', input));
    expectEncapsulated(r.data, input, node(f), backend(f));
  });

  it.each(FAMILIES)('IPv%i tcp: the established flow: XDP_TX again, conntrack state moves on', (f) => {
    expect(runXdp(toFrontend(f, 'tcp', fe(f, 'tcp', 1), 40033)).retval).toBe(XDP.TX);
    const ack = toFrontend(f, 'tcp', fe(f, 'tcp', 1), 40033, { flags: { ack: true }, seq: 1001, ack: 1 });
    const r = runXdp(ack);
    expect(r.retval).toBe(XDP.TX);
    expect(r.counted).toEqual(countedOnce('xdp_dsr_encap', 'ingress', ack));
    expectEncapsulated(r.data, ack, node(f), backend(f));
    expect(ctEntries(f)[0]![1].flags & CT_F_ESTABLISHED).toBe(CT_F_ESTABLISHED);
  });

  it.each(FAMILIES)('IPv%i tcp: a flow tc started (XDP attached later) is continued by XDP', (f) => {
    expect(harness().ingress(toFrontend(f, 'tcp', fe(f, 'tcp', 1), 40034)).counted[0]?.reason).toBe('dsr_encap');
    const ack = toFrontend(f, 'tcp', fe(f, 'tcp', 1), 40034, { flags: { ack: true }, seq: 1001, ack: 1 });
    const r = runXdp(ack);
    expect(r.retval).toBe(XDP.TX);
    expectEncapsulated(r.data, ack, node(f), backend(f));
  });

  it.each(FAMILIES)('IPv%i tcp: a flow XDP started is continued by tc (XDP detached, or a packet it passed)', (f) => {
    expect(runXdp(toFrontend(f, 'tcp', fe(f, 'tcp', 1), 40035)).retval).toBe(XDP.TX);
    const ack = toFrontend(f, 'tcp', fe(f, 'tcp', 1), 40035, { flags: { ack: true }, seq: 1001, ack: 1 });
    const r = harness().ingress(ack);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    expect(r.counted).toEqual(countedOnce('dsr_encap', 'ingress', ack));
    expectEncapsulated(r.data, ack, node(f), backend(f));
  });

  it.each(FAMILIES)('IPv%i udp: too big for XDP: tc answers it, the flow XDP made stays', (f) => {
    expect(runXdp(toFrontend(f, 'udp', fe(f, 'udp', 1), 40036)).retval).toBe(XDP.TX);
    setTestMtu(dp(), 1420);
    // XDP caches the route MTU with the next hop (lib/xdp.h): a new MTU acts once that entry expires.
    harness().clearXdpCaches();
    const big = toFrontend(f, 'udp', fe(f, 'udp', 1), 40036, { payload: Buffer.alloc(1420 - (f === 4 ? 28 : 48) - DSR_OVERHEAD[f] + 1) });
    expect(runXdp(big)).toMatchObject({ retval: XDP.PASS, counted: [] });
    const r = harness().ingress(big);
    expect(r.counted).toEqual(countedOnce('frag_needed_reply', 'ingress', big));
    expect(parseFrame(r.data).l4.icmp?.mtu).toBe(1420 - DSR_OVERHEAD[f]);
    expect(ctEntries(f)).toHaveLength(1);
  });
});

const U64_MAX = 2n ** 64n - 1n;
const flows = (f: Family) => (f === 4 ? dp().maps.xdpFlow4 : dp().maps.xdpFlow6);
const nexthops = () => [...dp().maps.xdpNexthop.entries()];
/** Level 1 (xdp_flow_cache): every filled slot, by index, with its values per CPU. */
const filledSlots = (): [number, XdpFlowSlot[]][] =>
  [...dp().maps.xdpFlowCache.entries()].filter(([, perCpu]) => perCpu.some((v) => v.family !== 0));
/** Is slot value `v` flow `sport`'s, made under the current epoch, with a deadline? */
function isLive(v: XdpFlowSlot, f: Family, sport: number): boolean {
  const epoch = Number((dp().maps.flowEpoch.lookup(0)?.epoch ?? 0n) & 0xffffffffn);
  return v.family === f && v.sport === sport && v.epoch === epoch && v.validUntil > 0n;
}
/** The live slots holding flow `sport`, whatever the CPU the test run used. */
const slotsOf = (f: Family, sport: number): [number, XdpFlowSlot[]][] =>
  filledSlots().filter(([, perCpu]) => perCpu.some((v) => isLive(v, f, sport)));
/** Flow `sport`'s live slot value (on the CPU that made it). */
function liveSlot(f: Family, sport: number): XdpFlowSlot {
  const found = slotsOf(f, sport);
  expect(found, `one slot for flow ${sport}`).toHaveLength(1);
  return found[0]![1].find((v) => isLive(v, f, sport))!;
}
/**
 * Flow `sport`'s slot copied from the CPU that made it to every CPU: the
 * test process may run its next BPF_PROG_TEST_RUN on another CPU (XDP test
 * runs cannot be pinned), and a level-1 hit must not depend on the scheduler.
 */
function replicateSlot(f: Family, sport: number): void {
  const made = liveSlot(f, sport);
  dp().maps.xdpFlowCache.update(slotsOf(f, sport)[0]![0], made);
}
/** Every slot emptied, on every CPU (a slot lost to another flow, or never made on this CPU). */
function emptySlots(): void {
  const m = dp().maps.xdpFlowCache;
  for (const [k, perCpu] of filledSlots()) m.update(k, perCpu.map((v) => ({ ...v, family: 0, validUntil: 0n })));
}
/** Every cache entry's deadline (both levels, next hops) set to `t` (0: as if its time had passed; U64_MAX: as if time stood still). */
function setDeadlines(f: Family, t: bigint): void {
  for (const [k, v] of [...flows(f).entries()]) flows(f).update(k as never, { ...v, validUntil: t });
  for (const [k, v] of nexthops()) dp().maps.xdpNexthop.update(k, { ...v, expires: t });
  const m = dp().maps.xdpFlowCache;
  for (const [k, perCpu] of filledSlots()) m.update(k, perCpu.map((v) => (v.family === 0 ? v : { ...v, validUntil: t })));
}
const ackOf = (f: Family, sport: number, extra: Partial<FlowFrame> = {}, n: 1 | 4 = 1) =>
  toFrontend(f, 'tcp', fe(f, 'tcp', n), sport, { flags: { ack: true }, seq: 1001, ack: 1, ...extra });
/** SYN, then one ACK to frontend n: the flow is established and cached (both levels). */
function establish(f: Family, sport: number, n: 1 | 4 = 1): void {
  expect(runXdp(toFrontend(f, 'tcp', fe(f, 'tcp', n), sport)).retval).toBe(XDP.TX);
  expect([...flows(f).entries()], 'a first packet is not cached').toHaveLength(0);
  expect(slotsOf(f, sport), 'a first packet is not cached').toHaveLength(0);
  expect(runXdp(ackOf(f, sport, {}, n)).retval).toBe(XDP.TX);
  const cached = [...flows(f).entries()];
  expect(cached).toHaveLength(1);
  expect(cached[0]![1]).toMatchObject({ ifindex: TEST_RUN_IFINDEX, backendId: svcId(f, 'tcp', 0) });
  expect(cached[0]![1].ctFlags & CT_F_ESTABLISHED).toBe(CT_F_ESTABLISHED);
  expect(slotsOf(f, sport), 'one slot, on the CPU of the run').toHaveLength(1);
  replicateSlot(f, sport);
}

describe('XDP: the flow and next-hop caches (lib/xdp.h)', () => {
  const ack = (f: Family, sport: number, extra: Partial<FlowFrame> = {}) => ackOf(f, sport, extra);

  it.each(FAMILIES)('IPv%i tcp: cached packets skip the route lookup and are byte for byte what tc sends (TOS / traffic class kept, outer checksum right)', (f) => {
    establish(f, 40040);
    setDeadlines(f, U64_MAX);
    const lookups = lastFibLookup(dp(), f).lookups;
    const marked =
      f === 4
        ? ipv4Tcp({ src: client(4), dst: fe(4, 'tcp', 1).addr, sport: 40040, dport: 80, flags: { ack: true }, seq: 2001, ack: 1, tos: 0xb9, payload: 'cached' })
        : ipv6Tcp({ src: client(6), dst: fe(6, 'tcp', 1).addr, sport: 40040, dport: 80, flags: { ack: true }, seq: 2001, ack: 1, trafficClass: 0xb9, flowLabel: 0x12345, payload: 'cached' });
    const r = runXdp(marked);
    expect(r.retval).toBe(XDP.TX);
    expect(r.counted).toEqual(countedOnce('xdp_dsr_encap', 'ingress', marked));
    expectEncapsulated(r.data, marked, node(f), backend(f));
    expect(lastFibLookup(dp(), f).lookups, 'no route lookup for a cached flow').toBe(lookups);
    const viaTc = harness().ingress(marked);
    expect(viaTc.retval).toBe(TC_ACT_REDIRECT);
    expect(r.data.equals(viaTc.data)).toBe(true);
  });

  it.each(FAMILIES)('IPv%i tcp: a route change is picked up once the next hop expires', (f) => {
    establish(f, 40041);
    mockFibVia(7);
    setDeadlines(f, 0n);
    const r = runXdp(ack(f, 40041));
    expect(r.retval).toBe(XDP.REDIRECT);
    expectEncapsulated(r.data, ack(f, 40041), node(f), backend(f));
    expect(nexthops().map(([, v]) => v.ifindex)).toEqual([7]);
    expect([...flows(f).entries()][0]![1].ifindex).toBe(7);
  });

  it.each(FAMILIES)('IPv%i tcp: a neighbour that went away does not blackhole: the stale next hop is dropped, tc takes the packets', (f) => {
    establish(f, 40042);
    mockFibVia(TEST_RUN_IFINDEX, FIB.NO_NEIGH);
    setDeadlines(f, 0n);
    const input = ack(f, 40042);
    expect(runXdp(input)).toMatchObject({ retval: XDP.PASS, counted: [] });
    expect(nexthops()).toHaveLength(0);
    expect(runXdp(input)).toMatchObject({ retval: XDP.PASS, counted: [] });
    // tc sends it through the neighbour subsystem (bpf_redirect_neigh).
    expect(harness().ingress(input).counted).toEqual(countedOnce('dsr_encap', 'ingress', input));
  });

  it.each(FAMILIES)('IPv%i tcp: a FIN on a cached flow goes through conntrack (CLOSING recorded)', (f) => {
    establish(f, 40043);
    setDeadlines(f, U64_MAX);
    expect(runXdp(ack(f, 40043)).retval).toBe(XDP.TX);
    const fin = ack(f, 40043, { flags: { fin: true, ack: true } });
    expect(runXdp(fin).retval).toBe(XDP.TX);
    expect(ctEntries(f)[0]![1].flags & CT_F_CLOSING).toBe(CT_F_CLOSING);
    expect([...flows(f).entries()][0]![1].ctFlags & CT_F_CLOSING).toBe(CT_F_CLOSING);
  });

  it.each(FAMILIES)('IPv%i tcp: a route change is picked up once the next hop expires, even where only level 2 has the flow', (f) => {
    establish(f, 40045);
    emptySlots();
    mockFibVia(7);
    setDeadlines(f, 0n);
    const r = runXdp(ack(f, 40045));
    expect(r.retval).toBe(XDP.REDIRECT);
    expect([...flows(f).entries()][0]![1].ifindex).toBe(7);
    expect(liveSlot(f, 40045).ifindex).toBe(7);
  });
});

describe('XDP: level 1 (xdp_flow_cache, per CPU) and the epoch', () => {
  /** Runs `input` through XDP with level 2 emptied first: a packet it encapsulates without refilling level 2 was a level-1 hit (the slow path refills both). */
  function runLevel1(f: Family, input: Buffer): ReturnType<typeof runXdp> {
    flows(f).clear();
    const r = runXdp(input);
    expect([...flows(f).entries()], 'a level-1 hit: the slow path did not run').toHaveLength(0);
    return r;
  }

  it.each(FAMILIES)('IPv%i tcp: a hit sends the same bytes as the slow path and as tc, without conntrack or a route lookup', (f) => {
    establish(f, 40050);
    const input = ackOf(f, 40050, { payload: 'level one', seq: 3001 });
    const lookups = lastFibLookup(dp(), f).lookups;
    const hit = runLevel1(f, input);
    expect(hit.retval).toBe(XDP.TX);
    expect(hit.counted).toEqual(countedOnce('xdp_dsr_encap', 'ingress', input));
    expectEncapsulated(hit.data, input, node(f), backend(f));
    expect(lastFibLookup(dp(), f).lookups).toBe(lookups);
    // The same packet through the slow path: an epoch bump invalidates level 1 (and level 2, emptied anyway).
    dp().bumpFlowEpoch();
    const slow = runXdp(input);
    expect(slow.retval).toBe(XDP.TX);
    expect([...flows(f).entries()], 'the slow path ran and refilled level 2').toHaveLength(1);
    expect(slow.data.equals(hit.data)).toBe(true);
    const viaTc = harness().ingress(input);
    expect(viaTc.retval).toBe(TC_ACT_REDIRECT);
    expect(hit.data.equals(viaTc.data)).toBe(true);
  });

  it.each(FAMILIES)('IPv%i tcp: a level-2 hit refills the slot (a flow seen first on another CPU, or after a collision)', (f) => {
    establish(f, 40051);
    emptySlots();
    const input = ackOf(f, 40051);
    const lookups = lastFibLookup(dp(), f).lookups;
    const r = runXdp(input);
    expect(r.retval).toBe(XDP.TX);
    expectEncapsulated(r.data, input, node(f), backend(f));
    expect(lastFibLookup(dp(), f).lookups).toBe(lookups);
    expect(slotsOf(f, 40051)).toHaveLength(1);
    replicateSlot(f, 40051);
    expect(runLevel1(f, input).data.equals(r.data)).toBe(true);
  });

  it.each(FAMILIES)('IPv%i tcp: a slot holding another flow is a miss, never that flow\'s header', (f) => {
    establish(f, 40052);
    const [[index, perCpu]] = slotsOf(f, 40052) as [[number, XdpFlowSlot[]]];
    // Another flow (source port + 1) in this flow's slot, with its own outer header: another backend.
    const other = Buffer.from(liveSlot(f, 40052).hdr);
    const outerDst = f === 4 ? 14 + 16 : 14 + 24;
    other.writeUInt8(other.readUInt8(outerDst + 3) ^ 0x55, outerDst + 3);
    dp().maps.xdpFlowCache.update(index, perCpu.map((v) => (v.family === 0 ? v : { ...v, sport: 40053, hdr: other })));
    const input = ackOf(f, 40052);
    for (const level2 of [true, false]) {
      if (!level2) {
        dp().maps.xdpFlowCache.update(index, perCpu.map((v) => (v.family === 0 ? v : { ...v, sport: 40053, hdr: other })));
        flows(f).clear();
      }
      const r = runXdp(input);
      expect(r.retval).toBe(XDP.TX);
      expectEncapsulated(r.data, input, node(f), backend(f));
      // Level 2 (or the slow path) took the packet and gave the slot back to this flow.
      expect(slotsOf(f, 40052).map(([i]) => i)).toEqual([index]);
    }
  });

  it.each(FAMILIES)('IPv%i tcp: the Service removed, then the epoch bumped: the next packet is tc\'s (XDP_PASS, untouched)', (f) => {
    establish(f, 40054);
    const input = ackOf(f, 40054);
    expect(runLevel1(f, input).retval).toBe(XDP.TX);
    establish(f, 40055); // level 2 holds this one, level 1 does not: both levels must see the bump
    emptySlots();
    const services = f === 4 ? dp().maps.services4 : dp().maps.services6;
    const saved = [...services.entries()].find(([k]) => k.addr === fe(f, 'tcp', 1).addr && k.port === 80 && k.proto === IPPROTO_TCP);
    expect(saved).toBeDefined();
    services.delete(saved![0] as never);
    try {
      dp().bumpFlowEpoch();
      for (const sport of [40054, 40055]) {
        const again = ackOf(f, sport);
        const r = runXdp(again);
        expect(r).toMatchObject({ retval: XDP.PASS, counted: [] });
        expect(r.data.equals(again)).toBe(true);
      }
    } finally {
      services.update(saved![0] as never, saved![1] as never);
      dp().bumpFlowEpoch();
    }
  });

  it.each(FAMILIES)('IPv%i tcp: loadBalancerSourceRanges narrowed, then the epoch bumped: the next packet is dropped as tc drops it', (f) => {
    establish(f, 40056, 4);
    const input = ackOf(f, 40056, {}, 4);
    expect(runLevel1(f, input).retval).toBe(XDP.TX);
    const ranges = (f === 4 ? dp().maps.sourceRanges4 : dp().maps.sourceRanges6) as { update(k: unknown, v: unknown): void; delete(k: unknown): boolean };
    const narrow = { ...rangeOf(f, 'tcp'), prefixlen: f === 4 ? 32 + 32 : 32 + 128, addr: client(f, 11) };
    ranges.delete(rangeOf(f, 'tcp'));
    ranges.update(narrow, { allow: 1 });
    try {
      dp().bumpFlowEpoch();
      const r = runXdp(input);
      expect(r.retval).toBe(XDP.DROP);
      expect(r.counted).toEqual(countedOnce('drop_source_range', 'ingress', input));
      expect(harness().ingress(input).counted).toEqual(countedOnce('drop_source_range', 'ingress', input));
    } finally {
      ranges.delete(narrow);
      ranges.update(rangeOf(f, 'tcp'), { allow: 1 });
      dp().bumpFlowEpoch();
    }
  });

  const levels = FAMILIES.flatMap((f) => [[f, 1], [f, 2]] as const);
  it.each(levels)('IPv%i tcp: the backend replaced, then the epoch bumped: the next packet goes to tc, which chooses again; XDP follows (flow in level %i)', (f, level) => {
    const sport = 40057 + level;
    establish(f, sport);
    const input = ackOf(f, sport);
    if (level === 1) expect(runLevel1(f, input).retval).toBe(XDP.TX);
    else emptySlots();
    const spec = serviceSpec(f, 'tcp', 1);
    const old = remoteBackend(f, 'tcp');
    const replacement = { id: svcId(f, 'tcp', 8), addr: planOf(f).backend(2), port: 80 };
    const backends = (f === 4 ? dp().maps.backends4 : dp().maps.backends6) as { delete(k: number): boolean };
    // As the agent does: the new endpoint in, the old one out, then the bump.
    setBackends(dp(), spec, [replacement]);
    backends.delete(old.id);
    try {
      dp().bumpFlowEpoch();
      expect(runXdp(input)).toMatchObject({ retval: XDP.PASS, counted: [] });
      const viaTc = harness().ingress(input);
      expect(viaTc.counted).toEqual(countedOnce('dsr_encap', 'ingress', input));
      expectEncapsulated(viaTc.data, input, node(f), replacement.addr);
      const next = runXdp(input);
      expect(next.retval).toBe(XDP.TX);
      expect(next.data.equals(viaTc.data)).toBe(true);
    } finally {
      writeBackend(dp(), 'tcp', old);
      setBackends(dp(), { ...spec, backends: [replacement] }, [old]);
      backends.delete(replacement.id);
      dp().bumpFlowEpoch();
    }
  });
});
