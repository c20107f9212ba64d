// The TypeScript mirror of bpf/lib/abi.h: one codec per struct, every constant,
// and the metric reason names. Keep in step with abi.h by hand;
// test/bpf/abi-btf.test.ts compares every codec (size, each member's offset
// and size) and the reason table with the BTF of build/bpf/strait_tc.o.
//
// Types: u8/u16/u32 and be16/be32 are numbers (be16 ports in host order),
// u64 is bigint, IPv4/IPv6 addresses are strings (see codec.ts).
import {
  array,
  be16,
  bytes,
  be32,
  cstring,
  ipv4,
  ipv6,
  pad,
  scalar,
  struct,
  u16,
  u32,
  u64,
  u8,
  type Codec,
  type CodecValue,
} from './codec.js';

// ---- IP protocol numbers ----
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;
export const IPPROTO_SCTP = 132;
export const IpProto = {
  icmp: IPPROTO_ICMP,
  tcp: IPPROTO_TCP,
  udp: IPPROTO_UDP,
  icmpv6: IPPROTO_ICMPV6,
  sctp: IPPROTO_SCTP,
} as const;
export type IpProtoName = keyof typeof IpProto;

// ---- services{4,6} ----
export const LB_SCOPE_EXTERNAL = 0;
export const LB_SCOPE_INTERNAL = 1;

export const LB_F_AFFINITY = 1 << 0;
export const LB_F_LOCAL_EXTERNAL = 1 << 1;
export const LB_F_LOCAL_INTERNAL = 1 << 2;
export const LB_F_DSR = 1 << 3;
export const LB_F_SOURCE_RANGES = 1 << 4;
export const LB_F_TWO_SCOPES = 1 << 5;
export const LB_F_REJECT_NO_ENDPOINTS = 1 << 6;

export const LB_KIND_CLUSTER_IP = 0;
export const LB_KIND_NODE_PORT = 1;
export const LB_KIND_EXTERNAL_IP = 2;
export const LB_KIND_LOAD_BALANCER = 3;

export const LB_ALG_RANDOM = 0;
export const LB_ALG_MAGLEV = 1;

export const lb4Key = struct('lb4_key', {
  addr: ipv4,
  port: be16,
  proto: u8,
  scope: u8,
});
export type Lb4Key = CodecValue<typeof lb4Key>;

export const lb6Key = struct('lb6_key', {
  addr: ipv6,
  port: be16,
  proto: u8,
  scope: u8,
});
export type Lb6Key = CodecValue<typeof lb6Key>;

export const lbService = struct('lb_service', {
  serviceId: u32,
  backendCount: u32,
  revNatId: u32,
  affinityTimeout: u32,
  flags: u16,
  kind: u8,
  algorithm: u8,
});
export type LbService = CodecValue<typeof lbService>;

// ---- service_slots ----
export const lbSlotKey = struct('lb_slot_key', {
  serviceId: u32,
  slot: u32,
});
export type LbSlotKey = CodecValue<typeof lbSlotKey>;

export const lbSlot = struct('lb_slot', {
  backendId: u32,
});
export type LbSlot = CodecValue<typeof lbSlot>;

// ---- service_names (for people; the datapath never reads it) ----
export const SERVICE_NAME_MAX = 128;
export const serviceName = struct('service_name', {
  name: cstring(SERVICE_NAME_MAX),
});
export type ServiceName = CodecValue<typeof serviceName>;

// ---- maglev ----
export const MAGLEV_TABLE_SIZE = 16381;

// ---- backends{4,6} ----
export const BE_STATE_ACTIVE = 0;
export const BE_STATE_TERMINATING = 1;
export const BE_STATE_QUARANTINED = 2;

export const BE_F_LOCAL = 1 << 0;

export const lb4Backend = struct('lb4_backend', {
  addr: ipv4,
  nodeAddr: ipv4,
  port: be16,
  proto: u8,
  state: u8,
  flags: u8,
  pad: pad(1),
  zone: u16,
});
export type Lb4Backend = CodecValue<typeof lb4Backend>;

