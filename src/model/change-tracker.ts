// Pending changes per object key, as kube-proxy's change trackers keep them
// (pkg/proxy/servicechangetracker.go): the first previous value and the latest
// current value; a change that undoes itself cancels out.
import { isDeepStrictEqual } from 'node:util';

export interface Change<T> {
  /** The value before the first pending change; undefined = did not exist. */
  readonly previous: T | undefined;
  /** The latest value; undefined = deleted. */
  readonly current: T | undefined;
}

export interface ChangeTrackerOptions<O, T> {
  /** What of an object matters (default: the object itself). Changes to anything
   * else — resourceVersion, managedFields — then cancel out too. */
  readonly project?: (object: O) => T;
  /** Equality of projected values (default: deep structural equality). */
  readonly equal?: (a: T, b: T) => boolean;
}

export class ChangeTracker<O, T = O> {
  readonly #items = new Map<string, Change<T>>();
  readonly #project: (object: O) => T;
  readonly #equal: (a: T, b: T) => boolean;

  constructor(options: ChangeTrackerOptions<O, T> = {}) {
    this.#project = options.project ?? ((o: O) => o as unknown as T);
    this.#equal = options.equal ?? isDeepStrictEqual;
  }

  /** Records that `key` went from `previous` to `current` (undefined = absent). */
  update(key: string, previous: O | undefined, current: O | undefined): void {
    const existing = this.#items.get(key);
    const before = existing === undefined ? this.#projectOrUndefined(previous) : existing.previous;
    const after = this.#projectOrUndefined(current);
    const same =
      before === undefined || after === undefined ? before === after : this.#equal(before, after);
    if (same) this.#items.delete(key);
    else this.#items.set(key, { previous: before, current: after });
  }

  /** Number of keys with a pending change. */
  get size(): number {
    return this.#items.size;
  }

  /** The pending changes, which are cleared. */
  take(): Map<string, Change<T>> {
    const out = new Map(this.#items);
    this.#items.clear();
    return out;
  }

  #projectOrUndefined(o: O | undefined): T | undefined {
    return o === undefined ? undefined : this.#project(o);
  }
}
