// The cluster-less source (`strait agent --manifests DIR`): every *.yaml, *.yml
// and *.json file in DIR (not in subdirectories; names starting with "." are
// skipped, which also skips a ConfigMap volume's ..data machinery while its
// file links are read) is parsed into Services, EndpointSlices and Nodes, and
// kept in the ObjectStore as DIR changes. fs.watch on the directory triggers a
// debounced rescan; a periodic rescan catches what inotify misses (network
// filesystems, a directory that was replaced).
//
// What a change does:
// - a file added or changed: its objects are written to the store, those it no
//   longer holds are deleted;
// - a file removed: its objects are deleted;
// - a file that does not parse: reported, and its previous objects stay — a
//   typo must not withdraw Services; a malformed object that can still be named
//   keeps its previous version too;
// - the directory unreadable: reported, everything stays.
// The same object in two files: the file first in name order wins; reported.
import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { systemClock, type Clock } from './clock.js';
import { silentLogger, type Logger } from './logger.js';
import {
  formatManifestError,
  manifestFormat,
  parseManifest,
  type ManifestError,
  type ManifestObject,
} from './manifest-parser.js';
import { OBJECT_KINDS, type ObjectKind, type ObjectStore } from './object-store.js';

export interface ManifestWatchOptions {
  readonly log?: Logger;
  /** Delay from the first file event to the rescan it triggers, ms (events meanwhile merge). Default 200. */
  readonly debounceMs?: number;
  /** Periodic rescan, ms; 0 = none. Default 10000. */
  readonly rescanIntervalMs?: number;
  /** Use fs.watch (default true); off, only the periodic rescan notices changes. */
  readonly watch?: boolean;
  readonly clock?: Clock;
}

/** The outcome of one scan. */
export interface ManifestScan {
  /** Manifest files read (or kept) in this scan. */
  readonly files: number;
  /** Objects published to the store, by kind. */
  readonly objects: Readonly<Record<ObjectKind, number>>;
  /** Store writes and deletions this scan made. */
  readonly changed: number;
  /** Every current problem (of all files, not only those read this time). */
  readonly errors: readonly ManifestError[];
  /** The directory could not be listed; nothing was changed. */
  readonly dirError: string | undefined;
}

export interface ManifestWatcher {
  readonly dir: string;
  /** Scans now (merging with a scan already waiting to start). */
  rescan(): Promise<ManifestScan>;
  /** The current problems of every file. */
  errors(): readonly ManifestError[];
  /** Stops watching; the store keeps the objects. */
  close(): Promise<void>;
}

export interface ManifestDirError {
  readonly dir: string;
  readonly message: string;
}

interface FileRecord {
  /** inode, size, times: unchanged → the file is not read again. */
  readonly signature: string;
  readonly digest: string;
  readonly objects: readonly ManifestObject[];
  readonly errors: readonly ManifestError[];
}

interface Published {
  readonly kind: ObjectKind;
  readonly key: string;
  readonly object: ManifestObject['object'];
  readonly file: string;
}

/**
 * Reads DIR into `store`, then follows it. Fails (as a value) only when DIR
 * cannot be listed at start; later failures are reported and ridden out.
 * Marks Services, EndpointSlices and Nodes synced in the store after the first scan.
 */
export async function watchManifests(
  dir: string,
  store: ObjectStore,
  options: ManifestWatchOptions = {},
): Promise<{ ok: true; value: ManifestWatcher } | { ok: false; error: ManifestDirError }> {
  const watcher = new DirectoryWatcher(dir, store, options);
  const first = await watcher.rescan();
  if (first.dirError !== undefined) {
    await watcher.close();
    return { ok: false, error: { dir, message: first.dirError } };
  }
  for (const kind of OBJECT_KINDS) store.markSynced(kind);
  watcher.follow();
  return { ok: true, value: watcher };
}

class DirectoryWatcher implements ManifestWatcher {
  readonly dir: string;
  readonly #store: ObjectStore;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #debounceMs: number;
  readonly #rescanIntervalMs: number;
  readonly #useWatch: boolean;

  readonly #files = new Map<string, FileRecord>();
  #published = new Map<string, Published>();
  #mergeErrors: ManifestError[] = [];
  #dirError: string | undefined;

  #closed = false;
  #fsWatcher: FSWatcher | undefined;
  #cancelDebounce: (() => void) | undefined;
  #cancelPeriodic: (() => void) | undefined;
  /** The scan running now, and one waiting to start after it (requests merge into it). */
  #running: Promise<ManifestScan> | undefined;
  #queued: Promise<ManifestScan> | undefined;

