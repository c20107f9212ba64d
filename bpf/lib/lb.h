/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * lb.h — Service (frontend) lookup and backend selection.
 *
 * The agent computes, the datapath looks up: slot tables and Maglev arrays
 * are built in TypeScript, selection here is one hash and one or two O(1)
 * map lookups.
 */
#ifndef STRAIT_LB_H
#define STRAIT_LB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "maps.h"
#include "metrics.h"
#include "parse.h"
#include "settings.h"

/* ---- flow hash ----
 *
 * Bob Jenkins' lookup3 as the kernel's jhash2() (<linux/jhash.h>), over the
 * 32-bit words of the flow's CT_DIR_SERVICE key (struct ct4_key: 4 words,
 * struct ct6_key: 10 words; dir and pad are 0, so the last word is the
 * protocol), read in host byte order exactly as they lie in memory, with
 * initval = settings.hash_seed. Deterministic per flow: a flow whose CT
 * entry was lost re-selects the same backend while the slots are unchanged.
 * A TypeScript mirror must reproduce this exactly to predict backends.
 */
#define JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

#define __jhash_mix(a, b, c)                                                   \
	{                                                                      \
		a -= c; a ^= rol32(c, 4);  c += b;                             \
		b -= a; b ^= rol32(a, 6);  a += c;                             \
		c -= b; c ^= rol32(b, 8);  b += a;                             \
		a -= c; a ^= rol32(c, 16); c += b;                             \
		b -= a; b ^= rol32(a, 19); a += c;                             \
		c -= b; c ^= rol32(b, 4);  b += a;                             \
	}

#define __jhash_final(a, b, c)                                                 \
	{                                                                      \
		c ^= b; c -= rol32(b, 14);                                     \
		a ^= c; a -= rol32(c, 11);                                     \
		b ^= a; b -= rol32(a, 25);                                     \
		c ^= b; c -= rol32(b, 16);                                     \
		a ^= c; a -= rol32(c, 4);                                      \
		b ^= a; b -= rol32(a, 14);                                     \
		c ^= b; c -= rol32(b, 24);                                     \
	}

/* jhash2(); @length is a compile-time constant at every call site. */
static __always_inline __u32 jhash2(const __u32 *k, __u32 length, __u32 initval)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (length << 2) + initval;
#pragma unroll
	for (; length > 3; length -= 3, k += 3) {
		a += k[0];
		b += k[1];
		c += k[2];
		__jhash_mix(a, b, c);
	}
	switch (length) {
	case 3:
		c += k[2];
		/* fallthrough */
	case 2:
		b += k[1];
		/* fallthrough */
	case 1:
		a += k[0];
		__jhash_final(a, b, c);
		break;
	default:
		break;
	}
	return c;
}

static __always_inline __u32 lb4_flow_hash(const struct ct4_key *key)
{
	return jhash2((const __u32 *)key, sizeof(*key) / 4, settings.hash_seed);
}

static __always_inline __u32 lb6_flow_hash(const struct ct6_key *key)
{
	return jhash2((const __u32 *)key, sizeof(*key) / 4, settings.hash_seed);
}

/* ---- frontend lookup ---- */

static __always_inline struct lb_service *lb4_lookup(__be32 addr, __be16 port, __u8 proto,
						     __u8 scope)
{
	struct lb4_key key = {}; /* hash keys compare bytes: zero everything */

	key.addr = addr;
	key.port = port;
	key.proto = proto;
	key.scope = scope;
	return bpf_map_lookup_elem(&services4, &key);
}

static __always_inline struct lb_service *lb6_lookup(const __u8 *addr, __be16 port, __u8 proto,
						     __u8 scope)
{
	struct lb6_key key = {};

	__builtin_memcpy(key.addr, addr, 16);
	key.port = port;
	key.proto = proto;
	key.scope = scope;
	return bpf_map_lookup_elem(&services6, &key);
}

/* Traffic from outside the cluster (the uplink): the external entry. */
static __always_inline struct lb_service *lb4_lookup_service(const struct pkt *p)
{
	return lb4_lookup(p->daddr.v4, p->dport, p->proto, LB_SCOPE_EXTERNAL);
}

static __always_inline struct lb_service *lb6_lookup_service(const struct pkt *p)
{
	return lb6_lookup(p->daddr.v6, p->dport, p->proto, LB_SCOPE_EXTERNAL);
}

/*
 * Traffic from inside the cluster (pods and host processes, e.g. socket LB):
 * every frontend has an external entry; a Service whose traffic policies
 * select different endpoints for the two scopes (compile.ts) marks it
 * LB_F_TWO_SCOPES and adds an LB_SCOPE_INTERNAL entry, which is the one
 * cluster traffic uses (kube-proxy sends node-local traffic to a NodePort
 * with externalTrafficPolicy: Local to any endpoint, too).
 */