export const lb6Backend = struct('lb6_backend', {
  addr: ipv6,
  nodeAddr: ipv6,
  port: be16,
  proto: u8,
  state: u8,
  flags: u8,
  pad: pad(1),
  zone: u16,
});
export type Lb6Backend = CodecValue<typeof lb6Backend>;

// ---- revnat{4,6} ----
export const lb4Revnat = struct('lb4_revnat', {
  addr: ipv4,
  port: be16,
  pad: pad(2),
});
export type Lb4Revnat = CodecValue<typeof lb4Revnat>;

export const lb6Revnat = struct('lb6_revnat', {
  addr: ipv6,
  port: be16,
  pad: pad(2),
});
export type Lb6Revnat = CodecValue<typeof lb6Revnat>;

// ---- sock_revnat{4,6}: socket LB reverse translation (LRU) ----
export const sock4RevnatKey = struct('sock4_revnat_key', {
  /** bpf_get_socket_cookie() of the translated socket. */
  cookie: u64,
  /** The backend the socket sends to. */
  addr: ipv4,
  port: be16,
  pad: pad(2),
});
export type Sock4RevnatKey = CodecValue<typeof sock4RevnatKey>;

export const sock4RevnatEntry = struct('sock4_revnat_entry', {
  /** The frontend the socket asked for. */
  addr: ipv4,
  port: be16,
  proto: u8,
  pad: pad(1),
  revNatId: u32,
  backendId: u32,
});
export type Sock4RevnatEntry = CodecValue<typeof sock4RevnatEntry>;

export const sock6RevnatKey = struct('sock6_revnat_key', {
  cookie: u64,
  addr: ipv6,
  port: be16,
  pad: pad(6),
});
export type Sock6RevnatKey = CodecValue<typeof sock6RevnatKey>;

export const sock6RevnatEntry = struct('sock6_revnat_entry', {
  addr: ipv6,
  port: be16,
  proto: u8,
  pad: pad(1),
  revNatId: u32,
  backendId: u32,
});
export type Sock6RevnatEntry = CodecValue<typeof sock6RevnatEntry>;

// ---- ct{4,6} ----
export const CT_DIR_SERVICE = 0;
export const CT_DIR_REPLY = 1;

export const CT_F_SEEN_REPLY = 1 << 0;
export const CT_F_ESTABLISHED = 1 << 1;
export const CT_F_CLOSING = 1 << 2;
export const CT_F_SNAT = 1 << 3;
export const CT_F_DSR = 1 << 4;

export const ct4Key = struct('ct4_key', {
  saddr: ipv4,
  daddr: ipv4,
  sport: be16,
  dport: be16,
  proto: u8,
  dir: u8,
  pad: pad(2),
});
export type Ct4Key = CodecValue<typeof ct4Key>;

export const ct6Key = struct('ct6_key', {
  saddr: ipv6,
  daddr: ipv6,
  sport: be16,
  dport: be16,
  proto: u8,
  dir: u8,
  pad: pad(2),
});
export type Ct6Key = CodecValue<typeof ct6Key>;

export const ctEntry = struct('ct_entry', {
  expires: u64,
  backendId: u32,
  revNatId: u32,
  flags: u16,
  tcpFlags: u8,
  pad: pad(1),
  created: u32,
});
export type CtEntry = CodecValue<typeof ctEntry>;

