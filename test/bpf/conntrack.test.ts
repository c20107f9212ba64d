// Conntrack at uplink ingress: a tracked flow keeps its backend while that
// backend exists (slots reordered, backend quarantined), moves when the
// backend is deleted, treats an expired entry as a miss; the loser of a
// conntrack insert race joins the winner's backend; one backend behind two
// VIPs keeps the flows apart (cilium#11810); odd TCP packets of a tracked flow
// are translated like any other (kubernetes#74839); TCP packets that cannot
// open a flow are dropped and counted.
//
// Address plan (IPv4 / IPv6):
//   client    198.18.0.20             2001:2::1:20
//   VIP       198.19.0.1              2001:2:0:ff::1      TCP :80, UDP :53 (3 backends)
//   VIPs      198.19.0.2, 198.19.0.3  2001:2:0:ff::2-3    TCP :80, one shared backend
//   backends  198.18.1.1-4            2001:2::2:1-4       :8080 (TCP), :5353 (UDP)
//   shared    198.18.1.9              2001:2::2:9         :8080
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  BE_STATE_QUARANTINED,
  CT_DIR_REPLY,
  CT_DIR_SERVICE,
  CT_F_CLOSING,
  CT_F_ESTABLISHED,
  IPPROTO_TCP,
  IPPROTO_UDP,
  ct4Key,
  ct6Key,
  ctEntry,
  type Ct4Key,
  type Ct6Key,
  type CtEntry,
} from '../../src/bpf/abi.js';
import type { BpfMap } from '../../src/bpf/map.js';
import {
  BpfHarness,
  TC_ACT_OK,
  TC_ACT_SHOT,
  TEST_OBJECT,
  countedOnce,
  expectChecksumsOk,
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
import { parseFrame, rewrite, type TcpFlags } from '../lib/packet.js';
import { addService, setBackends, writeBackend, type BackendSpec, type ServiceSpec } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-conntrack';
const ALIVE = 2n ** 64n - 1n; // a deadline that never passes
const SYN: Partial<TcpFlags> = { syn: true };
const ACK: Partial<TcpFlags> = { ack: true };

let h: BpfHarness | undefined;
const harness = (): BpfHarness => h!;

const serviceId = (family: Family, proto: L4Proto): number => family * 10 + (proto === 'tcp' ? 1 : 2);
const backendsOf = (family: Family, proto: L4Proto, ns: number[]): BackendSpec[] =>
  ns.map((n) => ({ id: serviceId(family, proto) * 10 + n, addr: planOf(family).backend(n), port: TARGET_PORT[proto] }));
const specOf = (family: Family, proto: L4Proto): ServiceSpec => ({
  id: serviceId(family, proto),
  vip: planOf(family).vip(1),
  port: VIP_PORT[proto],
  proto,
  backends: backendsOf(family, proto, [1, 2, 3]),
});

function toVip(family: Family, proto: L4Proto, sport: number, flags: Partial<TcpFlags> = SYN, extra: Partial<FlowFrame> = {}): Buffer {
  const p = planOf(family);
  return flowFrame(family, proto, { src: p.client(20), dst: p.vip(1), sport, dport: VIP_PORT[proto], flags, payload: 'data', ...extra });
}

/** Sends one packet that must be translated; returns the backend address it went to. */
function send(family: Family, proto: L4Proto, sport: number, flags: Partial<TcpFlags> = SYN): string {
  const input = toVip(family, proto, sport, flags);
  const r = harness().ingress(input);
  expect(r.retval, `verdict of ${proto} ${sport}`).toBe(TC_ACT_OK);
  const out = expectChecksumsOk(r.data);
  expect(r.data).toEqual(rewrite(input, { dst: out.ip.dst, dport: TARGET_PORT[proto] }));
  return out.ip.dst;
}

/** What hash selection picks for each port under the current slots (flows cleared afterwards). */
function hashChoices(family: Family, proto: L4Proto, ports: number[]): Map<number, string> {
  const out = new Map(ports.map((port) => [port, send(family, proto, port)]));
  harness().clearFlows();
  return out;
}

const ctMap = (family: Family): BpfMap<Ct4Key | Ct6Key, CtEntry> =>
  (family === 4 ? harness().dp.maps.ct4 : harness().dp.maps.ct6) as BpfMap<Ct4Key | Ct6Key, CtEntry>;

function serviceKey(family: Family, proto: L4Proto, sport: number, vip = planOf(family).vip(1)): Ct4Key & Ct6Key {
  return {
    saddr: planOf(family).client(20),
    daddr: vip,
    sport,
    dport: VIP_PORT[proto],
    proto: proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP,
    dir: CT_DIR_SERVICE,
  };
}

function replyKey(family: Family, proto: L4Proto, sport: number, backend: string, bport = TARGET_PORT[proto]): Ct4Key & Ct6Key {
  return {
    saddr: backend,
    daddr: planOf(family).client(20),
    sport: bport,
    dport: sport,
    proto: proto === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP,
    dir: CT_DIR_REPLY,
  };
}

const backendByAddr = (family: Family, proto: L4Proto, addr: string): BackendSpec =>
  backendsOf(family, proto, [1, 2, 3, 4]).find((b) => b.addr === addr)!;

beforeAll(() => {
  h = BpfHarness.open(ROOT, { objectPath: TEST_OBJECT });
});

afterAll(() => BpfHarness.destroy(h, ROOT));

beforeEach(() => {
  // Every test starts from the same Services and no flows.
  harness().clearFlows();
  for (const family of FAMILIES) {
    for (const proto of ['tcp', 'udp'] as const) {
      const id = serviceId(family, proto);
      for (const b of backendsOf(family, proto, [1, 2, 3, 4])) (family === 4 ? harness().dp.maps.backends4 : harness().dp.maps.backends6).delete(b.id);
      for (let slot = 1; slot <= 4; slot++) harness().dp.maps.serviceSlots.delete({ serviceId: id, slot });
      addService(harness().dp, specOf(family, proto));
    }
  }
});

describe('a tracked flow and its backend', () => {
  it.each(CASES)('IPv%i %s: keeps its backend when the slots change (reordered, one added)', (family, proto) => {
    const ports = Array.from({ length: 64 }, (_, i) => 43000 + i);
    const before = hashChoices(family, proto, ports);
    const newSet = backendsOf(family, proto, [4, 3, 2, 1]);
    setBackends(harness().dp, specOf(family, proto), newSet);
    const after = hashChoices(family, proto, ports);
    setBackends(harness().dp, specOf(family, proto), backendsOf(family, proto, [1, 2, 3]));
    // A flow whose backend the new slots would not pick.
    const port = ports.find((p) => before.get(p) !== after.get(p));
    expect(port, 'a flow the new slots send elsewhere').toBeDefined();
    const original = send(family, proto, port!);
    expect(original).toBe(before.get(port!));
    setBackends(harness().dp, specOf(family, proto), newSet);
    expect(send(family, proto, port!, ACK)).toBe(original);
    expect(send(family, proto, port!, ACK)).toBe(original);
  });

  it.each(CASES)('IPv%i %s: moves to another backend when its backend is deleted', (family, proto) => {
    const port = 43100;
    const original = send(family, proto, port);
    const gone = backendByAddr(family, proto, original);
    const rest = backendsOf(family, proto, [1, 2, 3]).filter((b) => b.id !== gone.id);
    setBackends(harness().dp, specOf(family, proto), rest);
    (family === 4 ? harness().dp.maps.backends4 : harness().dp.maps.backends6).delete(gone.id);

    const input = toVip(family, proto, port, ACK);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    const moved = expectChecksumsOk(r.data).ip.dst;
    expect(rest.map((b) => b.addr)).toContain(moved);
    const e = ctMap(family).lookup(serviceKey(family, proto, port));
    expect(e?.backendId).toBe(backendByAddr(family, proto, moved).id);
    expect(ctMap(family).lookup(replyKey(family, proto, port, moved))?.backendId).toBe(e?.backendId);
    // and stays there
    expect(send(family, proto, port, ACK)).toBe(moved);
  });

  it.each(CASES)('IPv%i %s: stays on its backend when that backend is quarantined (out of the slots)', (family, proto) => {
    const port = 43200;
    const original = send(family, proto, port);
    const q = backendByAddr(family, proto, original);
    setBackends(harness().dp, specOf(family, proto), backendsOf(family, proto, [1, 2, 3]).filter((b) => b.id !== q.id));
    writeBackend(harness().dp, proto, { ...q, state: BE_STATE_QUARANTINED });
    for (let i = 0; i < 3; i++) expect(send(family, proto, port, ACK)).toBe(original);
    // New flows never land on it.
    for (let p = 43300; p < 43340; p++) expect(send(family, proto, p)).not.toBe(original);
  });

  it.each(CASES)('IPv%i %s: stays on its quarantined backend even when the Service has no endpoints left', (family, proto) => {
    const port = 43400;
    const original = send(family, proto, port);
    const q = backendByAddr(family, proto, original);
    setBackends(harness().dp, specOf(family, proto), []);
    writeBackend(harness().dp, proto, { ...q, state: BE_STATE_QUARANTINED });
    expect(send(family, proto, port, ACK)).toBe(original);
    // A new flow meets the empty Service (the reply itself is no-endpoints.test.ts).
    const fresh = toVip(family, proto, 43401);
    const r = harness().ingress(fresh);
    expect(r.counted).toEqual(countedOnce('no_endpoints_reply', 'ingress', fresh));
  });

  it.each(CASES)('IPv%i %s: a live entry is honoured, an expired one is a miss', (family, proto) => {
    const port = 43500;
    const chosen = send(family, proto, port);
    const other = backendsOf(family, proto, [1, 2, 3]).find((b) => b.addr !== chosen)!;
    const key = serviceKey(family, proto, port);
    const e = ctMap(family).lookup(key)!;

    // Live, pointing elsewhere: the entry wins over the hash. (Written behind the
    // datapath's back: the epoch bump tells its flow cache, as the agent's flush does.)
    ctMap(family).update(key, { ...e, backendId: other.id, expires: ALIVE });
    harness().dp.bumpFlowEpoch();
    expect(send(family, proto, port, ACK)).toBe(other.addr);

    // Expired, pointing elsewhere: ignored, the flow is chosen afresh and re-recorded.
    ctMap(family).update(key, { ...e, backendId: other.id, expires: 1n });
    harness().dp.bumpFlowEpoch();
    const input = toVip(family, proto, port, ACK);
    const t0 = monotonicNs();
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    expect(parseFrame(r.data).ip.dst).toBe(chosen);
    const fresh = ctMap(family).lookup(key)!;
    expect(fresh.backendId).toBe(backendByAddr(family, proto, chosen).id);
    expect(fresh.expires > t0).toBe(true);
  });

  it.each(FAMILIES)('IPv%i TCP: a bare SYN on a closing flow (client port reuse) reopens it on the same backend', (family) => {
    const port = 43600;
    const b = send(family, 'tcp', port);
    send(family, 'tcp', port, ACK);
    send(family, 'tcp', port, { fin: true, ack: true });
    expect(ctMap(family).lookup(serviceKey(family, 'tcp', port))!.flags & CT_F_CLOSING).toBe(CT_F_CLOSING);
    expect(send(family, 'tcp', port, SYN)).toBe(b);
    const e = ctMap(family).lookup(serviceKey(family, 'tcp', port))!;
    expect(e.flags & (CT_F_CLOSING | CT_F_ESTABLISHED)).toBe(0);
    expect(ctMap(family).lookup(replyKey(family, 'tcp', port, b))!.flags).toBe(e.flags);
  });
});

describe('the conntrack insert race (kubernetes#56903)', () => {
  const raceMap = (family: Family): BpfMap<Ct4Key | Ct6Key, CtEntry> =>
    (family === 4
      ? harness().dp.map('ct4_race', ct4Key, ctEntry)
      : harness().dp.map('ct6_race', ct6Key, ctEntry)) as BpfMap<Ct4Key | Ct6Key, CtEntry>;

  /** A flow and a backend its hash does not pick: the winner we plant. */
  function raceSetup(family: Family, proto: L4Proto, port: number): { hashPick: string; winner: BackendSpec } {
    const hashPick = hashChoices(family, proto, [port]).get(port)!;
    const winner = backendsOf(family, proto, [1, 2, 3]).find((b) => b.addr !== hashPick)!;
    return { hashPick, winner };
  }

  const winnerEntry = (family: Family, proto: L4Proto, winner: BackendSpec, expires: bigint): CtEntry => ({
    expires,
    backendId: winner.id,
    revNatId: serviceId(family, proto),
    flags: 0,
    tcpFlags: proto === 'tcp' ? 0x02 : 0,
    created: 0,
  });

  it.each(CASES)('IPv%i %s: the first packet that loses the insert joins the winner\'s backend', (family, proto) => {
    const port = 44000;
    const { hashPick, winner } = raceSetup(family, proto, port);
    const key = serviceKey(family, proto, port);
    raceMap(family).update(key, winnerEntry(family, proto, winner, ALIVE));
    try {
      const input = toVip(family, proto, port);
      const r = harness().ingress(input);
      expect(r.retval).toBe(TC_ACT_OK);
      expect(r.counted).toEqual(countedOnce('ct_race_joined', 'ingress', input));
      const out = expectChecksumsOk(r.data);
      expect(out.ip.dst).toBe(winner.addr);
      expect(out.ip.dst).not.toBe(hashPick);
      expect(r.data).toEqual(rewrite(input, { dst: winner.addr, dport: TARGET_PORT[proto] }));
      // The winner's entry stands; the REPLY entry leads back through the same Service.
      expect(ctMap(family).lookup(key)?.backendId).toBe(winner.id);
      const rep = ctMap(family).lookup(replyKey(family, proto, port, winner.addr));
      expect(rep?.backendId).toBe(winner.id);
      expect(rep?.revNatId).toBe(serviceId(family, proto));
    } finally {
      raceMap(family).delete(key);
    }
    // Later packets stay with the winner.
    expect(send(family, proto, port, proto === 'tcp' ? ACK : {})).toBe(winner.addr);
  });

  type Stale = [string, Family, L4Proto, 'expired' | 'backend gone'];
  const stale: Stale[] = CASES.flatMap(([f, p]): Stale[] => [
    [`IPv${f} ${p}`, f, p, 'expired'],
    [`IPv${f} ${p}`, f, p, 'backend gone'],
  ]);

  it.each(stale)('%s: an occupant that is %s is replaced, not joined', (_name, family, proto, why) => {
    const port = 44100;
    const { hashPick, winner } = raceSetup(family, proto, port);
    const key = serviceKey(family, proto, port);
    const occupant =
      why === 'expired'
        ? winnerEntry(family, proto, winner, 1n)
        : { ...winnerEntry(family, proto, winner, ALIVE), backendId: 999_999 };
    raceMap(family).update(key, occupant);
    try {
      const input = toVip(family, proto, port);
      const r = harness().ingress(input);
      expect(r.retval).toBe(TC_ACT_OK);
      expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
      expect(parseFrame(r.data).ip.dst).toBe(hashPick);
      expect(ctMap(family).lookup(key)?.backendId).toBe(backendByAddr(family, proto, hashPick).id);
    } finally {
      raceMap(family).delete(key);
    }
  });
});

describe('one backend behind two VIPs (cilium#11810)', () => {
  const SHARED = 9;
  const twoVips = (family: Family): [ServiceSpec, ServiceSpec] => {
    const p = planOf(family);
    const backend = { id: family * 1000 + SHARED, addr: p.backend(SHARED), port: 8080 };
    return [2, 3].map((n) =>
      addService(harness().dp, { id: family * 100 + n, vip: p.vip(n), port: 80, proto: 'tcp', backends: [backend] }),
    ) as [ServiceSpec, ServiceSpec];
  };

  const replyFrom = (family: Family, cport: number, flags: Partial<TcpFlags>): Buffer => {
    const p = planOf(family);
    return flowFrame(family, 'tcp', { src: p.backend(SHARED), dst: p.client(20), sport: 8080, dport: cport, flags, payload: 'reply' });
  };

  function connect(family: Family, vip: string, cport: number, flags: Partial<TcpFlags> = SYN): void {
    const p = planOf(family);
    const input = flowFrame(family, 'tcp', { src: p.client(20), dst: vip, sport: cport, dport: 80, flags });
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.data).toEqual(rewrite(input, { dst: p.backend(SHARED), dport: 8080 }));
  }

  function expectReplyFrom(family: Family, cport: number, vip: string): void {
    const input = replyFrom(family, cport, { syn: true, ack: true });
    const r = harness().egress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('revnat', 'egress', input));
    expectChecksumsOk(r.data);
    expect(r.data).toEqual(rewrite(input, { src: vip, sport: 80 }));
  }

  it.each(FAMILIES)('IPv%i: flows to each VIP get their own entries; replies come from the VIP each flow used', (family) => {
    const [s1, s2] = twoVips(family);
    connect(family, s1.vip, 45001);
    connect(family, s2.vip, 45002);
    const e1 = ctMap(family).lookup({ ...serviceKey(family, 'tcp', 45001, s1.vip) })!;
    const e2 = ctMap(family).lookup({ ...serviceKey(family, 'tcp', 45002, s2.vip) })!;
    expect(e1.revNatId).toBe(s1.id);
    expect(e2.revNatId).toBe(s2.id);
    expect(ctMap(family).lookup(replyKey(family, 'tcp', 45001, planOf(family).backend(SHARED)))?.revNatId).toBe(s1.id);
    expect(ctMap(family).lookup(replyKey(family, 'tcp', 45002, planOf(family).backend(SHARED)))?.revNatId).toBe(s2.id);
    expectReplyFrom(family, 45001, s1.vip);
    expectReplyFrom(family, 45002, s2.vip);
  });

  it.each(FAMILIES)('IPv%i: a client port reused for the other VIP gets replies from the new VIP, not the stale one', (family) => {
    const [s1, s2] = twoVips(family);
    const cport = 45003;
    connect(family, s1.vip, cport);
    connect(family, s1.vip, cport, ACK);
    expectReplyFrom(family, cport, s1.vip);
    connect(family, s1.vip, cport, { fin: true, ack: true });
    // The closed flow's entries still exist (closing lifetime) when the port is reused.
    expect(ctMap(family).lookup(serviceKey(family, 'tcp', cport, s1.vip))).toBeDefined();
    connect(family, s2.vip, cport);
    expectReplyFrom(family, cport, s2.vip);
    expect(ctMap(family).lookup(serviceKey(family, 'tcp', cport, s2.vip))?.revNatId).toBe(s2.id);
  });
});

