/**
 * packet.ts — build and parse Ethernet frames for BPF_PROG_TEST_RUN tests.
 *
 * Builders return a fresh Buffer (Ethernet + IP + L4) with every checksum
 * correct unless an option says otherwise. The parser recomputes every
 * checksum from scratch (IPv4 header; TCP/UDP/ICMPv6 with their pseudo-header;
 * ICMPv4 without) and reports each as a value, so a test can assert that the
 * datapath's incremental checksum updates land on the right answer.
 *
 * Nothing here mutates its input: helpers that "change" a frame return a copy.
 * Offsets reported by the parser are absolute offsets into the parsed buffer,
 * so `corrupt(frame, parsed.l4.checksumOffset!)` hits the field it names.
 *
 * Address plan: tests use only the benchmarking ranges 198.18.0.0/15 and
 * 2001:2::/48 (RFC 2544, RFC 5180) — see PLAN4 / PLAN6.
 */
import { Buffer } from 'node:buffer';
import { isIPv4, isIPv6 } from 'node:net';

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;

/** IP protocol / IPv6 next-header numbers used by the tests. */
export const IPPROTO = {
  HOPOPTS: 0,
  ICMP: 1,
  TCP: 6,
  UDP: 17,
  ROUTING: 43,
  FRAGMENT: 44,
  ESP: 50,
  AH: 51,
  ICMPV6: 58,
  NONE: 59,
  DSTOPTS: 60,
  SCTP: 132,
} as const;

/** ICMPv4 types. */
export const ICMP4 = {
  ECHO_REPLY: 0,
  DEST_UNREACH: 3,
  ECHO_REQUEST: 8,
  TIME_EXCEEDED: 11,
  PARAM_PROBLEM: 12,
} as const;

/** ICMPv4 destination-unreachable codes. */
export const ICMP4_UNREACH = {
  NET: 0,
  HOST: 1,
  PROTO: 2,
  PORT: 3,
  FRAG_NEEDED: 4,
  ADMIN_PROHIBITED: 13,
} as const;

/** ICMPv6 types. */
export const ICMP6 = {
  DEST_UNREACH: 1,
  PACKET_TOO_BIG: 2,
  TIME_EXCEEDED: 3,
  PARAM_PROBLEM: 4,
  ECHO_REQUEST: 128,
  ECHO_REPLY: 129,
} as const;

/** ICMPv6 destination-unreachable codes. */
export const ICMP6_UNREACH = {
  NO_ROUTE: 0,
  ADMIN_PROHIBITED: 1,
  ADDR: 3,
  PORT: 4,
} as const;

// ---------------------------------------------------------------------------
// Address plan (lab ranges only)
// ---------------------------------------------------------------------------

export const LAB4_CIDR = '198.18.0.0/15';
export const LAB6_CIDR = '2001:2::/48';

function planIndex(n: number, max: number): number {
  if (!Number.isInteger(n) || n < 0 || n > max) {
    throw new RangeError(`address plan index ${n} outside 0..${max}`);
  }
  return n;
}

/**
 * IPv4 plan: clients 198.18.0.n, VIPs 198.19.0.n, backends 198.18.1.n,
 * nodes 198.18.2.n (n in 0..255).
 */
export const PLAN4 = {
  client: (n: number): string => `198.18.0.${planIndex(n, 255)}`,
  vip: (n: number): string => `198.19.0.${planIndex(n, 255)}`,
  backend: (n: number): string => `198.18.1.${planIndex(n, 255)}`,
  node: (n: number): string => `198.18.2.${planIndex(n, 255)}`,
} as const;

/**
 * IPv6 plan: clients 2001:2::1:n, VIPs 2001:2:0:ff::n, backends 2001:2::2:n,
 * nodes 2001:2::3:n. n's decimal digits are written as the last group
 * (n in 0..9999), so PLAN4.client(10) = 198.18.0.10 pairs with
 * PLAN6.client(10) = 2001:2::1:10. Results are canonical (RFC 5952), the form
 * parseFrame reports.
 */
export const PLAN6 = {
  client: (n: number): string => canonicalIp(`2001:2::1:${planIndex(n, 9999)}`),
  vip: (n: number): string => canonicalIp(`2001:2:0:ff::${planIndex(n, 9999)}`),
  backend: (n: number): string => canonicalIp(`2001:2::2:${planIndex(n, 9999)}`),
  node: (n: number): string => canonicalIp(`2001:2::3:${planIndex(n, 9999)}`),
} as const;

/** Whether an address lies in 198.18.0.0/15 or 2001:2::/48. */
export function inLabRange(addr: string): boolean {
  const b = ipBytes(addr);
  if (b.length === 4) return b.readUInt8(0) === 198 && (b.readUInt8(1) & 0xfe) === 18;
  return b.readUInt16BE(0) === 0x2001 && b.readUInt16BE(2) === 0x0002 && b.readUInt16BE(4) === 0;
}

/** Default MACs (locally administered). */
export const MAC = {
  src: '02:00:00:00:00:01',
  dst: '02:00:00:00:00:02',
} as const;

// ---------------------------------------------------------------------------
// Address codecs
// ---------------------------------------------------------------------------

/** Network-order bytes of an IPv4 (4 bytes) or IPv6 (16 bytes) address. */
export function ipBytes(addr: string): Buffer {
  if (isIPv4(addr)) return Buffer.from(addr.split('.').map(Number));
  if (isIPv6(addr) && !addr.includes('%')) return ipv6Bytes(addr);
  throw new TypeError(`not an IP address: ${addr}`);
}

