// Kubeconfig reading for the watch (src/k8s/kubeconfig.ts): the current
// context's server and credentials, embedded or in files relative to the
// kubeconfig, the token file read at each request, and clear refusals.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { authorization, KubeconfigError, loadApiConfig } from '../../src/k8s/kubeconfig.js';

const dir = mkdtempSync(join(tmpdir(), 'strait-kubeconfig-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');

describe('loadApiConfig', () => {
  it('reads the current context: server, embedded CA and client certificate', () => {
    const p = write(
      'embedded.yaml',
      `apiVersion: v1
kind: Config
current-context: b
contexts:
  - name: a
    context: { cluster: one, user: alice }
  - name: b
    context: { cluster: two, user: bob }
clusters:
  - name: one
    cluster: { server: "https://198.18.0.1:6443" }
  - name: two
    cluster:
      server: "https://198.18.0.2:6443/"
      certificate-authority-data: ${b64('CA')}
      tls-server-name: api.lab
users:
  - name: bob
    user:
      client-certificate-data: ${b64('CERT')}
      client-key-data: ${b64('KEY')}
`,
    );
    const c = loadApiConfig(p);
    expect(c.server).toBe('https://198.18.0.2:6443');
    expect(c.ca?.toString()).toBe('CA');
    expect(c.cert?.toString()).toBe('CERT');
    expect(c.key?.toString()).toBe('KEY');
    expect(c.tlsServerName).toBe('api.lab');
    expect(authorization(c)).toBeUndefined();
  });

  it('reads files relative to the kubeconfig, and the token file at each request', () => {
    write('ca.crt', 'FILE-CA');
    const token = write('token', 'first\n');
    const p = write(
      'files.json',
      JSON.stringify({
        'current-context': 'x',
        contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
        clusters: [{ name: 'c', cluster: { server: 'https://198.18.0.3:6443', 'certificate-authority': 'ca.crt' } }],
        users: [{ name: 'u', user: { tokenFile: 'token' } }],
      }),
    );
    const c = loadApiConfig(p);
    expect(c.ca?.toString()).toBe('FILE-CA');
    expect(authorization(c)).toBe('Bearer first');
    writeFileSync(token, 'rotated');
    expect(authorization(c)).toBe('Bearer rotated');
  });

  it('refuses what it cannot do, naming it', () => {
    const base = {
      'current-context': 'x',
      contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
      clusters: [{ name: 'c', cluster: { server: 'https://198.18.0.4:6443' } }],
    };
    const exec = write('exec.json', JSON.stringify({ ...base, users: [{ name: 'u', user: { exec: { command: 'aws' } } }] }));
    expect(() => loadApiConfig(exec)).toThrow(KubeconfigError);
    expect(() => loadApiConfig(exec)).toThrow(/exec credentials are not supported/);
    const noContext = write('nocontext.json', JSON.stringify({ ...base, 'current-context': 'missing' }));
    expect(() => loadApiConfig(noContext)).toThrow(/no context named "missing"/);
    expect(() => loadApiConfig(join(dir, 'absent.yaml'))).toThrow(/absent\.yaml/);
  });
});
