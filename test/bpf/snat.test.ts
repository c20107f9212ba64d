// North-south SNAT at uplink ingress (bpf/lib/snat.h): a NodePort /
// LoadBalancer / externalIP flow whose backend runs on another node leaves
// from the node's address and a port of the SNAT range, to the backend,
// redirected by the FIB; the backend's reply comes back to node:port and
// leaves reversed, from the frontend to the client. Ports are allocated with
// collisions handled and exhaustion counted; the SNAT entries carry their
// flow's conntrack deadline. A local backend and ClusterIP traffic are DNATed
// only, as before. ICMP errors about SNAT flows are translated both ways.
//
// Address plan (IPv4 / IPv6):
//   clients        198.18.0.10-13        2001:2::1:10-13
//   node           198.18.2.1            2001:2::3:1          SNAT source, NodePort frontend
//   LoadBalancer   198.19.0.2            2001:2:0:ff::2       kind LOAD_BALANCER, :80 / :53
//   externalIP     198.19.0.3            2001:2:0:ff::3       kind EXTERNAL_IP,   :80 / :53
//   ClusterIP      198.19.0.4            2001:2:0:ff::4       kind CLUSTER_IP,    :80 / :53
//   remote backend 198.18.1.1            2001:2::2:1          :8080 (TCP), :5353 (UDP), another node
//   local backend  198.18.1.9            2001:2::2:9          BE_F_LOCAL
//   NodePorts      30080/TCP, 30053/UDP (remote backend); 30180/TCP, 30153/UDP (local backend)
//   SNAT range     61000-61999 (config); 2 ports where a test exhausts it
//   FIB (mocked)   out of ifindex 7, 02:00:00:00:0a:01 -> 02:00:00:00:0b:02
import { beforeEach, describe, expect, it } from 'vitest';
import { createSocket } from 'node:dgram';
import { connect, createServer, type AddressInfo } from 'node:net';
import {
  BE_F_LOCAL,
  CT_DIR_REPLY,
  CT_DIR_SERVICE,
  CT_F_CLOSING,
  CT_F_SEEN_REPLY,
  CT_F_SNAT,
  LB_F_REJECT_NO_ENDPOINTS,
  LB_KIND_CLUSTER_IP,
  LB_KIND_EXTERNAL_IP,
  LB_KIND_LOAD_BALANCER,
  LB_KIND_NODE_PORT,
  SNAT_DIR_IN,
  SNAT_DIR_OUT,
  type CtEntry,
} from '../../src/bpf/abi.js';
import {
  BpfHarness,
  CASES,
  NS_PER_SEC,
  TARGET_PORT,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  TC_ACT_UNSPEC,
  TEST_SETTINGS,
  VIP_PORT,
  countedOnce,
  expectChecksumsOk,
  expectLifetime,
  flowFrame,
  monotonicNs,
  planOf,
  useHarness,
  type Family,
  type FlowFrame,
  type L4Proto,
} from '../lib/bpf-harness.js';
import {
  FIB,
  NEXT_HOP_MAC,
  NODE,
  SNAT_MAX,
  SNAT_MIN,
  UPLINK_MAC,
  lastFibLookup,
  mockFib,
  resetNorthSouth,
  setNodeConfig,
} from '../lib/north-south.js';
import {
  ICMP4,
  ICMP4_UNREACH,
  ICMP6,
  ICMP6_UNREACH,
  IPPROTO,
  icmp4Error,
  icmp6Error,
  internetChecksum,
  ipBytes,
  ipPacketOf,
  ipv4UdpFragments,
  ipv6UdpFragments,
  parseFrame,
  pseudoHeader,
  rewrite,
  type PacketRewrite,
} from '../lib/packet.js';
import { addService, protoNumber } from '../lib/services.js';

const ROOT = '/sys/fs/bpf/strait-test-snat';
const NODE_PORT: Readonly<Record<L4Proto, number>> = { tcp: 30080, udp: 30053 };
const LOCAL_NODE_PORT: Readonly<Record<L4Proto, number>> = { tcp: 30180, udp: 30153 };

const harness = useHarness(ROOT, installServices);
const dp = () => harness().dp;

const remoteBackend = (f: Family) => planOf(f).backend(1);
const localBackend = (f: Family) => planOf(f).backend(9);
const client = (f: Family, n = 10) => planOf(f).client(n);

