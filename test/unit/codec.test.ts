// Codecs: layout, byte order, zeroed padding, address text forms.
// Address plan: 198.18.0.0/15 and 2001:2::/48 (benchmarking ranges), plus
// edge values (all-zero, all-ones, IPv4-mapped) that only exist as bytes here.
import { SocketAddress, isIPv4 } from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  abiStructs,
  ct4Key,
  ctEntry,
  lb4Backend,
  lb4Key,
  lb6Key,
  lbService,
  lbSettings,
  metricReasonName,
  metricReasonNames,
  metricsIndex,
  nodeConfig,
  snat6Entry,
  u32Codec,
  DEFAULT_LB_SETTINGS,
  IPPROTO_TCP,
  IPPROTO_UDP,
  LB_SCOPE_INTERNAL,
  METRIC_DIR_EGRESS,
} from '../../src/bpf/abi.js';
import {
  array,
  be16,
  be32,
  bytes,
  ipv4,
  ipv6,
  pad,
  readIPv6,
  struct,
  toCamelCase,
  toSnakeCase,
  u16,
  u32,
  u64,
  u8,
  writeIPv4,
  writeIPv6,
  CodecError,
} from '../../src/bpf/codec.js';

describe('struct layout follows C rules', () => {
  it.each([
    {
      what: 'u8 then u32 aligns to 4',
      codec: struct('a', { x: u8, y: u32 }),
      offsets: [0, 4],
      size: 8,
    },
    {
      what: 'u32 then u64 aligns to 8, tail padded to 8',
      codec: struct('b', { x: u32, y: u64, z: u8 }),
      offsets: [0, 8, 16],
      size: 24,
    },
    {
      what: 'byte arrays are byte aligned',
      codec: struct('c', { a: u8, b: ipv6, c: u16 }),
      offsets: [0, 1, 18],
      size: 20,
    },
    {
      what: 'ipv4 is a __be32 (4-aligned)',
      codec: struct('d', { a: u8, b: ipv4 }),
      offsets: [0, 4],
      size: 8,
    },
    {
      what: 'arrays align as their element',
      codec: struct('e', { a: u16, b: array(u32, 3) }),
      offsets: [0, 4],
      size: 16,
    },
    {
      what: 'explicit pad keeps offsets',
      codec: struct('f', { a: be16, p: pad(2), b: be32 }),
      offsets: [0, 2, 4],
      size: 8,
    },
  ])('$what', ({ codec, offsets, size }) => {
    expect(codec.fields.map((f) => f.offset)).toEqual(offsets);
    expect(codec.size).toBe(size);
  });

  it.each(Object.entries(abiStructs))('%s has the size abi.h asserts', (name, codec) => {
    const sizes: Record<string, number> = {
      lb4_key: 8, lb6_key: 20, lb_service: 20, lb_slot_key: 8, lb_slot: 4, lb4_backend: 16,
      lb6_backend: 40, lb4_revnat: 8, lb6_revnat: 20,
      sock4_revnat_key: 16, sock4_revnat_entry: 16, sock6_revnat_key: 32, sock6_revnat_entry: 28, ct4_key: 16, ct6_key: 40, ct_entry: 24,
      frag4_key: 12, frag4_entry: 8, frag6_key: 40, frag6_entry: 20, service_name: 128, snat4_key: 16, snat4_entry: 16, snat6_key: 40,
      snat6_entry: 32, affinity4_key: 16, affinity6_key: 32, affinity_entry: 16,
      srange4_key: 12, srange6_key: 24, srange_entry: 4, node_config: 48, metrics_value: 16,
      lb_settings: 64, icmp_bucket: 16, xdp_nh_key: 24, xdp_nexthop: 48, xdp_flow: 88,
      flow_epoch: 8, flow_cache_entry: 88, xdp_flow_slot: 128,
    };
    expect(codec.name).toBe(name);
    expect(codec.size).toBe(sizes[name]);
  });
});

describe('byte order', () => {
  it('lb4_key: address and port in network order, proto/scope bytes', () => {
    const b = lb4Key.encode({ addr: '198.18.0.10', port: 8080, proto: IPPROTO_TCP, scope: LB_SCOPE_INTERNAL });
    expect(b.toString('hex')).toBe('c612000a' + '1f90' + '06' + '01');
  });

  it('lb_service: host-order integers (little endian here)', () => {
    const b = lbService.encode({
      serviceId: 0x01020304, backendCount: 3, revNatId: 7, affinityTimeout: 10800,
      flags: 0x41, kind: 1, algorithm: 0,
    });
    expect(b.subarray(0, 4).toString('hex')).toBe('04030201');
    expect(b.readUInt32LE(12)).toBe(10800);
    expect(b.readUInt16LE(16)).toBe(0x41);
    expect(b[18]).toBe(1);
  });

  it('u64 is bigint, accepts safe integers, rejects negatives', () => {
    const c = struct('t', { v: u64 });
    expect(c.decode(c.encode({ v: 2n ** 63n + 5n })).v).toBe(2n ** 63n + 5n);
    expect(c.decode(c.encode({ v: 42 as unknown as bigint })).v).toBe(42n);
    expect(() => c.encode({ v: -1n })).toThrow(CodecError);
  });

  it('be16 holds ports in host order in JS', () => {
    const c = struct('p', { port: be16 });
    expect(c.encode({ port: 443 }).toString('hex')).toBe('01bb');
    expect(c.decode(Buffer.from('01bb', 'hex')).port).toBe(443);
  });
});