// ---- xdp_nexthop, xdp_flow{4,6}: the XDP fast path's caches (lib/xdp.h) ----
export const XDP_FLOW_HDR_MAX = 56;
export const xdpNhKey = struct('xdp_nh_key', {
  ifindex: u32,
  family: u8,
  pad: pad(3),
  addr: bytes(16),
});
export type XdpNhKey = CodecValue<typeof xdpNhKey>;
export const xdpNexthop = struct('xdp_nexthop', {
  expires: u64,
  ifindex: u32,
  mtu: u32,
  smac: bytes(6),
  dmac: bytes(6),
  pad: pad(4),
  saddr: bytes(16),
});
export type XdpNexthop = CodecValue<typeof xdpNexthop>;
export const xdpFlow = struct('xdp_flow', {
  validUntil: u64,
  iif: u32,
  ifindex: u32,
  backendId: u32,
  csum: u32,
  maxLen: u16,
  ctFlags: u16,
  tcpSeen: u8,
  /** flow_epoch's low 24 bits, little-endian (lib/xdp.h). */
  epoch: bytes(3),
  hdr: bytes(XDP_FLOW_HDR_MAX),
});
export type XdpFlow = CodecValue<typeof xdpFlow>;
// ---- xdp_flow_cache: the XDP established fast path's first level (lib/xdp.h) ----
export const XDP_FLOW_CACHE_SLOTS = 4096;
/** One per-CPU slot: an established DSR flow's encapsulation with its tuple and epoch (derived state). */
export const xdpFlowSlot = struct('xdp_flow_slot', {
  saddr: array(u32, 4),
  daddr: array(u32, 4),
  sport: be16,
  dport: be16,
  proto: u8,
  family: u8,
  tcpSeen: u8,
  pad: pad(1),
  iif: u32,
  epoch: u32,
  ctFlags: u16,
  maxLen: u16,
  ifindex: u32,
  csum: u32,
  pad2: pad(4),
  validUntil: u64,
  hdr: bytes(XDP_FLOW_HDR_MAX),
});
export type XdpFlowSlot = CodecValue<typeof xdpFlowSlot>;

// ---- flow_cache, flow_epoch: the tc established fast path (lib/flowcache.h) ----
export const FLOW_CACHE_SLOTS = 4096;
export const FLOW_HOOK_NONE = 0;
export const FLOW_HOOK_TC_INGRESS = 1;
export const FLOW_HOOK_TC_EGRESS = 2;
/** The agent's invalidation counter: bumped after every change to the Service maps. */
export const flowEpoch = struct('flow_epoch', { epoch: u64 });
export type FlowEpoch = CodecValue<typeof flowEpoch>;
/**
 * One slot of the per-CPU rewrite cache (derived state, for inspection and tests).
 * Addresses are the C side's 32-bit words as they lie in memory (little-endian
 * reads of network-order bytes): `flowCacheAddr` turns one into text.
 */
export const flowCacheEntry = struct('flow_cache_entry', {
  saddr: array(u32, 4),
  daddr: array(u32, 4),
  sport: be16,
  dport: be16,
  proto: u8,
  hook: u8,
  family: u8,
  tcpSeen: u8,
  ifindex: u32,
  ctFlags: u16,
  port: be16,
  addr: array(u32, 4),
  addrDiff: u32,
  portDiff: u32,
  epoch: u32,
  pad: pad(4),
  validUntil: u64,
});
export type FlowCacheEntry = CodecValue<typeof flowCacheEntry>;

