// The node agent end to end against a real Kubernetes API: etcd + kube-apiserver (+ the
// EndpointSlice controller of kube-controller-manager) from the cached Go build
// (lab/build-k8s.sh), `strait agent` as a real process in the root namespace (so it reaches the
// apiserver on 127.0.0.1) with the agent's least-privilege service account, its tc programs on
// the uplink of a lab node namespace, and real TCP/UDP from a client namespace through the
// ClusterIPs the API allocates to echo servers in backend namespaces.
//
//   1. Services and EndpointSlices created, changed (readiness, endpoints dropped, terminating
//      fallback) and deleted: the maps follow (`strait lb list -o json`) and so does the traffic.
//   2. Pods made Ready through the status subresource: the real EndpointSlice controller's
//      slices are programmed and followed.
//   3. Bad input: what the API accepts (a slice naming an unknown port, a slice of 1,000
//      endpoints, a Service for another proxy) and what it refuses but an older apiserver stored
//      (invalid and wrong-family addresses, an endpoint without addresses, written into etcd
//      behind the API's back): each is reported with its namespace/name; every other Service's
//      map entries stay as they were and it keeps answering.
//   4. A 30 s API server outage: the dataplane keeps serving (established and new flows, zero
//      errors), /readyz turns 503 while /healthz stays 200, nothing leaves the maps; after the
//      restart a new Service is programmed and reachable and /readyz is 200 again. Last, because
//      every client of the API (kube-controller-manager too) backs off for a while after it.
//
// Address plan (test/lib/netns.ts): client 198.18.0.2 / 2001:2::2, node up0 198.18.0.1 /
// 2001:2::1, backends 198.18.(10+I).2 / 2001:2:0:(10+I)::2; the control plane's Service CIDRs are
// 198.19.0.0/16 and 2001:2:0:ff::/112, routed by the client to the node. The 1,000-endpoint slice
// uses 198.18.64.0/18: data only, never contacted. Nothing else is ever addressed but loopback.
//
// Needs root and the cached Kubernetes build (built first when missing); never skipped.
// Run `make ts` first: the agent and the CLI run from dist/.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Dataplane } from '../../src/bpf/dataplane.js';
import type { LbList, FrontendView } from '../../src/cli/inspect.js';
import {
  createAgentServiceAccount, ensureK8sBinaries, k8sBinariesCached, startControlPlane,
} from '../lib/control-plane.js';
import type { AgentCredentials, ControlPlane } from '../lib/control-plane.js';
import { AgentProcess, assertDistFresh, killAllAgents, straitJson } from '../lib/agent-process.js';
import { hostPort, topology, type EchoSummary, type Topology } from '../lib/netns.js';

const PREFIX = 'st-ea-';
const BPF_ROOT = '/sys/fs/bpf/strait-test-e2e-agent';
const NODE = 'e2e-agent-node';
const TCP_PORT = 8080;
const UDP_PORT = 5353;
const BACKENDS = 3;
const OUTAGE_MS = 30_000;
const MANAGED_BY = 'e2e.strait.test';
const ZONE = 'zone-a';
/** The address of the i-th (0-based) endpoint of the big slice: 198.18.64.1 … (data only). */
const bigAddr = (i: number): string => `198.18.${64 + Math.floor((i + 1) / 256)}.${(i + 1) % 256}`;

let binDir = '';
let cp: ControlPlane;
let sa: AgentCredentials;
let topo: Topology;
let agent: AgentProcess | undefined;
let stateDir = '';

interface Addr {
  host: string;
  port: number;
}
let metricsAddr: Addr;
let healthzAddr: Addr;