describe('odd TCP on a tracked flow is translated, never passed or dropped (kubernetes#74839)', () => {
  type Odd = [string, Partial<TcpFlags>, Partial<FlowFrame>];
  const odd: Odd[] = [
    ['an ACK far outside the window', { ack: true }, { seq: 0xdeadbeef, ack: 0x0badf00d }],
    ['a retransmitted SYN', { syn: true }, { seq: 1000 }],
    ['a SYN+ACK from the client side', { syn: true, ack: true }, {}],
    ['no flags at all', {}, {}],
    ['FIN+PSH+URG ("xmas")', { fin: true, psh: true, urg: true }, {}],
    ['SYN+FIN', { syn: true, fin: true }, {}],
    ['an out-of-window RST', { rst: true }, { seq: 0x7fffffff }],
    ['ECE+CWR with data', { ack: true, ece: true, cwr: true, psh: true }, { payload: 'x'.repeat(100) }],
  ];
  const cases = FAMILIES.flatMap((f) => odd.map(([n, fl, ex]) => [`IPv${f}: ${n}`, f, fl, ex] as [string, Family, Partial<TcpFlags>, Partial<FlowFrame>]));

  it.each(cases)('%s', (_name, family, flags, extra) => {
    const port = 46000;
    const b = send(family, 'tcp', port, SYN);
    send(family, 'tcp', port, ACK);
    const input = toVip(family, 'tcp', port, flags, extra);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    expectChecksumsOk(r.data);
    expect(r.data).toEqual(rewrite(input, { dst: b, dport: 8080 }));
    // The flow carries on on the same backend.
    expect(send(family, 'tcp', port, ACK)).toBe(b);
  });
});

