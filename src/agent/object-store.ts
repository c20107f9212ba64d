// The Kubernetes objects the sync reads — Services, EndpointSlices and Nodes —
// kept in memory by namespace/name. Both sources write here (the informers of
// src/k8s, or the manifest directory); the sync reads a snapshot, or (a full
// sync) the Services and each Service's slices. Listeners (the runner's run(),
// the health's queuedUpdate()) hear about every change that changes something:
// writing an object equal to the stored one is not a change.
//
// Memory: the store keeps each object's slim projection (slim-objects.ts: the
// fields the agent reads), Services and EndpointSlices as the JSON text of it
// (slices with their endpoints packed) — one string per object instead of a
// tree of objects and arrays: a third of the memory for bench/agent.ts's
// 10,000 Services and slices (12.4 MB, was 36), less still for API objects,
// and nothing inside for the garbage collector to walk. Reads parse what they
// return (get, endpointSlicesFor, services, snapshot): a fresh object each
// time, which the reader may keep or drop.
import { isDeepStrictEqual } from 'node:util';
import type { ClusterStore } from '../k8s/watch.js';
import { sliceServiceKey } from '../model/endpoint-slices.js';
import type { EndpointSlice, Node, ObjectMeta, Service } from '../model/k8s-types.js';
import { packEndpointSlice, resourceVersionOf, slimEndpointSlice, slimNode, slimService, unpackEndpointSlice } from './slim-objects.js';

export type ObjectKind = 'Service' | 'EndpointSlice' | 'Node';

export const OBJECT_KINDS: readonly ObjectKind[] = ['Service', 'EndpointSlice', 'Node'];

export interface ObjectOfKind {
  Service: Service;
  EndpointSlice: EndpointSlice;
  Node: Node;
}

export type StoredObject = Service | EndpointSlice | Node;

export interface StoreChange {
  readonly kind: ObjectKind;
  /** Store key: "namespace/name" ("name" for Nodes). */
  readonly key: string;
  /** undefined = did not exist. (Read on demand: parsed when read.) */
  readonly previous: StoredObject | undefined;
  /** undefined = deleted. (Read on demand: parsed when read.) */
  readonly current: StoredObject | undefined;
  /** The store's version after this change. */
  readonly version: number;
  /** servicesOfChange's answer, when the store knows it without reading the objects. */
  readonly services?: readonly string[];
}

export type StoreListener = (change: StoreChange) => void;

/**
 * What the sync reads: consistent as of `version`. Arrays are in no particular
 * order (buildModel sorts; sorting 10k objects on every change would cost more
 * than the change).
 */
export interface StoreSnapshot {
  readonly version: number;
  readonly services: readonly Service[];
  readonly endpointSlices: readonly EndpointSlice[];
  /** This node (nodeName), if known. */
  readonly node: Node | undefined;
}

export type UpsertResult =
  | { readonly ok: true; readonly changed: boolean; readonly key: string }
  | { readonly ok: false; readonly error: string };

export interface ObjectStoreOptions {
  /** This node's name: snapshot().node is the Node object of this name. */
  readonly nodeName: string;
}

/** "namespace/name"; cluster-scoped Nodes are just "name". A missing namespace is "default". */
export function objectKey(kind: ObjectKind, metadata: ObjectMeta | undefined): string {
  const name = metadata?.name ?? '';
  if (kind === 'Node') return name;
  return `${metadata?.namespace || 'default'}/${name}`;
}

/** A stored object: the JSON of a Service's or slice's slim projection, or a Node's slim projection. */
type Held = string | Node;

function parse<T>(held: Held): T {
  return (typeof held === 'string' ? JSON.parse(held) : held) as T;
}

function parseSlice(held: Held): EndpointSlice {
  return unpackEndpointSlice(parse(held));
}