  constructor(dir: string, store: ObjectStore, options: ManifestWatchOptions) {
    this.dir = dir;
    this.#store = store;
    this.#log = (options.log ?? silentLogger).child({ component: 'manifests' });
    this.#clock = options.clock ?? systemClock;
    this.#debounceMs = options.debounceMs ?? 200;
    this.#rescanIntervalMs = options.rescanIntervalMs ?? 10_000;
    this.#useWatch = options.watch ?? true;
  }

  /** Starts fs.watch and the periodic rescan. */
  follow(): void {
    this.#startFsWatch();
    this.#schedulePeriodic();
  }

  rescan(): Promise<ManifestScan> {
    if (this.#queued !== undefined) return this.#queued;
    if (this.#running === undefined) return this.#startScan();
    this.#queued = this.#running
      .catch(() => undefined)
      .then(() => {
        this.#queued = undefined;
        return this.#startScan();
      });
    return this.#queued;
  }

  #startScan(): Promise<ManifestScan> {
    if (this.#closed) return Promise.resolve(this.#result(this.#files.size, 0));
    const scan: Promise<ManifestScan> = this.#scan().finally(() => {
      if (this.#running === scan) this.#running = undefined;
    });
    this.#running = scan;
    return scan;
  }

  errors(): readonly ManifestError[] {
    return [...[...this.#files.values()].flatMap((f) => f.errors), ...this.#mergeErrors];
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#fsWatcher?.close();
    this.#fsWatcher = undefined;
    this.#cancelDebounce?.();
    this.#cancelDebounce = undefined;
    this.#cancelPeriodic?.();
    this.#cancelPeriodic = undefined;
    await this.#queued?.catch(() => undefined);
    await this.#running?.catch(() => undefined);
  }

  #startFsWatch(): void {
    if (!this.#useWatch || this.#closed || this.#fsWatcher !== undefined) return;
    try {
      const w = watch(this.dir, { persistent: false }, () => this.#onEvent());
      w.on('error', (e: unknown) => {
        // The directory went away or was replaced: the periodic rescan re-watches.
        this.#log.warn('directory watch failed; relying on periodic rescans', { dir: this.dir, error: e });
        w.close();
        if (this.#fsWatcher === w) this.#fsWatcher = undefined;
      });
      this.#fsWatcher = w;
    } catch (e: unknown) {
      this.#log.warn('cannot watch directory; relying on periodic rescans', { dir: this.dir, error: e });
    }
  }

  #onEvent(): void {
    if (this.#closed || this.#cancelDebounce !== undefined) return;
    this.#cancelDebounce = this.#clock.setTimer(this.#debounceMs, () => {
      this.#cancelDebounce = undefined;
      void this.rescan();
    });
  }

  #schedulePeriodic(): void {
    if (this.#closed || this.#rescanIntervalMs <= 0) return;
    this.#cancelPeriodic?.();
    this.#cancelPeriodic = this.#clock.setTimer(this.#rescanIntervalMs, () => {
      this.#cancelPeriodic = undefined;
      void this.rescan().finally(() => {
        this.#startFsWatch();
        this.#schedulePeriodic();
      });
    });
  }

  async #scan(): Promise<ManifestScan> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (e: unknown) {
      const message = `cannot read manifest directory: ${errorMessage(e)}`;
      if (this.#dirError !== message) this.#log.error('manifest directory unreadable; keeping every object', { dir: this.dir, error: message });
      this.#dirError = message;
      return this.#result(0, 0);
    }
    if (this.#dirError !== undefined) this.#log.info('manifest directory readable again', { dir: this.dir });
    this.#dirError = undefined;

    const present = new Set<string>();
    for (const name of names.sort()) {
      if (name.startsWith('.')) continue;
      const format = manifestFormat(name);
      if (format === undefined) continue;
      const file = join(this.dir, name);
      let info;
      try {
        info = await stat(file);
      } catch (e: unknown) {
        if (isErrno(e, 'ENOENT')) continue; // removed since readdir (or a dangling link)
        this.#keepAfterFailure(file, `cannot stat: ${errorMessage(e)}`);
        present.add(file);
        continue;
      }
      if (!info.isFile()) continue;
      present.add(file);
      const signature = `${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}:${info.ctimeMs}`;
      const old = this.#files.get(file);
      if (old !== undefined && old.signature === signature) continue;
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (e: unknown) {
        if (isErrno(e, 'ENOENT')) {
          present.delete(file);
          continue;
        }
        this.#keepAfterFailure(file, `cannot read: ${errorMessage(e)}`);
        continue;
      }
      const digest = createHash('sha256').update(text).digest('hex');
      if (old !== undefined && old.digest === digest) {
        this.#files.set(file, { ...old, signature });
        continue;
      }
      this.#load(file, text, format, signature, digest);
    }
    for (const file of [...this.#files.keys()]) {
      if (!present.has(file)) {
        this.#files.delete(file);
        this.#log.info('manifest file removed; its objects are withdrawn', { file });
      }
    }
    const changed = this.#publish();
    return this.#result(present.size, changed);
  }

  #load(file: string, text: string, format: 'yaml' | 'json', signature: string, digest: string): void {
    const old = this.#files.get(file);
    const parsed = parseManifest(file, text, format);
    if (!parsed.ok) {
      this.#files.set(file, { signature, digest, objects: old?.objects ?? [], errors: parsed.errors });
      for (const e of parsed.errors) this.#logError(e, old !== undefined && old.objects.length > 0 ? 'file does not parse; keeping its previous objects' : 'file does not parse');
      return;
    }
    const objects = [...parsed.objects];
    // Labels of malformed objects whose previous version is kept ("Service default/web" = kind + key).
    const kept = new Set<string>();
    for (const bad of parsed.invalid) {
      const previous = old?.objects.find((o) => o.kind === bad.kind && o.key === bad.key);
      if (previous === undefined || objects.some((o) => o.kind === bad.kind && o.key === bad.key)) continue;
      objects.push(previous);
      kept.add(`${bad.kind} ${bad.key}`);
    }
    this.#files.set(file, { signature, digest, objects, errors: parsed.errors });
    for (const e of parsed.errors) {
      this.#logError(e, kept.has(e.object) ? 'invalid object; keeping its previous version' : 'invalid object; left out');
    }
    if (parsed.errors.length === 0 && old !== undefined && old.errors.length > 0) this.#log.info('manifest file fixed', { file });
    this.#log.debug('manifest file read', { file, objects: objects.length, ignored: parsed.ignored });
  }

  /** A file that exists but cannot be read: keep what it held. */
  #keepAfterFailure(file: string, message: string): void {
    const old = this.#files.get(file);
    const error: ManifestError = { file, object: '', field: '', message };
    this.#files.set(file, { signature: '', digest: '', objects: old?.objects ?? [], errors: [error] });
    this.#logError(error, 'file unreadable; keeping its previous objects');
  }

