// Direct server return at the tc hooks (bpf/lib/dsr.h): the entry node
// encapsulates a DSR frontend's packets to a backend on another node (outer
// header to the backend pod, inner packet untouched) and redirects them by
// the FIB; the backend's node decapsulates at its uplink ingress, records
// the flow (CT_F_DSR REPLY entry + dsr_revnat) and DNATs to the backend, and
// its uplink egress gives the backend's reply the frontend as source, so it
// goes to the client from there. What does not qualify for DSR (mode off,
// flag off, local backend) keeps its SNAT / DNAT path; IPIP that is not ours
// passes untouched.
//
// Two nodes, each its own bpf root (its own maps), same test object:
//   entry node     198.18.2.1            2001:2::3:1          config addr, DSR mode
//   backend node   198.18.2.2            2001:2::3:2          config addr, DSR mode
//   client         198.18.0.10-11        2001:2::1:10-11
//   LoadBalancer   198.19.0.1            2001:2:0:ff::1       LB_F_DSR, :80 / :53, on both nodes
//   no-DSR LB      198.19.0.2            2001:2:0:ff::2       same backend, no LB_F_DSR (entry node)
//   local LB       198.19.0.3            2001:2:0:ff::3       LB_F_DSR, backend BE_F_LOCAL (entry node)
//   NodePorts      30080/TCP, 30053/UDP  LB_F_DSR, on each node's own address
//   backend        198.18.1.1            2001:2::2:1          :80 / :53 and the node ports (= frontend
//                                                             ports: DSR keeps them), on the backend node
//   local backend  198.18.1.9            2001:2::2:9          BE_F_LOCAL on the entry node
//   FIB (mocked)   out of ifindex 7, 02:00:00:00:0a:01 -> 02:00:00:00:0b:02
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  BE_F_LOCAL,
  CT_DIR_REPLY,
  CT_DIR_SERVICE,
  CT_F_DSR,
  CT_F_ESTABLISHED,
  CT_F_SNAT,
  LB_F_DSR,
  LB_F_REJECT_NO_ENDPOINTS,
  LB_KIND_LOAD_BALANCER,
  LB_KIND_NODE_PORT,
} from '../../src/bpf/abi.js';
import {
  BpfHarness,
  CASES,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
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
import { DSR_OVERHEAD, expectEncapsulated, frameOf, l4Number, resetDsrNode, setDsrNodeConfig } from '../lib/dsr.js';
import { FIB, lastFibLookup, mockFib } from '../lib/north-south.js';
import { ipPacketOf, ipv4Raw, ipv6Raw, parseFrame } from '../lib/packet.js';
import { addService, type BackendSpec } from '../lib/services.js';

const ENTRY_ROOT = '/sys/fs/bpf/strait-test-dsr-entry';
const BACKEND_ROOT = '/sys/fs/bpf/strait-test-dsr-backend';
const NODE_PORT: Readonly<Record<L4Proto, number>> = { tcp: 30080, udp: 30053 };

const entry = useHarness(ENTRY_ROOT);
const backendNode = useHarness(BACKEND_ROOT);

const nodeAddr = (f: Family, n: 1 | 2) => planOf(f).node(n);
const backend = (f: Family) => planOf(f).backend(1);
const client = (f: Family, n = 10) => planOf(f).client(n);
const dsrLb = (f: Family, proto: L4Proto) => ({ addr: planOf(f).vip(1), port: VIP_PORT[proto] });
const plainLb = (f: Family, proto: L4Proto) => ({ addr: planOf(f).vip(2), port: VIP_PORT[proto] });
const localLb = (f: Family, proto: L4Proto) => ({ addr: planOf(f).vip(3), port: VIP_PORT[proto] });
const nodePort = (f: Family, proto: L4Proto, n: 1 | 2) => ({ addr: nodeAddr(f, n), port: NODE_PORT[proto] });
/** The backend node's own NodePort without DSR (as externalTrafficPolicy: Local), to the same pod and port as dsrLb. */
const LOCAL_NODE_PORT: Readonly<Record<L4Proto, number>> = { tcp: 30081, udp: 30054 };
const plainNodePort = (f: Family, proto: L4Proto) => ({ addr: nodeAddr(f, 2), port: LOCAL_NODE_PORT[proto] });

function toFrontend(f: Family, proto: L4Proto, fe: { addr: string; port: number }, sport: number, extra: Partial<FlowFrame> = {}): Buffer {
  return flowFrame(f, proto, { src: client(f), dst: fe.addr, sport, dport: fe.port, payload: 'hello', ...extra });
}

function ctEntries(h: BpfHarness, f: Family) {
  return f === 4 ? [...h.dp.maps.ct4.entries()] : [...h.dp.maps.ct6.entries()];
}

beforeAll(() => {
  for (const [f, proto] of CASES) {
    const base = f * 100 + (proto === 'tcp' ? 10 : 50);
    const port = VIP_PORT[proto];
    const remote: BackendSpec = { id: base + 1, addr: backend(f), port };
    const local = { id: base + 9, addr: planOf(f).backend(9), port, flags: BE_F_LOCAL };
    const dsr = LB_F_REJECT_NO_ENDPOINTS | LB_F_DSR;
    const add = (h: BpfHarness, id: number, fe: { addr: string; port: number }, kind: number, flags: number, backends: BackendSpec[]) =>
      addService(h.dp, { id, vip: fe.addr, port: fe.port, proto, kind, flags, backends });
    // entry node
    add(entry(), base + 2, dsrLb(f, proto), LB_KIND_LOAD_BALANCER, dsr, [remote]);
    add(entry(), base + 3, plainLb(f, proto), LB_KIND_LOAD_BALANCER, LB_F_REJECT_NO_ENDPOINTS, [remote]);
    add(entry(), base + 4, localLb(f, proto), LB_KIND_LOAD_BALANCER, dsr, [local]);
    // DSR keeps ports: a NodePort's backend listens on the node port (compile's rule)
    const onNodePort: BackendSpec = { id: base + 6, addr: backend(f), port: NODE_PORT[proto] };
    add(entry(), base + 5, nodePort(f, proto, 1), LB_KIND_NODE_PORT, dsr, [onNodePort]);
    // backend node: the same LoadBalancer frontend and its own NodePort; the backend is local here
    add(backendNode(), base + 2, dsrLb(f, proto), LB_KIND_LOAD_BALANCER, dsr, [{ ...remote, flags: BE_F_LOCAL }]);
    add(backendNode(), base + 5, nodePort(f, proto, 2), LB_KIND_NODE_PORT, dsr, [{ ...onNodePort, flags: BE_F_LOCAL }]);
    add(backendNode(), base + 7, plainNodePort(f, proto), LB_KIND_NODE_PORT, LB_F_REJECT_NO_ENDPOINTS, [{ ...remote, flags: BE_F_LOCAL }]);
  }
});

beforeEach(() => {
  resetDsrNode(entry(), 1);
  resetDsrNode(backendNode(), 2);
});

describe('entry node: a DSR frontend with a backend on another node', () => {
  it.each(CASES)('IPv%i %s: first packet encapsulated to the backend pod, inner untouched, redirected by the FIB', (f, proto) => {
    const input = toFrontend(f, proto, dsrLb(f, proto), 40000);
    const r = entry().ingress(input);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    expect(r.counted).toEqual(countedOnce('dsr_encap', 'ingress', input));
    expectEncapsulated(r.data, input, nodeAddr(f, 1), backend(f));
    expect(lastFibLookup(entry().dp, f)).toMatchObject({ src: nodeAddr(f, 1), dst: backend(f), lookups: 1 });

    // one conntrack entry: the SERVICE entry with CT_F_DSR (no REPLY: replies never come back here)
    const ct = ctEntries(entry(), f);
    expect(ct).toHaveLength(1);
    const [key, e] = ct[0]!;
    expect(key).toMatchObject({ saddr: client(f), daddr: dsrLb(f, proto).addr, sport: 40000, dport: VIP_PORT[proto], dir: CT_DIR_SERVICE });
    expect(e.flags & CT_F_DSR).toBe(CT_F_DSR);
    expect(e.flags & CT_F_SNAT).toBe(0);
    expect(e.backendId).toBe(f * 100 + (proto === 'tcp' ? 10 : 50) + 1);
  });

  it.each(CASES)('IPv%i %s: NodePort on the node address: the same encapsulation', (f, proto) => {
    const input = toFrontend(f, proto, nodePort(f, proto, 1), 40001);
    const r = entry().ingress(input);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    expect(r.counted).toEqual(countedOnce('dsr_encap', 'ingress', input));
    expectEncapsulated(r.data, input, nodeAddr(f, 1), backend(f));
  });

  it.each([4, 6] as const)('IPv%i tcp: the established flow stays DSR and its conntrack state moves on', (f) => {
    const fe = dsrLb(f, 'tcp');
    expect(entry().ingress(toFrontend(f, 'tcp', fe, 40002)).retval).toBe(TC_ACT_REDIRECT);
    const ack = toFrontend(f, 'tcp', fe, 40002, { flags: { ack: true }, seq: 1001, ack: 5001 });
    const r = entry().ingress(ack);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    expect(r.counted).toEqual(countedOnce('dsr_encap', 'ingress', ack));
    expectEncapsulated(r.data, ack, nodeAddr(f, 1), backend(f));
    const ct = ctEntries(entry(), f);
    expect(ct).toHaveLength(1);
    expect(ct[0]![1].flags & (CT_F_DSR | CT_F_ESTABLISHED)).toBe(CT_F_DSR | CT_F_ESTABLISHED);
  });

  it.each([4, 6] as const)('IPv%i tcp: no neighbour yet: encapsulated and handed to bpf_redirect_neigh', (f) => {
    mockFib(entry().dp, FIB.NO_NEIGH);
    const input = toFrontend(f, 'tcp', dsrLb(f, 'tcp'), 40003);
    const r = entry().ingress(input);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    expect(r.counted).toEqual(countedOnce('dsr_encap', 'ingress', input));
    const out = parseFrame(r.data);
    expect(out.ip.dst).toBe(backend(f));
    expect(out.payload.equals(ipPacketOf(input))).toBe(true);
  });

  it.each([4, 6] as const)('IPv%i tcp: no route: counted drop, and no conntrack entry left for the next try', (f) => {
    mockFib(entry().dp, FIB.NOT_FWDED);
    const input = toFrontend(f, 'tcp', dsrLb(f, 'tcp'), 40004);
    const r = entry().ingress(input);
    expect(r.retval).toBe(2 /* TC_ACT_SHOT */);
    expect(r.counted).toEqual(countedOnce('drop_fib_lookup', 'ingress', input));
    expect(ctEntries(entry(), f)).toHaveLength(0);
  });
});

describe('entry node: what DSR does not take', () => {
  it.each(CASES)('IPv%i %s: a frontend without LB_F_DSR is SNATed', (f, proto) => {
    const input = toFrontend(f, proto, plainLb(f, proto), 40010);
    const r = entry().ingress(input);
    expect(r.counted).toEqual(countedOnce('service_snat', 'ingress', input));
    expect(parseFrame(r.data).ip.src).toBe(nodeAddr(f, 1));
  });

  it.each(CASES)('IPv%i %s: DSR mode off on the node (no --dsr): SNAT whatever the flag', (f, proto) => {
    setDsrNodeConfig(entry().dp, { addr4: nodeAddr(4, 1), addr6: nodeAddr(6, 1), dsr: false });
    const input = toFrontend(f, proto, dsrLb(f, proto), 40011);
    const r = entry().ingress(input);
    expect(r.counted).toEqual(countedOnce('service_snat', 'ingress', input));
  });

  it.each(CASES)('IPv%i %s: a backend on this node is DNATed and delivered here', (f, proto) => {
    const input = toFrontend(f, proto, localLb(f, proto), 40012);
    const r = entry().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    expect(parseFrame(r.data).ip.dst).toBe(planOf(f).backend(9));
  });
});

/** The entry node's encapsulated frame for a new flow, as the backend's node receives it. */
function tunnelled(f: Family, proto: L4Proto, fe: { addr: string; port: number }, sport: number, extra: Partial<FlowFrame> = {}): { input: Buffer; frame: Buffer } {
  const input = toFrontend(f, proto, fe, sport, extra);
  const r = entry().ingress(input);
  expect(r.retval, 'encapsulated by the entry node').toBe(TC_ACT_REDIRECT);
  return { input, frame: r.data };
}

describe("backend's node: decapsulation, the flow recorded, the reply from the frontend", () => {
  it.each(CASES)('IPv%i %s: decapsulated and DNATed to the backend (port kept), REPLY entry with CT_F_DSR and the frontend', (f, proto) => {
    const fe = dsrLb(f, proto);
    const { input, frame } = tunnelled(f, proto, fe, 40020);
    const r = backendNode().ingress(frame);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('dsr_decap', 'ingress', frame));
    expect(r.data.length).toBe(input.length);
    const out = expectChecksumsOk(r.data);
    expect(out.ip.src).toBe(client(f));
    expect(out.ip.dst).toBe(backend(f));
    expect(out.l4.sport).toBe(40020);
    expect(out.l4.dport).toBe(fe.port);
    expect(out.payload.toString()).toBe('hello');

    const ct = ctEntries(backendNode(), f);
    expect(ct).toHaveLength(1);
    const [key, e] = ct[0]!;
    const replyKey = { saddr: backend(f), daddr: client(f), sport: fe.port, dport: 40020, proto: l4Number(proto), dir: CT_DIR_REPLY };
    expect(key).toMatchObject(replyKey);
    expect(e.flags & CT_F_DSR).toBe(CT_F_DSR);
    const rn = f === 4 ? backendNode().dp.maps.dsrRevnat4.lookup(key as never) : backendNode().dp.maps.dsrRevnat6.lookup(key as never);
    expect(rn).toMatchObject({ addr: fe.addr, port: fe.port });
  });

  it.each(CASES)('IPv%i %s: the reply leaves with the frontend as source, checksums right', (f, proto) => {
    const fe = dsrLb(f, proto);
    backendNode().ingress(tunnelled(f, proto, fe, 40021).frame);
    const reply = flowFrame(f, proto, {
      src: backend(f),
      dst: client(f),
      sport: fe.port,
      dport: 40021,
      payload: 'world',
      ...(proto === 'tcp' ? { flags: { ack: true } } : {}),
    });
    const r = backendNode().egress(reply);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('dsr_revnat', 'egress', reply));
    const out = expectChecksumsOk(r.data);
    expect(out.ip.src).toBe(fe.addr);
    expect(out.l4.sport).toBe(fe.port);
    expect(out.ip.dst).toBe(client(f));
    expect(out.l4.dport).toBe(40021);
  });

  it.each(CASES)("IPv%i %s: a NodePort of the entry node's address: accepted for this node's own DSR NodePort", (f, proto) => {
    const { frame } = tunnelled(f, proto, nodePort(f, proto, 1), 40022);
    const r = backendNode().ingress(frame);
    expect(r.counted).toEqual(countedOnce('dsr_decap', 'ingress', frame));
    expect(parseFrame(r.data).ip.dst).toBe(backend(f));
    const reply = flowFrame(f, proto, { src: backend(f), dst: client(f), sport: NODE_PORT[proto], dport: 40022, payload: 'x' });
    const out = expectChecksumsOk(backendNode().egress(reply).data);
    expect(out.ip.src, 'the entry node address the client used').toBe(nodeAddr(f, 1));
  });

  it.each([4, 6] as const)('IPv%i tcp: later packets of the flow refresh the same entry', (f) => {
    const fe = dsrLb(f, 'tcp');
    backendNode().ingress(tunnelled(f, 'tcp', fe, 40023).frame);
    const ack = tunnelled(f, 'tcp', fe, 40023, { flags: { ack: true }, seq: 1001, ack: 1 });
    const r = backendNode().ingress(ack.frame);
    expect(r.counted).toEqual(countedOnce('dsr_decap', 'ingress', ack.frame));
    const ct = ctEntries(backendNode(), f);
    expect(ct).toHaveLength(1);
    expect(ct[0]![1].flags & CT_F_ESTABLISHED).toBe(CT_F_ESTABLISHED);
  });

  it.each(CASES)('IPv%i %s: IPIP to a frontend this node does not DSR passes untouched', (f, proto) => {
    // inner destination: the no-DSR LoadBalancer, which the backend node has no entry for
    const inner = ipPacketOf(toFrontend(f, proto, plainLb(f, proto), 40024));
    const frame =
      f === 4
        ? ipv4Raw({ src: nodeAddr(4, 1), dst: backend(4), proto: 4, payload: inner, df: true })
        : ipv6Raw({ src: nodeAddr(6, 1), dst: backend(6), proto: 41, payload: inner });
    const r = backendNode().ingress(frame);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.counted).toEqual(countedOnce('pass_unknown_proto', 'ingress', frame));
    expect(r.data.equals(frame)).toBe(true);
    expect(ctEntries(backendNode(), f)).toHaveLength(0);
  });

  it.each([4, 6] as const)('IPv%i: a reply with no DSR record (evicted) leaves untranslated, counted', (f) => {
    const fe = dsrLb(f, 'udp');
    backendNode().ingress(tunnelled(f, 'udp', fe, 40025).frame);
    (f === 4 ? backendNode().dp.maps.dsrRevnat4 : backendNode().dp.maps.dsrRevnat6).clear();
    const reply = flowFrame(f, 'udp', { src: backend(f), dst: client(f), sport: fe.port, dport: 40025, payload: 'x' });
    const r = backendNode().egress(reply);
    expect(r.counted).toEqual(countedOnce('pass_reply_untracked', 'egress', reply));
    expect(r.data.equals(reply)).toBe(true);
  });

  it('the outer header is really removed: an IPv4 tunnel packet with IP options decapsulates too', () => {
    const inner = ipPacketOf(toFrontend(4, 'udp', dsrLb(4, 'udp'), 40026));
    const frame = frameOf(
      ipPacketOf(ipv4Raw({ src: nodeAddr(4, 1), dst: backend(4), proto: 4, payload: inner, df: true, ipOptions: Buffer.from([1, 1, 1, 0]) })),
      4,
    );
    const r = backendNode().ingress(frame);
    expect(r.counted).toEqual(countedOnce('dsr_decap', 'ingress', frame));
    expect(r.data.length).toBe(frame.length - DSR_OVERHEAD[4] - 4);
    expect(expectChecksumsOk(r.data).ip.dst).toBe(backend(4));
  });
});