static __always_inline struct lb_service *lb4_lookup_internal(__be32 addr, __be16 port, __u8 proto)
{
	struct lb_service *svc = lb4_lookup(addr, port, proto, LB_SCOPE_EXTERNAL);
	struct lb_service *internal;

	if (!svc || !(svc->flags & LB_F_TWO_SCOPES))
		return svc;
	/* Missing only while the agent is between two writes: the
	 * external entry still reaches endpoints of the Service. */
	internal = lb4_lookup(addr, port, proto, LB_SCOPE_INTERNAL);
	return internal ? internal : svc;
}

static __always_inline struct lb_service *lb6_lookup_internal(const __u8 *addr, __be16 port,
							      __u8 proto)
{
	struct lb_service *svc = lb6_lookup(addr, port, proto, LB_SCOPE_EXTERNAL);
	struct lb_service *internal;

	if (!svc || !(svc->flags & LB_F_TWO_SCOPES))
		return svc;
	/* Missing only while the agent is between two writes: the
	 * external entry still reaches endpoints of the Service. */
	internal = lb6_lookup(addr, port, proto, LB_SCOPE_INTERNAL);
	return internal ? internal : svc;
}

/* ---- loadBalancerSourceRanges ----
 *
 * LB_F_SOURCE_RANGES: the client must lie in one of the ranges compile
 * wrote under the frontend's service id. The LPM key puts the service id
 * before the address and counts its 32 bits in prefixlen (abi.h), so a
 * lookup with the full length only ever matches ranges of this service id.
 */
static __always_inline int lb4_source_allowed(const struct lb_service *svc, __be32 saddr)
{
	struct srange4_key key = {};
	struct srange_entry *r;

	key.prefixlen = 32 + 32;
	key.service_id = svc->service_id;
	key.addr = saddr;
	r = bpf_map_lookup_elem(&source_ranges4, &key);
	return r && r->allow;
}

static __always_inline int lb6_source_allowed(const struct lb_service *svc, const __u8 *saddr)
{
	struct srange6_key key = {};
	struct srange_entry *r;

	key.prefixlen = 32 + 128;
	key.service_id = svc->service_id;
	__builtin_memcpy(key.addr, saddr, 16);
	r = bpf_map_lookup_elem(&source_ranges6, &key);
	return r && r->allow;
}

/* ---- backend selection ---- */

/*
 * The hash pick: a backend id of @svc's slots (or Maglev table) for @hash,
 * and in *pos where it was found (slot 1..count, or Maglev index), which
 * session affinity remembers to check membership in O(1) later.
 * Returns CONTINUE or -DROP_*.
 */
static __always_inline int lb_pick_backend(const struct lb_service *svc, __u32 hash,
					   __u32 *backend_id, __u32 *pos)
{
	struct lb_slot *slot;
	__u32 at;

	if (svc->algorithm == LB_ALG_MAGLEV) {
		void *table;

		at = hash % MAGLEV_TABLE_SIZE;
		table = bpf_map_lookup_elem(&maglev, &svc->service_id);
		if (!table)
			return -DROP_BACKEND_MISSING;
		slot = bpf_map_lookup_elem(table, &at);
	} else if (svc->algorithm == LB_ALG_RANDOM) {
		struct lb_slot_key key = {};

		at = 1 + hash % svc->backend_count;
		key.service_id = svc->service_id;
		key.slot = at;
		slot = bpf_map_lookup_elem(&service_slots, &key);
	} else {
		return -DROP_UNSUPPORTED;
	}
	if (!slot)
		return -DROP_BACKEND_MISSING;
	*backend_id = slot->backend_id;
	*pos = at;
	return CONTINUE;
}

/*
 * Pick a backend id for a new flow of @svc (backend_count > 0) where the
 * client is not known: the hash pick only. Returns CONTINUE with
 * *backend_id set, or -DROP_*.
 *
 * A Service with sessionAffinity (LB_F_AFFINITY) is refused with
 * -DROP_UNSUPPORTED: its selection needs the client, through
 * lb{4,6}_select_backend(). (The XDP fast path calls this one and hands
 * such flows to tc, which does affinity.)
 *
 * Traffic policy Local and topology are no selection matter: the agent
 * compiles them into the slots / Maglev table of the scope, so the
 * datapath stays a pure lookup. loadBalancerSourceRanges neither: callers
 * check lb{4,6}_source_allowed() before any other work on the packet.
 */