/** Frontends by name, per family: address and port. */
function frontend(f: Family, proto: L4Proto, kind: 'nodePort' | 'localNodePort' | 'loadBalancer' | 'externalIP' | 'clusterIP') {
  const p = planOf(f);
  switch (kind) {
    case 'nodePort':
      return { addr: NODE[f], port: NODE_PORT[proto] };
    case 'localNodePort':
      return { addr: NODE[f], port: LOCAL_NODE_PORT[proto] };
    case 'loadBalancer':
      return { addr: p.vip(2), port: VIP_PORT[proto] };
    case 'externalIP':
      return { addr: p.vip(3), port: VIP_PORT[proto] };
    case 'clusterIP':
      return { addr: p.vip(4), port: VIP_PORT[proto] };
  }
}

/** The file's Services, written once. */
function installServices(h: BpfHarness): void {
  for (const [family, proto] of CASES) {
    const base = family * 100 + (proto === 'tcp' ? 10 : 50);
    const remote = { id: base + 1, addr: remoteBackend(family), port: TARGET_PORT[proto] };
    const local = { id: base + 9, addr: localBackend(family), port: TARGET_PORT[proto], flags: BE_F_LOCAL };
    const add = (id: number, fe: { addr: string; port: number }, kind: number, backends: (typeof remote)[]) =>
      addService(h.dp, { id, vip: fe.addr, port: fe.port, proto, kind, backends, flags: LB_F_REJECT_NO_ENDPOINTS });
    add(base + 2, frontend(family, proto, 'nodePort'), LB_KIND_NODE_PORT, [remote]);
    add(base + 3, frontend(family, proto, 'localNodePort'), LB_KIND_NODE_PORT, [local]);
    add(base + 4, frontend(family, proto, 'loadBalancer'), LB_KIND_LOAD_BALANCER, [remote]);
    add(base + 5, frontend(family, proto, 'externalIP'), LB_KIND_EXTERNAL_IP, [remote]);
    add(base + 6, frontend(family, proto, 'clusterIP'), LB_KIND_CLUSTER_IP, [remote]);
  }
}

beforeEach(() => resetNorthSouth(harness()));

/** A client's packet to a frontend (TCP: SYN unless `extra` says otherwise). */
function toFrontend(f: Family, proto: L4Proto, fe: { addr: string; port: number }, sport: number, extra: Partial<FlowFrame> = {}): Buffer {
  return flowFrame(f, proto, { src: client(f), dst: fe.addr, sport, dport: fe.port, payload: 'hello', ...extra });
}

/** The backend's reply to node:snatPort. */
function reply(f: Family, proto: L4Proto, snatPort: number, extra: Partial<FlowFrame> = {}): Buffer {
  return flowFrame(f, proto, {
    src: remoteBackend(f),
    dst: NODE[f],
    sport: TARGET_PORT[proto],
    dport: snatPort,
    payload: 'world',
    ...(proto === 'tcp' ? { flags: { syn: true, ack: true } } : {}),
    ...extra,
  });
}

function ctKey(f: Family, proto: L4Proto, saddr: string, daddr: string, sport: number, dport: number, dir: number) {
  return { saddr, daddr, sport, dport, proto: protoNumber(proto), dir };
}
type FlowKey = ReturnType<typeof ctKey>;
/** A snat{4,6} value, either family. */
interface SnatValue {
  addr: string;
  port: number;
  expires: bigint;
}
function ctLookup(f: Family, key: FlowKey): CtEntry | undefined {
  return f === 4 ? dp().maps.ct4.lookup(key) : dp().maps.ct6.lookup(key);
}
function ctUpdate(f: Family, key: FlowKey, e: CtEntry): void {
  if (f === 4) dp().maps.ct4.update(key, e);
  else dp().maps.ct6.update(key, e);
}
function snatLookup(f: Family, key: FlowKey): SnatValue | undefined {
  return f === 4 ? dp().maps.snat4.lookup(key) : dp().maps.snat6.lookup(key);
}
function snatUpdate(f: Family, key: FlowKey, v: SnatValue): void {
  if (f === 4) dp().maps.snat4.update(key, v);
  else dp().maps.snat6.update(key, v);
}