function ipv6Bytes(addr: string): Buffer {
  let text = addr.toLowerCase();
  if (text.includes('.')) {
    // Embedded IPv4 tail (::ffff:198.18.0.1): rewrite it as two hex groups.
    const cut = text.lastIndexOf(':');
    const v4 = ipBytes(text.slice(cut + 1));
    text = `${text.slice(0, cut + 1)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const halves = text.split('::');
  const head = halves[0] ? halves[0].split(':') : [];
  let groups = head;
  if (halves.length === 2) {
    const tail = halves[1] ? halves[1].split(':') : [];
    groups = [...head, ...new Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
  }
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/** Text form of 4 or 16 address bytes; IPv6 in canonical RFC 5952 form. */
export function formatIp(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length === 4) return [0, 1, 2, 3].map((i) => b.readUInt8(i)).join('.');
  if (b.length !== 16) throw new TypeError(`address of ${b.length} bytes`);
  const groups = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2));
  // Longest run of two or more zero groups (the first one on a tie) becomes "::".
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** The canonical text of an address (IPv6 per RFC 5952). */
export function canonicalIp(addr: string): string {
  return formatIp(ipBytes(addr));
}

/** Bytes of a MAC address written as six colon-separated hex octets. */
export function macBytes(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{1,2}$/.test(p))) {
    throw new TypeError(`not a MAC address: ${mac}`);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function formatMac(bytes: Uint8Array): string {
  return Array.from(bytes, (x) => x.toString(16).padStart(2, '0')).join(':');
}

function addrOf(family: 4 | 6, addr: string): Buffer {
  const b = ipBytes(addr);
  if (b.length !== (family === 4 ? 4 : 16)) {
    throw new TypeError(`${addr} is not an IPv${family} address`);
  }
  return b;
}

// ---------------------------------------------------------------------------
// Checksums (RFC 1071)
// ---------------------------------------------------------------------------

/** Unfolded sum of big-endian 16-bit words of buf[start, end); an odd tail is padded with zero. */
function sum16(buf: Buffer, start = 0, end = buf.length): number {
  let s = 0;
  let i = start;
  for (; i + 1 < end; i += 2) s += buf.readUInt16BE(i);
  if (i < end) s += buf.readUInt8(i) << 8;
  return s;
}

/** Fold a sum into 16 bits with end-around carry; nonzero sums land in 1..0xffff. */
function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** The Internet checksum of the concatenation of `parts` (each part must have even length except the last). */
export function internetChecksum(...parts: Buffer[]): number {
  return ~fold(sum16(Buffer.concat(parts))) & 0xffff;
}

/** The TCP/UDP/ICMPv6 pseudo-header (12 bytes for IPv4, 40 for IPv6). */
export function pseudoHeader(src: Buffer, dst: Buffer, proto: number, length: number): Buffer {
  if (src.length === 4) {
    const ph = Buffer.alloc(12);
    src.copy(ph, 0);
    dst.copy(ph, 4);
    ph.writeUInt8(proto, 9);
    ph.writeUInt16BE(length, 10);
    return ph;
  }
  const ph = Buffer.alloc(40);
  src.copy(ph, 0);
  dst.copy(ph, 16);
  ph.writeUInt32BE(length, 32);
  ph.writeUInt8(proto, 39);
  return ph;
}

// ---------------------------------------------------------------------------
// Builder option types
// ---------------------------------------------------------------------------

export interface EthOptions {
  /** Default MAC.src. */
  srcMac?: string;
  /** Default MAC.dst. */
  dstMac?: string;
  /** Adds one 802.1Q tag with this VLAN id. */
  vlan?: number;
}

export interface Ipv4Options extends EthOptions {
  src: string;
  dst: string;
  /** Default 64. */
  ttl?: number;
  /** Identification; default 0. */
  id?: number;
  /** Default 0. */
  tos?: number;
  /** Don't Fragment; default false. */
  df?: boolean;
  /** Raw options, padded with zeros (EOL) to a multiple of 4; IHL follows. */
  ipOptions?: Buffer;
  /** Marks the packet a fragment. offset in bytes, a multiple of 8. */
  fragment?: { mf: boolean; offset: number };
}

/** An IPv6 extension header, in the order it appears in the chain. */
export type Ipv6ExtHeader =
  | { type: 'hop'; /** TLV options, padded with Pad1/PadN */ options?: Buffer }
  | { type: 'dst'; options?: Buffer }
  | {
      type: 'routing';
      /** Default 0. Type 4 (SRH) also gets Last Entry = addresses.length - 1. */
      routingType?: number;
      /** Default 0. With segmentsLeft > 0 the pseudo-header uses the final destination. */
      segmentsLeft?: number;
      /** Wire order. Final destination: the last one, or the first for type 4 (SRH). */
      addresses?: readonly string[];
    }
  | { type: 'frag'; /** bytes, multiple of 8 */ offset?: number; mf?: boolean; id?: number };

export interface Ipv6Options extends EthOptions {
  src: string;
  dst: string;
  /** Hop limit; default 64. */
  ttl?: number;
  trafficClass?: number;
  flowLabel?: number;
  extHeaders?: readonly Ipv6ExtHeader[];
}

/** 'compute' (default): correct; 'zero': field left 0; a number: written as is. */
export type ChecksumMode = 'compute' | 'zero' | number;

export interface TcpFlags {
  fin: boolean;
  syn: boolean;
  rst: boolean;
  psh: boolean;
  ack: boolean;
  urg: boolean;
  ece: boolean;
  cwr: boolean;
}

export interface TcpOptions {
  sport: number;
  dport: number;
  /** Flags not named are clear. */
  flags?: Partial<TcpFlags>;
  /** Default 0. */
  seq?: number;
  /** Acknowledgment number; default 0. */
  ack?: number;
  /** Default 65535. */
  window?: number;
  urgent?: number;
  /** Raw TCP options, padded with zeros to a multiple of 4. */
  tcpOptions?: Buffer;
  payload?: Uint8Array | string;
  checksum?: ChecksumMode;
}

export interface UdpOptions {
  sport: number;
  dport: number;
  payload?: Uint8Array | string;
  /** 'zero' = no checksum (valid over IPv4 only). A computed 0 is sent as 0xffff. */
  checksum?: ChecksumMode;
}

export interface IcmpOptions {
  /** Default echo request (ICMP4.ECHO_REQUEST / ICMP6.ECHO_REQUEST). */
  type?: number;
  code?: number;
  /** Echo identifier (bytes 4-5). */
  id?: number;
  /** Echo sequence number (bytes 6-7). */
  seq?: number;
  payload?: Uint8Array | string;
  checksum?: ChecksumMode;
}

export interface IcmpErrorOptions {
  type: number;
  code: number;
  /** ICMPv4 3/4: next-hop MTU (16 bits); ICMPv6 2: MTU (32 bits). */
  mtu?: number;
  /** ICMPv4 12 / ICMPv6 4: pointer. */
  pointer?: number;
  /** The offending IP packet, without Ethernet (see ipPacketOf); embedded as given. */
  original: Buffer;
  checksum?: ChecksumMode;
}

export interface RawOptions {
  proto: number;
  payload: Uint8Array | string;
}

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

/** An L4 segment waiting for its checksum, which depends on the IP layer. */
interface L4Segment {
  proto: number;
  body: Buffer;
  /** Offset of the checksum field in body, or null when the protocol has none. */
  checksumAt: number | null;
  /** Whether the checksum covers a pseudo-header. */
  pseudo: boolean;
  mode: ChecksumMode;
  /** UDP: a computed 0 is transmitted as 0xffff. */
  zeroAsOnes: boolean;
}

function bytesOf(payload: Uint8Array | string | undefined): Buffer {
  if (payload === undefined) return Buffer.alloc(0);
  if (typeof payload === 'string') return Buffer.from(payload, 'utf8');
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
}

function padTo(buf: Buffer, multiple: number): Buffer {
  const rem = buf.length % multiple;
  return rem === 0 ? buf : Buffer.concat([buf, Buffer.alloc(multiple - rem)]);
}

function tcpSegment(o: TcpOptions): L4Segment {
  const opts = padTo(o.tcpOptions ?? Buffer.alloc(0), 4);
  const hl = 20 + opts.length;
  if (hl > 60) throw new RangeError(`TCP header of ${hl} bytes`);
  const payload = bytesOf(o.payload);
  const f = o.flags ?? {};
  const flagBits =
    (f.fin ? 0x01 : 0) |
    (f.syn ? 0x02 : 0) |
    (f.rst ? 0x04 : 0) |
    (f.psh ? 0x08 : 0) |
    (f.ack ? 0x10 : 0) |
    (f.urg ? 0x20 : 0) |
    (f.ece ? 0x40 : 0) |
    (f.cwr ? 0x80 : 0);
  const h = Buffer.alloc(hl);
  h.writeUInt16BE(o.sport, 0);
  h.writeUInt16BE(o.dport, 2);
  h.writeUInt32BE((o.seq ?? 0) >>> 0, 4);
  h.writeUInt32BE((o.ack ?? 0) >>> 0, 8);
  h.writeUInt8((hl / 4) << 4, 12);
  h.writeUInt8(flagBits, 13);
  h.writeUInt16BE(o.window ?? 65535, 14);
  h.writeUInt16BE(o.urgent ?? 0, 18);
  opts.copy(h, 20);
  return {
    proto: IPPROTO.TCP,
    body: Buffer.concat([h, payload]),
    checksumAt: 16,
    pseudo: true,
    mode: o.checksum ?? 'compute',
    zeroAsOnes: false,
  };
}

function udpSegment(o: UdpOptions): L4Segment {
  const payload = bytesOf(o.payload);
  const h = Buffer.alloc(8);
  h.writeUInt16BE(o.sport, 0);
  h.writeUInt16BE(o.dport, 2);
  h.writeUInt16BE(8 + payload.length, 4);
  return {
    proto: IPPROTO.UDP,
    body: Buffer.concat([h, payload]),
    checksumAt: 6,
    pseudo: true,
    mode: o.checksum ?? 'compute',
    zeroAsOnes: true,
  };
}

function icmpSegment(
  proto: number,
  type: number,
  code: number,
  rest: Buffer,
  payload: Buffer,
  mode: ChecksumMode,
): L4Segment {
  const h = Buffer.alloc(8);
  h.writeUInt8(type, 0);
  h.writeUInt8(code, 1);
  rest.copy(h, 4);
  return {
    proto,
    body: Buffer.concat([h, payload]),
    checksumAt: 2,
    pseudo: proto === IPPROTO.ICMPV6,
    mode,
    zeroAsOnes: false,
  };
}

function echoRest(o: IcmpOptions): Buffer {
  const rest = Buffer.alloc(4);
  rest.writeUInt16BE(o.id ?? 0, 0);
  rest.writeUInt16BE(o.seq ?? 0, 2);
  return rest;
}

function rawSegment(o: RawOptions): L4Segment {
  const body = bytesOf(o.payload);
  return { proto: o.proto, body, checksumAt: null, pseudo: false, mode: 'compute', zeroAsOnes: false };
}

function finishChecksum(seg: L4Segment, pseudo: Buffer): void {
  if (seg.checksumAt === null) return;
  let value: number;
  if (seg.mode === 'zero') value = 0;
  else if (typeof seg.mode === 'number') value = seg.mode;
  else {
    value = seg.pseudo ? internetChecksum(pseudo, seg.body) : internetChecksum(seg.body);
    if (value === 0 && seg.zeroAsOnes) value = 0xffff;
  }
  seg.body.writeUInt16BE(value, seg.checksumAt);
}

function ethHeader(o: EthOptions, etherType: number): Buffer {
  const tagged = o.vlan !== undefined;
  const h = Buffer.alloc(tagged ? 18 : 14);
  macBytes(o.dstMac ?? MAC.dst).copy(h, 0);
  macBytes(o.srcMac ?? MAC.src).copy(h, 6);
  if (tagged) {
    h.writeUInt16BE(ETH_P_8021Q, 12);
    h.writeUInt16BE((o.vlan ?? 0) & 0x0fff, 14);
    h.writeUInt16BE(etherType, 16);
  } else {
    h.writeUInt16BE(etherType, 12);
  }
  return h;
}

function ipv4Frame(o: Ipv4Options, seg: L4Segment): Buffer {
  const src = addrOf(4, o.src);
  const dst = addrOf(4, o.dst);
  finishChecksum(seg, pseudoHeader(src, dst, seg.proto, seg.body.length));

  const opts = padTo(o.ipOptions ?? Buffer.alloc(0), 4);
  const hl = 20 + opts.length;
  if (hl > 60) throw new RangeError(`IPv4 header of ${hl} bytes`);
  const frag = o.fragment ?? { mf: false, offset: 0 };
  if (frag.offset % 8 !== 0 || frag.offset < 0 || frag.offset > 0x1fff * 8) {
    throw new RangeError(`fragment offset ${frag.offset} is not a multiple of 8 in range`);
  }
  const h = Buffer.alloc(hl);
  h.writeUInt8(0x40 | (hl / 4), 0);
  h.writeUInt8(o.tos ?? 0, 1);
  h.writeUInt16BE(hl + seg.body.length, 2);
  h.writeUInt16BE(o.id ?? 0, 4);
  h.writeUInt16BE((o.df ? 0x4000 : 0) | (frag.mf ? 0x2000 : 0) | (frag.offset / 8), 6);
  h.writeUInt8(o.ttl ?? 64, 8);
  h.writeUInt8(seg.proto, 9);
  src.copy(h, 12);
  dst.copy(h, 16);
  opts.copy(h, 20);
  h.writeUInt16BE(internetChecksum(h), 10);
  return Buffer.concat([ethHeader(o, ETH_P_IP), h, seg.body]);
}

const EXT_CODE: Record<Ipv6ExtHeader['type'], number> = {
  hop: IPPROTO.HOPOPTS,
  routing: IPPROTO.ROUTING,
  frag: IPPROTO.FRAGMENT,
  dst: IPPROTO.DSTOPTS,
};

/** Hop-by-hop / destination options body padded so the header is a multiple of 8. */
function tlvOptionsHeader(next: number, options: Buffer): Buffer {
  const need = (8 - ((options.length + 2) % 8)) % 8;
  let pad: Buffer;
  if (need === 0) pad = Buffer.alloc(0);
  else if (need === 1) pad = Buffer.from([0]); // Pad1
  else pad = Buffer.concat([Buffer.from([1, need - 2]), Buffer.alloc(need - 2)]); // PadN
  const len = options.length + 2 + pad.length;
  return Buffer.concat([Buffer.from([next, len / 8 - 1]), options, pad]);
}

function encodeExtHeader(e: Ipv6ExtHeader, next: number): Buffer {
  switch (e.type) {
    case 'hop':
    case 'dst':
      return tlvOptionsHeader(next, e.options ?? Buffer.alloc(0));
    case 'routing': {
      const addrs = (e.addresses ?? []).map((a) => addrOf(6, a));
      const routingType = e.routingType ?? 0;
      const h = Buffer.alloc(8);
      h.writeUInt8(next, 0);
      h.writeUInt8(addrs.length * 2, 1);
      h.writeUInt8(routingType, 2);
      h.writeUInt8(e.segmentsLeft ?? 0, 3);
      if (routingType === 4 && addrs.length > 0) h.writeUInt8(addrs.length - 1, 4);
      return Buffer.concat([h, ...addrs]);
    }
    case 'frag': {
      const offset = e.offset ?? 0;
      if (offset % 8 !== 0 || offset < 0 || offset > 0x1fff * 8) {
        throw new RangeError(`fragment offset ${offset} is not a multiple of 8 in range`);
      }
      const h = Buffer.alloc(8);
      h.writeUInt8(next, 0);
      h.writeUInt16BE(offset | (e.mf ? 1 : 0), 2);
      h.writeUInt32BE((e.id ?? 0) >>> 0, 4);
      return h;
    }
  }
}

/** The destination the pseudo-header uses: the final one when a routing header still has segments left. */
function finalDestination(exts: readonly Ipv6ExtHeader[], dst: Buffer): Buffer {
  for (const e of exts) {
    if (e.type !== 'routing' || (e.segmentsLeft ?? 0) === 0) continue;
    const addrs = e.addresses ?? [];
    const last = (e.routingType ?? 0) === 4 ? addrs[0] : addrs[addrs.length - 1];
    if (last !== undefined) return addrOf(6, last);
  }
  return dst;
}

function ipv6Frame(o: Ipv6Options, seg: L4Segment): Buffer {
  const src = addrOf(6, o.src);
  const dst = addrOf(6, o.dst);
  const exts = o.extHeaders ?? [];
  finishChecksum(seg, pseudoHeader(src, finalDestination(exts, dst), seg.proto, seg.body.length));

  const encoded: Buffer[] = [];
  exts.forEach((e, i) => {
    const nextExt = exts[i + 1];
    encoded.push(encodeExtHeader(e, nextExt ? EXT_CODE[nextExt.type] : seg.proto));
  });
  const extBytes = Buffer.concat(encoded);
  const first = exts[0];
  const h = Buffer.alloc(40);
  h.writeUInt32BE(((6 << 28) | ((o.trafficClass ?? 0) << 20) | ((o.flowLabel ?? 0) & 0xfffff)) >>> 0, 0);
  h.writeUInt16BE(extBytes.length + seg.body.length, 4);
  h.writeUInt8(first ? EXT_CODE[first.type] : seg.proto, 6);
  h.writeUInt8(o.ttl ?? 64, 7);
  src.copy(h, 8);
  dst.copy(h, 24);
  return Buffer.concat([ethHeader(o, ETH_P_IPV6), h, extBytes, seg.body]);
}

export function ipv4Tcp(o: Ipv4Options & TcpOptions): Buffer {
  return ipv4Frame(o, tcpSegment(o));
}

export function ipv4Udp(o: Ipv4Options & UdpOptions): Buffer {
  return ipv4Frame(o, udpSegment(o));
}

export function ipv6Tcp(o: Ipv6Options & TcpOptions): Buffer {
  return ipv6Frame(o, tcpSegment(o));
}

export function ipv6Udp(o: Ipv6Options & UdpOptions): Buffer {
  return ipv6Frame(o, udpSegment(o));
}

/** ICMPv4; defaults to an echo request. */
export function ipv4Icmp(o: Ipv4Options & IcmpOptions): Buffer {
  const type = o.type ?? ICMP4.ECHO_REQUEST;
  const seg = icmpSegment(IPPROTO.ICMP, type, o.code ?? 0, echoRest(o), bytesOf(o.payload), o.checksum ?? 'compute');
  return ipv4Frame(o, seg);
}

/** ICMPv6; defaults to an echo request. */
export function ipv6Icmp(o: Ipv6Options & IcmpOptions): Buffer {
  const type = o.type ?? ICMP6.ECHO_REQUEST;
  const seg = icmpSegment(IPPROTO.ICMPV6, type, o.code ?? 0, echoRest(o), bytesOf(o.payload), o.checksum ?? 'compute');
  return ipv6Frame(o, seg);
}

/** An ICMPv4 error (destination unreachable, time exceeded, ...) quoting `original`. */
export function icmp4Error(o: Ipv4Options & IcmpErrorOptions): Buffer {
  const rest = Buffer.alloc(4);
  if (o.mtu !== undefined) rest.writeUInt16BE(o.mtu, 2);
  if (o.pointer !== undefined) rest.writeUInt8(o.pointer, 0);
  const seg = icmpSegment(IPPROTO.ICMP, o.type, o.code, rest, o.original, o.checksum ?? 'compute');
  return ipv4Frame(o, seg);
}

/** An ICMPv6 error (destination unreachable, packet too big, ...) quoting `original`. */
export function icmp6Error(o: Ipv6Options & IcmpErrorOptions): Buffer {
  const rest = Buffer.alloc(4);
  if (o.mtu !== undefined) rest.writeUInt32BE(o.mtu >>> 0, 0);
  if (o.pointer !== undefined) rest.writeUInt32BE(o.pointer >>> 0, 0);
  const seg = icmpSegment(IPPROTO.ICMPV6, o.type, o.code, rest, o.original, o.checksum ?? 'compute');
  return ipv6Frame(o, seg);
}

/** IPv4 carrying an arbitrary protocol; the payload is taken as is. */
export function ipv4Raw(o: Ipv4Options & RawOptions): Buffer {
  return ipv4Frame(o, rawSegment(o));
}

/** IPv6 carrying an arbitrary upper-layer protocol; the payload is taken as is. */
export function ipv6Raw(o: Ipv6Options & RawOptions): Buffer {
  return ipv6Frame(o, rawSegment(o));
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

export class PacketParseError extends Error {
  override readonly name = 'PacketParseError';
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} (at byte ${offset})`);
  }
}

