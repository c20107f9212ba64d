/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * fib.h — sending a packet on ourselves from tc ingress: route lookup,
 * TTL / hop limit, MAC addresses, redirect.
 *
 * Why not hand translated north-south packets back to the stack: after SNAT
 * a packet leaves with the node's own address as source (and a reversed
 * SNAT reply with the frontend's, a node address for NodePorts). The stack
 * refuses to forward a packet arriving with a local source ("martian
 * source", unless accept_local is set on the device), and forwarding it back
 * out of the device it came in on only earns ICMP redirects. So, as Cilium
 * does for NodePort, we look the route up with bpf_fib_lookup() and
 * bpf_redirect() to the egress of the device it names: one hop, no second
 * pass through the stack (nor its netfilter FORWARD chain: like Cilium,
 * strait's north-south traffic does not see the host firewall's forward
 * rules). When the neighbour is not resolved yet, bpf_redirect_neigh() (5.10)
 * lets the kernel resolve it and queue the packet meanwhile.
 *
 * A redirect helper stores its target per CPU and returns TC_ACT_REDIRECT;
 * the outcome reasons that go with it (metrics.h reason_action) return
 * TC_ACT_REDIRECT too, so nothing may call another redirect helper between
 * this and the program's exit.
 *
 * The MTU check is the kernel's: bpf_fib_lookup() with tot_len 0 checks the
 * skb against the egress device (GSO-aware, is_skb_forwardable()).
 *
 * Test hook (STRAIT_TEST_HOOKS): BPF_PROG_TEST_RUN would consult the routes
 * of whatever namespace runs the test; an entry in fib_test replaces the
 * lookup's result (ifindex, MACs, return code), and the lookup's inputs are
 * written back into it for the test to check.
 */
#ifndef STRAIT_FIB_H
#define STRAIT_FIB_H

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "metrics.h"
#include "nat.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#ifdef STRAIT_TEST_HOOKS
struct fib_test_entry {
	__u32 ifindex;     /* result: egress device; 0 = no mock, real lookup */
	__u32 ret;         /* result: BPF_FIB_LKUP_RET_* */
	__u8 smac[6];      /* result */
	__u8 dmac[6];      /* result */
	__u8 src[16];      /* input, written by the program: source address */
	__u8 dst[16];      /* input: destination address */
	__u32 lookups;     /* incremented per lookup */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct fib_test_entry);
	__uint(max_entries, 1);
} fib_test SEC(".maps");

/* Returns 1 and fills @fib when a test mocks the lookup. */
static __always_inline int fib_test_mock(struct bpf_fib_lookup *fib, long *rc)
{
	__u32 zero = 0;
	struct fib_test_entry *t = bpf_map_lookup_elem(&fib_test, &zero);

	if (!t || !t->ifindex)
		return 0;
	if (fib->family == AF_INET6) {
		__builtin_memcpy(t->src, fib->ipv6_src, 16);
		__builtin_memcpy(t->dst, fib->ipv6_dst, 16);
	} else {
		__builtin_memset(t->src, 0, 16);
		__builtin_memset(t->dst, 0, 16);
		__builtin_memcpy(t->src, &fib->ipv4_src, 4);
		__builtin_memcpy(t->dst, &fib->ipv4_dst, 4);
	}
	t->lookups++;
	fib->ifindex = t->ifindex;
	__builtin_memcpy(fib->smac, t->smac, 6);
	__builtin_memcpy(fib->dmac, t->dmac, 6);
	*rc = t->ret;
	return 1;
}
#endif

/*
 * Route @fib (family and addresses filled in, the packet already carrying
 * them) and redirect the packet. Returns CONTINUE with the redirect armed
 * (the caller returns an outcome whose action is TC_ACT_REDIRECT), or
 * -DROP_FIB_LOOKUP: no route, forwarding off, or too big for the egress
 * device.
 */
