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
 *
 * Speed (issue 6): an established packet costs one per-CPU slot read
 * (xdp_flow_cache: the encapsulation ready to push, the outer IPv4 checksum
 * from a precomputed sum), before any frontend lookup; behind it the shared
 * xdp_flow{4,6} LRU (collisions, flows that moved CPU). Frontend, conntrack,
 * backend and the route (xdp_nexthop instead of bpf_fib_lookup() per packet)
 * are the slow path's. What each cache may miss, and for how long, is said
 * at "caches" below. Both levels hold only what the slow path found in
 * conntrack, which tc reads for every DSR packet (its own flow cache,
 * lib/flowcache.h, takes no DSR flows), so a flow is sent to the same
 * backend whichever of the two sees it.
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

/* ---------------------------------------------------------------- caches
 *
 * The established path is two levels of the same thing, the flow's
 * encapsulation (Ethernet and outer header) ready to push:
 *  1. xdp_flow_cache, per CPU, direct-mapped: slot = hash of the tuple and
 *     ingress device; the slot holds the tuple it was made for, compared in
 *     full (a collision is a miss, never another flow's header). One array
 *     read, no key to build, no hash lookup: probed before the frontend.
 *  2. xdp_flow4/6 (Katran's LRU flow cache, shared by the CPUs, keyed like
 *     the conntrack SERVICE entry): for the flows level 1 lost to a
 *     collision, and a flow's first packets on another CPU. A hit refills
 *     the packet's slot. Looked up after the frontend, as before level 1
 *     existed: a packet to no Service (most of a node's traffic) pays the
 *     slot read and the frontend lookup, not a hash lookup more.
 * Everything else — frontend, conntrack, backend, route — is the slow path,
 * which runs for a flow's first packets, for any packet the cached state
 * does not cover, and once valid_until has passed, and which fills both.
 *
 * Staleness, and why it is bounded and safe (both levels, same checks):
 *  - the maps: each entry carries flow_epoch as read before the slow path's
 *    first lookup; the agent bumps it after every change to the Service
 *    maps and every conntrack flush (Dataplane.bumpFlowEpoch()), and an
 *    entry of another epoch is a miss. So a removed Service, a narrowed
 *    loadBalancerSourceRanges, a removed backend or a cleared DSR flag
 *    reaches cached flows with the very next packet, without a frontend
 *    lookup per packet. (xdp_flow keeps the epoch's low 24 bits, all its
 *    padding had: equal low bits after a bump would take 2^24 bumps, each a
 *    syscall, within the entry's one second.)
 *  - conntrack: valid_until is at most the point where ct_touch() would next
 *    write the entry (deadline moving by > CT_REFRESH_NS) and never past
 *    the entry's deadline; packets whose TCP flags ct_touch() would record
 *    (SYN, FIN, RST, a flag not seen yet, a state change) take the slow
 *    path. So skipping the conntrack lookup changes no conntrack state.
 *  - the packet: per packet, not cached: a candidate (TCP/UDP with ports,
 *    not a fragment), a plain IPv6 header, the same ingress device, a
 *    length that fits the route MTU encapsulated.
 *  - route and neighbour (xdp_nexthop, shared by every flow to one backend
 *    through one ingress device): looked up with bpf_fib_lookup() again
 *    after XDP_NH_TTL_NS, and a flow's entry never outlives its next hop's.
 *    A lookup that fails deletes the stale next hop and the packet goes to
 *    tc (bpf_redirect_neigh resolves the neighbour), so a dead route or
 *    neighbour costs at most XDP_NH_TTL_NS of packets to the old MAC, the
 *    same order as the kernel's own neighbour confirmation. The route MTU
 *    is cached with it: a lowered MTU acts within the same second.
 * The agent may also delete entries (any of them) at any time: a miss only
 * costs one slow-path packet.
 */
#define XDP_NH_TTL_NS   NSEC_PER_SEC
#define XDP_FLOW_TTL_NS NSEC_PER_SEC