  /** Merges the files (first in name order wins) and writes the difference to the store. */
  #publish(): number {
    const next = new Map<string, Published>();
    const mergeErrors: ManifestError[] = [];
    for (const file of [...this.#files.keys()].sort()) {
      for (const o of this.#files.get(file)?.objects ?? []) {
        const id = `${o.kind}\0${o.key}`;
        const first = next.get(id);
        if (first !== undefined) {
          mergeErrors.push({
            file,
            object: `${o.kind} ${o.key}`,
            field: 'metadata.name',
            message: `also defined in ${first.file}, which is used`,
          });
          continue;
        }
        next.set(id, { kind: o.kind, key: o.key, object: o.object, file });
      }
    }
    const before = new Set(this.#mergeErrors.map(formatManifestError));
    for (const e of mergeErrors) if (!before.has(formatManifestError(e))) this.#logError(e, 'duplicate object');
    this.#mergeErrors = mergeErrors;

    let changed = 0;
    for (const [id, p] of next) {
      const old = this.#published.get(id);
      if (old !== undefined && old.object === p.object) continue;
      const result = this.#store.upsert(p.kind, p.object);
      if (result.ok && result.changed) changed += 1;
    }
    for (const [id, p] of this.#published) {
      if (!next.has(id) && this.#store.delete(p.kind, p.key)) changed += 1;
    }
    this.#published = next;
    if (changed > 0) this.#log.info('manifests applied', { dir: this.dir, changed, ...this.#counts() });
    return changed;
  }

  #counts(): Record<'services' | 'endpointSlices' | 'nodes', number> {
    const c = { services: 0, endpointSlices: 0, nodes: 0 };
    for (const p of this.#published.values()) {
      if (p.kind === 'Service') c.services += 1;
      else if (p.kind === 'EndpointSlice') c.endpointSlices += 1;
      else c.nodes += 1;
    }
    return c;
  }

  #result(files: number, changed: number): ManifestScan {
    const objects: Record<ObjectKind, number> = { Service: 0, EndpointSlice: 0, Node: 0 };
    for (const p of this.#published.values()) objects[p.kind] += 1;
    return { files, objects, changed, errors: this.errors(), dirError: this.#dirError };
  }

  #logError(e: ManifestError, msg: string): void {
    this.#log.error(msg, {
      file: e.file,
      object: e.object === '' ? undefined : e.object,
      field: e.field === '' ? undefined : e.field,
      line: e.line,
      column: e.column,
      error: e.message,
    });
  }
}

function isErrno(e: unknown, code: string): boolean {
  return typeof e === 'object' && e !== null && (e as { code?: unknown }).code === code;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