function parseAddr(text: string): Addr {
  const m = /^(.*):(\d+)$/.exec(text);
  if (!m) throw new Error(`not host:port: ${text}`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

// ---- helpers ----------------------------------------------------------------------------------

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 15_000, everyMs = 100): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await cond()) return Math.round(performance.now() - t0);
    if (performance.now() - t0 > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${agent ? `\n--- agent log tail ---\n${agent.tail(15)}` : ''}`);
    }
    await sleep(everyMs);
  }
}

/** GET on one of the agent's HTTP servers. */
function httpGet(addr: Addr, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: addr.host, port: addr.port, path, timeout: 3_000, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path}: timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** `strait lb list -o json` against the test's bpf root and state dir (the real CLI, as a user runs it). */
function lbList(): Promise<LbList> {
  return straitJson<LbList>(['lb', 'list', '--bpf-root', BPF_ROOT, '--state-dir', stateDir]);
}

/** Frontends of Service ns/name: "addr:port/PROTO" → sorted backends "addr:port[ state]" (keys sorted). */
function programmed(view: LbList, ns: string, name: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const f of view.frontends) {
    if (!f.service?.startsWith(`${ns}/${name}:`)) continue;
    out[f.frontend] = f.backends.map((b) => `${hostPort(b.address, b.port)}${b.state === 'active' ? '' : ` ${b.state}`}`).sort();
  }
  return sortKeys(out);
}

function sortKeys<T>(o: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

function frontendsOf(view: LbList, ns: string, name: string): FrontendView[] {
  return view.frontends.filter((f) => f.service?.startsWith(`${ns}/${name}:`));
}

const svcPath = (ns: string, name?: string) => `/api/v1/namespaces/${ns}/services${name ? `/${name}` : ''}`;
const slicePath = (ns: string, name?: string) => `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices${name ? `/${name}` : ''}`;

async function createNamespace(ns: string): Promise<void> {
  await cp.api('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
}

const PORTS = [
  { name: 'tcp', port: 80, protocol: 'TCP', targetPort: TCP_PORT },
  { name: 'dns', port: 53, protocol: 'UDP', targetPort: UDP_PORT },
];

/** A ClusterIP Service (dual-stack unless told), its IPs left to the API. */
function service(ns: string, name: string, spec: Record<string, unknown> = {}, labels: Record<string, string> = {}) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: ns, labels },
    spec: { type: 'ClusterIP', ipFamilyPolicy: 'RequireDualStack', ipFamilies: ['IPv4', 'IPv6'], ports: PORTS, ...spec },
  };
}

interface Ep {
  addr: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

function slice(ns: string, name: string, svc: string, family: 4 | 6, endpoints: Ep[], ports: unknown[] = [
  { name: 'tcp', port: TCP_PORT, protocol: 'TCP' },
  { name: 'dns', port: UDP_PORT, protocol: 'UDP' },
]) {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: ns, labels: { 'kubernetes.io/service-name': svc, 'endpointslice.kubernetes.io/managed-by': MANAGED_BY } },
    addressType: family === 4 ? 'IPv4' : 'IPv6',
    ports,
    endpoints: endpoints.map(epJson),
  };
}

function epJson(e: Ep) {
  const ready = e.ready ?? true;
  return {
    addresses: [e.addr],
    conditions: { ready, serving: e.serving ?? ready, terminating: e.terminating ?? false },
    // What the EndpointSlice controller would write for a pod on this node: a backend shared by
    // two Services has one map entry, so their slices must agree on it.
    nodeName: NODE,
    zone: ZONE,
  };
}

/** Backend endpoints (1-based indexes) of one family. */
const eps = (family: 4 | 6, ...idx: number[]): Ep[] => idx.map((i) => ({ addr: family === 4 ? topo.backends[i - 1]!.addr4 : topo.backends[i - 1]!.addr6 }));

/** What lb list should show for a Service of PORTS at these ClusterIPs with these backends. */
function expected(vips: string[], backends: Record<4 | 6, string[]>, state = ''): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const vip of vips) {
    const fam = vip.includes(':') ? 6 : 4;
    out[`${hostPort(vip, 80)}/TCP`] = backends[fam].map((a) => `${hostPort(a, TCP_PORT)}${state}`).sort();
    out[`${hostPort(vip, 53)}/UDP`] = backends[fam].map((a) => `${hostPort(a, UDP_PORT)}${state}`).sort();
  }
  return sortKeys(out);
}

const podNames = (...idx: number[]) => idx.map((i) => `pod${i}`).sort();

/** TCP connections and UDP exchanges to vip: no errors, answered by exactly `pods`. */
async function expectReach(vip: string, pods: string[], count = 45): Promise<void> {
  const [tcp, udp] = await Promise.all([
    topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(vip, 80), { count, parallel: 6, timeoutMs: 3_000 }),
    topo.lab.echoClient(topo.nsClient, 'udp', hostPort(vip, 53), { count, parallel: 6, timeoutMs: 3_000 }),
  ]);
  expect(tcp.errors, `TCP to ${vip}`).toEqual([]);
  expect(udp.errors, `UDP to ${vip}`).toEqual([]);
  expect(Object.keys(tcp.byPod).sort(), `TCP to ${vip}: backends answering`).toEqual(pods);
  expect(Object.keys(udp.byPod).sort(), `UDP to ${vip}: backends answering`).toEqual(pods);
  for (const r of udp.replies) expect(r.from).toBe(hostPort(vip, 53));
  for (const r of tcp.replies) expect(r.client.startsWith(vip.includes(':') ? `[${topo.client.addr6}]:` : `${topo.client.addr4}:`), r.client).toBe(true);
}

/** A Service's ClusterIPs (v4 first) as the API allocated them. */
async function clusterIPs(ns: string, name: string): Promise<string[]> {
  const s = await cp.api('GET', svcPath(ns, name));
  const ips = s.spec.clusterIPs as string[];
  for (const ip of ips) expect(ip.includes(':') ? ip.startsWith('2001:2:0:ff::') : ip.startsWith('198.19.'), `ClusterIP ${ip} in the lab's Service CIDRs`).toBe(true);
  return ips;
}

// ---- set-up and teardown ----------------------------------------------------------------------

beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('test/e2e/agent-api needs root (network namespaces, BPF, tc)');
  assertDistFresh();
  binDir = await ensureK8sBinaries();
}, k8sBinariesCached() ? 120_000 : 90 * 60_000);

beforeAll(async () => {
  // Leftovers of a crashed run: the bpf root (and the filters it recorded); the lab cleans its prefix.
  Dataplane.destroy(BPF_ROOT);
  stateDir = mkdtempSync(join(tmpdir(), 'strait-e2e-agent-'));
  // Both at once; each kept as soon as it exists, so that afterAll removes it whatever fails.
  const [t, c] = await Promise.allSettled([
    topology(PREFIX, { backends: BACKENDS }).then((x) => (topo = x)),
    startControlPlane({ binDir, controllerManager: true }).then((x) => (cp = x)),
  ]);
  for (const r of [t, c]) if (r.status === 'rejected') throw r.reason;
  // The API allocates ClusterIPs anywhere in 198.19.0.0/16; the standard topology routes only the
  // /24 of hand-made VIPs. Send the whole Service CIDR to the node (a lab range, client only).
  await topo.lab.route(topo.nsClient, '198.19.0.0/16', { via: topo.client.gw4 });
  for (const b of topo.backends) {
    await topo.lab.startEchoServer(b.ns, { name: `pod${b.index}`, tcp: TCP_PORT, udp: UDP_PORT }); // stopped by topo.destroy()
  }
  sa = await createAgentServiceAccount(cp);
  await cp.api('POST', '/api/v1/nodes', {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE, 'topology.kubernetes.io/zone': ZONE } },
  });
  await cp.patch(`/api/v1/nodes/${NODE}/status`, {
    status: { addresses: [{ type: 'InternalIP', address: topo.nodeUplinkAddr4 }, { type: 'InternalIP', address: topo.nodeUplinkAddr6 }, { type: 'Hostname', address: NODE }] },
  });

  const t0 = performance.now();
  agent = AgentProcess.start([
    '--kubeconfig', sa.kubeconfigPath,
    '--node-name', NODE,
    '--devices', topo.uplink,
    '--devices-netns', topo.netnsPath(topo.nsNode),
    '--metrics-addr', '127.0.0.1:0',
    '--healthz-addr', '127.0.0.1:0',
    '--bpf-root', BPF_ROOT,
    '--state-dir', stateDir,
    '--map-size', 'ct4=65536',
    '--map-size', 'ct6=65536',
    '--min-sync-period', '100ms',
    '--log-format', 'json',
  ]);
  await agent.waitForLog((l) => l.msg === 'agent started', { timeoutMs: 30_000, what: '"agent started"' });
  metricsAddr = parseAddr(await agent.address('metrics'));
  healthzAddr = parseAddr(await agent.address('healthz'));
  expect(metricsAddr.host).toBe('127.0.0.1');
  expect(healthzAddr.host).toBe('127.0.0.1');
  await waitFor('the agent to be ready', async () => (await httpGet(metricsAddr, '/readyz')).status === 200, 30_000);
  console.log(`agent ready ${Math.round(performance.now() - t0)} ms after spawn (kube-apiserver started in ${cp.timings.apiserverMs[0]} ms, lab in ${topo.setupMs} ms)`);
}, 180_000);

afterAll(async () => {
  const errors: unknown[] = [];
  const step = async (fn: () => unknown) => {
    try {
      await fn();
    } catch (e) {
      errors.push(e);
    }
  };
  await step(() => agent?.kill('SIGTERM'));
  await step(() => killAllAgents());
  await step(() => Dataplane.destroy(BPF_ROOT));
  await step(() => topo?.destroy());
  await step(() => cp?.stop());
  await step(() => stateDir && rmSync(stateDir, { recursive: true, force: true }));
  if (errors.length > 0) throw errors[0];
}, 60_000);

// ---- the tests --------------------------------------------------------------------------------

