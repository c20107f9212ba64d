// The Kubernetes objects the sync reads — Services, EndpointSlices and Nodes —
// kept in memory by namespace/name. Both sources write here (the informers of
// src/k8s, or the manifest directory); the sync reads a snapshot. Listeners
// (the runner's run(), the health's queuedUpdate()) hear about every change that
// changes something: writing an object equal to the stored one is not a change.
import { isDeepStrictEqual } from 'node:util';
import type { ClusterStore } from '../k8s/watch.js';
import { sliceServiceKey } from '../model/endpoint-slices.js';
import type { EndpointSlice, Node, ObjectMeta, Service } from '../model/k8s-types.js';

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
  /** undefined = did not exist. */
  readonly previous: StoredObject | undefined;
  /** undefined = deleted. */
  readonly current: StoredObject | undefined;
  /** The store's version after this change. */
  readonly version: number;
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

export class ObjectStore implements ClusterStore {
  readonly nodeName: string;
  readonly #objects: Record<ObjectKind, Map<string, StoredObject>> = {
    Service: new Map(),
    EndpointSlice: new Map(),
    Node: new Map(),
  };
  /** Service key → its slices (sliceServiceKey) by store key: what a sync of one Service reads. */
  readonly #slicesByService = new Map<string, Map<string, EndpointSlice>>();
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
   * Adds or replaces an object. Equal objects (same resourceVersion when both
   * have one, else deep-equal) are not a change. An object without
   * metadata.name is refused.
   */
  upsert<K extends ObjectKind>(kind: K, object: ObjectOfKind[K]): UpsertResult {
    const name = object.metadata?.name;
    if (typeof name !== 'string' || name === '') {
      return { ok: false, error: `${kind} without metadata.name` };
    }
    const key = objectKey(kind, object.metadata);
    const objects = this.#objects[kind];
    const previous = objects.get(key);
    if (previous !== undefined && sameObject(previous, object)) return { ok: true, changed: false, key };
    objects.set(key, object);
    this.#changed(kind, key, previous, object);
    return { ok: true, changed: true, key };
  }

  /** Removes an object by key ("namespace/name", or "name" for a Node); false if absent. */
  delete(kind: ObjectKind, key: string): boolean {
    const objects = this.#objects[kind];
    const previous = objects.get(key);
    if (previous === undefined) return false;
    objects.delete(key);
    this.#changed(kind, key, previous, undefined);
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

  get<K extends ObjectKind>(kind: K, key: string): ObjectOfKind[K] | undefined {
    return this.#objects[kind].get(key) as ObjectOfKind[K] | undefined;
  }

  keys(kind: ObjectKind): string[] {
    return [...this.#objects[kind].keys()].sort();
  }

  count(kind: ObjectKind): number {
    return this.#objects[kind].size;
  }

  /** The slices that belong to Service `serviceKey` ("namespace/name"; sliceServiceKey), any order. */
  endpointSlicesFor(serviceKey: string): EndpointSlice[] {
    return [...(this.#slicesByService.get(serviceKey)?.values() ?? [])];
  }

  /** The current objects; the same object is returned until the next change. */
  snapshot(): StoreSnapshot {
    this.#snapshot ??= {
      version: this.#version,
      services: [...this.#objects.Service.values()] as Service[],
      endpointSlices: [...this.#objects.EndpointSlice.values()] as EndpointSlice[],
      node: this.#objects.Node.get(this.nodeName) as Node | undefined,
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

  #changed(kind: ObjectKind, key: string, previous: StoredObject | undefined, current: StoredObject | undefined): void {
    if (kind === 'EndpointSlice') this.#indexSlice(key, previous as EndpointSlice | undefined, current as EndpointSlice | undefined);
    this.#version += 1;
    this.#snapshot = undefined;
    const change: StoreChange = { kind, key, previous, current, version: this.#version };
    for (const listener of [...this.#listeners]) listener(change);
  }

  #indexSlice(key: string, previous: EndpointSlice | undefined, current: EndpointSlice | undefined): void {
    const before = previous === undefined ? undefined : sliceServiceKey(previous);
    if (before !== undefined) {
      const slices = this.#slicesByService.get(before);
      slices?.delete(key);
      if (slices?.size === 0) this.#slicesByService.delete(before);
    }
    const after = current === undefined ? undefined : sliceServiceKey(current);
    if (after === undefined || current === undefined) return;
    let slices = this.#slicesByService.get(after);
    if (slices === undefined) this.#slicesByService.set(after, (slices = new Map()));
    slices.set(key, current);
  }
}

/**
 * The Services ("namespace/name") a change concerns: a Service's own key, the
 * Service an EndpointSlice belonged to and the one it belongs to (sliceServiceKey);
 * none for a Node.
 */
export function servicesOfChange(change: StoreChange): string[] {
  if (change.kind === 'Service') return [change.key];
  if (change.kind !== 'EndpointSlice') return [];
  const keys = new Set<string>();
  for (const slice of [change.previous, change.current] as (EndpointSlice | undefined)[]) {
    const key = slice === undefined ? undefined : sliceServiceKey(slice);
    if (key !== undefined) keys.add(key);
  }
  return [...keys];
}

function sameObject(a: StoredObject, b: StoredObject): boolean {
  if (a === b) return true;
  const ra = a.metadata?.resourceVersion;
  const rb = b.metadata?.resourceVersion;
  if (ra !== undefined && rb !== undefined && ra !== '' && ra === rb) return true;
  return isDeepStrictEqual(a, b);
}