export class ObjectStore implements ClusterStore {
  readonly nodeName: string;
  readonly #objects: Record<ObjectKind, Map<string, Held>> = {
    Service: new Map(),
    EndpointSlice: new Map(),
    Node: new Map(),
  };
  /** Slice key → the Service it belongs to (sliceServiceKey), for slices that belong to one. */
  readonly #sliceService = new Map<string, string>();
  /** Slice key → its endpoints and address type, for endpointCounts(). */
  readonly #sliceEndpoints = new Map<string, { readonly family: string; readonly count: number }>();
  readonly #endpointCounts = { IPv4: 0, IPv6: 0 };
  /** Service key → its slices' keys (one key, or a set). */
  readonly #slicesByService = new Map<string, string | Set<string>>();
  readonly #listeners = new Set<StoreListener>();
  readonly #synced = new Set<ObjectKind>();
  #version = 0;
  #snapshot: StoreSnapshot | undefined;

  constructor(options: ObjectStoreOptions) {
    this.nodeName = options.nodeName;
  }

  /** Bumped by every change. */
  get version(): number {
    return this.#version;
  }

  /**
   * Adds or replaces an object (its slim projection). Equal objects (same
   * resourceVersion when both have one, else equal projections) are not a
   * change. An object without metadata.name is refused.
   */
  upsert<K extends ObjectKind>(kind: K, object: ObjectOfKind[K]): UpsertResult {
    const name = object.metadata?.name;
    if (typeof name !== 'string' || name === '') {
      return { ok: false, error: `${kind} without metadata.name` };
    }
    const key = objectKey(kind, object.metadata);
    const objects = this.#objects[kind];
    const previous = objects.get(key);
    let held: Held;
    let serviceKey: string | undefined;
    if (kind === 'Node') {
      held = slimNode(object as Node);
      if (previous !== undefined && sameNode(previous as Node, held)) return { ok: true, changed: false, key };
    } else {
      const slim = kind === 'Service' ? slimService(object as Service) : slimEndpointSlice(object as EndpointSlice);
      held = JSON.stringify(kind === 'Service' ? slim : packEndpointSlice(slim as EndpointSlice));
      if (previous !== undefined && sameJson(previous as string, held, resourceVersionOf(slim))) return { ok: true, changed: false, key };
      if (kind === 'EndpointSlice') {
        serviceKey = sliceServiceKey(slim as EndpointSlice);
        this.#countEndpoints(key, slim as EndpointSlice);
      }
    }
    objects.set(key, held);
    this.#changed(kind, key, previous, held, serviceKey);
    return { ok: true, changed: true, key };
  }

  /** Removes an object by key ("namespace/name", or "name" for a Node); false if absent. */
  delete(kind: ObjectKind, key: string): boolean {
    const objects = this.#objects[kind];
    const previous = objects.get(key);
    if (previous === undefined) return false;
    objects.delete(key);
    if (kind === 'EndpointSlice') this.#countEndpoints(key, undefined);
    this.#changed(kind, key, previous, undefined, undefined);
    return true;
  }

  /**
   * Makes the objects of `kind` exactly `objects` (a relist): upserts them and
   * deletes every other stored object of that kind. Objects without a name are
   * skipped and counted.
   */
  replace<K extends ObjectKind>(kind: K, objects: Iterable<ObjectOfKind[K]>): { changed: number; refused: number } {
    const keep = new Set<string>();
    let changed = 0;
    let refused = 0;
    for (const object of objects) {
      const result = this.upsert(kind, object);
      if (!result.ok) {
        refused += 1;
        continue;
      }
      keep.add(result.key);
      if (result.changed) changed += 1;
    }
    for (const key of [...this.#objects[kind].keys()]) {
      if (!keep.has(key) && this.delete(kind, key)) changed += 1;
    }
    return { changed, refused };
  }

  /** The object under key (its slim projection; a fresh copy for Services and slices). */
  get<K extends ObjectKind>(kind: K, key: string): ObjectOfKind[K] | undefined {
    const held = this.#objects[kind].get(key);
    if (held === undefined) return undefined;
    return (kind === 'EndpointSlice' ? parseSlice(held) : parse(held)) as ObjectOfKind[K];
  }

  keys(kind: ObjectKind): string[] {
    return [...this.#objects[kind].keys()].sort();
  }

  count(kind: ObjectKind): number {
    return this.#objects[kind].size;
  }

  /** The slices that belong to Service `serviceKey` ("namespace/name"; sliceServiceKey), any order. */
  endpointSlicesFor(serviceKey: string): EndpointSlice[] {
    const keys = this.#slicesByService.get(serviceKey);
    if (keys === undefined) return [];
    const slices = this.#objects.EndpointSlice;
    if (typeof keys === 'string') return [parseSlice(slices.get(keys) as Held)];
    return [...keys].map((k) => parseSlice(slices.get(k) as Held));
  }

  /** Endpoints in the stored slices, by address family (what a first full compile sizes its tables by). */
  endpointCounts(): { readonly IPv4: number; readonly IPv6: number } {
    return { ...this.#endpointCounts };
  }

  #countEndpoints(key: string, slice: EndpointSlice | undefined): void {
    const before = this.#sliceEndpoints.get(key);
    if (before !== undefined && (before.family === 'IPv4' || before.family === 'IPv6')) this.#endpointCounts[before.family] -= before.count;
    if (slice === undefined) {
      this.#sliceEndpoints.delete(key);
      return;
    }
    const family = typeof slice.addressType === 'string' ? slice.addressType : '';
    const count = Array.isArray(slice.endpoints) ? slice.endpoints.length : 0;
    this.#sliceEndpoints.set(key, { family, count });
    if (family === 'IPv4' || family === 'IPv6') this.#endpointCounts[family] += count;
  }

  /** Every Service, any order (fresh copies). */
  services(): Service[] {
    return [...this.#objects.Service.values()].map((h) => parse<Service>(h));
  }

  /** The current objects; the same object is returned until the next change. */
  snapshot(): StoreSnapshot {
    this.#snapshot ??= {
      version: this.#version,
      services: this.services(),
      endpointSlices: [...this.#objects.EndpointSlice.values()].map(parseSlice),
      node: this.get('Node', this.nodeName) as Node | undefined,
    };
    return this.#snapshot;
  }

  /** Calls `listener` after every change; returns the function that unsubscribes it. */
  onChange(listener: StoreListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  /** A source has delivered its initial list of `kind` (kube-proxy waits for these before the first sync). */
  markSynced(kind: ObjectKind): void {
    this.#synced.add(kind);
  }

  /** Every listed kind has been marked synced (default: Services and EndpointSlices). */
  hasSynced(kinds: readonly ObjectKind[] = ['Service', 'EndpointSlice']): boolean {
    return kinds.every((k) => this.#synced.has(k));
  }

  // ---- ClusterStore: what the Kubernetes watch (src/k8s) writes through ----
  // An API object always has a name; one without is refused by throwing, which
  // the watch reports and counts (storeErrors).

  upsertService(obj: Service): void {
    this.#upsertOrThrow('Service', obj);
  }

  deleteService(namespace: string, name: string): void {
    this.delete('Service', objectKey('Service', { namespace, name }));
  }

  upsertEndpointSlice(obj: EndpointSlice): void {
    this.#upsertOrThrow('EndpointSlice', obj);
  }

  deleteEndpointSlice(namespace: string, name: string): void {
    this.delete('EndpointSlice', objectKey('EndpointSlice', { namespace, name }));
  }

  /** This node's object; undefined = deleted. */
  setNode(obj: Node | undefined): void {
    if (obj === undefined) this.delete('Node', this.nodeName);
    else this.#upsertOrThrow('Node', obj);
  }

  #upsertOrThrow<K extends ObjectKind>(kind: K, obj: ObjectOfKind[K]): void {
    const result = this.upsert(kind, obj);
    if (!result.ok) throw new Error(result.error);
  }

  #changed(kind: ObjectKind, key: string, previous: Held | undefined, current: Held | undefined, serviceKey: string | undefined): void {
    let services: string[] | undefined;
    if (kind === 'Service') services = [key];
    else if (kind === 'Node') services = [];
    else {
      const before = this.#sliceService.get(key);
      this.#indexSlice(key, before, serviceKey);
      services = before === undefined ? (serviceKey === undefined ? [] : [serviceKey]) : serviceKey === undefined || serviceKey === before ? [before] : [before, serviceKey];
    }
    this.#version += 1;
    this.#snapshot = undefined;
    const change = lazyChange(kind, key, previous, current, this.#version, services);
    for (const listener of [...this.#listeners]) listener(change);
  }

  #indexSlice(key: string, before: string | undefined, after: string | undefined): void {
    if (before !== undefined && before !== after) {
      const keys = this.#slicesByService.get(before);
      if (keys === key) this.#slicesByService.delete(before);
      else if (keys instanceof Set) {
        keys.delete(key);
        if (keys.size === 1) this.#slicesByService.set(before, [...keys][0] as string);
      }
    }
    if (after === undefined) {
      this.#sliceService.delete(key);
      return;
    }
    this.#sliceService.set(key, after);
    const keys = this.#slicesByService.get(after);
    if (keys === undefined) this.#slicesByService.set(after, key);
    else if (typeof keys === 'string') {
      if (keys !== key) this.#slicesByService.set(after, new Set([keys, key]));
    } else keys.add(key);
  }
}

/** A StoreChange whose objects are parsed when read. */
function lazyChange(
  kind: ObjectKind,
  key: string,
  previous: Held | undefined,
  current: Held | undefined,
  version: number,
  services: readonly string[],
): StoreChange {
  let prev: StoredObject | undefined;
  let cur: StoredObject | undefined;
  return {
    kind,
    key,
    version,
    services,
    get previous(): StoredObject | undefined {
      return previous === undefined ? undefined : (prev ??= (kind === 'EndpointSlice' ? parseSlice(previous) : parse<StoredObject>(previous)));
    },
    get current(): StoredObject | undefined {
      return current === undefined ? undefined : (cur ??= (kind === 'EndpointSlice' ? parseSlice(current) : parse<StoredObject>(current)));
    },
  };
}

/**
 * The Services ("namespace/name") a change concerns: a Service's own key, the
 * Service an EndpointSlice belonged to and the one it belongs to (sliceServiceKey);
 * none for a Node.
 */
export function servicesOfChange(change: StoreChange): string[] {
  if (change.services !== undefined) return [...change.services];
  if (change.kind === 'Service') return [change.key];
  if (change.kind !== 'EndpointSlice') return [];
  const keys = new Set<string>();
  for (const slice of [change.previous, change.current] as (EndpointSlice | undefined)[]) {
    const key = slice === undefined ? undefined : sliceServiceKey(slice);
    if (key !== undefined) keys.add(key);
  }
  return [...keys];
}

/** Two JSON texts of slim projections are the same object: equal text, or the same resourceVersion. */
function sameJson(previous: string, next: string, nextVersion: string | undefined): boolean {
  if (previous === next) return true;
  return nextVersion !== undefined && resourceVersionOf(parse<{ metadata?: ObjectMeta }>(previous)) === nextVersion;
}

function sameNode(a: Node, b: Node): boolean {
  if (a === b) return true;
  const ra = resourceVersionOf(a);
  if (ra !== undefined && ra === resourceVersionOf(b)) return true;
  return isDeepStrictEqual(a, b);
}
