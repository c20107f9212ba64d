// One manifest file → the Service, EndpointSlice and Node objects in it, and
// what is wrong with it. YAML files may hold many documents; JSON files hold one
// object, an array of objects, or a `kind: List` with items (so may YAML
// documents). Objects of other kinds are ignored: a manifest directory may well
// hold Deployments too.
//
// Two grades of trouble, both reported with file, object and field:
// - the file does not parse: nothing in it can be trusted, so the caller keeps
//   what the file held before (a typo must not withdraw Services);
// - an object is malformed: it is left out — or, when it can still be named,
//   the caller keeps its previous version — and every other object goes on.
// Only the shape is checked here (what kind, which name, arrays where arrays
// belong); addresses, ports and the rest are the model's to check and report.
import { LineCounter, parseAllDocuments, type Document } from 'yaml';
import { formatObjectRef } from '../model/types.js';
import type { ObjectKind, StoredObject } from './object-store.js';
import { objectKey } from './object-store.js';

/** A problem in a manifest file. */
export interface ManifestError {
  readonly file: string;
  /**
   * The object it concerns: "Service default/web" when it can be named, else
   * where it is ("document 2", "document 1 item 3"); "" for the whole file.
   */
  readonly object: string;
  /** Field path, e.g. "metadata.name", "spec.ports[1]"; "" when none. */
  readonly field: string;
  readonly message: string;
  /** 1-based, when known. */
  readonly line?: number;
  readonly column?: number;
}

/** An object read from a manifest. */
export interface ManifestObject {
  readonly kind: ObjectKind;
  /** ObjectStore key: "namespace/name" (namespace defaults to "default"), or the Node's name. */
  readonly key: string;
  readonly object: StoredObject;
  /** Where it is in the file: "document 2". */
  readonly location: string;
}

export type ParsedManifest =
  | {
      readonly ok: true;
      readonly objects: readonly ManifestObject[];
      /** Objects that could be named but are malformed: the caller may keep their previous version. */
      readonly invalid: readonly { readonly kind: ObjectKind; readonly key: string }[];
      readonly errors: readonly ManifestError[];
      /** Objects of other kinds, skipped. */
      readonly ignored: number;
    }
  | { readonly ok: false; readonly errors: readonly ManifestError[] };

export type ManifestFormat = 'yaml' | 'json';

/** The format a file name asks for, or undefined for files that are not manifests. */
export function manifestFormat(fileName: string): ManifestFormat | undefined {
  const lower = fileName.toLowerCase();
  if (lower.endsWith('.yaml') || lower.endsWith('.yml')) return 'yaml';
  if (lower.endsWith('.json')) return 'json';
  return undefined;
}

/** "file:line:column: object: field: message", leaving out what is unknown. */
export function formatManifestError(e: ManifestError): string {
  const where = e.line === undefined ? e.file : `${e.file}:${e.line}${e.column === undefined ? '' : `:${e.column}`}`;
  return [where, e.object, e.field, e.message].filter((p) => p !== '').join(': ');
}

const API_VERSIONS: Readonly<Record<ObjectKind, string>> = {
  Service: 'v1',
  EndpointSlice: 'discovery.k8s.io/v1',
  Node: 'v1',
};

type Path = readonly (string | number)[];

/** Finds the line of a field (or its closest existing parent) — YAML only. */
type Locate = (path: Path) => { line: number; column: number } | undefined;

export function parseManifest(file: string, text: string, format: ManifestFormat = manifestFormat(file) ?? 'yaml'): ParsedManifest {
  const roots: { value: unknown; location: string; locate: Locate | undefined }[] = [];
  if (format === 'json') {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e: unknown) {
      return { ok: false, errors: [jsonError(file, text, e)] };
    }
    if (Array.isArray(value)) value.forEach((v, i) => roots.push({ value: v, location: `item ${i + 1}`, locate: undefined }));
    else roots.push({ value, location: 'document 1', locate: undefined });
  } else {
    const lineCounter = new LineCounter();
    const docs = parseAllDocuments(text, { lineCounter, prettyErrors: true });
    const errors: ManifestError[] = [];
    docs.forEach((doc, i) => {
      for (const e of doc.errors) {
        const pos = e.linePos?.[0];
        errors.push({
          file,
          object: docs.length > 1 ? `document ${i + 1}` : '',
          field: '',
          message: `YAML ${e.code}: ${firstLine(e.message).replace(/ at line \d+, column \d+:?$/, '')}`,
          ...(pos ? { line: pos.line, column: pos.col } : {}),
        });
      }
    });
    if (errors.length > 0) return { ok: false, errors };
    for (const [i, doc] of docs.entries()) {
      let value: unknown;
      try {
        value = doc.toJS({ maxAliasCount: 100 });
      } catch (e: unknown) {
        return {
          ok: false,
          errors: [{ file, object: `document ${i + 1}`, field: '', message: `YAML: ${e instanceof Error ? e.message : String(e)}` }],
        };
      }
      roots.push({ value, location: `document ${i + 1}`, locate: yamlLocator(doc, lineCounter) });
    }
  }

  const state: WalkState = { file, objects: [], invalid: [], errors: [], ignored: 0, seen: new Map() };
  for (const root of roots) walk(state, root.value, root.location, [], root.locate);
  return { ok: true, objects: state.objects, invalid: state.invalid, errors: state.errors, ignored: state.ignored };
}

