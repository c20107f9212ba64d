// Proves the namespace harness and the echo server/client without any BPF: plain routing
// through the node namespace, client addresses preserved, fragmented UDP reassembled, and a
// teardown that leaves nothing behind. Needs root: fails (does not skip) otherwise.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, hostPort, isLabAddress, listNamespaces, topology } from '../lib/netns.js';
import type { Proc, Topology } from '../lib/netns.js';

const PREFIX = 'st-hn-';
const TCP = 7000;
const UDP = 7001;
const HTTP = 7080;

describe('netns harness', () => {
  let topo: Topology;
  const servers: Proc[] = [];

  beforeAll(async () => {
    if (process.getuid?.() !== 0) {
      throw new Error('test/netns needs root: the harness creates network namespaces (run as root)');
    }
    topo = await topology(PREFIX, { backends: 2, uplinkMtu: 1500, backendMtu: 1500 });
    console.log(`topology with 2 backends up in ${topo.setupMs} ms`);
    for (const b of topo.backends) {
      servers.push(await topo.lab.startEchoServer(b.ns, { name: `pod${b.index}`, tcp: TCP, udp: UDP, http: HTTP }));
    }
  });

  afterAll(async () => {
    await topo?.destroy();
  });

  it('builds the documented topology without default routes', async () => {
    expect(topo.nsClient).toBe('st-hn-c');
    expect(topo.nsNode).toBe('st-hn-n');
    expect(topo.backends.map((b) => b.ns)).toEqual(['st-hn-b1', 'st-hn-b2']);
    const names = await listNamespaces();
    for (const ns of topo.lab.namespaces) expect(names).toContain(ns);
    for (const ns of topo.lab.namespaces) {
      for (const fam of ['-4', '-6']) {
        const routes = await topo.lab.exec(ns, 'ip', [fam, 'route', 'show', 'default'], { check: true });
        expect(routes.stdout.trim(), `${ns} ${fam} default route`).toBe('');
      }
    }
    expect(await topo.lab.ifindex(topo.nsNode, topo.uplink)).toBeGreaterThan(1);
    expect((await topo.lab.link(topo.nsClient, 'c0')).mtu).toBe(1500);
    expect(topo.netnsPath(topo.nsNode)).toBe('/run/netns/st-hn-n');
    expect(topo.vip4(7)).toBe('198.19.0.7');
    expect(topo.vip6(10)).toBe('2001:2:0:ff::a');
    const node = await topo.lab.exec(topo.nsNode, 'sysctl', ['-n', 'net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding']);
    expect(node.stdout.split('\n').slice(0, 2)).toEqual(['1', '1']);
  });

  it('refuses addresses and routes outside the lab ranges', async () => {
    expect(isLabAddress('198.19.255.1')).toBe(true);
    expect(isLabAddress('198.20.0.1')).toBe(false);
    expect(isLabAddress('2001:2:0:ff::1')).toBe(true);
    expect(isLabAddress('2001:3::1')).toBe(false);
    // 10.0.0.1 is data only: the harness must refuse it before any command runs (no packet, no address).
    await expect(topo.lab.addr(topo.nsClient, 'c0', '10.0.0.1/24')).rejects.toThrow(/outside/);
    await expect(topo.lab.route(topo.nsClient, 'default', { via: '198.18.0.1' })).rejects.toThrow(/refusing/);
    await expect(topo.lab.route(topo.nsClient, '0.0.0.0/0', { via: '198.18.0.1' })).rejects.toThrow(/outside/);
    await expect(topo.lab.route(topo.nsClient, '2001:2::/32', { via: '2001:2::1' })).rejects.toThrow(/wider/);
    await expect(topo.lab.exec('lo-root-ns', 'true')).rejects.toThrow(/does not belong/);
  });

  for (const fam of [4, 6] as const) {
    const addrOf = (o: { addr4: string; addr6: string }): string => (fam === 4 ? o.addr4 : o.addr6);

    it(`TCP over IPv${fam}: client reaches backend 1 through the node with its own address`, async () => {
      const b = topo.backends[0]!;
      const s = await topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(addrOf(b), TCP), { count: 3, size: 100 });
      expect(s.errors).toEqual([]);
      expect(s.ok).toBe(3);
      for (const r of s.replies) {
        expect(r.pod).toBe('pod1');
        expect(r.from).toBe(hostPort(addrOf(b), TCP));
        expect(r.client).toBe(r.local); // backend sees the client's own address and port
        expect(r.client.startsWith(fam === 4 ? '198.18.0.2:' : '[2001:2::2]:')).toBe(true);
        expect(r.bytes).toBe(100);
      }
    });

    it(`UDP over IPv${fam}: client reaches backend 2, replies come from the backend address`, async () => {
      const b = topo.backends[1]!;
      for (const mode of ['udp', 'udp-connected'] as const) {
        const s = await topo.lab.echoClient(topo.nsClient, mode, hostPort(addrOf(b), UDP), { count: 3, size: 64, parallel: 3 });
        expect(s.errors, mode).toEqual([]);
        expect(s.byPod).toEqual({ pod2: 3 });
        for (const r of s.replies) {
          expect(r.from).toBe(hostPort(addrOf(b), UDP));
          expect(r.client.startsWith(fam === 4 ? '198.18.0.2:' : '[2001:2::2]:')).toBe(true);
          expect(r.client.endsWith(`:${r.local.split(':').pop()}`)).toBe(true);
          expect(r.bytes).toBe(64);
        }
      }
    });

    it(`HTTP over IPv${fam}: GET / names the pod and the client`, async () => {
      const b = topo.backends[0]!;
      const s = await topo.lab.echoClient(topo.nsClient, 'http', hostPort(addrOf(b), HTTP), { count: 2 });
      expect(s.errors).toEqual([]);
      expect(s.byPod).toEqual({ pod1: 2 });
      expect(s.replies[0]!.client.startsWith(fam === 4 ? '198.18.0.2:' : '[2001:2::2]:')).toBe(true);
    });

    it(`a 4000-byte UDP datagram crosses the 1500-MTU path whole over IPv${fam}`, async () => {
      const b = topo.backends[0]!;
      const s = await topo.lab.echoClient(topo.nsClient, 'udp', hostPort(addrOf(b), UDP), { count: 2, size: 4000, reuse: true });
      expect(s.errors).toEqual([]);
      expect(s.replies.map((r) => r.bytes)).toEqual([4000, 4000]);
      // It really was fragmented: the node forwarded fragments (no reassembly on the node).
      const stats = await topo.lab.exec(topo.nsClient, 'nstat', ['-az', fam === 4 ? 'IpFragCreates' : 'Ip6FragCreates']);
      expect(Number(/\s(\d+)\s/.exec(stats.stdout)?.[1] ?? 0)).toBeGreaterThanOrEqual(6);
    });
  }

  it('reports refused connections and timeouts with codes', async () => {
    const b = topo.backends[0]!;
    const tcp = await topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(b.addr4, 9), { timeoutMs: 1000 });
    expect(tcp.byCode).toEqual({ ECONNREFUSED: 1 });
    const udpc = await topo.lab.echoClient(topo.nsClient, 'udp-connected', hostPort(b.addr6, 9), { timeoutMs: 1000 });
    expect(udpc.byCode).toEqual({ ECONNREFUSED: 1 });
    // A VIP with no datapath: the node has no route and answers ICMP unreachable, which an
    // unconnected UDP socket never sees: a timeout.
    const vip = await topo.lab.echoClient(topo.nsClient, 'udp', hostPort(topo.vip4(1), 80), { timeoutMs: 300 });
    expect(vip.byCode).toEqual({ ETIMEDOUT: 1 });
  });

  it('stops echo servers on SIGTERM', async () => {
    const s = servers[1]!;
    const st = await s.kill();
    expect(st).toEqual({ code: 0, signal: null });
  });
});

