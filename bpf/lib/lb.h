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

/* ---- backend selection ---- */

/*
 * Pick a backend id for a new flow of @svc (backend_count > 0).
 * Returns CONTINUE with *backend_id set, or -DROP_*.
 *
 * Two callers: the tc path with the flow hash above (per packet flow), and
 * socket LB (lib/sock.h) with a hash of the socket and frontend (per socket).
 *
 * Hook point for later issues, in this order, before the hash pick:
 *  - loadBalancerSourceRanges (LB_F_SOURCE_RANGES): source_ranges{4,6}
 *    lookup, drop when not allowed;
 *  - sessionAffinity ClientIP (LB_F_AFFINITY): affinity{4,6} lookup, reuse
 *    a live backend, record the pick below;
 *  - traffic policy Local (LB_F_LOCAL_*) and topology: the agent compiles
 *    these into the slots / Maglev table of the scope, so the datapath stays
 *    a pure lookup.
 * None of them is implemented yet: their flags are ignored here.
 */
static __always_inline int lb_select_backend(const struct lb_service *svc, __u32 hash,
					     __u32 *backend_id)
{
	struct lb_slot *slot;

	if (svc->algorithm == LB_ALG_MAGLEV) {
		__u32 idx = hash % MAGLEV_TABLE_SIZE;
		void *table;

		table = bpf_map_lookup_elem(&maglev, &svc->service_id);
		if (!table)
			return -DROP_BACKEND_MISSING;
		slot = bpf_map_lookup_elem(table, &idx);
	} else if (svc->algorithm == LB_ALG_RANDOM) {
		struct lb_slot_key key = {
			.service_id = svc->service_id,
			.slot = 1 + hash % svc->backend_count,
		};

		slot = bpf_map_lookup_elem(&service_slots, &key);
	} else {
		return -DROP_UNSUPPORTED;
	}
	if (!slot)
		return -DROP_BACKEND_MISSING;
	*backend_id = slot->backend_id;
	return CONTINUE;
}

#endif /* STRAIT_LB_H */