static __always_inline void xdp_flow_set_epoch(struct xdp_flow *f, __u32 epoch)
{
	f->epoch[0] = epoch;
	f->epoch[1] = epoch >> 8;
	f->epoch[2] = epoch >> 16;
}

/* Is LRU entry @f (looked up by @p's key) valid for @p at @now (ct_now())? */
static __always_inline int xdp_flow_valid(const struct xdp_md *ctx, const struct pkt *p,
					  const struct xdp_flow *f, __u64 now)
{
	__u32 epoch = f->epoch[0] | (__u32)f->epoch[1] << 8 | (__u32)f->epoch[2] << 16;

	return epoch == (p->flow_epoch & 0xffffff) && f->iif == ctx->ingress_ifindex &&
	       p->l3_len <= f->max_len && ct_covers(f->ct_flags, f->tcp_seen, p->proto, p->tcp_flags) &&
	       now < f->valid_until;
}

/* Slot index (lib/conntrack.h flow_slot_hash; a collision costs a level-2
 * lookup). */
static __always_inline __u32 xdp_slot_index(const struct pkt *p, __u32 iif, int v6)
{
	return flow_slot_hash(p, 0, iif, v6, XDP_FLOW_CACHE_BITS);
}

/*
 * Level 1's clock is jiffies: bpf_jiffies64() is inlined by the verifier
 * (one load), where bpf_ktime_get_coarse_ns() is a helper call (measured:
 * a hit took 93-97 ns with it, 81-85 with jiffies, bench/README.md). A
 * slot's deadline in jiffies must end no later than its entry's valid_until
 * in the ct_now() clock; the two advance together, one tick at a time (the
 * tick code updates jiffies and the coarse clock in turn; an idle CPU
 * catches both up at once). So the slot gets the whole ticks left before
 * valid_until, less two: one for the moment between the two updates, one
 * for the NTP adjustment of the coarse clock (at most 500 ppm: 0.5 ms of
 * a second). The tick is taken to be the longest Linux has (HZ=100): a
 * longer assumed tick only ends the slot sooner (on an HZ=1000 kernel a slot
 * lives up to a tenth of its entry's second, and the LRU refills it). Not
 * CONFIG_HZ through libbpf's __kconfig: libbpf refuses to load an object
 * with a Kconfig extern, weak or not, when neither /boot/config-<release>
 * nor /proc/config.gz can be read, as in an agent container on many hosts.
 */
#define XDP_SLOT_HZ 100

/* The slot deadline for @valid_until; @jiffies must have been read before
 * @now (ct_now()): the coarse clock read after it has seen at least as
 * many ticks, so the span below is not longer than the truth. */
static __always_inline __u64 xdp_slot_deadline(__u64 valid_until, __u64 jiffies, __u64 now)
{
	__u64 hz = XDP_SLOT_HZ;
	__u64 span, ticks;

	if (valid_until <= now)
		return 0;
	span = valid_until - now;
	if (span > 4 * NSEC_PER_SEC) /* cannot be (1 s at most): keeps span * hz in range */
		span = 4 * NSEC_PER_SEC;
	ticks = span * hz / NSEC_PER_SEC;
	return ticks > 2 ? jiffies + ticks - 2 : 0;
}

/* Level 1: @p's slot if it stands for the slow path now (its tuple, device
 * and epoch, its deadline not passed, the packet covered), else NULL. */