/** Opens a flow through `fe` from client port `sport`; returns the SNAT port it got. */
function openFlow(f: Family, proto: L4Proto, fe: { addr: string; port: number }, sport: number, from = client(f)): number {
  const r = harness().ingress(flowFrame(f, proto, { src: from, dst: fe.addr, sport, dport: fe.port, payload: 'hello' }));
  expect(r.retval, `flow from ${from}:${sport}`).toBe(TC_ACT_REDIRECT);
  return parseFrame(r.data).l4.sport;
}

describe('a new north-south flow to a backend on another node', () => {
  it.each(CASES)("IPv%i %s: NodePort: DNAT + SNAT to the node, the client's own source port kept, TTL - 1, MACs of the route, redirected", (f, proto) => {
    const fe = frontend(f, proto, 'nodePort');
    const input = toFrontend(f, proto, fe, 40000);
    const before = monotonicNs();
    const r = harness().ingress(input);
    const after = monotonicNs();
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    expect(r.counted).toEqual(countedOnce('service_snat', 'ingress', input));

    const out = expectChecksumsOk(r.data);
    const port = out.l4.sport;
    // As netfilter's masquerade: the client's port when the translated tuple is free.
    expect(port).toBe(40000);
    // Every other byte is the input's, with the checksums updated incrementally.
    expect(r.data).toEqual(
      rewrite(input, { src: NODE[f], sport: port, dst: remoteBackend(f), dport: TARGET_PORT[proto], ttl: 63, srcMac: UPLINK_MAC, dstMac: NEXT_HOP_MAC }),
    );
    expect(lastFibLookup(dp(), f)).toEqual({ src: NODE[f], dst: remoteBackend(f), lookups: 1 });

    // Conntrack: the SERVICE entry flagged SNAT; the REPLY entry is the reply as it will arrive here.
    const svc = ctLookup(f, ctKey(f, proto, client(f), fe.addr, 40000, fe.port, CT_DIR_SERVICE));
    const rep = ctLookup(f, ctKey(f, proto, remoteBackend(f), NODE[f], TARGET_PORT[proto], port, CT_DIR_REPLY));
    expect(svc?.flags).toBe(CT_F_SNAT);
    expect(rep).toMatchObject({ flags: CT_F_SNAT, backendId: svc?.backendId, revNatId: svc?.revNatId });
    expectLifetime(svc!.expires, proto === 'tcp' ? TEST_SETTINGS.ctTcpSynNs : TEST_SETTINGS.ctUdpNs, before, after);
    // SNAT: OUT {client, frontend} -> {node, port}; IN {backend, node:port} -> {client}; both with the flow's deadline.
    const out4 = snatLookup(f, ctKey(f, proto, client(f), fe.addr, 40000, fe.port, SNAT_DIR_OUT));
    const in4 = snatLookup(f, ctKey(f, proto, remoteBackend(f), NODE[f], TARGET_PORT[proto], port, SNAT_DIR_IN));
    expect(out4).toMatchObject({ addr: NODE[f], port, expires: svc!.expires });
    expect(in4).toMatchObject({ addr: client(f), port: 40000, expires: svc!.expires });
  });

  it.each(CASES)('IPv%i %s: the reply to node:port leaves reversed, from the frontend to the client, redirected', (f, proto) => {
    const fe = frontend(f, proto, 'nodePort');
    const port = openFlow(f, proto, fe, 40001);
    const input = reply(f, proto, port);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    expect(r.counted).toEqual(countedOnce('snat_revnat', 'ingress', input));
    expectChecksumsOk(r.data);
    expect(r.data).toEqual(
      rewrite(input, { src: fe.addr, sport: fe.port, dst: client(f), dport: 40001, ttl: 63, srcMac: UPLINK_MAC, dstMac: NEXT_HOP_MAC }),
    );
    expect(lastFibLookup(dp(), f)).toMatchObject({ src: fe.addr, dst: client(f) });
    // Both conntrack entries saw the reply.
    const svc = ctLookup(f, ctKey(f, proto, client(f), fe.addr, 40001, fe.port, CT_DIR_SERVICE));
    const rep = ctLookup(f, ctKey(f, proto, remoteBackend(f), NODE[f], TARGET_PORT[proto], port, CT_DIR_REPLY));
    expect(svc!.flags & CT_F_SEEN_REPLY).toBe(CT_F_SEEN_REPLY);
    expect(rep!.flags & CT_F_SEEN_REPLY).toBe(CT_F_SEEN_REPLY);
  });

  it.each(CASES)('IPv%i %s: later packets of the flow keep its port', (f, proto) => {
    const fe = frontend(f, proto, 'nodePort');
    const port = openFlow(f, proto, fe, 40002);
    harness().ingress(reply(f, proto, port));
    for (const payload of ['second', 'third, longer', '']) {
      const input = toFrontend(f, proto, fe, 40002, { payload, flags: { ack: true, psh: true } });
      const r = harness().ingress(input);
      expect(r.retval).toBe(TC_ACT_REDIRECT);
      expect(r.counted).toEqual(countedOnce('service_snat', 'ingress', input));
      expectChecksumsOk(r.data);
      expect(r.data).toEqual(
        rewrite(input, { src: NODE[f], sport: port, dst: remoteBackend(f), dport: TARGET_PORT[proto], ttl: 63, srcMac: UPLINK_MAC, dstMac: NEXT_HOP_MAC }),
      );
    }
  });

  it.each(CASES)('IPv%i %s: LoadBalancer and externalIP frontends: SNAT from the node, replies from the frontend', (f, proto) => {
    for (const kind of ['loadBalancer', 'externalIP'] as const) {
      const fe = frontend(f, proto, kind);
      const port = openFlow(f, proto, fe, 40003);
      const back = harness().ingress(reply(f, proto, port));
      expect(back.retval, kind).toBe(TC_ACT_REDIRECT);
      const out = parseFrame(back.data);
      expect([out.ip.src, out.l4.sport, out.ip.dst, out.l4.dport], kind).toEqual([fe.addr, fe.port, client(f), 40003]);
    }
  });

  it.each(CASES)('IPv%i %s: a backend on this node gets the packet directly: DNAT only, client address kept', (f, proto) => {
    const fe = frontend(f, proto, 'localNodePort');
    const input = toFrontend(f, proto, fe, 40004);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    expect(r.data).toEqual(rewrite(input, { dst: localBackend(f), dport: TARGET_PORT[proto] }));
    expect(ctLookup(f, ctKey(f, proto, client(f), fe.addr, 40004, fe.port, CT_DIR_SERVICE))?.flags).toBe(0);
    expect(dp().maps.snat4.count() + dp().maps.snat6.count()).toBe(0);
  });

  it.each(CASES)('IPv%i %s: ClusterIP traffic on the uplink is DNATed only, as before', (f, proto) => {
    const fe = frontend(f, proto, 'clusterIP');
    const input = toFrontend(f, proto, fe, 40005);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    expect(r.data).toEqual(rewrite(input, { dst: remoteBackend(f), dport: TARGET_PORT[proto] }));
    expect(dp().maps.snat4.count() + dp().maps.snat6.count()).toBe(0);
  });

  it.each(CASES)('IPv%i %s: a node without an address of the family in config DNATs only', (f, proto) => {
    setNodeConfig(dp(), f === 4 ? { addr4: '0.0.0.0' } : { addr6: '::' });
    const fe = frontend(f, proto, 'loadBalancer');
    const input = toFrontend(f, proto, fe, 40006);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('service_dnat', 'ingress', input));
    expect(r.data).toEqual(rewrite(input, { dst: remoteBackend(f), dport: TARGET_PORT[proto] }));
  });
});

