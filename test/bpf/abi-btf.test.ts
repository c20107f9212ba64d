// abi.ts against the BTF of the compiled datapath: every codec's size and
// every member's offset, size and byte order; the metric reason table; the
// set of maps. Reads build/bpf/strait_tc.o (`make bpf`), builds nothing.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { MetricReason, abiStructs } from '../../src/bpf/abi.js';
import { toCamelCase, type FieldKind } from '../../src/bpf/codec.js';
import { DATAPLANE_MAP_NAMES } from '../../src/bpf/dataplane.js';
import { packageRoot } from '../../src/bpf/native.js';

const OBJECT = join(packageRoot(), 'build', 'bpf', 'strait_tc.o');

interface BtfMember {
  name: string;
  type_id: number;
  bits_offset: number;
}
interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: BtfMember[];
  values?: { name: string; val: number }[];
  vars?: { type_id: number; offset: number; size: number }[];
}

let types = new Map<number, BtfType>();

function byName(kind: string, name: string): BtfType | undefined {
  for (const t of types.values()) if (t.kind === kind && t.name === name) return t;
  return undefined;
}

function typeOf(id: number): BtfType {
  const t = types.get(id);
  if (!t) throw new Error(`no BTF type ${id}`);
  return t;
}

/** Size in bytes of a BTF type, through typedefs and qualifiers. */
function sizeOf(id: number): number {
  const t = typeOf(id);
  switch (t.kind) {
    case 'TYPEDEF':
    case 'CONST':
    case 'VOLATILE':
    case 'RESTRICT':
    case 'TYPE_TAG':
      return sizeOf(t.type_id ?? 0);
    case 'ARRAY':
      return (t.nr_elems ?? 0) * sizeOf(t.type_id ?? 0);
    case 'PTR':
      return 8;
    default:
      return t.size ?? 0;
  }
}

/** The C spelling of a member's type: '__be16', '__u8[16]', … */
function cType(id: number): string {
  const t = typeOf(id);
  if (t.kind === 'ARRAY') return `${cType(t.type_id ?? 0)}[${t.nr_elems}]`;
  if (t.kind === 'CONST' || t.kind === 'VOLATILE') return cType(t.type_id ?? 0);
  return t.name;
}

/** Which C types each codec kind may mirror (byte order included). */
function acceptedCTypes(kind: FieldKind, size: number, count?: number): string[] {
  switch (kind) {
    case 'u8':
      return count ? [`__u8[${count}]`] : ['__u8'];
    case 'u16':
      return count ? [`__u16[${count}]`] : ['__u16'];
    case 'u32':
      return count ? [`__u32[${count}]`] : ['__u32'];
    case 'u64':
      return count ? [`__u64[${count}]`] : ['__u64'];
    case 'be16':
      return ['__be16'];
    case 'be32':
    case 'ipv4':
      return ['__be32'];
    case 'ipv6':
      return ['__u8[16]'];
    case 'cstring':
      return [`char[${size}]`];
    case 'bytes':
    case 'pad':
      return [`__u8[${size}]`, ...(size === 1 ? ['__u8'] : []), ...(size === 4 ? ['__u32'] : [])];
  }
}

beforeAll(() => {
  if (!existsSync(OBJECT)) {
    throw new Error(`${OBJECT} is missing: run \`make bpf\` first`);
  }
  const json = execFileSync('bpftool', ['btf', 'dump', 'file', OBJECT, '-j'], {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  const parsed = JSON.parse(json) as { types: BtfType[] };
  types = new Map(parsed.types.map((t) => [t.id, t]));
});

describe(`abi.ts matches the BTF of build/bpf/strait_tc.o`, () => {
  it.each(Object.entries(abiStructs))('struct %s: size, members, offsets, sizes, C types', (name, codec) => {
    const st = byName('STRUCT', name);
    expect(st, `struct ${name} not in BTF`).toBeDefined();
    if (!st) return;
    expect(codec.size, `sizeof(struct ${name})`).toBe(st.size);
    const members = (st.members ?? []).map((m) => ({
      name: toCamelCase(m.name),
      offset: m.bits_offset / 8,
      size: sizeOf(m.type_id),
      cType: cType(m.type_id),
    }));
    expect(codec.fields.map((f) => f.name), `members of ${name}`).toEqual(members.map((m) => m.name));
    for (const [i, f] of codec.fields.entries()) {
      const m = members[i];
      if (!m) continue;
      expect({ field: f.name, offset: f.offset, size: f.size }).toEqual({
        field: m.name,
        offset: m.offset,
        size: m.size,
      });
      expect(acceptedCTypes(f.kind, f.size, f.count), `${name}.${f.cName} is ${m.cType}`).toContain(
        m.cType,
      );
    }
  });

  it('enum metric_reason: the same enumerators and values as MetricReason', () => {
    const en = byName('ENUM', 'metric_reason');
    expect(en, 'enum metric_reason not in BTF (reference the type in the object)').toBeDefined();
    const fromBtf = Object.fromEntries((en?.values ?? []).map((v) => [v.name, v.val]));
    expect(fromBtf).toEqual({ ...MetricReason });
  });

  it('the object defines exactly the maps of maps.h', () => {
    const sec = byName('DATASEC', '.maps');
    expect(sec).toBeDefined();
    const names = (sec?.vars ?? []).map((v) => typeOf(v.type_id).name).sort();
    expect(names).toEqual([...DATAPLANE_MAP_NAMES].sort());
  });

  it('.rodata holds `settings` of type struct lb_settings', () => {
    const sec = byName('DATASEC', '.rodata');
    const vars = (sec?.vars ?? []).map((v) => typeOf(v.type_id));
    const settings = vars.find((v) => v.name === 'settings');
    expect(settings, 'no .rodata variable `settings`').toBeDefined();
    expect(cType(settings?.type_id ?? 0)).toBe('lb_settings');
  });
});