static __always_inline const struct xdp_flow_slot *xdp_slot_get(const struct xdp_md *ctx,
								 const struct pkt *p, int v6)
{
	__u32 iif = ctx->ingress_ifindex;
	__u32 index;
	const struct xdp_flow_slot *s;
	__u32 diff;

	/* Never covered (conntrack records them): spare new flows, and a SYN
	 * flood, a read of a slot line that is likely cold. */
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST)))
		return NULL;
	index = xdp_slot_index(p, iif, v6);
	s = bpf_map_lookup_elem(&xdp_flow_cache, &index);
	if (!s)
		return NULL;
	/* The whole key, without a branch per field. */
	diff = (s->saddr[0] ^ p->saddr.w[0]) | (s->daddr[0] ^ p->daddr.w[0]) |
	       (*(const __u32 *)&s->sport ^ ((__u32)p->sport | (__u32)p->dport << 16)) |
	       (s->proto ^ p->proto) | (s->family ^ p->family) | (s->iif ^ iif) |
	       (s->epoch ^ p->flow_epoch);
	if (v6)
		diff |= (s->saddr[1] ^ p->saddr.w[1]) | (s->saddr[2] ^ p->saddr.w[2]) |
			(s->saddr[3] ^ p->saddr.w[3]) | (s->daddr[1] ^ p->daddr.w[1]) |
			(s->daddr[2] ^ p->daddr.w[2]) | (s->daddr[3] ^ p->daddr.w[3]);
	if (diff || p->l3_len > s->max_len ||
	    !ct_covers(s->ct_flags, s->tcp_seen, p->proto, p->tcp_flags) ||
	    bpf_jiffies64() >= s->valid_until)
		return NULL;
	return s;
}

/* Make @p's slot stand for the valid flow entry @f (just made by the slow
 * path, or a level-2 hit), under the epoch @p read before its lookups;
 * @jiffies and @now as xdp_slot_deadline() wants them. The deadline goes
 * first and last: a reader between the stores (only a test run can be one)
 * sees an expired slot, never a torn one. */
static __always_inline void xdp_slot_fill(const struct xdp_md *ctx, const struct pkt *p,
					  const struct xdp_flow *f, int v6, __u64 jiffies, __u64 now)
{
	__u32 index = xdp_slot_index(p, ctx->ingress_ifindex, v6);
	struct xdp_flow_slot *s = bpf_map_lookup_elem(&xdp_flow_cache, &index);
	const __u64 *src = (const __u64 *)f->hdr;
	__u64 *dst;

	if (!s)
		return;
	s->valid_until = 0;
	asm volatile("" ::: "memory");
	s->saddr[0] = p->saddr.w[0];
	s->saddr[1] = p->saddr.w[1];
	s->saddr[2] = p->saddr.w[2];
	s->saddr[3] = p->saddr.w[3];
	s->daddr[0] = p->daddr.w[0];
	s->daddr[1] = p->daddr.w[1];
	s->daddr[2] = p->daddr.w[2];
	s->daddr[3] = p->daddr.w[3];
	s->sport = p->sport;
	s->dport = p->dport;
	s->proto = p->proto;
	s->family = p->family;
	s->tcp_seen = f->tcp_seen;
	s->iif = f->iif;
	s->epoch = p->flow_epoch;
	s->ct_flags = f->ct_flags;
	s->max_len = f->max_len;
	s->ifindex = f->ifindex;
	s->csum = f->csum;
	dst = (__u64 *)s->hdr;
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
	dst[4] = src[4];
	dst[5] = src[5];
	dst[6] = src[6];
	asm volatile("" ::: "memory");
	s->valid_until = xdp_slot_deadline(f->valid_until, jiffies, now);
}

/* Route the outer packet to @k's destination (its family's addresses in
 * @fib), from out->saddr (unset: asked of the kernel). */
static __always_inline long xdp_fib(struct xdp_md *ctx, const struct xdp_nh_key *k,
				    const struct xdp_nexthop *out, struct bpf_fib_lookup *fib,
				    __u32 tot_len, int want_src)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = k->family;
	if (k->family == AF_INET) {
		fib->l4_protocol = IPPROTO_IPIP;
		__builtin_memcpy(&fib->ipv4_src, out->saddr, 4);
		__builtin_memcpy(&fib->ipv4_dst, k->addr, 4);
	} else {
		fib->l4_protocol = IPPROTO_IPV6;
		__builtin_memcpy(fib->ipv6_src, out->saddr, 16);
		__builtin_memcpy(fib->ipv6_dst, k->addr, 16);
	}
	return dsr_fib_lookup(ctx, fib, tot_len, want_src);
}