describe('SNAT ports: collisions, exhaustion, reuse', () => {
  const TWO = { snatMin: 62000, snatMax: 62001 };

  it.each(CASES)("IPv%i %s: two clients with the same source port: the first keeps it, the second's is taken (same backend) and comes from the range; each reply finds its client", (f, proto) => {
    setNodeConfig(dp(), TWO);
    const fe = frontend(f, proto, 'nodePort');
    const a = openFlow(f, proto, fe, 45000, client(f, 10));
    const b = openFlow(f, proto, fe, 45000, client(f, 11));
    expect(a).toBe(45000);
    expect([62000, 62001]).toContain(b);
    for (const [port, who] of [[a, client(f, 10)], [b, client(f, 11)]] as const) {
      const r = harness().ingress(reply(f, proto, port));
      expect(r.retval).toBe(TC_ACT_REDIRECT);
      const out = parseFrame(r.data);
      expect([out.ip.dst, out.l4.dport]).toEqual([who, 45000]);
    }
  });

  it.each(CASES)("IPv%i %s: with the client's port taken and every port of the range in use a new flow is a counted drop and leaves no state; an expired flow frees its port", (f, proto) => {
    setNodeConfig(dp(), TWO);
    const fe = frontend(f, proto, 'nodePort');
    expect(openFlow(f, proto, fe, 45001, client(f, 9))).toBe(45001); // keeps its port
    const a = openFlow(f, proto, fe, 45001, client(f, 10));
    const b = openFlow(f, proto, fe, 45001, client(f, 11));
    expect([a, b].sort()).toEqual([62000, 62001]);
    const ct = f === 4 ? dp().maps.ct4 : dp().maps.ct6;
    const snat = f === 4 ? dp().maps.snat4 : dp().maps.snat6;
    const [ctBefore, snatBefore] = [ct.count(), snat.count()];

    const third = flowFrame(f, proto, { src: client(f, 12), dst: fe.addr, sport: 45001, dport: fe.port, payload: 'hello' });
    const r = harness().ingress(third);
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(r.counted).toEqual(countedOnce('drop_snat_exhausted', 'ingress', third));
    expect([ct.count(), snat.count()]).toEqual([ctBefore, snatBefore]);
    expect(ctLookup(f, ctKey(f, proto, client(f, 12), fe.addr, 45001, fe.port, CT_DIR_SERVICE))).toBeUndefined();

    // Client 10's flow ends (its deadline passes): its port is taken over.
    const inKey = ctKey(f, proto, remoteBackend(f), NODE[f], TARGET_PORT[proto], a, SNAT_DIR_IN);
    snatUpdate(f, inKey, { ...snatLookup(f, inKey)!, expires: 1n });
    const again = harness().ingress(third);
    expect(again.retval).toBe(TC_ACT_REDIRECT);
    expect(again.counted).toEqual(countedOnce('service_snat', 'ingress', third));
    expect(parseFrame(again.data).l4.sport).toBe(a);
    expect(snatLookup(f, inKey)).toMatchObject({ addr: client(f, 12), port: 45001 });
  });

  it.each(CASES)('IPv%i %s: an empty range (no SNAT ports configured) DNATs only', (f, proto) => {
    setNodeConfig(dp(), { snatMin: 0, snatMax: 0 });
    const fe = frontend(f, proto, 'nodePort');
    const r = harness().ingress(toFrontend(f, proto, fe, 45002));
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted.map((c) => c.reason)).toEqual(['service_dnat']);
  });

  it.each(CASES)('IPv%i %s: a packet to node:port of the range that no flow holds is left to the stack (a host socket)', (f, proto) => {
    const input = reply(f, proto, SNAT_MIN + 5);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_UNSPEC);
    expect(r.counted).toEqual(countedOnce('pass', 'ingress', input));
    expect(r.data).toEqual(input);
  });
});

