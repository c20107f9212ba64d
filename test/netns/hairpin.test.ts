// Hairpin with real sockets (bpf/lib/uplink.h lb_hairpin): a pod calls its own
// Service through the per-packet path — strait_tc on the node side of its
// veth, as the agent attaches to lxc* — and is the only backend. The request
// comes back to it SNATed to the node's address, its reply returns through
// the same veth and is reversed: TCP and UDP round-trips work, the client
// sees the ClusterIP as its peer, the server sees the node's address.
// Needs root: fails (never skips) without.
//
// Address plan (test/lib/netns.ts):
//   node n       up0 198.18.0.1 / 2001:2::1 (config addr4/addr6: the SNAT source), SNAT 61000-65535
//                bk1 198.18.11.1 / 2001:2:0:11::1, strait_tc ingress + egress attached here
//   pod b1       198.18.11.2 / 2001:2:0:11::2, echo server TCP 8080, UDP 5353; routes the VIPs via the node
//   ClusterIPs   198.19.0.40 / 2001:2:0:ff::28 (vip6(40)), :80 TCP, :53 UDP, b1 the only backend
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LB_F_REJECT_NO_ENDPOINTS } from '../../src/bpf/abi.js';
import { Dataplane } from '../../src/bpf/dataplane.js';
import { hostPort, topology, type Proc, type Topology } from '../lib/netns.js';
import { addService, metric } from '../lib/services.js';

const PREFIX = 'st-hp-';
const BPF_ROOT = '/sys/fs/bpf/strait-test-netns-hairpin';
const TCP_PORT = 8080;
const UDP_PORT = 5353;

/** 'a.b.c.d:p' / '[v6]:p' → the address. */
function addrOf(hp: string): string {
  const m = /^\[(.*)\]:\d+$/.exec(hp) ?? /^(.*):\d+$/.exec(hp);
  if (!m) throw new Error(`not ADDR:PORT: ${hp}`);
  return m[1] as string;
}

describe('hairpin: a pod reaches itself through its ClusterIP (per-packet path)', () => {
  let topo: Topology;
  let dp: Dataplane;
  let server: Proc | undefined;

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('test/netns needs root (network namespaces, BPF)');
    Dataplane.destroy(BPF_ROOT);
    rmSync(BPF_ROOT, { recursive: true, force: true });
    topo = await topology(PREFIX, { backends: 1 });
    dp = Dataplane.open({
      bpfRoot: BPF_ROOT,
      mapSizes: { ct4: 16384, ct6: 16384, snat4: 16384, snat6: 16384, services4: 64, services6: 64, service_slots: 64, backends4: 64, backends6: 64 },
    });
    dp.maps.config.update(0, {
      addr4: topo.nodeUplinkAddr4,
      addr6: topo.nodeUplinkAddr6,
      uplinkIfindex: [0, 0, 0, 0],
      modes: 0,
      nodeportMin: 30000,
      nodeportMax: 32767,
      snatPortMin: 61000,
      snatPortMax: 65535,
    });
    const pod = topo.backends[0]!;
    dp.attachTc({ ifname: pod.nodeDev, netns: topo.netnsPath(topo.nsNode) });
    let id = 1;
    for (const v6 of [false, true]) {
      for (const [proto, port, target] of [['tcp', 80, TCP_PORT], ['udp', 53, UDP_PORT]] as const) {
        addService(dp, {
          id: id++,
          vip: v6 ? topo.vip6(40) : topo.vip4(40),
          port,
          proto,
          backends: [{ id: 100 + id, addr: v6 ? pod.addr6 : pod.addr4, port: target }],
          flags: LB_F_REJECT_NO_ENDPOINTS,
        });
      }
    }
    server = await topo.lab.startEchoServer(pod.ns, { name: 'pod1', tcp: TCP_PORT, udp: UDP_PORT });
  });

  afterAll(async () => {
    try {
      dp?.close();
    } finally {
      Dataplane.destroy(BPF_ROOT);
      await server?.kill();
      await topo?.destroy();
    }
  });

  it.each([
    ['IPv4', 'tcp'],
    ['IPv4', 'udp'],
    ['IPv6', 'tcp'],
    ['IPv6', 'udp'],
  ] as const)('%s %s: every request round-trips; the client sees the ClusterIP, the server the node', async (family, mode) => {
    const v6 = family === 'IPv6';
    const to = hostPort(v6 ? topo.vip6(40) : topo.vip4(40), mode === 'tcp' ? 80 : 53);
    const hairpins0 = metric(dp, 'hairpin_snat', 'ingress');
    const revnat0 = metric(dp, 'snat_revnat', 'ingress');
    const res = await topo.lab.echoClient(topo.backends[0]!.ns, mode, to, { count: 12, parallel: 3, timeoutMs: 3000 });
    expect(res.errors).toEqual([]);
    expect(res.ok).toBe(12);
    expect(res.byPod).toEqual({ pod1: 12 });
    for (const r of res.replies) {
      expect(r.from).toBe(to); // the reply was reversed to the ClusterIP
      expect(addrOf(r.client)).toBe(v6 ? topo.nodeUplinkAddr6 : topo.nodeUplinkAddr4); // SNATed to the node
    }
    expect(metric(dp, 'hairpin_snat', 'ingress') - hairpins0).toBeGreaterThanOrEqual(12n);
    expect(metric(dp, 'snat_revnat', 'ingress') - revnat0).toBeGreaterThanOrEqual(12n);
  });
});