/*
 * The next hop toward @k (xdp_nexthop), from the cache while fresh, else
 * from bpf_fib_lookup(): a first lookup with the largest length learns the
 * route MTU (FRAG_NEEDED carries it; the kernel checks it before the
 * neighbour), a second one without length the MACs. Returns 1 with *@out
 * filled, 0 when XDP cannot send there (no route, no neighbour yet, no
 * source address): the stale entry, if any, is gone.
 */
static __always_inline int xdp_nexthop_get(struct xdp_md *ctx, const struct xdp_nh_key *k, __u64 now,
					   struct xdp_nexthop *out)
{
	struct xdp_nexthop *nh = bpf_map_lookup_elem(&xdp_nexthop, k);
	const struct node_config *cfg;
	struct bpf_fib_lookup fib;
	int have = 0;
	long rc;

	if (nh && nh->expires > now) {
		__builtin_memcpy(out, nh, sizeof(*out));
		return 1;
	}
	__builtin_memset(out, 0, sizeof(*out));
	cfg = dsr_config();
	if (cfg && k->family == AF_INET && cfg->addr4) {
		__builtin_memcpy(out->saddr, &cfg->addr4, 4);
		have = 1;
	} else if (cfg && k->family == AF_INET6 && !addr6_is_zero(cfg->addr6)) {
		__builtin_memcpy(out->saddr, cfg->addr6, 16);
		have = 1;
	}
	out->mtu = 0xffff;
	rc = xdp_fib(ctx, k, out, &fib, 0xffff, !have);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		out->mtu = fib.mtu_result;
		rc = xdp_fib(ctx, k, out, &fib, 0, !have);
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		goto fail;
	if (!have) {
		if (k->family == AF_INET)
			__builtin_memcpy(out->saddr, &fib.ipv4_src, 4);
		else
			__builtin_memcpy(out->saddr, fib.ipv6_src, 16);
		if (addr6_is_zero(out->saddr))
			goto fail;
	}
	out->ifindex = fib.ifindex;
	__builtin_memcpy(out->smac, fib.smac, ETH_ALEN);
	__builtin_memcpy(out->dmac, fib.dmac, ETH_ALEN);
	out->expires = now + XDP_NH_TTL_NS;
	bpf_map_update_elem(&xdp_nexthop, k, out, BPF_ANY);
	return 1;
fail:
	if (nh)
		bpf_map_delete_elem(&xdp_nexthop, k);
	return 0;
}

/* The Ethernet part of a flow's header, and the fields every flow has. */
static __always_inline void xdp_flow_start(struct xdp_flow *f, struct xdp_md *ctx,
					   const struct xdp_nexthop *nh, __u32 overhead, __u16 proto)
{
	__u32 mtu = nh->mtu > 0xffff ? 0xffff : nh->mtu;

	__builtin_memset(f, 0, sizeof(*f));
	f->iif = ctx->ingress_ifindex;
	f->ifindex = nh->ifindex;
	f->max_len = mtu > overhead ? mtu - overhead : 0;
	__builtin_memcpy(f->hdr, nh->dmac, ETH_ALEN);
	__builtin_memcpy(f->hdr + ETH_ALEN, nh->smac, ETH_ALEN);
	f->hdr[12] = proto >> 8;
	f->hdr[13] = proto & 0xff;
}

/* After the slow path sent a packet of the established flow @e (touched):
 * how long @f may stand in for conntrack (see the comment above). */
static __always_inline void xdp_flow_finish(struct xdp_flow *f, const struct ct_entry *e,
					    __u8 proto, __u64 now, __u64 nh_expires)
{
	__u64 lifetime = ct_lifetime(proto, e->flags);
	__u64 until = now + XDP_FLOW_TTL_NS;

	if (e->expires + CT_REFRESH_NS - lifetime < until)
		until = e->expires + CT_REFRESH_NS - lifetime;
	if (e->expires < until)
		until = e->expires;
	if (nh_expires < until)
		until = nh_expires;
	f->valid_until = until;
	f->backend_id = e->backend_id;
	f->ct_flags = e->flags;
	f->tcp_seen = e->tcp_flags;
}