static __always_inline int lb_select_backend(const struct lb_service *svc, __u32 hash,
					     __u32 *backend_id)
{
	__u32 pos;

	if (svc->flags & LB_F_AFFINITY)
		return -DROP_UNSUPPORTED;
	return lb_pick_backend(svc, hash, backend_id, &pos);
}

/* ---- sessionAffinity: ClientIP ----
 *
 * affinity{4,6} (LRU) remember per (service id, client) the backend the
 * client's last new flow got. The tc path keys on the client address
 * (netns cookie 0); socket LB on the client's network namespace cookie
 * (address zero), see lib/sock.h. A new flow reuses the remembered backend
 * while
 *  - the entry is younger than the frontend's affinity_timeout, counted
 *    from the last new flow that used it (kube-proxy's iptables `recent
 *    --rcheck --seconds T --reap` with `--set` on every new connection):
 *    each reuse refreshes last_used;
 *  - the backend is still selectable for this Service: its backends entry
 *    exists and is not quarantined, and the Service's slots still hold it.
 *    Backend ids are shared between Services (compile/ids.ts) and the
 *    backend's state merges them, so the state alone cannot say whether
 *    *this* Service still selects it (removed from one Service, ready in
 *    another; out of a topology-filtered table); membership in the slots
 *    can, and slots hold terminating backends exactly when those are what
 *    the Service selects (KEP-1669). The entry keeps the slot it was found
 *    at (affinity_entry.slot): one lookup when the slots did not move; a
 *    slot table that moved (the agent fills a hole with the last slot) is
 *    searched, up to AFFINITY_SCAN_MAX slots, with bpf_loop(); a Maglev
 *    table is not searched (a changed index re-selects).
 * Otherwise the flow selects by hash and the entry is (re)written. Two new
 * flows of one client on two CPUs at once may both select: the last write
 * wins, as with iptables' recent list.
 * Service ids are per endpoint set, so a Service's ClusterIP, NodePorts and
 * load-balancer addresses share the client's entry, as kube-proxy's chain
 * per endpoint does.
 */
#define AFFINITY_SCAN_MAX 4096
#define AFFINITY_DEFAULT_TIMEOUT 10800 /* seconds: Kubernetes' default, if 0 slipped in */

struct lb_slot_scan {
	__u32 service_id;
	__u32 backend_id;
	__u32 found; /* the slot holding backend_id, 0 = none */
};

static long lb_slot_scan_one(__u32 i, void *data)
{
	struct lb_slot_scan *sc = data;
	struct lb_slot_key key = {};
	struct lb_slot *slot;

	key.service_id = sc->service_id;
	key.slot = i + 1;
	slot = bpf_map_lookup_elem(&service_slots, &key);
	if (slot && slot->backend_id == sc->backend_id) {
		sc->found = i + 1;
		return 1; /* stop */
	}
	return 0;
}

/*
 * Does @svc still select backend @a->backend_id? Refreshes a->slot when the
 * slot table moved it.
 */
static __always_inline int lb_affinity_member(const struct lb_service *svc,
					      struct affinity_entry *a)
{
	struct lb_slot *slot;

	if (svc->algorithm == LB_ALG_RANDOM) {
		struct lb_slot_key key = {};
		struct lb_slot_scan sc = {};
		__u32 n = svc->backend_count;

		if (a->slot >= 1 && a->slot <= n) {
			key.service_id = svc->service_id;
			key.slot = a->slot;
			slot = bpf_map_lookup_elem(&service_slots, &key);
			if (slot && slot->backend_id == a->backend_id)
				return 1;
		}
		sc.service_id = svc->service_id;
		sc.backend_id = a->backend_id;
		bpf_loop(n < AFFINITY_SCAN_MAX ? n : AFFINITY_SCAN_MAX, lb_slot_scan_one, &sc, 0);
		if (!sc.found)
			return 0;
		a->slot = sc.found;
		return 1;
	}
	if (svc->algorithm == LB_ALG_MAGLEV) {
		__u32 idx = a->slot;
		void *table;

		if (idx >= MAGLEV_TABLE_SIZE)
			return 0;
		table = bpf_map_lookup_elem(&maglev, &svc->service_id);
		if (!table)
			return 0;
		slot = bpf_map_lookup_elem(table, &idx);
		return slot && slot->backend_id == a->backend_id;
	}
	return 0;
}

/* Is the remembered entry @a of @svc young enough at @now? */
static __always_inline int lb_affinity_fresh(const struct lb_service *svc,
					     const struct affinity_entry *a, __u64 now)
{
	__u64 timeout = svc->affinity_timeout ? svc->affinity_timeout : AFFINITY_DEFAULT_TIMEOUT;

	/* A last use "after" now (another CPU, the coarse clock) is fresh. */
	return a->last_used >= now || now - a->last_used <= timeout * 1000000000ULL;
}

