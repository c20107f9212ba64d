/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * xdp.h — the XDP fast path of a node's uplink (`strait agent --xdp`):
 * before an skb exists, per family:
 *   - frontend lookup;
 *   - loadBalancerSourceRanges: a client outside the ranges is dropped
 *     (DROP_SOURCE_RANGE), as tc would (lib/uplink.h);
 *   - DSR: a packet of a DSR flow to a backend on another node is
 *     encapsulated and sent back out (XDP_TX) or to the device the route
 *     names (bpf_redirect), with the conntrack entry tc would make.
 * Everything else goes on to tc with XDP_PASS: other frontends, local
 * backends, SNAT, flows tc owns, new flows whose route or neighbour is not
 * known (tc redirects through the neighbour subsystem), packets too big once
 * encapsulated (tc answers them with ICMP), fragments, ICMP, malformed
 * packets (tc counts them). So XDP is an accelerator: with it off, tc does
 * all of this and the outcome is the same.
 *
 * Counting: a packet passed to tc is counted there, once; XDP counts only
 * what it finishes, under METRIC_DIR_INGRESS: REASON_XDP_DSR_ENCAP (its own
 * reason, so the metrics show how much XDP takes off tc's hands) and drops.
 *
 * Conntrack is the same as tc's (lib/dsr.h): the SERVICE entry {C, F, cp,
 * fp} with CT_F_DSR, backend chosen with the same flow hash and slots (a
 * flow XDP passes is given the same backend by tc). XDP only creates an
 * entry for a flow it sends itself, and only joins flows already flagged
 * CT_F_DSR; a flow tc tracks without the flag stays with tc.
 */
#ifndef STRAIT_XDP_H
#define STRAIT_XDP_H

#ifndef STRAIT_XDP
#error "lib/xdp.h is for XDP programs: define STRAIT_XDP before any include"
#endif

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"
#include "conntrack.h"
#include "ctx.h"
#include "dsr.h"
#include "lb.h"
#include "maps.h"
#include "metrics.h"
#include "parse.h"

/* Count what XDP finished and return its action; REASON_PASS goes to tc
 * uncounted (tc counts it). @act: XDP_TX or XDP_REDIRECT for outcomes. */
static __always_inline int xdp_exit(int ret, int act, __u32 bytes)
{
	__u32 reason;

	if (ret == REASON_PASS)
		return XDP_PASS;
	if (ret < 0) {
		reason = -ret;
		if (reason >= METRIC_REASONS)
			reason = REASON_UNSPEC;
		metrics_count(reason, METRIC_DIR_INGRESS, bytes);
		return XDP_DROP;
	}
	reason = ret;
	if (reason >= METRIC_REASONS)
		reason = REASON_UNSPEC;
	metrics_count(reason, METRIC_DIR_INGRESS, bytes);
	return reason == REASON_XDP_DSR_ENCAP ? act : XDP_PASS;
}

/* Where the frame goes once encapsulated: back out of its own device
 * (XDP_TX, the cheap case: one uplink) or to another one. */
static __always_inline int xdp_send_action(struct xdp_md *ctx, __u32 ifindex)
{
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(ifindex, 0);
}

/* May XDP take a new flow of @svc to @be? The tc rule (lib/uplink.h
 * lb_north_south_remote + lib/dsr.h dsr_wanted) and the port rule. */
static __always_inline int xdp_dsr_new_flow(const struct lb_service *svc, __u8 be_flags,
					    __be16 be_port, __be16 dport)
{
	if (svc->flags & LB_F_LOCAL_EXTERNAL)
		return 0;
	return be_port == dport && dsr_wanted(svc, be_flags);
}

/* The first checks of both families: is this a packet XDP could finish? */
static __always_inline int xdp_candidate(const struct pkt *p)
{
	if (p->flags & (PKT_F_FRAG_FIRST | PKT_F_FRAG_LATER | PKT_F_L4_SHORT))
		return 0;
	if (!(p->flags & PKT_F_HAS_PORTS))
		return 0;
	/* Remote SCTP is refused by tc; leave it to tc to say so. */
	return p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP;
}

#ifdef DSR_RESTORE_HOOK
/*
 * Benchmarks only (bench/xdp.ts, dsr_test.restore set): BPF_PROG_TEST_RUN's
 * repeat mode runs the program again on the frame the previous run left
 * behind, so after one encapsulation every repeat would take another path.
 * This puts an encapsulated frame back as it came — outer header off, the
 * original Ethernet header back — so each repeat is the same established
 * packet; its cost is part of what the bench measures (an upper bound).
 */
static __always_inline void xdp_bench_restore(struct xdp_md *ctx, const struct ethhdr *orig,
					      int overhead)
{
	struct ethhdr *eth;
	void *data, *data_end;

	if (!dsr_test_restore() || bpf_xdp_adjust_head(ctx, overhead))
		return;
	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return;
	__builtin_memcpy(eth, orig, sizeof(*eth));
}
#define XDP_BENCH_SAVE(ctx, saved)                                                      \
	do {                                                                           \
		struct ethhdr *__e = ctx_data(ctx);                                    \
		if ((void *)(__e + 1) <= ctx_data_end(ctx))                            \
			__builtin_memcpy(&(saved), __e, sizeof(saved));                \
	} while (0)
