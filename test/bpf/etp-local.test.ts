// externalTrafficPolicy: Local at uplink ingress. compile puts only this
// node's endpoints in the external frontend's slots (LB_F_LOCAL_EXTERNAL):
//  - with local endpoints: DNAT only, the client's address kept, never SNAT
//    (even a slot whose backend is not flagged local, as while the agent is
//    between two writes);
//  - endpoints on other nodes only: dropped and counted as
//    drop_no_local_endpoints (kube-proxy drops these too), not ICMP-rejected;
//  - no endpoints anywhere (LB_F_REJECT_NO_ENDPOINTS): ICMP port unreachable,
//    as for any Service;
//  - the internal scope of a two-scope Service is not used from the uplink.
//
// Address plan (IPv4 / IPv6):
//   client          198.18.0.10            2001:2::1:10
//   node            198.18.2.1             2001:2::3:1    NodePorts: 31080/TCP 31053/UDP (local endpoints),
//                                                          31081/31054 (endpoints elsewhere only),
//                                                          31082/31055 (no endpoints at all)
//   LoadBalancer    198.19.0.8             2001:2:0:ff::8  slot backend not flagged local
//   backends        198.18.1.9 (local)     2001:2::2:9;   198.18.1.1 (another node) 2001:2::2:1
import { beforeEach, describe, expect, it } from 'vitest';
import {
  BE_F_LOCAL,
  LB_F_LOCAL_EXTERNAL,
  LB_F_REJECT_NO_ENDPOINTS,
  LB_F_TWO_SCOPES,
  LB_KIND_LOAD_BALANCER,
  LB_KIND_NODE_PORT,
  LB_SCOPE_INTERNAL,
} from '../../src/bpf/abi.js';
import {
  BpfHarness,
  CASES,
  TARGET_PORT,
  TC_ACT_OK,
  TC_ACT_SHOT,
  VIP_PORT,
  countedOnce,
  flowFrame,
  planOf,
  useHarness,
  type Family,
  type L4Proto,
} from '../lib/bpf-harness.js';
import { NODE, resetNorthSouth } from '../lib/north-south.js';
import { rewrite } from '../lib/packet.js';
import { addService, protoNumber } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-etp-local';
const PORTS: Readonly<Record<L4Proto, { local: number; elsewhere: number; none: number }>> = {
  tcp: { local: 31080, elsewhere: 31081, none: 31082 },
  udp: { local: 31053, elsewhere: 31054, none: 31055 },
};

const harness = useHarness(ROOT, installServices);
const dp = () => harness().dp;
const client = (f: Family) => planOf(f).client(10);

/** The file's Services, written once. */
function installServices(h: BpfHarness): void {
  for (const [f, proto] of CASES) {
    const p = planOf(f);
    const base = f * 100 + (proto === 'tcp' ? 10 : 50);
    const local = { id: base * 10 + 9, addr: p.backend(9), port: TARGET_PORT[proto], flags: BE_F_LOCAL };
    const remote = { id: base * 10 + 1, addr: p.backend(1), port: TARGET_PORT[proto] };
    const np = (id: number, port: number, backends: (typeof remote)[], flags: number) =>
      addService(h.dp, { id, vip: NODE[f], port, proto, kind: LB_KIND_NODE_PORT, flags, backends });
    np(base + 1, PORTS[proto].local, [local], LB_F_LOCAL_EXTERNAL);
    // Endpoints elsewhere only: the external set is empty, the internal one is not.
    np(base + 2, PORTS[proto].elsewhere, [], LB_F_LOCAL_EXTERNAL | LB_F_TWO_SCOPES);
    addService(h.dp, { id: base + 3, vip: NODE[f], port: PORTS[proto].elsewhere, proto, kind: LB_KIND_NODE_PORT, scope: LB_SCOPE_INTERNAL, flags: 0, backends: [remote] });
    np(base + 4, PORTS[proto].none, [], LB_F_LOCAL_EXTERNAL | LB_F_REJECT_NO_ENDPOINTS);
    addService(h.dp, { id: base + 5, vip: p.vip(8), port: VIP_PORT[proto], proto, kind: LB_KIND_LOAD_BALANCER, flags: LB_F_LOCAL_EXTERNAL, backends: [remote] });
  }
}

beforeEach(() => resetNorthSouth(harness()));

const toNode = (f: Family, proto: L4Proto, port: number, sport = 42000) =>
  flowFrame(f, proto, { src: client(f), dst: NODE[f], sport, dport: port, payload: 'hi' });

describe('externalTrafficPolicy: Local', () => {
  it.each(CASES)('IPv%i %s: a node with local endpoints DNATs to them and keeps the client address', (f, proto) => {
    const input = toNode(f, proto, PORTS[proto].local);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    expect(r.data).toEqual(rewrite(input, { dst: planOf(f).backend(9), dport: TARGET_PORT[proto] }));
    const ct = f === 4 ? dp().maps.ct4 : dp().maps.ct6;
    const svc = ct.lookup({ saddr: client(f), daddr: NODE[f], sport: 42000, dport: PORTS[proto].local, proto: protoNumber(proto), dir: 0 } as never);
    expect(svc?.flags).toBe(0);
    expect(dp().maps.snat4.count() + dp().maps.snat6.count()).toBe(0);
  });

  it.each(CASES)('IPv%i %s: a node whose endpoints are all elsewhere drops and counts, no ICMP, no state', (f, proto) => {
    const input = toNode(f, proto, PORTS[proto].elsewhere);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(r.counted).toEqual(countedOnce('drop_no_local_endpoints', 'ingress', input));
    expect(r.data).toEqual(input);
    expect((f === 4 ? dp().maps.ct4 : dp().maps.ct6).count()).toBe(0);
  });

  it.each(CASES)('IPv%i %s: a Service without endpoints anywhere is still rejected with ICMP', (f, proto) => {
    const input = toNode(f, proto, PORTS[proto].none);
    const r = harness().ingress(input);
    expect(r.counted).toEqual(countedOnce('no_endpoints_reply', 'ingress', input));
  });

  it.each(CASES)('IPv%i %s: a slot backend not flagged local is still not SNATed: the client address is kept', (f, proto) => {
    const input = flowFrame(f, proto, { src: client(f), dst: planOf(f).vip(8), sport: 42001, dport: VIP_PORT[proto], payload: 'hi' });
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    expect(r.data).toEqual(rewrite(input, { dst: planOf(f).backend(1), dport: TARGET_PORT[proto] }));
  });
});