/* Copy the Ethernet + outer header (@len: 34 or 54 bytes, checked by the
 * caller) from a flow entry: word copies, the template is 8-byte aligned. */
static __always_inline void xdp_copy_hdr(void *dst, const __u8 *src, int v6)
{
	__u64 *d = dst;
	const __u64 *s = (const __u64 *)src;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
	if (!v6) {
		*(__u16 *)&d[4] = *(const __u16 *)&s[4];
		return;
	}
	d[4] = s[4];
	d[5] = s[5];
	*(__u32 *)&d[6] = *(const __u32 *)&s[6];
	*(__u16 *)((__u8 *)&d[6] + 4) = *(const __u16 *)((const __u8 *)&s[6] + 4);
}

/* ---------------------------------------------------------------- IPv4 */

/* Push @f's headers in front of the inner packet: the outer header's
 * length, TOS (the inner one's: DSCP and ECN travel with it) and checksum
 * from the precomputed sum. */
static __always_inline int xdp4_push(struct xdp_md *ctx, const struct pkt *p,
				     const __u8 *hdr, __u32 csum)
{
	void *data, *data_end;
	struct iphdr *ip;
	__u32 sum;
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
	XDP_BENCH_SAVE(ctx, saved);

	if (bpf_xdp_adjust_head(ctx, -(int)DSR4_OVERHEAD))
		return -DROP_DSR_ENCAP;
	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return -DROP_DSR_ENCAP; /* cannot happen: the frame only grew */
	xdp_copy_hdr(data, hdr, 0);
	ip->tos = tos;
	ip->tot_len = bpf_htons(p->l3_len + DSR4_OVERHEAD);
	/* Both as the 16-bit words of the header in memory (tos: byte 1). */
	sum = csum + bpf_htons((__u16)tos) + ip->tot_len;
	ip->check = csum_fold(sum);
	XDP_BENCH_RESTORE(ctx, saved, DSR4_OVERHEAD);
	return REASON_XDP_DSR_ENCAP;
}

/* The next hop to backend @daddr and the flow's headers in @f; 0 when XDP
 * cannot send @p there (tc takes it). */
static __always_inline int xdp4_prepare(struct xdp_md *ctx, const struct pkt *p, __be32 daddr,
					__u64 now, struct xdp_nexthop *nh, struct xdp_flow *f)
{
	struct xdp_nh_key k = {};
	struct iphdr outer;
	__be32 saddr;
	__u32 s;

	k.ifindex = ctx->ingress_ifindex;
	k.family = AF_INET;
	__builtin_memcpy(k.addr, &daddr, 4);
	if (!xdp_nexthop_get(ctx, &k, now, nh))
		return 0;
	xdp_flow_start(f, ctx, nh, DSR4_OVERHEAD, ETH_P_IP);
	if (p->l3_len > f->max_len)
		return 0; /* too big once encapsulated: tc answers with ICMP */
	__builtin_memcpy(&saddr, nh->saddr, 4);
	dsr4_outer(&outer, saddr, daddr, 0, 0);
	outer.tot_len = 0;
	outer.check = 0;
	s = csum_buf(&outer, sizeof(outer), 0);
	s = (s & 0xffff) + (s >> 16);
	f->csum = (s & 0xffff) + (s >> 16);
	__builtin_memcpy(f->hdr + ETH_HLEN, &outer, sizeof(outer));
	return 1;
}

/* Everything but a level-1 hit: level 2 (xdp_flow4), else conntrack,
 * backend, next hop; new flows as tc makes them. Its own frame (not
 * inlined: the program's frame and this one share the 512-byte stack). */
static __noinline int xdp4_slow(struct xdp_md *ctx, struct pkt *p, const struct lb_service *svc,
				struct ct4_key *key, int *act)
{
	struct xdp_nexthop nh;
	struct xdp_flow flow;
	struct lb4_backend *be;
	struct ct_entry entry;
	struct ct_entry *e;
	struct xdp_flow *f;
	__u32 backend_id;
	__u64 jiffies, now;
	int ret;

