// The tc established fast path (bpf/lib/flowcache.h): an established flow's
// later packets are rewritten from a per-CPU cache slot, byte for byte as the
// full path rewrites them, and a slot stands for the full path only while the
// maps are as they were (the flow epoch the agent bumps), conntrack would
// record nothing new (TCP flags) and the packet is one the cache can carry.
//
// A hit is told from the full path by a change the cache does not see until
// the epoch moves: the flow's backend deleted from its map (the full path
// would choose again; a hit still sends to the cached backend).
//
// Address plan (IPv4 / IPv6): client 198.18.0.40 / 2001:2::1:40, VIP
// 198.19.0.1 / 2001:2:0:ff::1 (TCP :80, UDP :53), backends 198.18.1.1-2 /
// 2001:2::2:1-2 (:8080 TCP, :5353 UDP).
import { beforeEach, describe, expect, it } from 'vitest';
import {
  CT_DIR_SERVICE,
  CT_F_CLOSING,
  FLOW_HOOK_TC_EGRESS,
  FLOW_HOOK_TC_INGRESS,
  IPPROTO_TCP,
  flowCacheAddr,
} from '../../src/bpf/abi.js';
import {
  CASES,
  TARGET_PORT,
  TC_ACT_OK,
  TC_ACT_UNSPEC,
  VIP_PORT,
  countedOnce,
  expectChecksumsOk,
  flowFrame,
  planOf,
  useHarness,
  type Family,
  type FlowFrame,
  type L4Proto,
} from '../lib/bpf-harness.js';
import { canonicalIp, parseFrame, rewrite } from '../lib/packet.js';
import { addService, removeService, setBackends, type ServiceSpec } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-flowcache';
const CLIENT = 40;
const ACK = { ack: true };

const services = new Map<string, ServiceSpec>();
const harness = useHarness(ROOT, (h) => {
  for (const [family, proto] of CASES) services.set(`${family}/${proto}`, addService(h.dp, specOf(family, proto)));
});

function specOf(family: Family, proto: L4Proto): ServiceSpec {
  const p = planOf(family);
  const id = family * 10 + (proto === 'tcp' ? 1 : 2);
  return {
    id,
    vip: p.vip(1),
    port: VIP_PORT[proto],
    proto,
    backends: [1, 2].map((n) => ({ id: id * 10 + n, addr: p.backend(n), port: TARGET_PORT[proto] })),
  };
}

const serviceOf = (family: Family, proto: L4Proto): ServiceSpec => services.get(`${family}/${proto}`)!;

beforeEach(() => {
  harness().clearFlows();
  // Put back whatever a test removed.
  for (const [family, proto] of CASES) services.set(`${family}/${proto}`, addService(harness().dp, specOf(family, proto)));
});

/** A client packet to the VIP (TCP: flags, default ACK). */
function toVip(family: Family, proto: L4Proto, cport: number, extra: Partial<FlowFrame> = {}): Buffer {
  const p = planOf(family);
  return flowFrame(family, proto, { src: p.client(CLIENT), dst: p.vip(1), sport: cport, dport: VIP_PORT[proto], flags: ACK, payload: 'q', ...extra });
}

/** Opens a flow (SYN, or a first datagram) and sends one established packet (which fills the slot); the backend chosen. */
function establish(family: Family, proto: L4Proto, cport: number, extra: Partial<FlowFrame> = {}): string {
  const first = harness().ingress(toVip(family, proto, cport, { ...extra, flags: { syn: true } }));
  expect(first.retval).toBe(TC_ACT_OK);
  const backend = parseFrame(first.data).ip.dst;
  const second = harness().ingress(toVip(family, proto, cport, extra));
  expect(second.retval).toBe(TC_ACT_OK);
  expect(parseFrame(second.data).ip.dst).toBe(backend);
  return backend;
}

const backendsMap = (family: Family) => (family === 4 ? harness().dp.maps.backends4 : harness().dp.maps.backends6);