describe("the client's port is not kept when a socket of the node owns the reply tuple", () => {
  // BPF_PROG_TEST_RUN runs on the loopback of the test's own namespace, and the datapath looks
  // sockets up in the namespace of the skb's device: real sockets of this process on loopback
  // stand for the node's. Node address N = 127.0.0.1 / ::1 (config), backend B = a real TCP
  // server (or UDP port) on the same loopback address; nothing is sent anywhere (mocked FIB).
  const LOOP = { 4: '127.0.0.1', 6: '::1' } as const;

  /** A LoadBalancer frontend (vip 7) whose one backend, on "another node", is LOOP:port. */
  function loopService(f: Family, proto: L4Proto, port: number, vip = 7): { addr: string; port: number } {
    const fe = { addr: planOf(f).vip(vip), port: VIP_PORT[proto] };
    const id = 100 * vip + f * 10 + (proto === 'tcp' ? 1 : 2);
    addService(dp(), { id, vip: fe.addr, port: fe.port, proto, kind: LB_KIND_LOAD_BALANCER, backends: [{ id, addr: LOOP[f], port }], flags: 0 });
    return fe;
  }

  it.each(CASES)('IPv%i %s: a connected node socket N:P -> B:bp: a flow from client port P gets a port of the range; without the socket it keeps P', async (f, proto) => {
    setNodeConfig(dp(), { addr4: LOOP[4], addr6: LOOP[6] });
    const closers: (() => unknown)[] = [];
    try {
      let bp: number;
      let p: number;
      if (proto === 'tcp') {
        const server = createServer((c) => c.on('error', () => undefined));
        await new Promise<void>((ok) => server.listen(0, LOOP[f], ok));
        closers.push(() => server.close());
        bp = (server.address() as AddressInfo).port;
        const sock = connect({ host: LOOP[f], port: bp });
        closers.push(() => sock.destroy());
        await new Promise<void>((ok, ko) => sock.once('connect', ok).once('error', ko));
        p = sock.localPort!;
      } else {
        bp = 5300 + f;
        const sock = createSocket(f === 4 ? 'udp4' : 'udp6');
        closers.push(() => new Promise<void>((ok) => sock.close(() => ok())));
        await new Promise<void>((ok) => sock.bind(0, LOOP[f], ok));
        await new Promise<void>((ok) => sock.connect(bp, LOOP[f], () => ok()));
        p = sock.address().port;
      }
      const fe = loopService(f, proto, bp);
      const taken = openFlow(f, proto, fe, p);
      expect(taken, `client port ${p} is the node socket's`).not.toBe(p);
      expect(taken).toBeGreaterThanOrEqual(SNAT_MIN);
      expect(taken).toBeLessThanOrEqual(SNAT_MAX);
      // Its reply comes back to the range port; the node socket's tuple was left alone.
      const back = harness().ingress(flowFrame(f, proto, { src: LOOP[f], dst: LOOP[f], sport: bp, dport: taken, payload: 'x', ...(proto === 'tcp' ? { flags: { syn: true, ack: true } } : {}) }));
      expect(back.retval).toBe(TC_ACT_REDIRECT);
      expect(parseFrame(back.data).l4.dport).toBe(p);

      for (const close of closers.splice(0)) await close();
      // Another client with the same port, the socket gone: the port is kept. (TCP: the closed
      // client socket lingers in TIME_WAIT on that tuple, so the lookup still finds it.)
      const other = openFlow(f, proto, fe, p, client(f, 12));
      if (proto === 'udp') expect(other).toBe(p);
      else expect(other).not.toBe(p);
    } finally {
      for (const close of closers) await close();
    }
  });

  it.each(CASES)('IPv%i %s: no node socket on the tuple: the client port is kept (control)', (f, proto) => {
    setNodeConfig(dp(), { addr4: LOOP[4], addr6: LOOP[6] });
    const fe = loopService(f, proto, 9, 8);
    expect(openFlow(f, proto, fe, 47700)).toBe(47700);
  });
});