	jiffies = bpf_jiffies64(); /* before now: xdp_slot_deadline() */
	now = ct_now();
	/* Level 2: the shared LRU; a hit takes the slot back. */
	f = bpf_map_lookup_elem(&xdp_flow4, key);
	if (f && xdp_flow_valid(ctx, p, f, now)) {
		xdp_slot_fill(ctx, p, f, 0, jiffies, now);
		ret = xdp4_push(ctx, p, f->hdr, f->csum);
		if (ret == REASON_XDP_DSR_ENCAP)
			*act = xdp_send_action(ctx, f->ifindex);
		return ret;
	}

	e = ct4_lookup(key, now);
	if (e) {
		if (!(e->flags & CT_F_DSR))
			return REASON_PASS; /* tc's flow (SNAT, local backend) */
		be = bpf_map_lookup_elem(&backends4, &e->backend_id);
		if (!be || be->port != p->dport)
			return REASON_PASS; /* backend gone: tc chooses again */
		if (!xdp4_prepare(ctx, p, be->addr, now, &nh, &flow))
			return REASON_PASS;
		ret = xdp4_push(ctx, p, flow.hdr, flow.csum);
		if (ret != REASON_XDP_DSR_ENCAP)
			return ret;
		/* Conntrack as tc keeps it: no REPLY entry for DSR flows. */
		ct_touch(e, p->proto, p->tcp_flags, CT_DIR_SERVICE, now);
		xdp_flow_finish(&flow, e, p->proto, now, nh.expires);
		xdp_flow_set_epoch(&flow, p->flow_epoch);
		bpf_map_update_elem(&xdp_flow4, key, &flow, BPF_ANY);
		xdp_slot_fill(ctx, p, &flow, 0, jiffies, now);
		*act = xdp_send_action(ctx, flow.ifindex);
		return ret;
	}

	if (svc->backend_count == 0)
		return REASON_PASS; /* tc rejects or drops, and counts */
	if (p->proto == IPPROTO_TCP && !ct_tcp_may_open(p->tcp_flags))
		return REASON_PASS;
	if (lb_select_backend(svc, lb4_flow_hash(key), &backend_id) != CONTINUE)
		return REASON_PASS;
	be = bpf_map_lookup_elem(&backends4, &backend_id);
	if (!be || !xdp_dsr_new_flow(svc, be->flags, be->port, p->dport))
		return REASON_PASS;
	/* Route first: a flow XDP cannot send yet stays without state. */
	if (!xdp4_prepare(ctx, p, be->addr, now, &nh, &flow))
		return REASON_PASS;

	ct_entry_init(&entry, p->proto, p->tcp_flags, backend_id, svc->rev_nat_id, now);
	entry.flags |= CT_F_DSR;
	if (ct4_insert_service(key, &entry, now) != CT_INSERTED)
		return REASON_PASS; /* lost a race (or full): tc joins the winner */
	ret = xdp4_push(ctx, p, flow.hdr, flow.csum);
	if (ret != REASON_XDP_DSR_ENCAP) {
		bpf_map_delete_elem(&ct4, key);
		return ret;
	}
	/* No flow cache entry yet: the flow's next packet (established) makes
	 * it, so a SYN flood does not churn the cache. */
	*act = xdp_send_action(ctx, flow.ifindex);
	return ret;
}

