/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ctx.h — one code path for tc (struct __sk_buff) and XDP (struct xdp_md)
 * programs, as Cilium's __ctx_buff: a program file that defines STRAIT_XDP
 * before its first include gets the XDP flavour of every helper below, any
 * other gets the skb one. Headers written against these helpers (parse.h,
 * lb.h, conntrack.h, the shared part of dsr.h) then compile into both.
 *
 * XDP frames are linear here: the programs are loaded without
 * BPF_F_XDP_HAS_FRAGS, so the kernel refuses them on a device whose MTU
 * needs multi-buffer frames, and data..data_end is the whole packet.
 */
#ifndef STRAIT_CTX_H
#define STRAIT_CTX_H

#include <stddef.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifdef STRAIT_XDP
#define __ctx_buff xdp_md
#else
#define __ctx_buff __sk_buff
#endif

/*
 * ctx->data / ctx->data_end as one load straight off the ctx register each
 * time. Plain C lets clang keep &ctx->data_end in a register and load
 * through it later, which the verifier refuses ("dereference of modified
 * ctx ptr"); which code shape triggers it changes with every edit.
 */
static __always_inline void *ctx_data(const struct __ctx_buff *ctx)
{
	void *ptr;

	asm volatile("%0 = *(u32 *)(%1 + %2)"
		     : "=r"(ptr)
		     : "r"(ctx), "i"(offsetof(struct __ctx_buff, data)));
	return ptr;
}

static __always_inline void *ctx_data_end(const struct __ctx_buff *ctx)
{
	void *ptr;

	asm volatile("%0 = *(u32 *)(%1 + %2)"
		     : "=r"(ptr)
		     : "r"(ctx), "i"(offsetof(struct __ctx_buff, data_end)));
	return ptr;
}

/* Packet length from the Ethernet header on. */
static __always_inline __u32 ctx_len(const struct __ctx_buff *ctx)
{
#ifdef STRAIT_XDP
	return (__u32)(ctx_data_end(ctx) - ctx_data(ctx));
#else
	return ctx->len;
#endif
}

/* The device the packet arrived on (tc ingress) or is on (tc egress). */
static __always_inline __u32 ctx_ifindex(const struct __ctx_buff *ctx)
{
#ifdef STRAIT_XDP
	return ctx->ingress_ifindex;
#else
	return ctx->ifindex;
#endif
}

/* A GSO packet (tc only: XDP frames are single packets): its segments, not
 * its length, meet the MTU. */
static __always_inline int ctx_is_gso(const struct __ctx_buff *ctx)
{
#ifdef STRAIT_XDP
	return 0;
#else
	return ctx->gso_size != 0;
#endif
}

/*
 * Make sure the first @len bytes are in the linear head so direct packet
 * access reaches them (GRO'd skbs may carry headers in frags; an XDP frame
 * is all head). Returns -1 only when the packet is shorter than @len.
 * Callers reload data/data_end afterwards: a pull invalidates packet
 * pointers.
 */
static __always_inline int ctx_pull(struct __ctx_buff *ctx, __u32 len)
{
	if (ctx_data(ctx) + len <= ctx_data_end(ctx))
		return 0;
#ifdef STRAIT_XDP
	return -1;
#else
	if (len > ctx->len)
		return -1;
	return bpf_skb_pull_data(ctx, len) ? -1 : 0;
#endif
}

/* Copy @len packet bytes at @off to @to (bpf_xdp_load_bytes: 5.18). */
static __always_inline long ctx_load_bytes(struct __ctx_buff *ctx, __u32 off, void *to, __u32 len)
{
#ifdef STRAIT_XDP
	return bpf_xdp_load_bytes(ctx, off, to, len);
#else
	return bpf_skb_load_bytes(ctx, off, to, len);
#endif
}

#endif /* STRAIT_CTX_H */
