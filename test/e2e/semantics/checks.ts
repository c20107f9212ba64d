// One check per item of DESIGN's "Kubernetes semantics" list, written once against E2eCluster
// (cluster.ts) so the lab (test/e2e/semantics.test.ts, test/e2e/traffic-policy.test.ts) and kind
// (test/e2e/kind/kind.test.ts) run the same ones. Each check drives real API objects (Pods made
// Ready by a kubelet — the lab's or a real one —, Services, slices from the real EndpointSlice
// controller) and asserts with real traffic: the echo server answers with its pod name and the
// client address it saw. What an agent programmed is read as `strait lb list` shows it.
//
// Every check names its own objects (a prefix per check), so checks are independent of each
// other's leftovers; the client pods (client1 on the first node, client2 on the second) are
// shared. A check whose feature is not built yet carries `waitsOn` ("issue N: what"): the test
// files register it with test.fails and that text in the title, so it shows, and it turns red
// the day the feature works (then drop the marker).
import { expect } from 'vitest';
import { hostPort } from '../../../src/lab/echo-client.js';
import type { ClusterNode, E2eCluster, EchoSummary, FrontendView, Pod, PodSpec } from './cluster.js';

export interface Check {
  readonly title: string;
  readonly run: (c: E2eCluster) => Promise<void>;
  /** Test timeout. */
  readonly timeoutMs: number;
  /** "issue N: …": an expected failure until that issue lands. */
  readonly waitsOn?: string;
  /** Only there (default: every cluster), e.g. a gap of the per-packet path that socket LB does not have. */
  readonly waitsOnIn?: readonly E2eCluster['name'][];
}

const NS = 'default';
const SERVICES = `/api/v1/namespaces/${NS}/services`;
const SLICES = `/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`;
/** The controller's first slices wait on its informers: slow on a loaded 2-core machine. */
const SLICE_WAIT_MS = 60_000;
/** An agent has a change in its maps within a sync or two (min sync period 250 ms in the lab). */
const PROGRAM_WAIT_MS = 20_000;

// ---- small helpers ------------------------------------------------------------------------------

/** 'a.b.c.d:port' / '[v6]:port' → the address. */
export const addrOf = (hp: string): string => hp.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');

const sorted = <T>(xs: Iterable<T>): T[] => [...xs].sort();

function node(c: E2eCluster, i: number): ClusterNode {
  const n = c.nodes[i];
  if (!n) throw new Error(`the ${c.name} cluster has ${c.nodes.length} node(s); this check needs ${i + 1}`);
  return n;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Obj = any;

export function createService(c: E2eCluster, name: string, spec: Obj, labels: Record<string, string> = {}): Promise<Obj> {
  return c.api('POST', SERVICES, { apiVersion: 'v1', kind: 'Service', metadata: { name, labels }, spec });
}

interface SliceEndpoint {
  addresses: string[];
  conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean };
  nodeName?: string;
  zone?: string;
  hints?: { forZones?: { name: string }[] };
}
interface Slice {
  metadata: { name: string; labels?: Record<string, string> };
  addressType: string;
  endpoints?: SliceEndpoint[];
  ports?: { name?: string; port?: number; protocol?: string }[];
}

export async function slicesOf(c: E2eCluster, service: string): Promise<Slice[]> {
  const l = await c.api('GET', `${SLICES}?labelSelector=${encodeURIComponent(`kubernetes.io/service-name=${service}`)}`);
  return l.items as Slice[];
}

/** Waits until the Service's slices satisfy cond (the real controller made them). */
async function waitSlices(c: E2eCluster, service: string, what: string, cond: (slices: Slice[]) => boolean | string): Promise<Slice[]> {
  let last: Slice[] = [];
  await c.waitFor(`slices of ${service}: ${what}`, async () => cond((last = await slicesOf(c, service))), SLICE_WAIT_MS);
  return last;
}

const endpointsOf = (slices: Slice[], family: 'IPv4' | 'IPv6' = 'IPv4'): SliceEndpoint[] =>
  slices.filter((s) => s.addressType === family).flatMap((s) => s.endpoints ?? []);

/** The frontend for address:port/protocol on a node (either scope; the external one first). */
async function frontendOn(c: E2eCluster, nodeName: string, address: string, port: number, protocol = 'TCP'): Promise<FrontendView | undefined> {
  const all = (await c.frontends(nodeName)).filter((f) => f.address === address && f.port === port && f.protocol === protocol);
  return all.find((f) => f.scope === 'external') ?? all[0];
}

const describeBackends = (f: FrontendView | undefined): string =>
  f === undefined ? 'no frontend' : `[${f.backends.map((b) => `${b.address}:${b.port} ${b.state}`).join(', ')}]`;

/** Waits until every given node programmed address:port with exactly the backend addresses `want`. */
async function waitBackends(
  c: E2eCluster,
  nodes: readonly string[],
  address: string,
  port: number,
  want: readonly string[],
  protocol = 'TCP',
): Promise<void> {
  const wantSorted = sorted(want).join(',');
  for (const n of nodes) {
    await c.waitFor(`${n} to program ${hostPort(address, port)}/${protocol} with [${wantSorted}]`, async () => {
      const f = await frontendOn(c, n, address, port, protocol);
      return (f !== undefined && sorted(f.backends.map((b) => b.address)).join(',') === wantSorted) || describeBackends(f);
    }, PROGRAM_WAIT_MS);
  }
}

const allNodes = (c: E2eCluster): string[] => c.nodes.map((n) => n.name);

/** The shared client pods: client1 on the first node, client2 on the second. */
const clientPods = new WeakMap<E2eCluster, Promise<{ client1: Pod; client2: Pod }>>();
export function clients(c: E2eCluster): Promise<{ client1: Pod; client2: Pod }> {
  let p = clientPods.get(c);
  if (p === undefined) {
    p = c
      .createPods([
        { name: 'client1', node: node(c, 0).name, labels: { app: 'client' }, serve: null },
        { name: 'client2', node: node(c, 1).name, labels: { app: 'client' }, serve: null },
      ])
      .then(([client1, client2]) => ({ client1: client1 as Pod, client2: client2 as Pod }));
    clientPods.set(c, p);
  }
  return p;
}