/** A flow_cache_entry address (family 4: the first word) as text. */
export function flowCacheAddr(words: readonly number[], family: number): string {
  const b = Buffer.alloc(16);
  words.forEach((w, i) => b.writeUInt32LE(w >>> 0, i * 4));
  if (family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return groups.join(':');
}

// ---- frag{4,6} ----
export const FRAG_REWRITE_DADDR = 0;
export const FRAG_REWRITE_SADDR = 1;

export const frag4Key = struct('frag4_key', {
  saddr: ipv4,
  daddr: ipv4,
  id: be16,
  proto: u8,
  pad: pad(1),
});
export type Frag4Key = CodecValue<typeof frag4Key>;

export const frag4Entry = struct('frag4_entry', {
  addr: ipv4,
  rewrite: u8,
  pad: pad(3),
});
export type Frag4Entry = CodecValue<typeof frag4Entry>;

export const frag6Key = struct('frag6_key', {
  saddr: ipv6,
  daddr: ipv6,
  /** The fragment header's 32-bit identification. */
  id: be32,
  /** The fragment header's next header. */
  proto: u8,
  pad: pad(3),
});
export type Frag6Key = CodecValue<typeof frag6Key>;

export const frag6Entry = struct('frag6_entry', {
  addr: ipv6,
  rewrite: u8,
  pad: pad(3),
});
export type Frag6Entry = CodecValue<typeof frag6Entry>;

// ---- snat{4,6}: north-south SNAT (abi.h): OUT {client, frontend} → {node, port}, IN {backend, node} → {client} ----
export const SNAT_DIR_OUT = 0;
export const SNAT_DIR_IN = 1;

export const snat4Key = struct('snat4_key', {
  saddr: ipv4,
  daddr: ipv4,
  sport: be16,
  dport: be16,
  proto: u8,
  dir: u8,
  pad: pad(2),
});
export type Snat4Key = CodecValue<typeof snat4Key>;

export const snat4Entry = struct('snat4_entry', {
  /** OUT: the node address the flow leaves from; IN: the client's address. */
  addr: ipv4,
  /** OUT: the SNAT port; IN: the client's port. */
  port: be16,
  pad: pad(2),
  /** The flow's conntrack deadline (CLOCK_MONOTONIC ns). */
  expires: u64,
});
export type Snat4Entry = CodecValue<typeof snat4Entry>;

export const snat6Key = struct('snat6_key', {
  saddr: ipv6,
  daddr: ipv6,
  sport: be16,
  dport: be16,
  proto: u8,
  dir: u8,
  pad: pad(2),
});
export type Snat6Key = CodecValue<typeof snat6Key>;

export const snat6Entry = struct('snat6_entry', {
  addr: ipv6,
  port: be16,
  pad: pad(6),
  expires: u64,
});
export type Snat6Entry = CodecValue<typeof snat6Entry>;

/** abi.h struct snat6_scratch: per-CPU working space of the IPv6 SNAT paths, opaque to the agent. */
export const SNAT6_SCRATCH_SIZE = 136;
export const snat6Scratch: Codec<Buffer> = scalar('snat6_scratch', bytes(SNAT6_SCRATCH_SIZE));

// ---- affinity{4,6} ----
export const affinity4Key = struct('affinity4_key', {
  netnsCookie: u64,
  serviceId: u32,
  client: ipv4,
});
export type Affinity4Key = CodecValue<typeof affinity4Key>;

export const affinity6Key = struct('affinity6_key', {
  netnsCookie: u64,
  serviceId: u32,
  client: ipv6,
  pad: pad(4),
});
export type Affinity6Key = CodecValue<typeof affinity6Key>;

export const affinityEntry = struct('affinity_entry', {
  lastUsed: u64,
  backendId: u32,
  /** Where the Service's table held the backend (slot, or Maglev index); 0 = unknown. */
  slot: u32,
});
export type AffinityEntry = CodecValue<typeof affinityEntry>;

// ---- source_ranges{4,6} (LPM trie: prefixlen counts service_id's 32 bits) ----
export const srange4Key = struct('srange4_key', {
  prefixlen: u32,
  serviceId: u32,
  addr: ipv4,
});
export type Srange4Key = CodecValue<typeof srange4Key>;

export const srange6Key = struct('srange6_key', {
  prefixlen: u32,
  serviceId: u32,
  addr: ipv6,
});
export type Srange6Key = CodecValue<typeof srange6Key>;

export const srangeEntry = struct('srange_entry', {
  allow: u8,
  pad: pad(3),
});
export type SrangeEntry = CodecValue<typeof srangeEntry>;

// ---- config ----
export const NODE_MODE_SOCKET_LB = 1 << 0;
export const NODE_MODE_DSR = 1 << 1;
export const NODE_MODE_XDP = 1 << 2;

export const NODE_MAX_UPLINKS = 4;

export const nodeConfig = struct('node_config', {
  addr4: ipv4,
  addr6: ipv6,
  uplinkIfindex: array(u32, NODE_MAX_UPLINKS),
  modes: u32,
  nodeportMin: u16,
  nodeportMax: u16,
  snatPortMin: u16,
  snatPortMax: u16,
});
export type NodeConfig = CodecValue<typeof nodeConfig>;

// ---- metrics ----
export const METRIC_DIR_INGRESS = 0;
export const METRIC_DIR_EGRESS = 1;
export const METRIC_DIRS = 2;
export const METRIC_REASONS = 64;
export const METRICS_MAX = METRIC_DIRS * METRIC_REASONS;

/** METRICS_INDEX(reason, dir) of abi.h. */
export function metricsIndex(reason: number, dir: number): number {
  return dir * METRIC_REASONS + reason;
}

export const metricsValue = struct('metrics_value', {
  packets: u64,
  bytes: u64,
});
export type MetricsValue = CodecValue<typeof metricsValue>;

/** enum metric_reason, by its C enumerator names. */
export const MetricReason = {
  REASON_UNSPEC: 0,
  REASON_PASS: 1,
  REASON_SERVICE_DNAT: 2,
  REASON_REVNAT: 3,
  REASON_ICMP_ERROR_XLATE: 4,
  REASON_FRAG_XLATE: 5,
  REASON_NO_ENDPOINTS_REPLY: 6,
  REASON_CT_RACE_JOINED: 7,
  REASON_PASS_UNKNOWN_PROTO: 8,
  REASON_PASS_REPLY_UNTRACKED: 9,
  REASON_PASS_FRAGMENT: 10,
  REASON_SOCK_XLATE: 11,
  REASON_SOCK_REVNAT: 12,
  REASON_SERVICE_SNAT: 13,
  REASON_SNAT_REVNAT: 14,
  REASON_SNAT_ICMP_XLATE: 15,
  REASON_HAIRPIN_SNAT: 16,
  REASON_DSR_ENCAP: 20,
  REASON_DSR_DECAP: 21,
  REASON_DSR_REVNAT: 22,
  REASON_FRAG_NEEDED_REPLY: 23,
  REASON_XDP_DSR_ENCAP: 24,

  DROP_INVALID_L3: 32,
  DROP_INVALID_IHL: 33,
  DROP_IPV6_EXT_CHAIN: 34,
  DROP_INVALID_L4: 35,
  DROP_NO_ENDPOINTS: 36,
  DROP_BACKEND_MISSING: 37,
  DROP_CT_FULL: 38,
  DROP_FRAG_UNKNOWN: 39,
  DROP_TCP_INVALID: 40,
  DROP_CSUM: 41,
  DROP_ICMP_RATE_LIMITED: 42,
  DROP_ICMP_REPLY_FAILED: 43,
  DROP_FRAG_FULL: 44,
  DROP_UNSUPPORTED: 45,
  DROP_SOCK_REVNAT_FULL: 46,
  DROP_SNAT_EXHAUSTED: 47,
  DROP_SOURCE_RANGE: 48,
  DROP_NO_LOCAL_ENDPOINTS: 49,
  DROP_FIB_LOOKUP: 50,
  DROP_TTL_EXCEEDED: 51,
  DROP_SNAT_UNTRACKED: 52,
  DROP_DSR_ENCAP: 56,
  DROP_DSR_DECAP: 57,
} as const;
export type MetricReasonEnumerator = keyof typeof MetricReason;

/** Reasons from this value up are drops. */
export const METRIC_FIRST_DROP = 32;

/** REASON_X → 'x', DROP_X → 'drop_x' (the label the agent exports). */
export function metricReasonLabel(enumerator: string): string {
  return enumerator.startsWith('REASON_')
    ? enumerator.slice('REASON_'.length).toLowerCase()
    : enumerator.toLowerCase();
}

/** Metric reason number → name: 2 → 'service_dnat', 38 → 'drop_ct_full'. */
export const metricReasonNames: ReadonlyMap<number, string> = new Map(
  Object.entries(MetricReason).map(([enumerator, value]) => [value, metricReasonLabel(enumerator)]),
);

/** The name of a reason number; unknown numbers (a newer datapath) stay visible. */
export function metricReasonName(reason: number): string {
  return (
    metricReasonNames.get(reason) ??
    (reason >= METRIC_FIRST_DROP ? `drop_${reason}` : `reason_${reason}`)
  );
}

// ---- load-time settings (.rodata `settings`) ----
const NS_PER_S = 1_000_000_000n;

export const lbSettings = struct('lb_settings', {
  ctTcpSynNs: u64,
  ctTcpEstablishedNs: u64,
  ctTcpClosingNs: u64,
  ctUdpNs: u64,
  ctIcmpNs: u64,
  fragNs: u64,
  hashSeed: u32,
  icmpRate: u32,
  icmpBurst: u32,
  pad: pad(4),
});
export type LbSettings = CodecValue<typeof lbSettings>;

/** The C defaults, hash seed excluded (chosen per node, see dataplane.ts). */
export const DEFAULT_LB_SETTINGS: Readonly<Omit<LbSettings, 'hashSeed'>> = {
  ctTcpSynNs: 60n * NS_PER_S,
  ctTcpEstablishedNs: 21600n * NS_PER_S,
  ctTcpClosingNs: 10n * NS_PER_S,
  ctUdpNs: 60n * NS_PER_S,
  ctIcmpNs: 30n * NS_PER_S,
  fragNs: 2n * NS_PER_S,
  icmpRate: 100,
  icmpBurst: 200,
};

export const icmpBucket = struct('icmp_bucket', {
  lastNs: u64,
  tokens: u64,
});
export type IcmpBucket = CodecValue<typeof icmpBucket>;

// ---- integer keys and values ----
/** A bare __u32 (backend ids, rev-NAT ids, array indexes). */
export const u32Codec: Codec<number> = scalar('__u32', u32);

/** Every struct codec of abi.h, by C name (the BTF test walks this). */
export const abiStructs = {
  lb4_key: lb4Key,
  lb6_key: lb6Key,
  lb_service: lbService,
  lb_slot_key: lbSlotKey,
  lb_slot: lbSlot,
  service_name: serviceName,
  lb4_backend: lb4Backend,
  lb6_backend: lb6Backend,
  lb4_revnat: lb4Revnat,
  lb6_revnat: lb6Revnat,
  sock4_revnat_key: sock4RevnatKey,
  sock4_revnat_entry: sock4RevnatEntry,
  sock6_revnat_key: sock6RevnatKey,
  sock6_revnat_entry: sock6RevnatEntry,
  ct4_key: ct4Key,
  ct6_key: ct6Key,
  ct_entry: ctEntry,
  xdp_nh_key: xdpNhKey,
  xdp_nexthop: xdpNexthop,
  xdp_flow: xdpFlow,
  xdp_flow_slot: xdpFlowSlot,
  flow_epoch: flowEpoch,
  flow_cache_entry: flowCacheEntry,
  frag4_key: frag4Key,
  frag4_entry: frag4Entry,
  frag6_key: frag6Key,
  frag6_entry: frag6Entry,
  snat4_key: snat4Key,
  snat4_entry: snat4Entry,
  snat6_key: snat6Key,
  snat6_entry: snat6Entry,
  affinity4_key: affinity4Key,
  affinity6_key: affinity6Key,
  affinity_entry: affinityEntry,
  srange4_key: srange4Key,
  srange6_key: srange6Key,
  srange_entry: srangeEntry,
  node_config: nodeConfig,
  metrics_value: metricsValue,
  lb_settings: lbSettings,
  icmp_bucket: icmpBucket,
} as const;