describe('netns teardown', () => {
  it('removes every namespace, also after a failure, and cleans leftovers of a crashed run', async () => {
    if (process.getuid?.() !== 0) throw new Error('test/netns needs root');
    const prefix = 'st-ht-';
    // A "crashed run": namespaces with our prefix and a process inside, never destroyed.
    const crashed = await Lab.create(prefix);
    const ns = await crashed.addNamespace('x');
    const orphan = crashed.spawn(ns, 'sleep', ['60']);
    expect((await listNamespaces()).includes(ns)).toBe(true);

    // The next run cleans it up before setting up (and kills the process inside).
    const t = await topology(prefix, { backends: 1 });
    expect((await orphan.exited).signal).toBe('SIGKILL');
    expect(t.lab.namespaces).toEqual(['st-ht-c', 'st-ht-n', 'st-ht-b1']);
    const p = await t.lab.startEchoServer(t.backends[0]!.ns, { name: 'x', udp: UDP });
    // Failure in the middle of a test: teardown still kills spawned processes and removes all.
    await expect(t.lab.veth(t.nsNode, 'up0', t.nsClient, 'c0')).rejects.toThrow();
    await t.destroy();
    expect(p.running).toBe(false);
    const left = (await listNamespaces()).filter((n) => n.startsWith(prefix) || n.startsWith(PREFIX));
    expect(left).toEqual([]);
    // A topology that fails half way leaves nothing behind either.
    await expect(topology(prefix, { backends: 1, uplinkMtu: 70000 })).rejects.toThrow();
    expect((await listNamespaces()).filter((n) => n.startsWith(prefix))).toEqual([]);
  });
});