/** Every request answered, by exactly these pods, each seeing `client` as the peer. */
function expectServed(s: EchoSummary, pods: readonly string[], client?: string, from?: string): void {
  expect(s.errors, `${s.mode} ${s.to}`).toEqual([]);
  expect(s.ok).toBe(s.count);
  expect(sorted(Object.keys(s.byPod)), `${s.mode} ${s.to}: pods that answered`).toEqual(sorted(pods));
  if (client !== undefined) expect(new Set(s.replies.map((r) => addrOf(r.client))), 'the client address the backends saw').toEqual(new Set([client]));
  if (from !== undefined) expect(new Set(s.replies.map((r) => r.from)), 'where the replies came from').toEqual(new Set([from]));
}

const backendSpecs = (prefix: string, c: E2eCluster, extra: Partial<PodSpec> = {}): PodSpec[] => [
  { name: `${prefix}-1`, node: node(c, 0).name, labels: { app: prefix }, ...extra },
  { name: `${prefix}-2`, node: node(c, 1).name, labels: { app: prefix }, ...extra },
];

const httpPort = (port = 80) => ({ name: 'http', port, targetPort: 'http', protocol: 'TCP' });

// ---- the checks: Services -----------------------------------------------------------------------

async function selectorService(c: E2eCluster): Promise<void> {
  const [{ client1 }, pods] = await Promise.all([clients(c), c.createPods(backendSpecs('sel', c))]);
  const [sel1, sel2] = pods as [Pod, Pod];
  const svc = await createService(c, 'sel', {
    selector: { app: 'sel' },
    ports: [
      httpPort(80),
      { name: 'tcp', port: 9000, targetPort: 'echo-tcp', protocol: 'TCP' },
      { name: 'udp', port: 53, targetPort: 'echo-udp', protocol: 'UDP' },
    ],
  });
  const ip: string = svc.spec.clusterIP;
  await waitSlices(c, 'sel', '2 ready endpoints', (s) => endpointsOf(s).filter((e) => e.conditions?.ready !== false).length === 2 || `${endpointsOf(s).length}`);
  const both = [sel1.addr4, sel2.addr4];
  await waitBackends(c, allNodes(c), ip, 80, both);
  await waitBackends(c, allNodes(c), ip, 9000, both);
  await waitBackends(c, allNodes(c), ip, 53, both, 'UDP');

  expectServed(await c.echo(client1, 'http', hostPort(ip, 80), { count: 40, parallel: 4 }), ['sel-1', 'sel-2'], client1.addr4, hostPort(ip, 80));
  expectServed(await c.echo(client1, 'tcp', hostPort(ip, 9000), { count: 30, parallel: 4 }), ['sel-1', 'sel-2'], client1.addr4, hostPort(ip, 9000));
  expectServed(await c.echo(client1, 'udp', hostPort(ip, 53), { count: 30, parallel: 4 }), ['sel-1', 'sel-2'], client1.addr4, hostPort(ip, 53));

  // The selector decides: a pod relabelled out of it leaves the slices, then every node's maps.
  await c.patch(`/api/v1/namespaces/${NS}/pods/sel-2`, { metadata: { labels: { app: 'elsewhere' } } });
  await waitBackends(c, allNodes(c), ip, 80, [sel1.addr4]);
  expectServed(await c.echo(client1, 'http', hostPort(ip, 80), { count: 20, parallel: 4 }), ['sel-1']);
}

async function namedPorts(c: E2eCluster): Promise<void> {
  // Two pods name "http" on different container ports: one Service port, two target ports.
  const [{ client1 }, pods] = await Promise.all([
    clients(c),
    c.createPods([
      { name: 'np-1', node: node(c, 0).name, labels: { app: 'np' }, serve: { http: 8080 } },
      { name: 'np-2', node: node(c, 1).name, labels: { app: 'np' }, serve: { http: 8081 } },
    ]),
  ]);
  const [np1, np2] = pods as [Pod, Pod];
  const svc = await createService(c, 'np', { selector: { app: 'np' }, ports: [httpPort(80)] });
  const ip: string = svc.spec.clusterIP;
  const slices = await waitSlices(c, 'np', 'one slice per target port', (s) =>
    sorted(s.filter((x) => x.addressType === 'IPv4').flatMap((x) => (x.endpoints ?? []).length > 0 ? (x.ports ?? []).map((p) => p.port) : [])).join(',') === '8080,8081' || `${s.length} slices`,
  );
  expect(slices.filter((s) => s.addressType === 'IPv4').every((s) => s.ports?.[0]?.name === 'http')).toBe(true);
  await waitBackends(c, allNodes(c), ip, 80, [np1.addr4, np2.addr4]);
  const f = await frontendOn(c, node(c, 0).name, ip, 80);
  expect(sorted(f?.backends.map((b) => `${b.address}:${b.port}`) ?? [])).toEqual(sorted([`${np1.addr4}:8080`, `${np2.addr4}:8081`]));
  expectServed(await c.echo(client1, 'http', hostPort(ip, 80), { count: 40, parallel: 4 }), ['np-1', 'np-2'], client1.addr4);
}

async function readinessFlip(c: E2eCluster): Promise<void> {
  const [{ client2 }, pods] = await Promise.all([clients(c), c.createPods(backendSpecs('rd', c))]);
  const [rd1, rd2] = pods as [Pod, Pod];
  const svc = await createService(c, 'rd', { selector: { app: 'rd' }, ports: [httpPort(80)] });
  const ip: string = svc.spec.clusterIP;
  await waitBackends(c, allNodes(c), ip, 80, [rd1.addr4, rd2.addr4]);

  // Not ready: out of rotation everywhere, also on its own node (client2 is on rd-2's node).
  await c.setReady('rd-2', false);
  await waitBackends(c, allNodes(c), ip, 80, [rd1.addr4]);
  const ep = endpointsOf(await slicesOf(c, 'rd')).find((e) => e.addresses.includes(rd2.addr4));
  expect(ep?.conditions?.ready).toBe(false);
  expectServed(await c.echo(client2, 'http', hostPort(ip, 80), { count: 30, parallel: 4 }), ['rd-1'], client2.addr4);

  await c.setReady('rd-2', true);
  await waitBackends(c, allNodes(c), ip, 80, [rd1.addr4, rd2.addr4]);
  expectServed(await c.echo(client2, 'http', hostPort(ip, 80), { count: 40, parallel: 4 }), ['rd-1', 'rd-2'], client2.addr4);
}

