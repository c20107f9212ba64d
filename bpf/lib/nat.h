/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * nat.h — address and port rewrites with their checksums.
 *
 * Data is written with bpf_skb_store_bytes(), checksums are fixed with
 * bpf_l3_csum_replace() / bpf_l4_csum_replace(). An address is part of the
 * TCP/UDP pseudo-header, so its L4 update carries BPF_F_PSEUDO_HDR: for a
 * CHECKSUM_PARTIAL skb (locally sent, offload pending) the helper then
 * updates the pseudo-header sum the device will finish, and leaves port
 * changes (covered by the device's pass) alone; for CHECKSUM_NONE (what
 * BPF_PROG_TEST_RUN gives) the field is updated exactly; CHECKSUM_COMPLETE
 * keeps skb->csum in step. Folding address and port into one diff would be
 * wrong for CHECKSUM_PARTIAL, hence one call each.
 *
 * IPv6 and CHECKSUM_COMPLETE: with BPF_F_PSEUDO_HDR the helper also takes the
 * address difference off skb->csum, which is right for IPv4 (the header
 * checksum absorbed the address change, the L4 field's change is left) and
 * wrong for IPv6 (no header checksum: address and L4 field changes cancel).
 * Kernel 6.16 added BPF_F_IPV6 for this; older kernels refuse that flag, so
 * the IPv6 paths put the difference back themselves (nat6_complete_fixup()).
 */
#ifndef STRAIT_NAT_H
#define STRAIT_NAT_H

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "abi.h"
#include "metrics.h"
#include "parse.h"

#define SKB_CHECKSUM_COMPLETE 2
#define SKB_CHECKSUM_PARTIAL  3

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* The one field of the kernel's sk_buff we read; CO-RE finds it. */
struct sk_buff___strait {
	__u8 ip_summed : 2;
} __attribute__((preserve_access_index));

/* skb->ip_summed (CHECKSUM_*), which __sk_buff does not show:
 * bpf_cast_to_kern_ctx() (kernel 6.2) costs nothing once verified. */
static __always_inline __u32 skb_ip_summed(struct __sk_buff *skb)
{
	struct sk_buff___strait *k = bpf_cast_to_kern_ctx(skb);

	return BPF_CORE_READ_BITFIELD(k, ip_summed);
}

/* After a BPF_F_PSEUDO_HDR update of an IPv6 L4 checksum by @diff: undo
 * what the helper did to a CHECKSUM_COMPLETE skb->csum (see the top). */
static __always_inline void nat6_complete_fixup(struct __sk_buff *skb, __u32 diff)
{
	if (skb_ip_summed(skb) == SKB_CHECKSUM_COMPLETE)
		bpf_csum_update(skb, diff);
}

#define NAT_DST 0 /* ingress DNAT: daddr / dport */
#define NAT_SRC 1 /* egress reverse NAT: saddr / sport */

#define IPV4_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))

/*
 * Where the L4 checksum lives and the helper flags it needs. Returns 0 when
 * the protocol has no Internet checksum to fix: SCTP's CRC32c covers neither
 * the addresses (no pseudo-header) nor anything we could update
 * incrementally, so an SCTP port change is refused by the callers.
 */
static __always_inline int nat_l4_csum(const struct pkt *p, __u32 *off, __u64 *flags)
{
	switch (p->proto) {
	case IPPROTO_TCP:
		*off = p->l4_off + offsetof(struct tcphdr, check);
		*flags = 0;
		return 1;
	case IPPROTO_UDP:
		/* IPv4 UDP checksum 0 means "none" and must stay 0; a result
		 * of 0 is sent as 0xffff (CSUM_MANGLED_0). */
		*off = p->l4_off + offsetof(struct udphdr, check);
		*flags = BPF_F_MARK_MANGLED_0;
		return 1;
	default:
		return 0;
	}
}

static __always_inline int nat_port(struct __sk_buff *skb, const struct pkt *p, int side,
				    __be16 old, __be16 port)
{
	__u32 off = p->l4_off + (side == NAT_DST ? 2 : 0); /* sport, dport: first 4 bytes */
	__u32 csum_off;
	__u64 flags;

	if (old == port)
		return CONTINUE;
	if (p->proto == IPPROTO_SCTP)
		return -DROP_UNSUPPORTED;
	if (bpf_skb_store_bytes(skb, off, &port, sizeof(port), 0))
		return -DROP_CSUM;
	if (nat_l4_csum(p, &csum_off, &flags) &&
	    bpf_l4_csum_replace(skb, csum_off, old, port, flags | sizeof(port)))
		return -DROP_CSUM;
	return CONTINUE;
}

/* IPv4 address only: later fragments (no L4 header) and the L3 part of
 * nat4_rewrite(). */
static __always_inline int nat4_addr(struct __sk_buff *skb, int side, __be32 old, __be32 addr)
{
	__u32 off = ETH_HLEN + (side == NAT_DST ? offsetof(struct iphdr, daddr)
						: offsetof(struct iphdr, saddr));

	if (bpf_skb_store_bytes(skb, off, &addr, sizeof(addr), 0))
		return -DROP_CSUM;
	if (bpf_l3_csum_replace(skb, IPV4_CSUM_OFF, old, addr, sizeof(addr)))
		return -DROP_CSUM;
	return CONTINUE;
}

/* Rewrite one side (NAT_DST / NAT_SRC) of an IPv4 TCP/UDP/SCTP packet. */
static __always_inline int nat4_rewrite(struct __sk_buff *skb, const struct pkt *p, int side,
					__be32 addr, __be16 port)
{
	__be32 old_addr = side == NAT_DST ? p->daddr.v4 : p->saddr.v4;
	__be16 old_port = side == NAT_DST ? p->dport : p->sport;
	__u32 csum_off;
	__u64 flags;
	int ret;

	/* Refuse before touching anything. */
	if (p->proto == IPPROTO_SCTP && old_port != port)
		return -DROP_UNSUPPORTED;

	if (old_addr != addr) {
		ret = nat4_addr(skb, side, old_addr, addr);
		if (ret != CONTINUE)
			return ret;
		if (nat_l4_csum(p, &csum_off, &flags) &&
		    bpf_l4_csum_replace(skb, csum_off, old_addr, addr,
					flags | BPF_F_PSEUDO_HDR | sizeof(addr)))
			return -DROP_CSUM;
	}
	return nat_port(skb, p, side, old_port, port);
}

static __always_inline int addr6_eq(const void *a, const void *b)
{
	const __u32 *x = a, *y = b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/*
 * IPv6 address only: later fragments (no L4 header) and the L3 part of
 * nat6_rewrite(). IPv6 has no header checksum. @store_flags: nat6_rewrite()
 * passes 0, its pseudo-header update of the L4 checksum balances the change
 * in a CHECKSUM_COMPLETE skb->csum; a later fragment has nothing in it that
 * does and passes BPF_F_RECOMPUTE_CSUM, so skb->csum stays true to the bytes
 * (reassembly adds up the fragments' skb->csum).
 */
static __always_inline int nat6_addr(struct __sk_buff *skb, int side, const __u8 *addr,
				     __u64 store_flags)
{
	__u32 off = ETH_HLEN + (side == NAT_DST ? offsetof(struct ipv6hdr, daddr)
						: offsetof(struct ipv6hdr, saddr));

	if (bpf_skb_store_bytes(skb, off, addr, 16, store_flags))
		return -DROP_CSUM;
	return CONTINUE;
}

/* Rewrite one side of an IPv6 TCP/UDP/SCTP packet. IPv6 has no header
 * checksum; the L4 checksum sees the address through the pseudo-header. */
static __always_inline int nat6_rewrite(struct __sk_buff *skb, const struct pkt *p, int side,
					const __u8 *addr, __be16 port)
{
	const __u8 *old_addr = side == NAT_DST ? p->daddr.v6 : p->saddr.v6;
	__be16 old_port = side == NAT_DST ? p->dport : p->sport;
	__u32 csum_off;
	__u64 flags;
	__s64 diff;
	int ret;

	if (p->proto == IPPROTO_SCTP && old_port != port)
		return -DROP_UNSUPPORTED;

	if (!addr6_eq(old_addr, addr)) {
		diff = bpf_csum_diff((__be32 *)old_addr, 16, (__be32 *)addr, 16, 0);
		if (diff < 0)
			return -DROP_CSUM;
		ret = nat6_addr(skb, side, addr, 0);
		if (ret != CONTINUE)
			return ret;
		/* Size 0: apply the precomputed diff. */
		if (nat_l4_csum(p, &csum_off, &flags)) {
			if (bpf_l4_csum_replace(skb, csum_off, 0, (__u32)diff, flags | BPF_F_PSEUDO_HDR))
				return -DROP_CSUM;
			nat6_complete_fixup(skb, (__u32)diff);
		}
	}
	return nat_port(skb, p, side, old_port, port);
}

#endif /* STRAIT_NAT_H */
