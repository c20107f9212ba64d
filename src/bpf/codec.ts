// A small struct layout engine: JS objects <-> the bytes of a C struct.
//
// A codec is declared field by field in C order with camelCase names; offsets,
// alignment, implicit padding and the total size follow the C rules (each
// field at a multiple of its alignment, the struct padded to its largest
// alignment). test/bpf/abi-btf.test.ts holds every codec of abi.ts against the
// BTF of the compiled object, so a layout can only drift with a failing test.
//
// Representations:
//  - u8, u16, u32: number, host byte order.
//  - u64: bigint, host byte order. Every u64 of the ABI is a nanosecond clock,
//    a cookie or a counter that passes 2^53; one type for all of them beats a
//    per-field guess. Encoding also accepts a number (an integer ≥ 0).
//  - be16, be32: number in host order in JS, network order in memory (ports).
//  - ipv4: dotted string, 4 bytes network order. ipv6: string, 16 bytes; decoded
//    to the canonical form node:net prints (RFC 5952 compression, lower case,
//    IPv4-mapped and IPv4-compatible tails as dotted quads).
//  - bytes(n): Buffer of n bytes (a copy on decode).
//  - array(t, n): T[] of exactly n elements.
//  - pad(n): always written as zero, never in the JS object. Hash keys compare
//    bytes, so implicit and explicit padding are always zeroed on encode.
import { endianness } from 'node:os';
import { isIPv4, isIPv6 } from 'node:net';

export type FieldKind =
  | 'u8'
  | 'u16'
  | 'u32'
  | 'u64'
  | 'be16'
  | 'be32'
  | 'ipv4'
  | 'ipv6'
  | 'bytes'
  | 'cstring'
  | 'pad';

/** The type of one field: how many bytes, aligned how, read and written how. */
export interface FieldType<T> {
  readonly kind: FieldKind;
  readonly size: number;
  readonly align: number;
  /** Element count for arrays (array(u32, 4) → 4), undefined for scalars. */
  readonly count?: number;
  readonly zero: () => T;
  read(buf: Buffer, off: number): T;
  write(buf: Buffer, off: number, value: T): void;
}

/** Padding: occupies bytes, always zero, absent from the JS object. */
export interface PadType extends FieldType<undefined> {
  readonly kind: 'pad';
}

/** Where one field lives inside its struct. */
export interface FieldLayout {
  /** JS (camelCase) name. */
  readonly name: string;
  /** The C (snake_case) member name it mirrors. */
  readonly cName: string;
  readonly offset: number;
  readonly size: number;
  readonly kind: FieldKind;
  readonly count?: number;
}

export interface Codec<T> {
  /** C type name, e.g. 'lb4_key' or '__u32'. */
  readonly name: string;
  readonly size: number;
  readonly align: number;
  readonly fields: readonly FieldLayout[];
  encode(value: T): Buffer;
  encodeInto(value: T, buf: Buffer, off?: number): void;
  decode(buf: Buffer, off?: number): T;
  /** A value with every field zero (addresses '0.0.0.0' / '::'), overridden by init. */
  create(init?: Partial<T>): T;
  /** A short one-line rendering for error messages and logs. */
  format(value: T): string;
}

export class CodecError extends Error {
  override readonly name = 'CodecError';
  constructor(
    readonly codec: string,
    readonly field: string,
    message: string,
  ) {
    super(`${codec}.${field}: ${message}`);
  }
}

const LE = endianness() === 'LE';