async function terminatingFallback(c: E2eCluster): Promise<void> {
  const [{ client1 }, pods] = await Promise.all([clients(c), c.createPods(backendSpecs('tf', c))]);
  const [tf1, tf2] = pods as [Pod, Pod];
  const svc = await createService(c, 'tf', { selector: { app: 'tf' }, ports: [httpPort(80)] });
  const ip: string = svc.spec.clusterIP;
  await waitBackends(c, allNodes(c), ip, 80, [tf1.addr4, tf2.addr4]);

  // Both terminating but still serving: nothing is ready, so traffic falls back to them (KEP-1669).
  await Promise.all([c.startDeletion('tf-1', { serving: true }), c.startDeletion('tf-2', { serving: true })]);
  await waitSlices(c, 'tf', 'both terminating and serving', (s) => {
    const eps = endpointsOf(s);
    return (eps.length === 2 && eps.every((e) => e.conditions?.terminating === true && e.conditions.serving === true && e.conditions.ready === false)) || JSON.stringify(eps.map((e) => e.conditions));
  });
  for (const n of allNodes(c)) {
    await c.waitFor(`${n}: tf's backends terminating`, async () => {
      const f = await frontendOn(c, n, ip, 80);
      return (f?.backends.length === 2 && f.backends.every((b) => b.state === 'terminating')) || describeBackends(f);
    }, PROGRAM_WAIT_MS);
  }
  expectServed(await c.echo(client1, 'http', hostPort(ip, 80), { count: 40, parallel: 4 }), ['tf-1', 'tf-2'], client1.addr4);

  // A ready pod appears: the terminating ones leave rotation.
  const [tf3] = (await c.createPods([{ name: 'tf-3', node: node(c, 1).name, labels: { app: 'tf' } }])) as [Pod];
  await waitBackends(c, allNodes(c), ip, 80, [tf3.addr4]);
  expectServed(await c.echo(client1, 'http', hostPort(ip, 80), { count: 20, parallel: 4 }), ['tf-3']);
  await Promise.all([c.finishDeletion('tf-1'), c.finishDeletion('tf-2')]);
}

async function noEndpointsRefused(c: E2eCluster): Promise<void> {
  const { client1 } = await clients(c);
  const svc = await createService(c, 'ne', {
    selector: { app: 'ne-nothing' },
    ...(c.dualStack ? { ipFamilyPolicy: 'RequireDualStack', ipFamilies: ['IPv4', 'IPv6'] } : {}),
    ports: [httpPort(80), { name: 'dns', port: 53, targetPort: 53, protocol: 'UDP' }],
  });
  const ips: string[] = svc.spec.clusterIPs;
  for (const ip of ips) {
    for (const [port, proto] of [[80, 'TCP'], [53, 'UDP']] as const) {
      await c.waitFor(`${node(c, 0).name} to program ${hostPort(ip, port)}/${proto} as rejecting`, async () => {
        const f = await frontendOn(c, node(c, 0).name, ip, port, proto);
        return f?.noEndpoints === 'reject' || describeBackends(f);
      }, PROGRAM_WAIT_MS);
    }
  }
  // A long client timeout: a black hole would show as ETIMEDOUT, a reject as ECONNREFUSED.
  for (const ip of ips) {
    const tcp = await c.echo(client1, 'tcp', hostPort(ip, 80), { count: 3, timeoutMs: 10_000 });
    expect(tcp.byCode, `TCP to ${hostPort(ip, 80)}`).toEqual({ ECONNREFUSED: 3 });
    const udp = await c.echo(client1, 'udp-connected', hostPort(ip, 53), { count: 3, timeoutMs: 10_000 });
    expect(udp.byCode, `connected UDP to ${hostPort(ip, 53)}`).toEqual({ ECONNREFUSED: 3 });
  }
}

/**
 * The objects an ignored Service brings along exist (slices of the pod ig-1), then a sentinel
 * Service created after them is programmed on every node — the agents have seen the ignored one —
 * and nothing but the sentinel points at ig-1; `strait lb list` names the skipped Service and why.
 */
/** The pod every ignored-Service check points at (app=ig on the first node), made once. */
const igPods = new WeakMap<E2eCluster, Promise<Pod>>();
function igPod(c: E2eCluster): Promise<Pod> {
  let p = igPods.get(c);
  if (p === undefined) {
    p = c.createPods([{ name: 'ig-1', node: node(c, 0).name, labels: { app: 'ig' } }]).then((pods) => pods[0] as Pod);
    igPods.set(c, p);
  }
  return p;
}

/** A sentinel Service created after the ignored one, programmed on every node: the agents have seen both. */
async function sentinel(c: E2eCluster, name: string): Promise<void> {
  const ig1 = await igPod(c);
  const svc = await createService(c, name, { selector: { app: 'ig' }, ports: [httpPort(80)] });
  await waitBackends(c, allNodes(c), svc.spec.clusterIP, 80, [ig1.addr4]);
}

async function expectIgnored(c: E2eCluster, service: string, reason: string, ig1: Pod, served: readonly string[]): Promise<void> {
  for (const n of allNodes(c)) {
    const list = await c.lbList(n);
    expect(list.frontends.filter((f) => f.service?.startsWith(`${NS}/${service}:`) || f.service === `${NS}/${service}`), `${n}: frontends of ${service}`).toEqual([]);
    const pointing = list.frontends.filter((f) => f.backends.some((b) => b.address === ig1.addr4));
    expect(new Set(pointing.map((f) => f.address)), `${n}: frontends pointing at ig-1`).toEqual(new Set(served));
    expect(list.skipped.filter((s) => s.service === `${NS}/${service}`).map((s) => s.reason), `${n}: skipped`).toEqual([reason]);
  }
}

async function headlessIgnored(c: E2eCluster): Promise<void> {
  const ig1 = await igPod(c);
  await createService(c, 'ig-headless', { clusterIP: 'None', selector: { app: 'ig' }, ports: [httpPort(80)] });
  await waitSlices(c, 'ig-headless', 'the controller made slices for it', (s) => endpointsOf(s).length === 1 || `${endpointsOf(s).length}`);
  await sentinel(c, 'ig-sentinel-h');
  await expectIgnored(c, 'ig-headless', 'headless', ig1, await servedIgIps(c));
}

async function externalNameIgnored(c: E2eCluster): Promise<void> {
  const ig1 = await igPod(c);
  await createService(c, 'ig-extname', { type: 'ExternalName', externalName: 'echo.strait.invalid', ports: [{ name: 'http', port: 80 }] });
  // A hand-made slice for it (any managed-by counts): the Service type alone must keep it out.
  await c.api('POST', SLICES, {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'ig-extname-manual', labels: { 'kubernetes.io/service-name': 'ig-extname', 'endpointslice.kubernetes.io/managed-by': 'strait-e2e' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [ig1.addr4], conditions: { ready: true } }],
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  });
  await sentinel(c, 'ig-sentinel-e');
  await expectIgnored(c, 'ig-extname', 'externalName', ig1, await servedIgIps(c));
}