describe('a SNAT flow whose conntrack REPLY entry the LRU took', () => {
  it.each([4, 6] as const)('IPv%i TCP: its reply is dropped and counted (not left to the stack to reset), and the client\'s next packet heals it', (f) => {
    const fe = frontend(f, 'tcp', 'nodePort');
    const port = openFlow(f, 'tcp', fe, 46500);
    const repKey = ctKey(f, 'tcp', remoteBackend(f), NODE[f], TARGET_PORT.tcp, port, CT_DIR_REPLY);
    if (f === 4) dp().maps.ct4.delete(repKey);
    else dp().maps.ct6.delete(repKey);
    const synAck = reply(f, 'tcp', port);
    const lost = harness().ingress(synAck);
    expect(lost.retval).toBe(TC_ACT_SHOT);
    expect(lost.counted).toEqual(countedOnce('drop_snat_untracked', 'ingress', synAck));
    // The client's ACK moves the flow on (ESTABLISHED), which rewrites the peer entry.
    const ack = harness().ingress(toFrontend(f, 'tcp', fe, 46500, { flags: { ack: true } }));
    expect(parseFrame(ack.data).l4.sport).toBe(port);
    expect(ctLookup(f, repKey)).toBeDefined();
    const again = harness().ingress(synAck);
    expect(again.retval).toBe(TC_ACT_REDIRECT);
    expect(again.counted).toEqual(countedOnce('snat_revnat', 'ingress', synAck));
  });
});

