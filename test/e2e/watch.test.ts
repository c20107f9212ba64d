// src/k8s watch against a real control plane (etcd + kube-apiserver + kube-controller-manager
// built from the official Go modules by lab/build-k8s.sh): the store follows Services,
// EndpointSlices and this Node; the agent's least-privilege service account is enough; a 30 s
// API server outage keeps every object and is reported; after the restart the watch catches up
// (including a deletion made behind the API server's back, seen only through the relist); and
// slices made by the real EndpointSlice controller from Pods arrive.
//
// Never skipped: when the binaries are not cached they are built first (long, hence the hook
// timeout), and a failed build fails the file.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  createAgentServiceAccount, ensureK8sBinaries, k8sBinariesCached, startControlPlane,
} from '../lib/control-plane.js';
import type { AgentCredentials, ControlPlane } from '../lib/control-plane.js';
import { backoffDelay, MemoryClusterStore, watchCluster } from '../../src/k8s/index.js';
import type { ClusterWatch, ConnectionChange, WatchClusterOptions, WatchLogger } from '../../src/k8s/index.js';

const OUTAGE_MS = 30_000;

let binDir = '';
let cp: ControlPlane;
let sa: AgentCredentials;
const watchers: ClusterWatch[] = [];

beforeAll(async () => {
  binDir = await ensureK8sBinaries();
}, k8sBinariesCached() ? 120_000 : 90 * 60_000);

beforeAll(async () => {
  cp = await startControlPlane({ binDir, controllerManager: true });
  sa = await createAgentServiceAccount(cp);
}, 120_000);

afterAll(async () => {
  for (const w of watchers) await w.stop();
  await cp?.stop();
}, 60_000);

// ---- helpers ----------------------------------------------------------------------------------

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await cond()) return Math.round(performance.now() - t0);
    if (performance.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

const CONTROLLER_TIMEOUT_MS = 60_000;

/** Runs a wait on kube-controller-manager's work; a failure carries the tail of its log. */
async function withKcmLog<T>(wait: () => Promise<T>): Promise<T> {
  try {
    return await wait();
  } catch (e) {
    throw new Error(`${(e as Error).message}\n--- kube-controller-manager log tail ---\n${cp.logTail('kube-controller-manager', 40)}`);
  }
}

interface Harness {
  store: MemoryClusterStore;
  watch: ClusterWatch;
  connection: ConnectionChange[];
  apiErrors: number;
  syncedCalls: number;
  logs: string[];
}

function startWatch(nodeName: string, extra: Partial<WatchClusterOptions> = {}): Harness {
  const logs: string[] = [];
  const line = (lvl: string) => (msg: string, f?: Record<string, unknown>) => logs.push(`${lvl} ${msg} ${f ? JSON.stringify(f) : ''}`);
  const log: WatchLogger = { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };
  const h: Harness = { store: new MemoryClusterStore(), watch: undefined as unknown as ClusterWatch, connection: [], apiErrors: 0, syncedCalls: 0, logs };
  h.watch = watchCluster({
    kubeconfig: sa.kubeconfigPath,
    nodeName,
    store: h.store,
    log,
    backoff: { initialMs: 200, maxMs: 2_000 },
    onSynced: () => h.syncedCalls++,
    onConnectionChange: (c) => h.connection.push(c),
    onApiError: () => h.apiErrors++,
    ...extra,
  });
  watchers.push(h.watch);
  return h;
}

async function stopWatch(h: Harness): Promise<void> {
  await h.watch.stop();
  watchers.splice(watchers.indexOf(h.watch), 1);
}

async function createNamespace(name: string): Promise<void> {
  await cp.api('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
}

function service(ns: string, name: string, extra: Record<string, unknown> = {}) {
  return {
    apiVersion: 'v1', kind: 'Service',
    metadata: { name, namespace: ns },
    spec: { ipFamilyPolicy: 'PreferDualStack', ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }], ...extra },
  };
}