describe('padding', () => {
  it('explicit and implicit padding are zero even over dirty buffers', () => {
    const dirty = Buffer.alloc(64, 0xff);
    ct4Key.encodeInto(
      { saddr: '198.18.0.1', daddr: '198.19.0.1', sport: 1000, dport: 80, proto: IPPROTO_UDP, dir: 1 },
      dirty,
      8,
    );
    expect(dirty.subarray(8 + 14, 8 + 16).toString('hex')).toBe('0000');
    const implicit = struct('i', { a: u8, b: u32 });
    const buf = Buffer.alloc(8, 0xee);
    implicit.encodeInto({ a: 1, b: 2 }, buf);
    expect(buf.subarray(1, 4).toString('hex')).toBe('000000');
  });

  it('pads are not part of the JS object', () => {
    const v = lb4Backend.decode(Buffer.alloc(16));
    expect(Object.keys(v)).toEqual(['addr', 'nodeAddr', 'port', 'proto', 'state', 'flags', 'zone']);
    expect(Object.keys(snat6Entry.create())).toEqual(['addr', 'port', 'expires']);
  });
});

describe('round trips', () => {
  it.each([
    ['lb6_key', lb6Key, { addr: '2001:2::a', port: 53, proto: IPPROTO_UDP, scope: 0 }],
    ['ct_entry', ctEntry, { expires: 123456789012345n, backendId: 9, revNatId: 4, flags: 3, tcpFlags: 0x12, created: 77 }],
    ['node_config', nodeConfig, {
      addr4: '198.18.1.1', addr6: '2001:2:0:1::1', uplinkIfindex: [2, 3, 0, 0], modes: 5,
      nodeportMin: 30000, nodeportMax: 32767, snatPortMin: 40000, snatPortMax: 49999,
    }],
    ['lb_settings', lbSettings, { ...DEFAULT_LB_SETTINGS, hashSeed: 0xdeadbeef }],
    ['u32', u32Codec, 4294967295],
  ] as const)('%s', (_name, codec, value) => {
    const c = codec as unknown as { encode(v: unknown): Buffer; decode(b: Buffer): unknown; size: number };
    const b = c.encode(value);
    expect(b.length).toBe(c.size);
    expect(c.decode(b)).toEqual(value);
  });

  it('decode at an offset', () => {
    const buf = Buffer.concat([Buffer.alloc(3), lb4Key.encode({ addr: '198.19.255.254', port: 1, proto: 6, scope: 0 })]);
    expect(lb4Key.decode(buf, 3)).toEqual({ addr: '198.19.255.254', port: 1, proto: 6, scope: 0 });
  });

  it('bytes(n) copies', () => {
    const c = struct('b', { raw: bytes(3) });
    const src = Buffer.from([1, 2, 3]);
    const back = c.decode(c.encode({ raw: src }));
    expect(back.raw).toEqual(src);
  });

  it('create() fills zeros and overrides', () => {
    expect(lb4Key.create({ port: 80 })).toEqual({ addr: '0.0.0.0', port: 80, proto: 0, scope: 0 });
  });
});

describe('validation names the field', () => {
  it.each([
    ['u8 overflow', () => lb4Key.encode({ addr: '198.18.0.1', port: 80, proto: 256, scope: 0 }), /lb4_key\.proto/],
    ['port overflow', () => lb4Key.encode({ addr: '198.18.0.1', port: 65536, proto: 6, scope: 0 }), /lb4_key\.port/],
    ['bad ipv4', () => lb4Key.encode({ addr: '198.18.0', port: 80, proto: 6, scope: 0 }), /lb4_key\.addr/],
    ['ipv6 in ipv4', () => lb4Key.encode({ addr: '2001:2::1', port: 80, proto: 6, scope: 0 }), /lb4_key\.addr/],
    ['missing field', () => lb4Key.encode({ addr: '198.18.0.1', port: 80, proto: 6 } as never), /lb4_key\.scope: missing/],
    ['array length', () => nodeConfig.encode({ ...nodeConfig.create(), uplinkIfindex: [1] }), /node_config\.uplinkIfindex/],
  ])('%s', (_what, fn, msg) => {
    expect(fn).toThrow(msg);
  });
});