async function proxyNameIgnored(c: E2eCluster): Promise<void> {
  const [{ client1 }, ig1] = await Promise.all([clients(c), igPod(c)]);
  const svc = await createService(c, 'ig-proxied', { selector: { app: 'ig' }, ports: [httpPort(80)] }, { 'service.kubernetes.io/service-proxy-name': 'another-proxy' });
  const ip: string = svc.spec.clusterIP;
  await waitSlices(c, 'ig-proxied', 'the controller made slices for it', (s) => endpointsOf(s).length === 1 || `${endpointsOf(s).length}`);
  await sentinel(c, 'ig-sentinel-p');
  await expectIgnored(c, 'ig-proxied', 'serviceProxyName', ig1, await servedIgIps(c));
  const s = await c.echo(client1, 'http', hostPort(ip, 80), { count: 2, timeoutMs: 1_500 });
  expect(s.ok, `${ip} is nobody's to serve`).toBe(0);

  // The label is what kept it out: without it the Service is served.
  await c.patch(`${SERVICES}/ig-proxied`, { metadata: { labels: { 'service.kubernetes.io/service-proxy-name': null } } });
  await waitBackends(c, allNodes(c), ip, 80, [ig1.addr4]);
  expectServed(await c.echo(client1, 'http', hostPort(ip, 80), { count: 10, parallel: 2 }), ['ig-1'], client1.addr4);
}

/**
 * The ClusterIPs that may point at ig-1: every Service selecting app=ig that a proxy serves (not
 * headless, not ExternalName, not labelled for another proxy) — the sentinels, and ig-proxied once
 * its label is gone.
 */
async function servedIgIps(c: E2eCluster): Promise<string[]> {
  const l = await c.api('GET', SERVICES);
  return (l.items as Obj[])
    .filter((s) => s.spec.selector?.app === 'ig' && s.spec.type !== 'ExternalName' && s.spec.clusterIP !== 'None')
    .filter((s) => !('service.kubernetes.io/service-proxy-name' in (s.metadata.labels ?? {})))
    .map((s) => s.spec.clusterIP as string);
}

async function dualStack(c: E2eCluster): Promise<void> {
  const [{ client1 }, pods] = await Promise.all([clients(c), c.createPods(backendSpecs('ds', c))]);
  const [ds1, ds2] = pods as [Pod, Pod];
  const svc = await createService(c, 'ds', {
    selector: { app: 'ds' },
    ipFamilyPolicy: 'RequireDualStack',
    ipFamilies: ['IPv4', 'IPv6'],
    ports: [httpPort(80), { name: 'udp', port: 53, targetPort: 'echo-udp', protocol: 'UDP' }],
  });
  const [ip4, ip6] = svc.spec.clusterIPs as [string, string];
  expect(ip6).toContain(':');
  await waitSlices(c, 'ds', 'both families', (s) => (endpointsOf(s, 'IPv4').length === 2 && endpointsOf(s, 'IPv6').length === 2) || `${s.length} slices`);
  await waitBackends(c, allNodes(c), ip4, 80, [ds1.addr4, ds2.addr4]);
  await waitBackends(c, allNodes(c), ip6, 80, [ds1.addr6 as string, ds2.addr6 as string]);
  await waitBackends(c, allNodes(c), ip6, 53, [ds1.addr6 as string, ds2.addr6 as string], 'UDP');
  expectServed(await c.echo(client1, 'http', hostPort(ip4, 80), { count: 30, parallel: 4 }), ['ds-1', 'ds-2'], client1.addr4, hostPort(ip4, 80));
  expectServed(await c.echo(client1, 'http', hostPort(ip6, 80), { count: 30, parallel: 4 }), ['ds-1', 'ds-2'], client1.addr6, hostPort(ip6, 80));
  expectServed(await c.echo(client1, 'udp', hostPort(ip6, 53), { count: 30, parallel: 4 }), ['ds-1', 'ds-2'], client1.addr6, hostPort(ip6, 53));
}

async function affinityService(c: E2eCluster): Promise<{ ip: string }> {
  const existing = await c.api('GET', `${SERVICES}/sa`).catch(() => undefined);
  if (existing) return { ip: existing.spec.clusterIP };
  const pods = await c.createPods(backendSpecs('sa', c));
  const svc = await createService(c, 'sa', {
    selector: { app: 'sa' },
    sessionAffinity: 'ClientIP',
    sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } },
    ports: [httpPort(80)],
  });
  await waitBackends(c, allNodes(c), svc.spec.clusterIP, 80, pods.map((p) => p.addr4));
  return { ip: svc.spec.clusterIP };
}

async function affinityProgrammed(c: E2eCluster): Promise<void> {
  const { ip } = await affinityService(c);
  for (const n of allNodes(c)) {
    const f = await frontendOn(c, n, ip, 80);
    expect(f?.flags, n).toContain('affinity');
    expect(f?.affinityTimeoutSeconds, n).toBe(600);
  }
}

async function affinitySticks(c: E2eCluster): Promise<void> {
  const { client1, client2 } = await clients(c);
  const { ip } = await affinityService(c);
  // Every new connection of one client lands on one backend (random choice: 2^-29 by chance).
  for (const client of [client1, client2]) {
    const s = await c.echo(client, 'http', hostPort(ip, 80), { count: 30, parallel: 1 });
    expect(s.ok).toBe(30);
    expect(Object.keys(s.byPod), `${client.name}: pods that answered`).toHaveLength(1);
  }
}

