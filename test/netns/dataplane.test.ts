// Real traffic through the tc programs on a node's uplink: a client namespace,
// a node namespace with strait_tc_ingress/egress attached to up0, and backend
// namespaces running the echo server. Needs root: fails (never skips) without.
//
// Address plan (test/lib/netns.ts): client 198.18.0.2 / 2001:2::2 on c0;
// node up0 198.18.0.1 / 2001:2::1; backend I 198.18.(10+I).2 / 2001:2:0:(10+I)::2;
// Service VIPs 198.19.0.0/24 and 2001:2:0:ff::/64, routed by the client to the
// node, which has no route for them: only the dataplane makes them reachable.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BE_STATE_QUARANTINED, FLOW_HOOK_TC_EGRESS, FLOW_HOOK_TC_INGRESS, flowCacheAddr } from '../../src/bpf/abi.js';
import { Dataplane } from '../../src/bpf/dataplane.js';
import { canonicalIp } from '../lib/packet.js';
import { hostPort, topology, type Proc, type Topology } from '../lib/netns.js';
import { addService, metric, setBackends, writeBackend, type ServiceSpec } from '../lib/services.js';

const PREFIX = 'st-dp-';
const BPF_ROOT = `/sys/fs/bpf/strait-test-netns-dp`;
const TCP_PORT = 8080;
const UDP_PORT = 5353;
const BACKENDS = 3;

