// Manifest files → Service / EndpointSlice / Node objects, and the errors a
// person needs to fix a file: file, object (kind namespace/name, or where it is)
// and field, with the line for YAML.
// Address plan (lab ranges only): cluster IPs 198.19.0.0/24, pods 198.18.16.0/20.
import { describe, expect, it } from 'vitest';
import { formatManifestError, manifestFormat, parseManifest, type ManifestError, type ParsedManifest } from '../../src/agent/manifest-parser.js';

const SERVICE = `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: 198.19.0.10
  ports:
    - name: http
      port: 80
      targetPort: 8080
`;

const SLICE = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
  - name: http
    port: 8080
endpoints:
  - addresses: [198.18.16.5]
    conditions: { ready: true }
`;

function ok(parsed: ParsedManifest): Extract<ParsedManifest, { ok: true }> {
  if (!parsed.ok) throw new Error(`expected a parse, got ${parsed.errors.map(formatManifestError).join('; ')}`);
  return parsed;
}

function keys(parsed: ParsedManifest): string[] {
  return ok(parsed).objects.map((o) => `${o.kind} ${o.key}`);
}

describe('manifestFormat', () => {
  it.each([
    ['a.yaml', 'yaml'],
    ['a.YML', 'yaml'],
    ['a.json', 'json'],
    ['a.txt', undefined],
    ['yaml', undefined],
  ])('%s → %s', (name, format) => {
    expect(manifestFormat(name)).toBe(format);
  });
});

describe('parseManifest: what is read', () => {
  it.each<{ name: string; file: string; text: string; want: string[]; ignored?: number }>([
    { name: 'one YAML Service', file: 'a.yaml', text: SERVICE, want: ['Service shop/web'] },
    { name: 'several YAML documents', file: 'a.yaml', text: `${SERVICE}---\n${SLICE}`, want: ['Service shop/web', 'EndpointSlice shop/web-abc'] },
    { name: 'empty documents are skipped', file: 'a.yaml', text: `---\n${SERVICE}---\n---\n`, want: ['Service shop/web'] },
    { name: 'an empty file holds nothing', file: 'a.yaml', text: '', want: [] },
    {
      name: 'a missing namespace is "default"',
      file: 'a.yaml',
      text: 'apiVersion: v1\nkind: Service\nmetadata: { name: web }\nspec: {}\n',
      want: ['Service default/web'],
    },
    {
      name: 'other kinds are ignored',
      file: 'a.yaml',
      text: `apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: web }\n---\n${SERVICE}`,
      want: ['Service shop/web'],
      ignored: 1,
    },
    {
      name: 'a YAML List',
      file: 'a.yaml',
      text: 'apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Service\n    metadata: { name: a }\n  - apiVersion: v1\n    kind: Node\n    metadata: { name: node-a }\n',
      want: ['Service default/a', 'Node node-a'],
    },
    {
      name: 'a JSON object',
      file: 'a.json',
      text: JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'a', namespace: 'x' } }),
      want: ['Service x/a'],
    },
    {
      name: 'a JSON array',
      file: 'a.json',
      text: JSON.stringify([
        { apiVersion: 'v1', kind: 'Service', metadata: { name: 'a' } },
        { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'a-1' }, addressType: 'IPv4' },
      ]),
      want: ['Service default/a', 'EndpointSlice default/a-1'],
    },
    {
      name: 'a JSON List',
      file: 'a.json',
      text: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'a' } }] }),
      want: ['Service default/a'],
    },
    {
      name: 'a namespace on a Node is ignored',
      file: 'a.yaml',
      text: 'apiVersion: v1\nkind: Node\nmetadata: { name: node-a, namespace: x }\n',
      want: ['Node node-a'],
    },
  ])('$name', ({ file, text, want, ignored }) => {
    const parsed = ok(parseManifest(file, text));
    expect(keys(parsed)).toEqual(want);
    expect(parsed.errors).toEqual([]);
    expect(parsed.ignored).toBe(ignored ?? 0);
  });

  it('keeps YAML values as Kubernetes reads them: IPv6 addresses and numbers', () => {
    const parsed = ok(
      parseManifest(
        'a.yaml',
        'apiVersion: v1\nkind: Service\nmetadata: { name: a }\nspec:\n  clusterIPs: [2001:2:0:20::10]\n  ports: [{ port: 80, targetPort: http }]\n',
      ),
    );
    expect(parsed.objects[0]?.object).toEqual({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'a' },
      spec: { clusterIPs: ['2001:2:0:20::10'], ports: [{ port: 80, targetPort: 'http' }] },
    });
  });
});

describe('parseManifest: a file that does not parse', () => {
  it.each<{ name: string; file: string; text: string; want: Partial<ManifestError> }>([
    {
      name: 'YAML syntax error, with its line',
      file: 'bad.yaml',
      text: 'apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  labels: {a: b\nspec: {}\n',
      want: { file: 'bad.yaml', line: 6, column: 1 },
    },
    {
      name: 'a duplicate YAML key',
      file: 'bad.yaml',
      text: 'apiVersion: v1\nkind: Service\nkind: Service\n',
      want: { file: 'bad.yaml', line: 3 },
    },
    {
      name: 'JSON syntax error, with its line and column',
      file: 'bad.json',
      text: '{\n  "apiVersion": "v1",\n  "kind" "Service"\n}',
      want: { file: 'bad.json', line: 3, column: 10 },
    },
    {
      name: 'an empty JSON file',
      file: 'bad.json',
      text: '',
      want: { file: 'bad.json', line: 1 },
    },
  ])('$name', ({ file, text, want }) => {
    const parsed = parseManifest(file, text);
    expect(parsed.ok).toBe(false);
    expect(parsed.errors[0]).toMatchObject(want);
    expect(parsed.errors[0]?.message).toMatch(/^(YAML|JSON)/);
  });

  it('reports which document of a multi-document file is broken', () => {
    const parsed = parseManifest('bad.yaml', `${SERVICE}---\na: b: c\n`);
    expect(parsed.ok).toBe(false);
    expect(parsed.errors[0]).toMatchObject({ object: 'document 2', line: 13 });
  });
});

describe('parseManifest: malformed objects are reported with file, object and field', () => {
  it.each<{ name: string; text: string; want: Partial<ManifestError>; invalid?: string[] }>([
    {
      name: 'metadata.name missing (object named by its place)',
      text: `${SERVICE}---\napiVersion: v1\nkind: Service\nmetadata:\n  namespace: shop\n`,
      want: { object: 'document 2 (Service)', field: 'metadata.name', message: 'missing', line: 16 },
    },
    {
      name: 'metadata missing',
      text: 'apiVersion: v1\nkind: Service\n',
      want: { object: 'document 1 (Service)', field: 'metadata', message: 'missing' },
    },
    {
      name: 'kind missing',
      text: 'apiVersion: v1\nmetadata: { name: a }\n',
      want: { object: 'document 1', field: 'kind', message: 'missing' },
    },
    {
      name: 'a document that is not an object',
      text: '- a\n- b\n',
      want: { object: 'document 1', field: '', message: 'not an object but a list' },
    },
    {
      name: 'an unsupported apiVersion',
      text: SLICE.replace('discovery.k8s.io/v1', 'discovery.k8s.io/v1beta1'),
      want: { object: 'EndpointSlice shop/web-abc', field: 'apiVersion', line: 1 },
      invalid: ['EndpointSlice shop/web-abc'],
    },
    {
      name: 'spec.ports not a list',
      text: SERVICE.replace(/ports:[\s\S]*$/, 'ports: 80\n'),
      want: { object: 'Service shop/web', field: 'spec.ports', message: 'not a list but number 80', line: 8 },
      invalid: ['Service shop/web'],
    },
    {
      name: 'a port that is not an object',
      text: SERVICE.replace(/ports:[\s\S]*$/, 'ports:\n    - 80\n'),
      want: { object: 'Service shop/web', field: 'spec.ports[0]', line: 9 },
      invalid: ['Service shop/web'],
    },
    {
      name: 'an unquoted label value',
      text: 'apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  labels:\n    enabled: true\n',
      want: { object: 'Service default/a', field: 'metadata.labels.enabled', line: 6 },
      invalid: ['Service default/a'],
    },
    {
      name: 'an endpoint without addresses',
      text: SLICE.replace('  - addresses: [198.18.16.5]\n', '  - nodeName: node-a\n'),
      want: { object: 'EndpointSlice shop/web-abc', field: 'endpoints[0].addresses', message: 'missing' },
      invalid: ['EndpointSlice shop/web-abc'],
    },
    {
      name: 'an EndpointSlice without addressType',
      text: SLICE.replace('addressType: IPv4\n', ''),
      want: { object: 'EndpointSlice shop/web-abc', field: 'addressType' },
      invalid: ['EndpointSlice shop/web-abc'],
    },
    {
      name: 'a duplicate object in one file (the first is used)',
      text: `${SERVICE}---\n${SERVICE}`,
      want: { object: 'Service shop/web', field: 'metadata.name', message: 'duplicate of the object at document 1; the first one is used' },
    },
  ])('$name', ({ text, want, invalid }) => {
    const parsed = ok(parseManifest('objs.yaml', text));
    expect(parsed.errors).toHaveLength(1);
    expect(parsed.errors[0]).toMatchObject({ file: 'objs.yaml', ...want });
    expect(parsed.invalid.map((i) => `${i.kind} ${i.key}`)).toEqual(invalid ?? []);
  });

  it('keeps the good objects of a file with a bad one', () => {
    const parsed = ok(parseManifest('objs.yaml', `${SERVICE}---\napiVersion: v1\nkind: Service\nmetadata: {}\n---\n${SLICE}`));
    expect(keys(parsed)).toEqual(['Service shop/web', 'EndpointSlice shop/web-abc']);
    expect(parsed.errors.map((e) => e.field)).toEqual(['metadata.name']);
  });

  it('names List items by place', () => {
    const parsed = ok(parseManifest('l.json', JSON.stringify({ kind: 'List', items: [{ apiVersion: 'v1', kind: 'Service', metadata: {} }] })));
    expect(parsed.errors[0]).toMatchObject({ object: 'document 1 item 1 (Service)', field: 'metadata.name' });
  });
});

describe('formatManifestError', () => {
  it.each<[ManifestError, string]>([
    [{ file: 'a.yaml', object: 'Service default/web', field: 'spec.ports', message: 'not a list', line: 8, column: 3 }, 'a.yaml:8:3: Service default/web: spec.ports: not a list'],
    [{ file: 'a.json', object: '', field: '', message: 'JSON: bad' }, 'a.json: JSON: bad'],
  ])('%j', (e, text) => {
    expect(formatManifestError(e)).toBe(text);
  });
});