function checkInt(value: unknown, max: number, kind: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${kind}: ${String(value)} is not an integer in [0, ${max}]`);
  }
  return value;
}

export const u8: FieldType<number> = {
  kind: 'u8',
  size: 1,
  align: 1,
  zero: () => 0,
  read: (b, o) => b.readUInt8(o),
  write: (b, o, v) => {
    b.writeUInt8(checkInt(v, 0xff, 'u8'), o);
  },
};

export const u16: FieldType<number> = {
  kind: 'u16',
  size: 2,
  align: 2,
  zero: () => 0,
  read: LE ? (b, o) => b.readUInt16LE(o) : (b, o) => b.readUInt16BE(o),
  write: LE
    ? (b, o, v) => {
        b.writeUInt16LE(checkInt(v, 0xffff, 'u16'), o);
      }
    : (b, o, v) => {
        b.writeUInt16BE(checkInt(v, 0xffff, 'u16'), o);
      },
};

export const u32: FieldType<number> = {
  kind: 'u32',
  size: 4,
  align: 4,
  zero: () => 0,
  read: LE ? (b, o) => b.readUInt32LE(o) : (b, o) => b.readUInt32BE(o),
  write: LE
    ? (b, o, v) => {
        b.writeUInt32LE(checkInt(v, 0xffffffff, 'u32'), o);
      }
    : (b, o, v) => {
        b.writeUInt32BE(checkInt(v, 0xffffffff, 'u32'), o);
      },
};

function toU64(v: bigint | number): bigint {
  if (typeof v === 'number') {
    checkInt(v, Number.MAX_SAFE_INTEGER, 'u64');
    return BigInt(v);
  }
  if (typeof v !== 'bigint' || v < 0n || v > 0xffffffffffffffffn) {
    throw new RangeError(`u64: ${String(v)} is not in [0, 2^64)`);
  }
  return v;
}

export const u64: FieldType<bigint> = {
  kind: 'u64',
  size: 8,
  align: 8,
  zero: () => 0n,
  read: LE ? (b, o) => b.readBigUInt64LE(o) : (b, o) => b.readBigUInt64BE(o),
  write: LE
    ? (b, o, v) => {
        b.writeBigUInt64LE(toU64(v), o);
      }
    : (b, o, v) => {
        b.writeBigUInt64BE(toU64(v), o);
      },
};

export const be16: FieldType<number> = {
  kind: 'be16',
  size: 2,
  align: 2,
  zero: () => 0,
  read: (b, o) => b.readUInt16BE(o),
  write: (b, o, v) => {
    b.writeUInt16BE(checkInt(v, 0xffff, 'be16'), o);
  },
};

export const be32: FieldType<number> = {
  kind: 'be32',
  size: 4,
  align: 4,
  zero: () => 0,
  read: (b, o) => b.readUInt32BE(o),
  write: (b, o, v) => {
    b.writeUInt32BE(checkInt(v, 0xffffffff, 'be32'), o);
  },
};

// ---- addresses ----

/** Writes a dotted IPv4 address as 4 bytes in network order. */
export function writeIPv4(buf: Buffer, off: number, addr: string): void {
  // hand-rolled: this runs for every key of every map write
  let part = 0;
  let value = -1;
  let digits = 0;
  if (typeof addr === 'string' && addr.length <= 15) {
    for (let i = 0; i <= addr.length; i++) {
      const c = i < addr.length ? addr.charCodeAt(i) : 46; /* '.' ends the last part */
      if (c === 46) {
        if (digits === 0 || value > 255 || part > 3) break;
        buf[off + part] = value;
        part++;
        value = -1;
        digits = 0;
        continue;
      }
      if (c < 48 || c > 57 || (digits === 1 && value === 0)) break; // digit, no leading zero
      value = digits === 0 ? c - 48 : value * 10 + (c - 48);
      digits++;
      if (i === addr.length - 1 && part === 3 && digits <= 3 && value <= 255) {
        buf[off + 3] = value;
        return;
      }
    }
  }
  throw new TypeError(`ipv4: ${JSON.stringify(addr)} is not an IPv4 address`);
}

export function readIPv4(buf: Buffer, off: number): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`;
}

/** Parses an IPv6 address (any valid textual form, no zone) into 16 bytes. */
export function writeIPv6(buf: Buffer, off: number, addr: string): void {
  if (typeof addr !== 'string' || !isIPv6(addr) || addr.includes('%')) {
    throw new TypeError(`ipv6: ${JSON.stringify(addr)} is not an IPv6 address`);
  }
  const words: number[] = [];
  let text = addr;
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  const last = text.slice(lastColon + 1);
  if (last.includes('.')) {
    const p = last.split('.').map(Number);
    tail = [((p[0] ?? 0) << 8) | (p[1] ?? 0), ((p[2] ?? 0) << 8) | (p[3] ?? 0)];
    text = text.slice(0, lastColon + 1) + '0';
  }
  const halves = text.split('::');
  const parse = (s: string): number[] =>
    s === '' ? [] : s.split(':').map((w) => Number.parseInt(w, 16));
  const head = parse(halves[0] ?? '');
  let rest = halves.length > 1 ? parse(halves[1] ?? '') : [];
  if (tail.length > 0) {
    // the placeholder '0' we appended stands for the dotted quad (two words)
    if (halves.length > 1) rest = [...rest.slice(0, -1), ...tail];
    else head.splice(head.length - 1, 1, ...tail);
  }
  const fill = 8 - head.length - rest.length;
  words.push(...head, ...new Array<number>(halves.length > 1 ? fill : 0).fill(0), ...rest);
  if (words.length !== 8) throw new TypeError(`ipv6: cannot parse ${JSON.stringify(addr)}`);
  for (let i = 0; i < 8; i++) buf.writeUInt16BE(words[i] ?? 0, off + 2 * i);
}