#define XDP_BENCH_RESTORE(ctx, saved, overhead) xdp_bench_restore(ctx, &(saved), overhead)
#else
#define XDP_BENCH_SAVE(ctx, saved) do { } while (0)
#define XDP_BENCH_RESTORE(ctx, saved, overhead) do { } while (0)
#endif

/* ---------------------------------------------------------------- IPv4 */

/* Push the outer header in front of the inner packet and set the MACs. */
static __always_inline int xdp4_encap(struct xdp_md *ctx, const struct pkt *p,
				      const struct bpf_fib_lookup *fib, __be32 saddr, __be32 daddr)
{
	struct iphdr outer;
	struct ethhdr *eth;
	struct iphdr *ip;
	void *data, *data_end;
	__u8 tos;
#ifdef DSR_RESTORE_HOOK
	struct ethhdr saved = {};
#endif

	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return -DROP_INVALID_L3;
	tos = ip->tos;
	dsr4_outer(&outer, saddr, daddr, p->l3_len, tos);
	XDP_BENCH_SAVE(ctx, saved);

	if (bpf_xdp_adjust_head(ctx, -(int)DSR4_OVERHEAD))
		return -DROP_DSR_ENCAP;
	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	eth = data;
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return -DROP_DSR_ENCAP; /* cannot happen: the frame only grew */
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	__builtin_memcpy(ip, &outer, sizeof(outer));
	XDP_BENCH_RESTORE(ctx, saved, DSR4_OVERHEAD);
	return REASON_XDP_DSR_ENCAP;
}

static __always_inline int xdp4_ingress(struct xdp_md *ctx, struct pkt *p, int *act)
{
	/* Aligned: the flow hash reads it as 32-bit words. */
	struct ct4_key key __attribute__((aligned(8))) = {};
	struct bpf_fib_lookup fib;
	struct lb_service *svc;
	struct lb4_backend *be;
	struct ct_entry entry;
	struct ct_entry *e;
	__be32 saddr = 0;
	__u32 backend_id;
	__u64 now;
	int ret;

	if (!xdp_candidate(p))
		return REASON_PASS;
	svc = lb4_lookup_service(p);
	if (!svc)
		return REASON_PASS;
	if ((svc->flags & LB_F_SOURCE_RANGES) && !lb4_source_allowed(svc, p->saddr.v4))
		return -DROP_SOURCE_RANGE;
	if (!(svc->flags & LB_F_DSR) || svc->kind == LB_KIND_CLUSTER_IP)
		return REASON_PASS;

	key.saddr = p->saddr.v4;
	key.daddr = p->daddr.v4;
	key.sport = p->sport;
	key.dport = p->dport;
	key.proto = p->proto;
	key.dir = CT_DIR_SERVICE;
	now = ct_now();

	e = ct4_lookup(&key, now);
	if (e) {
		if (!(e->flags & CT_F_DSR))
			return REASON_PASS; /* tc's flow (SNAT, local backend) */
		be = bpf_map_lookup_elem(&backends4, &e->backend_id);
		if (!be || be->port != p->dport)
			return REASON_PASS; /* backend gone: tc chooses again */
		if (dsr4_route(ctx, p, be->addr, &fib, &saddr) != BPF_FIB_LKUP_RET_SUCCESS || !saddr)
			return REASON_PASS;
		ret = xdp4_encap(ctx, p, &fib, saddr, be->addr);
		if (ret != REASON_XDP_DSR_ENCAP)
			return ret;
		/* Conntrack as tc keeps it: no REPLY entry for DSR flows. */
		ct_touch(e, p->proto, p->tcp_flags, CT_DIR_SERVICE, now);
		*act = xdp_send_action(ctx, fib.ifindex);
		return ret;
	}

	if (svc->backend_count == 0)
		return REASON_PASS; /* tc rejects or drops, and counts */
	if (p->proto == IPPROTO_TCP && !ct_tcp_may_open(p->tcp_flags))
		return REASON_PASS;
	if (lb_select_backend(svc, lb4_flow_hash(&key), &backend_id) != CONTINUE)
		return REASON_PASS;
	be = bpf_map_lookup_elem(&backends4, &backend_id);
	if (!be || !xdp_dsr_new_flow(svc, be->flags, be->port, p->dport))
		return REASON_PASS;
	/* Route first: a flow XDP cannot send yet stays without state. */
	if (dsr4_route(ctx, p, be->addr, &fib, &saddr) != BPF_FIB_LKUP_RET_SUCCESS || !saddr)
		return REASON_PASS;

	ct_entry_init(&entry, p->proto, p->tcp_flags, backend_id, svc->rev_nat_id, now);
	entry.flags |= CT_F_DSR;
	if (ct4_insert_service(&key, &entry, now) != CT_INSERTED)
		return REASON_PASS; /* lost a race (or full): tc joins the winner */
	ret = xdp4_encap(ctx, p, &fib, saddr, be->addr);
	if (ret != REASON_XDP_DSR_ENCAP) {
		bpf_map_delete_elem(&ct4, &key);
		return ret;
	}
	*act = xdp_send_action(ctx, fib.ifindex);
	return ret;
}