static __always_inline int xdp4_ingress(struct xdp_md *ctx, struct pkt *p, int *act)
{
	const struct xdp_flow_slot *s;
	struct lb_service *svc;
	int ret;

	if (!xdp_candidate(p))
		return REASON_PASS;
	/* Before any lookup: what they find is valid under this epoch. */
	p->flow_epoch = flow_epoch_now();

	/* The established fast path: one slot read, the headers ready. */
	s = xdp_slot_get(ctx, p, 0);
	if (s) {
		ret = xdp4_push(ctx, p, s->hdr, s->csum);
		if (ret == REASON_XDP_DSR_ENCAP)
			*act = xdp_send_action(ctx, s->ifindex);
		return ret;
	}

	/* Not a frontend (most of a node's traffic): no more lookups. */
	svc = lb4_lookup_service(p);
	if (!svc)
		return REASON_PASS;
	if ((svc->flags & LB_F_SOURCE_RANGES) && !lb4_source_allowed(svc, p->saddr.v4))
		return -DROP_SOURCE_RANGE;
	if (!(svc->flags & LB_F_DSR) || svc->kind == LB_KIND_CLUSTER_IP)
		return REASON_PASS;

	/* Scoped: the key's stack is the slot index's and the frontend
	 * lookup's (the two frames' stacks are at the verifier's limit). */
	{
		/* Aligned: the flow hash reads it as 32-bit words. */
		struct ct4_key key __attribute__((aligned(8))) = {};

		key.saddr = p->saddr.v4;
		key.daddr = p->daddr.v4;
		key.sport = p->sport;
		key.dport = p->dport;
		key.proto = p->proto;
		key.dir = CT_DIR_SERVICE;
		return xdp4_slow(ctx, p, svc, &key, act);
	}
}

/* ---------------------------------------------------------------- IPv6 */

static __always_inline int xdp6_push(struct xdp_md *ctx, const struct pkt *p, const __u8 *hdr)
{
	void *data, *data_end;
	struct ipv6hdr *ip6;
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
	XDP_BENCH_SAVE(ctx, saved);

	if (bpf_xdp_adjust_head(ctx, -(int)DSR6_OVERHEAD))
		return -DROP_DSR_ENCAP;
	data = ctx_data(ctx);
	data_end = ctx_data_end(ctx);
	ip6 = data + ETH_HLEN;
	if ((void *)(ip6 + 1) > data_end)
		return -DROP_DSR_ENCAP;
	xdp_copy_hdr(data, hdr, 1);
	/* Version, traffic class and flow label: the inner packet's. */
	*(__be32 *)ip6 = vtcfl;
	ip6->payload_len = bpf_htons(p->l3_len);
	XDP_BENCH_RESTORE(ctx, saved, DSR6_OVERHEAD);
	return REASON_XDP_DSR_ENCAP;
}

static __always_inline int xdp6_prepare(struct xdp_md *ctx, const struct pkt *p, const __u8 *daddr,
					__u64 now, struct xdp_nexthop *nh, struct xdp_flow *f)
{
	struct xdp_nh_key k = {};
	struct ipv6hdr outer;

	k.ifindex = ctx->ingress_ifindex;
	k.family = AF_INET6;
	__builtin_memcpy(k.addr, daddr, 16);
	if (!xdp_nexthop_get(ctx, &k, now, nh))
		return 0;
	xdp_flow_start(f, ctx, nh, DSR6_OVERHEAD, ETH_P_IPV6);
	if (p->l3_len > f->max_len)
		return 0;
	dsr6_outer(&outer, nh->saddr, daddr, 0, 0);
	__builtin_memcpy(f->hdr + ETH_HLEN, &outer, sizeof(outer));
	return 1;
}

static __noinline int xdp6_slow(struct xdp_md *ctx, struct pkt *p, const struct lb_service *svc,
				struct ct6_key *key, int *act)
{
	struct xdp_nexthop nh;
	struct xdp_flow flow;
	struct lb6_backend *be;
	struct ct_entry entry;
	struct ct_entry *e;
	struct xdp_flow *f;
	__u32 backend_id;
	__u64 jiffies, now;
	int ret;

	jiffies = bpf_jiffies64(); /* before now: xdp_slot_deadline() */
	now = ct_now();
	f = bpf_map_lookup_elem(&xdp_flow6, key);
	if (f && xdp_flow_valid(ctx, p, f, now)) {
		xdp_slot_fill(ctx, p, f, 1, jiffies, now);
		ret = xdp6_push(ctx, p, f->hdr);
		if (ret == REASON_XDP_DSR_ENCAP)
			*act = xdp_send_action(ctx, f->ifindex);
		return ret;
	}