static __always_inline int fib_redirect(struct __sk_buff *skb, struct bpf_fib_lookup *fib)
{
	long rc = -1;

	/* Look up as a router would for a packet that came in on this
	 * device (flags 0: input route, forwarding must be on there). */
	fib->ifindex = skb->ifindex;
#ifdef STRAIT_TEST_HOOKS
	if (!fib_test_mock(fib, &rc))
#endif
		rc = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);

	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		/* h_dest then h_source: the first 12 bytes, outside skb->csum. */
		if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0))
			return -DROP_CSUM;
		bpf_redirect(fib->ifindex, 0);
		return CONTINUE;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* The kernel routes again and resolves the neighbour. */
		bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
		return CONTINUE;
	}
	return -DROP_FIB_LOOKUP;
}

/*
 * We forward the packet ourselves, so we do the router's TTL work. An
 * expiring packet is dropped and counted; the stack would answer ICMP time
 * exceeded, which for traffic through a Service only tells traceroute users
 * about a hop they cannot address anyway.
 */
static __always_inline int fib4_dec_ttl(struct __sk_buff *skb)
{
	__u32 off = ETH_HLEN + offsetof(struct iphdr, ttl);
	__u8 ttl;

	if (bpf_skb_load_bytes(skb, off, &ttl, 1))
		return -DROP_INVALID_L3;
	if (ttl <= 1)
		return -DROP_TTL_EXCEEDED;
	/* The header checksum sees TTL as the high byte of the word it shares
	 * with the protocol; only the difference matters to the update. */
	if (bpf_l3_csum_replace(skb, IPV4_CSUM_OFF, bpf_htons((__u16)ttl << 8),
				bpf_htons((__u16)(ttl - 1) << 8), 2))
		return -DROP_CSUM;
	ttl--;
	if (bpf_skb_store_bytes(skb, off, &ttl, 1, 0))
		return -DROP_CSUM;
	return CONTINUE;
}

/* IPv6 has no header checksum to balance the change, so a CHECKSUM_COMPLETE
 * skb->csum is updated with it (BPF_F_RECOMPUTE_CSUM). */
static __always_inline int fib6_dec_hop_limit(struct __sk_buff *skb)
{
	__u32 off = ETH_HLEN + offsetof(struct ipv6hdr, hop_limit);
	__u8 hl;

	if (bpf_skb_load_bytes(skb, off, &hl, 1))
		return -DROP_INVALID_L3;
	if (hl <= 1)
		return -DROP_TTL_EXCEEDED;
	hl--;
	if (bpf_skb_store_bytes(skb, off, &hl, 1, BPF_F_RECOMPUTE_CSUM))
		return -DROP_CSUM;
	return CONTINUE;
}

/*
 * Forward the packet, as it now is, toward its destination: TTL, route,
 * MACs, redirect. The addresses are read back from the packet. Not inlined:
 * its lookup structure gets a stack frame of its own, called after the
 * translation's frame is gone (the ingress program's frame, the
 * translation's and this one's must not add up past 512 bytes).
 * Returns CONTINUE (redirect armed) or -DROP_*.
 */
static __noinline int fib4_forward(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	int ret;

	ret = fib4_dec_ttl(skb);
	if (ret != CONTINUE)
		return ret;
	fib.family = AF_INET;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &fib.ipv4_src, 4) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, daddr), &fib.ipv4_dst, 4))
		return -DROP_INVALID_L3;
	return fib_redirect(skb, &fib);
}

static __noinline int fib6_forward(struct __sk_buff *skb)
{
	struct bpf_fib_lookup fib = {};
	int ret;

	ret = fib6_dec_hop_limit(skb);
	if (ret != CONTINUE)
		return ret;
	fib.family = AF_INET6;
	if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), fib.ipv6_src, 16) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, daddr), fib.ipv6_dst, 16))
		return -DROP_INVALID_L3;
	return fib_redirect(skb, &fib);
}

#endif /* STRAIT_FIB_H */