describe('ipv4', () => {
  it.each([
    ['198.18.0.1', 'c6120001'],
    ['198.19.255.255', 'c613ffff'],
    ['0.0.0.0', '00000000'],
    ['255.255.255.255', 'ffffffff'],
  ])('%s <-> %s', (text, hex) => {
    const c = struct('a', { a: ipv4 });
    expect(c.encode({ a: text }).toString('hex')).toBe(hex);
    expect(c.decode(Buffer.from(hex, 'hex')).a).toBe(text);
  });
});

describe('ipv4 rejects what node:net rejects', () => {
  it.each(['1.2.3.4.5', '01.2.3.4', '1.2.3.04', '256.1.1.1', '1.2.3.256', '1..2.3', '1.2.3.', '.1.2.3',
    ' 1.2.3.4', '1.2.3.4 ', '1.2.3', '', '1.2.3.1234', 'a.b.c.d', '::1', '1.2.3.-4'])('%j', (text) => {
    expect(isIPv4(text)).toBe(false);
    expect(() => writeIPv4(Buffer.alloc(4), 0, text)).toThrow(TypeError);
  });
});

describe('ipv6', () => {
  const canonical = (a: string): string => new SocketAddress({ address: a, family: 'ipv6' }).address;
  const hexOf = (a: string): string => {
    const b = Buffer.alloc(16);
    writeIPv6(b, 0, a);
    return b.toString('hex');
  };

  it.each([
    ['2001:2::1', '20010002000000000000000000000001'],
    ['2001:0002:0000:0000:0000:0000:0000:0001', '20010002000000000000000000000001'],
    ['::', '00000000000000000000000000000000'],
    ['::1', '00000000000000000000000000000001'],
    ['2001:2::', '20010002000000000000000000000000'],
    ['::ffff:198.18.0.1', '00000000000000000000ffffc6120001'],
    ['2001:2:0:1:2:3:198.18.0.1', '200100020000000100020003c6120001'],
    ['2001:2::ffff:ffff', '200100020000000000000000ffffffff'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffffffffffffffffffffffffffffffff'],
  ])('parses %s', (text, hex) => {
    expect(hexOf(text)).toBe(hex);
  });

  it.each([
    '2001:2::1',
    '2001:2:0:0:1:0:0:1',
    '1:0:0:1:0:0:0:1',
    '2001:2:0:1::',
    '::',
    '::1',
    '::2',
    '::ffff',
    '::ffff:198.18.0.1',
    '::198.18.0.1',
    '::ffff:0:198.18.0.1',
    '64:ff9b::198.18.0.1',
    '2001:2:3:4:5:6:7:0',
    '2001:2:3:0:5:6:7:8',
    '0:0:0:0:0:1:0:0',
    '2001:2:0:0:a:0:0:0',
    'FFFF:2001:2::ABCD',
  ])('formats %s as node:net does', (text) => {
    const b = Buffer.alloc(16);
    writeIPv6(b, 0, text);
    expect(readIPv6(b, 0)).toBe(canonical(text));
  });

  it('formats random addresses as node:net does', () => {
    let seed = 12345;
    const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
    for (let i = 0; i < 1000; i++) {
      const b = Buffer.alloc(16);
      // sparse words so zero runs of every length occur
      for (let w = 0; w < 8; w++) if (rnd() % 3 === 0) b.writeUInt16BE(rnd() & 0xffff, 2 * w);
      const text = readIPv6(b, 0);
      expect(text).toBe(canonical(text));
      const back = Buffer.alloc(16);
      writeIPv6(back, 0, text);
      expect(back).toEqual(b);
    }
  });

  it.each(['2001:2::1::2', '2001:2::g', 'fe80::1%eth0', '198.18.0.1', ''])('rejects %j', (text) => {
    expect(() => writeIPv6(Buffer.alloc(16), 0, text)).toThrow(TypeError);
  });
});

describe('names', () => {
  it.each([
    ['backend_count', 'backendCount'],
    ['uplink_ifindex', 'uplinkIfindex'],
    ['addr6', 'addr6'],
    ['ct_tcp_syn_ns', 'ctTcpSynNs'],
  ])('%s <-> %s', (snake, camel) => {
    expect(toCamelCase(snake)).toBe(camel);
    expect(toSnakeCase(camel)).toBe(snake);
  });

  it('metric reasons: REASON_X → x, DROP_X → drop_x', () => {
    expect(metricReasonNames.get(2)).toBe('service_dnat');
    expect(metricReasonNames.get(38)).toBe('drop_ct_full');
    expect(metricReasonName(63)).toBe('drop_63');
    expect(metricsIndex(38, METRIC_DIR_EGRESS)).toBe(102);
  });
});
