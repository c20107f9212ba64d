// sessionAffinity: ClientIP on the per-packet path (bpf/lib/lb.h,
// lb{4,6}_select_backend): a client's new flows reuse the backend its last
// new flow got while the entry is younger than the timeout (counted from the
// last use) and the Service still selects that backend; otherwise the flow
// selects by hash and the entry is rewritten. Services without affinity are
// untouched.
//
// Address plan (IPv4 / IPv6):
//   clients     198.18.0.10-73          2001:2::1:10-73
//   ClusterIP   198.19.0.20 (affinity)  2001:2:0:ff::20     :80 TCP, :53 UDP
//               198.19.0.21 (none)      2001:2:0:ff::21
//   backends    198.18.1.1-4            2001:2::2:1-4       :8080 TCP, :5353 UDP
//   backend ids family*100 + (tcp 10 | udp 50) + n; service ids + 20 / + 21
import { beforeEach, describe, expect, it } from 'vitest';
import {
  BE_STATE_QUARANTINED,
  BE_STATE_TERMINATING,
  LB_F_AFFINITY,
  LB_F_REJECT_NO_ENDPOINTS,
  LB_SCOPE_EXTERNAL,
  type AffinityEntry,
} from '../../src/bpf/abi.js';
import {
  CASES,
  NS_PER_SEC,
  TARGET_PORT,
  TC_ACT_OK,
  VIP_PORT,
  countedOnce,
  flowFrame,
  monotonicNs,
  planOf,
  useHarness,
  type Family,
  type L4Proto,
} from '../lib/bpf-harness.js';
import { parseFrame } from '../lib/packet.js';
import { addService, protoNumber, setBackends, writeBackend, type BackendSpec, type ServiceSpec } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-affinity';
const TIMEOUT_S = 10;
const FLOWS = 32;

const harness = useHarness(ROOT);
const dp = () => harness().dp;

const base = (f: Family, proto: L4Proto) => f * 100 + (proto === 'tcp' ? 10 : 50);
function backends(f: Family, proto: L4Proto): BackendSpec[] {
  return [1, 2, 3, 4].map((n) => ({ id: base(f, proto) + n, addr: planOf(f).backend(n), port: TARGET_PORT[proto] }));
}
function spec(f: Family, proto: L4Proto, affinity: boolean): ServiceSpec {
  const n = affinity ? 20 : 21;
  return { id: base(f, proto) + n, vip: planOf(f).vip(n), port: VIP_PORT[proto], proto, backends: backends(f, proto) };
}

/** Writes the Service; with affinity, LB_F_AFFINITY and a `timeout` in seconds. */
function install(f: Family, proto: L4Proto, affinity: boolean, timeout = TIMEOUT_S): ServiceSpec {
  const s = spec(f, proto, affinity);
  addService(dp(), { ...s, flags: LB_F_REJECT_NO_ENDPOINTS | (affinity ? LB_F_AFFINITY : 0) });
  const key = { addr: s.vip, port: s.port, proto: protoNumber(proto), scope: LB_SCOPE_EXTERNAL };
  const services = f === 4 ? dp().maps.services4 : dp().maps.services6;
  const v = services.lookup(key)!;
  services.update(key, { ...v, affinityTimeout: affinity ? timeout : 0 });
  return s;
}

function affinityLookup(f: Family, s: ServiceSpec, client: string): AffinityEntry | undefined {
  const key = { netnsCookie: 0n, serviceId: s.id, client };
  return f === 4 ? dp().maps.affinity4.lookup(key) : dp().maps.affinity6.lookup(key);
}
function affinityUpdate(f: Family, s: ServiceSpec, client: string, e: AffinityEntry): void {
  const key = { netnsCookie: 0n, serviceId: s.id, client };
  if (f === 4) dp().maps.affinity4.update(key, e);
  else dp().maps.affinity6.update(key, e);
}

