// The agent's HTTP endpoints, served for real on 127.0.0.1 ephemeral ports:
// /healthz, /livez and /readyz with kube-proxy's semantics, /metrics in the
// Prometheus text format, and the errors when an address is bad or taken.
import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Clock } from '../../src/agent/clock.js';
import { AgentHealth } from '../../src/agent/health.js';
import { parseListenAddress } from '../../src/agent/http-listener.js';
import { startHttp, type HttpServers } from '../../src/agent/http.js';
import { Registry } from '../../src/agent/metrics.js';

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

function fakeClock(): Clock & { t: number } {
  const c = {
    t: T0,
    now: () => c.t,
    setTimer: () => () => {},
  };
  return c;
}

const open: HttpServers[] = [];
const blockers: Server[] = [];

afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  for (const b of blockers.splice(0)) await new Promise((r) => b.close(r));
});

async function serve(health: AgentHealth, registry = new Registry(), addrs: { metricsAddr?: string; healthzAddr?: string } = {}): Promise<HttpServers> {
  const result = await startHttp({ metricsAddr: '127.0.0.1:0', healthzAddr: '127.0.0.1:0', ...addrs, health, registry });
  if (!result.ok) throw new Error(JSON.stringify(result.error));
  open.push(result.value);
  return result.value;
}

async function get(port: number | undefined, path: string, method = 'GET'): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') };
}

async function takenPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  blockers.push(server);
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

describe('parseListenAddress', () => {
  it.each([
    ['127.0.0.1:10249', { host: '127.0.0.1', port: 10249 }],
    ['0.0.0.0:10256', { host: '0.0.0.0', port: 10256 }],
    ['[::1]:0', { host: '::1', port: 0 }],
    [':10256', { host: '', port: 10256 }],
  ])('%s', (text, want) => {
    expect(parseListenAddress(text)).toEqual({ ok: true, value: want });
  });

  it.each(['127.0.0.1', 'localhost:80', '::1:80', '127.0.0.1:70000', '[127.0.0.1]:80', '1.2.3:80'])('rejects %s', (text) => {
    expect(parseListenAddress(text).ok).toBe(false);
  });
});

describe('/healthz and /livez (kube-proxy semantics)', () => {
  it('is healthy while nothing waits for a sync, with lastUpdated/currentTime/nodeEligible', async () => {
    const clock = fakeClock();
    const health = new AgentHealth({ healthTimeoutMs: 60_000, clock });
    const s = await serve(health);
    const res = await get(s.healthz?.port, '/healthz');
    expect(res.status).toBe(200);
    expect(res.type).toBe('application/json');
    expect(JSON.parse(res.body)).toEqual({
      lastUpdated: new Date(T0).toISOString(),
      currentTime: new Date(T0).toISOString(),
      lastSynced: null,
      nodeEligible: true,
    });
  });

  it.each([
    { name: 'a change synced in time', steps: ['queue', 'wait 30000', 'sync', 'wait 60000'], healthy: true },
    { name: 'a change waiting less than the timeout', steps: ['sync', 'queue', 'wait 59999'], healthy: true },
    { name: 'a change waiting longer than the timeout', steps: ['sync', 'queue', 'wait 60000'], healthy: false },
    { name: 'the oldest waiting change counts', steps: ['sync', 'queue', 'wait 40000', 'queue', 'wait 20000'], healthy: false },
    { name: 'a first sync that is overdue', steps: ['queue', 'wait 60000'], healthy: false },
    { name: 'no changes for a long time', steps: ['sync', 'wait 3600000'], healthy: true },
  ])('$name → healthy $healthy', async ({ steps, healthy }) => {
    const clock = fakeClock();
    const health = new AgentHealth({ healthTimeoutMs: 60_000, clock });
    for (const step of steps) {
      const [what, ms] = step.split(' ');
      if (what === 'queue') health.queuedUpdate();
      else if (what === 'sync') health.updated();
      else clock.t += Number(ms);
    }
    const s = await serve(health);
    for (const path of ['/healthz', '/livez']) {
      const res = await get(s.healthz?.port, path);
      expect(res.status).toBe(healthy ? 200 : 503);
    }
  });

  it('reports the real last sync time, and the last update when unhealthy', async () => {
    const clock = fakeClock();
    const health = new AgentHealth({ healthTimeoutMs: 1000, clock });
    health.updated();
    clock.t += 500;
    health.queuedUpdate();
    clock.t += 1000;
    const s = await serve(health);
    const body = JSON.parse((await get(s.healthz?.port, '/healthz')).body) as Record<string, unknown>;
    expect(body).toEqual({
      lastUpdated: new Date(T0).toISOString(),
      currentTime: new Date(T0 + 1500).toISOString(),
      lastSynced: new Date(T0).toISOString(),
      oldestPending: new Date(T0 + 500).toISOString(),
      nodeEligible: true,
    });
  });

  it.each([
    { name: 'tainted ToBeDeletedByClusterAutoscaler', node: { spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler' }] } } },
    { name: 'being deleted', node: { metadata: { deletionTimestamp: '2026-01-01T00:00:00Z' } } },
  ])('fails /healthz but not /livez for a node $name', async ({ node }) => {
    const health = new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() });
    health.syncNode(node);
    const s = await serve(health);
    const healthz = await get(s.healthz?.port, '/healthz');
    expect(healthz.status).toBe(503);
    expect(JSON.parse(healthz.body)).toMatchObject({ nodeEligible: false });
    expect((await get(s.healthz?.port, '/livez')).status).toBe(200);
    health.syncNode({ spec: { taints: [{ key: 'other' }] } });
    expect((await get(s.healthz?.port, '/healthz')).status).toBe(200);
  });

  it('serves the health paths on the metrics address too', async () => {
    const health = new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() });
    const s = await serve(health);
    expect((await get(s.metrics?.port, '/healthz')).status).toBe(200);
  });
});