async function preferClose(c: E2eCluster): Promise<void> {
  const n1 = node(c, 0);
  const n2 = node(c, 1);
  if (n1.zone === n2.zone) throw new Error(`PreferClose needs nodes in two zones (${n1.name} and ${n2.name} are both in ${n1.zone})`);
  const [{ client1, client2 }, pods] = await Promise.all([clients(c), c.createPods(backendSpecs('pc', c))]);
  const [pc1, pc2] = pods as [Pod, Pod];
  const svc = await createService(c, 'pc', { selector: { app: 'pc' }, trafficDistribution: 'PreferClose', ports: [httpPort(80)] });
  const ip: string = svc.spec.clusterIP;
  // The controller writes a zone hint per endpoint (its own zone).
  await waitSlices(c, 'pc', 'zone hints', (s) => {
    const eps = endpointsOf(s);
    return (eps.length === 2 && eps.every((e) => e.zone !== undefined && e.hints?.forZones?.map((z) => z.name).join() === e.zone)) || JSON.stringify(eps.map((e) => [e.zone, e.hints]));
  });
  await waitBackends(c, [n1.name], ip, 80, [pc1.addr4]);
  await waitBackends(c, [n2.name], ip, 80, [pc2.addr4]);
  expectServed(await c.echo(client1, 'http', hostPort(ip, 80), { count: 20, parallel: 4 }), ['pc-1'], client1.addr4);
  expectServed(await c.echo(client2, 'http', hostPort(ip, 80), { count: 20, parallel: 4 }), ['pc-2'], client2.addr4);

  // No ready endpoint left in zone 1: its node falls back to every endpoint.
  await c.setReady('pc-1', false);
  await waitBackends(c, [n1.name], ip, 80, [pc2.addr4]);
  expectServed(await c.echo(client1, 'http', hostPort(ip, 80), { count: 20, parallel: 4 }), ['pc-2'], client1.addr4);
}

async function selectorlessSlices(c: E2eCluster): Promise<void> {
  // No selector: the endpoints are whatever slices carry the Service's name, from any manager,
  // several per family; `ready` absent means ready.
  const [{ client1 }, pods] = await Promise.all([clients(c), c.createPods(backendSpecs('ms', c, { labels: { app: 'ms-none' } }))]);
  const [ms1, ms2] = pods as [Pod, Pod];
  const svc = await createService(c, 'ms', { ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] });
  const ip: string = svc.spec.clusterIP;
  const slice = (name: string, pod: Pod, conditions: Obj) => ({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, labels: { 'kubernetes.io/service-name': 'ms', 'endpointslice.kubernetes.io/managed-by': 'e2e.strait.invalid' } },
    addressType: 'IPv4',
    endpoints: [{ addresses: [pod.addr4], nodeName: pod.node, ...(conditions ? { conditions } : {}) }],
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  });
  await c.api('POST', SLICES, slice('ms-a', ms1, undefined));
  await c.api('POST', SLICES, slice('ms-b', ms2, { ready: true }));
  await waitBackends(c, allNodes(c), ip, 80, [ms1.addr4, ms2.addr4]);
  expectServed(await c.echo(client1, 'http', hostPort(ip, 80), { count: 30, parallel: 4 }), ['ms-1', 'ms-2'], client1.addr4);
  await c.patch(`${SLICES}/ms-b`, { endpoints: [{ addresses: [ms2.addr4], nodeName: ms2.node, conditions: { ready: false } }] });
  await waitBackends(c, allNodes(c), ip, 80, [ms1.addr4]);
  expectServed(await c.echo(client1, 'http', hostPort(ip, 80), { count: 10, parallel: 2 }), ['ms-1']);
}

async function hairpin(c: E2eCluster): Promise<void> {
  // The only backend calls its own Service: the request comes back to the pod that sent it.
  const [hp1] = (await c.createPods([{ name: 'hp-1', node: node(c, 0).name, labels: { app: 'hp' } }])) as [Pod];
  const svc = await createService(c, 'hp', { selector: { app: 'hp' }, ports: [httpPort(80), { name: 'udp', port: 53, targetPort: 'echo-udp', protocol: 'UDP' }] });
  const ip: string = svc.spec.clusterIP;
  await waitBackends(c, allNodes(c), ip, 80, [hp1.addr4]);
  expectServed(await c.echo(hp1, 'http', hostPort(ip, 80), { count: 6, parallel: 3, timeoutMs: 2_000 }), ['hp-1'], undefined, hostPort(ip, 80));
  expectServed(await c.echo(hp1, 'udp', hostPort(ip, 53), { count: 6, parallel: 3, timeoutMs: 2_000 }), ['hp-1'], undefined, hostPort(ip, 53));
}

async function udpFlowsMoveOn(c: E2eCluster): Promise<void> {
  // One UDP flow (same socket, same source port) keeps its backend; when that backend goes, the
  // flow's next datagrams reach a live one (kube-proxy clears UDP conntrack for it).
  const [{ client1 }, pods] = await Promise.all([clients(c), c.createPods(backendSpecs('ud', c))]);
  const svc = await createService(c, 'ud', { selector: { app: 'ud' }, ports: [{ name: 'dns', port: 53, targetPort: 'echo-udp', protocol: 'UDP' }] });
  const ip: string = svc.spec.clusterIP;
  await waitBackends(c, allNodes(c), ip, 53, pods.map((p) => p.addr4), 'UDP');
  const flow = { count: 5, reuse: true, localPort: 40053, timeoutMs: 2_000 } as const;
  const before = await c.echo(client1, 'udp', hostPort(ip, 53), flow);
  expect(before.ok).toBe(5);
  expect(Object.keys(before.byPod), 'one flow, one backend').toHaveLength(1);
  const gone = Object.keys(before.byPod)[0] as string;
  const stays = pods.find((p) => p.name !== gone) as Pod;
  await c.startDeletion(gone, { serving: false });
  await waitBackends(c, allNodes(c), ip, 53, [stays.addr4], 'UDP');
  await c.finishDeletion(gone);
  expectServed(await c.echo(client1, 'udp', hostPort(ip, 53), flow), [stays.name], client1.addr4, hostPort(ip, 53));
}

/** LoadBalancer ingress IPs and externalIPs routed to node 1 by the external client's "router". */
const LB_NET = '198.18.240.0/24';