export type L4Kind = 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'other' | 'fragment';

/**
 * ok: present and right. bad: present and wrong (or 0 on UDP over IPv6).
 * absent: UDP over IPv4 with checksum 0 ("no checksum").
 * unverifiable: the bytes it covers are not all here (fragment, truncation),
 * or the protocol has no checksum we know.
 */
export type ChecksumStatus = 'ok' | 'bad' | 'absent' | 'unverifiable';

export interface ParsedExtHeader {
  type: 'hop' | 'dst' | 'routing' | 'frag' | 'ah' | 'other';
  /** Its own protocol number (0, 43, 44, 60, 51, ...). */
  code: number;
  /** The Next Header field it carries. */
  nextHeader: number;
  /** Absolute offset in the buffer. */
  offset: number;
  /** Bytes, including its first two. */
  length: number;
  routingType?: number;
  segmentsLeft?: number;
  addresses?: string[];
  /** frag: offset in bytes, M flag, identification. */
  fragOffset?: number;
  mf?: boolean;
  id?: number;
}

export interface ParsedIp {
  version: 4 | 6;
  src: string;
  dst: string;
  /** Upper-layer protocol: IPv4 protocol field; IPv6 the end of the extension chain. */
  proto: number;
  /** TTL / hop limit. */
  ttl: number;
  /** IPv4 IHL in 32-bit words; 0 for IPv6. */
  ihl: number;
  /** Bytes from the IP header to L4: IPv4 IHL*4, IPv6 40 + extension headers. */
  headerLength: number;
  /** TOS / traffic class. */
  tos: number;
  flowLabel: number;
  /** IPv4 identification; IPv6 the fragment header's (0 without one). */
  id: number;
  /** IPv6: mf from the fragment header, df/reserved false. */
  flags: { reserved: boolean; df: boolean; mf: boolean };
  /** Bytes. */
  fragOffset: number;
  /** mf set or fragOffset > 0. */
  isFragment: boolean;
  /** IPv4 total length; IPv6 40 + payload length. */
  totalLength: number;
  /** IPv6 payload length; IPv4 totalLength - headerLength. */
  payloadLength: number;
  /** IPv6 first Next Header; IPv4 = proto. */
  nextHeader: number;
  extHeaders: ParsedExtHeader[];
  /** IPv4 options bytes. */
  options: Buffer;
  headerChecksum: number;
  /** Recomputed; always true for IPv6, which has none. */
  headerChecksumOk: boolean;
  headerChecksumExpected: number;
  /** The buffer ends before totalLength. */
  truncated: boolean;
  /** The destination the pseudo-header uses (IPv6 routing header with segments left). */
  pseudoDst: string;
}