describe('strait agent against a real kube-apiserver', () => {
  test('Services and EndpointSlices: created, changed and deleted, the maps and the traffic follow', async () => {
    const ns = 'e2e-crud';
    await createNamespace(ns);
    let t0 = performance.now();
    await cp.api('POST', svcPath(ns), service(ns, 'web'));
    await cp.api('POST', slicePath(ns), slice(ns, 'web-v4', 'web', 4, eps(4, 1, 2, 3)));
    await cp.api('POST', slicePath(ns), slice(ns, 'web-v6', 'web', 6, eps(6, 1, 2, 3)));
    const vips = await clusterIPs(ns, 'web');
    const [vip4, vip6] = vips as [string, string];
    const all4 = eps(4, 1, 2, 3).map((e) => e.addr);
    const all6 = eps(6, 1, 2, 3).map((e) => e.addr);
    let view: LbList | undefined;
    const follow = (what: string, want: Record<string, string[]>): Promise<number> =>
      waitFor(what, async () => {
        view = await lbList();
        return same(programmed(view, ns, 'web'), want);
      }).catch((e: Error) => {
        throw new Error(`${e.message}\nlast lb list for ${ns}/web: ${JSON.stringify(view && programmed(view, ns, 'web'), null, 1)}\nwanted: ${JSON.stringify(want, null, 1)}`);
      });
    const want = (b4: string[], b6: string[]) => expected(vips, { 4: b4, 6: b6 });

    const ms = await follow('web in the maps with 3 backends per frontend', want(all4, all6));
    console.log(`Service + 2 slices created → programmed (lb list) in ${Math.round(performance.now() - t0)} ms (${ms} ms after the API calls)`);
    const fe = frontendsOf(view!, ns, 'web');
    expect(fe).toHaveLength(4);
    for (const f of fe) {
      expect(f.kind).toBe('ClusterIP');
      expect(f.noEndpoints).toBeNull();
      expect(f.missingBackends).toEqual([]);
    }
    await expectReach(vip4, podNames(1, 2, 3));
    await expectReach(vip6, podNames(1, 2, 3));

    // Readiness: backend 3 not ready (and not serving) → out of the IPv4 frontends only.
    t0 = performance.now();
    await cp.patch(slicePath(ns, 'web-v4'), { endpoints: [...eps(4, 1, 2), { addr: topo.backends[2]!.addr4, ready: false }].map(epJson) });
    await follow('backend 3 out of the IPv4 frontends', want(all4.slice(0, 2), all6));
    console.log(`readiness flip → programmed in ${Math.round(performance.now() - t0)} ms`);
    await expectReach(vip4, podNames(1, 2));
    await expectReach(vip6, podNames(1, 2, 3));

    // An endpoint dropped from the slice.
    await cp.patch(slicePath(ns, 'web-v4'), { endpoints: eps(4, 1).map(epJson) });
    await follow('only backend 1 behind the IPv4 frontends', want(all4.slice(0, 1), all6));
    await expectReach(vip4, podNames(1));

    // No ready endpoint left, but a serving + terminating one: used as a fallback (KEP-1669).
    await cp.patch(slicePath(ns, 'web-v4'), { endpoints: [{ addr: topo.backends[0]!.addr4, ready: false, serving: true, terminating: true }].map(epJson) });
    await waitFor('the terminating fallback in the maps', async () => {
      view = await lbList();
      const p = programmed(view, ns, 'web');
      return p[`${hostPort(vip4, 80)}/TCP`]?.length === 1 && p[`${hostPort(vip4, 80)}/TCP`]![0]!.startsWith(hostPort(topo.backends[0]!.addr4, TCP_PORT));
    });
    await expectReach(vip4, podNames(1), 15);

    // The IPv4 slice deleted: the IPv4 frontends stay, without endpoints, and refuse at once.
    await cp.api('DELETE', slicePath(ns, 'web-v4'));
    await waitFor('IPv4 frontends without endpoints', async () => {
      view = await lbList();
      const f4 = frontendsOf(view, ns, 'web').filter((f) => !f.address.includes(':'));
      return f4.length === 2 && f4.every((f) => f.backends.length === 0 && f.noEndpoints === 'reject');
    });
    const refused = await topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(vip4, 80), { count: 3, timeoutMs: 3_000 });
    expect(refused.byCode).toEqual({ ECONNREFUSED: 3 });
    await expectReach(vip6, podNames(1, 2, 3), 30);

    // The Service deleted: every frontend leaves the maps.
    t0 = performance.now();
    await cp.api('DELETE', svcPath(ns, 'web'));
    await waitFor('web out of the maps', async () => frontendsOf(await lbList(), ns, 'web').length === 0);
    console.log(`Service deleted → frontends gone in ${Math.round(performance.now() - t0)} ms`);
    await cp.api('DELETE', slicePath(ns, 'web-v6'));
    view = await lbList();
    expect(view.frontends.filter((f) => f.service?.startsWith(`${ns}/`))).toEqual([]);
    expect(view.errors).toEqual([]);
  }, 120_000);

  test('Pods made Ready: the real EndpointSlice controller\'s slices are programmed and followed', async () => {
    const ns = 'e2e-pods';
    await createNamespace(ns);
    await cp.api('POST', svcPath(ns), service(ns, 'echo', {
      selector: { app: 'echo' },
      ports: [
        { name: 'tcp', port: 80, protocol: 'TCP', targetPort: 'web' },
        { name: 'dns', port: 53, protocol: 'UDP', targetPort: 'dns' },
      ],
    }));
    const [vip4, vip6] = (await clusterIPs(ns, 'echo')) as [string, string];
    await waitFor('the default ServiceAccount of the namespace', async () =>
      (await cp.request('GET', `/api/v1/namespaces/${ns}/serviceaccounts/default`)).status === 200, 30_000, 250).catch((e: Error) => {
      throw new Error(`${e.message}\n--- kube-controller-manager log tail ---\n${cp.logTail('kube-controller-manager', 30)}`);
    });
    const setReady = (i: number, ready: boolean) => {
      const b = topo.backends[i - 1]!;
      return cp.patch(`/api/v1/namespaces/${ns}/pods/echo-${i}/status`, {
        status: {
          phase: 'Running',
          podIP: b.addr4,
          podIPs: [{ ip: b.addr4 }, { ip: b.addr6 }],
          conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
        },
      });
    };
    const t0 = performance.now();
    for (const b of topo.backends) {
      await cp.api('POST', `/api/v1/namespaces/${ns}/pods`, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `echo-${b.index}`, namespace: ns, labels: { app: 'echo' } },
        spec: {
          nodeName: NODE,
          automountServiceAccountToken: false,
          containers: [{
            name: 'echo',
            image: 'strait.invalid/echo:never-pulled',
            ports: [{ name: 'web', containerPort: TCP_PORT }, { name: 'dns', containerPort: UDP_PORT, protocol: 'UDP' }],
          }],
        },
      });
      await setReady(b.index, true);
    }
    const all4 = eps(4, 1, 2, 3).map((e) => e.addr);
    const all6 = eps(6, 1, 2, 3).map((e) => e.addr);
    let view: LbList | undefined;
    await waitFor('the controller\'s slices programmed', async () => {
      view = await lbList();
      return same(programmed(view, ns, 'echo'), expected([vip4, vip6], { 4: all4, 6: all6 }));
    }, 30_000, 200).catch((e: Error) => {
      throw new Error(`${e.message}\nprogrammed: ${JSON.stringify(view && programmed(view, ns, 'echo'))}`);
    });
    console.log(`3 Pods Ready → controller slices → programmed in ${Math.round(performance.now() - t0)} ms`);
    const slices = await cp.api('GET', `${slicePath(ns)}?labelSelector=kubernetes.io/service-name=echo`);
    expect(slices.items.every((s: { metadata: { labels: Record<string, string> } }) =>
      s.metadata.labels['endpointslice.kubernetes.io/managed-by'] === 'endpointslice-controller.k8s.io')).toBe(true);
    await expectReach(vip4, podNames(1, 2, 3), 30);
    await expectReach(vip6, podNames(1, 2, 3), 30);

    // Pod 2 turns unready: the controller marks it, the agent takes it out.
    await setReady(2, false);
    const want = (b4: string[], b6: string[]) => expected([vip4, vip6], { 4: b4, 6: b6 });
    await waitFor('pod 2 out of the maps', async () => same(programmed(await lbList(), ns, 'echo'), want([all4[0]!, all4[2]!], [all6[0]!, all6[2]!])), 30_000, 200);
    await expectReach(vip4, podNames(1, 3), 30);
    await expectReach(vip6, podNames(1, 3), 30);
  }, 120_000);

  test('bad input: each reported with its namespace/name, every other Service unaffected', async () => {
    const ns = 'e2e-bad';
    await createNamespace(ns);
    // Whatever other tests left programmed must come through untouched.
    const others = (v: LbList) => v.frontends.filter((f) => !f.service?.startsWith(`${ns}/`));
    const othersBefore = others(await lbList());
    await cp.api('POST', svcPath(ns), service(ns, 'good'));
    await cp.api('POST', slicePath(ns), slice(ns, 'good-v4', 'good', 4, eps(4, 1, 2, 3)));
    await cp.api('POST', slicePath(ns), slice(ns, 'good-v6', 'good', 6, eps(6, 1, 2, 3)));
    const [good4, good6] = (await clusterIPs(ns, 'good')) as [string, string];

    // 1. A slice whose port name the Service does not have.
    await cp.api('POST', svcPath(ns), service(ns, 'badport', { ipFamilyPolicy: 'SingleStack', ipFamilies: ['IPv4'] }));
    await cp.api('POST', slicePath(ns), slice(ns, 'badport-1', 'badport', 4, eps(4, 1), [{ name: 'http', port: TCP_PORT, protocol: 'TCP' }]));
    const [badport4] = await clusterIPs(ns, 'badport');

    // 2. A slice of 1,000 endpoints (the API's maximum), addresses that are data only.
    await cp.api('POST', svcPath(ns), service(ns, 'big', { ipFamilyPolicy: 'SingleStack', ipFamilies: ['IPv4'], ports: [{ name: 'tcp', port: 80, protocol: 'TCP', targetPort: TCP_PORT }] }));
    const bigEps: Ep[] = Array.from({ length: 1000 }, (_, i) => ({ addr: bigAddr(i) }));
    const tBig = performance.now();
    await cp.api('POST', slicePath(ns), slice(ns, 'big-1', 'big', 4, bigEps, [{ name: 'tcp', port: TCP_PORT, protocol: 'TCP' }]));

    // 3. A Service that belongs to another proxy.
    await cp.api('POST', svcPath(ns), service(ns, 'other-proxy', {}, { 'service.kubernetes.io/service-proxy-name': 'someone-else' }));
    await cp.api('POST', slicePath(ns), slice(ns, 'other-proxy-v4', 'other-proxy', 4, eps(4, 1)));

    // 4. Addresses not in their family's form: this apiserver refuses them all ...
    const refusedAddrs: [4 | 6, string][] = [[4, '198.018.64.1'], [4, '2001:2::64'], [6, '::ffff:198.18.64.1'], [6, '198.18.64.1'], [6, '2001:2:0:0:0:0:0:64'], [4, '198.18.64.1.5']];
    for (const [fam, addr] of refusedAddrs) {
      const r = await cp.request('POST', slicePath(ns), slice(ns, 'refused', 'good', fam, [{ addr }]));
      expect(r.status, `the API on ${addr} in an IPv${fam} slice: ${JSON.stringify(r.body?.message)}`).toBe(422);
    }
    // ... but an older one stored them (validation was sloppier before 1.33), and the API serves
    // what is stored: write such slices straight into etcd, as an upgraded cluster would hold them.
    await cp.api('POST', svcPath(ns), service(ns, 'legacy'));
    const legacy4 = slice(ns, 'legacy-v4', 'legacy', 4, [{ addr: '198.018.64.1' }, { addr: '2001:2::64' }, { addr: bigAddr(999) }]);
    const legacy6 = slice(ns, 'legacy-v6', 'legacy', 6, [{ addr: '198.18.64.2' }]);
    (legacy6.endpoints as unknown[]).push({ conditions: { ready: true } }); // no addresses at all
    for (const s of [legacy4, legacy6]) {
      const obj = { ...s, metadata: { ...s.metadata, uid: randomUUID(), creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z') } };
      await cp.etcdctl(['put', `/registry/endpointslices/${ns}/${s.metadata.name}`, JSON.stringify(obj)]);
    }
    await waitFor('the API to serve the slices written into etcd', async () => {
      const r = await cp.request('GET', slicePath(ns, 'legacy-v6'));
      return r.status === 200 && (await cp.request('GET', slicePath(ns, 'legacy-v4'))).status === 200;
    });
    const [legacyVip4] = await clusterIPs(ns, 'legacy');

    const wantErrors = [
      { object: `EndpointSlice ${ns}/badport-1`, field: 'ports[0].name', message: expect.stringContaining('"http"') },
      { object: `EndpointSlice ${ns}/legacy-v4`, field: 'endpoints[0].addresses', message: expect.stringContaining('198.018.64.1') },
      { object: `EndpointSlice ${ns}/legacy-v4`, field: 'endpoints[1].addresses', message: expect.stringContaining('2001:2::64') },
      { object: `EndpointSlice ${ns}/legacy-v6`, field: 'endpoints[1].addresses', message: expect.any(String) },
      { object: `EndpointSlice ${ns}/legacy-v6`, field: 'endpoints[0].addresses', message: expect.stringContaining('198.18.64.2') },
    ];
    let view: LbList | undefined;
    const ours = (v: LbList) => v.errors.filter((e) => e.object.includes(` ${ns}/`));
    const ms = await waitFor('every bad object reported and big programmed', async () => {
      view = await lbList();
      return ours(view).length >= wantErrors.length &&
        frontendsOf(view, ns, 'big')[0]?.backends.length === 1000 &&
        frontendsOf(view, ns, 'legacy').length === 4 && frontendsOf(view, ns, 'good').length === 4;
    }, 30_000, 250).catch((e: Error) => {
      throw new Error(`${e.message}\nerrors: ${JSON.stringify(view?.errors, null, 1)}\nskipped: ${JSON.stringify(view?.skipped)}`);
    });
    console.log(`bad input: all reported and the 1,000-endpoint slice programmed ${ms} ms after the last write (${Math.round(performance.now() - tBig)} ms after the big slice); errors:\n${ours(view!).map((e) => `  ${e.object} ${e.field}: ${e.message}`).join('\n')}`);
    expect(ours(view!)).toEqual(expect.arrayContaining(wantErrors));
    expect(ours(view!)).toHaveLength(wantErrors.length);
    // ... and each is in the agent's log, with the object it concerns.
    for (const e of ours(view!)) {
      expect(agent!.find((l) => l.msg === 'invalid object' && l.object === e.object && l.field === e.field), `log line for ${e.object} ${e.field}`).not.toEqual([]);
    }
    // Nothing is said about the good Services.
    expect(view!.errors.filter((e) => /\/(good|big|steady|late)/.test(e.object))).toEqual([]);
    // The other proxy's Service: skipped, with the reason.
    expect(view!.skipped).toEqual(expect.arrayContaining([expect.objectContaining({ service: `${ns}/other-proxy` })]));
    expect(frontendsOf(view!, ns, 'other-proxy')).toEqual([]);

    // The unknown port: the Service is there without endpoints and refuses at once.
    const bp = frontendsOf(view!, ns, 'badport');
    expect(bp.map((f) => [f.frontend, f.noEndpoints])).toEqual([[`${hostPort(badport4!, 53)}/UDP`, 'reject'], [`${hostPort(badport4!, 80)}/TCP`, 'reject']].sort((a, b) => a[0]!.localeCompare(b[0]!)));
    const refused = await topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(badport4!, 80), { count: 2, timeoutMs: 3_000 });
    expect(refused.byCode).toEqual({ ECONNREFUSED: 2 });

    // The 1,000 endpoints, all of them, each once.
    const big = frontendsOf(view!, ns, 'big');
    expect(big).toHaveLength(1);
    expect(new Set(big[0]!.backends.map((b) => b.address))).toEqual(new Set(bigEps.map((e) => e.addr)));
    expect(big[0]!.missingBackends).toEqual([]);

    // The legacy slices: the valid endpoint is used, the bad ones are left out.
    expect(programmed(view!, ns, 'legacy')[`${hostPort(legacyVip4!, 80)}/TCP`]).toEqual([hostPort(bigAddr(999), TCP_PORT)]);
    for (const f of frontendsOf(view!, ns, 'legacy').filter((x) => x.address.includes(':'))) expect(f.noEndpoints).toBe('reject');

    // Every other Service still works.
    await expectReach(good4, podNames(1, 2, 3), 30);
    await expectReach(good6, podNames(1, 2, 3), 30);
    expect(others(view!)).toEqual(othersBefore);

    // Bad objects removed: their errors go with them.
    for (const s of ['badport-1', 'legacy-v4', 'legacy-v6', 'big-1']) await cp.api('DELETE', slicePath(ns, s));
    for (const s of ['badport', 'legacy', 'big', 'other-proxy']) await cp.api('DELETE', svcPath(ns, s));
    await waitFor('the errors to clear', async () => {
      view = await lbList();
      return ours(view).length === 0 && frontendsOf(view, ns, 'big').length === 0 && !view.skipped.some((s) => s.service.startsWith(`${ns}/`));
    });
    await expectReach(good4, podNames(1, 2, 3), 15);
  }, 120_000);

  test(`API server outage of ${OUTAGE_MS / 1000} s: the dataplane keeps serving, /readyz says so, the agent catches up after`, async () => {
    const ns = 'e2e-outage';
    await createNamespace(ns);
    await cp.api('POST', svcPath(ns), service(ns, 'steady'));
    await cp.api('POST', slicePath(ns), slice(ns, 'steady-v4', 'steady', 4, eps(4, 1, 2, 3)));
    await cp.api('POST', slicePath(ns), slice(ns, 'steady-v6', 'steady', 6, eps(6, 1, 2, 3)));
    const [vip4, vip6] = (await clusterIPs(ns, 'steady')) as [string, string];
    await waitFor('steady programmed', async () => {
      const f = frontendsOf(await lbList(), ns, 'steady');
      return f.length === 4 && f.every((x) => x.backends.length === 3);
    });
    await expectReach(vip4, podNames(1, 2, 3), 30);
    expect((await httpGet(metricsAddr, '/readyz')).status).toBe(200);
    const before = await lbList();
    const apiErrors = async () => Number(/^strait_api_errors_total (\d+)/m.exec((await httpGet(metricsAddr, '/metrics')).body)?.[1] ?? NaN);
    const apiErrorsBefore = await apiErrors();

    // Flows that live through the whole outage: one TCP connection and one UDP socket, a request
    // every 100 ms.
    const longCount = Math.ceil((OUTAGE_MS + 8_000) / 100);
    const longTcp = topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(vip4, 80), { count: longCount, reuse: true, intervalMs: 100, timeoutMs: 3_000 });
    const longUdp = topo.lab.echoClient(topo.nsClient, 'udp', hostPort(vip6, 53), { count: longCount, reuse: true, intervalMs: 100, timeoutMs: 3_000 });
    // (Awaited at the end; a failure before that must not also surface as an unhandled rejection.)
    for (const p of [longTcp, longUdp]) p.catch(() => undefined);
    await sleep(1_000);

    const killedAt = performance.now();
    await cp.killApiServer('SIGKILL');
    const unreadyMs = await waitFor('/readyz 503', async () => (await httpGet(metricsAddr, '/readyz')).status === 503, 20_000, 50);
    const readyz = await httpGet(metricsAddr, '/readyz');
    console.log(`apiserver killed: /readyz 503 after ${unreadyMs} ms: ${readyz.body}`);
    expect(JSON.parse(readyz.body)).toMatchObject({ ready: false, reasons: [expect.stringMatching(/^kubernetes: /)] });

    // The outage: new flows, the health endpoints and the maps, over and over.
    const fresh: EchoSummary[] = [];
    let rounds = 0;
    while (performance.now() - killedAt < OUTAGE_MS) {
      const [tcp4, udp4, tcp6, udp6, view, rz, hz, hz2] = await Promise.all([
        topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(vip4, 80), { count: 12, parallel: 4, timeoutMs: 3_000 }),
        topo.lab.echoClient(topo.nsClient, 'udp', hostPort(vip4, 53), { count: 12, parallel: 4, timeoutMs: 3_000 }),
        topo.lab.echoClient(topo.nsClient, 'tcp', hostPort(vip6, 80), { count: 12, parallel: 4, timeoutMs: 3_000 }),
        topo.lab.echoClient(topo.nsClient, 'udp', hostPort(vip6, 53), { count: 12, parallel: 4, timeoutMs: 3_000 }),
        lbList(),
        httpGet(metricsAddr, '/readyz'),
        httpGet(metricsAddr, '/healthz'),
        httpGet(healthzAddr, '/healthz'),
      ]);
      fresh.push(tcp4, udp4, tcp6, udp6);
      for (const s of [tcp4, udp4, tcp6, udp6]) expect(s.errors, `${s.mode} to ${s.to} during the outage`).toEqual([]);
      expect(view, 'lb list during the outage').toEqual(before);
      expect(rz.status, '/readyz during the outage').toBe(503);
      expect(hz.status, `/healthz (metrics address) during the outage: ${hz.body}`).toBe(200);
      expect(hz2.status, `/healthz (healthz address) during the outage: ${hz2.body}`).toBe(200);
      expect(cp.apiServerRunning).toBe(false);
      rounds++;
      await sleep(500);
    }
    const served = fresh.reduce((n, s) => n + s.ok, 0);
    const pods = new Set(fresh.flatMap((s) => Object.keys(s.byPod)));
    expect([...pods].sort()).toEqual(podNames(1, 2, 3));
    expect(await apiErrors()).toBeGreaterThan(apiErrorsBefore);
    console.log(`outage ${Math.round(performance.now() - killedAt)} ms: ${served} new flows answered in ${rounds} rounds, 0 errors; lb list unchanged; /healthz 200, /readyz 503; strait_api_errors_total ${apiErrorsBefore} → ${await apiErrors()}`);

    // Back: the API server restarts (same etcd); a change made now must reach the maps.
    const restartMs = await cp.startApiServer();
    const logFrom = agent!.mark;
    const t0 = performance.now();
    const timed = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
      const t = performance.now();
      const r = await fn();
      const ms = Math.round(performance.now() - t);
      if (ms > 1_000) console.log(`slow API call after the restart: ${what} took ${ms} ms`);
      return r;
    };
    await timed('POST Service late', () => cp.api('POST', svcPath(ns), service(ns, 'late')));
    await timed('POST slice late-v4', () => cp.api('POST', slicePath(ns), slice(ns, 'late-v4', 'late', 4, eps(4, 2, 3))));
    await timed('POST slice late-v6', () => cp.api('POST', slicePath(ns), slice(ns, 'late-v6', 'late', 6, eps(6, 2, 3))));
    const [late4, late6] = (await clusterIPs(ns, 'late')) as [string, string];
    const catchUpMs = await waitFor('the new Service in the maps', async () => {
      const f = frontendsOf(await lbList(), ns, 'late');
      return f.length === 4 && f.every((x) => x.backends.length === 2);
    }, 60_000, 250);
    const readyMs = await waitFor('/readyz 200 again', async () => (await httpGet(metricsAddr, '/readyz')).status === 200, 60_000);
    console.log(`apiserver back in ${restartMs} ms; new Service programmed ${catchUpMs} ms after its creation (${Math.round(performance.now() - t0)} ms incl. API calls), /readyz 200 ${readyMs} ms later; the agent's watch meanwhile:\n${
      agent!.find((l) => l.component === 'watch', logFrom).map((l) => `  ${String(l.time).slice(11, 23)} ${l.msg} ${l.resource ?? ''} ${l.error ?? ''}`).join('\n')}`);
    await expectReach(late4, podNames(2, 3), 30);
    await expectReach(late6, podNames(2, 3), 30);

    // The old Service came through the reconnection and relist untouched.
    const after = await lbList();
    expect(frontendsOf(after, ns, 'steady')).toEqual(frontendsOf(before, ns, 'steady'));

    const [tcp, udp] = await Promise.all([longTcp, longUdp]);
    expect(tcp.errors, 'the TCP connection across the outage').toEqual([]);
    expect(tcp.ok).toBe(longCount);
    expect(Object.keys(tcp.byPod)).toHaveLength(1);
    expect(udp.errors, 'the UDP exchange across the outage').toEqual([]);
    expect(udp.ok).toBe(longCount);
    console.log(`long-lived flows across the outage: TCP ${tcp.ok}/${longCount}, UDP ${udp.ok}/${longCount} answered`);
  }, OUTAGE_MS + 150_000);
});