/** Formats 16 bytes as node:net (inet_ntop) prints an IPv6 address. */
export function readIPv6(buf: Buffer, off: number): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(buf.readUInt16BE(off + 2 * i));
  // longest run of at least two zero words; the first one on a tie
  let bestBase = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestBase = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestBase = -1;
  // IPv4-compatible (::a.b.c.d) and IPv4-mapped (::ffff:a.b.c.d) tails
  if (bestBase === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
    return (bestLen === 5 ? '::ffff:' : '::') + readIPv4(buf, off + 12);
  }
  const out: string[] = [];
  for (let i = 0; i < 8; i++) {
    if (i === bestBase) {
      out.push(i === 0 ? '::' : ':');
      i += bestLen - 1;
      continue;
    }
    out.push((w[i] ?? 0).toString(16) + (i < 7 ? ':' : ''));
  }
  return out.join('');
}

/** An IPv4 address held in a C `__be32` (so 4-byte aligned). */
export const ipv4: FieldType<string> = {
  kind: 'ipv4',
  size: 4,
  align: 4,
  zero: () => '0.0.0.0',
  read: readIPv4,
  write: writeIPv4,
};

/** An IPv6 address held in a C `__u8[16]` (byte aligned). */
export const ipv6: FieldType<string> = {
  kind: 'ipv6',
  size: 16,
  align: 1,
  zero: () => '::',
  read: readIPv6,
  write: writeIPv6,
};

export function bytes(n: number): FieldType<Buffer> {
  return {
    kind: 'bytes',
    size: n,
    align: 1,
    count: n,
    zero: () => Buffer.alloc(n),
    read: (b, o) => Buffer.from(b.subarray(o, o + n)),
    write: (b, o, v) => {
      if (!Buffer.isBuffer(v) || v.length !== n) {
        throw new TypeError(`bytes[${n}]: expected a Buffer of ${n} bytes`);
      }
      v.copy(b, o);
    },
  };
}

/**
 * A NUL-terminated C string in a `char[n]`: decoded up to the first NUL,
 * encoded zero-filled; a longer value is cut to n - 1 bytes so the NUL stays.
 */
export function cstring(n: number): FieldType<string> {
  return {
    kind: 'cstring',
    size: n,
    align: 1,
    count: n,
    zero: () => '',
    read: (b, o) => {
      const raw = b.subarray(o, o + n);
      const end = raw.indexOf(0);
      return raw.subarray(0, end < 0 ? n : end).toString('utf8');
    },
    write: (b, o, v) => {
      b.fill(0, o, o + n);
      Buffer.from(v, 'utf8').copy(b, o, 0, n - 1);
    },
  };
}

export function pad(n: number): PadType {
  return {
    kind: 'pad',
    size: n,
    align: 1,
    count: n,
    zero: () => undefined,
    read: () => undefined,
    write: (b, o) => {
      b.fill(0, o, o + n);
    },
  };
}

/** A fixed-length C array of a scalar type (`__u32 uplink_ifindex[4]`). */
export function array<T>(t: FieldType<T>, n: number): FieldType<T[]> {
  return {
    kind: t.kind,
    size: t.size * n,
    align: t.align,
    count: n,
    zero: () => Array.from({ length: n }, () => t.zero()),
    read: (b, o) => Array.from({ length: n }, (_, i) => t.read(b, o + i * t.size)),
    write: (b, o, v) => {
      if (!Array.isArray(v) || v.length !== n) {
        throw new TypeError(`${t.kind}[${n}]: expected an array of ${n} elements`);
      }
      for (let i = 0; i < n; i++) t.write(b, o + i * t.size, v[i] as T);
    },
  };
}

// ---- structs ----

type Shape = Record<string, FieldType<unknown>>;

/** The JS object type a struct shape describes (pads left out). */
export type StructValue<S extends Shape> = {
  -readonly [K in keyof S as S[K] extends PadType ? never : K]: S[K] extends FieldType<infer V>
    ? V
    : never;
};

/** The JS value type a codec encodes and decodes. */
export type CodecValue<C> = C extends Codec<infer T> ? T : never;