/* ---------------------------------------------------------------- IPv6 */

static __always_inline int xdp6_encap(struct xdp_md *ctx, const struct pkt *p,
				      const struct bpf_fib_lookup *fib, const __u8 *saddr,
				      const __u8 *daddr)
{
	struct ipv6hdr outer;
	struct ethhdr *eth;
	struct ipv6hdr *ip6;
	void *data, *data_end;
	__be32 vtcfl;
#ifdef DSR_RESTORE_HOOK
	struct ethhdr saved = {};
#endif

	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	ip6 = data + ETH_HLEN;
	if ((void *)(ip6 + 1) > data_end)
		return -DROP_INVALID_L3;
	vtcfl = *(__be32 *)ip6;
	dsr6_outer(&outer, saddr, daddr, p->l3_len, vtcfl);
	XDP_BENCH_SAVE(ctx, saved);

	if (bpf_xdp_adjust_head(ctx, -(int)DSR6_OVERHEAD))
		return -DROP_DSR_ENCAP;
	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	eth = data;
	ip6 = data + ETH_HLEN;
	if ((void *)(ip6 + 1) > data_end)
		return -DROP_DSR_ENCAP;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	__builtin_memcpy(ip6, &outer, sizeof(outer));
	XDP_BENCH_RESTORE(ctx, saved, DSR6_OVERHEAD);
	return REASON_XDP_DSR_ENCAP;
}

static __always_inline int xdp6_ingress(struct xdp_md *ctx, struct pkt *p, int *act)
{
	struct ct6_key key __attribute__((aligned(8))) = {};
	struct bpf_fib_lookup fib;
	struct lb_service *svc;
	struct lb6_backend *be;
	struct ct_entry entry;
	struct ct_entry *e;
	__u8 saddr[16];
	__u32 backend_id;
	__u64 now;
	int ret;

	if (!xdp_candidate(p))
		return REASON_PASS;
	svc = lb6_lookup_service(p);
	if (!svc)
		return REASON_PASS;
	if ((svc->flags & LB_F_SOURCE_RANGES) && !lb6_source_allowed(svc, p->saddr.v6))
		return -DROP_SOURCE_RANGE;
	if (!(svc->flags & LB_F_DSR) || svc->kind == LB_KIND_CLUSTER_IP || !dsr6_plain(p))
		return REASON_PASS;

	__builtin_memcpy(key.saddr, p->saddr.v6, 16);
	__builtin_memcpy(key.daddr, p->daddr.v6, 16);
	key.sport = p->sport;
	key.dport = p->dport;
	key.proto = p->proto;
	key.dir = CT_DIR_SERVICE;
	now = ct_now();

	e = ct6_lookup(&key, now);
	if (e) {
		if (!(e->flags & CT_F_DSR))
			return REASON_PASS;
		be = bpf_map_lookup_elem(&backends6, &e->backend_id);
		if (!be || be->port != p->dport)
			return REASON_PASS;
		if (dsr6_route(ctx, p, be->addr, &fib, saddr) != BPF_FIB_LKUP_RET_SUCCESS ||
		    addr6_is_zero(saddr))
			return REASON_PASS;
		ret = xdp6_encap(ctx, p, &fib, saddr, be->addr);
		if (ret != REASON_XDP_DSR_ENCAP)
			return ret;
		ct_touch(e, p->proto, p->tcp_flags, CT_DIR_SERVICE, now);
		*act = xdp_send_action(ctx, fib.ifindex);
		return ret;
	}

	if (svc->backend_count == 0)
		return REASON_PASS;
	if (p->proto == IPPROTO_TCP && !ct_tcp_may_open(p->tcp_flags))
		return REASON_PASS;
	if (lb_select_backend(svc, lb6_flow_hash(&key), &backend_id) != CONTINUE)
		return REASON_PASS;
	be = bpf_map_lookup_elem(&backends6, &backend_id);
	if (!be || !xdp_dsr_new_flow(svc, be->flags, be->port, p->dport))
		return REASON_PASS;
	if (dsr6_route(ctx, p, be->addr, &fib, saddr) != BPF_FIB_LKUP_RET_SUCCESS ||
	    addr6_is_zero(saddr))
		return REASON_PASS;

	ct_entry_init(&entry, p->proto, p->tcp_flags, backend_id, svc->rev_nat_id, now);
	entry.flags |= CT_F_DSR;
	if (ct6_insert_service(&key, &entry, now) != CT_INSERTED)
		return REASON_PASS;
	ret = xdp6_encap(ctx, p, &fib, saddr, be->addr);
	if (ret != REASON_XDP_DSR_ENCAP) {
		bpf_map_delete_elem(&ct6, &key);
		return ret;
	}
	*act = xdp_send_action(ctx, fib.ifindex);
	return ret;
}

#endif /* STRAIT_XDP_H */
