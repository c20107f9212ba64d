// The node agent in cluster-less mode (`strait agent --manifests DIR`) with real
// traffic: the compiled CLI runs in the root namespace and attaches to the lab
// node's up0 (--devices-netns); a client namespace reaches echo-server pods
// through a dual-stack ClusterIP Service that exists only as YAML files in a
// temp directory. Covers: maps programmed from manifests, manifest changes
// followed, bad input reported while the rest keeps working, `kill -9` and
// restart with traffic flowing (nothing rewritten, no flow disturbed, later
// changes applied), and the agent's CLI/HTTP views. Needs root: fails, never
// skips, without it.
//
// Address plan (test/lib/netns.ts): client 198.18.0.2 / 2001:2::2; node up0
// 198.18.0.1 / 2001:2::1; backend I 198.18.(10+I).2 / 2001:2:0:(10+I)::2; VIPs
// 198.19.0.10 and 2001:2:0:ff::a (the node has no route for them: only the
// dataplane makes them reachable, otherwise it answers ICMP unreachable).
import { mkdirSync, mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { Dataplane } from '../../src/bpf/dataplane.js';
import { AgentProcess, assertDistFresh, killAllAgents, straitJson, type AgentLogLine } from '../lib/agent-process.js';
import { hostPort, topology, type EchoSummary, type Topology } from '../lib/netns.js';

const PREFIX = 'st-ag-';
const BPF_ROOT = '/sys/fs/bpf/strait-test-agent';
const NODE = 'st-ag-node';
const NS = 'lab';
const TCP_PORT = 8080;
const UDP_PORT = 5353;
const BACKENDS = 4; // pods 1–3 serve the Service at first; pod 4 joins when it is scaled
const MAP_SIZES = [
  'ct4=65536', 'ct6=65536', 'services4=1024', 'services6=1024', 'service_slots=8192', 'service_names=1024',
  'backends4=4096', 'backends6=4096', 'revnat4=1024', 'revnat6=1024', 'snat4=4096', 'snat6=4096',
];

// ---- views of `strait lb list -o json` ---------------------------------------------------------

interface FrontendJson {
  frontend: string;
  service: string | null;
  backends: { address: string; port: number; state: string }[];
  noEndpoints: string | null;
}
interface LbListJson {
  frontends: FrontendJson[];
  skipped: { service: string; reason: string; message: string }[];
  errors: { object: string; field: string; message: string }[];
}
interface CtJson {
  direction: 'service' | 'reply';
  protocol: string;
  source: string;
  destination: string;
  backendId: number;
}
interface StatusJson {
  attachments: string[];
  maps: { name: string; entries: number; maxEntries: number }[];
  metrics: { reason: string; dir: string; packets: number; bytes: number }[];
  agent: { pid: number; lastSync: string | null; source: string } | null;
}

/**
 * An ICMP error must end a connect() within this. IPv4 fails in a few ms; an IPv6 connect() here
 * fails only at the first SYN retransmission (~1 s), with the ICMPv6 error from strait's reject as
 * well as with the kernel's own "no route" error when no strait program is loaded at all (the
 * first error seems to reach the socket while connect() still holds it, which TCP keeps as a soft
 * error). Either way far below a timeout (≥ 3 s here, 127 s by default).
 */
const FAST_ERROR_MS = 1500;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  const t0 = performance.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (performance.now() - t0 > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    }
    await sleep(100);
  }
}