	e = ct6_lookup(key, now);
	if (e) {
		if (!(e->flags & CT_F_DSR))
			return REASON_PASS;
		be = bpf_map_lookup_elem(&backends6, &e->backend_id);
		if (!be || be->port != p->dport)
			return REASON_PASS;
		if (!xdp6_prepare(ctx, p, be->addr, now, &nh, &flow))
			return REASON_PASS;
		ret = xdp6_push(ctx, p, flow.hdr);
		if (ret != REASON_XDP_DSR_ENCAP)
			return ret;
		ct_touch(e, p->proto, p->tcp_flags, CT_DIR_SERVICE, now);
		xdp_flow_finish(&flow, e, p->proto, now, nh.expires);
		xdp_flow_set_epoch(&flow, p->flow_epoch);
		bpf_map_update_elem(&xdp_flow6, key, &flow, BPF_ANY);
		xdp_slot_fill(ctx, p, &flow, 1, jiffies, now);
		*act = xdp_send_action(ctx, flow.ifindex);
		return ret;
	}

	if (svc->backend_count == 0)
		return REASON_PASS;
	if (p->proto == IPPROTO_TCP && !ct_tcp_may_open(p->tcp_flags))
		return REASON_PASS;
	if (lb_select_backend(svc, lb6_flow_hash(key), &backend_id) != CONTINUE)
		return REASON_PASS;
	be = bpf_map_lookup_elem(&backends6, &backend_id);
	if (!be || !xdp_dsr_new_flow(svc, be->flags, be->port, p->dport))
		return REASON_PASS;
	if (!xdp6_prepare(ctx, p, be->addr, now, &nh, &flow))
		return REASON_PASS;

	ct_entry_init(&entry, p->proto, p->tcp_flags, backend_id, svc->rev_nat_id, now);
	entry.flags |= CT_F_DSR;
	if (ct6_insert_service(key, &entry, now) != CT_INSERTED)
		return REASON_PASS;
	ret = xdp6_push(ctx, p, flow.hdr);
	if (ret != REASON_XDP_DSR_ENCAP) {
		bpf_map_delete_elem(&ct6, key);
		return ret;
	}
	*act = xdp_send_action(ctx, flow.ifindex);
	return ret;
}

static __always_inline int xdp6_ingress(struct xdp_md *ctx, struct pkt *p, int *act)
{
	const struct xdp_flow_slot *s;
	struct lb_service *svc;
	int ret;

	if (!xdp_candidate(p))
		return REASON_PASS;
	p->flow_epoch = flow_epoch_now();

	/* Extension headers: tc's, whatever the flow (a per-packet check). */
	if (dsr6_plain(p)) {
		s = xdp_slot_get(ctx, p, 1);
		if (s) {
			ret = xdp6_push(ctx, p, s->hdr);
			if (ret == REASON_XDP_DSR_ENCAP)
				*act = xdp_send_action(ctx, s->ifindex);
			return ret;
		}
	}

	svc = lb6_lookup_service(p);
	if (!svc)
		return REASON_PASS;
	if ((svc->flags & LB_F_SOURCE_RANGES) && !lb6_source_allowed(svc, p->saddr.v6))
		return -DROP_SOURCE_RANGE;
	if (!(svc->flags & LB_F_DSR) || svc->kind == LB_KIND_CLUSTER_IP || !dsr6_plain(p))
		return REASON_PASS;

	{
		struct ct6_key key __attribute__((aligned(8))) = {};

		__builtin_memcpy(key.saddr, p->saddr.v6, 16);
		__builtin_memcpy(key.daddr, p->daddr.v6, 16);
		key.sport = p->sport;
		key.dport = p->dport;
		key.proto = p->proto;
		key.dir = CT_DIR_SERVICE;
		return xdp6_slow(ctx, p, svc, &key, act);
	}
}

#endif /* STRAIT_XDP_H */