async function loadBalancerAndExternalIPs(c: E2eCluster): Promise<void> {
  const n1 = node(c, 0);
  const [lbt1] = (await c.createPods([{ name: 'lbt-1', node: n1.name, labels: { app: 'lbt' } }])) as [Pod];
  const svc = await createService(c, 'lbt', {
    type: 'LoadBalancer',
    externalTrafficPolicy: 'Local',
    allocateLoadBalancerNodePorts: false,
    externalIPs: ['198.18.240.2'],
    selector: { app: 'lbt' },
    ports: [httpPort(80)],
  });
  expect(svc.spec.ports[0].nodePort).toBeUndefined();
  await c.patch(`${SERVICES}/lbt/status`, { status: { loadBalancer: { ingress: [{ ip: '198.18.240.1' }, { ip: '198.18.240.3', ipMode: 'Proxy' }] } } });
  await c.externalRoute(LB_NET, n1.name);
  await waitBackends(c, [n1.name], '198.18.240.1', 80, [lbt1.addr4]);
  await waitBackends(c, [n1.name], '198.18.240.2', 80, [lbt1.addr4]);
  // Exactly the ClusterIP, the ingress IP and the external IP: no NodePorts (allocateLoadBalancerNodePorts: false), not the ipMode Proxy address.
  const mine = (await c.frontends(n1.name)).filter((f) => f.service?.startsWith(`${NS}/lbt:`) && f.scope === 'external');
  expect(sorted(new Set(mine.map((f) => `${f.address}:${f.port}`)))).toEqual(sorted([`${svc.spec.clusterIP}:80`, '198.18.240.1:80', '198.18.240.2:80']));

  expectServed(await c.echo('external', 'http', hostPort('198.18.240.1', 80), { count: 20, parallel: 4 }), ['lbt-1'], c.external.addr4);
  expectServed(await c.echo('external', 'http', hostPort('198.18.240.2', 80), { count: 20, parallel: 4 }), ['lbt-1'], c.external.addr4);
  const proxied = await c.echo('external', 'http', hostPort('198.18.240.3', 80), { count: 2, timeoutMs: 1_500 });
  expect(proxied.ok, 'an ipMode Proxy address is the load balancer\'s, not ours').toBe(0);
}

async function loadBalancerSourceRanges(c: E2eCluster): Promise<void> {
  const n1 = node(c, 0);
  const [sr1] = (await c.createPods([{ name: 'lbsr-1', node: n1.name, labels: { app: 'lbsr' } }])) as [Pod];
  await createService(c, 'lbsr', {
    type: 'LoadBalancer',
    externalTrafficPolicy: 'Local',
    allocateLoadBalancerNodePorts: false,
    loadBalancerSourceRanges: ['198.18.0.251/32'],
    selector: { app: 'lbsr' },
    ports: [httpPort(80)],
  });
  await c.patch(`${SERVICES}/lbsr/status`, { status: { loadBalancer: { ingress: [{ ip: '198.18.240.4' }] } } });
  await c.externalRoute(LB_NET, n1.name);
  await waitBackends(c, [n1.name], '198.18.240.4', 80, [sr1.addr4]);
  expect((await frontendOn(c, n1.name, '198.18.240.4', 80))?.flags).toContain('source-ranges');
  // Not from an allowed range: dropped.
  const denied = await c.echo('external', 'http', hostPort('198.18.240.4', 80), { count: 2, timeoutMs: 1_500 });
  expect(denied.byCode, 'outside loadBalancerSourceRanges').toEqual({ ETIMEDOUT: 2 });
  // Allowed once the range includes the client.
  await c.patch(`${SERVICES}/lbsr`, { spec: { loadBalancerSourceRanges: ['198.18.0.251/32', `${c.external.addr4}/32`] } });
  await c.waitFor('the external client allowed', async () => (await c.echo('external', 'http', hostPort('198.18.240.4', 80), { count: 1, timeoutMs: 1_000 })).ok === 1);
  expectServed(await c.echo('external', 'http', hostPort('198.18.240.4', 80), { count: 10, parallel: 2 }), ['lbsr-1'], c.external.addr4);
}

// ---- the checks: traffic policies, health checks, scale ----------------------------------------

async function externalTrafficPolicyLocal(c: E2eCluster): Promise<void> {
  const n1 = node(c, 0);
  const n2 = node(c, 1);
  const [etp1] = (await c.createPods([{ name: 'etp-1', node: n1.name, labels: { app: 'etp' } }])) as [Pod];
  // LoadBalancer (no load balancer assigns it an address here): the apiserver allocates a
  // healthCheckNodePort only for that type; its NodePorts are what the test uses.
  const svc = await createService(c, 'etp', {
    type: 'LoadBalancer',
    externalTrafficPolicy: 'Local',
    selector: { app: 'etp' },
    ...(c.dualStack ? { ipFamilyPolicy: 'RequireDualStack', ipFamilies: ['IPv4', 'IPv6'] } : {}),
    ports: [httpPort(80)],
  });
  const nodePort: number = svc.spec.ports[0].nodePort;
  const hcPort: number = svc.spec.healthCheckNodePort;
  expect(hcPort).toBeGreaterThan(0);
  await waitBackends(c, [n1.name], n1.addr4, nodePort, [etp1.addr4]);
  await waitBackends(c, [n2.name], n2.addr4, nodePort, []);

  // External client → NodePort of the node with the local backend: served there, client kept.
  expectServed(await c.echo('external', 'http', hostPort(n1.addr4, nodePort), { count: 20, parallel: 4 }), ['etp-1'], c.external.addr4);
  if (c.dualStack && n1.addr6 !== undefined && c.external.addr6 !== undefined) {
    await waitBackends(c, [n1.name], n1.addr6, nodePort, [etp1.addr6 as string]);
    expectServed(await c.echo('external', 'http', hostPort(n1.addr6, nodePort), { count: 20, parallel: 4 }), ['etp-1'], c.external.addr6);
  }

  // The health-check node port, probed from outside as a load balancer does.
  const probe = async (n: ClusterNode, addr = n.addr4) => {
    const r = await c.httpGet('external', `http://${hostPort(addr, hcPort)}/`);
    return { status: r.status, code: r.code, body: r.body ? JSON.parse(r.body) : undefined };
  };
  // kube-proxy's body; the exact count per address family is healthCheckCountPerFamily's.
  const named = { service: { namespace: NS, name: 'etp' }, serviceProxyHealthy: true };
  await c.waitFor(`${n1.name}'s health check to answer 200`, async () => (await probe(n1)).status === 200);
  const up = await probe(n1);
  expect(up.body).toMatchObject(named);
  expect(up.body.localEndpoints).toBeGreaterThan(0);
  expect(await probe(n2)).toEqual({ status: 503, code: undefined, body: { ...named, localEndpoints: 0 } });
  if (c.dualStack && n2.addr6 !== undefined) expect((await probe(n2, n2.addr6)).status).toBe(503);

  // It follows the endpoints: a local pod on node 2 → 200 there; node 1's pod not ready → 503.
  await c.createPods([{ name: 'etp-2', node: n2.name, labels: { app: 'etp' } }]);
  await c.waitFor(`${n2.name}'s health check to turn 200`, async () => (await probe(n2)).status === 200 || JSON.stringify(await probe(n2)));
  expect((await probe(n2)).body).toMatchObject(named);
  await c.setReady('etp-1', false);
  await c.waitFor(`${n1.name}'s health check to turn 503`, async () => (await probe(n1)).status === 503 || JSON.stringify(await probe(n1)));
}

