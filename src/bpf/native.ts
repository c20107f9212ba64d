// Every koffi binding of strait, declared here and only here (Temporal
// core-bridge style): libbpf.so.1 directly, build/native/libstrait.so (the
// shim in native/strait.c) for the calls with awkward structs, and libc's
// close(). Opaque handles for libbpf objects; `T | null` where C returns NULL.
// No logic here: wrappers with meaning live in map.ts, object.ts, dataplane.ts.
//
// Buffers are passed as raw memory (no copies): keys, values, in/out counts
// (a 4-byte Buffer for `__u32 *`). Functions return what C returns: libbpf 1.x
// returns -errno; functions returning a pointer return null and set errno
// (read it with errno() right after the call).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { NativeLibraryError } from './errors.js';

declare const handleBrand: unique symbol;
/** An opaque libbpf pointer, only ever passed back to libbpf. */
export type Handle<Name extends string> = { readonly [handleBrand]: Name };
export type BpfObjectHandle = Handle<'bpf_object'>;
export type BpfMapHandle = Handle<'bpf_map'>;
export type BpfProgramHandle = Handle<'bpf_program'>;

/** struct strait_map_info (native/strait.h). */
export interface NativeMapInfo {
  type: number;
  id: number;
  key_size: number;
  value_size: number;
  max_entries: number;
  map_flags: number;
  name: string;
}

/** struct strait_prog_info (native/strait.h). */
export interface NativeProgInfo {
  type: number;
  id: number;
  name: string;
  tag: number[];
}

/** struct strait_tc_attachment (native/strait.h). */
export interface NativeTcAttachment {
  mode: number;
  ifindex: number;
  handle: number;
  priority: number;
  updated: number;
  tcx_errno: number;
}

/** struct strait_cgroup_attachment (native/strait.h). */
export interface NativeCgroupAttachment {
  cgroup_id: bigint | number;
  updated: number;
  replaced: number;
}

/** struct strait_xdp_attachment (native/strait.h). */
export interface NativeXdpAttachment {
  mode: number;
  ifindex: number;
  updated: number;
  native_errno: number;
}

export const STRAIT_XDP_AUTO = 0;
export const STRAIT_XDP_NATIVE = 1;
export const STRAIT_XDP_GENERIC = 2;

export const STRAIT_TC_AUTO = 0;
export const STRAIT_TC_TCX = 1;
export const STRAIT_TC_CLSACT = 2;
export const STRAIT_TC_INGRESS = 0;
export const STRAIT_TC_EGRESS = 1;

type Ptr = Buffer | null;

export interface Native {
  readonly libstraitPath: string;
  /** errno of the calling thread, right after a call that returned null / -1. */
  errno(): number;

  // libc
  close(fd: number): number;

  // libbpf: objects
  libbpf_num_possible_cpus(): number;
  bpf_object__open_file(path: string, opts: null): BpfObjectHandle | null;
  bpf_object__load(obj: BpfObjectHandle): number;
  bpf_object__close(obj: BpfObjectHandle): void;
  bpf_object__name(obj: BpfObjectHandle): string;
  bpf_object__next_map(obj: BpfObjectHandle, prev: BpfMapHandle | null): BpfMapHandle | null;
  bpf_object__next_program(
    obj: BpfObjectHandle,
    prev: BpfProgramHandle | null,
  ): BpfProgramHandle | null;
  bpf_object__find_program_by_name(obj: BpfObjectHandle, name: string): BpfProgramHandle | null;

  // libbpf: maps before/after load
  bpf_map__name(map: BpfMapHandle): string;
  bpf_map__type(map: BpfMapHandle): number;
  bpf_map__key_size(map: BpfMapHandle): number;
  bpf_map__value_size(map: BpfMapHandle): number;
  bpf_map__max_entries(map: BpfMapHandle): number;
  bpf_map__map_flags(map: BpfMapHandle): number;
  bpf_map__set_max_entries(map: BpfMapHandle, maxEntries: number): number;
  bpf_map__is_internal(map: BpfMapHandle): boolean;
  bpf_map__reuse_fd(map: BpfMapHandle, fd: number): number;
  bpf_map__fd(map: BpfMapHandle): number;