describe('TCP without a conntrack entry', () => {
  type Untracked = [string, Family, Partial<TcpFlags>];
  const refused: Partial<TcpFlags>[] = [
    { rst: true },
    { rst: true, ack: true },
    { syn: true, fin: true },
    { syn: true, rst: true },
    { syn: true, ack: true },
    {},
    { fin: true },
    { psh: true },
  ];
  const name = (f: Partial<TcpFlags>): string =>
    Object.entries(f)
      .filter(([, v]) => v)
      .map(([k]) => k.toUpperCase())
      .join('+') || 'no flags';
  const drops: Untracked[] = FAMILIES.flatMap((family) => refused.map((f): Untracked => [`IPv${family} ${name(f)}`, family, f]));

  it.each(drops)('%s: dropped (TC_ACT_SHOT), counted drop_tcp_invalid, no entry created', (_name, family, flags) => {
    const input = toVip(family, 'tcp', 47000, flags);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(r.counted).toEqual(countedOnce('drop_tcp_invalid', 'ingress', input));
    expect(r.data).toEqual(input);
    expect(ctMap(family).count()).toBe(0);
  });

  type Pickup = [string, Family, Partial<TcpFlags>, number];
  const pickups: Pickup[] = FAMILIES.flatMap((family): Pickup[] => [
    [`IPv${family} ACK`, family, { ack: true }, CT_F_ESTABLISHED],
    [`IPv${family} PSH+ACK`, family, { ack: true, psh: true }, CT_F_ESTABLISHED],
    [`IPv${family} FIN+ACK`, family, { fin: true, ack: true }, CT_F_CLOSING],
  ]);

  it.each(pickups)('%s: picked up loosely, translated, entry created in its state', (_name, family, flags, state) => {
    const input = toVip(family, 'tcp', 47100, flags);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    const out = expectChecksumsOk(r.data);
    expect(r.data).toEqual(rewrite(input, { dst: out.ip.dst, dport: 8080 }));
    expect(ctMap(family).lookup(serviceKey(family, 'tcp', 47100))?.flags).toBe(state);
    expect(ctMap(family).lookup(replyKey(family, 'tcp', 47100, out.ip.dst))?.flags).toBe(state);
  });
});
