// Socket LB with real sockets: strait_sock.o's cgroup programs attached to a
// cgroup v2 directory this file creates (<cgroup2 mount>/strait-test-sock-<pid>,
// never the machine's root), clients that join it before opening sockets
// (echo-client --cgroup), and echo servers in backend namespaces. Needs root:
// fails (never skips) without.
//
// Address plan (test/lib/netns.ts):
//   client c          198.18.0.2 / 2001:2::2 on c0, routes the lab ranges via the node
//   node n            up0 198.18.0.1 / 2001:2::1; bkI 198.18.(10+I).1 / 2001:2:0:(10+I)::1;
//                     no route for the VIP ranges: only a translation makes a VIP reachable
//   backend (pod) bI  198.18.(10+I).2 / 2001:2:0:(10+I)::2, echo server TCP 8080, UDP 5353
//   VIPs              198.19.0.N / 2001:2:0:ff::N (port 80 TCP, 53 UDP)
// "A pod" is a backend namespace (b1) running a client; "the host" is the node
// namespace — the node's own processes in this lab — running a client in the
// test cgroup (the machine's root namespace has no route into the lab, and this
// file adds none).
import { rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BE_STATE_QUARANTINED,
  LB_F_AFFINITY,
  LB_F_REJECT_NO_ENDPOINTS,
  LB_F_TWO_SCOPES,
  LB_SCOPE_EXTERNAL,
  LB_SCOPE_INTERNAL,
} from '../../src/bpf/abi.js';
import { Dataplane } from '../../src/bpf/dataplane.js';
import { MapType, mapInfo } from '../../src/bpf/map.js';
import { loadNative } from '../../src/bpf/native.js';
import { SocketLb, cgroupNetnsPaths } from '../../src/bpf/socket-lb.js';
import { TestCgroup } from '../lib/cgroup.js';
import { hostPort, topology, type EchoMode, type EchoSummary, type Proc, type Topology } from '../lib/netns.js';
import { addService, metric, setBackends, writeBackend, type BackendSpec, type ServiceSpec } from '../lib/services.js';

const PREFIX = 'st-sock-';
const BPF_ROOT = '/sys/fs/bpf/strait-test-netns-sock';
const TCP_PORT = 8080;
const UDP_PORT = 5353;
const BACKENDS = 3;
const PODS = ['pod1', 'pod2', 'pod3'];

type Family = 'IPv4' | 'IPv6' | 'IPv4-mapped';
const FAMILIES: Family[] = ['IPv4', 'IPv6', 'IPv4-mapped'];

