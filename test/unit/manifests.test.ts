// The cluster-less source: a directory of manifests followed into the object
// store. Every test works in its own temporary directory.
// Address plan (lab ranges only): cluster IPs 198.19.0.0/24, pods 198.18.16.0/20.
import { mkdtemp, rename, rm, symlink, unlink, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/agent/logger.js';
import { watchManifests, type ManifestWatcher, type ManifestWatchOptions } from '../../src/agent/manifests.js';
import { ObjectStore } from '../../src/agent/object-store.js';

function service(name: string, ip: string, namespace = 'default'): string {
  return `apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: ${namespace}
spec:
  clusterIP: ${ip}
  ports:
    - port: 80
`;
}

function slice(name: string, service: string, address: string): string {
  return `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${name}
  labels: { kubernetes.io/service-name: ${service} }
addressType: IPv4
ports: [{ port: 8080 }]
endpoints:
  - addresses: [${address}]
`;
}

let dir: string;
let store: ObjectStore;
let logs: Record<string, unknown>[];
const watchers: ManifestWatcher[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'strait-manifests-'));
  store = new ObjectStore({ nodeName: 'node-a' });
  logs = [];
});

afterEach(async () => {
  for (const w of watchers.splice(0)) await w.close();
  await rm(dir, { recursive: true, force: true });
});

async function start(options: ManifestWatchOptions = {}): Promise<ManifestWatcher> {
  const log = createLogger({ format: 'json', level: 'debug', sink: { write: (l: string) => logs.push(JSON.parse(l) as Record<string, unknown>) } });
  const result = await watchManifests(dir, store, { log, watch: false, rescanIntervalMs: 0, ...options });
  if (!result.ok) throw new Error(result.error.message);
  watchers.push(result.value);
  return result.value;
}

function storeKeys(): string[] {
  return [
    ...store.keys('Service').map((k) => `Service ${k}`),
    ...store.keys('EndpointSlice').map((k) => `EndpointSlice ${k}`),
    ...store.keys('Node').map((k) => `Node ${k}`),
  ];
}

function clusterIP(key: string): string | undefined {
  return store.get('Service', key)?.spec?.clusterIP;
}

async function until(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('watchManifests: reading the directory', () => {
  it('reads YAML and JSON files, skipping other names and dotfiles, and marks the store synced', async () => {
    await writeFile(join(dir, 'web.yaml'), `${service('web', '198.19.0.10')}---\n${slice('web-1', 'web', '198.18.16.5')}`);
    await writeFile(join(dir, 'db.json'), JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'db' }, spec: { clusterIP: '198.19.0.11', ports: [{ port: 5432 }] } }));
    await writeFile(join(dir, 'node.yml'), 'apiVersion: v1\nkind: Node\nmetadata: { name: node-a }\n');
    await writeFile(join(dir, 'notes.txt'), service('txt', '198.19.0.12'));
    await writeFile(join(dir, '.hidden.yaml'), service('hidden', '198.19.0.13'));
    await mkdir(join(dir, 'sub.yaml'));
    expect(store.hasSynced()).toBe(false);
    await start();
    expect(storeKeys()).toEqual(['Service default/db', 'Service default/web', 'EndpointSlice default/web-1', 'Node node-a']);
    expect(store.hasSynced(['Service', 'EndpointSlice', 'Node'])).toBe(true);
    expect(store.snapshot().node?.metadata?.name).toBe('node-a');
  });

  it('fails as a value when the directory cannot be read at start', async () => {
    const result = await watchManifests(join(dir, 'missing'), store, { watch: false });
    expect(result.ok).toBe(false);
    expect(result.ok ? '' : result.error.message).toMatch(/ENOENT/);
  });

  it('follows symlinked files (a ConfigMap volume)', async () => {
    await mkdir(join(dir, '..data'));
    await writeFile(join(dir, '..data', 'web.yaml'), service('web', '198.19.0.10'));
    await symlink(join('..data', 'web.yaml'), join(dir, 'web.yaml'));
    await start();
    expect(storeKeys()).toEqual(['Service default/web']);
  });
});

