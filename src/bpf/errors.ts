// Typed errors of the FFI layer. errno is translated here and only here.
import { getSystemErrorMap } from 'node:util';

// Kernel-internal errnos that reach user space through bpf(2) but are not in
// libc's table, and libbpf's own error codes (LIBBPF_ERRNO__*, libbpf.h).
const EXTRA_ERRNOS: ReadonlyMap<number, readonly [string, string]> = new Map([
  [512, ['ERESTARTSYS', 'restart system call']],
  [524, ['ENOTSUPP', 'operation not supported (kernel)']],
  [4000, ['LIBBPF_ERRNO__LIBELF', 'something wrong in libelf']],
  [4001, ['LIBBPF_ERRNO__FORMAT', 'BPF object format invalid']],
  [4002, ['LIBBPF_ERRNO__KVERSION', "'version' section incorrect or lost"]],
  [4003, ['LIBBPF_ERRNO__ENDIAN', 'endian mismatch']],
  [4004, ['LIBBPF_ERRNO__INTERNAL', 'internal error in libbpf']],
  [4005, ['LIBBPF_ERRNO__RELOC', 'relocation failed']],
  [4006, ['LIBBPF_ERRNO__LOAD', 'failed to load program']],
  [4007, ['LIBBPF_ERRNO__VERIFY', 'kernel verifier blocked the program']],
  [4008, ['LIBBPF_ERRNO__PROG2BIG', 'program too big']],
  [4009, ['LIBBPF_ERRNO__KVER', 'incorrect kernel version']],
  [4010, ['LIBBPF_ERRNO__PROGTYPE', 'kernel does not support this program type']],
  [4011, ['LIBBPF_ERRNO__WRNGPID', 'wrong pid in netlink message']],
  [4012, ['LIBBPF_ERRNO__INVSEQ', 'invalid netlink sequence']],
  [4013, ['LIBBPF_ERRNO__NLPARSE', 'netlink parse error']],
]);

let systemErrors: Map<number, [string, string]> | undefined;

/** errno (positive or negative) → [code, message], e.g. 7 → ['E2BIG', 'argument list too long']. */
export function describeErrno(errno: number): { code: string; message: string } {
  const n = Math.abs(errno);
  const extra = EXTRA_ERRNOS.get(n);
  if (extra) return { code: extra[0], message: extra[1] };
  systemErrors ??= getSystemErrorMap();
  const sys = systemErrors.get(-n);
  if (sys) return { code: sys[0], message: sys[1] };
  return { code: `E${n}`, message: `error ${n}` };
}

export const ENOENT = 2;
export const E2BIG = 7;
export const EEXIST = 17;
export const ENODEV = 19;
export const EINVAL = 22;
export const ENOSPC = 28;
export const EOPNOTSUPP = 95;
export const ENOTSUPP = 524;

/** A failed libbpf or bpf(2) call. */
export class BpfError extends Error {
  override readonly name: string = 'BpfError';
  /** Positive errno. */
  readonly errno: number;
  /** 'ENOENT', 'E2BIG', … */
  readonly code: string;

  constructor(
    /** What was attempted: 'bpf_obj_get /sys/fs/bpf/x', 'tc attach', … */
    readonly op: string,
    errno: number,
    detail?: string,
  ) {
    const { code, message } = describeErrno(errno);
    super(`${op}: ${detail ?? message} (${code})`);
    this.errno = Math.abs(errno);
    this.code = code;
  }
}

export type MapOperation =
  | 'lookup'
  | 'update'
  | 'delete'
  | 'next_key'
  | 'lookup_batch'
  | 'update_batch'
  | 'delete_batch';

/** A failed operation on one map; names the map, the operation and the key. */
export class BpfMapError extends BpfError {
  override readonly name: string = 'BpfMapError';
  /** The map is full (E2BIG / ENOSPC on insert). */
  readonly full: boolean;

  constructor(
    readonly mapName: string,
    readonly operation: MapOperation,
    /** The key, rendered (e.g. '{addr: 198.18.0.1, port: 80, proto: 6, scope: 0}'). */
    readonly key: string | undefined,
    errno: number,
    readonly maxEntries?: number,
    /** An array map: E2BIG means an index beyond max_entries, not a full map. */
    arrayMap = false,
  ) {
    const n = Math.abs(errno);
    const inserting = operation === 'update' || operation === 'update_batch';
    const full = inserting && !arrayMap && (n === E2BIG || n === ENOSPC);
    const keyText = key === undefined ? '' : ` ${key}`;
    let detail: string | undefined;
    if (arrayMap && n === E2BIG) {
      detail = `index beyond max_entries ${maxEntries ?? '?'} of array map ${mapName}`;
    } else if (full) {
      detail = `map ${mapName} is full (max_entries ${maxEntries ?? '?'})`;
    } else if (n === EEXIST && inserting) {
      detail = 'key exists (update flags: noexist)';
    } else if (n === ENOENT) {
      detail = 'no such key';
    }
    super(`bpf map ${mapName}: ${operation}${keyText}`, n, detail);
    this.full = full;
  }
}

/** bpf_object__open / __load failed; log holds libbpf's output (the verifier log included). */
export class BpfLoadError extends BpfError {
  override readonly name: string = 'BpfLoadError';
  constructor(
    readonly file: string,
    readonly stage: 'open' | 'load',
    errno: number,
    readonly log: string,
  ) {
    super(`bpf object ${file}: ${stage}`, errno);
    const tail = log.trim().split('\n').slice(-40).join('\n');
    if (tail) this.message += `\n--- libbpf log (tail) ---\n${tail}`;
  }
}

/** A pinned map whose layout differs from the object's, with onIncompatiblePin: 'fail'. */
export class IncompatiblePinError extends Error {
  override readonly name = 'IncompatiblePinError';
  constructor(
    readonly mapName: string,
    readonly path: string,
    /** e.g. ['max_entries 1024 != 2048'] */
    readonly mismatches: readonly string[],
  ) {
    super(`pinned map ${mapName} at ${path} is incompatible: ${mismatches.join(', ')}`);
  }
}

/** build/native/libstrait.so or libbpf.so.1 cannot be loaded. */
export class NativeLibraryError extends Error {
  override readonly name = 'NativeLibraryError';
  constructor(
    readonly library: string,
    override readonly cause: unknown,
  ) {
    super(
      `cannot load ${library}: ${cause instanceof Error ? cause.message : String(cause)}` +
        (library.endsWith('libstrait.so') ? ' (run `make native`)' : ''),
    );
  }
}