export interface ParsedIcmp {
  type: number;
  code: number;
  /** Echo request/reply. */
  id?: number;
  seq?: number;
  /** ICMPv4 3/4 next-hop MTU; ICMPv6 2 MTU. */
  mtu?: number;
  /** ICMPv4 12 / ICMPv6 4. */
  pointer?: number;
  /** Errors: the quoted packet, parsed (no nested errors). */
  embedded?: ParsedPacket;
  /** Errors: why the quoted packet did not parse. */
  embeddedError?: string;
}

export interface ParsedL4 {
  kind: L4Kind;
  proto: number;
  /** TCP/UDP ports. ICMP echo: sport = identifier, dport = 0 (as conntrack keys it). Else 0. */
  sport: number;
  dport: number;
  /** TCP; all false otherwise. */
  flags: TcpFlags;
  seq: number;
  ack: number;
  window: number;
  urgent: number;
  /** TCP data offset in 32-bit words. */
  dataOffset: number;
  /** UDP length field. */
  udpLength: number;
  /** The checksum field as found (0 if not present). */
  checksum: number;
  /** Absolute offset of the checksum field, when the protocol has one and it is here. */
  checksumOffset?: number;
  /** checksumStatus === 'ok'. */
  checksumOk: boolean;
  checksumStatus: ChecksumStatus;
  /** The right value for the field, when it could be computed. */
  checksumExpected?: number;
  /** The L4 header is cut short (usual inside ICMP errors). */
  truncated: boolean;
  icmp?: ParsedIcmp;
}

export interface ParsedPacket {
  ip: ParsedIp;
  l4: ParsedL4;
  /**
   * L4 payload: after the TCP/UDP header or the 8-byte ICMP header; the whole
   * IP payload for 'other' and 'fragment'.
   */
  payload: Buffer;
  /** Absolute offsets: IP header, L4 header, payload, end of the IP packet's bytes present. */
  offsets: { l3: number; l4: number; payload: number; end: number };
}

export interface ParsedFrame extends ParsedPacket {
  eth: { src: string; dst: string; type: number; vlan?: number };
}

const NO_FLAGS: TcpFlags = {
  fin: false,
  syn: false,
  rst: false,
  psh: false,
  ack: false,
  urg: false,
  ece: false,
  cwr: false,
};

function need(buf: Buffer, at: number, len: number, end: number, what: string): void {
  if (at + len > Math.min(end, buf.length)) throw new PacketParseError(`${what}: need ${len} bytes`, at);
}

/** Parse an Ethernet frame (one optional 802.1Q tag) carrying IPv4 or IPv6. */
export function parseFrame(frame: Buffer): ParsedFrame {
  need(frame, 0, 14, frame.length, 'Ethernet header');
  let type = frame.readUInt16BE(12);
  let l3 = 14;
  let vlan: number | undefined;
  if (type === ETH_P_8021Q) {
    need(frame, 14, 4, frame.length, '802.1Q tag');
    vlan = frame.readUInt16BE(14) & 0x0fff;
    type = frame.readUInt16BE(16);
    l3 = 18;
  }
  const eth = {
    dst: formatMac(frame.subarray(0, 6)),
    src: formatMac(frame.subarray(6, 12)),
    type,
    ...(vlan !== undefined ? { vlan } : {}),
  };
  if (type !== ETH_P_IP && type !== ETH_P_IPV6) {
    throw new PacketParseError(`EtherType 0x${type.toString(16)} is not IP`, 12);
  }
  const packet = parseIpAt(frame, l3, frame.length, false);
  if (packet.ip.version !== (type === ETH_P_IP ? 4 : 6)) {
    throw new PacketParseError(`EtherType 0x${type.toString(16)} carries IPv${packet.ip.version}`, l3);
  }
  return { eth, ...packet };
}

/** Parse a bare IP packet (no Ethernet header), e.g. what an ICMP error quotes. */
export function parseIpPacket(packet: Buffer): ParsedPacket {
  return parseIpAt(packet, 0, packet.length, false);
}

function parseIpAt(buf: Buffer, off: number, end: number, nested: boolean): ParsedPacket {
  need(buf, off, 1, end, 'IP header');
  const version = buf.readUInt8(off) >> 4;
  if (version === 4) return parseIpv4(buf, off, end, nested);
  if (version === 6) return parseIpv6(buf, off, end, nested);
  throw new PacketParseError(`IP version ${version}`, off);
}