describe('/readyz', () => {
  it('is 503 with reasons until the first sync and while a source is disconnected', async () => {
    const health = new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() });
    health.setSource('kubernetes', { connected: false, reason: 'initial list not done' });
    const s = await serve(health);
    let res = await get(s.metrics?.port, '/readyz');
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toEqual({ ready: false, reasons: ['initial sync not done', 'kubernetes: initial list not done'] });

    health.setSource('kubernetes', { connected: true });
    health.updated();
    res = await get(s.metrics?.port, '/readyz');
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ ready: true });

    health.setSource('kubernetes', { connected: false, reason: 'connect ECONNREFUSED' });
    res = await get(s.healthz?.port, '/readyz');
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toEqual({ ready: false, reasons: ['kubernetes: connect ECONNREFUSED'] });
    // Losing the API makes the agent unready, not unhealthy.
    expect((await get(s.healthz?.port, '/healthz')).status).toBe(200);
  });
});

describe('/metrics', () => {
  it('renders the registry in the Prometheus text format, collectors first', async () => {
    const registry = new Registry();
    const services = registry.gauge({ name: 'strait_services', help: 'Services programmed.' });
    const packets = registry.counter({ name: 'strait_datapath_packets_total', help: 'Datapath packets.', labelNames: ['reason', 'direction'] });
    let reads = 0;
    registry.addCollector(() => {
      reads += 1;
      packets.set(100 * reads, { reason: 'forwarded', direction: 'ingress' });
    });
    services.set(3);
    const s = await serve(new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() }), registry);
    const res = await get(s.metrics?.port, '/metrics');
    expect(res.status).toBe(200);
    expect(res.type).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(res.body).toBe(
      [
        '# HELP strait_services Services programmed.',
        '# TYPE strait_services gauge',
        'strait_services 3',
        '# HELP strait_datapath_packets_total Datapath packets.',
        '# TYPE strait_datapath_packets_total counter',
        'strait_datapath_packets_total{reason="forwarded",direction="ingress"} 100',
        '',
      ].join('\n'),
    );
    expect((await get(s.metrics?.port, '/metrics')).body).toContain('direction="ingress"} 200');
  });

  it('is not served on the health address', async () => {
    const s = await serve(new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() }));
    expect((await get(s.healthz?.port, '/metrics')).status).toBe(404);
  });

  it('answers 500 when a collector fails, and keeps serving', async () => {
    const registry = new Registry();
    let fail = true;
    registry.addCollector(() => {
      if (fail) throw new Error('map read failed');
    });
    const s = await serve(new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() }), registry);
    const res = await get(s.metrics?.port, '/metrics');
    expect(res.status).toBe(500);
    expect(res.body).toContain('map read failed');
    fail = false;
    expect((await get(s.metrics?.port, '/metrics')).status).toBe(200);
  });
});

describe('routing', () => {
  it.each([
    { path: '/nope', method: 'GET', status: 404 },
    { path: '/healthz?verbose=1', method: 'GET', status: 200 },
    { path: '/healthz', method: 'HEAD', status: 200 },
    { path: '/healthz', method: 'POST', status: 405 },
    { path: '/metrics', method: 'DELETE', status: 405 },
  ])('$method $path → $status', async ({ path, method, status }) => {
    const s = await serve(new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() }));
    expect((await get(s.metrics?.port, path, method)).status).toBe(status);
  });
});

describe('startHttp errors and options', () => {
  it('returns an error naming the server when its port is taken, leaving nothing open', async () => {
    const port = await takenPort();
    const health = new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() });
    const result = await startHttp({ metricsAddr: '127.0.0.1:0', healthzAddr: `127.0.0.1:${port}`, health, registry: new Registry() });
    expect(result.ok).toBe(false);
    expect(result.ok ? undefined : result.error).toMatchObject({ kind: 'listen', server: 'healthz', code: 'EADDRINUSE', address: `127.0.0.1:${port}` });
  });

  it('returns an error for a malformed address', async () => {
    const health = new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() });
    const result = await startHttp({ metricsAddr: 'localhost', healthzAddr: '', health, registry: new Registry() });
    expect(result.ok ? undefined : result.error).toMatchObject({ kind: 'address', server: 'metrics' });
  });

  it('turns a server off with an empty address', async () => {
    const health = new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() });
    const s = await serve(health, new Registry(), { healthzAddr: '' });
    expect(s.healthz).toBeUndefined();
    expect(s.metrics?.port).toBeGreaterThan(0);
  });

  it('serves everything from one listener when both addresses are the same', async () => {
    const port = await takenPort();
    await new Promise((r) => blockers.pop()?.close(r));
    const health = new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() });
    const s = await serve(health, new Registry(), { metricsAddr: `127.0.0.1:${port}`, healthzAddr: `127.0.0.1:${port}` });
    expect(s.healthz).toEqual(s.metrics);
    expect((await get(port, '/metrics')).status).toBe(200);
    expect((await get(port, '/healthz')).status).toBe(200);
  });

  it('listens on IPv6 loopback', async () => {
    const health = new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() });
    const s = await serve(health, new Registry(), { metricsAddr: '[::1]:0', healthzAddr: '' });
    expect(s.metrics?.host).toBe('::1');
    const res = await fetch(`http://[::1]:${s.metrics?.port}/healthz`);
    expect(res.status).toBe(200);
  });

  it('close() frees the ports, even with a kept-alive connection', async () => {
    const health = new AgentHealth({ healthTimeoutMs: 1000, clock: fakeClock() });
    const s = await serve(health);
    const port = s.metrics?.port;
    await get(port, '/healthz');
    await s.close();
    await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
  });
});
