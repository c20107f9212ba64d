/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * frag.h — IPv4 and IPv6 fragments after the first follow the first.
 *
 * tc runs before reassembly, so only the first fragment carries the ports
 * the Service lookup and conntrack need. When a first fragment is
 * translated we record {saddr, daddr, id, proto} as it arrived -> the
 * address the rest must get, in frag4 or frag6; later fragments (offset
 * > 0) look that up and get the same address, nothing else:
 *  - IPv4: the header checksum is fixed with the address;
 *  - IPv6: there is no header checksum, and the L4 checksum (whose
 *    pseudo-header covers the address) lives in the first fragment, which
 *    was fixed incrementally with the rest of its translation.
 * The key is the same in every fragment of a datagram: the IPv4
 * identification and protocol, or the IPv6 fragment header's
 * identification and next header (struct pkt frag_id / frag_proto).
 *
 * Limits, on purpose:
 *  - a later fragment without a record (its first not seen yet, reordered,
 *    or not Service traffic at all) is left alone (REASON_PASS_FRAGMENT): we
 *    cannot tell cheaply whether its destination is a frontend, and
 *    dropping it would break non-Service fragments;
 *  - frag{4,6}_entry have no deadline field: records live until the LRU
 *    evicts them or the next first fragment with the same key overwrites
 *    them (settings.frag_ns is not used yet).
 */
#ifndef STRAIT_FRAG_H
#define STRAIT_FRAG_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "maps.h"
#include "metrics.h"
#include "nat.h"
#include "parse.h"

static __always_inline void frag4_key_of(struct frag4_key *key, const struct pkt *p)
{
	key->saddr = p->saddr.v4;
	key->daddr = p->daddr.v4;
	key->id = (__be16)p->frag_id;
	key->proto = p->frag_proto;
}

static __always_inline void frag6_key_of(struct frag6_key *key, const struct pkt *p)
{
	__builtin_memcpy(key->saddr, p->saddr.v6, 16);
	__builtin_memcpy(key->daddr, p->daddr.v6, 16);
	key->id = p->frag_id;
	key->proto = p->frag_proto;
}

/*
 * First fragment being translated: remember where the others go. @to is
 * the replacement address in the packet's family (a whole union: both
 * branches below are verified whatever the family, and each reads only
 * inside it); @rewrite FRAG_REWRITE_DADDR at ingress, _SADDR at egress.
 */
static __always_inline int frag_record(const struct pkt *p, const union strait_addr *to,
				       __u8 rewrite)
{
	long err;

	if (p->family == PKT_IPV6) {
		struct frag6_key key = {};
		struct frag6_entry entry = {};

		frag6_key_of(&key, p);
		__builtin_memcpy(entry.addr, to->v6, 16);
		entry.rewrite = rewrite;
		err = bpf_map_update_elem(&frag6, &key, &entry, BPF_ANY);
	} else {
		struct frag4_key key = {};
		struct frag4_entry entry = {};

		frag4_key_of(&key, p);
		entry.addr = to->v4;
		entry.rewrite = rewrite;
		err = bpf_map_update_elem(&frag4, &key, &entry, BPF_ANY);
	}
	return err ? -DROP_FRAG_FULL : CONTINUE;
}

/* Later fragment: apply the first fragment's rewrite (@rewrite is the kind
 * this direction does: FRAG_REWRITE_DADDR at ingress, _SADDR at egress). */
static __always_inline int frag_follow(struct __sk_buff *skb, const struct pkt *p, __u8 rewrite)
{
	int side = rewrite == FRAG_REWRITE_DADDR ? NAT_DST : NAT_SRC;
	int ret;

	if (p->family == PKT_IPV6) {
		struct frag6_key key = {};
		struct frag6_entry *entry;

		frag6_key_of(&key, p);
		entry = bpf_map_lookup_elem(&frag6, &key);
		if (!entry || entry->rewrite != rewrite)
			return REASON_PASS_FRAGMENT;
		ret = nat6_addr(skb, side, entry->addr, BPF_F_RECOMPUTE_CSUM);
	} else {
		struct frag4_key key = {};
		struct frag4_entry *entry;

		frag4_key_of(&key, p);
		entry = bpf_map_lookup_elem(&frag4, &key);
		if (!entry || entry->rewrite != rewrite)
			return REASON_PASS_FRAGMENT;
		ret = nat4_addr(skb, side, side == NAT_DST ? p->daddr.v4 : p->saddr.v4,
				entry->addr);
	}
	if (ret != CONTINUE)
		return ret;
	return REASON_FRAG_XLATE;
}

#endif /* STRAIT_FRAG_H */