function parseIpv4(buf: Buffer, off: number, end: number, nested: boolean): ParsedPacket {
  need(buf, off, 20, end, 'IPv4 header');
  const ihl = buf.readUInt8(off) & 0x0f;
  if (ihl < 5) throw new PacketParseError(`IPv4 IHL ${ihl} < 5`, off);
  const hl = ihl * 4;
  need(buf, off, hl, end, 'IPv4 header with options');
  const totalLength = buf.readUInt16BE(off + 2);
  if (totalLength < hl) throw new PacketParseError(`IPv4 total length ${totalLength} < header ${hl}`, off + 2);
  const avail = Math.min(end, buf.length);
  const truncated = off + totalLength > avail;
  const ipEnd = Math.min(off + totalLength, avail);
  const fragField = buf.readUInt16BE(off + 6);
  const flags = {
    reserved: (fragField & 0x8000) !== 0,
    df: (fragField & 0x4000) !== 0,
    mf: (fragField & 0x2000) !== 0,
  };
  const fragOffset = (fragField & 0x1fff) * 8;
  const headerChecksum = buf.readUInt16BE(off + 10);
  const headerSum = sum16(buf, off, off + hl);
  const src = buf.subarray(off + 12, off + 16);
  const dst = buf.subarray(off + 16, off + 20);
  const proto = buf.readUInt8(off + 9);
  const isFragment = flags.mf || fragOffset > 0;
  const ip: ParsedIp = {
    version: 4,
    src: formatIp(src),
    dst: formatIp(dst),
    proto,
    ttl: buf.readUInt8(off + 8),
    ihl,
    headerLength: hl,
    tos: buf.readUInt8(off + 1),
    flowLabel: 0,
    id: buf.readUInt16BE(off + 4),
    flags,
    fragOffset,
    isFragment,
    totalLength,
    payloadLength: totalLength - hl,
    nextHeader: proto,
    extHeaders: [],
    options: Buffer.from(buf.subarray(off + 20, off + hl)),
    headerChecksum,
    headerChecksumOk: fold(headerSum) === 0xffff,
    headerChecksumExpected: ~fold(headerSum - headerChecksum) & 0xffff,
    truncated,
    pseudoDst: formatIp(dst),
  };
  const l4 = parseL4(buf, off + hl, ipEnd, {
    version: 4,
    proto,
    src,
    dst,
    complete: !truncated && !isFragment,
    laterFragment: fragOffset > 0,
    nested,
  });
  return { ip, ...l4, offsets: { l3: off, ...l4.offsets } };
}

const EXT_TYPES: Record<number, ParsedExtHeader['type']> = {
  [IPPROTO.HOPOPTS]: 'hop',
  [IPPROTO.ROUTING]: 'routing',
  [IPPROTO.FRAGMENT]: 'frag',
  [IPPROTO.DSTOPTS]: 'dst',
  [IPPROTO.AH]: 'ah',
  135: 'other', // Mobility
  139: 'other', // HIP
  140: 'other', // Shim6
};

function parseIpv6(buf: Buffer, off: number, end: number, nested: boolean): ParsedPacket {
  need(buf, off, 40, end, 'IPv6 header');
  const word0 = buf.readUInt32BE(off);
  const payloadLength = buf.readUInt16BE(off + 4);
  const nextHeader = buf.readUInt8(off + 6);
  const avail = Math.min(end, buf.length);
  const truncated = off + 40 + payloadLength > avail;
  const ipEnd = Math.min(off + 40 + payloadLength, avail);
  const src = buf.subarray(off + 8, off + 24);
  const dst = buf.subarray(off + 24, off + 40);

  const extHeaders: ParsedExtHeader[] = [];
  let pseudoDst: Buffer = dst;
  let nh = nextHeader;
  let p = off + 40;
  let frag: ParsedExtHeader | undefined;
  for (let type = EXT_TYPES[nh]; type !== undefined; type = EXT_TYPES[nh]) {
    need(buf, p, 2, ipEnd, `IPv6 extension header ${nh}`);
    const lenByte = buf.readUInt8(p + 1);
    const length = nh === IPPROTO.FRAGMENT ? 8 : nh === IPPROTO.AH ? (lenByte + 2) * 4 : (lenByte + 1) * 8;
    need(buf, p, length, ipEnd, `IPv6 extension header ${nh}`);
    const ext: ParsedExtHeader = { type, code: nh, nextHeader: buf.readUInt8(p), offset: p, length };
    if (type === 'routing') {
      ext.routingType = buf.readUInt8(p + 2);
      ext.segmentsLeft = buf.readUInt8(p + 3);
      ext.addresses = [];
      for (let a = p + 8; a + 16 <= p + length; a += 16) ext.addresses.push(formatIp(buf.subarray(a, a + 16)));
      const final = ext.routingType === 4 ? ext.addresses[0] : ext.addresses[ext.addresses.length - 1];
      if (ext.segmentsLeft > 0 && final !== undefined) pseudoDst = ipBytes(final);
    } else if (type === 'frag') {
      const field = buf.readUInt16BE(p + 2);
      ext.fragOffset = field & 0xfff8;
      ext.mf = (field & 1) !== 0;
      ext.id = buf.readUInt32BE(p + 4);
      frag ??= ext;
    }
    extHeaders.push(ext);
    nh = ext.nextHeader;
    p += length;
    // After a non-first fragment's header come fragment data, not headers.
    if (type === 'frag' && (ext.fragOffset ?? 0) > 0) break;
  }

  const fragOffset = frag?.fragOffset ?? 0;
  const mf = frag?.mf ?? false;
  const isFragment = mf || fragOffset > 0;
  const ip: ParsedIp = {
    version: 6,
    src: formatIp(src),
    dst: formatIp(dst),
    proto: nh,
    ttl: buf.readUInt8(off + 7),
    ihl: 0,
    headerLength: p - off,
    tos: (word0 >>> 20) & 0xff,
    flowLabel: word0 & 0xfffff,
    id: frag?.id ?? 0,
    flags: { reserved: false, df: false, mf },
    fragOffset,
    isFragment,
    totalLength: 40 + payloadLength,
    payloadLength,
    nextHeader,
    extHeaders,
    options: Buffer.alloc(0),
    headerChecksum: 0,
    headerChecksumOk: true,
    headerChecksumExpected: 0,
    truncated,
    pseudoDst: formatIp(pseudoDst),
  };
  const l4 = parseL4(buf, p, ipEnd, {
    version: 6,
    proto: nh,
    src,
    dst: pseudoDst,
    complete: !truncated && !isFragment,
    laterFragment: fragOffset > 0,
    nested,
  });
  return { ip, ...l4, offsets: { l3: off, ...l4.offsets } };
}

interface L4Context {
  version: 4 | 6;
  proto: number;
  src: Buffer;
  /** The pseudo-header destination. */
  dst: Buffer;
  /** Every byte the L4 checksum covers is here. */
  complete: boolean;
  /** A non-first fragment: no L4 header. */
  laterFragment: boolean;
  /** Inside an ICMP error: do not look for further embedded packets. */
  nested: boolean;
}

interface L4Result {
  l4: ParsedL4;
  payload: Buffer;
  offsets: { l4: number; payload: number; end: number };
}

/** Verify a checksum over pseudo + buf[start, end) whose field sits at `at`. */
function verifyChecksum(
  buf: Buffer,
  start: number,
  end: number,
  at: number,
  pseudo: Buffer | null,
): { ok: boolean; expected: number } {
  const field = buf.readUInt16BE(at);
  const total = (pseudo ? sum16(pseudo) : 0) + sum16(buf, start, end);
  return { ok: fold(total) === 0xffff, expected: ~fold(total - field) & 0xffff };
}

function u16(buf: Buffer, at: number, end: number): number {
  return at + 2 <= end ? buf.readUInt16BE(at) : 0;
}

function u32(buf: Buffer, at: number, end: number): number {
  return at + 4 <= end ? buf.readUInt32BE(at) : 0;
}

function isIcmpError(version: 4 | 6, type: number): boolean {
  if (version === 6) return type < 128;
  return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
}

