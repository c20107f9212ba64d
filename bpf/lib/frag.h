/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * frag.h — IPv4 fragments after the first follow the first.
 *
 * tc runs before reassembly, so only the first fragment carries the ports
 * the Service lookup and conntrack need. When a first fragment is
 * translated we record {saddr, daddr, id, proto} as it arrived -> the
 * address the rest must get; later fragments (offset > 0) look that up.
 *
 * Limits, on purpose:
 *  - a later fragment without a record (its first not seen yet, reordered,
 *    or not Service traffic at all) is left alone (REASON_PASS_FRAGMENT): we
 *    cannot tell cheaply whether its destination is a frontend, and
 *    dropping it would break non-Service fragments;
 *  - frag4_entry has no deadline field: records live until the LRU evicts
 *    them or the next first fragment with the same key overwrites them
 *    (settings.frag_ns is not used yet);
 *  - IPv6: there is no frag6 map. A first fragment that carries the L4
 *    header is translated like any packet; later IPv6 fragments pass
 *    untranslated (REASON_PASS_FRAGMENT).
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

/* First fragment being translated: remember where the others go. */
static __always_inline int frag4_record(const struct pkt *p, __be32 addr, __u8 rewrite)
{
	struct frag4_key key = {};
	struct frag4_entry entry = {};

	key.saddr = p->saddr.v4;
	key.daddr = p->daddr.v4;
	key.id = p->frag_id;
	key.proto = p->proto;
	entry.addr = addr;
	entry.rewrite = rewrite;
	if (bpf_map_update_elem(&frag4, &key, &entry, BPF_ANY))
		return -DROP_FRAG_FULL;
	return CONTINUE;
}

/* Later fragment: apply the first fragment's rewrite (@rewrite is the kind
 * this direction does: FRAG_REWRITE_DADDR at ingress, _SADDR at egress). */
static __always_inline int frag4_follow(struct __sk_buff *skb, const struct pkt *p, __u8 rewrite)
{
	struct frag4_key key = {};
	struct frag4_entry *entry;
	int ret;

	key.saddr = p->saddr.v4;
	key.daddr = p->daddr.v4;
	key.id = p->frag_id;
	key.proto = p->proto;
	entry = bpf_map_lookup_elem(&frag4, &key);
	if (!entry || entry->rewrite != rewrite)
		return REASON_PASS_FRAGMENT;

	if (rewrite == FRAG_REWRITE_DADDR)
		ret = nat4_addr(skb, NAT_DST, p->daddr.v4, entry->addr);
	else
		ret = nat4_addr(skb, NAT_SRC, p->saddr.v4, entry->addr);
	if (ret != CONTINUE)
		return ret;
	return REASON_FRAG_XLATE;
}

#endif /* STRAIT_FRAG_H */