  // libbpf: programs
  bpf_program__name(prog: BpfProgramHandle): string;
  bpf_program__section_name(prog: BpfProgramHandle): string;
  bpf_program__fd(prog: BpfProgramHandle): number;
  /** enum bpf_attach_type libbpf derived from the SEC() name. */
  bpf_program__expected_attach_type(prog: BpfProgramHandle): number;

  // libbpf: bpf(2) wrappers
  bpf_obj_get(path: string): number;
  bpf_obj_pin(fd: number, path: string): number;
  bpf_map_update_elem(fd: number, key: Buffer, value: Buffer, flags: number): number;
  bpf_map_lookup_elem(fd: number, key: Buffer, value: Buffer): number;
  bpf_map_delete_elem(fd: number, key: Buffer): number;
  bpf_map_get_next_key(fd: number, key: Ptr, nextKey: Buffer): number;
  /** count: a 4-byte Buffer (in: entries, out: done); opts: struct bpf_map_batch_opts bytes. */
  bpf_map_update_batch(fd: number, keys: Buffer, values: Buffer, count: Buffer, opts: Ptr): number;
  bpf_map_delete_batch(fd: number, keys: Buffer, count: Buffer, opts: Ptr): number;
  bpf_map_lookup_batch(
    fd: number,
    inBatch: Ptr,
    outBatch: Buffer,
    keys: Buffer,
    values: Buffer,
    count: Buffer,
    opts: Ptr,
  ): number;

  // libstrait shim (native/strait.h)
  strait_log_capture(maxLevel: number, echo: number): void;
  strait_log_take(buf: Buffer, size: number): number;
  strait_prog_test_run(
    progFd: number,
    data: Ptr,
    size: number,
    out: Ptr,
    outSize: Buffer,
    ctx: Ptr,
    ctxSize: number,
    ctxOut: Ptr,
    ctxOutSize: Buffer,
    repeat: number,
    retval: Buffer,
    durationNs: Buffer,
  ): number;
  strait_map_info(fd: number, out: Partial<NativeMapInfo>): number;
  strait_prog_info(fd: number, out: Partial<NativeProgInfo>): number;
  strait_rodata_set(obj: BpfObjectHandle, name: string, data: Ptr, size: number): number;
  strait_map_create_btf(
    obj: BpfObjectHandle | null,
    mapType: number,
    name: string,
    keyType: string,
    valueType: string,
    keySize: number,
    valueSize: number,
    maxEntries: number,
    mapFlags: number,
  ): number;
  strait_ifindex(netnsPath: string | null, ifname: string): number;
  strait_tc_attach(
    netnsPath: string | null,
    ifname: string,
    direction: number,
    progFd: number,
    mode: number,
    pinPath: string | null,
    out: Partial<NativeTcAttachment>,
  ): number;
  strait_tc_detach(
    netnsPath: string | null,
    ifname: string,
    direction: number,
    mode: number,
    pinPath: string | null,
  ): number;
  strait_cgroup_attach(
    cgroupPath: string,
    attachType: number,
    progFd: number,
    pinPath: string,
    out: Partial<NativeCgroupAttachment>,
  ): number;
  /** Total output length (bigint: int64_t), or -errno. */
  strait_iter_run(progFd: number, netnsPath: string | null, buf: Ptr, size: number): bigint | number;
  /** A listening TCP socket created inside netnsPath (null: ours), bound to addr ("" = every address); fd or -errno. */
  strait_listen_tcp(netnsPath: string | null, addr: string, port: number, backlog: number): number;
  strait_xdp_attach(
    netnsPath: string | null,
    ifname: string,
    progFd: number,
    mode: number,
    pinPath: string,
    out: Partial<NativeXdpAttachment>,
  ): number;
  /** progId (4 bytes): attached program id (0 = none); mode (4 bytes): STRAIT_XDP_NATIVE / _GENERIC / 0. */
  strait_xdp_query(netnsPath: string | null, ifname: string, progId: Buffer, mode: Buffer): number;
}