describe('strait agent --manifests: real traffic through a dual-stack ClusterIP', () => {
  let topo: Topology;
  let tmp = '';
  let manifests = '';
  let stateDir = '';
  let agent: AgentProcess;

  const vip4 = () => topo.vip4(10);
  const vip6 = () => topo.vip6(10);
  const pod = (i: number) => `pod${i}`;
  const pods = (...is: number[]) => is.map(pod).sort();
  const fe = (vip: string, port: number, proto: 'TCP' | 'UDP') => `${hostPort(vip, port)}/${proto}`;
  const allFrontends = () => [fe(vip4(), 80, 'TCP'), fe(vip4(), 53, 'UDP'), fe(vip6(), 80, 'TCP'), fe(vip6(), 53, 'UDP')];

  const agentArgs = (): string[] => [
    '--manifests', manifests,
    '--node-name', NODE,
    '--bpf-root', BPF_ROOT,
    '--state-dir', stateDir,
    '--devices', topo.uplink,
    '--devices-netns', topo.netnsPath(topo.nsNode),
    '--metrics-addr', '127.0.0.1:0',
    '--healthz-addr', '127.0.0.1:0',
    '--min-sync-period', '100ms',
    ...MAP_SIZES.flatMap((s) => ['--map-size', s]),
  ];

  /** Starts the agent and waits for its first sync, which must have written every entry it meant to. */
  async function startAgent(): Promise<{ agent: AgentProcess; firstSync: AgentLogLine }> {
    const a = AgentProcess.start(agentArgs(), { label: 'strait agent (st-ag)' });
    const firstSync = await a.waitForLog((l) => l.msg === 'sync', { timeoutMs: 30_000, what: 'first sync' });
    expect(firstSync['failures'], a.tail()).toBe(0);
    return { agent: a, firstSync };
  }

  // ---- manifests ----

  /** Writes a manifest atomically (a dot-file is never read; rename swaps it in). */
  function writeManifest(name: string, docs: readonly unknown[] | string): void {
    const text = typeof docs === 'string' ? docs : docs.map((d) => stringify(d)).join('---\n');
    const tmpFile = join(manifests, `.${name}.tmp`);
    writeFileSync(tmpFile, text);
    renameSync(tmpFile, join(manifests, name));
  }
  const removeManifest = (name: string) => unlinkSync(join(manifests, name));

  const service = (name: string, clusterIPs: string[]) => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: NS },
    spec: {
      type: 'ClusterIP',
      clusterIP: clusterIPs[0],
      clusterIPs,
      ipFamilies: ['IPv4', 'IPv6'],
      ipFamilyPolicy: 'RequireDualStack',
      ports: [
        { name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' },
        { name: 'dns', port: 53, targetPort: UDP_PORT, protocol: 'UDP' },
      ],
    },
  });

  /** One EndpointSlice per family naming pods `members` (index → ready). */
  const slices = (members: ReadonlyMap<number, boolean>) =>
    (['IPv4', 'IPv6'] as const).map((family) => ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: `web-${family === 'IPv4' ? 'v4' : 'v6'}`,
        namespace: NS,
        labels: { 'kubernetes.io/service-name': 'web', 'endpointslice.kubernetes.io/managed-by': 'strait-test' },
      },
      addressType: family,
      ports: [
        { name: 'http', port: TCP_PORT, protocol: 'TCP' },
        { name: 'dns', port: UDP_PORT, protocol: 'UDP' },
      ],
      endpoints: [...members].map(([i, ready]) => {
        const b = topo.backends[i - 1];
        if (!b) throw new Error(`no backend ${i}`);
        return {
          addresses: [family === 'IPv4' ? b.addr4 : b.addr6],
          conditions: { ready, serving: ready, terminating: false },
          nodeName: NODE,
          targetRef: { kind: 'Pod', namespace: NS, name: pod(i) },
        };
      }),
    }));
  const members = (...ready: number[]) => new Map(ready.map((i) => [i, true] as const));

  const writeService = () => writeManifest('web-service.yaml', [service('web', [vip4(), vip6()])]);
  const writeSlices = (m: ReadonlyMap<number, boolean>) => writeManifest('web-endpointslices.yaml', slices(m));

  // ---- CLI views ----

  const read = () => ['--bpf-root', BPF_ROOT, '--state-dir', stateDir];
  const lbList = () => straitJson<LbListJson>(['lb', 'list', ...read()]);
  const addressOf = (i: number, family: 4 | 6) => {
    const b = topo.backends[i - 1];
    if (!b) throw new Error(`no backend ${i}`);
    return family === 4 ? b.addr4 : b.addr6;
  };

  /** Waits until every frontend of lab/web has exactly pods `want` (active), and returns the list. */
  function waitForBackends(want: readonly number[], timeoutMs = 15_000): Promise<LbListJson> {
    return waitFor(`lab/web frontends with pods ${want.join(',')}`, async () => {
      const lb = await lbList();
      for (const name of allFrontends()) {
        const f = lb.frontends.find((x) => x.frontend === name);
        if (!f) return undefined;
        const family = name.startsWith('[') ? 6 : 4;
        const port = name.endsWith('/TCP') ? TCP_PORT : UDP_PORT;
        const got = f.backends.map((b) => `${hostPort(b.address, b.port)} ${b.state}`).sort();
        const exp = want.map((i) => `${hostPort(addressOf(i, family), port)} active`).sort();
        if (JSON.stringify(got) !== JSON.stringify(exp)) return undefined;
      }
      return lb;
    }, timeoutMs);
  }

  // ---- traffic ----

  const client = (mode: 'tcp' | 'udp' | 'udp-connected', vip: string, port: number, spec: Parameters<Topology['lab']['echoClient']>[3]) =>
    topo.lab.echoClient(topo.nsClient, mode, hostPort(vip, port), spec);

  function expectServed(res: EchoSummary, vip: string, port: number, wantPods: string[], count: number): void {
    expect(res.errors, `${res.mode} ${res.to}`).toEqual([]);
    expect(res.ok).toBe(count);
    expect(Object.keys(res.byPod).sort(), `${res.mode} ${res.to}: ${JSON.stringify(res.byPod)}`).toEqual(wantPods);
    for (const r of res.replies) expect(r.from).toBe(hostPort(vip, port));
  }

  /** TCP and UDP, IPv4 and IPv6, `count` requests each, spread over the pods. */
  async function expectVipServes(wantPods: string[], count = 60): Promise<void> {
    const runs = await Promise.all(
      [vip4(), vip6()].flatMap((vip) => [
        client('tcp', vip, 80, { count, parallel: 6, timeoutMs: 3000 }).then((r) => [r, vip, 80] as const),
        client('udp', vip, 53, { count, parallel: 6, timeoutMs: 2000 }).then((r) => [r, vip, 53] as const),
      ]),
    );
    for (const [r, vip, port] of runs) expectServed(r, vip, port, wantPods, count);
  }

  // ---- setup / teardown ----

  beforeAll(async () => {
    if (process.getuid?.() !== 0) throw new Error('test/netns needs root (network namespaces, BPF, tc)');
    assertDistFresh();
    Dataplane.destroy(BPF_ROOT); // a crashed run's pins and links
    tmp = mkdtempSync(join(tmpdir(), 'strait-agent-test-'));
    manifests = join(tmp, 'manifests');
    stateDir = join(tmp, 'state');
    mkdirSync(manifests);
    mkdirSync(stateDir);
    topo = await topology(PREFIX, { backends: BACKENDS });
    for (const b of topo.backends) {
      await topo.lab.startEchoServer(b.ns, { name: pod(b.index), tcp: TCP_PORT, udp: UDP_PORT });
    }
    writeService();
    writeSlices(members(1, 2, 3));
    agent = (await startAgent()).agent;
  });

  afterAll(async () => {
    const errors: unknown[] = [];
    const step = async (f: () => unknown) => {
      try {
        await f();
      } catch (e) {
        errors.push(e);
      }
    };
    await step(() => killAllAgents());
    await step(() => Dataplane.destroy(BPF_ROOT));
    await step(() => topo?.destroy());
    await step(() => tmp && rmSync(tmp, { recursive: true, force: true }));
    if (errors.length > 0) throw errors[0];
  });

  // ---- 1 ----

  it('programs the maps from the manifests; TCP and UDP through the VIP reach every pod, IPv4 and IPv6, replies from VIP:port', async () => {
    const lb = await waitForBackends([1, 2, 3]);
    for (const name of allFrontends()) {
      const f = lb.frontends.find((x) => x.frontend === name);
      expect(f?.service, name).toMatch(/^lab\/web:/);
    }
    expect(lb.errors).toEqual([]);
    await expectVipServes(pods(1, 2, 3));
    // clients keep their address: the pods see 198.18.0.2 / 2001:2::2
    const r = await client('tcp', vip6(), 80, { count: 5, timeoutMs: 3000 });
    for (const x of r.replies) expect(x.client.startsWith(`[${topo.client.addr6}]:`), x.client).toBe(true);
  });

  // ---- 2 ----

  /** The baseline (Service, pods 1–3 ready, no bad files), so that one failed test does not fail the next. */
  async function baseline(): Promise<void> {
    writeService();
    writeSlices(members(1, 2, 3));
    for (const f of ['bad-syntax.yaml', 'bad-shape.yaml', 'bad-ip.yaml']) rmSync(join(manifests, f), { force: true });
    await waitForBackends([1, 2, 3]);
  }

  it('follows manifest changes: a not-ready endpoint is avoided, a removed Service is no longer translated, re-added it works', async () => {
    await baseline();
    // pod 2 not ready: new connections and datagrams avoid it
    writeSlices(new Map([[1, true], [2, false], [3, true]]));
    await waitForBackends([1, 3]);
    await expectVipServes(pods(1, 3));

    // no endpoint ready (nor serving): the Service rejects at once (ICMP port unreachable), never black-holes
    writeSlices(new Map([[1, false], [2, false], [3, false]]));
    await waitFor('lab/web without endpoints', async () => {
      const lb = await lbList();
      const fs = allFrontends().map((name) => lb.frontends.find((f) => f.frontend === name));
      return fs.every((f) => f?.noEndpoints === 'reject' && f.backends.length === 0) ? lb : undefined;
    });
    for (const vip of [vip4(), vip6()]) {
      const tcp = await client('tcp', vip, 80, { count: 2, timeoutMs: 5000 });
      expect(tcp.byCode, `${vip}: ${JSON.stringify(tcp.errors)}`).toEqual({ ECONNREFUSED: 2 });
      const udp = await client('udp-connected', vip, 53, { count: 2, timeoutMs: 5000 });
      expect(udp.byCode, `${vip}: ${JSON.stringify(udp.errors)}`).toEqual({ ECONNREFUSED: 2 });
      for (const e of [...tcp.errors, ...udp.errors]) expect(e.ms, `${vip}: ${JSON.stringify(e)}`).toBeLessThan(FAST_ERROR_MS);
    }

    writeSlices(members(1, 2, 3));
    await waitForBackends([1, 2, 3]);

    // Service removed: no frontend left; the node has no route for the VIPs → ICMP net unreachable, a fast error
    removeManifest('web-service.yaml');
    await waitFor('lab/web withdrawn', async () => {
      const lb = await lbList();
      return lb.frontends.some((f) => f.service?.startsWith('lab/web') || allFrontends().includes(f.frontend)) ? undefined : lb;
    });
    for (const vip of [vip4(), vip6()]) {
      const r = await client('tcp', vip, 80, { count: 2, timeoutMs: 5000 });
      expect(r.ok, `${vip}: ${JSON.stringify(r.replies)}`).toBe(0);
      for (const e of r.errors) {
        expect(['EHOSTUNREACH', 'ENETUNREACH', 'ECONNREFUSED'], `${vip}: ${JSON.stringify(e)}`).toContain(e.code);
        expect(e.ms, `${vip}: ${JSON.stringify(e)}`).toBeLessThan(FAST_ERROR_MS);
      }
    }

    writeService();
    await waitForBackends([1, 2, 3]);
    await expectVipServes(pods(1, 2, 3), 30);
  });

  // ---- 3 ----

  it('reports malformed manifests (file, object, field) while the good Service keeps working', async () => {
    await baseline();
    const mark = agent.mark;
    writeManifest('bad-syntax.yaml', 'apiVersion: v1\nkind: Service\nmetadata:\n  name: [oops\n  namespace: lab\n');
    writeManifest('bad-shape.yaml', [{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'shape', namespace: NS }, spec: { clusterIP: vip4(), ports: 'eighty' } }]);
    writeManifest('bad-ip.yaml', [
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'broken', namespace: NS },
        spec: { clusterIP: '198.19.0.300', clusterIPs: ['198.19.0.300'], ports: [{ name: 'http', port: 80, targetPort: TCP_PORT, protocol: 'TCP' }] },
      },
    ]);

    // the agent's log names the file (and where in it), the object and the field
    const syntax = await agent.waitForLog((l) => l.level === 'error' && String(l['file']).endsWith('/bad-syntax.yaml'), { from: mark, what: 'bad-syntax.yaml error' });
    expect(syntax['line'], JSON.stringify(syntax)).toEqual(expect.any(Number));
    expect(String(syntax['error'])).toMatch(/YAML/);
    const shape = await agent.waitForLog((l) => l.level === 'error' && String(l['file']).endsWith('/bad-shape.yaml'), { from: mark, what: 'bad-shape.yaml error' });
    expect(shape).toMatchObject({ object: 'Service lab/shape', field: 'spec.ports' });
    const ip = await agent.waitForLog((l) => l.level === 'error' && l['object'] === 'Service lab/broken', { from: mark, what: 'Service lab/broken error' });
    expect(ip).toMatchObject({ field: 'spec.clusterIPs[0]' });
    expect(String(ip['error'])).toContain('198.19.0.300');

    // `strait lb list` names the broken Service and why it is not served
    const lb = await waitFor('lb list errors naming lab/broken', async () => {
      const v = await lbList();
      return v.errors.some((e) => e.object === 'Service lab/broken') ? v : undefined;
    });
    expect(lb.errors).toContainEqual(expect.objectContaining({ object: 'Service lab/broken', field: 'spec.clusterIPs[0]' }));
    expect(lb.skipped).toContainEqual(expect.objectContaining({ service: 'lab/broken', reason: 'invalid' }));
    expect(lb.frontends.filter((f) => f.service?.startsWith('lab/broken') || f.service?.startsWith('lab/shape'))).toEqual([]);

    // everything else unaffected
    await waitForBackends([1, 2, 3]);
    await expectVipServes(pods(1, 2, 3), 30);

    for (const f of ['bad-syntax.yaml', 'bad-shape.yaml', 'bad-ip.yaml']) removeManifest(f);
    await waitFor('errors cleared', async () => ((await lbList()).errors.length === 0 ? true : undefined));
  });

  // ---- 4 ----

  /** Every entry of the Service maps, as sorted JSON lines per map. */
  function dumpServiceMaps(): Record<string, string[]> {
    const maps = Dataplane.openPinned(BPF_ROOT);
    const json = (v: unknown) => JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));
    try {
      const out: Record<string, string[]> = {};
      for (const name of ['services4', 'services6', 'serviceSlots', 'serviceNames', 'backends4', 'backends6', 'revnat4', 'revnat6'] as const) {
        const m = maps[name] as { entries(): Iterable<[unknown, unknown]> } | undefined;
        if (!m) throw new Error(`${BPF_ROOT}: map ${name} not pinned`);
        out[name] = [...m.entries()].map(([k, v]) => json([k, v])).sort();
      }
      return out;
    } finally {
      for (const m of Object.values(maps)) m?.close();
    }
  }

  it('kill -9 and restart with traffic flowing: flows keep going on their pod, nothing is rewritten, new changes apply', async () => {
    await baseline();
    const before = dumpServiceMaps();
    expect(before['services4']).toHaveLength(2);
    expect(before['backends4']!.length).toBeGreaterThanOrEqual(6);

    // an established TCP connection (one line every 100 ms) and a UDP exchange on one socket, both families
    const N = 250; // 25 s: the kill, the pause and the restart all happen while the flows run, even on a loaded machine
    let flowsDone = false;
    const flows = Promise.all([
      client('tcp', vip4(), 80, { count: N, reuse: true, intervalMs: 100, timeoutMs: 3000 }),
      client('udp', vip4(), 53, { count: N, reuse: true, intervalMs: 100, timeoutMs: 2000 }),
      client('tcp', vip6(), 80, { count: N, reuse: true, intervalMs: 100, timeoutMs: 3000 }),
      client('udp', vip6(), 53, { count: N, reuse: true, intervalMs: 100, timeoutMs: 2000 }),
    ]).finally(() => {
      flowsDone = true;
    });
    await sleep(1500);

    const ctBefore = await straitJson<CtJson[]>(['ct', 'list', '--all', ...read()]);
    const old = agent;
    expect(old.running).toBe(true);
    const status = await old.kill('SIGKILL');
    expect(status.signal).toBe('SIGKILL');
    await sleep(1000);

    const restarted = await startAgent();
    agent = restarted.agent;
    expect(flowsDone, 'the flows must still be running when the restarted agent has synced').toBe(false);
    // the first sync of the restarted agent changed nothing: ids recovered from the pinned maps
    expect(restarted.firstSync).toMatchObject({ upserts: 0, deletes: 0, failures: 0, ctFlushed: 0 });
    const loaded = agent.find((l) => l.msg === 'dataplane loaded')[0];
    expect(loaded?.['created'], JSON.stringify(loaded)).toEqual([]);
    const attached = agent.find((l) => l.msg === 'attached');
    expect(attached, agent.tail()).toHaveLength(1);
    expect(attached[0]).toMatchObject({ device: topo.uplink, mode: 'tcx', updated: true });
    const ctAfter = await straitJson<CtJson[]>(['ct', 'list', '--all', ...read()]);

    const results = await flows;
    for (const r of results) {
      expect(r.errors, `${r.mode} ${r.to}`).toEqual([]);
      expect(r.ok, `${r.mode} ${r.to}`).toBe(N);
      expect(Object.keys(r.byPod), `${r.mode} ${r.to} stayed on one pod: ${JSON.stringify(r.byPod)}`).toHaveLength(1);
      for (const x of r.replies) expect(x.from).toBe(r.to);
    }
    // one socket each (the pods saw one client address:port per flow), whose conntrack entry outlived
    // the old agent unchanged
    for (const r of results) {
      const sources = new Set(r.replies.map((x) => x.client));
      expect(sources.size, `${r.mode} ${r.to}: ${[...sources].join(' ')}`).toBe(1);
      const flow = (ct: CtJson[]) =>
        ct.filter((c) => c.direction === 'service' && c.source === r.replies[0]?.client && c.destination === r.to).map((c) => `${c.protocol} ${c.backendId}`);
      expect(flow(ctBefore), `${r.mode} ${r.to}: conntrack before the kill`).toHaveLength(1);
      expect(flow(ctAfter), `${r.mode} ${r.to}: conntrack after the restart`).toEqual(flow(ctBefore));
    }

    expect(dumpServiceMaps()).toEqual(before);

    // a change after the restart applies: scale to four pods (pod 4's backends get fresh ids)
    const mark = agent.mark;
    writeSlices(members(1, 2, 3, 4));
    await waitForBackends([1, 2, 3, 4]);
    const sync = agent.find((l) => l.msg === 'sync', mark).find((l) => Number(l['upserts']) > 0);
    expect(sync, agent.tail()).toBeDefined();
    await expectVipServes(pods(1, 2, 3, 4), 80);
  });

  // ---- 5 ----

  it('explains itself: strait status (tcx links, datapath counters), /metrics, /readyz, /healthz', async () => {
    const status = await straitJson<StatusJson>(['status', ...read()]);
    const nsNode = topo.nsNode;
    expect(status.attachments).toEqual(expect.arrayContaining([`${nsNode}-${topo.uplink}-ingress`, `${nsNode}-${topo.uplink}-egress`]));
    expect(status.agent).toMatchObject({ pid: expect.any(Number), source: 'manifests' });
    expect(status.agent?.lastSync).not.toBeNull();
    const packets = (reason: string, dir?: string) =>
      status.metrics.filter((m) => m.reason === reason && (dir === undefined || m.dir === dir)).reduce((a, m) => a + Number(m.packets), 0);
    expect(packets('service_dnat', 'ingress'), JSON.stringify(status.metrics)).toBeGreaterThan(0);
    expect(packets('revnat', 'egress'), JSON.stringify(status.metrics)).toBeGreaterThan(0);
    expect(status.maps.find((m) => m.name === 'services4')?.entries).toBe(2);
    expect(status.maps.find((m) => m.name === 'ct4')?.maxEntries).toBe(65536);

    const metricsAddr = await agent.address('metrics');
    const healthzAddr = await agent.address('healthz');
    expect(metricsAddr).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(healthzAddr).toMatch(/^127\.0\.0\.1:\d+$/);

    const metrics = await fetch(`http://${metricsAddr}/metrics`);
    expect(metrics.status).toBe(200);
    const text = await metrics.text();
    expect(text).toMatch(/^strait_sync_duration_seconds_count(\{[^}]*\})? [1-9]/m);
    expect(text).toMatch(/^strait_datapath_packets_total\{[^}]*reason="service_dnat"[^}]*\} [1-9]/m);
    expect(text).toContain('strait_datapath_packets_total');

    const readyz = await fetch(`http://${metricsAddr}/readyz`);
    expect(readyz.status, await readyz.clone().text()).toBe(200);
    for (const addr of [metricsAddr, healthzAddr]) {
      const healthz = await fetch(`http://${addr}/healthz`);
      expect(healthz.status, `${addr}: ${await healthz.clone().text()}`).toBe(200);
    }
  });
});
