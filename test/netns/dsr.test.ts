// Direct server return with real traffic, XDP off and on: an external client
// reaches a LoadBalancer VIP and a NodePort on node 1; the backend pod runs
// behind node 2. Node 1 encapsulates (tc, or XDP before an skb exists) to the
// pod, node 2 decapsulates and delivers, and the pod's reply leaves node 2
// with the frontend as its source, straight to the client: a capture on the
// client's port of the fabric bridge sees every reply come from node 2's MAC,
// none from node 1's. The client's own address reaches the pod. A full-size
// TCP transfer goes through without PMTU discovery: the SYN-ACK's MSS was
// clamped by the overhead, and node 1 never had to send "fragmentation needed".
//
// Topology (all in namespaces of this file, prefix st-dsr-; nothing in the root namespace):
//
//   client (c)  c0 198.18.0.250/24 2001:2::250/64 ──┐
//                                                    │ br0 in the fabric namespace (f): fc, f1, f2
//   node 1 (n1) up0 198.18.0.1/24  2001:2::1/64  ────┤   routes the pod CIDR via node 2
//   node 2 (n2) up0 198.18.0.2/24  2001:2::2/64  ────┘   lxc1 198.18.18.1/24 2001:2:0:18::1/64
//   pod (p)     p0 198.18.18.10/24 2001:2:0:18::10/64, behind node 2; echo server :80 TCP, :53 UDP,
//               :30080 TCP (the NodePort: DSR keeps ports)
//   LoadBalancer VIP 198.19.0.10 / 2001:2:0:ff::a :80 TCP, :53 UDP — the client routes it to node 1
//   NodePort     198.18.0.1:30080 / [2001:2::1]:30080 TCP
//
// Then the same through two `strait agent --dsr --xdp` processes (one per node, one
// manifest directory): the Service (LoadBalancer 198.19.0.20 / 2001:2:0:ff::14, port 80 →
// targetPort 80, nodePort 30081 → 80) is compiled with LB_F_DSR on the LoadBalancer
// frontends only (`strait lb list`: dsr; the NodePort: snat, targetPort≠port), XDP is
// attached to up0 (not to lxc1), and an agent restarted without --xdp detaches it.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BE_F_LOCAL, LB_F_DSR, LB_F_REJECT_NO_ENDPOINTS, LB_KIND_LOAD_BALANCER, LB_KIND_NODE_PORT, NODE_MODE_DSR } from '../../src/bpf/abi.js';
import { Dataplane, sumMetrics } from '../../src/bpf/dataplane.js';
import { packageRoot } from '../../src/bpf/native.js';
import { XdpProgram } from '../../src/bpf/xdp.js';
import { AgentProcess, assertDistFresh, killAllAgents, straitJson } from '../lib/agent-process.js';
import { Lab, hostPort, type Proc } from '../lib/netns.js';
import { addService, metric } from '../lib/services.js';
import { parseTcpdump, tcpdumpArgs, type CapturedFrame } from '../lib/tcpdump.js';

const PREFIX = 'st-dsr-';
const ROOT = (n: 1 | 2) => `/sys/fs/bpf/strait-test-netns-dsr-n${n}`;
const EMPTY_XDP = join(packageRoot(), 'build', 'bpf', 'empty_xdp.o');
const MTU = 1500;

const CLIENT = { 4: '198.18.0.250', 6: '2001:2::250' } as const;
const NODE = { 1: { 4: '198.18.0.1', 6: '2001:2::1' }, 2: { 4: '198.18.0.2', 6: '2001:2::2' } } as const;
const POD = { 4: '198.18.18.10', 6: '2001:2:0:18::10' } as const;
const POD_GW = { 4: '198.18.18.1', 6: '2001:2:0:18::1' } as const;
const VIP = { 4: '198.19.0.10', 6: '2001:2:0:ff::a' } as const;
const NODE_PORT = 30080;

