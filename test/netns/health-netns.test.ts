// Listeners inside another network namespace (agent --health-netns): the native shim creates and
// binds the socket inside the namespace, Node serves the fd from the root namespace. The lab's
// agents run in the root namespace for nodes that are namespaces; this is how node health
// (:10256) and each ETP-Local Service's healthCheckNodePort answer on the node's own addresses.
//
// Checked with real connections from inside the namespace (a Node client run with
// `ip netns exec`), and from the root namespace, where nothing must listen.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { AGENT_USAGE, parseAgentFlags } from '../../src/agent/command.js';
import { HealthCheckServers } from '../../src/agent/health-check-servers.js';
import { listenHttp, type OpenListener } from '../../src/agent/http-listener.js';
import { Lab, nodeBinary } from '../lib/netns.js';

const PREFIX = 'st-hn-';
let lab: Lab;
let ns: string;
const open: OpenListener[] = [];

beforeAll(async () => {
  lab = await Lab.create(PREFIX);
  ns = await lab.addNamespace('n');
  await lab.addr(ns, 'lo', '198.18.0.1/32');
  await lab.addr(ns, 'lo', '2001:2::1/128');
});

afterAll(async () => {
  await Promise.all(open.map((l) => l.close()));
  await lab?.destroy();
});

/** GET url from inside the namespace: status and body, or the error code. */
async function getIn(url: string): Promise<{ status?: number; body?: string; code?: string }> {
  const script = `
    const http = require('node:http');
    http.get(${JSON.stringify(url)}, { timeout: 3000 }, (res) => {
      let body = ''; res.setEncoding('utf8'); res.on('data', (d) => body += d);
      res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body })));
    }).on('error', (e) => console.log(JSON.stringify({ code: e.code ?? e.message })))
      .on('timeout', function () { this.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })); });`;
  const r = await lab.exec(ns, nodeBinary(), ['-e', script], { check: true });
  return JSON.parse(r.stdout) as { status?: number; body?: string; code?: string };
}

/** Connect from the root namespace: the error code, or "connected". */
function connectHere(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

describe('listeners inside a network namespace', () => {
  test('listenHttp with netns: served inside the namespace on every address, absent from the root namespace', async () => {
    const r = await listenHttp({ host: '', port: 0 }, (_req, res) => res.end('in-ns'), undefined, { netns: ns });
    if (!r.ok) throw new Error(r.error.message);
    open.push(r.value);
    const port = r.value.address.port;
    expect(port).toBeGreaterThan(0);
    // One dual-stack socket: both families, and the namespace's own addresses.
    expect(await getIn(`http://198.18.0.1:${port}/`)).toEqual({ status: 200, body: 'in-ns' });
    expect(await getIn(`http://[2001:2::1]:${port}/`)).toEqual({ status: 200, body: 'in-ns' });
    expect(await getIn(`http://127.0.0.1:${port}/`)).toEqual({ status: 200, body: 'in-ns' });
    // The root namespace has no such listener (its loopback is another one).
    expect(await connectHere('127.0.0.1', port)).toBe('ECONNREFUSED');
  });

  test('a port taken inside the namespace, an address the namespace lacks, a namespace that does not exist: errors naming them', async () => {
    const first = await listenHttp({ host: '198.18.0.1', port: 0 }, (_req, res) => res.end(), undefined, { netns: ns });
    if (!first.ok) throw new Error(first.error.message);
    open.push(first.value);
    const taken = await listenHttp({ host: '198.18.0.1', port: first.value.address.port }, (_req, res) => res.end(), undefined, { netns: ns });
    expect(taken.ok).toBe(false);
    if (!taken.ok) {
      expect(taken.error.code).toBe('EADDRINUSE');
      expect(taken.error.address).toContain(ns);
    }
    const foreign = await listenHttp({ host: '198.18.0.2', port: 0 }, (_req, res) => res.end(), undefined, { netns: ns });
    expect(!foreign.ok && foreign.error.code).toBe('EADDRNOTAVAIL');
    const missing = await listenHttp({ host: '', port: 0 }, (_req, res) => res.end(), undefined, { netns: `${PREFIX}nosuch` });
    expect(!missing.ok && missing.error.code).toBe('ENOENT');
  });

  test('HealthCheckServers with netns: the health-check node port answers inside the namespace, 200 with local endpoints, 503 without', async () => {
    const hc = new HealthCheckServers({ netns: `/run/netns/${ns}` });
    try {
      const ref = { kind: 'Service' as const, namespace: 'default', name: 'etp' };
      // A port from the NodePort range is what the apiserver allocates; any free port serves here.
      const probe = await listenHttp({ host: '', port: 0 }, () => undefined, undefined, { netns: ns });
      if (!probe.ok) throw new Error(probe.error.message);
      const nodePort = probe.value.address.port;
      await probe.value.close();
      expect(await hc.sync([{ ref, nodePort, localEndpoints: 2 }])).toEqual([]);
      const up = await getIn(`http://198.18.0.1:${nodePort}/`);
      expect(up.status).toBe(200);
      expect(JSON.parse(up.body ?? '')).toEqual({ service: { namespace: 'default', name: 'etp' }, localEndpoints: 2, serviceProxyHealthy: true });
      await hc.sync([{ ref, nodePort, localEndpoints: 0 }]);
      const down = await getIn(`http://[2001:2::1]:${nodePort}/`);
      expect(down.status).toBe(503);
      expect(JSON.parse(down.body ?? '').localEndpoints).toBe(0);
      expect(await connectHere('127.0.0.1', nodePort)).toBe('ECONNREFUSED');
    } finally {
      await hc.close();
    }
  });

  test('strait agent --health-netns: documented, parsed, off by default (not implied by --devices-netns)', () => {
    expect(AGENT_USAGE).toContain('--health-netns NS');
    const parse = (...extra: string[]) => {
      const c = parseAgentFlags(['--node-name', 'n1', '--log-format', 'json', ...extra]);
      if (c === 'help') throw new Error('help');
      return c.healthNetns;
    };
    expect(parse()).toBeUndefined();
    expect(parse('--devices-netns', ns)).toBeUndefined();
    expect(parse('--health-netns', ns)).toBe(ns);
  });
});