async function healthCheckCountPerFamily(c: E2eCluster): Promise<void> {
  // kube-proxy runs one health server per IP family (pkg/proxy/healthcheck, tcp4 / tcp6), each
  // counting that family's local ready endpoint addresses: one dual-stack pod is 1 on either.
  const n1 = node(c, 0);
  await c.createPods([{ name: 'hcc-1', node: n1.name, labels: { app: 'hcc' } }]);
  const svc = await createService(c, 'hcc', {
    type: 'LoadBalancer',
    externalTrafficPolicy: 'Local',
    selector: { app: 'hcc' },
    ...(c.dualStack ? { ipFamilyPolicy: 'RequireDualStack', ipFamilies: ['IPv4', 'IPv6'] } : {}),
    ports: [httpPort(80)],
  });
  const hcPort: number = svc.spec.healthCheckNodePort;
  const addrs = [n1.addr4, ...(c.dualStack && n1.addr6 !== undefined ? [n1.addr6] : [])];
  for (const addr of addrs) {
    await c.waitFor(`${n1.name}'s health check on ${addr} to answer 200`, async () => (await c.httpGet('external', `http://${hostPort(addr, hcPort)}/`)).status === 200);
    const r = await c.httpGet('external', `http://${hostPort(addr, hcPort)}/`);
    expect(JSON.parse(r.body ?? '{}').localEndpoints, `probe on ${addr}`).toBe(1);
  }
}

async function nodeHealth(c: E2eCluster): Promise<void> {
  for (const n of c.nodes) {
    const r = await c.httpGet('external', `http://${hostPort(n.addr4, 10256)}/healthz`);
    expect(r.status, `${n.name} ${r.code ?? ''}`).toBe(200);
    const body = JSON.parse(r.body ?? '{}');
    expect(body.nodeEligible, n.name).toBe(true);
    expect(Date.parse(body.lastUpdated), n.name).not.toBeNaN();
  }
}

async function internalTrafficPolicyLocal(c: E2eCluster): Promise<void> {
  const n1 = node(c, 0);
  const n2 = node(c, 1);
  const [{ client1, client2 }, pods] = await Promise.all([clients(c), c.createPods(backendSpecs('itp', c))]);
  const [itp1, itp2] = pods as [Pod, Pod];
  const svc = await createService(c, 'itp', { selector: { app: 'itp' }, internalTrafficPolicy: 'Local', ports: [httpPort(80)] });
  const ip: string = svc.spec.clusterIP;
  await waitBackends(c, [n1.name], ip, 80, [itp1.addr4]);
  await waitBackends(c, [n2.name], ip, 80, [itp2.addr4]);
  expectServed(await c.echo(client1, 'http', hostPort(ip, 80), { count: 20, parallel: 4 }), ['itp-1'], client1.addr4);
  expectServed(await c.echo(client2, 'http', hostPort(ip, 80), { count: 20, parallel: 4 }), ['itp-2'], client2.addr4);

  // No local endpoint: dropped, as kube-proxy does (not rejected: the Service has endpoints elsewhere).
  const lone = await createService(c, 'itp-lone', { selector: { app: 'itp-lone' }, internalTrafficPolicy: 'Local', ports: [httpPort(80)] });
  const [lone1] = (await c.createPods([{ name: 'itp-lone-1', node: n1.name, labels: { app: 'itp-lone' } }])) as [Pod];
  const loneIp: string = lone.spec.clusterIP;
  await waitBackends(c, [n1.name], loneIp, 80, [lone1.addr4]);
  await c.waitFor(`${n2.name} to program itp-lone as dropping`, async () => {
    const f = await frontendOn(c, n2.name, loneIp, 80);
    return f?.noEndpoints === 'drop' || describeBackends(f);
  }, PROGRAM_WAIT_MS);
  const s = await c.echo(client2, 'tcp', hostPort(loneIp, 80), { count: 2, timeoutMs: 1_500 });
  expect(s.byCode, 'a pod on a node without local endpoints').toEqual({ ETIMEDOUT: 2 });
  expectServed(await c.echo(client1, 'http', hostPort(loneIp, 80), { count: 5 }), ['itp-lone-1']);
}

const SCALE_TO = 50;

async function scaleUnderLoad(c: E2eCluster): Promise<void> {
  const { client1 } = await clients(c);
  const nodes = allNodes(c);
  const [first] = (await c.createPods([{ name: 'sc-0', node: node(c, 0).name, labels: { app: 'sc' } }])) as [Pod];
  const svc = await createService(c, 'sc', { selector: { app: 'sc' }, ports: [httpPort(80)] });
  const ip: string = svc.spec.clusterIP;
  await waitBackends(c, nodes, ip, 80, [first.addr4]);

  // Continuous requests from client1 (batches of new connections) while the Service scales.
  let stop = false;
  const totals = { ok: 0, failed: 0, batches: 0, byPod: new Map<string, number>(), errors: [] as unknown[] };
  const load = (async () => {
    while (!stop) {
      const s = await c.echo(client1, 'http', hostPort(ip, 80), { count: 40, parallel: 4, timeoutMs: 3_000 });
      totals.ok += s.ok;
      totals.failed += s.failed;
      totals.batches++;
      for (const [p, n] of Object.entries(s.byPod)) totals.byPod.set(p, (totals.byPod.get(p) ?? 0) + n);
      totals.errors.push(...s.errors.slice(0, 5));
    }
  })();

  const t0 = performance.now();
  try {
    const specs: PodSpec[] = [];
    for (let i = 1; i < SCALE_TO; i++) specs.push({ name: `sc-${i}`, node: nodes[i % nodes.length] as string, labels: { app: 'sc' } });
    const added = await c.createPods(specs);
    const all = [first, ...added];
    for (const n of nodes) {
      await c.waitFor(`${n}: sc with ${SCALE_TO} backends`, async () => (await frontendOn(c, n, ip, 80))?.backends.length === SCALE_TO || `${(await frontendOn(c, n, ip, 80))?.backends.length}`, 60_000);
    }
    const up = Math.round(performance.now() - t0);
    const atFull = totals.batches;
    await c.waitFor('two more batches at full scale', () => totals.batches >= atFull + 2 || `${totals.batches - atFull}`, 60_000);

    // Back to 1: graceful deletion (not ready, out of every node's maps), then the pods go.
    await Promise.all(added.map((p) => c.startDeletion(p.name, { serving: false })));
    await waitBackends(c, nodes, ip, 80, [first.addr4]);
    await Promise.all(added.map((p) => c.finishDeletion(p.name)));
    const atOne = totals.batches;
    await c.waitFor('two more batches after scaling back', () => totals.batches >= atOne + 2 || `${totals.batches - atOne}`, 60_000);
    console.log(`scale 1→${SCALE_TO} programmed on every node after ${up} ms; down and up in ${Math.round(performance.now() - t0)} ms; ` +
      `${totals.ok} requests in ${totals.batches} batches reached ${totals.byPod.size} of ${all.length} pods`);
  } finally {
    stop = true;
    await load;
  }
  expect(totals.errors).toEqual([]);
  expect(totals.failed).toBe(0);
  expect(totals.ok).toBeGreaterThan(0);
  // The new pods took traffic while they were there (not only sc-0).
  expect(totals.byPod.size).toBeGreaterThan(SCALE_TO / 2);
}

