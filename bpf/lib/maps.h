/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * maps.h — every map of the design, defined once and included by every
 * program object, so each object sees the whole layout and the agent adopts
 * the same pinned maps from all of them.
 *
 * Maps carry no libbpf `pinning` attribute on purpose: the agent (src/bpf/
 * object.ts) decides per map whether to adopt a compatible pin under its bpf
 * root or to replace an incompatible one, and pins what it creates. The
 * max_entries below are defaults; the agent overrides them before load.
 */
#ifndef STRAIT_MAPS_H
#define STRAIT_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"

/* Defaults: 100,000 frontends per family, 1,000,000 backends, conntrack
 * like Cilium's (512k TCP + 256k other, in one map per family). */
#define DEFAULT_SERVICES_MAX  100000
#define DEFAULT_SLOTS_MAX     1000000
#define DEFAULT_BACKENDS_MAX  1000000
#define DEFAULT_REVNAT_MAX    100000
#define DEFAULT_CT_MAX        786432
#define DEFAULT_FRAG_MAX      8192
#define DEFAULT_SNAT_MAX      262144
#define DEFAULT_AFFINITY_MAX  65536
#define DEFAULT_SRANGE_MAX    16384
#define DEFAULT_MAGLEV_MAX    100000
#define DEFAULT_SOCK_REVNAT_MAX 262144 /* unconnected UDP sockets x backends, like Cilium's */
#define DEFAULT_DSR_REVNAT_MAX 262144 /* DSR flows whose backend runs on this node */

/* Large lookup tables are allocated on demand (BPF_F_NO_PREALLOC): one
 * agent per lab node must not reserve gigabytes for empty tables. */
#define __NOPREALLOC __uint(map_flags, BPF_F_NO_PREALLOC)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb_service);
	__uint(max_entries, DEFAULT_SERVICES_MAX);
	__NOPREALLOC;
} services4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb6_key);
	__type(value, struct lb_service);
	__uint(max_entries, DEFAULT_SERVICES_MAX);
	__NOPREALLOC;
} services6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_slot_key);
	__type(value, struct lb_slot);
	__uint(max_entries, DEFAULT_SLOTS_MAX);
	__NOPREALLOC;
} service_slots SEC(".maps");

struct maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_slot);
	__uint(max_entries, MAGLEV_TABLE_SIZE);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__type(key, __u32); /* service id */
	__uint(max_entries, DEFAULT_MAGLEV_MAX);
	__array(values, struct maglev_inner);
} maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* service id */
	__type(value, struct service_name);
	__uint(max_entries, DEFAULT_SERVICES_MAX);
	__NOPREALLOC;
} service_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* backend id */
	__type(value, struct lb4_backend);
	__uint(max_entries, DEFAULT_BACKENDS_MAX);
	__NOPREALLOC;
} backends4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb6_backend);
	__uint(max_entries, DEFAULT_BACKENDS_MAX);
	__NOPREALLOC;
} backends6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* rev-NAT id */
	__type(value, struct lb4_revnat);
	__uint(max_entries, DEFAULT_REVNAT_MAX);
	__NOPREALLOC;
} revnat4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb6_revnat);
	__uint(max_entries, DEFAULT_REVNAT_MAX);
	__NOPREALLOC;
} revnat6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct ct_entry);
	__uint(max_entries, DEFAULT_CT_MAX);
} ct4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct6_key);
	__type(value, struct ct_entry);
	__uint(max_entries, DEFAULT_CT_MAX);
} ct6 SEC(".maps");

/* DSR receiver: the frontend of each flow delivered here by DSR, keyed by
 * its CT_DIR_REPLY key (abi.h, lib/dsr.h). LRU like conntrack: an entry
 * only matters while the flow's ct entry is alive. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct lb4_revnat);
	__uint(max_entries, DEFAULT_DSR_REVNAT_MAX);
} dsr_revnat4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct6_key);
	__type(value, struct lb6_revnat);
	__uint(max_entries, DEFAULT_DSR_REVNAT_MAX);
} dsr_revnat6 SEC(".maps");

/* XDP fast path (lib/xdp.h): next hops by (ingress device, outer
 * destination), and established DSR flows' encapsulation. LRU caches, so
 * preallocated (~170 bytes an entry): a flow beyond the cache's size only
 * takes the slow path more often; `--map-size xdp_flow4=N` for more. */