/** backendCount → backend_count, addr6 → addr6, uplinkIfindex → uplink_ifindex */
export function toSnakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** backend_count → backendCount */
export function toCamelCase(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

function renderValue(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`;
  if (Buffer.isBuffer(v)) return `0x${v.toString('hex')}`;
  if (Array.isArray(v)) return `[${v.map(renderValue).join(',')}]`;
  return String(v);
}

/**
 * Declares a C struct. Field order is C order; property names are the
 * camelCase of the C member names.
 *
 *   const lb4Key = struct('lb4_key', { addr: ipv4, port: be16, proto: u8, scope: u8 });
 */
export function struct<S extends Shape>(name: string, shape: S): Codec<StructValue<S>> {
  type T = StructValue<S>;
  const layout: { name: string; offset: number; type: FieldType<unknown> }[] = [];
  const fields: FieldLayout[] = [];
  let offset = 0;
  let align = 1;
  for (const [field, type] of Object.entries(shape)) {
    offset = alignUp(offset, type.align);
    align = Math.max(align, type.align);
    layout.push({ name: field, offset, type });
    fields.push({
      name: field,
      cName: toSnakeCase(field),
      offset,
      size: type.size,
      kind: type.kind,
      ...(type.count !== undefined && type.kind !== 'pad' && type.kind !== 'bytes' && type.kind !== 'cstring'
        ? { count: type.count }
        : {}),
    });
    offset += type.size;
  }
  const size = alignUp(offset, align);
  const values = layout.filter((f) => f.type.kind !== 'pad');
  // bytes no value field writes: pads, implicit padding, the tail
  const covered = new Uint8Array(size);
  for (const f of values) covered.fill(1, f.offset, f.offset + f.type.size);
  const gaps: number[] = [];
  covered.forEach((c, i) => {
    if (c === 0) gaps.push(i);
  });

  const encodeInto = (value: T, buf: Buffer, off = 0): void => {
    if (buf.length < off + size) {
      throw new RangeError(`${name}: need ${size} bytes at ${off}, have ${buf.length - off}`);
    }
    // hash keys compare bytes: every gap is written as zero
    for (let i = 0; i < gaps.length; i++) buf[off + (gaps[i] as number)] = 0;
    const v = value as Record<string, unknown>;
    for (const f of values) {
      const fv = v[f.name];
      if (fv === undefined) throw new CodecError(name, f.name, 'missing');
      try {
        f.type.write(buf, off + f.offset, fv);
      } catch (e: unknown) {
        throw new CodecError(name, f.name, e instanceof Error ? e.message : String(e));
      }
    }
  };

  return {
    name,
    size,
    align,
    fields,
    encodeInto,
    encode(value: T): Buffer {
      const buf = Buffer.allocUnsafe(size);
      encodeInto(value, buf, 0);
      return buf;
    },
    decode(buf: Buffer, off = 0): T {
      if (buf.length < off + size) {
        throw new RangeError(`${name}: need ${size} bytes at ${off}, have ${buf.length - off}`);
      }
      const out: Record<string, unknown> = {};
      for (const f of values) out[f.name] = f.type.read(buf, off + f.offset);
      return out as T;
    },
    create(init?: Partial<T>): T {
      const out: Record<string, unknown> = {};
      for (const f of values) out[f.name] = f.type.zero();
      return { ...(out as T), ...init };
    },
    format(value: T): string {
      const v = value as Record<string, unknown>;
      return `{${values.map((f) => `${f.name}: ${renderValue(v[f.name])}`).join(', ')}}`;
    },
  };
}

/** A codec for a bare scalar (integer map keys such as a backend id). */
export function scalar<T>(name: string, type: FieldType<T>): Codec<T> {
  const encodeInto = (value: T, buf: Buffer, off = 0): void => {
    try {
      type.write(buf, off, value);
    } catch (e: unknown) {
      throw new CodecError(name, 'value', e instanceof Error ? e.message : String(e));
    }
  };
  return {
    name,
    size: type.size,
    align: type.align,
    fields: [{ name: 'value', cName: 'value', offset: 0, size: type.size, kind: type.kind }],
    encodeInto,
    encode(value: T): Buffer {
      const buf = Buffer.alloc(type.size);
      encodeInto(value, buf, 0);
      return buf;
    },
    decode(buf: Buffer, off = 0): T {
      return type.read(buf, off);
    },
    create(init?: Partial<T>): T {
      return (init as T | undefined) ?? type.zero();
    },
    format(value: T): string {
      return renderValue(value);
    },
  };
}
