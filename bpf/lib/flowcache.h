/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * flowcache.h — the tc established fast path: one per-CPU slot read and a
 * rewrite by direct packet access, instead of the frontend, conntrack and
 * backend lookups and five store/checksum helper calls.
 *
 * flow_cache (abi.h) is a per-CPU direct-mapped array: slot = hash of the
 * packet's tuple, hook and device; the slot holds the tuple it was made for
 * (compared in full), the rewrite (new address and port, their checksum
 * differences precomputed) and what makes it valid. The full path
 * (lib/uplink.h) fills a slot after translating a packet of an established,
 * plainly DNATed flow (no SNAT, DSR or fragments) at ingress, or reverse-NATing
 * one of its replies at egress; the next packets of the flow on this CPU hit
 * it. A collision only evicts: the loser takes the full path, as before.
 *
 * A slot stands for the full path only while that path would do exactly the
 * same, which is what the three checks of a hit bound:
 *  - the maps: `epoch` must equal flow_epoch, which the agent bumps after
 *    every write to the Service maps or conntrack flush (Dataplane
 *    bumpFlowEpoch). A removed Service, backend or source range, or a
 *    flushed flow, reaches every cached flow at once. The epoch is read
 *    before the full path's lookups and stored with what they found, so a
 *    slot filled from maps older than a bump is never valid after it.
 *  - conntrack: `valid_until` ends before ct_touch() would next write the
 *    entry (its deadline moving by more than CT_REFRESH_NS), at the entry's
 *    deadline, and at most FLOW_CACHE_TTL_NS after the fill; a packet whose
 *    TCP flags ct_touch() would record (SYN, FIN, RST, a flag not seen yet, a
 *    state change) misses. So skipping conntrack changes no conntrack state
 *    (the same argument as lib/xdp.h's xdp_flow).
 *  - the packet: TCP or UDP with ports, not a fragment, headers in the
 *    linear area, the same device.
 *
 * Checksums by hand need the skb's ip_summed, which the helpers read for
 * themselves (nat.h): it comes from the kernel's sk_buff through
 * bpf_cast_to_kern_ctx() (kernel 6.2) and a CO-RE bitfield read. Per mode,
 * as inet_proto_csum_replace*() does: the IPv4 header checksum always; the
 * L4 checksum with address and port differences (NONE, UNNECESSARY,
 * COMPLETE) or, for CHECKSUM_PARTIAL, the address difference only into the
 * pseudo-header sum the device completes; skb->csum of a COMPLETE IPv4
 * packet loses the address difference the L4 field took (IPv6 has no header
 * checksum, so its bytes sum to what they did: nothing to do). A UDP
 * checksum of 0 (none) stays 0, a computed 0 is sent as 0xffff.
 */
#ifndef STRAIT_FLOWCACHE_H
#define STRAIT_FLOWCACHE_H

#ifdef STRAIT_XDP
#error "lib/flowcache.h is for tc programs"
#endif

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "conntrack.h"
#include "csum.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"
#include "settings.h"

#define FLOW_CACHE_TTL_NS NSEC_PER_SEC
/* The largest L4 offset a hit handles (IPv4 options, IPv6 extension
 * headers beyond it take the full path): a bound for the verifier. */
#define FLOW_L4_OFF_MAX 255

/* Can the fast path carry this packet at all? */
static __always_inline int flow_cacheable(const struct pkt *p)
{
	if (p->flags & (PKT_F_FRAG_FIRST | PKT_F_FRAG_LATER | PKT_F_L4_SHORT))
		return 0;
	if (!(p->flags & PKT_F_HAS_PORTS) || p->l4_off > FLOW_L4_OFF_MAX)
		return 0;
	return p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP;
}

static __always_inline __u32 flow_cache_index(const struct pkt *p, __u8 hook, __u32 ifindex)
{
	return flow_slot_hash(p, hook, ifindex, p->family == PKT_IPV6, FLOW_CACHE_BITS);
}

static __always_inline int flow_key_eq(const struct flow_cache_entry *f, const struct pkt *p,
				       __u8 hook, __u32 ifindex)
{
	return f->hook == hook && f->ifindex == ifindex && f->sport == p->sport &&
	       f->dport == p->dport && f->proto == p->proto && f->family == p->family &&
	       f->saddr[0] == p->saddr.w[0] && f->daddr[0] == p->daddr.w[0] &&
	       f->saddr[1] == p->saddr.w[1] && f->daddr[1] == p->daddr.w[1] &&
	       f->saddr[2] == p->saddr.w[2] && f->daddr[2] == p->daddr.w[2] &&
	       f->saddr[3] == p->saddr.w[3] && f->daddr[3] == p->daddr.w[3];
}

/*
 * Apply slot @f's rewrite to @skb by direct packet access. @f matched the
 * packet's tuple, so the addresses, ports and protocol are the ones it was
 * made for. Returns 0, or -1 (nothing written) when the headers are not in
 * the linear area: the full path takes the packet.
 */
static __always_inline int flow_rewrite(struct __sk_buff *skb, const struct pkt *p,
					const struct flow_cache_entry *f, __u8 hook)
{
	void *data = ctx_data(skb);
	void *data_end = ctx_data_end(skb);
	__u32 l4_off = p->l4_off & FLOW_L4_OFF_MAX;
	__u32 summed = skb_ip_summed(skb);
	__u16 *l4 = data + l4_off;
	__u16 *check;
	__u32 sum;

	if (p->proto == IPPROTO_TCP) {
		if ((void *)l4 + sizeof(struct tcphdr) > data_end)
			return -1;
		check = (void *)l4 + offsetof(struct tcphdr, check);
	} else {
		if ((void *)l4 + sizeof(struct udphdr) > data_end)
			return -1;
		check = (void *)l4 + offsetof(struct udphdr, check);
	}

	if (p->family == PKT_IPV4) {
		struct iphdr *ip = data + ETH_HLEN;

		if ((void *)(ip + 1) > data_end)
			return -1;
		if (hook == FLOW_HOOK_TC_INGRESS)
			ip->daddr = f->addr[0];
		else
			ip->saddr = f->addr[0];
		ip->check = csum_fold(csum_add((__u16)~ip->check, f->addr_diff));
	} else {
		struct ipv6hdr *ip6 = data + ETH_HLEN;
		__u32 *a;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		a = hook == FLOW_HOOK_TC_INGRESS ? (__u32 *)&ip6->daddr : (__u32 *)&ip6->saddr;
		a[0] = f->addr[0];
		a[1] = f->addr[1];
		a[2] = f->addr[2];
		a[3] = f->addr[3];
	}

	/* As bpf_l4_csum_replace() with BPF_F_MARK_MANGLED_0 for UDP: a UDP
	 * checksum of 0 means none and is left alone, in every mode. */
	if (p->proto == IPPROTO_TCP || *check != 0) {
		if (summed == SKB_CHECKSUM_PARTIAL) {
			/* The field holds the pseudo-header sum (not inverted):
			 * only the address is in it. */
			sum = csum_add(*check, f->addr_diff);
			*check = (__u16)~csum_fold(sum);
		} else {
			sum = csum_add(csum_add((__u16)~*check, f->addr_diff), f->port_diff);
			*check = csum_fold(sum);
			if (summed == SKB_CHECKSUM_COMPLETE && p->family == PKT_IPV4)
				bpf_csum_update(skb, ~f->addr_diff);
		}
		if (p->proto == IPPROTO_UDP && *check == 0)
			*check = 0xffff;
	}
	if (hook == FLOW_HOOK_TC_INGRESS)
		l4[1] = f->port; /* dport */
	else
		l4[0] = f->port; /* sport */
	return 0;
}

/*
 * The fast path: find @p's slot; on a hit apply it and return 1. On a miss
 * return 0 with p->flow_epoch read for flow_cache_fill(). (The slot is
 * looked up again there rather than kept: the ingress call chain has no 8
 * bytes of stack to spare.)
 */
static __always_inline int flow_cache_try(struct __sk_buff *skb, struct pkt *p, __u8 hook)
{
	struct flow_cache_entry *f;
	__u32 index;

	if (!flow_cacheable(p))
		return 0;
	p->flow_epoch = flow_epoch_now();
	index = flow_cache_index(p, hook, skb->ifindex);
	f = bpf_map_lookup_elem(&flow_cache, &index);
	if (!f)
		return 0;
	if (!flow_key_eq(f, p, hook, skb->ifindex) || f->epoch != p->flow_epoch ||
	    !ct_covers(f->ct_flags, f->tcp_seen, p->proto, p->tcp_flags) ||
	    ct_now() >= f->valid_until)
		return 0;
	return flow_rewrite(skb, p, f, hook) == 0;
}

/*
 * After the full path translated @p, a packet of the established flow whose
 * conntrack entry (this direction's) is @e, to @addr:@port: make @p's slot
 * stand for it, under the epoch flow_cache_try() read. @family: the caller's
 * (a constant: @addr has 4 bytes for PKT_IPV4, 16 for PKT_IPV6).
 */
static __always_inline void flow_cache_fill(struct __sk_buff *skb, const struct pkt *p, int family,
					    __u8 hook, const struct ct_entry *e, const void *addr,
					    __be16 port, __u64 now)
{
	__u32 index = flow_cache_index(p, hook, skb->ifindex);
	struct flow_cache_entry *f;
	const __u32 *old = hook == FLOW_HOOK_TC_INGRESS ? p->daddr.w : p->saddr.w;
	__be16 old_port = hook == FLOW_HOOK_TC_INGRESS ? p->dport : p->sport;
	const __u32 *a = addr;
	__u64 lifetime = ct_lifetime(p->proto, e->flags);
	__u64 until = now + FLOW_CACHE_TTL_NS;
	__u32 diff;

	if (!flow_cacheable(p))
		return;
	f = bpf_map_lookup_elem(&flow_cache, &index);
	if (!f)
		return;
	if (e->expires + CT_REFRESH_NS - lifetime < until)
		until = e->expires + CT_REFRESH_NS - lifetime;
	if (e->expires < until)
		until = e->expires;

	f->saddr[0] = p->saddr.w[0];
	f->saddr[1] = p->saddr.w[1];
	f->saddr[2] = p->saddr.w[2];
	f->saddr[3] = p->saddr.w[3];
	f->daddr[0] = p->daddr.w[0];
	f->daddr[1] = p->daddr.w[1];
	f->daddr[2] = p->daddr.w[2];
	f->daddr[3] = p->daddr.w[3];
	f->sport = p->sport;
	f->dport = p->dport;
	f->proto = p->proto;
	f->hook = hook;
	f->family = family;
	f->tcp_seen = e->tcp_flags;
	f->ifindex = skb->ifindex;
	f->ct_flags = e->flags;
	f->port = port;
	if (family == PKT_IPV4) {
		f->addr[0] = a[0];
		f->addr[1] = 0;
		f->addr[2] = 0;
		f->addr[3] = 0;
		diff = csum_add(~old[0], a[0]);
	} else {
		f->addr[0] = a[0];
		f->addr[1] = a[1];
		f->addr[2] = a[2];
		f->addr[3] = a[3];
		diff = csum_add(csum_add(~old[0], a[0]), csum_add(~old[1], a[1]));
		diff = csum_add(diff, csum_add(csum_add(~old[2], a[2]), csum_add(~old[3], a[3])));
	}
	f->addr_diff = diff;
	f->port_diff = csum_add((__u16)~old_port, port);
	f->epoch = p->flow_epoch;
	f->valid_until = until;
}

#endif /* STRAIT_FLOWCACHE_H */