// ---- the lists ----------------------------------------------------------------------------------

/** Services: selection, ports, conditions, ignored kinds, families, affinity, topology. */
export const SERVICE_CHECKS: readonly Check[] = [
  { title: 'a selector Service through the real EndpointSlice controller: HTTP, TCP and UDP ports reach pods on both nodes; a pod relabelled out of the selector leaves', run: selectorService, timeoutMs: 90_000 },
  { title: 'a Service without a selector uses every EndpointSlice labelled with its name, from any manager, several per family; ready absent = ready', run: selectorlessSlices, timeoutMs: 90_000 },
  { title: 'named target ports that differ per pod: one Service port reaches "http" on 8080 in one pod and 8081 in the other', run: namedPorts, timeoutMs: 90_000 },
  { title: 'readiness flips: a not-ready pod leaves rotation on every node (its own too) and comes back when ready', run: readinessFlip, timeoutMs: 90_000 },
  { title: 'terminating fallback: pods all terminating but serving still get traffic; a ready pod takes over', run: terminatingFallback, timeoutMs: 90_000 },
  { title: 'no endpoints: TCP and connected UDP to the ClusterIP (IPv4 and IPv6) are refused at once (ECONNREFUSED, not a timeout)', run: noEndpointsRefused, timeoutMs: 90_000 },
  { title: 'headless Services are ignored: no frontend although the controller made slices; lb list names it skipped', run: headlessIgnored, timeoutMs: 90_000 },
  { title: 'ExternalName Services are ignored, even with a hand-made EndpointSlice', run: externalNameIgnored, timeoutMs: 90_000 },
  { title: 'Services labelled service.kubernetes.io/service-proxy-name are ignored; without the label the same Service is served', run: proxyNameIgnored, timeoutMs: 90_000 },
  // With socket LB (kind's DaemonSet) the pod connects to itself directly; the lab's agents run the
  // per-packet path, which SNATs the hairpin flow to the node (bpf/lib/uplink.h lb_hairpin).
  { title: 'hairpin: the only backend of a Service reaches itself through the ClusterIP (TCP and UDP)', run: hairpin, timeoutMs: 60_000 },
  { title: 'a UDP flow whose backend goes away moves on to a live backend (same socket, same source port)', run: udpFlowsMoveOn, timeoutMs: 90_000 },
  { title: 'dual-stack: the IPv4 and the IPv6 ClusterIP both reach pods on both nodes, which see the client\'s own address of that family', run: dualStack, timeoutMs: 90_000 },
  { title: 'sessionAffinity ClientIP is programmed: affinity flag and timeoutSeconds on every node', run: affinityProgrammed, timeoutMs: 90_000 },
  { title: 'sessionAffinity ClientIP keeps each client on one backend', run: affinitySticks, timeoutMs: 90_000 },
  { title: 'trafficDistribution PreferClose: each node uses its zone\'s endpoints (controller-written hints), and all when its zone has none ready', run: preferClose, timeoutMs: 90_000 },
];

/** Traffic policies, health checks, scale. */
export const POLICY_CHECKS: readonly Check[] = [
  { title: 'node health: :10256/healthz answers 200 from the external client on every node', run: nodeHealth, timeoutMs: 30_000 },
  { title: 'externalTrafficPolicy Local: the external client\'s address reaches the backend through the NodePort (IPv4 and IPv6); the health-check node port answers 200 with the local endpoint count, 503 without, and follows changes', run: externalTrafficPolicyLocal, timeoutMs: 90_000 },
  { title: 'LoadBalancer ingress IPs and externalIPs reach a local backend from outside with the client address kept; no NodePort with allocateLoadBalancerNodePorts false; ipMode Proxy addresses left alone', run: loadBalancerAndExternalIPs, timeoutMs: 90_000 },
  { title: 'loadBalancerSourceRanges: a client outside the ranges is dropped, one inside is served', run: loadBalancerSourceRanges, timeoutMs: 90_000 },
  {
    title: 'the health-check node port counts local endpoints per address family, as kube-proxy (one dual-stack pod: 1 on IPv4 and on IPv6)',
    run: healthCheckCountPerFamily,
    timeoutMs: 60_000,
  },
  { title: 'internalTrafficPolicy Local: a pod reaches only its own node\'s endpoints; with none local its packets are dropped (as kube-proxy)', run: internalTrafficPolicyLocal, timeoutMs: 90_000 },
  { title: `a Service scaled from 1 to ${SCALE_TO} pods and back under continuous requests: no failed request`, run: scaleUnderLoad, timeoutMs: 300_000 },
];

/**
 * How a test file registers a check: test.fails for an expected failure (it passes while the
 * feature is missing, and fails the day it works), unless STRAIT_E2E_EXPECTED_FAILURES=run, which
 * runs them as ordinary tests to show why they fail.
 */
export function testFor(ch: Check, cluster: E2eCluster['name']): 'test' | 'fails' {
  return expectedToFail(ch, cluster) && process.env['STRAIT_E2E_EXPECTED_FAILURES'] !== 'run' ? 'fails' : 'test';
}

function expectedToFail(ch: Check, cluster: E2eCluster['name']): boolean {
  return ch.waitsOn !== undefined && (ch.waitsOnIn === undefined || ch.waitsOnIn.includes(cluster));
}

/** The vitest title: expected failures say so and name the issue they wait on. */
export function checkTitle(ch: Check, cluster: E2eCluster['name']): string {
  return expectedToFail(ch, cluster) ? `${ch.title} [expected failure — waits on ${ch.waitsOn}]` : ch.title;
}
