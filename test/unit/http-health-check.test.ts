// Health-check node ports of externalTrafficPolicy: Local Services, served for
// real on 127.0.0.1: kube-proxy's body and status codes, listeners following
// sync(), and a taken port reported without disturbing the others.
import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { HealthCheckServers } from '../../src/agent/health-check-servers.js';
import type { HealthCheck } from '../../src/model/types.js';

const servers: HealthCheckServers[] = [];
const blockers: Server[] = [];

afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
  for (const b of blockers.splice(0)) await new Promise((r) => b.close(r));
});

function make(options: { isProxyHealthy?: () => boolean; bindAddresses?: string[] } = {}): HealthCheckServers {
  const s = new HealthCheckServers({ bindAddresses: ['127.0.0.1'], ...options });
  servers.push(s);
  return s;
}

/** A free port (listened on, then released) or a port held by another listener. */
async function port(hold = false): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  if (hold) blockers.push(server);
  else await new Promise((r) => server.close(r));
  return address.port;
}

function hc(name: string, nodePort: number, localEndpoints: number, namespace = 'shop'): HealthCheck {
  return { ref: { kind: 'Service', namespace, name }, nodePort, localEndpoints };
}

async function probe(p: number): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(`http://127.0.0.1:${p}/`);
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') };
}

async function refused(p: number): Promise<boolean> {
  try {
    await fetch(`http://127.0.0.1:${p}/`);
    return false;
  } catch {
    return true;
  }
}

describe('HealthCheckServers', () => {
  it('a dual-stack Service answers each probe with the count of the family it arrived on (kube-proxy: one server per family)', async () => {
    const s = make({ bindAddresses: ['127.0.0.1', '::1'] });
    const p = await port();
    await s.sync([{ ...hc('dual', p, 2), localEndpointsByFamily: { IPv4: 0, IPv6: 2 } }]);
    const v4 = await fetch(`http://127.0.0.1:${p}/`);
    expect(v4.status).toBe(503);
    expect(JSON.parse(await v4.text())).toMatchObject({ localEndpoints: 0 });
    const v6 = await fetch(`http://[::1]:${p}/`);
    expect(v6.status).toBe(200);
    expect(JSON.parse(await v6.text())).toMatchObject({ localEndpoints: 2 });
  });

  it('answers 200 with kube-proxy\'s body while there are local endpoints', async () => {
    const s = make();
    const p = await port();
    expect(await s.sync([hc('web', p, 2)])).toEqual([]);
    const res = await probe(p);
    expect(res.status).toBe(200);
    expect(res.type).toBe('application/json');
    expect(res.body).toBe('{\n\t"service": {\n\t\t"namespace": "shop",\n\t\t"name": "web"\n\t},\n\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}');
  });

  it('answers 503 when the node has no local endpoint', async () => {
    const s = make();
    const p = await port();
    await s.sync([hc('web', p, 0)]);
    const res = await probe(p);
    expect(res.status).toBe(503);
    expect(JSON.parse(res.body)).toEqual({ service: { namespace: 'shop', name: 'web' }, localEndpoints: 0, serviceProxyHealthy: true });
  });

  it('answers 503 while the proxy is unhealthy, whatever the count', async () => {
    let healthy = false;
    const s = make({ isProxyHealthy: () => healthy });
    const p = await port();
    await s.sync([hc('web', p, 3)]);
    expect((await probe(p)).status).toBe(503);
    expect(JSON.parse((await probe(p)).body)).toMatchObject({ serviceProxyHealthy: false });
    healthy = true;
    expect((await probe(p)).status).toBe(200);
  });

  it('updates counts in place, opens new ports, closes gone and moved ones', async () => {
    const s = make();
    const [pa, pb, pc, pb2] = [await port(), await port(), await port(), await port()];
    await s.sync([hc('a', pa, 1), hc('b', pb, 1)]);
    expect((await probe(pa)).status).toBe(200);

    await s.sync([hc('a', pa, 0), hc('b', pb2, 1), hc('c', pc, 5)]);
    expect((await probe(pa)).status).toBe(503); // same listener, new count
    expect(await refused(pb)).toBe(true); // moved away
    expect(JSON.parse((await probe(pb2)).body)).toMatchObject({ service: { name: 'b' }, localEndpoints: 1 });
    expect(JSON.parse((await probe(pc)).body)).toMatchObject({ service: { name: 'c' }, localEndpoints: 5 });
    expect(s.serving().map((x) => `${x.ref.name}:${x.localEndpoints}`).sort()).toEqual(['a:0', 'b:1', 'c:5']);

    await s.sync([]);
    expect(await refused(pa)).toBe(true);
    expect(await refused(pc)).toBe(true);
    expect(s.serving()).toEqual([]);
  });

  it('reports a port already in use as an error value; the other Services are served', async () => {
    const s = make();
    const taken = await port(true);
    const free = await port();
    const errors = await s.sync([hc('blocked', taken, 1), hc('web', free, 1)]);
    expect(errors).toEqual([
      expect.objectContaining({ ref: { kind: 'Service', namespace: 'shop', name: 'blocked' }, nodePort: taken, code: 'EADDRINUSE', address: `127.0.0.1:${taken}` }),
    ]);
    expect((await probe(free)).status).toBe(200);

    // Retried on the next sync, and served once the port is free.
    await new Promise((r) => blockers.pop()?.close(r));
    expect(await s.sync([hc('blocked', taken, 1), hc('web', free, 1)])).toEqual([]);
    expect((await probe(taken)).status).toBe(200);
  });

  it('lets a port pass from one Service to another in one sync', async () => {
    const s = make();
    const p = await port();
    await s.sync([hc('old', p, 1)]);
    expect(await s.sync([hc('new', p, 1)])).toEqual([]);
    expect(JSON.parse((await probe(p)).body)).toMatchObject({ service: { name: 'new' } });
  });

  it('serialises overlapping syncs', async () => {
    const s = make();
    const p = await port();
    const first = s.sync([hc('web', p, 1)]);
    const second = s.sync([hc('web', p, 4)]);
    expect(await first).toEqual([]);
    expect(await second).toEqual([]);
    expect(JSON.parse((await probe(p)).body)).toMatchObject({ localEndpoints: 4 });
  });

  it('close() closes every port', async () => {
    const s = make();
    const p = await port();
    await s.sync([hc('web', p, 1)]);
    await probe(p);
    await s.close();
    expect(await refused(p)).toBe(true);
    expect(await s.sync([hc('web', p, 1)])).toEqual([]);
    expect(await refused(p)).toBe(true);
  });
});