function parseL4(buf: Buffer, start: number, end: number, ctx: L4Context): L4Result {
  const avail = end - start;
  const base: ParsedL4 = {
    kind: 'other',
    proto: ctx.proto,
    sport: 0,
    dport: 0,
    flags: { ...NO_FLAGS },
    seq: 0,
    ack: 0,
    window: 0,
    urgent: 0,
    dataOffset: 0,
    udpLength: 0,
    checksum: 0,
    checksumOk: false,
    checksumStatus: 'unverifiable',
    truncated: false,
  };
  const result = (l4: ParsedL4, payloadAt: number, payloadEnd = end): L4Result => ({
    l4,
    payload: Buffer.from(buf.subarray(payloadAt, payloadEnd)),
    offsets: { l4: start, payload: payloadAt, end },
  });
  const whole = (l4: ParsedL4): L4Result => result(l4, start);
  const setChecksum = (l4: ParsedL4, at: number, pseudo: Buffer | null, coveredEnd: number): void => {
    if (at + 2 > end) return;
    l4.checksum = buf.readUInt16BE(at);
    l4.checksumOffset = at;
    if (!ctx.complete || l4.truncated) return;
    const v = verifyChecksum(buf, start, coveredEnd, at, pseudo);
    l4.checksumStatus = v.ok ? 'ok' : 'bad';
    l4.checksumExpected = v.expected;
  };
  const pseudo = (length: number): Buffer => pseudoHeader(ctx.src, ctx.dst, ctx.proto, length);

  if (ctx.laterFragment) return whole({ ...base, kind: 'fragment' });

  if (ctx.proto === IPPROTO.TCP) {
    const l4: ParsedL4 = { ...base, kind: 'tcp' };
    l4.sport = u16(buf, start, end);
    l4.dport = u16(buf, start + 2, end);
    l4.seq = u32(buf, start + 4, end);
    l4.ack = u32(buf, start + 8, end);
    if (avail >= 14) {
      l4.dataOffset = buf.readUInt8(start + 12) >> 4;
      const f = buf.readUInt8(start + 13);
      l4.flags = {
        fin: (f & 0x01) !== 0,
        syn: (f & 0x02) !== 0,
        rst: (f & 0x04) !== 0,
        psh: (f & 0x08) !== 0,
        ack: (f & 0x10) !== 0,
        urg: (f & 0x20) !== 0,
        ece: (f & 0x40) !== 0,
        cwr: (f & 0x80) !== 0,
      };
    }
    l4.window = u16(buf, start + 14, end);
    l4.urgent = u16(buf, start + 18, end);
    const hl = Math.max(l4.dataOffset * 4, 20);
    l4.truncated = avail < hl || l4.dataOffset < 5;
    setChecksum(l4, start + 16, pseudo(avail), end);
    const payloadAt = Math.min(start + hl, end);
    return { l4, payload: Buffer.from(buf.subarray(payloadAt, end)), offsets: { l4: start, payload: payloadAt, end } };
  }

  if (ctx.proto === IPPROTO.UDP) {
    const l4: ParsedL4 = { ...base, kind: 'udp' };
    l4.sport = u16(buf, start, end);
    l4.dport = u16(buf, start + 2, end);
    l4.udpLength = u16(buf, start + 4, end);
    l4.truncated = avail < 8 || l4.udpLength > avail;
    const covered = l4.udpLength >= 8 ? Math.min(start + l4.udpLength, end) : end;
    if (l4.udpLength < 8 && avail >= 8) l4.truncated = true; // a length below the header is malformed
    setChecksum(l4, start + 6, pseudo(l4.udpLength), covered);
    if (l4.checksumOffset !== undefined && l4.checksum === 0) {
      // RFC 768: 0 means "no checksum" over IPv4; RFC 8200 forbids it over IPv6.
      l4.checksumStatus = ctx.version === 4 ? 'absent' : 'bad';
    }
    const payloadAt = Math.min(start + 8, end);
    return result(l4, payloadAt, covered);
  }

  const icmpProto = ctx.version === 4 ? IPPROTO.ICMP : IPPROTO.ICMPV6;
  if (ctx.proto === icmpProto) {
    const l4: ParsedL4 = { ...base, kind: ctx.version === 4 ? 'icmp' : 'icmpv6' };
    if (avail < 4) {
      l4.truncated = true;
      return whole(l4);
    }
    const type = buf.readUInt8(start);
    const icmp: ParsedIcmp = { type, code: buf.readUInt8(start + 1) };
    l4.icmp = icmp;
    l4.truncated = avail < 8;
    setChecksum(l4, start + 2, ctx.version === 6 ? pseudo(avail) : null, end);
    const echo =
      ctx.version === 4
        ? type === ICMP4.ECHO_REQUEST || type === ICMP4.ECHO_REPLY
        : type === ICMP6.ECHO_REQUEST || type === ICMP6.ECHO_REPLY;
    if (echo && avail >= 8) {
      icmp.id = buf.readUInt16BE(start + 4);
      icmp.seq = buf.readUInt16BE(start + 6);
      l4.sport = icmp.id;
    }
    if (isIcmpError(ctx.version, type) && avail >= 8) {
      if (ctx.version === 4) {
        const fragNeeded = type === ICMP4.DEST_UNREACH && icmp.code === ICMP4_UNREACH.FRAG_NEEDED;
        if (fragNeeded) icmp.mtu = buf.readUInt16BE(start + 6);
        if (type === ICMP4.PARAM_PROBLEM) icmp.pointer = buf.readUInt8(start + 4);
      } else {
        if (type === ICMP6.PACKET_TOO_BIG) icmp.mtu = buf.readUInt32BE(start + 4);
        if (type === ICMP6.PARAM_PROBLEM) icmp.pointer = buf.readUInt32BE(start + 4);
      }
      if (!ctx.nested) {
        try {
          icmp.embedded = parseIpAt(buf, start + 8, end, true);
        } catch (e: unknown) {
          icmp.embeddedError = e instanceof Error ? e.message : String(e);
        }
      }
    }
    const payloadAt = Math.min(start + 8, end);
    return { l4, payload: Buffer.from(buf.subarray(payloadAt, end)), offsets: { l4: start, payload: payloadAt, end } };
  }

  return whole(base);
}

// ---------------------------------------------------------------------------
// Fragmentation and reassembly
// ---------------------------------------------------------------------------

/** IPv4 options copied into every fragment (RFC 791: the copied flag, 0x80). */
function copiedOptions(options: Buffer): Buffer {
  const kept: Buffer[] = [];
  for (let i = 0; i < options.length; ) {
    const type = options.readUInt8(i);
    if (type === 0) break; // End of Option List
    if (type === 1) {
      i++; // NOP
      continue;
    }
    if (i + 1 >= options.length) break;
    const len = options.readUInt8(i + 1);
    if (len < 2) break;
    if (type & 0x80) kept.push(options.subarray(i, i + len));
    i += len;
  }
  return padTo(Buffer.concat(kept), 4);
}

function chunkSizes(total: number, fragmentSize: number): number[] {
  if (fragmentSize <= 0 || fragmentSize % 8 !== 0) {
    throw new RangeError(`fragment size ${fragmentSize} is not a positive multiple of 8`);
  }
  const sizes: number[] = [];
  for (let at = 0; at < total; at += fragmentSize) sizes.push(Math.min(fragmentSize, total - at));
  return sizes.length > 0 ? sizes : [0];
}

/**
 * Split an unfragmented IPv4 frame into fragments carrying at most
 * `fragmentSize` bytes (a multiple of 8) of IP payload each. The first keeps
 * all options, later ones only those with the copied flag.
 */
export function fragment4(frame: Buffer, fragmentSize: number): Buffer[] {
  const p = parseFrame(frame);
  if (p.ip.version !== 4) throw new TypeError('fragment4 needs an IPv4 frame');
  if (p.ip.isFragment) throw new TypeError('frame is already a fragment');
  const { l3, l4, end } = p.offsets;
  const eth = frame.subarray(0, l3);
  const data = frame.subarray(l4, end);
  const later = copiedOptions(p.ip.options);
  let at = 0;
  return chunkSizes(data.length, fragmentSize).map((size, i, all) => {
    const first = i === 0;
    const options = first ? p.ip.options : later;
    const hl = 20 + options.length;
    const h = Buffer.alloc(hl);
    frame.copy(h, 0, l3, l3 + 20);
    options.copy(h, 20);
    h.writeUInt8(0x40 | (hl / 4), 0);
    h.writeUInt16BE(hl + size, 2);
    const keep = h.readUInt16BE(6) & 0xc000; // reserved + DF
    h.writeUInt16BE(keep | (i < all.length - 1 ? 0x2000 : 0) | (at / 8), 6);
    h.writeUInt16BE(0, 10);
    h.writeUInt16BE(internetChecksum(h), 10);
    const out = Buffer.concat([eth, h, data.subarray(at, at + size)]);
    at += size;
    return out;
  });
}