/** A metric of the maps pinned under `root` (the agent's), summed over directions. */
function pinnedMetric(root: string, reason: string): bigint {
  const maps = Dataplane.openPinned(root);
  try {
    return maps.metrics ? sumMetrics(maps.metrics).filter((m) => m.reason === reason).reduce((a, m) => a + m.packets, 0n) : 0n;
  } finally {
    for (const m of Object.values(maps)) m.close();
  }
}

describe('DSR between two node namespaces, with a client on the fabric', () => {
  let lab: Lab;
  let ns: { f: string; c: string; n1: string; n2: string; p: string };
  let dp1: Dataplane;
  let dp2: Dataplane;
  const macs: { n1: string; n2: string } = { n1: '', n2: '' };
  const servers: Proc[] = [];

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('test/netns needs root (network namespaces, BPF)');
    for (const n of [1, 2] as const) {
      Dataplane.destroy(ROOT(n));
      rmSync(ROOT(n), { recursive: true, force: true });
    }
    lab = await Lab.create(PREFIX);
    ns = {
      f: await lab.addNamespace('f'),
      c: await lab.addNamespace('c'),
      n1: await lab.addNamespace('n1'),
      n2: await lab.addNamespace('n2'),
      p: await lab.addNamespace('p'),
    };
    // fabric: a bridge and one port per host
    await lab.ipBatch(ns.f, ['link add br0 type bridge', 'link set br0 up']);
    await lab.veth(ns.f, 'fc', ns.c, 'c0', { mtu: MTU });
    await lab.veth(ns.f, 'f1', ns.n1, 'up0', { mtu: MTU });
    await lab.veth(ns.f, 'f2', ns.n2, 'up0', { mtu: MTU });
    await lab.ipBatch(ns.f, ['link set fc master br0', 'link set f1 master br0', 'link set f2 master br0']);
    await lab.veth(ns.n2, 'lxc1', ns.p, 'p0', { mtu: MTU });
    for (const [n, addrs] of [
      [ns.c, [['c0', `${CLIENT[4]}/24`], ['c0', `${CLIENT[6]}/64`]]],
      [ns.n1, [['up0', `${NODE[1][4]}/24`], ['up0', `${NODE[1][6]}/64`]]],
      [ns.n2, [['up0', `${NODE[2][4]}/24`], ['up0', `${NODE[2][6]}/64`], ['lxc1', `${POD_GW[4]}/24`], ['lxc1', `${POD_GW[6]}/64`]]],
      [ns.p, [['p0', `${POD[4]}/24`], ['p0', `${POD[6]}/64`]]],
    ] as const) {
      for (const [dev, cidr] of addrs) await lab.addr(n, dev, cidr);
    }
    // the client reaches the VIPs through node 1 (as a router announcing them would send it)
    await lab.route(ns.c, '198.19.0.0/24', { via: NODE[1][4] });
    await lab.route(ns.c, '2001:2:0:ff::/64', { via: NODE[1][6] });
    // node 1 routes the pod CIDR of node 2 to it; the pod knows the lab through node 2
    await lab.route(ns.n1, '198.18.18.0/24', { via: NODE[2][4] });
    await lab.route(ns.n1, '2001:2:0:18::/64', { via: NODE[2][6] });
    await lab.route(ns.p, '198.18.0.0/16', { via: POD_GW[4] });
    await lab.route(ns.p, '2001:2::/48', { via: POD_GW[6] });
    for (const n of [ns.n1, ns.n2]) await lab.sysctls(n, { 'net.ipv4.conf.all.forwarding': 1, 'net.ipv6.conf.all.forwarding': 1 });
    // native XDP_TX on node 1's up0 lands on f1: a veth peer needs NAPI, i.e. an XDP program
    // of its own (PITFALLS); and the client's checksums must be complete before XDP sees them
    for (const dev of ['f1', 'f2']) await lab.ip(ns.f, ['link', 'set', 'dev', dev, 'xdpdrv', 'obj', EMPTY_XDP, 'sec', 'xdp']);
    await lab.ethtool(ns.c, '-K', 'c0', 'tx', 'off');
    macs.n1 = (await lab.link(ns.n1, 'up0')).address;
    macs.n2 = (await lab.link(ns.n2, 'up0')).address;

    servers.push(await lab.startEchoServer(ns.p, { name: 'pod', tcp: 80, udp: 53 }));
    servers.push(await lab.startEchoServer(ns.p, { name: 'pod-np', tcp: NODE_PORT }));

    const sizes = { ct4: 4096, ct6: 4096, services4: 64, services6: 64, service_slots: 256, backends4: 256, backends6: 256, revnat4: 64, revnat6: 64 };
    dp1 = Dataplane.open({ bpfRoot: ROOT(1), mapSizes: sizes });
    dp2 = Dataplane.open({ bpfRoot: ROOT(2), mapSizes: sizes });
    for (const [n, dp, path] of [
      [1, dp1, lab.netnsPath(ns.n1)],
      [2, dp2, lab.netnsPath(ns.n2)],
    ] as const) {
      dp.attachTc({ ifname: 'up0', netns: path });
      dp.maps.config.update(0, {
        addr4: NODE[n][4],
        addr6: NODE[n][6],
        uplinkIfindex: [await lab.ifindex(n === 1 ? ns.n1 : ns.n2, 'up0'), 0, 0, 0],
        modes: NODE_MODE_DSR,
        nodeportMin: 30000,
        nodeportMax: 32767,
        snatPortMin: 61000,
        snatPortMax: 65535,
      });
    }
    const flags = LB_F_REJECT_NO_ENDPOINTS | LB_F_DSR;
    for (const f of [4, 6] as const) {
      for (const [dp, local] of [
        [dp1, 0],
        [dp2, BE_F_LOCAL],
      ] as const) {
        const n = dp === dp1 ? 1 : 2;
        const be = (id: number, port: number) => ({ id: f * 10 + id, addr: POD[f], port, flags: local });
        addService(dp, { id: f * 10 + 1, vip: VIP[f], port: 80, proto: 'tcp', kind: LB_KIND_LOAD_BALANCER, flags, backends: [be(1, 80)] });
        addService(dp, { id: f * 10 + 2, vip: VIP[f], port: 53, proto: 'udp', kind: LB_KIND_LOAD_BALANCER, flags, backends: [be(2, 53)] });
        addService(dp, { id: f * 10 + 3, vip: NODE[n][f], port: NODE_PORT, proto: 'tcp', kind: LB_KIND_NODE_PORT, flags, backends: [be(3, NODE_PORT)] });
      }
    }
  });

  afterAll(async () => {
    try {
      dp1?.close();
      dp2?.close();
      for (const n of [1, 2] as const) Dataplane.destroy(ROOT(n));
    } finally {
      await lab?.destroy();
    }
  });

  /** Runs `fn` with tcpdump on the client's port of the bridge; returns what it captured. */
  async function captureClientPort<T>(fn: () => Promise<T>): Promise<{ result: T; frames: CapturedFrame[] }> {
    const dump = lab.spawn(ns.f, 'tcpdump', tcpdumpArgs('fc'), { label: 'tcpdump fc' });
    for (let i = 0; i < 100 && !dump.stderr.includes('listening on'); i++) await new Promise((r) => setTimeout(r, 50));
    if (!dump.stderr.includes('listening on')) throw new Error(`tcpdump did not start: ${dump.stderr}`);
    let result: T;
    try {
      result = await fn();
    } finally {
      await new Promise((r) => setTimeout(r, 200)); // the last replies reach the capture
      await dump.kill(2000);
    }
    return { result, frames: parseTcpdump(dump.stdout) };
  }

  /** Replies to the client from `from` (a frontend): all from node 2's MAC, none from node 1's. */
  function expectRepliesFromNode2(frames: CapturedFrame[], from: string, port: number): CapturedFrame[] {
    const replies = frames.filter((c) => c.src === from && c.sport === port);
    expect(replies.length, `replies from ${from}:${port} captured`).toBeGreaterThan(0);
    for (const r of replies) expect(r.srcMac, `${r.src}.${r.sport} > ${r.dst}.${r.dport} ${r.rest}`).toBe(macs.n2);
    expect(frames.filter((c) => c.srcMac === macs.n1 && (c.src === from || c.src === POD[4] || c.src === POD[6]))).toEqual([]);
    return replies;
  }

  for (const mode of ['tc', 'xdp'] as const) {
    describe(`${mode === 'xdp' ? 'XDP on' : 'XDP off'} (the entry node encapsulates in ${mode})`, () => {
      beforeAll(() => {
        for (const [n, dp] of [
          [1, dp1],
          [2, dp2],
        ] as const) {
          const netns = lab.netnsPath(n === 1 ? ns.n1 : ns.n2);
          if (mode === 'xdp') {
            const xdp = XdpProgram.open({ dataplane: dp });
            try {
              const a = xdp.attach({ ifname: 'up0', netns, mode: 'native' });
              expect(a.mode).toBe('native');
            } finally {
              xdp.close(); // the pinned link keeps it attached
            }
            expect(XdpProgram.query({ ifname: 'up0', netns })).toMatchObject({ mode: 'native' });
          } else {
            XdpProgram.detach(dp.bpfRoot, { ifname: 'up0', netns });
            expect(XdpProgram.query({ ifname: 'up0', netns }).progId).toBe(0);
          }
          dp.maps.ct4.clear();
          dp.maps.ct6.clear();
        }
      });

      it.each([4, 6] as const)('IPv%i TCP to the LoadBalancer VIP: the pod sees the client, the replies come from node 2 with the VIP as source', async (f) => {
        const xdpBefore = metric(dp1, 'xdp_dsr_encap');
        const { result, frames } = await captureClientPort(() => lab.echoClient(ns.c, 'tcp', hostPort(VIP[f], 80), { count: 5, timeoutMs: 3000 }));
        expect(result.errors).toEqual([]);
        expect(result.ok).toBe(5);
        for (const r of result.replies) {
          expect(r.pod).toBe('pod');
          expect(r.client.startsWith(f === 4 ? `${CLIENT[4]}:` : `[${CLIENT[6]}]:`), `client address kept: ${r.client}`).toBe(true);
          expect(r.from).toBe(hostPort(VIP[f], 80));
        }
        expectRepliesFromNode2(frames, VIP[f], 80);
        expect(metric(dp2, 'dsr_decap')).toBeGreaterThan(0n);
        expect(metric(dp2, 'dsr_revnat', 'egress')).toBeGreaterThan(0n);
        const byXdp = metric(dp1, 'xdp_dsr_encap') - xdpBefore;
        if (mode === 'xdp') expect(byXdp, 'packets XDP encapsulated').toBeGreaterThan(0n);
        else expect(byXdp).toBe(0n);
      });

      it.each([4, 6] as const)('IPv%i UDP to the VIP: every reply from VIP:53, sent by node 2', async (f) => {
        const { result, frames } = await captureClientPort(() => lab.echoClient(ns.c, 'udp', hostPort(VIP[f], 53), { count: 5, timeoutMs: 3000 }));
        expect(result.errors).toEqual([]);
        for (const r of result.replies) expect(r.from).toBe(hostPort(VIP[f], 53));
        expectRepliesFromNode2(frames, VIP[f], 53);
      });

      it.each([4, 6] as const)("IPv%i TCP to node 1's NodePort: answered by node 2 from node 1's address", async (f) => {
        const { result, frames } = await captureClientPort(() => lab.echoClient(ns.c, 'tcp', hostPort(NODE[1][f], NODE_PORT), { count: 3, timeoutMs: 3000 }));
        expect(result.errors).toEqual([]);
        for (const r of result.replies) expect(r.pod).toBe('pod-np');
        expectRepliesFromNode2(frames, NODE[1][f], NODE_PORT);
      });

      it.each([4, 6] as const)('IPv%i: a full-size TCP transfer: clamped MSS in the SYN-ACK, no fragmentation needed', async (f) => {
        const tooBig = metric(dp1, 'frag_needed_reply');
        const size = 256 * 1024;
        const { result, frames } = await captureClientPort(() =>
          lab.echoClient(ns.c, 'tcp', hostPort(VIP[f], 80), { count: 2, size, timeoutMs: 10_000 }),
        );
        expect(result.errors).toEqual([]);
        for (const r of result.replies) expect(r.bytes).toBe(size);
        const synAcks = frames.filter((c) => c.src === VIP[f] && c.rest.startsWith('Flags [S.]'));
        expect(synAcks.length).toBeGreaterThan(0);
        const clamp = MTU - (f === 4 ? 20 : 40) - (f === 4 ? 20 : 40) - 20;
        for (const s of synAcks) expect(s.rest, 'MSS announced to the client').toContain(`mss ${clamp},`);
        // the client's segments were as large as the tunnel allows, and fit: no ICMP needed
        const fromClient = frames.filter((c) => c.src === CLIENT[f] && c.dport === 80);
        const largest = Math.max(...fromClient.map((c) => c.length - 14));
        expect(largest, 'largest IP packet the client sent').toBe(MTU - (f === 4 ? 20 : 40));
        expect(metric(dp1, 'frag_needed_reply') - tooBig).toBe(0n);
      });
    });
  }
  describe('through strait agent --dsr --xdp, one per node', () => {
    const AGENT_ROOT = (n: 1 | 2) => `/sys/fs/bpf/strait-test-netns-dsr-agent${n}`;
    const LB = { 4: '198.19.0.20', 6: '2001:2:0:ff::14' } as const;
    let tmp = '';
    const agents: AgentProcess[] = [];

    const agentArgs = (n: 1 | 2, extra: string[]) => [
      '--manifests', join(tmp, 'manifests'),
      '--node-name', `n${n}`,
      '--node-ip', `${NODE[n][4]},${NODE[n][6]}`,
      '--bpf-root', AGENT_ROOT(n),
      '--state-dir', join(tmp, `state${n}`),
      '--devices', 'up0,lxc*',
      '--devices-netns', lab.netnsPath(n === 1 ? ns.n1 : ns.n2),
      '--metrics-addr', '',
      '--healthz-addr', '',
      '--min-sync-period', '100ms',
      '--dsr',
      ...extra,
    ];

    beforeAll(async () => {
      assertDistFresh();
      // the maps-only dataplanes above give the devices up to the agents
      dp1.close();
      dp2.close();
      for (const n of [1, 2] as const) {
        Dataplane.destroy(ROOT(n));
        Dataplane.destroy(AGENT_ROOT(n));
      }
      tmp = mkdtempSync(join(tmpdir(), 'strait-dsr-agent-'));
      for (const d of ['manifests', 'state1', 'state2']) mkdirSync(join(tmp, d));
      const service = {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'web', namespace: 'dsr' },
        spec: {
          type: 'LoadBalancer',
          clusterIPs: ['198.19.1.20', '2001:2:0:ff::1:14'],
          ipFamilies: ['IPv4', 'IPv6'],
          ipFamilyPolicy: 'RequireDualStack',
          ports: [{ name: 'http', port: 80, targetPort: 80, nodePort: 30081, protocol: 'TCP' }],
        },
        status: { loadBalancer: { ingress: [{ ip: LB[4] }, { ip: LB[6] }] } },
      };
      const slices = (['IPv4', 'IPv6'] as const).map((family) => ({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: `web-${family}`.toLowerCase(), namespace: 'dsr', labels: { 'kubernetes.io/service-name': 'web' } },
        addressType: family,
        ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
        endpoints: [{ addresses: [family === 'IPv4' ? POD[4] : POD[6]], conditions: { ready: true }, nodeName: 'n2' }],
      }));
      writeFileSync(join(tmp, 'manifests', 'web.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [service, ...slices] }));
      for (const n of [1, 2] as const) {
        const a = AgentProcess.start(agentArgs(n, ['--xdp', '--xdp-mode', 'native']), { label: `strait agent n${n}` });
        agents.push(a);
        await a.waitForSync({ timeoutMs: 30_000, where: (l) => Number(l['frontends']) > 0 });
      }
    });

    afterAll(async () => {
      try {
        await killAllAgents();
      } finally {
        for (const n of [1, 2] as const) Dataplane.destroy(AGENT_ROOT(n));
        if (tmp !== '') rmSync(tmp, { recursive: true, force: true });
      }
    });

    it('strait lb list: dsr on the LoadBalancer frontends, the NodePort stays SNAT and says why', async () => {
      const lb = await straitJson<{ frontends: { frontend: string; kind: string; remote: string; remoteWhy: string | null }[] }>([
        'lb', 'list', '--bpf-root', AGENT_ROOT(1), '--state-dir', join(tmp, 'state1'),
      ]);
      const by = new Map(lb.frontends.map((f) => [f.frontend, f]));
      expect(by.get(`${LB[4]}:80/TCP`)).toMatchObject({ remote: 'dsr', remoteWhy: null });
      expect(by.get(`[${LB[6]}]:80/TCP`)).toMatchObject({ remote: 'dsr', remoteWhy: null });
      expect(by.get(`${NODE[1][4]}:30081/TCP`)).toMatchObject({ remote: 'snat', remoteWhy: 'targetPort≠port' });
    });

    it('XDP is on the uplink only, the node modes are set', () => {
      for (const [n, nsName] of [
        [1, ns.n1],
        [2, ns.n2],
      ] as const) {
        expect(XdpProgram.query({ ifname: 'up0', netns: lab.netnsPath(nsName) }).mode).toBe('native');
        const maps = Dataplane.openPinned(AGENT_ROOT(n));
        try {
          expect(maps.config?.lookup(0)?.modes).toBe(NODE_MODE_DSR | 4 /* NODE_MODE_XDP */);
        } finally {
          for (const m of Object.values(maps)) m.close();
        }
      }
      expect(XdpProgram.query({ ifname: 'lxc1', netns: lab.netnsPath(ns.n2) }).progId).toBe(0);
    });

    it.each([4, 6] as const)('IPv%i: the LoadBalancer through the agents: client address kept, replies from node 2, XDP did the work', async (f) => {
      const before = pinnedMetric(AGENT_ROOT(1), 'xdp_dsr_encap');
      const { result, frames } = await captureClientPort(() => lab.echoClient(ns.c, 'tcp', hostPort(LB[f], 80), { count: 5, timeoutMs: 3000 }));
      expect(result.errors).toEqual([]);
      for (const r of result.replies) {
        expect(r.pod).toBe('pod');
        expect(r.client.startsWith(f === 4 ? `${CLIENT[4]}:` : `[${CLIENT[6]}]:`), r.client).toBe(true);
      }
      expectRepliesFromNode2(frames, LB[f], 80);
      expect(pinnedMetric(AGENT_ROOT(1), 'xdp_dsr_encap') - before).toBeGreaterThan(0n);
    });

    it('an agent restarted without --xdp detaches it; DSR goes on in tc', async () => {
      const first = agents[0]!;
      await first.kill('SIGTERM');
      const again = AgentProcess.start(agentArgs(1, []), { label: 'strait agent n1 (no --xdp)' });
      agents[0] = again;
      await again.waitForSync({ timeoutMs: 30_000 });
      expect(XdpProgram.query({ ifname: 'up0', netns: lab.netnsPath(ns.n1) }).progId).toBe(0);
      const before = pinnedMetric(AGENT_ROOT(1), 'dsr_encap');
      const { result, frames } = await captureClientPort(() => lab.echoClient(ns.c, 'tcp', hostPort(LB[4], 80), { count: 3, timeoutMs: 3000 }));
      expect(result.errors).toEqual([]);
      expectRepliesFromNode2(frames, LB[4], 80);
      expect(pinnedMetric(AGENT_ROOT(1), 'dsr_encap') - before).toBeGreaterThan(0n);
    });
  });
});