/** A new flow from `client`:`sport` to the Service; returns the backend address it was DNATed to. */
function newFlow(f: Family, proto: L4Proto, s: ServiceSpec, client: string, sport: number): string {
  const frame = flowFrame(f, proto, { src: client, dst: s.vip, sport, dport: s.port, payload: 'hi' });
  const r = harness().ingress(frame);
  expect(r.retval, `${client}:${sport} -> ${s.vip}`).toBe(TC_ACT_OK);
  expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', frame));
  const out = parseFrame(r.data);
  expect(out.l4.dport).toBe(TARGET_PORT[proto]);
  return out.ip.dst;
}

/** `n` new flows from one client (source ports 40000..), with conntrack emptied before each. */
function flowsFrom(f: Family, proto: L4Proto, s: ServiceSpec, client: string, n = FLOWS): string[] {
  const got: string[] = [];
  for (let i = 0; i < n; i++) {
    harness().clearFlows();
    got.push(newFlow(f, proto, s, client, 40000 + i * 7));
  }
  return got;
}

const clientOf = (f: Family, n = 10) => planOf(f).client(n);
const idOf = (s: ServiceSpec, addr: string): number => s.backends.find((b) => b.addr === addr)!.id;

beforeEach(() => {
  harness().clearFlows();
  dp().maps.affinity4.clear();
  dp().maps.affinity6.clear();
  for (const [f, proto] of CASES) {
    install(f, proto, true);
    install(f, proto, false);
  }
});