describe('SNAT entries live as long as their flow', () => {
  it.each([4, 6] as const)('IPv%i TCP: the deadline follows the flow through the handshake and the close', (f) => {
    const fe = frontend(f, 'tcp', 'nodePort');
    const port = openFlow(f, 'tcp', fe, 46000);
    harness().ingress(reply(f, 'tcp', port));
    harness().ingress(toFrontend(f, 'tcp', fe, 46000, { flags: { ack: true } }));
    const before = monotonicNs();
    harness().ingress(toFrontend(f, 'tcp', fe, 46000, { flags: { fin: true, ack: true } }));
    const after = monotonicNs();
    const svc = ctLookup(f, ctKey(f, 'tcp', client(f), fe.addr, 46000, fe.port, CT_DIR_SERVICE))!;
    expect(svc.flags & CT_F_CLOSING).toBe(CT_F_CLOSING);
    expectLifetime(svc.expires, TEST_SETTINGS.ctTcpClosingNs, before, after);
    const outE = snatLookup(f, ctKey(f, 'tcp', client(f), fe.addr, 46000, fe.port, SNAT_DIR_OUT));
    const inE = snatLookup(f, ctKey(f, 'tcp', remoteBackend(f), NODE[f], TARGET_PORT.tcp, port, SNAT_DIR_IN));
    const rep = ctLookup(f, ctKey(f, 'tcp', remoteBackend(f), NODE[f], TARGET_PORT.tcp, port, CT_DIR_REPLY))!;
    expect([outE?.expires, inE?.expires, rep.expires]).toEqual([svc.expires, svc.expires, svc.expires]);
  });

  it.each([4, 6] as const)('IPv%i UDP: a reply refreshes the entries of both directions', (f) => {
    const fe = frontend(f, 'udp', 'nodePort');
    const port = openFlow(f, 'udp', fe, 46001);
    // Age everything by a minute, as if the flow had been idle.
    const aged = <T extends { expires: bigint }>(e: T): T => ({ ...e, expires: e.expires - 60n * NS_PER_SEC });
    const keys = {
      svc: ctKey(f, 'udp', client(f), fe.addr, 46001, fe.port, CT_DIR_SERVICE),
      rep: ctKey(f, 'udp', remoteBackend(f), NODE[f], TARGET_PORT.udp, port, CT_DIR_REPLY),
    };
    for (const k of [keys.svc, keys.rep]) {
      ctUpdate(f, k, aged(ctLookup(f, k)!));
      snatUpdate(f, k, aged(snatLookup(f, k)!)); // OUT and IN: the same bytes as SERVICE and REPLY
    }
    const before = monotonicNs();
    harness().ingress(reply(f, 'udp', port));
    const after = monotonicNs();
    const svc = ctLookup(f, keys.svc)!;
    expectLifetime(svc.expires, TEST_SETTINGS.ctUdpNs, before, after);
    expect(ctLookup(f, keys.rep)!.expires).toBe(svc.expires);
    expect(snatLookup(f, keys.svc)?.expires).toBe(svc.expires); // OUT: dir 0 = the SERVICE key
    expect(snatLookup(f, keys.rep)?.expires).toBe(svc.expires); // IN: dir 1 = the REPLY key
  });
});

describe('what the datapath refuses or cannot route', () => {
  it.each(CASES)('IPv%i %s: TTL 1 is dropped, counted, before anything is sent', (f, proto) => {
    const fe = frontend(f, proto, 'nodePort');
    const ttl1 = rewrite(toFrontend(f, proto, fe, 47000), { ttl: 1 });
    const r = harness().ingress(ttl1);
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(r.counted).toEqual(countedOnce('drop_ttl_exceeded', 'ingress', ttl1));
  });

  it.each(CASES)('IPv%i %s: no route to the backend is a counted drop', (f, proto) => {
    mockFib(dp(), FIB.NOT_FWDED);
    const input = toFrontend(f, proto, frontend(f, proto, 'nodePort'), 47001);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(r.counted).toEqual(countedOnce('drop_fib_lookup', 'ingress', input));
  });

  it.each(CASES)('IPv%i %s: an unresolved neighbour is left to bpf_redirect_neigh (MACs untouched)', (f, proto) => {
    mockFib(dp(), FIB.NO_NEIGH);
    const input = toFrontend(f, proto, frontend(f, proto, 'nodePort'), 47002);
    const r = harness().ingress(input);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    const out = parseFrame(r.data);
    expect(r.data.subarray(0, 12)).toEqual(input.subarray(0, 12));
    expect(out.ip.src).toBe(NODE[f]);
  });

  it.each([4, 6] as const)('IPv%i UDP: a first fragment of a new SNAT flow is refused before any state', (f) => {
    const fe = frontend(f, 'udp', 'nodePort');
    const frames = fragmentsTo(f, fe);
    const r = harness().ingress(frames[0]!);
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(r.counted).toEqual(countedOnce('drop_unsupported', 'ingress', frames[0]!));
    expect((f === 4 ? dp().maps.ct4 : dp().maps.ct6).count()).toBe(0);
  });
});