interface WalkState {
  readonly file: string;
  readonly objects: ManifestObject[];
  readonly invalid: { kind: ObjectKind; key: string }[];
  readonly errors: ManifestError[];
  ignored: number;
  /** kind/key → location of the first object with that identity. */
  readonly seen: Map<string, string>;
}

function walk(state: WalkState, value: unknown, location: string, base: Path, locate: Locate | undefined): void {
  const report = (object: string, field: Path, message: string): void => {
    const pos = locate?.([...base, ...field]);
    state.errors.push({
      file: state.file,
      object,
      field: formatPath(field),
      message,
      ...(pos ? { line: pos.line, column: pos.column } : {}),
    });
  };

  if (value === null || value === undefined) return; // an empty document
  if (!isRecord(value)) {
    report(location, [], `not an object but ${describe(value)}`);
    return;
  }
  const kind = value['kind'];
  if (typeof kind !== 'string' || kind === '') {
    report(location, ['kind'], 'missing');
    return;
  }
  if (kind === 'List') {
    const items = value['items'];
    if (!Array.isArray(items)) {
      report(`${location} (List)`, ['items'], 'missing or not a list');
      return;
    }
    items.forEach((item, i) => walk(state, item, `${location} item ${i + 1}`, [...base, 'items', i], locate));
    return;
  }
  if (kind !== 'Service' && kind !== 'EndpointSlice' && kind !== 'Node') {
    state.ignored += 1;
    return;
  }

  // Name it first, so that every later error can say which object it is.
  const metadata = value['metadata'];
  if (!isRecord(metadata)) {
    report(`${location} (${kind})`, ['metadata'], metadata === undefined ? 'missing' : `not an object but ${describe(metadata)}`);
    return;
  }
  const name = metadata['name'];
  if (typeof name !== 'string' || name === '') {
    report(`${location} (${kind})`, ['metadata', 'name'], name === undefined ? 'missing' : `not a non-empty string but ${describe(name)}`);
    return;
  }
  const namespace = metadata['namespace'];
  // A Node is cluster-scoped: like the API server, ignore a namespace on it.
  if (kind !== 'Node' && namespace !== undefined && namespace !== null && typeof namespace !== 'string') {
    report(`${location} (${kind} ${name})`, ['metadata', 'namespace'], `not a string but ${describe(namespace)}`);
    return;
  }
  const ref = {
    kind,
    namespace: kind === 'Node' ? '' : typeof namespace === 'string' && namespace !== '' ? namespace : 'default',
    name,
  } as const;
  const label = formatObjectRef(ref);
  const key = objectKey(kind, { name, namespace: ref.namespace });

  const problems = checkShape(kind, value);
  if (problems.length > 0) {
    for (const p of problems) report(label, p.field, p.message);
    state.invalid.push({ kind, key });
    return;
  }

  const id = `${kind}\0${key}`;
  const first = state.seen.get(id);
  if (first !== undefined) {
    report(label, ['metadata', 'name'], `duplicate of the object at ${first}; the first one is used`);
    return;
  }
  state.seen.set(id, location);
  state.objects.push({ kind, key, object: value as StoredObject, location });
}

interface Problem {
  readonly field: Path;
  readonly message: string;
}

