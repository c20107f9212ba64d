// Loading a BPF object with adoption of pinned maps.
//
// Every map of the object is pinned at `${bpfRoot}/${mapName}` (nothing is
// pinned anywhere else), so several agents, one per bpf root, coexist on one
// kernel. At load, a pinned map whose type, key size, value size, max entries
// and flags equal the object's is adopted (bpf_map__reuse_fd: programs use
// the existing map and its entries); an incompatible one is replaced (the pin
// is unlinked; the old map lives on while old programs hold it) or fails the
// load, as the caller chooses. Internal maps (.rodata, .bss, .data) are never
// pinned: they belong to one program load.
import { mkdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import {
  BpfError,
  BpfLoadError,
  ENOENT,
  IncompatiblePinError,
} from './errors.js';
import { mapInfo, mapTypeName, type MapInfo } from './map.js';
import { loadNative, type BpfObjectHandle, type Native } from './native.js';

export type IncompatiblePinPolicy = 'replace' | 'fail';

export interface LoadObjectOptions {
  /** Path of the compiled object (.o). */
  file: string;
  /** Directory on bpffs under which maps are pinned, e.g. /sys/fs/bpf/strait. */
  bpfRoot: string;
  /** max_entries overrides by map name (unknown names are an error). */
  mapSizes?: Record<string, number>;
  /** Initial values of `const volatile` .rodata variables, by name (exact sizes). */
  rodata?: Record<string, Buffer>;
  onIncompatiblePin: IncompatiblePinPolicy;
  native?: Native;
}

export interface LoadedMap {
  fd: number;
  info: MapInfo;
}

export interface LoadedObject {
  readonly file: string;
  readonly bpfRoot: string;
  /** Pinned maps by name (fds owned by the object until close()). */
  readonly maps: ReadonlyMap<string, LoadedMap>;
  /** Internal maps (.rodata, .bss, …) by libbpf name, not pinned. */
  readonly internalMaps: ReadonlyMap<string, LoadedMap>;
  /** Program fds by function name. */
  readonly programs: ReadonlyMap<string, number>;
  /** Maps that reused a compatible pin (entries kept). */
  readonly adopted: readonly string[];
  /** Maps created and pinned by this load (including replacements). */
  readonly created: readonly string[];
  /** Maps whose pin was incompatible and was replaced, with why. */
  readonly replaced: readonly { name: string; reason: string }[];
  /** The libbpf object, for BTF-typed helpers (dataplane.ts); invalid after close(). */
  readonly handle: BpfObjectHandle;
  /** Closes every fd of the object; pins (and attached links) stay. */
  close(): void;
}

let logCaptureOn = false;

/**
 * Routes libbpf's messages into the shim's buffer (so a failed load can carry
 * the verifier log) instead of stderr. STRAIT_LIBBPF_DEBUG=1 also echoes them,
 * debug level included.
 */
function ensureLogCapture(native: Native): void {
  if (logCaptureOn) return;
  const debug = process.env['STRAIT_LIBBPF_DEBUG'] === '1';
  native.strait_log_capture(debug ? 2 : 1, debug ? 1 : 0);
  logCaptureOn = true;
}

const logBuf = Buffer.alloc(64 * 1024);
/** The captured libbpf output since the last call (and clears it). */
export function takeLibbpfLog(native: Native = loadNative()): string {
  const n = native.strait_log_take(logBuf, logBuf.length);
  return logBuf.toString('utf8', 0, n);
}

/** Differences between a pinned map and the object's definition; empty = compatible. */
function mismatches(pinned: MapInfo, want: Omit<MapInfo, 'id' | 'name'>): string[] {
  const out: string[] = [];
  if (pinned.type !== want.type) {
    out.push(`type ${mapTypeName(pinned.type)} != ${mapTypeName(want.type)}`);
  }
  if (pinned.keySize !== want.keySize) out.push(`key_size ${pinned.keySize} != ${want.keySize}`);
  if (pinned.valueSize !== want.valueSize) {
    out.push(`value_size ${pinned.valueSize} != ${want.valueSize}`);
  }
  if (pinned.maxEntries !== want.maxEntries) {
    out.push(`max_entries ${pinned.maxEntries} != ${want.maxEntries}`);
  }
  if (pinned.flags !== want.flags) {
    out.push(`map_flags 0x${pinned.flags.toString(16)} != 0x${want.flags.toString(16)}`);
  }
  return out;
}

export function loadObject(opts: LoadObjectOptions): LoadedObject {
  const native = opts.native ?? loadNative();
  ensureLogCapture(native);
  takeLibbpfLog(native); // start from a clean log

  const obj = native.bpf_object__open_file(opts.file, null);
  if (!obj) {
    const errno = native.errno();
    throw new BpfLoadError(opts.file, 'open', errno || ENOENT, takeLibbpfLog(native));
  }
  let closed = false;
  const close = (): void => {
    if (!closed) native.bpf_object__close(obj);
    closed = true;
  };

  try {
    return prepareAndLoad(native, obj, opts, close);
  } catch (e: unknown) {
    close();
    throw e;
  }
}

function prepareAndLoad(
  native: Native,
  obj: BpfObjectHandle,
  opts: LoadObjectOptions,
  close: () => void,
): LoadedObject {
  for (const [name, data] of Object.entries(opts.rodata ?? {})) {
    const ret = native.strait_rodata_set(obj, name, data, data.length);
    if (ret === -ENOENT) {
      throw new BpfError(`set .rodata ${name}`, ENOENT, `${opts.file} has no .rodata variable ${name}`);
    }
    if (ret < 0) {
      const size = native.strait_rodata_set(obj, name, null, 0);
      throw new BpfError(`set .rodata ${name}`, -ret, `variable is ${size} bytes, got ${data.length}`);
    }
  }

  const sizes = new Map(Object.entries(opts.mapSizes ?? {}));
  const adopted: string[] = [];
  const created: string[] = [];
  const replaced: { name: string; reason: string }[] = [];
  const seen = new Set<string>();
  // names as the object defines them, in libbpf's (stable) iteration order:
  // bpf_map__reuse_fd renames a map to the kernel's name, cut at 15 characters
  const mapNames: string[] = [];

  for (let map = native.bpf_object__next_map(obj, null); map; map = native.bpf_object__next_map(obj, map)) {
    const name = native.bpf_map__name(map);
    mapNames.push(name);
    if (native.bpf_map__is_internal(map)) continue;
    seen.add(name);
    const size = sizes.get(name);
    if (size !== undefined) {
      const ret = native.bpf_map__set_max_entries(map, size);
      if (ret < 0) throw new BpfError(`set max_entries of ${name} to ${size}`, -ret);
    }
    const path = join(opts.bpfRoot, name);
    const pinnedFd = native.bpf_obj_get(path);
    if (pinnedFd === -ENOENT) {
      created.push(name);
      continue;
    }
    if (pinnedFd < 0) throw new BpfError(`bpf_obj_get ${path}`, -pinnedFd);
    try {
      let diff: string[];
      try {
        diff = mismatches(mapInfo(pinnedFd, native), {
          type: native.bpf_map__type(map),
          keySize: native.bpf_map__key_size(map),
          valueSize: native.bpf_map__value_size(map),
          maxEntries: native.bpf_map__max_entries(map),
          flags: native.bpf_map__map_flags(map),
        });
      } catch (e: unknown) {
        diff = [`not a map (${e instanceof Error ? e.message : String(e)})`];
      }
      if (diff.length === 0) {
        const ret = native.bpf_map__reuse_fd(map, pinnedFd); // dups the fd
        if (ret < 0) throw new BpfError(`reuse pinned map ${path}`, -ret);
        adopted.push(name);
        continue;
      }
      if (opts.onIncompatiblePin === 'fail') throw new IncompatiblePinError(name, path, diff);
      // unpinned only after a successful load: a failed load leaves the old pin
      replaced.push({ name, reason: diff.join(', ') });
      created.push(name);
    } finally {
      native.close(pinnedFd);
    }
  }
  const unknown = [...sizes.keys()].filter((n) => !seen.has(n));
  if (unknown.length > 0) {
    throw new BpfError('map sizes', 22, `${opts.file} has no map named ${unknown.join(', ')}`);
  }

  const ret = native.bpf_object__load(obj);
  if (ret < 0) throw new BpfLoadError(opts.file, 'load', -ret, takeLibbpfLog(native));

  mkdirSync(opts.bpfRoot, { recursive: true });
  for (const { name } of replaced) {
    try {
      unlinkSync(join(opts.bpfRoot, name));
    } catch (e: unknown) {
      if (!(e instanceof Error && 'code' in e && e.code === 'ENOENT')) throw e;
    }
  }
  const maps = new Map<string, LoadedMap>();
  const internalMaps = new Map<string, LoadedMap>();
  let index = 0;
  for (let map = native.bpf_object__next_map(obj, null); map; map = native.bpf_object__next_map(obj, map)) {
    const name = mapNames[index++] ?? native.bpf_map__name(map);
    const fd = native.bpf_map__fd(map);
    const entry = { fd, info: mapInfo(fd, native) };
    if (native.bpf_map__is_internal(map)) {
      internalMaps.set(name, entry);
      continue;
    }
    maps.set(name, entry);
    if (!created.includes(name)) continue;
    const path = join(opts.bpfRoot, name);
    const pin = native.bpf_obj_pin(fd, path);
    if (pin < 0) throw new BpfError(`bpf_obj_pin ${path}`, -pin);
  }

  const programs = new Map<string, number>();
  for (
    let prog = native.bpf_object__next_program(obj, null);
    prog;
    prog = native.bpf_object__next_program(obj, prog)
  ) {
    programs.set(native.bpf_program__name(prog), native.bpf_program__fd(prog));
  }

  return {
    file: opts.file,
    bpfRoot: opts.bpfRoot,
    maps,
    internalMaps,
    programs,
    adopted,
    created,
    replaced,
    handle: obj,
    close,
  };
}