/** Deletes the flow's backend entry without telling the cache (no epoch bump). */
function deleteBackendBehindCache(family: Family, proto: L4Proto, addr: string): void {
  const b = serviceOf(family, proto).backends.find((x) => x.addr === addr);
  expect(b, `backend ${addr}`).toBeDefined();
  expect(backendsMap(family).delete(b!.id)).toBe(true);
}

/** Every filled slot of the cache, over CPUs. */
function slots() {
  const out = [];
  for (const [, perCpu] of harness().dp.maps.flowCache.entries()) for (const v of perCpu) if (v.hook !== 0) out.push(v);
  return out;
}

describe('hits', () => {
  it.each(CASES)('IPv%i %s: an established packet is rewritten from the cache, the same bytes as the full path', (family, proto) => {
    const backend = establish(family, proto, 41000);
    const input = toVip(family, proto, 41000, { payload: 'third' });
    // The backend's entry is gone but the epoch did not move: only a hit still reaches it.
    deleteBackendBehindCache(family, proto, backend);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    expectChecksumsOk(r.data);
    expect(r.data).toEqual(rewrite(input, { dst: backend, dport: TARGET_PORT[proto] }));
  });

  it.each(CASES)('IPv%i %s: a reply is reverse-NATed from the cache, the same bytes as the full path', (family, proto) => {
    const p = planOf(family);
    const backend = establish(family, proto, 41001);
    const reply = (payload: string): Buffer =>
      flowFrame(family, proto, { src: backend, dst: p.client(CLIENT), sport: TARGET_PORT[proto], dport: 41001, flags: ACK, payload });
    const full = harness().egress(reply('one'));
    expect(full.retval).toBe(TC_ACT_OK);
    expect(slots().some((s) => s.hook === FLOW_HOOK_TC_EGRESS && canonicalIp(flowCacheAddr(s.saddr, family)) === backend)).toBe(true);
    // The frontend's revnat entry is gone, epoch unchanged: the full path would pass the reply untranslated.
    const revnat = family === 4 ? harness().dp.maps.revnat4 : harness().dp.maps.revnat6;
    expect(revnat.delete(serviceOf(family, proto).id)).toBe(true);
    const input = reply('two');
    const r = harness().egress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('revnat', 'egress', input));
    expectChecksumsOk(r.data);
    expect(r.data).toEqual(rewrite(input, { src: p.vip(1), sport: VIP_PORT[proto] }));
  });

  it('the slot holds the flow, its rewrite and the epoch', () => {
    const p = planOf(4);
    const backend = establish(4, 'tcp', 41002);
    const epoch = harness().dp.maps.flowEpoch.lookup(0)!.epoch;
    const slot = slots().find((s) => s.hook === FLOW_HOOK_TC_INGRESS && s.sport === 41002);
    expect(slot).toMatchObject({
      sport: 41002,
      dport: VIP_PORT.tcp,
      proto: IPPROTO_TCP,
      family: 4,
      port: TARGET_PORT.tcp,
      epoch: Number(epoch & 0xffffffffn),
    });
    expect(flowCacheAddr(slot!.addr, 4)).toBe(backend);
    expect(flowCacheAddr(slot!.daddr, 4)).toBe(p.vip(1));
    expect(flowCacheAddr(slot!.saddr, 4)).toBe(p.client(CLIENT));
  });

  it('IPv4 UDP without a checksum keeps 0 through a hit', () => {
    const backend = establish(4, 'udp', 41003, { checksum: 'zero' });
    deleteBackendBehindCache(4, 'udp', backend);
    const input = toVip(4, 'udp', 41003, { checksum: 'zero', payload: 'third' });
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expectChecksumsOk(r.data, { udpZero: true });
    expect(r.data).toEqual(rewrite(input, { dst: backend, dport: TARGET_PORT.udp }));
  });

  it('IPv4 with options: the L4 header further in is found and rewritten', () => {
    const ipOptions = Buffer.from([1, 1, 1, 0]); // NOP NOP NOP EOL
    const backend = establish(4, 'tcp', 41004, { ipOptions });
    deleteBackendBehindCache(4, 'tcp', backend);
    const input = toVip(4, 'tcp', 41004, { ipOptions, payload: 'third' });
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expectChecksumsOk(r.data);
    expect(r.data).toEqual(rewrite(input, { dst: backend, dport: TARGET_PORT.tcp }));
  });
});