/*
 * The affinity step shared by both families: @a the client's entry (or
 * NULL), @be_ok whether its backend entry exists and is not quarantined.
 * Returns 1 with *backend_id set when the entry is reused (and refreshed),
 * 0 when the caller must select and record.
 */
static __always_inline int lb_affinity_reuse(const struct lb_service *svc,
					     struct affinity_entry *a, int be_ok, __u64 now,
					     __u32 *backend_id)
{
	if (!a || !be_ok || !lb_affinity_fresh(svc, a, now) || !lb_affinity_member(svc, a))
		return 0;
	a->last_used = now;
	*backend_id = a->backend_id;
	return 1;
}

/* Not inlined: the affinity key gets a frame of its own, off the ingress
 * program's tight one (lib/snat.h). */
static __noinline int lb4_affinity_select(const struct lb_service *svc, __u32 hash,
					  __u64 netns_cookie, __be32 client, __u32 *backend_id)
{
	struct affinity4_key key = {};
	struct affinity_entry fresh = {};
	struct affinity_entry *a;
	struct lb4_backend *be = NULL;
	__u64 now = bpf_ktime_get_coarse_ns();
	__u32 pos = 0;
	int ret;

	key.netns_cookie = netns_cookie;
	key.service_id = svc->service_id;
	key.client = client;
	a = bpf_map_lookup_elem(&affinity4, &key);
	if (a)
		be = bpf_map_lookup_elem(&backends4, &a->backend_id);
	if (lb_affinity_reuse(svc, a, be && be->state != BE_STATE_QUARANTINED, now, backend_id))
		return CONTINUE;

	ret = lb_pick_backend(svc, hash, backend_id, &pos);
	if (ret != CONTINUE)
		return ret;
	fresh.last_used = now;
	fresh.backend_id = *backend_id;
	fresh.slot = pos;
	/* Best effort: without the entry this flow is still served (LRU
	 * inserts do not fail for lack of room). */
	bpf_map_update_elem(&affinity4, &key, &fresh, BPF_ANY);
	return CONTINUE;
}

static __noinline int lb6_affinity_select(const struct lb_service *svc, __u32 hash,
					  __u64 netns_cookie, const __u8 *client, __u32 *backend_id)
{
	struct affinity6_key key = {};
	struct affinity_entry fresh = {};
	struct affinity_entry *a;
	struct lb6_backend *be = NULL;
	__u64 now = bpf_ktime_get_coarse_ns();
	__u32 pos = 0;
	int ret;

	key.netns_cookie = netns_cookie;
	key.service_id = svc->service_id;
	__builtin_memcpy(key.client, client, 16);
	a = bpf_map_lookup_elem(&affinity6, &key);
	if (a)
		be = bpf_map_lookup_elem(&backends6, &a->backend_id);
	if (lb_affinity_reuse(svc, a, be && be->state != BE_STATE_QUARANTINED, now, backend_id))
		return CONTINUE;

	ret = lb_pick_backend(svc, hash, backend_id, &pos);
	if (ret != CONTINUE)
		return ret;
	fresh.last_used = now;
	fresh.backend_id = *backend_id;
	fresh.slot = pos;
	bpf_map_update_elem(&affinity6, &key, &fresh, BPF_ANY);
	return CONTINUE;
}

/*
 * Pick a backend id for a new flow of @svc (backend_count > 0), honouring
 * sessionAffinity: ClientIP. The client is @client (tc: the source
 * address, @netns_cookie 0) or @netns_cookie (socket LB: its network
 * namespace, @client zero). @hash: the flow hash (tc) or socket hash
 * (lib/sock.h). Returns CONTINUE with *backend_id set, or -DROP_*.
 */
static __always_inline int lb4_select_backend(const struct lb_service *svc, __u32 hash,
					      __u64 netns_cookie, __be32 client,
					      __u32 *backend_id)
{
	__u32 pos;

	if (svc->flags & LB_F_AFFINITY)
		return lb4_affinity_select(svc, hash, netns_cookie, client, backend_id);
	return lb_pick_backend(svc, hash, backend_id, &pos);
}

static __always_inline int lb6_select_backend(const struct lb_service *svc, __u32 hash,
					      __u64 netns_cookie, const __u8 *client,
					      __u32 *backend_id)
{
	__u32 pos;

	if (svc->flags & LB_F_AFFINITY)
		return lb6_affinity_select(svc, hash, netns_cookie, client, backend_id);
	return lb_pick_backend(svc, hash, backend_id, &pos);
}

#endif /* STRAIT_LB_H */