describe('ICMP errors about SNAT flows', () => {
  /** The translated error: incremental rewrite, the quoted L4 checksum left, the ICMP checksum recomputed. */
  function expectedXlate(input: Buffer, outer: PacketRewrite & { srcMac?: string; dstMac?: string }, inner: PacketRewrite): Buffer {
    const out = rewrite(input, { ...outer, inner });
    const q = parseFrame(input).l4.icmp!.embedded!;
    const at = q.l4.checksumOffset;
    if (at !== undefined) input.copy(out, at, at, at + 2);
    const p = parseFrame(out);
    const { l4, end } = p.offsets;
    out.writeUInt16BE(0, l4 + 2);
    const body = out.subarray(l4, end);
    const sum = p.ip.version === 4 ? internetChecksum(body) : internetChecksum(pseudoHeader(ipBytes(p.ip.src), ipBytes(p.ip.dst), IPPROTO.ICMPV6, body.length), body);
    out.writeUInt16BE(sum, l4 + 2);
    return out;
  }

  it.each(CASES)('IPv%i %s: the backend\'s port unreachable about node:port -> backend reaches the client as one about client -> frontend', (f, proto) => {
    const fe = frontend(f, proto, 'nodePort');
    const input0 = toFrontend(f, proto, fe, 48000);
    const sent = harness().ingress(input0).data; // N:S -> B:bp as it left
    const port = parseFrame(sent).l4.sport;
    const original = ipPacketOf(sent).subarray(0, (f === 4 ? 20 : 40) + 8);
    const err = f === 4
      ? icmp4Error({ src: remoteBackend(f), dst: NODE[f], type: ICMP4.DEST_UNREACH, code: ICMP4_UNREACH.PORT, original })
      : icmp6Error({ src: remoteBackend(f), dst: NODE[f], type: ICMP6.DEST_UNREACH, code: ICMP6_UNREACH.PORT, original });
    const r = harness().ingress(err);
    expect(r.retval).toBe(TC_ACT_REDIRECT);
    expect(r.counted).toEqual(countedOnce('snat_icmp_xlate', 'ingress', err));
    expect(r.data).toEqual(
      expectedXlate(err, { src: fe.addr, dst: client(f), ttl: 63, srcMac: UPLINK_MAC, dstMac: NEXT_HOP_MAC }, { src: client(f), sport: 48000, dst: fe.addr, dport: fe.port }),
    );
    expect(parseFrame(r.data).l4.checksumStatus).toBe('ok');
    expect(port).toBe(48000); // the client's port, kept: the error is found by the IN entry, not the range
  });

  it.each(CASES)('IPv%i %s: the client side\'s "too big" about frontend -> client reaches the backend as one about backend -> node:port', (f, proto) => {
    const fe = frontend(f, proto, 'nodePort');
    const port = openFlow(f, proto, fe, 48001);
    const back = harness().ingress(reply(f, proto, port, { payload: Buffer.alloc(1200, 0x42) })).data; // F:fp -> C:cp as it left
    const original = ipPacketOf(back).subarray(0, (f === 4 ? 20 : 40) + 8);
    const router = planOf(f).node(9);
    const err = f === 4
      ? icmp4Error({ src: router, dst: fe.addr, type: ICMP4.DEST_UNREACH, code: ICMP4_UNREACH.FRAG_NEEDED, mtu: 1000, original })
      : icmp6Error({ src: router, dst: fe.addr, type: ICMP6.PACKET_TOO_BIG, code: 0, mtu: 1280, original });
    const r = harness().ingress(err);
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.counted).toEqual(countedOnce('icmp_error_xlate', 'ingress', err));
    expect(r.data).toEqual(expectedXlate(err, { dst: remoteBackend(f) }, { src: remoteBackend(f), sport: TARGET_PORT[proto], dst: NODE[f], dport: port }));
  });
});

/** A 3000-byte UDP datagram to `fe`, fragmented at 1000 bytes. */
function fragmentsTo(f: Family, fe: { addr: string; port: number }): Buffer[] {
  const o = { src: client(f), dst: fe.addr, sport: 46500, dport: fe.port, payload: Buffer.alloc(3000, 7), fragmentSize: 1000 };
  return f === 4 ? ipv4UdpFragments(o) : ipv6UdpFragments(o);
}