describe('watchManifests: following changes (explicit rescans)', () => {
  it('applies added, changed and removed files, and objects removed from a file', async () => {
    await writeFile(join(dir, 'a.yaml'), `${service('a', '198.19.0.10')}---\n${service('b', '198.19.0.11')}`);
    const w = await start();
    expect(storeKeys()).toEqual(['Service default/a', 'Service default/b']);

    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.20'));
    await writeFile(join(dir, 'c.json'), JSON.stringify([{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'c' } }]));
    let scan = await w.rescan();
    expect(storeKeys()).toEqual(['Service default/a', 'Service default/c']);
    expect(clusterIP('default/a')).toBe('198.19.0.20');
    expect(scan.changed).toBe(3); // a changed, b deleted, c added

    await unlink(join(dir, 'c.json'));
    scan = await w.rescan();
    expect(storeKeys()).toEqual(['Service default/a']);
    expect(scan.objects).toEqual({ Service: 1, EndpointSlice: 0, Node: 0 });
  });

  it('changes nothing in the store when nothing changed (or a file was rewritten as it was)', async () => {
    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.10'));
    const w = await start();
    const version = store.version;
    await w.rescan();
    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.10'));
    const scan = await w.rescan();
    expect(scan.changed).toBe(0);
    expect(store.version).toBe(version);
  });

  it('keeps the previous objects of a file that no longer parses, and reports file and line', async () => {
    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.10'));
    await writeFile(join(dir, 'b.yaml'), service('b', '198.19.0.11'));
    const w = await start();
    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.20').replace('ports:', 'ports: [oops'));
    await writeFile(join(dir, 'b.yaml'), service('b', '198.19.0.21'));
    const scan = await w.rescan();
    expect(storeKeys()).toEqual(['Service default/a', 'Service default/b']);
    expect(clusterIP('default/a')).toBe('198.19.0.10'); // previous version kept
    expect(clusterIP('default/b')).toBe('198.19.0.21'); // the rest keeps working
    expect(scan.errors.length).toBeGreaterThan(0);
    expect(new Set(scan.errors.map((e) => e.file))).toEqual(new Set([join(dir, 'a.yaml')]));
    expect(scan.errors[0]?.line).toBeGreaterThan(0);
    const logged = logs.find((l) => l['level'] === 'error');
    expect(logged).toMatchObject({ msg: 'file does not parse; keeping its previous objects', file: join(dir, 'a.yaml') });

    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.30'));
    const fixed = await w.rescan();
    expect(fixed.errors).toEqual([]);
    expect(clusterIP('default/a')).toBe('198.19.0.30');
    expect(logs.some((l) => l['msg'] === 'manifest file fixed')).toBe(true);
  });

  it('keeps the previous version of a malformed object that can be named; leaves out one that cannot', async () => {
    await writeFile(join(dir, 'a.yaml'), `${service('a', '198.19.0.10')}---\n${service('b', '198.19.0.11')}`);
    const w = await start();
    const broken = service('a', '198.19.0.20').replace(/ports:[\s\S]*$/, 'ports: 80\n');
    await writeFile(join(dir, 'a.yaml'), `${broken}---\n${service('b', '198.19.0.21')}---\napiVersion: v1\nkind: Service\nmetadata: {}\n`);
    const scan = await w.rescan();
    expect(storeKeys()).toEqual(['Service default/a', 'Service default/b']);
    expect(clusterIP('default/a')).toBe('198.19.0.10');
    expect(clusterIP('default/b')).toBe('198.19.0.21');
    expect(scan.errors.map((e) => `${e.object}: ${e.field}`)).toEqual(['Service default/a: spec.ports', 'document 3 (Service): metadata.name']);
    expect(logs.filter((l) => l['level'] === 'error').map((l) => [l['msg'], l['object'], l['field']])).toEqual([
      ['invalid object; keeping its previous version', 'Service default/a', 'spec.ports'],
      ['invalid object; left out', 'document 3 (Service)', 'metadata.name'],
    ]);
  });

  it('uses the first file (by name) for an object defined twice, and the other once the first lets go', async () => {
    await writeFile(join(dir, 'a.yaml'), service('web', '198.19.0.10'));
    await writeFile(join(dir, 'b.yaml'), service('web', '198.19.0.20'));
    const w = await start();
    expect(clusterIP('default/web')).toBe('198.19.0.10');
    expect(w.errors()).toEqual([
      { file: join(dir, 'b.yaml'), object: 'Service default/web', field: 'metadata.name', message: `also defined in ${join(dir, 'a.yaml')}, which is used` },
    ]);
    await unlink(join(dir, 'a.yaml'));
    await w.rescan();
    expect(clusterIP('default/web')).toBe('198.19.0.20');
    expect(w.errors()).toEqual([]);
  });

  it('keeps everything when the directory goes away, and reports it', async () => {
    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.10'));
    const w = await start();
    const moved = `${dir}-moved`;
    await rename(dir, moved);
    try {
      const scan = await w.rescan();
      expect(scan.dirError).toMatch(/ENOENT/);
      expect(storeKeys()).toEqual(['Service default/a']);
    } finally {
      await rename(moved, dir);
    }
    const scan = await w.rescan();
    expect(scan.dirError).toBeUndefined();
  });
});

describe('watchManifests: noticing changes by itself', () => {
  it('follows a change through fs.watch', async () => {
    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.10'));
    await start({ watch: true, debounceMs: 20, rescanIntervalMs: 0 });
    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.20'));
    await until(() => clusterIP('default/a') === '198.19.0.20');
    await writeFile(join(dir, 'b.yaml'), slice('b-1', 'b', '198.18.16.9'));
    await until(() => store.count('EndpointSlice') === 1);
    await unlink(join(dir, 'a.yaml'));
    await until(() => store.count('Service') === 0);
  });

  it('follows a change through the periodic rescan when not watching', async () => {
    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.10'));
    await start({ watch: false, rescanIntervalMs: 30 });
    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.20'));
    await until(() => clusterIP('default/a') === '198.19.0.20');
  });

  it('tells store listeners about every change (the runner subscribes here)', async () => {
    const seen: string[] = [];
    store.onChange((c) => seen.push(`${c.current === undefined ? 'delete' : c.previous === undefined ? 'add' : 'update'} ${c.kind} ${c.key}`));
    await writeFile(join(dir, 'a.yaml'), service('a', '198.19.0.10'));
    const w = await start();
    await writeFile(join(dir, 'a.yaml'), service('b', '198.19.0.10'));
    await w.rescan();
    expect(seen).toEqual(['add Service default/a', 'add Service default/b', 'delete Service default/a']);
  });
});