/** The directory holding package.json, from src/bpf (vitest) or dist/src/bpf (tsc). */
export function packageRoot(from: string = dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

export function libstraitPath(): string {
  return join(packageRoot(), 'build', 'native', 'libstrait.so');
}

function load(path: string): koffi.IKoffiLib {
  try {
    return koffi.load(path);
  } catch (e: unknown) {
    throw new NativeLibraryError(path, e);
  }
}

let native: Native | undefined;

/** The bindings, loaded on first use (codecs and unit tests never load them). */
export function loadNative(): Native {
  if (native) return native;
  const path = libstraitPath();
  if (!existsSync(path)) throw new NativeLibraryError(path, new Error('not built'));
  // libstrait.so links libbpf.so.1: both resolve to one libbpf in the process,
  // so the shim's log callback sees the messages of direct libbpf calls.
  const shim = load(path);
  const bpf = load('libbpf.so.1');
  const libc = load('libc.so.6');

  koffi.opaque('bpf_object');
  koffi.opaque('bpf_map');
  koffi.opaque('bpf_program');
  koffi.struct('strait_map_info', {
    type: 'uint32_t',
    id: 'uint32_t',
    key_size: 'uint32_t',
    value_size: 'uint32_t',
    max_entries: 'uint32_t',
    map_flags: 'uint32_t',
    name: koffi.array('char', 16),
  });
  koffi.struct('strait_prog_info', {
    type: 'uint32_t',
    id: 'uint32_t',
    name: koffi.array('char', 16),
    tag: koffi.array('uint8_t', 8, 'Array'),
  });
  koffi.struct('strait_cgroup_attachment', {
    cgroup_id: 'uint64_t',
    updated: 'int32_t',
    replaced: 'int32_t',
  });
  koffi.struct('strait_xdp_attachment', {
    mode: 'int32_t',
    ifindex: 'uint32_t',
    updated: 'int32_t',
    native_errno: 'int32_t',
  });
  koffi.struct('strait_tc_attachment', {
    mode: 'int32_t',
    ifindex: 'uint32_t',
    handle: 'uint32_t',
    priority: 'uint32_t',
    updated: 'int32_t',
    tcx_errno: 'int32_t',
  });

  const b = (decl: string): koffi.KoffiFunction => bpf.func(decl);
  const s = (decl: string): koffi.KoffiFunction => shim.func(decl);
  const bindings = {
    libstraitPath: path,
    errno: (): number => koffi.errno(),
    close: libc.func('int close(int fd)'),

    libbpf_num_possible_cpus: b('int libbpf_num_possible_cpus(void)'),
    bpf_object__open_file: b('bpf_object *bpf_object__open_file(const char *path, const void *opts)'),
    bpf_object__load: b('int bpf_object__load(bpf_object *obj)'),
    bpf_object__close: b('void bpf_object__close(bpf_object *obj)'),
    bpf_object__name: b('const char *bpf_object__name(const bpf_object *obj)'),
    bpf_object__next_map: b('bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *map)'),
    bpf_object__next_program: b(
      'bpf_program *bpf_object__next_program(const bpf_object *obj, bpf_program *prog)',
    ),
    bpf_object__find_program_by_name: b(
      'bpf_program *bpf_object__find_program_by_name(const bpf_object *obj, const char *name)',
    ),

    bpf_map__name: b('const char *bpf_map__name(const bpf_map *map)'),
    bpf_map__type: b('int bpf_map__type(const bpf_map *map)'),
    bpf_map__key_size: b('uint32_t bpf_map__key_size(const bpf_map *map)'),
    bpf_map__value_size: b('uint32_t bpf_map__value_size(const bpf_map *map)'),
    bpf_map__max_entries: b('uint32_t bpf_map__max_entries(const bpf_map *map)'),
    bpf_map__map_flags: b('uint32_t bpf_map__map_flags(const bpf_map *map)'),
    bpf_map__set_max_entries: b('int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)'),
    bpf_map__is_internal: b('bool bpf_map__is_internal(const bpf_map *map)'),
    bpf_map__reuse_fd: b('int bpf_map__reuse_fd(bpf_map *map, int fd)'),
    bpf_map__fd: b('int bpf_map__fd(const bpf_map *map)'),

    bpf_program__name: b('const char *bpf_program__name(const bpf_program *prog)'),
    bpf_program__section_name: b('const char *bpf_program__section_name(const bpf_program *prog)'),
    bpf_program__fd: b('int bpf_program__fd(const bpf_program *prog)'),
    bpf_program__expected_attach_type: b('int bpf_program__expected_attach_type(const bpf_program *prog)'),

    bpf_obj_get: b('int bpf_obj_get(const char *pathname)'),
    bpf_obj_pin: b('int bpf_obj_pin(int fd, const char *pathname)'),
    bpf_map_update_elem: b(
      'int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)',
    ),
    bpf_map_lookup_elem: b('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
    bpf_map_delete_elem: b('int bpf_map_delete_elem(int fd, const void *key)'),
    bpf_map_get_next_key: b('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
    bpf_map_update_batch: b(
      'int bpf_map_update_batch(int fd, const void *keys, const void *values, void *count, const void *opts)',
    ),
    bpf_map_delete_batch: b(
      'int bpf_map_delete_batch(int fd, const void *keys, void *count, const void *opts)',
    ),
    bpf_map_lookup_batch: b(
      'int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, void *count, const void *opts)',
    ),

    strait_log_capture: s('void strait_log_capture(int32_t max_level, int32_t echo)'),
    strait_log_take: s('uint32_t strait_log_take(void *buf, uint32_t size)'),
    strait_prog_test_run: s(
      'int strait_prog_test_run(int prog_fd, const void *data, uint32_t size, void *out, void *out_size, ' +
        'const void *ctx, uint32_t ctx_size, void *ctx_out, void *ctx_out_size, uint32_t repeat, ' +
        'void *retval, void *duration_ns)',
    ),
    strait_map_info: s('int strait_map_info(int map_fd, _Out_ strait_map_info *out)'),
    strait_prog_info: s('int strait_prog_info(int prog_fd, _Out_ strait_prog_info *out)'),
    strait_rodata_set: s(
      'int strait_rodata_set(bpf_object *obj, const char *name, const void *data, uint32_t size)',
    ),
    strait_map_create_btf: s(
      'int strait_map_create_btf(bpf_object *obj, uint32_t map_type, const char *name, ' +
        'const char *key_type, const char *value_type, uint32_t key_size, uint32_t value_size, ' +
        'uint32_t max_entries, uint32_t map_flags)',
    ),
    strait_ifindex: s('int strait_ifindex(const char *netns_path, const char *ifname)'),
    strait_tc_attach: s(
      'int strait_tc_attach(const char *netns_path, const char *ifname, int32_t direction, int prog_fd, ' +
        'int32_t mode, const char *pin_path, _Out_ strait_tc_attachment *out)',
    ),
    strait_tc_detach: s(
      'int strait_tc_detach(const char *netns_path, const char *ifname, int32_t direction, int32_t mode, ' +
        'const char *pin_path)',
    ),
    strait_cgroup_attach: s(
      'int strait_cgroup_attach(const char *cgroup_path, int32_t attach_type, int prog_fd, const char *pin_path, ' +
        '_Out_ strait_cgroup_attachment *out)',
    ),
    strait_iter_run: s('int64_t strait_iter_run(int prog_fd, const char *netns_path, void *buf, uint32_t size)'),
    strait_listen_tcp: s('int strait_listen_tcp(const char *netns_path, const char *addr, uint16_t port, int32_t backlog)'),
    strait_xdp_attach: s(
      'int strait_xdp_attach(const char *netns_path, const char *ifname, int prog_fd, int32_t mode, ' +
        'const char *pin_path, _Out_ strait_xdp_attachment *out)',
    ),
    strait_xdp_query: s(
      'int strait_xdp_query(const char *netns_path, const char *ifname, void *prog_id, void *mode)',
    ),
  };
  native = bindings as unknown as Native;
  return native;
}