describe('tc dataplane with real traffic', () => {
  let topo: Topology;
  let dp: Dataplane;
  const servers: Proc[] = [];

  const backendsOf = (family: 4 | 6, port: number, idBase: number) =>
    topo.backends.map((b, i) => ({ id: idBase + i, addr: family === 4 ? b.addr4 : b.addr6, port }));

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('test/netns needs root (network namespaces, BPF)');
    Dataplane.destroy(BPF_ROOT);
    rmSync(BPF_ROOT, { recursive: true, force: true });
    topo = await topology(PREFIX, { backends: BACKENDS, uplinkMtu: 1500, backendMtu: 1500 });
    dp = Dataplane.open({
      bpfRoot: BPF_ROOT,
      mapSizes: { ct4: 65536, ct6: 65536, services4: 1024, services6: 1024, service_slots: 4096, backends4: 4096, backends6: 4096 },
    });
    dp.attachTc({ ifname: topo.uplink, netns: topo.netnsPath(topo.nsNode) });
    for (const b of topo.backends) {
      servers.push(await topo.lab.startEchoServer(b.ns, { name: `pod${b.index}`, tcp: TCP_PORT, udp: UDP_PORT }));
    }
  });

  afterAll(async () => {
    try {
      if (dp) {
        dp.close();
        Dataplane.destroy(BPF_ROOT);
      }
    } finally {
      await topo?.destroy();
    }
  });

  it.each([4, 6] as const)('IPv%i TCP: hundreds of connections reach every backend, clients keep their address', async (family) => {
    const vip = family === 4 ? topo.vip4(10) : topo.vip6(10);
    addService(dp, { id: 10 + family, vip, port: 80, proto: 'tcp', backends: backendsOf(family, TCP_PORT, 100 + family * 10) });
    const res = await topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(vip, 80), { count: 300, parallel: 8, timeoutMs: 3000 });
    expect(res.errors).toEqual([]);
    expect(res.ok).toBe(300);
    expect(Object.keys(res.byPod).sort()).toEqual(['pod1', 'pod2', 'pod3']);
    const client = family === 4 ? topo.client.addr4 : topo.client.addr6;
    for (const r of res.replies) {
      expect(r.client.startsWith(family === 4 ? `${client}:` : `[${client}]:`), r.client).toBe(true);
      // the client's socket is connected to the VIP: a reply from anywhere else would never arrive
      expect(r.from).toBe(hostPort(vip, 80));
    }
  });

  it.each([4, 6] as const)('IPv%i UDP: every reply comes from VIP:port', async (family) => {
    const vip = family === 4 ? topo.vip4(11) : topo.vip6(11);
    addService(dp, { id: 20 + family, vip, port: 53, proto: 'udp', backends: backendsOf(family, UDP_PORT, 200 + family * 10) });
    const res = await topo.lab.echoClient(topo.nsClient, 'udp', hostPort(vip, 53), { count: 150, parallel: 8, timeoutMs: 2000 });
    expect(res.errors).toEqual([]);
    expect(Object.keys(res.byPod).sort()).toEqual(['pod1', 'pod2', 'pod3']);
    for (const r of res.replies) expect(r.from).toBe(hostPort(vip, 53));
  });

  it('a Service without endpoints is refused at once, not timed out', async () => {
    const vip = topo.vip4(12);
    addService(dp, { id: 30, vip, port: 80, proto: 'tcp', backends: [] });
    addService(dp, { id: 31, vip, port: 53, proto: 'udp', backends: [] });
    const before = metric(dp, 'no_endpoints_reply');
    const tcp = await topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(vip, 80), { count: 3, timeoutMs: 5000 });
    expect(tcp.byCode).toEqual({ ECONNREFUSED: 3 });
    for (const e of tcp.errors) expect(e.ms).toBeLessThan(1000);
    const udp = await topo.lab.echoClient(topo.nsClient, 'udp-connected', hostPort(vip, 53), { count: 3, timeoutMs: 5000 });
    expect(udp.byCode).toEqual({ ECONNREFUSED: 3 });
    const v6 = topo.vip6(12);
    addService(dp, { id: 32, vip: v6, port: 80, proto: 'tcp', backends: [] });
    const tcp6 = await topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(v6, 80), { count: 2, timeoutMs: 5000 });
    expect(tcp6.byCode).toEqual({ ECONNREFUSED: 2 });
    expect(metric(dp, 'no_endpoints_reply') - before).toBeGreaterThanOrEqual(8n);
  });

  it('removing a backend moves only new flows: an open connection carries on', async () => {
    const vip = topo.vip4(13);
    let svc: ServiceSpec = addService(dp, { id: 40, vip, port: 80, proto: 'tcp', backends: backendsOf(4, TCP_PORT, 400) });
    // A long-lived connection: 30 requests, 100 ms apart, on one socket.
    const longLived = topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(vip, 80), { count: 30, reuse: true, intervalMs: 100, timeoutMs: 3000 });
    await new Promise((r) => setTimeout(r, 800));
    // Backend 1 leaves the Service: out of the slots, kept quarantined for flows it already has.
    const removed = svc.backends[0]!;
    svc = setBackends(dp, svc, svc.backends.slice(1));
    writeBackend(dp, 'tcp', { ...removed, state: BE_STATE_QUARANTINED });
    const fresh = await topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(vip, 80), { count: 120, parallel: 8, timeoutMs: 3000 });
    expect(fresh.errors).toEqual([]);
    expect(Object.keys(fresh.byPod).sort()).toEqual(['pod2', 'pod3']);
    const old = await longLived;
    expect(old.errors).toEqual([]);
    expect(old.ok).toBe(30);
    expect(Object.keys(old.byPod)).toHaveLength(1);
  });

  it.each([4, 6] as const)('IPv%i: a 4000-byte UDP datagram through the VIP arrives whole', async (family) => {
    const vip = family === 4 ? topo.vip4(14) : topo.vip6(14);
    addService(dp, { id: 50 + family, vip, port: 53, proto: 'udp', backends: backendsOf(family, UDP_PORT, 500 + family * 10) });
    const res = await topo.lab.echoClient(topo.nsClient, 'udp', hostPort(vip, 53), { count: 10, size: 4000, timeoutMs: 2000 });
    expect(res.errors).toEqual([]);
    for (const r of res.replies) {
      expect(r.bytes).toBe(4000);
      expect(r.from).toBe(hostPort(vip, 53));
    }
  });

  // The established fast path (bpf/lib/flowcache.h) on real packets. Client and
  // backends send CHECKSUM_PARTIAL skbs (offload on); veths would hand them on
  // unchecked, so the node's devices finish checksums in software (tx off) and the
  // receivers verify them (rx off): a rewrite that got the pseudo-header sum wrong
  // would have its segments dropped and the exchange stall.
  it.each([4, 6] as const)('IPv%i TCP: one long connection is carried by the flow cache both ways, checksums verified', async (family) => {
    const { lab } = topo;
    await lab.ethtool(topo.nsNode, '-K', topo.uplink, 'tx', 'off');
    await lab.ethtool(topo.nsClient, '-K', topo.client.dev, 'rx', 'off');
    for (const b of topo.backends) {
      await lab.ethtool(topo.nsNode, '-K', b.nodeDev, 'tx', 'off');
      await lab.ethtool(b.ns, '-K', b.dev, 'rx', 'off');
    }
    const vip = family === 4 ? topo.vip4(15) : topo.vip6(15);
    addService(dp, { id: 60 + family, vip, port: 80, proto: 'tcp', backends: backendsOf(family, TCP_PORT, 600 + family * 10) });
    const res = await topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(vip, 80), { count: 40, size: 3000, reuse: true, timeoutMs: 3000 });
    expect(res.errors).toEqual([]);
    expect(res.ok).toBe(40);
    for (const r of res.replies) {
      expect(r.bytes).toBe(3000);
      expect(r.from).toBe(hostPort(vip, 80));
    }
    const slots = [];
    for (const [, perCpu] of dp.maps.flowCache.entries()) for (const v of perCpu) if (v.hook !== 0 && v.family === family) slots.push(v);
    const isVip = (words: number[]) => canonicalIp(flowCacheAddr(words, family)) === canonicalIp(vip);
    expect(slots.some((v) => v.hook === FLOW_HOOK_TC_INGRESS && isVip(v.daddr))).toBe(true);
    expect(slots.some((v) => v.hook === FLOW_HOOK_TC_EGRESS && isVip(v.addr))).toBe(true);
  });

  it('counts what it did in the metrics map', () => {
    expect(metric(dp, 'service_dnat', 'ingress')).toBeGreaterThan(0n);
    expect(metric(dp, 'revnat', 'egress')).toBeGreaterThan(0n);
  });
});