/** 'a.b.c.d:p' / '[v6]:p' → the address. */
function addrOf(hp: string): string {
  const m = /^\[(.*)\]:\d+$/.exec(hp) ?? /^(.*):\d+$/.exec(hp);
  if (!m) throw new Error(`not ADDR:PORT: ${hp}`);
  return m[1] as string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('socket LB (cgroup connect/sendmsg/recvmsg/getpeername) with real sockets', () => {
  let topo: Topology;
  let dp: Dataplane;
  let sock: SocketLb;
  let cgroup: TestCgroup;
  const servers: Proc[] = [];
  let nextId = 1;

  /** The backends of one Service: every pod on TCP_PORT or UDP_PORT, fresh ids. */
  const backendsOf = (v6: boolean, proto: 'tcp' | 'udp'): BackendSpec[] =>
    topo.backends.map((b) => ({ id: 1000 + nextId++, addr: v6 ? b.addr6 : b.addr4, port: proto === 'tcp' ? TCP_PORT : UDP_PORT }));

  /** A Service on VIP number n of the family; mapped clients use the IPv4 Service. */
  const service = (family: Family, n: number, proto: 'tcp' | 'udp', backends?: BackendSpec[]): { svc: ServiceSpec; to: string } => {
    const v6 = family === 'IPv6';
    const vip = v6 ? topo.vip6(n) : topo.vip4(n);
    const port = proto === 'tcp' ? 80 : 53;
    const svc = addService(dp, { id: nextId++, vip, port, proto, backends: backends ?? backendsOf(v6, proto) });
    const to = family === 'IPv4-mapped' ? `[::ffff:${vip}]:${port}` : hostPort(vip, port);
    return { svc, to };
  };

  /** The VIP:port as the client prints it (mapped addresses are shown as IPv4). */
  const shown = (svc: ServiceSpec): string => hostPort(svc.vip, svc.port);

  const inCgroup = (ns: string, mode: EchoMode, to: string, spec: Parameters<Topology['lab']['echoClient']>[3] = {}): Promise<EchoSummary> =>
    topo.lab.echoClient(ns, mode, to, { timeoutMs: 3000, ...spec, cgroup: cgroup.reachablePath });

  /** Connected UDP sockets in a namespace, from `ss -u -e state established`: cookie and peer. */
  async function connectedUdp(ns: string): Promise<{ cookie: bigint; peer: string; peerPort: number }[]> {
    const r = await topo.lab.exec(ns, 'ss', ['-u', '-n', '-e', '-H', 'state', 'established'], { check: true });
    const out = [];
    for (const line of r.stdout.split('\n')) {
      // Recv-Q Send-Q Local Peer … sk:<cookie hex> …
      const f = line.trim().split(/\s+/);
      const peer = f[3];
      const sk = f.find((x) => x.startsWith('sk:'));
      if (peer === undefined || sk === undefined) continue;
      const m = /^\[?(.*?)\]?:(\d+)$/.exec(peer);
      if (!m) continue;
      out.push({ cookie: BigInt(`0x${sk.slice(3)}`), peer: (m[1] as string).replace(/^::ffff:/, ''), peerPort: Number(m[2]) });
    }
    return out;
  }

  /** Waits for the n-th connected UDP socket in ns to appear and returns it (the newest by cookie). */
  async function waitForConnectedUdp(ns: string, n: number): Promise<{ cookie: bigint; peer: string; peerPort: number }> {
    for (let i = 0; i < 100; i++) {
      const socks = await connectedUdp(ns);
      if (socks.length >= n) return socks.sort((a, b) => (a.cookie < b.cookie ? -1 : 1))[n - 1]!;
      await sleep(50);
    }
    throw new Error(`no ${n} connected UDP sockets in ${ns}`);
  }

  const pod = (): { ns: string; addr: (family: Family) => string } => {
    const b = topo.backends[0]!;
    return { ns: b.ns, addr: (f) => (f === 'IPv6' ? b.addr6 : b.addr4) };
  };

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('test/netns needs root (network namespaces, BPF, cgroups)');
    Dataplane.destroy(BPF_ROOT);
    rmSync(BPF_ROOT, { recursive: true, force: true });
    cgroup = TestCgroup.create('strait-test-sock-');
    topo = await topology(PREFIX, { backends: BACKENDS });
    dp = Dataplane.open({
      bpfRoot: BPF_ROOT,
      mapSizes: {
        ct4: 65536,
        ct6: 65536,
        services4: 1024,
        services6: 1024,
        service_slots: 4096,
        backends4: 4096,
        backends6: 4096,
        sock_revnat4: 16384,
        sock_revnat6: 16384,
      },
    });
    sock = SocketLb.open({ dataplane: dp });
    const attached = sock.attach(cgroup.path);
    expect(attached.map((a) => a.hook)).toHaveLength(8);
    // tc on the uplink too: traffic of clients outside the cgroup takes the per-packet path
    dp.attachTc({ ifname: topo.uplink, netns: topo.netnsPath(topo.nsNode) });
    for (const b of topo.backends) {
      servers.push(await topo.lab.startEchoServer(b.ns, { name: `pod${b.index}`, tcp: TCP_PORT, udp: UDP_PORT }));
    }
  });

  afterAll(async () => {
    try {
      sock?.close();
      if (dp) {
        dp.close();
        Dataplane.destroy(BPF_ROOT); // unpins the cgroup links too: detached
      }
    } finally {
      try {
        await topo?.destroy();
      } finally {
        cgroup?.destroy();
      }
    }
  });

  it('loads next to the tc object on the same pinned maps and attaches every hook to the test cgroup', () => {
    expect(SocketLb.attachedHooks(BPF_ROOT).sort()).toEqual(
      ['connect4', 'connect6', 'getpeername4', 'getpeername6', 'recvmsg4', 'recvmsg6', 'sendmsg4', 'sendmsg6'],
    );
    expect(sock.destroyUnavailable).toBeUndefined();
    // a second attach to the same cgroup swaps the programs in place
    const again = sock.attach(cgroup.path);
    expect(again.every((a) => a.updated && !a.replaced)).toBe(true);
  });

  describe('TCP through the VIP', () => {
    it.each(FAMILIES)('%s from a pod: every backend, getpeername() = VIP:port, the server sees the pod', async (family) => {
      const { svc, to } = service(family, 1, 'tcp');
      const res = await inCgroup(pod().ns, 'tcp', to, { count: 60, parallel: 6 });
      expect(res.errors).toEqual([]);
      expect(Object.keys(res.byPod).sort()).toEqual(PODS);
      for (const r of res.replies) {
        expect(r.from).toBe(shown(svc)); // remoteAddress: getpeername() of the socket
        expect(addrOf(r.client)).toBe(pod().addr(family)); // no SNAT: the pod's own address
      }
    });

    it.each(['IPv4', 'IPv6'] as const)('%s from the host (the node namespace, which has no route to the VIPs)', async (family) => {
      const { svc, to } = service(family, 2, 'tcp');
      const res = await inCgroup(topo.nsNode, 'tcp', to, { count: 30, parallel: 6 });
      expect(res.errors).toEqual([]);
      expect(Object.keys(res.byPod).sort()).toEqual(PODS);
      for (const r of res.replies) {
        expect(r.from).toBe(shown(svc));
        const b = topo.backends[Number(r.pod.slice(3)) - 1]!;
        expect(addrOf(r.client)).toBe(family === 'IPv6' ? b.gw6 : b.gw4); // the node's address on that link
      }
      // the same process outside the cgroup is not translated: the VIP is unreachable from the node
      const plain = await topo.lab.echoClient(topo.nsNode, 'tcp', to, { count: 1, timeoutMs: 1000 });
      expect(plain.ok).toBe(0);
    });
  });

  describe('UDP through the VIP: replies come from VIP:port', () => {
    it.each(FAMILIES)('%s unconnected (sendto/recvfrom, per datagram)', async (family) => {
      const { svc, to } = service(family, 3, 'udp');
      const res = await inCgroup(pod().ns, 'udp', to, { count: 60, parallel: 6 });
      expect(res.errors).toEqual([]);
      expect(Object.keys(res.byPod).sort()).toEqual(PODS);
      for (const r of res.replies) {
        expect(r.from).toBe(shown(svc)); // recvmsg restored the source
        expect(addrOf(r.client)).toBe(pod().addr(family));
      }
    });

    it.each(FAMILIES)('%s connected (translated at connect)', async (family) => {
      const { svc, to } = service(family, 4, 'udp');
      const res = await inCgroup(pod().ns, 'udp-connected', to, { count: 60, parallel: 6 });
      expect(res.errors).toEqual([]);
      expect(Object.keys(res.byPod).sort()).toEqual(PODS);
      for (const r of res.replies) {
        expect(r.from).toBe(shown(svc));
        expect(addrOf(r.client)).toBe(pod().addr(family));
      }
    });

    it.each(FAMILIES)('%s one unconnected socket, many datagrams: one backend, every reply from VIP:port', async (family) => {
      const { svc, to } = service(family, 5, 'udp');
      const res = await inCgroup(pod().ns, 'udp', to, { count: 20, reuse: true });
      expect(res.errors).toEqual([]);
      expect(Object.keys(res.byPod)).toHaveLength(1);
      for (const r of res.replies) expect(r.from).toBe(shown(svc));
    });
  });

  describe('a Service without endpoints', () => {
    it.each(FAMILIES)('%s: connect() and sendto() fail at once with ECONNREFUSED', async (family) => {
      const tcp = service(family, 6, 'tcp', []);
      const udp = service(family, 6, 'udp', []);
      for (const [mode, to] of [
        ['tcp', tcp.to],
        ['udp', udp.to],
        ['udp-connected', udp.to],
      ] as const) {
        const res = await inCgroup(pod().ns, mode, to, { count: 3, timeoutMs: 5000 });
        expect(res.byCode, `${mode} ${to}`).toEqual({ ECONNREFUSED: 3 });
        for (const e of res.errors) expect(e.ms, `${mode} ${to}`).toBeLessThan(500);
      }
    });
  });

  describe('backend removed', () => {
    it('TCP: new connections avoid it, open connections to the others carry on', async () => {
      let { svc, to } = service('IPv4', 7, 'tcp');
      const longLived = Array.from({ length: 8 }, () => inCgroup(pod().ns, 'tcp', to, { count: 30, reuse: true, intervalMs: 100 }));
      await sleep(1000);
      const removed = svc.backends[2]!; // pod3
      svc = setBackends(dp, svc, svc.backends.slice(0, 2));
      writeBackend(dp, 'tcp', { ...removed, state: BE_STATE_QUARANTINED });
      const fresh = await inCgroup(pod().ns, 'tcp', to, { count: 60, parallel: 6 });
      expect(fresh.errors).toEqual([]);
      expect(Object.keys(fresh.byPod).sort()).toEqual(['pod1', 'pod2']);
      const old = await Promise.all(longLived);
      const onRemaining = old.filter((s) => s.replies[0]?.pod !== 'pod3');
      expect(onRemaining.length).toBeGreaterThan(0);
      for (const s of onRemaining) {
        expect(s.errors).toEqual([]);
        expect(s.ok).toBe(30);
        expect(Object.keys(s.byPod)).toHaveLength(1); // one connection, one backend, start to end
      }
    });

    it.each(FAMILIES)('%s connected UDP: the socket of the removed backend is destroyed and its next send reaches a live one', async (family) => {
      const v6 = family === 'IPv6';
      const { svc, to } = service(family, 8, 'udp');
      // A second Service on the same pods, own backend ids: its socket must live on.
      const other = service(family, 9, 'udp');
      const client = inCgroup(pod().ns, 'udp-connected', to, { count: 40, reuse: true, intervalMs: 100, reconnect: true });
      // the client's socket, as the kernel shows it: connected to the backend it got
      const mine = await waitForConnectedUdp(pod().ns, 1);
      const bystander = inCgroup(pod().ns, 'udp-connected', other.to, { count: 40, reuse: true, intervalMs: 100, reconnect: true });
      await waitForConnectedUdp(pod().ns, 2);
      await sleep(500);

      // its backend leaves: out of the slots and deleted (what the agent does for UDP)
      const gone = svc.backends.find((b) => b.addr === mine.peer && b.port === mine.peerPort);
      expect(gone, `socket peer ${mine.peer}:${mine.peerPort} is no backend of ${svc.vip}`).toBeDefined();
      setBackends(dp, svc, svc.backends.filter((b) => b !== gone));
      (v6 ? dp.maps.backends6 : dp.maps.backends4).delete(gone!.id);
      const result = sock.destroyStaleUdpSockets(cgroupNetnsPaths(cgroup.path));
      expect(result.errors).toEqual([]);
      expect(result.cookies).toEqual([mine.cookie]); // that socket, and no other

      const res = await client;
      expect(res.errors).toEqual([]); // no timeout: no request went into the void
      expect(res.reconnects).toBe(1);
      const goneName = `pod${topo.backends.findIndex((b) => b.addr4 === gone!.addr || b.addr6 === gone!.addr) + 1}`;
      const pods = res.replies.map((r) => r.pod);
      const firstElsewhere = pods.findIndex((p) => p !== goneName);
      expect(firstElsewhere).toBeGreaterThan(0); // it started on the removed backend …
      expect(pods.slice(firstElsewhere).every((p) => p !== goneName)).toBe(true); // … and left it for good
      for (const r of res.replies) expect(r.from).toBe(shown(svc));

      const b = await bystander;
      expect(b.errors).toEqual([]);
      expect(b.reconnects).toBe(0);
      expect(Object.keys(b.byPod)).toHaveLength(1);
    });
  });

  describe('sessionAffinity: ClientIP, keyed on the client netns', () => {
    /** A Service of `service()` with LB_F_AFFINITY and a timeout of `timeout` seconds. */
    const affine = (family: Family, n: number, proto: 'tcp' | 'udp', timeout = 600): { svc: ServiceSpec; to: string } => {
      const made = service(family, n, proto);
      const svc = addService(dp, { ...made.svc, flags: LB_F_AFFINITY | LB_F_REJECT_NO_ENDPOINTS });
      const key = { addr: svc.vip, port: svc.port, proto: proto === 'tcp' ? 6 : 17, scope: LB_SCOPE_EXTERNAL };
      const services = family === 'IPv6' ? dp.maps.services6 : dp.maps.services4;
      services.update(key, { ...services.lookup(key)!, affinityTimeout: timeout });
      return { svc, to: made.to };
    };
    /** The affinity entries of a service id: [netns cookie, client, backend id]. */
    const entriesOf = (family: Family, svc: ServiceSpec): [bigint, string, number][] => {
      const map = family === 'IPv6' ? dp.maps.affinity6 : dp.maps.affinity4;
      return [...map.entries()].filter(([k]) => k.serviceId === svc.id).map(([k, v]) => [k.netnsCookie, k.client, v.backendId]);
    };

    it.each(FAMILIES)('%s TCP: every connection of a pod reaches one backend; the entry keys on its netns', async (family) => {
      const { svc, to } = affine(family, 12, 'tcp');
      const res = await inCgroup(pod().ns, 'tcp', to, { count: 40, parallel: 4 });
      expect(res.errors).toEqual([]);
      expect(Object.keys(res.byPod)).toHaveLength(1);
      for (const r of res.replies) expect(r.from).toBe(shown(svc));
      const entries = entriesOf(family, svc);
      expect(entries).toHaveLength(1);
      const [cookie, client, backendId] = entries[0]!;
      expect(cookie).not.toBe(0n);
      expect(client).toBe(family === 'IPv6' ? '::' : '0.0.0.0');
      const chosen = svc.backends.find((b) => b.id === backendId)!;
      expect(`pod${topo.backends.findIndex((b) => b.addr4 === chosen.addr || b.addr6 === chosen.addr) + 1}`).toBe(Object.keys(res.byPod)[0]);

      // another namespace (the node's own processes) has an entry of its own
      const host = await inCgroup(topo.nsNode, 'tcp', to, { count: 20, parallel: 4 });
      expect(host.errors).toEqual([]);
      expect(Object.keys(host.byPod)).toHaveLength(1);
      expect(entriesOf(family, svc)).toHaveLength(2);
    });

    it.each(FAMILIES)('%s UDP, a new unconnected socket per datagram: one backend', async (family) => {
      const { svc, to } = affine(family, 13, 'udp');
      const res = await inCgroup(pod().ns, 'udp', to, { count: 40, parallel: 4 });
      expect(res.errors).toEqual([]);
      expect(Object.keys(res.byPod)).toHaveLength(1);
      for (const r of res.replies) expect(r.from).toBe(shown(svc));
      expect(entriesOf(family, svc)).toHaveLength(1);
    });

    it("a removed backend: the pod's connections move to one other backend and stay there", async () => {
      const { svc, to } = affine('IPv4', 14, 'tcp');
      const first = await inCgroup(pod().ns, 'tcp', to, { count: 10 });
      expect(Object.keys(first.byPod)).toHaveLength(1);
      const gone = svc.backends.find((b) => b.id === entriesOf('IPv4', svc)[0]![2])!;
      setBackends(
        dp,
        svc,
        svc.backends.filter((b) => b !== gone),
      );
      dp.maps.backends4.delete(gone.id);
      const after = await inCgroup(pod().ns, 'tcp', to, { count: 20, parallel: 4 });
      expect(after.errors).toEqual([]);
      expect(Object.keys(after.byPod)).toHaveLength(1);
      expect(Object.keys(after.byPod)).not.toEqual(Object.keys(first.byPod));
    });
  });

  it('cluster traffic uses the internal scope of a Service with two', async () => {
    const vip = topo.vip4(10);
    const [b1, b2] = backendsOf(false, 'tcp');
    // external traffic → pod1 only; internal (this traffic) → pod2 only
    addService(dp, { id: 900, vip, port: 80, proto: 'tcp', backends: [b1!], flags: LB_F_TWO_SCOPES | LB_F_REJECT_NO_ENDPOINTS });
    addService(dp, { id: 901, vip, port: 80, proto: 'tcp', backends: [b2!], scope: LB_SCOPE_INTERNAL });
    const res = await inCgroup(pod().ns, 'tcp', hostPort(vip, 80), { count: 10 });
    expect(res.errors).toEqual([]);
    expect(res.byPod).toEqual({ pod2: 10 });
  });

  it('tc does not translate socket-LB flows again; outside the cgroup the per-packet path does', async () => {
    const tcp = service('IPv4', 11, 'tcp');
    const udp = service('IPv4', 11, 'udp');
    const dnat0 = metric(dp, 'service_dnat', 'ingress');
    const pass0 = metric(dp, 'pass', 'ingress');
    const xlate0 = metric(dp, 'sock_xlate', 'egress');
    // the client namespace, whose packets cross the uplink where tc is attached
    const a = await inCgroup(topo.nsClient, 'tcp', tcp.to, { count: 20, parallel: 4 });
    const b = await inCgroup(topo.nsClient, 'udp', udp.to, { count: 20, parallel: 4 });
    expect(a.errors).toEqual([]);
    expect(b.errors).toEqual([]);
    for (const r of [...a.replies, ...b.replies]) expect(addrOf(r.client)).toBe(topo.client.addr4);
    expect(metric(dp, 'service_dnat', 'ingress')).toBe(dnat0); // tc saw backend addresses only
    expect(metric(dp, 'pass', 'ingress') - pass0).toBeGreaterThan(0n); // … and passed them
    expect(metric(dp, 'sock_xlate', 'egress') - xlate0).toBeGreaterThanOrEqual(40n);

    // not in the cgroup: no socket translation, tc does the DNAT
    const c = await topo.lab.echoClient(topo.nsClient, 'tcp', tcp.to, { count: 10, timeoutMs: 3000 });
    expect(c.errors).toEqual([]);
    for (const r of c.replies) expect(r.from).toBe(shown(tcp.svc));
    expect(metric(dp, 'service_dnat', 'ingress') - dnat0).toBeGreaterThanOrEqual(10n);
  });

  it('an agent of another version: a sock_peer pin of another layout is replaced, the shared maps are adopted', () => {
    const native = loadNative();
    const pin = join(BPF_ROOT, 'sock_peer');
    unlinkSync(pin);
    const fd = native.strait_map_create_btf(null, MapType.hash, 'sock_peer', '', '', 4, 8, 16, 0);
    expect(fd).toBeGreaterThanOrEqual(0);
    expect(native.bpf_obj_pin(fd, pin)).toBe(0);
    native.close(fd);
    const again = SocketLb.open({ dataplane: dp });
    try {
      const pinned = native.bpf_obj_get(pin);
      expect(mapInfo(pinned, native).type).toBe(MapType.skStorage);
      native.close(pinned);
      expect(again.attach(cgroup.path).every((a) => a.updated)).toBe(true);
    } finally {
      sock.close();
      sock = again;
    }
  });

  it('counts translations and reverse translations', () => {
    expect(metric(dp, 'sock_xlate', 'egress')).toBeGreaterThan(0n);
    expect(metric(dp, 'sock_revnat', 'ingress')).toBeGreaterThan(0n);
    expect(metric(dp, 'drop_no_endpoints', 'egress')).toBeGreaterThan(0n);
  });
});