/**
 * Split an unfragmented IPv6 frame into fragments with a fragment header
 * (identification `id`) after the unfragmentable part (hop-by-hop and routing
 * headers, and anything before the last of them).
 */
export function fragment6(frame: Buffer, fragmentSize: number, id = 0x5354): Buffer[] {
  const p = parseFrame(frame);
  if (p.ip.version !== 6) throw new TypeError('fragment6 needs an IPv6 frame');
  if (p.ip.extHeaders.some((e) => e.type === 'frag')) throw new TypeError('frame already has a fragment header');
  const { l3, end } = p.offsets;
  let lastUnfrag = -1;
  p.ip.extHeaders.forEach((e, i) => {
    if (e.type === 'hop' || e.type === 'routing') lastUnfrag = i;
  });
  const anchor = p.ip.extHeaders[lastUnfrag];
  const unfragEnd = anchor ? anchor.offset + anchor.length : l3 + 40;
  const nextField = anchor ? anchor.offset : l3 + 6;
  const fragNext = frame.readUInt8(nextField);
  const data = frame.subarray(unfragEnd, end);
  let at = 0;
  return chunkSizes(data.length, fragmentSize).map((size, i, all) => {
    const head = Buffer.from(frame.subarray(0, unfragEnd));
    head.writeUInt8(IPPROTO.FRAGMENT, nextField);
    head.writeUInt16BE(unfragEnd - l3 - 40 + 8 + size, l3 + 4);
    const fh = Buffer.alloc(8);
    fh.writeUInt8(fragNext, 0);
    fh.writeUInt16BE(at | (i < all.length - 1 ? 1 : 0), 2);
    fh.writeUInt32BE(id >>> 0, 4);
    const out = Buffer.concat([head, fh, data.subarray(at, at + size)]);
    at += size;
    return out;
  });
}

/** Build an IPv4 UDP datagram and split it (see fragment4). */
export function ipv4UdpFragments(o: Ipv4Options & UdpOptions & { fragmentSize: number }): Buffer[] {
  return fragment4(ipv4Udp(o), o.fragmentSize);
}

/** Build an IPv6 UDP datagram and split it (see fragment6). */
export function ipv6UdpFragments(
  o: Ipv6Options & UdpOptions & { fragmentSize: number; fragmentId?: number },
): Buffer[] {
  return fragment6(ipv6Udp(o), o.fragmentSize, o.fragmentId);
}

/**
 * Reassemble IPv4 or IPv6 fragments (any order) into one frame, with the
 * Ethernet header and unfragmentable part of the first fragment. Throws on
 * mixed datagrams, gaps, overlaps or a missing last fragment.
 */
export function reassemble(frames: Buffer[]): Buffer {
  if (frames.length === 0) throw new RangeError('no fragments');
  const parts = frames.map((frame) => ({ frame, p: parseFrame(frame) }));
  const key = (x: ParsedFrame): string =>
    `IPv${x.ip.version} ${x.ip.src} > ${x.ip.dst} id ${x.ip.id}${x.ip.version === 4 ? ` proto ${x.ip.proto}` : ''}`;
  const k0 = key(parts[0]!.p);
  for (const { p } of parts) {
    if (key(p) !== k0) throw new RangeError(`fragments of different datagrams: ${key(p)} vs ${k0}`);
  }
  const version = parts[0]!.p.ip.version;
  const fragExt = (p: ParsedFrame): ParsedExtHeader => {
    const f = p.ip.extHeaders.find((e) => e.type === 'frag');
    if (!f) throw new RangeError('IPv6 packet without a fragment header');
    return f;
  };
  // Where each fragment's data begins: after the IPv4 header, or after the IPv6 fragment header.
  const dataAt = (p: ParsedFrame): number => (version === 4 ? p.offsets.l4 : fragExt(p).offset + 8);
  parts.sort((a, b) => a.p.ip.fragOffset - b.p.ip.fragOffset);
  let expected = 0;
  const chunks: Buffer[] = [];
  parts.forEach(({ frame, p }, i) => {
    if (p.ip.fragOffset !== expected) throw new RangeError(`fragment at ${p.ip.fragOffset}, expected ${expected}`);
    const last = i === parts.length - 1;
    if (p.ip.flags.mf === last) {
      throw new RangeError(`fragment at ${p.ip.fragOffset}: MF ${p.ip.flags.mf} but ${last ? 'last' : 'not last'}`);
    }
    const chunk = frame.subarray(dataAt(p), p.offsets.end);
    chunks.push(chunk);
    expected += chunk.length;
  });
  const data = Buffer.concat(chunks);
  const { frame: firstFrame, p: first } = parts[0]!;
  const l3 = first.offsets.l3;
  if (version === 4) {
    const hl = first.ip.headerLength;
    const head = Buffer.from(firstFrame.subarray(0, l3 + hl));
    head.writeUInt16BE(hl + data.length, l3 + 2);
    head.writeUInt16BE(head.readUInt16BE(l3 + 6) & 0xc000, l3 + 6);
    head.writeUInt16BE(0, l3 + 10);
    head.writeUInt16BE(internetChecksum(head.subarray(l3, l3 + hl)), l3 + 10);
    return Buffer.concat([head, data]);
  }
  const exts = first.ip.extHeaders;
  const fi = exts.findIndex((e) => e.type === 'frag');
  const f = exts[fi]!;
  const prev = exts[fi - 1];
  const head = Buffer.from(firstFrame.subarray(0, f.offset));
  head.writeUInt8(f.nextHeader, prev ? prev.offset : l3 + 6);
  head.writeUInt16BE(f.offset - l3 - 40 + data.length, l3 + 4);
  return Buffer.concat([head, data]);
}

// ---------------------------------------------------------------------------
// Truncation, malformation and rewriting
// ---------------------------------------------------------------------------

/** The first `len` bytes (a copy). */
export function truncate(buf: Buffer, len: number): Buffer {
  return Buffer.from(buf.subarray(0, len));
}

/** A copy with buf[offset] ^= xor. */
export function corrupt(buf: Buffer, offset: number, xor = 0xff): Buffer {
  if (offset < 0 || offset >= buf.length) throw new RangeError(`offset ${offset} outside ${buf.length} bytes`);
  const out = Buffer.from(buf);
  out.writeUInt8(out.readUInt8(offset) ^ xor, offset);
  return out;
}

/** A copy with `bytes` written at `offset`. */
export function patch(buf: Buffer, offset: number, bytes: Buffer | number[]): Buffer {
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
  if (offset < 0 || offset + b.length > buf.length) {
    throw new RangeError(`patch of ${b.length} at ${offset} outside ${buf.length} bytes`);
  }
  const out = Buffer.from(buf);
  b.copy(out, offset);
  return out;
}

/** The IP packet inside an Ethernet frame (a copy), e.g. for icmp4Error's `original`. */
export function ipPacketOf(frame: Buffer): Buffer {
  return Buffer.from(frame.subarray(l3OffsetOf(frame)));
}

function l3OffsetOf(frame: Buffer): number {
  need(frame, 0, 14, frame.length, 'Ethernet header');
  return frame.readUInt16BE(12) === ETH_P_8021Q ? 18 : 14;
}

function ipv4HeaderAt(frame: Buffer): number {
  const l3 = l3OffsetOf(frame);
  need(frame, l3, 20, frame.length, 'IPv4 header');
  if (frame.readUInt8(l3) >> 4 !== 4) throw new TypeError('not an IPv4 frame');
  return l3;
}

function refreshIpv4HeaderChecksum(out: Buffer, l3: number): void {
  const hl = (out.readUInt8(l3) & 0x0f) * 4;
  if (hl < 20 || l3 + hl > out.length) return; // nothing sensible to checksum
  out.writeUInt16BE(0, l3 + 10);
  out.writeUInt16BE(internetChecksum(out.subarray(l3, l3 + hl)), l3 + 10);
}

/** A copy with IPv4 IHL set to `ihl` (0..15); the header checksum is refreshed unless fixChecksum is false. */
export function setIpv4Ihl(frame: Buffer, ihl: number, opts: { fixChecksum?: boolean } = {}): Buffer {
  const out = Buffer.from(frame);
  const l3 = ipv4HeaderAt(out);
  out.writeUInt8(0x40 | (ihl & 0x0f), l3);
  if (opts.fixChecksum ?? true) refreshIpv4HeaderChecksum(out, l3);
  return out;
}