describe("backend's node: a DSR flow and a flow through this node's own frontend on one tuple (client port reuse)", () => {
  // At the pod both are backend:port <-> client:cp; the newest flow owns the tuple's REPLY entry.
  const replyFrom = (f: Family, proto: L4Proto, cp: number, flags: FlowFrame['flags'] = { ack: true }) =>
    flowFrame(f, proto, { src: backend(f), dst: client(f), sport: VIP_PORT[proto], dport: cp, payload: 'world', ...(proto === 'tcp' ? { flags } : {}) });
  const replyKey = (f: Family, proto: L4Proto, cp: number) =>
    ({ saddr: backend(f), daddr: client(f), sport: VIP_PORT[proto], dport: cp, proto: l4Number(proto), dir: CT_DIR_REPLY }) as never;
  const dsrRecord = (f: Family, proto: L4Proto, cp: number) =>
    f === 4 ? backendNode().dp.maps.dsrRevnat4.lookup(replyKey(f, proto, cp)) : backendNode().dp.maps.dsrRevnat6.lookup(replyKey(f, proto, cp));

  it.each([4, 6] as const)('IPv%i tcp: local connection closed, DSR connection, then a new local connection on the closing tuple: its replies leave from the local frontend', (f) => {
    const lfe = plainNodePort(f, 'tcp');
    const cp = 40040;
    backendNode().ingress(toFrontend(f, 'tcp', lfe, cp)); // SYN
    backendNode().ingress(toFrontend(f, 'tcp', lfe, cp, { flags: { fin: true, ack: true } })); // closing
    expect(backendNode().ingress(tunnelled(f, 'tcp', dsrLb(f, 'tcp'), cp).frame).counted.map((c) => c.reason)).toEqual(['dsr_decap']);
    expect(dsrRecord(f, 'tcp', cp)).toBeDefined();

    const syn = toFrontend(f, 'tcp', lfe, cp); // reopens the closing SERVICE entry
    expect(backendNode().ingress(syn).counted).toEqual(countedOnce('service_dnat', 'ingress', syn));
    const synAck = replyFrom(f, 'tcp', cp, { syn: true, ack: true });
    const r = backendNode().egress(synAck);
    expect(r.counted).toEqual(countedOnce('revnat', 'egress', synAck));
    const out = expectChecksumsOk(r.data);
    expect([out.ip.src, out.l4.sport, out.ip.dst, out.l4.dport]).toEqual([lfe.addr, lfe.port, client(f), cp]);
    expect(dsrRecord(f, 'tcp', cp), 'the DSR flow\'s frontend record is gone').toBeUndefined();
  });

  it.each(CASES)('IPv%i %s: DSR flow, then a new local flow: its replies leave from the local frontend, also after a late packet of the DSR flow (TCP)', (f, proto) => {
    const lfe = plainNodePort(f, proto);
    const cp = 40041;
    backendNode().ingress(tunnelled(f, proto, dsrLb(f, proto), cp).frame);
    const first = toFrontend(f, proto, lfe, cp);
    expect(backendNode().ingress(first).counted).toEqual(countedOnce('service_dnat', 'ingress', first));
    expect(dsrRecord(f, proto, cp), 'the DSR flow\'s frontend record is gone').toBeUndefined();
    if (proto === 'tcp') {
      // The client's last ACK of the older DSR connection arrives late: delivered, but it takes nothing.
      const late = tunnelled(f, 'tcp', dsrLb(f, 'tcp'), cp, { flags: { ack: true }, seq: 1001, ack: 1 });
      const d = backendNode().ingress(late.frame);
      expect(d.counted).toEqual(countedOnce('dsr_decap', 'ingress', late.frame));
      expect(parseFrame(d.data).ip.dst).toBe(backend(f));
    }
    const rep = replyFrom(f, proto, cp);
    const r = backendNode().egress(rep);
    expect(r.counted).toEqual(countedOnce('revnat', 'egress', rep));
    const out = expectChecksumsOk(r.data);
    expect([out.ip.src, out.l4.sport]).toEqual([lfe.addr, lfe.port]);
  });

  it.each([4, 6] as const)('IPv%i tcp: local flow, then a new DSR connection (SYN) on the tuple: the DSR flow wins', (f) => {
    const cp = 40042;
    backendNode().ingress(toFrontend(f, 'tcp', plainNodePort(f, 'tcp'), cp));
    backendNode().ingress(tunnelled(f, 'tcp', dsrLb(f, 'tcp'), cp).frame);
    const rep = replyFrom(f, 'tcp', cp, { syn: true, ack: true });
    const r = backendNode().egress(rep);
    expect(r.counted).toEqual(countedOnce('dsr_revnat', 'egress', rep));
    expect(parseFrame(r.data).ip.src).toBe(dsrLb(f, 'tcp').addr);
  });
});