function slice(ns: string, name: string, svc: string, ready: boolean, addresses = ['198.18.50.1']) {
  return {
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: { name, namespace: ns, labels: { 'kubernetes.io/service-name': svc, 'endpointslice.kubernetes.io/managed-by': 'strait-test' } },
    addressType: 'IPv4',
    endpoints: addresses.map((a) => ({ addresses: [a], conditions: { ready }, nodeName: 'watch-node' })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

const svcPath = (ns: string, name = '') => `/api/v1/namespaces/${ns}/services${name ? `/${name}` : ''}`;
const slicePath = (ns: string, name = '') => `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices${name ? `/${name}` : ''}`;

// ---- tests --------------------------------------------------------------------------------------

describe('backoffDelay', () => {
  test('grows exponentially, is capped, and is jittered downwards', () => {
    const o = { initialMs: 100, maxMs: 1_000, factor: 2, jitter: 0.5 };
    expect([0, 1, 2, 3, 4, 10, 1000].map((a) => backoffDelay(a, o, () => 0))).toEqual([100, 200, 400, 800, 1000, 1000, 1000]);
    expect(backoffDelay(3, o, () => 1)).toBe(400);
    expect(backoffDelay(20, o, () => 1)).toBe(500);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(2, o);
      expect(d).toBeGreaterThanOrEqual(200);
      expect(d).toBeLessThanOrEqual(400);
    }
  });
});

describe('watchCluster configuration', () => {
  test('without a kubeconfig outside a cluster it refuses to start, naming the fix', () => {
    const env = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    delete process.env.KUBERNETES_SERVICE_HOST;
    delete process.env.KUBERNETES_SERVICE_PORT;
    try {
      expect(() => watchCluster({ nodeName: 'n', store: new MemoryClusterStore() })).toThrow(/--kubeconfig/);
    } finally {
      if (env.host !== undefined) process.env.KUBERNETES_SERVICE_HOST = env.host;
      if (env.port !== undefined) process.env.KUBERNETES_SERVICE_PORT = env.port;
    }
  });
});

describe('watchCluster against a real kube-apiserver', () => {
  test('the control plane runs the pinned version on loopback with benchmarking-range Service CIDRs', async () => {
    const v = await cp.api('GET', '/version');
    expect(v.gitVersion).toMatch(/^v1\.\d+\.\d+/);
    expect(cp.server).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const k = await cp.api('GET', svcPath('default', 'kubernetes'));
    expect(k.spec.clusterIP).toBe('198.19.0.1');
    console.log(`kube-apiserver ${v.gitVersion}: started in ${cp.timings.apiserverMs[0]} ms (pki ${cp.timings.pkiMs} ms, etcd ${cp.timings.etcdMs} ms, kube-controller-manager ${cp.timings.controllerManagerMs} ms)`);
  });

  test('the agent service account may list/watch Services, EndpointSlices and Nodes, and nothing else', async () => {
    const asAgent = (method: string, path: string, body?: unknown) => cp.request(method, path, body, { token: sa.token });
    await Promise.all(['/api/v1/services', '/apis/discovery.k8s.io/v1/endpointslices', '/api/v1/nodes'].map(async (p) => {
      expect((await asAgent('GET', `${p}?limit=1`)).status, `list ${p}`).toBe(200);
      expect((await asAgent('GET', `${p}?watch=true&timeoutSeconds=1`)).status, `watch ${p}`).toBe(200);
    }));
    const denied: [string, string, unknown?][] = [
      ['GET', '/api/v1/pods'],
      ['GET', '/api/v1/secrets'],
      ['GET', '/api/v1/namespaces/default/configmaps'],
      ['GET', '/api/v1/endpoints'],
      ['GET', svcPath('default', 'kubernetes')], // get is not needed, so not granted
      ['POST', svcPath('default'), service('default', 'not-allowed')],
      ['DELETE', slicePath('default', 'kubernetes')],
      ['PATCH', '/api/v1/nodes/any', {}],
    ];
    for (const [m, p, b] of denied) expect((await asAgent(m, p, b)).status, `${m} ${p}`).toBe(403);
  });

  test('the store follows Services, EndpointSlices and this Node: create, change, delete', async () => {
    const ns = 'watch-crud';
    const node = 'watch-node';
    await createNamespace(ns);
    const h = startWatch(node);
    await h.watch.synced;
    expect(h.syncedCalls).toBe(1);
    expect(h.watch.status()).toMatchObject({ synced: true, connected: true, apiErrors: 0 });
    // The initial list: the apiserver's own Service and slice.
    expect(h.store.services.has('default/kubernetes')).toBe(true);
    expect(h.store.endpointSlices.has('default/kubernetes')).toBe(true);
    expect(h.store.node).toBeUndefined();

    // Service: create (dual-stack ClusterIPs from the benchmarking ranges), change, delete.
    await cp.api('POST', svcPath(ns), service(ns, 'web'));
    let ms = await waitFor('Service web in the store', () => h.store.services.has(`${ns}/web`));
    const web = h.store.services.get(`${ns}/web`)!;
    expect(web.spec?.clusterIPs?.[0]).toMatch(/^198\.19\./);
    expect(web.spec?.clusterIPs?.[1]).toMatch(/^2001:2:0:ff::/);
    console.log(`Service create → store: ${ms} ms`);
    await cp.patch(svcPath(ns, 'web'), { spec: { ports: [{ name: 'http', port: 80, targetPort: 8080 }, { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 }] } });
    await waitFor('Service web to get its second port', () => h.store.services.get(`${ns}/web`)?.spec?.ports?.length === 2);

    // EndpointSlice: create, readiness flip, more endpoints, delete.
    await cp.api('POST', slicePath(ns), slice(ns, 'web-1', 'web', true));
    ms = await waitFor('slice web-1 in the store', () => h.store.endpointSlices.has(`${ns}/web-1`));
    console.log(`EndpointSlice create → store: ${ms} ms`);
    expect(h.store.endpointSlices.get(`${ns}/web-1`)!.endpoints?.[0]?.conditions?.ready).toBe(true);
    await cp.api('PUT', slicePath(ns, 'web-1'), { ...slice(ns, 'web-1', 'web', false), metadata: { ...slice(ns, 'web-1', 'web', false).metadata, resourceVersion: h.store.endpointSlices.get(`${ns}/web-1`)!.metadata!.resourceVersion } });
    await waitFor('slice web-1 not ready', () => h.store.endpointSlices.get(`${ns}/web-1`)?.endpoints?.[0]?.conditions?.ready === false);
    await cp.patch(slicePath(ns, 'web-1'), { endpoints: [{ addresses: ['198.18.50.1'] }, { addresses: ['198.18.50.2'] }] });
    await waitFor('slice web-1 with 2 endpoints', () => h.store.endpointSlices.get(`${ns}/web-1`)?.endpoints?.length === 2);
    await cp.api('DELETE', slicePath(ns, 'web-1'));
    await waitFor('slice web-1 deleted', () => !h.store.endpointSlices.has(`${ns}/web-1`));
    await cp.api('DELETE', svcPath(ns, 'web'));
    await waitFor('Service web deleted', () => !h.store.services.has(`${ns}/web`));

    // Node: only this node (field selector), with its changes and its deletion.
    await cp.api('POST', '/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: 'some-other-node' } });
    await cp.api('POST', '/api/v1/nodes', {
      apiVersion: 'v1', kind: 'Node', metadata: { name: node, labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
    });
    await waitFor('Node in the store', () => h.store.node?.metadata?.name === node);
    await cp.patch(`/api/v1/nodes/${node}`, { metadata: { labels: { 'topology.kubernetes.io/zone': 'zone-b' } } });
    await waitFor('Node zone change', () => h.store.node?.metadata?.labels?.['topology.kubernetes.io/zone'] === 'zone-b');
    await cp.api('DELETE', `/api/v1/nodes/${node}`);
    await waitFor('Node deleted', () => h.store.node === undefined);
    await cp.api('DELETE', '/api/v1/nodes/some-other-node');

    const st = h.watch.status();
    expect(st).toMatchObject({ connected: true, apiErrors: 0 });
    expect(st.resources.services.objects).toBe(h.store.services.size);
    expect(st.resources.endpointslices.objects).toBe(h.store.endpointSlices.size);
    expect(st.resources.node.objects).toBe(0);
    expect(st.resources.services.storeErrors + st.resources.endpointslices.storeErrors + st.resources.node.storeErrors).toBe(0);
    expect(h.connection).toEqual([{ connected: true, resource: expect.any(String) }]);
    await stopWatch(h);
  });

  test('slices made by the real EndpointSlice controller from Pods reach the store', async () => {
    const ns = 'watch-kcm';
    const node = 'kcm-node';
    await createNamespace(ns);
    await cp.api('POST', '/api/v1/nodes', {
      apiVersion: 'v1', kind: 'Node', metadata: { name: node, labels: { 'topology.kubernetes.io/zone': 'zone-a' } },
    });
    const h = startWatch(node);
    await h.watch.synced;
    expect(h.store.node?.metadata?.name).toBe(node);

    await cp.api('POST', svcPath(ns), service(ns, 'echo', {
      selector: { app: 'echo' },
      ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 'web' }],
    }));
    // Wait for the ServiceAccount controller to have made this namespace's `default` account
    // (the ServiceAccount admission plugin refuses pods before).
    await waitFor('default ServiceAccount in the namespace', async () =>
      (await cp.request('GET', `/api/v1/namespaces/${ns}/serviceaccounts/default`)).status === 200);
    await cp.api('POST', `/api/v1/namespaces/${ns}/pods`, {
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name: 'echo-0', namespace: ns, labels: { app: 'echo' } },
      spec: {
        nodeName: node,
        automountServiceAccountToken: false,
        containers: [{ name: 'echo', image: 'strait.invalid/echo:never-pulled', ports: [{ name: 'web', containerPort: 8080 }] }],
      },
    });
    const setStatus = (ready: boolean) => cp.patch(`/api/v1/namespaces/${ns}/pods/echo-0/status`, {
      status: {
        phase: 'Running',
        podIP: '198.18.100.10',
        podIPs: [{ ip: '198.18.100.10' }],
        conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
      },
    });
    await setStatus(true);

    const controllerSlice = () => [...h.store.endpointSlices.values()].find((s) =>
      s.metadata?.namespace === ns && s.metadata.labels?.['kubernetes.io/service-name'] === 'echo' &&
      s.metadata.labels?.['endpointslice.kubernetes.io/managed-by'] === 'endpointslice-controller.k8s.io');
    // The controller's first slice waits on its informers and work queue, which on a loaded
    // 2-core CI machine took over 10 s once: allow a minute, and show its log when it never comes.
    const ms = await withKcmLog(() => waitFor('a controller-made slice with the ready pod', () =>
      controllerSlice()?.endpoints?.some((e) => e.addresses[0] === '198.18.100.10' && e.conditions?.ready === true) ?? false,
    CONTROLLER_TIMEOUT_MS));
    console.log(`Pod ready → controller slice in the store: ${ms} ms`);
    const s = controllerSlice()!;
    expect(s.addressType).toBe('IPv4');
    expect(s.ports).toEqual([{ name: 'http', port: 8080, protocol: 'TCP' }]); // named targetPort resolved per pod
    expect(s.endpoints?.[0]).toMatchObject({ nodeName: node, zone: 'zone-a' });

    await setStatus(false);
    await withKcmLog(() => waitFor('the endpoint to turn not ready', () =>
      controllerSlice()?.endpoints?.some((e) => e.addresses[0] === '198.18.100.10' && e.conditions?.ready === false) ?? false,
    CONTROLLER_TIMEOUT_MS));
    await cp.api('DELETE', `/api/v1/namespaces/${ns}/pods/echo-0?gracePeriodSeconds=0`);
    await withKcmLog(() => waitFor('the endpoint to go', () => (controllerSlice()?.endpoints ?? []).length === 0, CONTROLLER_TIMEOUT_MS));
    await stopWatch(h);
  }, 3 * CONTROLLER_TIMEOUT_MS + 30_000);

  test(`an API server outage of ${OUTAGE_MS / 1000} s keeps every object, is reported, and the watch catches up after`, async () => {
    const ns = 'watch-outage';
    const node = 'outage-node';
    await createNamespace(ns);
    await cp.api('POST', '/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: node } });
    for (const name of ['a', 'b', 'c']) await cp.api('POST', svcPath(ns), service(ns, name));
    await cp.api('POST', slicePath(ns), slice(ns, 'a-1', 'a', true));
    const h = startWatch(node);
    await h.watch.synced;
    await waitFor('the outage test objects', () => ['a', 'b', 'c'].every((n) => h.store.services.has(`${ns}/${n}`)) &&
      h.store.endpointSlices.has(`${ns}/a-1`) && h.store.node !== undefined);
    const snapshot = () => ({
      services: new Map(h.store.services),
      slices: new Map(h.store.endpointSlices),
      node: h.store.node,
    });
    const before = snapshot();
    const writesBefore = h.store.writes;
    // A write to a resource nobody watches: every informer's resourceVersion is now older than the
    // newest, so the restarted apiserver (fresh watch cache) answers their watches with 410 Gone.
    await cp.api('POST', `/api/v1/namespaces/${ns}/configmaps`, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'bump' } });

    const killedAt = performance.now();
    await cp.killApiServer('SIGKILL');
    const detectMs = await waitFor('the watch to report the disconnection', () => h.connection.at(-1)?.connected === false);
    console.log(`apiserver killed: disconnection reported after ${detectMs} ms (${h.connection.at(-1)?.error})`);
    expect(h.watch.status().connected).toBe(false);
    // Behind the API server's back: delete Service c in etcd. Only a relist can reveal that.
    await cp.etcdctl(['del', `/registry/services/specs/${ns}/c`]);

    const errorsAtKill = h.watch.status().apiErrors;
    while (performance.now() - killedAt < OUTAGE_MS) {
      // The store keeps every object, untouched, for the whole outage.
      expect(h.store.writes).toBe(writesBefore);
      expect(snapshot()).toEqual(before);
      expect(h.watch.status()).toMatchObject({ connected: false, synced: true });
      await sleep(1_000);
    }
    const st = h.watch.status();
    expect(st.apiErrors).toBeGreaterThan(errorsAtKill);
    expect(h.apiErrors).toBe(st.apiErrors);
    for (const r of Object.values(st.resources)) {
      expect(r.connected).toBe(false);
      expect(r.restarts).toBeGreaterThan(0);
      expect(r.lastError).toBeTruthy();
    }
    console.log(`after ${OUTAGE_MS} ms of outage: ${st.apiErrors} API errors counted, store unchanged (${h.store.services.size} Services, ${h.store.endpointSlices.size} slices)`);

    const restartMs = await cp.startApiServer();
    // Changes made after the restart, while the watch may still be backing off.
    await cp.api('POST', svcPath(ns), service(ns, 'd'));
    await cp.patch(svcPath(ns, 'a'), { metadata: { labels: { changed: 'after-outage' } } });
    await cp.api('DELETE', slicePath(ns, 'a-1'));
    const catchUpMs = await waitFor('the watch to catch up', () =>
      h.watch.status().connected &&
      h.store.services.has(`${ns}/d`) &&
      h.store.services.get(`${ns}/a`)?.metadata?.labels?.changed === 'after-outage' &&
      !h.store.endpointSlices.has(`${ns}/a-1`) &&
      !h.store.services.has(`${ns}/c`), 20_000);
    console.log(`apiserver restarted in ${restartMs} ms; watch reconnected and caught up ${catchUpMs} ms after /readyz`);
    expect(h.store.services.has(`${ns}/b`)).toBe(true);
    expect(h.store.node?.metadata?.name).toBe(node);
    expect(h.connection.at(-1)).toEqual({ connected: true, resource: expect.any(String) });
    // Every informer found its resourceVersion expired and relisted.
    const after = h.watch.status();
    for (const [name, r] of Object.entries(after.resources)) {
      expect(r.gone, `${name}: 410 Gone seen`).toBeGreaterThanOrEqual(1);
      expect(r.lists, `${name}: relisted`).toBeGreaterThanOrEqual(2);
    }
    expect(h.syncedCalls).toBe(1);
    expect(after.resources.services.objects).toBe(h.store.services.size);
    expect(after.resources.endpointslices.objects).toBe(h.store.endpointSlices.size);

    // And the watch keeps working normally afterwards.
    await cp.api('DELETE', svcPath(ns, 'b'));
    await waitFor('Service b deleted', () => !h.store.services.has(`${ns}/b`));
    await stopWatch(h);
  }, OUTAGE_MS + 90_000);
});