/** A copy with the IPv4 total length set; the header checksum is refreshed unless fixChecksum is false. */
export function setIpv4TotalLength(frame: Buffer, totalLength: number, opts: { fixChecksum?: boolean } = {}): Buffer {
  const out = Buffer.from(frame);
  const l3 = ipv4HeaderAt(out);
  out.writeUInt16BE(totalLength, l3 + 2);
  if (opts.fixChecksum ?? true) refreshIpv4HeaderChecksum(out, l3);
  return out;
}

/** A copy with the IPv6 payload length set. */
export function setIpv6PayloadLength(frame: Buffer, payloadLength: number): Buffer {
  const out = Buffer.from(frame);
  const l3 = l3OffsetOf(out);
  out.writeUInt16BE(payloadLength, l3 + 4);
  return out;
}

/** Fields `rewrite` can change in one IP packet. */
export interface PacketRewrite {
  src?: string;
  dst?: string;
  /** TCP/UDP source port; ICMP echo identifier. */
  sport?: number;
  /** TCP/UDP destination port. */
  dport?: number;
  ttl?: number;
}

export interface FrameRewrite extends PacketRewrite {
  srcMac?: string;
  dstMac?: string;
  /** The packet quoted by an ICMP error. */
  inner?: PacketRewrite;
}

function applyRewrite(out: Buffer, p: ParsedPacket, ch: PacketRewrite): void {
  const { l3, l4 } = p.offsets;
  const v4 = p.ip.version === 4;
  if (ch.src !== undefined) addrOf(p.ip.version, ch.src).copy(out, l3 + (v4 ? 12 : 8));
  if (ch.dst !== undefined) addrOf(p.ip.version, ch.dst).copy(out, l3 + (v4 ? 16 : 24));
  if (ch.ttl !== undefined) out.writeUInt8(ch.ttl, l3 + (v4 ? 8 : 7));
  if (ch.sport === undefined && ch.dport === undefined) return;
  const kind = p.l4.kind;
  const end = p.offsets.end;
  if (kind === 'tcp' || kind === 'udp') {
    if (ch.sport !== undefined && l4 + 2 <= end) out.writeUInt16BE(ch.sport, l4);
    if (ch.dport !== undefined && l4 + 4 <= end) out.writeUInt16BE(ch.dport, l4 + 2);
    return;
  }
  if ((kind === 'icmp' || kind === 'icmpv6') && p.l4.icmp?.id !== undefined && ch.dport === undefined) {
    if (ch.sport !== undefined) out.writeUInt16BE(ch.sport, l4 + 4);
    return;
  }
  throw new TypeError(`cannot rewrite ports of a ${kind} packet${p.l4.icmp ? ` (ICMP type ${p.l4.icmp.type})` : ''}`);
}

interface ChecksumDelta {
  /** Offset of the checksum field. */
  at: number;
  /** Byte ranges [start, end) that may have changed. */
  regions: Array<[number, number]>;
  /** Pseudo-headers before and after, for checksums that cover one. */
  pseudo?: { before: Buffer; after: Buffer };
  /** UDP: a result of 0 is sent as 0xffff. */
  zeroAsOnes?: boolean;
}

/**
 * Incrementally update a checksum for the change from `old` to `out`
 * (RFC 1624: HC' = ~(~HC + ~m + m')). The field itself is in both sums with
 * its old value, so it cancels out.
 */
function incrementalUpdate(old: Buffer, out: Buffer, d: ChecksumDelta): void {
  let mOld = d.pseudo ? sum16(d.pseudo.before) : 0;
  let mNew = d.pseudo ? sum16(d.pseudo.after) : 0;
  for (const [s, e] of d.regions) {
    mOld += sum16(old, s, e);
    mNew += sum16(out, s, e);
  }
  const hc = old.readUInt16BE(d.at);
  let value = ~fold((~hc & 0xffff) + (~fold(mOld) & 0xffff) + fold(mNew)) & 0xffff;
  if (value === 0 && d.zeroAsOnes) value = 0xffff;
  out.writeUInt16BE(value, d.at);
}

function pseudoOf(p: ParsedPacket, length: number): Buffer {
  return pseudoHeader(ipBytes(p.ip.src), ipBytes(p.ip.pseudoDst), p.l4.proto, length);
}

/** Update one packet's L4 and IPv4 header checksums for the changes from `before` to `after`. */
function updateChecksums(old: Buffer, out: Buffer, before: ParsedPacket, after: ParsedPacket): void {
  const l4 = before.l4;
  const at = l4.checksumOffset;
  const skip = at === undefined || l4.kind === 'fragment' || l4.kind === 'other' || l4.checksumStatus === 'absent';
  if (!skip) {
    const len = before.offsets.end - before.offsets.l4;
    incrementalUpdate(old, out, {
      at,
      regions: [[before.offsets.l4, before.offsets.end]],
      ...(l4.kind !== 'icmp' ? { pseudo: { before: pseudoOf(before, len), after: pseudoOf(after, len) } } : {}),
      zeroAsOnes: l4.kind === 'udp',
    });
  }
  if (before.ip.version === 4) {
    const l3 = before.offsets.l3;
    incrementalUpdate(old, out, { at: l3 + 10, regions: [[l3, l3 + before.ip.headerLength]] });
  }
}

/**
 * A copy with addresses, ports, TTL or MACs changed, and the checksums
 * updated incrementally — as the datapath does — so a wrong checksum stays
 * wrong and a right one ends up equal to a full recomputation. With `inner`,
 * the packet quoted by an ICMP error is rewritten too (its IPv4 header and L4
 * checksums are updated before the outer ICMP checksum). UDP over IPv4 with
 * checksum 0 keeps 0. Use it to write the expected output of a translation.
 */
export function rewrite(frame: Buffer, ch: FrameRewrite): Buffer {
  const before = parseFrame(frame);
  const out = Buffer.from(frame);
  if (ch.dstMac !== undefined) macBytes(ch.dstMac).copy(out, 0);
  if (ch.srcMac !== undefined) macBytes(ch.srcMac).copy(out, 6);
  applyRewrite(out, before, ch);
  const innerBefore = before.l4.icmp?.embedded;
  if (ch.inner !== undefined) {
    if (!innerBefore) throw new TypeError('inner rewrite on a frame without an ICMP error quote');
    applyRewrite(out, innerBefore, ch.inner);
  }
  const after = parseFrame(out);
  const innerAfter = after.l4.icmp?.embedded;
  if (innerBefore && innerAfter) updateChecksums(frame, out, innerBefore, innerAfter);
  updateChecksums(frame, out, before, after);
  return out;
}

/** Recompute one packet's checksums from scratch (L4 only where every covered byte is here). */
function recompute(out: Buffer, p: ParsedPacket): void {
  const l4 = p.l4;
  const at = l4.checksumOffset;
  const full = l4.checksumStatus === 'ok' || l4.checksumStatus === 'bad';
  const checksummed = l4.kind === 'tcp' || l4.kind === 'udp' || l4.kind === 'icmp' || l4.kind === 'icmpv6';
  if (at !== undefined && full && checksummed) {
    const start = p.offsets.l4;
    const end = l4.kind === 'udp' ? start + l4.udpLength : p.offsets.end;
    out.writeUInt16BE(0, at);
    const body = out.subarray(start, end);
    let value = l4.kind === 'icmp' ? internetChecksum(body) : internetChecksum(pseudoOf(p, end - start), body);
    if (value === 0 && l4.kind === 'udp') value = 0xffff;
    out.writeUInt16BE(value, at);
  }
  if (p.ip.version === 4) refreshIpv4HeaderChecksum(out, p.offsets.l3);
}

/**
 * A copy with every checksum recomputed from scratch: the quoted packet of
 * an ICMP error first, then L4, then the IPv4 header. L4 checksums of
 * fragments and truncated segments are left alone; UDP over IPv4 with 0 keeps 0.
 */
export function fixChecksums(frame: Buffer): Buffer {
  const out = Buffer.from(frame);
  const p = parseFrame(out);
  const inner = p.l4.icmp?.embedded;
  if (inner) recompute(out, inner);
  recompute(out, p);
  return out;
}