/** The structure the model relies on: objects where objects belong, lists where lists belong. */
function checkShape(kind: ObjectKind, value: Record<string, unknown>): Problem[] {
  const problems: Problem[] = [];
  const want = API_VERSIONS[kind];
  const apiVersion = value['apiVersion'];
  if (apiVersion === undefined) problems.push({ field: ['apiVersion'], message: `missing; want ${want}` });
  else if (apiVersion !== want) {
    problems.push({ field: ['apiVersion'], message: `unsupported ${JSON.stringify(apiVersion)} for ${kind}; want ${want}` });
  }
  const metadata = value['metadata'] as Record<string, unknown>;
  const labels = metadata['labels'];
  if (labels !== undefined && labels !== null) {
    if (!isRecord(labels)) problems.push({ field: ['metadata', 'labels'], message: `not an object but ${describe(labels)}` });
    else {
      for (const [k, v] of Object.entries(labels)) {
        if (typeof v !== 'string') problems.push({ field: ['metadata', 'labels', k], message: `label values are strings, not ${describe(v)} (quote it)` });
      }
    }
  }

  const object = (path: Path, v: unknown): boolean => {
    if (v === undefined || v === null) return false;
    if (isRecord(v)) return true;
    problems.push({ field: path, message: `not an object but ${describe(v)}` });
    return false;
  };
  const list = (path: Path, v: unknown, itemsAreObjects: boolean): void => {
    if (v === undefined || v === null) return;
    if (!Array.isArray(v)) {
      problems.push({ field: path, message: `not a list but ${describe(v)}` });
      return;
    }
    v.forEach((item, i) => {
      if (itemsAreObjects ? !isRecord(item) : typeof item !== 'string') {
        problems.push({ field: [...path, i], message: `not ${itemsAreObjects ? 'an object' : 'a string'} but ${describe(item)}` });
      }
    });
  };

  switch (kind) {
    case 'Service': {
      const spec = value['spec'];
      if (object(['spec'], spec)) {
        const s = spec as Record<string, unknown>;
        list(['spec', 'ports'], s['ports'], true);
        list(['spec', 'clusterIPs'], s['clusterIPs'], false);
        list(['spec', 'ipFamilies'], s['ipFamilies'], false);
        list(['spec', 'externalIPs'], s['externalIPs'], false);
        list(['spec', 'loadBalancerSourceRanges'], s['loadBalancerSourceRanges'], false);
        object(['spec', 'sessionAffinityConfig'], s['sessionAffinityConfig']);
      }
      const status = value['status'];
      if (object(['status'], status)) {
        const lb = (status as Record<string, unknown>)['loadBalancer'];
        if (object(['status', 'loadBalancer'], lb)) list(['status', 'loadBalancer', 'ingress'], (lb as Record<string, unknown>)['ingress'], true);
      }
      break;
    }
    case 'EndpointSlice': {
      const addressType = value['addressType'];
      if (typeof addressType !== 'string') problems.push({ field: ['addressType'], message: addressType === undefined ? 'missing (IPv4, IPv6 or FQDN)' : `not a string but ${describe(addressType)}` });
      list(['ports'], value['ports'], true);
      const endpoints = value['endpoints'];
      list(['endpoints'], endpoints, true);
      if (Array.isArray(endpoints)) {
        endpoints.forEach((ep, i) => {
          if (!isRecord(ep)) return;
          const addresses = ep['addresses'];
          if (addresses === undefined || addresses === null) problems.push({ field: ['endpoints', i, 'addresses'], message: 'missing' });
          else list(['endpoints', i, 'addresses'], addresses, false);
          object(['endpoints', i, 'conditions'], ep['conditions']);
        });
      }
      break;
    }
    case 'Node': {
      const status = value['status'];
      if (object(['status'], status)) list(['status', 'addresses'], (status as Record<string, unknown>)['addresses'], true);
      break;
    }
  }
  return problems;
}

function yamlLocator(doc: Document, lineCounter: LineCounter): Locate {
  return (path) => {
    for (let n = path.length; n >= 0; n--) {
      const node: unknown = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
      const range = (node as { range?: unknown } | null | undefined)?.range;
      if (Array.isArray(range) && typeof range[0] === 'number') {
        const pos = lineCounter.linePos(range[0]);
        return { line: pos.line, column: pos.col };
      }
    }
    return undefined;
  };
}

function jsonError(file: string, text: string, e: unknown): ManifestError {
  const message = e instanceof Error ? e.message : String(e);
  const at = /at position (\d+)/.exec(message);
  const offset = at ? Number(at[1]) : /end of JSON input/.test(message) ? text.length : undefined;
  const base = { file, object: '', field: '', message: `JSON: ${message.replace(/ \(line \d+ column \d+\)$/, '')}` };
  if (offset === undefined) return base;
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return { ...base, line, column };
}

function formatPath(path: Path): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i < 0 ? s : s.slice(0, i);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}