describe('what a slot does not stand for', () => {
  it.each(CASES)('IPv%i %s: after an epoch bump the full path runs again (a removed backend is chosen again)', (family, proto) => {
    const backend = establish(family, proto, 42000);
    const service = serviceOf(family, proto);
    // What a sync does when the endpoint goes: out of the slots, its entry deleted, the epoch bumped.
    setBackends(harness().dp, service, service.backends.filter((b) => b.addr !== backend));
    deleteBackendBehindCache(family, proto, backend);
    harness().dp.bumpFlowEpoch();
    const r = harness().ingress(toVip(family, proto, 42000, { payload: 'third' }));
    expect(r.retval).toBe(TC_ACT_OK);
    const other = serviceOf(family, proto).backends.find((b) => b.addr !== backend)!.addr;
    expect(parseFrame(r.data).ip.dst).toBe(other);
  });

  it.each(CASES)('IPv%i %s: a removed Service stops translating its established flows at once', (family, proto) => {
    establish(family, proto, 42001);
    removeService(harness().dp, serviceOf(family, proto)); // bumps the epoch, as a sync does
    const input = toVip(family, proto, 42001, { payload: 'third' });
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.data).toEqual(input);
  });

  it.each([4, 6] as const)('IPv%i TCP: FIN takes the full path, which records the closing state', (family) => {
    const p = planOf(family);
    const backend = establish(family, 'tcp', 42002);
    const fin = harness().ingress(toVip(family, 'tcp', 42002, { flags: { fin: true, ack: true } }));
    expect(fin.retval).toBe(TC_ACT_OK);
    expect(parseFrame(fin.data).ip.dst).toBe(backend);
    const ct = family === 4 ? harness().dp.maps.ct4 : harness().dp.maps.ct6;
    const e = ct.lookup({ saddr: p.client(CLIENT), daddr: p.vip(1), sport: 42002, dport: VIP_PORT.tcp, proto: IPPROTO_TCP, dir: CT_DIR_SERVICE } as never);
    expect(e!.flags & CT_F_CLOSING).toBe(CT_F_CLOSING);
  });

  it('TCP: a flag conntrack has not seen (PSH) takes the full path and records it', () => {
    const p = planOf(4);
    establish(4, 'tcp', 42003);
    const ct = harness().dp.maps.ct4;
    const key = { saddr: p.client(CLIENT), daddr: p.vip(1), sport: 42003, dport: VIP_PORT.tcp, proto: IPPROTO_TCP, dir: CT_DIR_SERVICE };
    const PSH = 0x08;
    expect(ct.lookup(key)!.tcpFlags & PSH).toBe(0);
    const r = harness().ingress(toVip(4, 'tcp', 42003, { flags: { ack: true, psh: true } }));
    expect(r.retval).toBe(TC_ACT_OK);
    expect(ct.lookup(key)!.tcpFlags & PSH).toBe(PSH);
  });

  it('another flow of the same Service is not served by this flow\'s slot', () => {
    const p = planOf(4);
    establish(4, 'udp', 42004);
    // Another client port: no slot of its own (a colliding slot holds another key), so the
    // full path runs and records the flow.
    const key = { saddr: p.client(CLIENT), daddr: p.vip(1), sport: 42005, dport: VIP_PORT.udp, proto: 17, dir: CT_DIR_SERVICE };
    expect(harness().dp.maps.ct4.lookup(key)).toBeUndefined();
    const r = harness().ingress(toVip(4, 'udp', 42005));
    expect(r.retval).toBe(TC_ACT_OK);
    expect(harness().dp.maps.ct4.lookup(key)).toBeDefined();
  });
});