#define DEFAULT_XDP_NEXTHOP_MAX 16384
#define DEFAULT_XDP_FLOW_MAX    65536

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct xdp_nh_key);
	__type(value, struct xdp_nexthop);
	__uint(max_entries, DEFAULT_XDP_NEXTHOP_MAX);
} xdp_nexthop SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct xdp_flow);
	__uint(max_entries, DEFAULT_XDP_FLOW_MAX);
} xdp_flow4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct6_key);
	__type(value, struct xdp_flow);
	__uint(max_entries, DEFAULT_XDP_FLOW_MAX);
} xdp_flow6 SEC(".maps");

/* XDP established fast path, first level (lib/xdp.h, abi.h): per-CPU
 * direct-mapped, 128 bytes a slot (512 KiB per CPU). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct xdp_flow_slot);
	__uint(max_entries, XDP_FLOW_CACHE_SLOTS);
} xdp_flow_cache SEC(".maps");

/* Socket LB reverse translation of unconnected UDP (lib/sock.h). LRU: an
 * entry is only needed while its socket lives, and nothing tells the map
 * when a socket closes; sendmsg() rewrites a missing one at the next
 * datagram. (Connected sockets: sock_peer, sk storage, in lib/sock.h.) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sock4_revnat_key);
	__type(value, struct sock4_revnat_entry);
	__uint(max_entries, DEFAULT_SOCK_REVNAT_MAX);
} sock_revnat4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sock6_revnat_key);
	__type(value, struct sock6_revnat_entry);
	__uint(max_entries, DEFAULT_SOCK_REVNAT_MAX);
} sock_revnat6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag4_key);
	__type(value, struct frag4_entry);
	__uint(max_entries, DEFAULT_FRAG_MAX);
} frag4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag6_key);
	__type(value, struct frag6_entry);
	__uint(max_entries, DEFAULT_FRAG_MAX);
} frag6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct snat4_key);
	__type(value, struct snat4_entry);
	__uint(max_entries, DEFAULT_SNAT_MAX);
} snat4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct snat6_key);
	__type(value, struct snat6_entry);
	__uint(max_entries, DEFAULT_SNAT_MAX);
} snat6 SEC(".maps");

/* Working space of the IPv6 SNAT paths (abi.h struct snat6_scratch). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct snat6_scratch);
	__uint(max_entries, 1);
} snat6_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct affinity4_key);
	__type(value, struct affinity_entry);
	__uint(max_entries, DEFAULT_AFFINITY_MAX);
} affinity4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct affinity6_key);
	__type(value, struct affinity_entry);
	__uint(max_entries, DEFAULT_AFFINITY_MAX);
} affinity6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct srange4_key);
	__type(value, struct srange_entry);
	__uint(max_entries, DEFAULT_SRANGE_MAX);
	__NOPREALLOC; /* LPM tries require it */
} source_ranges4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct srange6_key);
	__type(value, struct srange_entry);
	__uint(max_entries, DEFAULT_SRANGE_MAX);
	__NOPREALLOC;
} source_ranges6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct node_config);
	__uint(max_entries, 1);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* METRICS_INDEX(reason, dir) */
	__type(value, struct metrics_value);
	__uint(max_entries, METRICS_MAX);
} metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct icmp_bucket);
	__uint(max_entries, 1);
} icmp_ratelimit SEC(".maps");

/* tc established fast path (lib/flowcache.h, abi.h): per-CPU direct-mapped
 * rewrite cache, and the agent's invalidation epoch. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flow_cache_entry);
	__uint(max_entries, FLOW_CACHE_SLOTS);
} flow_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct flow_epoch);
	__uint(max_entries, 1);
} flow_epoch SEC(".maps");

#endif /* STRAIT_MAPS_H */