describe('sessionAffinity: ClientIP on the tc path', () => {
  it.each(CASES)('IPv%i %s: one client gets one backend over many new flows, recorded with its slot', (f, proto) => {
    const s = spec(f, proto, true);
    const before = monotonicNs();
    const got = flowsFrom(f, proto, s, clientOf(f));
    expect(new Set(got).size, got.join(' ')).toBe(1);
    const e = affinityLookup(f, s, clientOf(f))!;
    expect(e.backendId).toBe(idOf(s, got[0]!));
    expect(s.backends[e.slot - 1]?.id).toBe(e.backendId);
    expect(e.lastUsed >= before - NS_PER_SEC).toBe(true);
  });

  it.each(CASES)('IPv%i %s: different clients spread over the backends', (f, proto) => {
    const s = spec(f, proto, true);
    const seen = new Set<string>();
    for (let c = 10; c < 10 + FLOWS; c++) {
      harness().clearFlows();
      seen.add(newFlow(f, proto, s, clientOf(f, c), 41000));
    }
    expect(seen.size).toBeGreaterThanOrEqual(2);
  });

  it.each(CASES)('IPv%i %s: a Service without affinity spreads one client and records nothing', (f, proto) => {
    const s = spec(f, proto, false);
    const got = flowsFrom(f, proto, s, clientOf(f));
    expect(new Set(got).size).toBeGreaterThanOrEqual(2);
    expect(dp().maps.affinity4.count() + dp().maps.affinity6.count()).toBe(0);
  });

  it.each(CASES)('IPv%i %s: the timeout counts from the last use: a fresh entry is reused and refreshed, an expired one re-selects', (f, proto) => {
    const s = spec(f, proto, true);
    const c = clientOf(f);
    const hashPick = newFlow(f, proto, s, c, 42000);
    const other = s.backends.find((b) => b.addr !== hashPick)!;
    const slot = s.backends.indexOf(other) + 1;

    // 5 s old, timeout 10 s: reused, last_used refreshed to now.
    let now = monotonicNs();
    affinityUpdate(f, s, c, { lastUsed: now - 5n * NS_PER_SEC, backendId: other.id, slot });
    harness().clearFlows();
    expect(newFlow(f, proto, s, c, 42000)).toBe(other.addr);
    expect(affinityLookup(f, s, c)!.lastUsed >= now - NS_PER_SEC).toBe(true);

    // 11 s old: expired, the flow selects by hash again and the entry follows.
    now = monotonicNs();
    affinityUpdate(f, s, c, { lastUsed: now - 11n * NS_PER_SEC, backendId: other.id, slot });
    harness().clearFlows();
    expect(newFlow(f, proto, s, c, 42000)).toBe(hashPick);
    const e = affinityLookup(f, s, c)!;
    expect(e.backendId).toBe(idOf(s, hashPick));
    expect(e.lastUsed >= now - NS_PER_SEC).toBe(true);
  });

  it.each(CASES)('IPv%i %s: a removed backend re-selects (deleted, or only out of this Service\'s slots)', (f, proto) => {
    for (const keepEntry of [false, true]) {
      install(f, proto, true);
      dp().maps.affinity4.clear();
      dp().maps.affinity6.clear();
      const s = spec(f, proto, true);
      const c = clientOf(f);
      const first = flowsFrom(f, proto, s, c, 1)[0]!;
      const rest = s.backends.filter((b) => b.addr !== first);
      setBackends(dp(), s, rest);
      const gone = s.backends.find((b) => b.addr === first)!;
      // keepEntry: another Service still uses the backend (ids are shared), so its entry stays ACTIVE.
      if (!keepEntry) (f === 4 ? dp().maps.backends4 : dp().maps.backends6).delete(gone.id);
      const got = flowsFrom(f, proto, s, c, 8);
      expect(got, `keepEntry ${keepEntry}`).not.toContain(first);
      expect(new Set(got).size).toBe(1);
      expect(affinityLookup(f, s, c)!.backendId).toBe(idOf(s, got[0]!));
      writeBackend(dp(), proto, gone);
    }
  });

  it.each(CASES)('IPv%i %s: a backend whose slot moved is still reused (the slots are searched)', (f, proto) => {
    const s = spec(f, proto, true);
    const c = clientOf(f);
    const first = flowsFrom(f, proto, s, c, 1)[0]!;
    const reordered = [...s.backends].reverse();
    setBackends(dp(), s, reordered);
    expect(new Set(flowsFrom(f, proto, s, c, 8))).toEqual(new Set([first]));
    const e = affinityLookup(f, s, c)!;
    expect(reordered[e.slot - 1]?.addr).toBe(first);
  });

  it.each(CASES)('IPv%i %s: quarantined re-selects; terminating is reused while the slots hold it', (f, proto) => {
    const s = spec(f, proto, true);
    const c = clientOf(f);
    const first = flowsFrom(f, proto, s, c, 1)[0]!;
    const be = s.backends.find((b) => b.addr === first)!;

    // Only terminating endpoints left (KEP-1669): the slots hold them, affinity stays.
    setBackends(
      dp(),
      s,
      s.backends.map((b) => ({ ...b, state: BE_STATE_TERMINATING })),
    );
    expect(new Set(flowsFrom(f, proto, s, c, 4))).toEqual(new Set([first]));

    // Quarantined (out of the slots, entry kept for its flows): a new flow moves on.
    setBackends(
      dp(),
      s,
      s.backends.filter((b) => b.id !== be.id),
    );
    writeBackend(dp(), proto, { ...be, state: BE_STATE_QUARANTINED });
    const got = flowsFrom(f, proto, s, c, 1)[0]!;
    expect(got).not.toBe(first);
    expect(affinityLookup(f, s, c)!.backendId).toBe(idOf(s, got));
  });

  it.each(CASES)('IPv%i %s: an established flow keeps its backend when the client\'s entry moves', (f, proto) => {
    const s = spec(f, proto, true);
    const c = clientOf(f);
    const first = newFlow(f, proto, s, c, 43000);
    const other = s.backends.find((b) => b.addr !== first)!;
    affinityUpdate(f, s, c, { lastUsed: monotonicNs(), backendId: other.id, slot: s.backends.indexOf(other) + 1 });
    // Same flow, conntrack kept: conntrack wins over affinity.
    const frame = flowFrame(f, proto, { src: c, dst: s.vip, sport: 43000, dport: s.port, payload: 'again', ...(proto === 'tcp' ? { flags: { ack: true } } : {}) });
    expect(parseFrame(harness().ingress(frame).data).ip.dst).toBe(first);
    // A new flow follows the entry.
    expect(newFlow(f, proto, s, c, 43001)).toBe(other.addr);
  });
});
