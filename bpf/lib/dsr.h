/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * dsr.h — direct server return (DSR) for north-south frontends, and the MTU
 * work encapsulation needs.
 *
 *   client C:cp -> frontend F:fp       arrives at the entry node's uplink
 *   entry node: [N -> B | C:cp -> F:fp]   IPIP / IP6IP6, inner untouched
 *   backend's node: decapsulate, C:cp -> B:fp, record the flow
 *   backend B:fp -> C:cp               leaves the backend's node as
 *                                      F:fp -> C:cp, straight to the client
 *
 * Design: the outer destination is the backend pod's own address B, not
 * the address of the node hosting it (Katran's real server). In Kubernetes
 * the pod does not hold the frontend address, so the backend's node must
 * DNAT the inner packet to one pod; with B as the outer destination it
 * knows which without any state or lookup of its own (backend ids are per
 * agent, and a NodePort frontend F is the entry node's address, which the
 * backend's node has no entry for). The outer packet is routed like any
 * packet to B: bpf_fib_lookup() on the entry node sends it to the node
 * that routes B's pod CIDR, the same path pod traffic takes, and nothing
 * has to keep node_addr right. The inner packet is not touched on the entry
 * node, so no checksum there changes; its TTL is not decremented either
 * (Katran's choice: the load balancer is not a hop), and the outer header
 * is fresh (TTL 64, DF set: a fragmented outer packet could not be
 * decapsulated, tc runs before reassembly).
 *
 * The backend's node decapsulates at its uplink's tc ingress a tunnelled
 * packet whose inner destination is a DSR frontend it knows (the same
 * LoadBalancer / externalIP frontend, or — NodePort — its own NodePort of
 * that port and protocol, LB_F_DSR set), so IPIP that is not ours passes
 * untouched. It records the flow as a CT_DIR_REPLY entry {B, C, fp, cp}
 * flagged CT_F_DSR (backend and rev-NAT ids 0: they are the entry node's)
 * and the frontend F:fp in dsr_revnat{4,6} under the same key, then DNATs
 * the inner packet to B and lets the stack deliver it. At the uplink's tc
 * egress the reply finds that entry and leaves with F:fp as its source.
 *
 * DSR cannot remap ports: the backend's node only learns F:fp from the
 * inner packet and B from the outer header, so the backend must listen on
 * fp. compile (src/compile) sets LB_F_DSR only on NodePort / externalIP /
 * LoadBalancer frontends of `strait agent --dsr` whose endpoints all use
 * the frontend's port; the others are SNATed (lib/snat.h) and `strait lb
 * list` says why.
 *
 * MTU: the outer header adds DSR{4,6}_OVERHEAD bytes. TCP: the backend's
 * node clamps the MSS option of the backend's SYN-ACK (dsr{4,6}_reply), so
 * the client's segments fit the tunnel — the client→backend direction is the
 * one encapsulated, and its segment size is what the backend announces, not
 * what the client's own SYN says. Everything else that would not fit once
 * encapsulated (route MTU from bpf_fib_lookup with tot_len) is answered with
 * ICMP fragmentation needed / packet too big carrying the reduced MTU, from
 * the frontend address, and not forwarded (REASON_FRAG_NEEDED_REPLY). DF or
 * not: an IPv4 packet without DF cannot be fragmented here either, and
 * Linux clients lower their path MTU from the message for those too. GSO
 * packets (tc) are not checked: adjust_room shrinks their gso_size by the
 * overhead, so the segments still fit.
 *
 * Not done: IP fragments (refused as for SNAT, DROP_UNSUPPORTED) and IPv6
 * packets with extension headers (DROP_UNSUPPORTED) take no DSR; SCTP is
 * not DSR'd (remote SCTP is refused before any state, lib/uplink.h).
 */
#ifndef STRAIT_DSR_H
#define STRAIT_DSR_H

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"
#include "conntrack.h"
#include "csum.h"
#include "ctx.h"
/* fib.h: AF_INET*, and its fib_test mock (STRAIT_TEST_HOOKS) for XDP too.
 * Its tc-only forwarding functions are unused in an XDP object. */
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wunused-function"
#include "fib.h"
#pragma clang diagnostic pop
#include "lb.h"
#include "maps.h"
#include "metrics.h"
#include "parse.h"
#ifndef STRAIT_XDP
#include "icmp.h"
#include "nat.h"
#include "snat.h" /* SNAT_FLOW_*: the state lib/uplink.h passes to either branch */
#endif

#define DSR4_OVERHEAD   20 /* outer IPv4 header */
#define DSR6_OVERHEAD   40 /* outer IPv6 header */
#define DSR_HOP_LIMIT   64
#define DSR_IPV4_DF     0x4000
#define IPV6_MIN_MTU    1280
#define TCPOPT_EOL      0
#define TCPOPT_NOP      1
#define TCPOPT_MSS      2
#define TCP_MAX_OPTLEN  40
#define TCP_MSS_SCAN    8

/*
 * dsr{4,6}_forward() found the packet too big once encapsulated: it returns
 * DSR_TOO_BIG | the MTU to announce, and dsr{4,6}_send() builds the ICMP
 * reply from the caller's frame. The reply builders are global functions
 * with their own frame; called from dsr*_forward's they would make a third
 * frame on top of the program's, past the 512-byte stack.
 */
#define DSR_TOO_BIG 0x10000

#ifndef BPF_FIB_LOOKUP_SRC
#define BPF_FIB_LOOKUP_SRC (1U << 4) /* 6.7: fill ipv{4,6}_src with the source to use */
#endif

/*
 * Test and benchmark objects only (STRAIT_TEST_HOOKS: strait_*_test.o;
 * STRAIT_BENCH_HOOKS: strait_*_bench.o, which have no other hook, so they
 * time what production objects run plus the restore):
 *  - mtu (test objects): BPF_PROG_TEST_RUN runs on the test process's
 *    loopback, whose MTU is 64 KiB. A non-zero mtu here is the MTU of every
 *    device and route instead: lookups mocked through fib.h's fib_test whose
 *    tot_len exceeds it fail with FRAG_NEEDED (as the kernel's would), and
 *    the MSS clamp uses it;
 *  - restore: see dsr_bench_restore() / lib/xdp.h xdp_bench_restore().
 */
#if defined(STRAIT_TEST_HOOKS) || defined(STRAIT_BENCH_HOOKS)
#define DSR_RESTORE_HOOK 1

struct dsr_test_entry {
	__u32 mtu;
	__u32 restore; /* lib/xdp.h xdp_bench_restore(): benchmarks only */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct dsr_test_entry);
	__uint(max_entries, 1);
} dsr_test SEC(".maps");

static __always_inline __u32 dsr_test_mtu(void)
{
	__u32 zero = 0;
	struct dsr_test_entry *t = bpf_map_lookup_elem(&dsr_test, &zero);

	return t ? t->mtu : 0;
}

static __always_inline int dsr_test_restore(void)
{
	__u32 zero = 0;
	struct dsr_test_entry *t = bpf_map_lookup_elem(&dsr_test, &zero);

	return t && t->restore;
}
#endif

static __always_inline const struct node_config *dsr_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

/* `strait agent --dsr`: the node-wide switch over the per-frontend LB_F_DSR. */
static __always_inline int dsr_enabled(void)
{
	const struct node_config *cfg = dsr_config();

	return cfg && (cfg->modes & NODE_MODE_DSR);
}

/*
 * Does a new flow of @svc to backend @be (on another node: the caller's
 * lb_north_south_remote()) go by DSR? The port check repeats compile's
 * rule for a backend shared with another frontend.
 */
static __always_inline int dsr_wanted(const struct lb_service *svc, __u8 be_flags)
{
	if (!(svc->flags & LB_F_DSR) || svc->kind == LB_KIND_CLUSTER_IP)
		return 0;
	if (be_flags & BE_F_LOCAL)
		return 0;
	return dsr_enabled();
}

/*
 * Route a packet of @tot_len L3 bytes (0: a GSO packet, its segments are
 * checked by the kernel later) with @fib's family and addresses filled in.
 * An unset source (node without that address in `config`) is asked of the
 * kernel (BPF_FIB_LOOKUP_SRC). Returns the BPF_FIB_LKUP_RET_* code; on
 * FRAG_NEEDED fib->mtu_result holds the route's MTU.
 */
static __always_inline long dsr_fib_lookup(struct __ctx_buff *ctx, struct bpf_fib_lookup *fib,
					   __u32 tot_len, int want_src)
{
	fib->tot_len = tot_len > 0xffff ? 0xffff : tot_len;
	/* As a router would for a packet that came in on this device. */
	fib->ifindex = ctx_ifindex(ctx);
#ifdef STRAIT_TEST_HOOKS
	long rc = -1;

	if (fib_test_mock(fib, &rc)) {
		__u32 mtu = dsr_test_mtu();

		if (mtu && tot_len > mtu) {
			fib->mtu_result = mtu;
			return BPF_FIB_LKUP_RET_FRAG_NEEDED;
		}
		return rc;
	}
#endif
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), want_src ? BPF_FIB_LOOKUP_SRC : 0);
}

/* ---------------------------------------------------------------- IPv4 */

/* The outer header to backend @daddr from @saddr for an inner datagram of
 * @l3_len bytes whose TOS is @tos (kept: DSCP and ECN travel with it). */
static __always_inline void dsr4_outer(struct iphdr *ip, __be32 saddr, __be32 daddr, __u32 l3_len,
				       __u8 tos)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = tos;
	ip->tot_len = bpf_htons(l3_len + DSR4_OVERHEAD);
	ip->frag_off = bpf_htons(DSR_IPV4_DF);
	ip->ttl = DSR_HOP_LIMIT;
	ip->protocol = IPPROTO_IPIP;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = csum_fold(csum_buf(ip, sizeof(*ip), 0));
}

/*
 * Route the encapsulated packet of @p to backend address @daddr: fills
 * @fib (egress device, MACs, and the outer source in *@saddr). Returns the
 * BPF_FIB_LKUP_RET_* code.
 */
static __always_inline long dsr4_route(struct __ctx_buff *ctx, const struct pkt *p, __be32 daddr,
				       struct bpf_fib_lookup *fib, __be32 *saddr)
{
	const struct node_config *cfg = dsr_config();
	__be32 node = cfg ? cfg->addr4 : 0;
	long rc;

	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->l4_protocol = IPPROTO_IPIP;
	fib->ipv4_src = node;
	fib->ipv4_dst = daddr;
	rc = dsr_fib_lookup(ctx, fib, ctx_is_gso(ctx) ? 0 : p->l3_len + DSR4_OVERHEAD, !node);
	*saddr = node ? node : fib->ipv4_src;
	return rc;
}

#ifndef STRAIT_XDP
/* The inner packet's TOS byte (header byte 1). */
static __always_inline __u8 dsr4_inner_tos(struct __sk_buff *skb)
{
	__u8 tos = 0;

	bpf_skb_load_bytes(skb, ETH_HLEN + 1, &tos, 1);
	return tos;
}

#ifdef DSR_RESTORE_HOOK
/* Benchmarks only: the tc twin of lib/xdp.h xdp_bench_restore() — put an
 * encapsulated packet back as it came (dsr_test.restore), so that
 * BPF_PROG_TEST_RUN's repeat mode times the same packet every run. */
static __always_inline void dsr_bench_restore(struct __sk_buff *skb, const __u8 *macs, __u32 overhead)
{
	if (!dsr_test_restore() ||
	    bpf_skb_adjust_room(skb, -(__s32)overhead, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
		return;
	bpf_skb_store_bytes(skb, 0, macs, 2 * ETH_ALEN, 0);
}
/* The helper refuses to encapsulate an skb twice (skb->encapsulation stays
 * set after the undo): with the hook on, the bench's repeats go without the
 * ENCAP flag, which only sets tunnel metadata for GSO. */
#define DSR_BENCH_ENCAP_FLAG(flag) (dsr_test_restore() ? 0 : (flag))
#define DSR_BENCH_SAVE(skb, macs) bpf_skb_load_bytes(skb, 0, macs, 2 * ETH_ALEN)
#define DSR_BENCH_RESTORE(skb, macs, overhead) dsr_bench_restore(skb, macs, overhead)
#else
#define DSR_BENCH_ENCAP_FLAG(flag) (flag)
#define DSR_BENCH_SAVE(skb, macs) do { } while (0)
#define DSR_BENCH_RESTORE(skb, macs, overhead) do { } while (0)
#endif

/*
 * tc: a packet @p of a DSR flow (SERVICE entry @e flagged CT_F_DSR;
 * @state: SNAT_FLOW_*, how the caller found it) to backend @be on another
 * node. Checks the MTU, encapsulates, and redirects toward the backend.
 * Returns REASON_DSR_ENCAP (redirected), REASON_FRAG_NEEDED_REPLY (the
 * packet became the ICMP reply), or -DROP_*. A new flow that cannot be sent
 * leaves no conntrack entry behind: its next packet chooses again.
 * Not inlined: its keys and headers get their own stack frame.
 */
static __noinline int dsr4_forward(struct __sk_buff *skb, const struct pkt *p,
				   const struct lb4_backend *be, struct ct_entry *e, int state)
{
	struct bpf_fib_lookup fib;
	union {
		struct iphdr outer;
		struct ct4_key key; /* to undo a new flow's entry on failure */
	} h;
	__be32 saddr = 0;
	long rc;
	int ret;
#ifdef DSR_RESTORE_HOOK
	__u8 macs[2 * ETH_ALEN] = {};
#endif

	/* The backend must listen on the frontend's port (compile's rule);
	 * fragments cannot follow their first through the tunnel. */
	if (be->port != p->dport || (p->flags & PKT_F_FRAG_FIRST) || !p->l3_len ||
	    p->l3_len + DSR4_OVERHEAD > 0xffff) {
		ret = -DROP_UNSUPPORTED;
		goto fail;
	}

	rc = dsr4_route(skb, p, be->addr, &fib, &saddr);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		/* The flow stays: a smaller packet of it goes through. 68:
		 * the least MTU an IPv4 host must accept (RFC 791). */
		return DSR_TOO_BIG | (fib.mtu_result > DSR4_OVERHEAD + 68 ?
					      fib.mtu_result - DSR4_OVERHEAD : 68);
	}
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) || !saddr) {
		ret = -DROP_FIB_LOOKUP;
		goto fail;
	}

	dsr4_outer(&h.outer, saddr, be->addr, p->l3_len, dsr4_inner_tos(skb));
	DSR_BENCH_SAVE(skb, macs);
	/* ENCAP_L3_IPV4 sets the skb's tunnel metadata, so GSO packets are
	 * segmented as IPIP; gso_size shrinks by the overhead (no FIXED_GSO)
	 * so every segment still fits. UDP GSO cannot change gso_size. */
	if (bpf_skb_adjust_room(skb, DSR4_OVERHEAD, BPF_ADJ_ROOM_MAC,
				DSR_BENCH_ENCAP_FLAG(BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) |
					(p->proto == IPPROTO_UDP ? BPF_F_ADJ_ROOM_FIXED_GSO : 0)) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &h.outer, sizeof(h.outer), BPF_F_RECOMPUTE_CSUM)) {
		ret = -DROP_DSR_ENCAP;
		goto fail;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* The kernel routes again and resolves the neighbour. */
		bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
		return REASON_DSR_ENCAP;
	}
	if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0))
		return -DROP_DSR_ENCAP;
	bpf_redirect(fib.ifindex, 0);
	DSR_BENCH_RESTORE(skb, macs, DSR4_OVERHEAD);
	return REASON_DSR_ENCAP;

fail:
	if (state == SNAT_FLOW_NEW) {
		__builtin_memset(&h.key, 0, sizeof(h.key));
		h.key.saddr = p->saddr.v4;
		h.key.daddr = p->daddr.v4;
		h.key.sport = p->sport;
		h.key.dport = p->dport;
		h.key.proto = p->proto;
		h.key.dir = CT_DIR_SERVICE;
		bpf_map_delete_elem(&ct4, &h.key);
	}
	return ret;
}

/* lib/uplink.h's DSR branch: forward, or answer a too-big packet. */
static __always_inline int dsr4_send(struct __sk_buff *skb, const struct pkt *p,
				     const struct lb4_backend *be, struct ct_entry *e, int state)
{
	int ret = dsr4_forward(skb, p, be, e, state);

	if (ret >= DSR_TOO_BIG)
		return strait_icmp4_frag_needed(skb, p->l4_off - ETH_HLEN, p->l3_len, ret & 0xffff);
	return ret;
}

/*
 * The backend's node, a DSR packet whose REPLY key holds @e (NULL: none,
 * live): may it record its flow there, overriding @e? The newest flow
 * wins, and only a flow's creation takes a tuple: when the client reused
 * its port, a regular flow of this node (a non-DSR entry, lib/uplink.h
 * ct4_reply_claim()) and a DSR flow are one tuple at the pod. A DSR TCP
 * packet other than a bare SYN is a late packet of an older DSR flow: it
 * is delivered, the newer flow keeps the tuple. UDP has no creation mark:
 * a DSR datagram with no live DSR record of its frontend records it.
 */
static __always_inline int dsr_may_record(const struct ct_entry *e, __u8 proto, __u8 tf)
{
	if (!e || (e->flags & CT_F_DSR) || proto != IPPROTO_TCP)
		return 1;
	return (tf & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST)) == TCP_SYN;
}

/*
 * Is F:fp/proto a DSR frontend of this node? The same LoadBalancer or
 * externalIP frontend, or for a NodePort of the entry node's address, this
 * node's own NodePort of that port (every node serves every NodePort).
 */
static __always_inline int dsr4_frontend_known(__be32 addr, __be16 port, __u8 proto)
{
	const struct node_config *cfg;
	struct lb_service *svc;

	svc = lb4_lookup(addr, port, proto, LB_SCOPE_EXTERNAL);
	if (svc)
		return !!(svc->flags & LB_F_DSR);
	cfg = dsr_config();
	if (!cfg || !cfg->addr4)
		return 0;
	svc = lb4_lookup(cfg->addr4, port, proto, LB_SCOPE_EXTERNAL);
	return svc && svc->kind == LB_KIND_NODE_PORT && (svc->flags & LB_F_DSR);
}

/*
 * tc ingress of the backend's node: @p is IPIP (p->proto IPPROTO_IPIP, the
 * inner IPv4 header at p->l4_off). A DSR packet is decapsulated, its flow
 * recorded and its destination rewritten to the backend (the outer
 * destination); anything else passes untouched (REASON_PASS_UNKNOWN_PROTO,
 * as any IPIP did before). Returns REASON_DSR_DECAP or -DROP_*.
 */
static __noinline int dsr4_decap(struct __sk_buff *skb, struct pkt *p)
{
	struct ct4_key key = {};
	struct lb4_revnat fe = {};
	struct lb4_revnat *known;
	struct ct_entry fresh;
	struct ct_entry *e;
	struct iphdr in;
	__u8 l4[14]; /* ports, and the TCP flags in byte 13 */
	__u32 outer, hlen;
	__u8 tf = 0;
	__u64 now;
	int ret;

	if (p->flags & (PKT_F_FRAG_FIRST | PKT_F_FRAG_LATER))
		return REASON_PASS_UNKNOWN_PROTO; /* our outer headers carry DF */
	outer = p->l4_off - ETH_HLEN;
	if (bpf_skb_load_bytes(skb, p->l4_off, &in, sizeof(in)))
		return REASON_PASS_UNKNOWN_PROTO;
	hlen = in.ihl * 4;
	if (in.version != 4 || hlen < sizeof(in) || hlen > 60 || !proto_has_ports(in.protocol) ||
	    (in.frag_off & bpf_htons(IPV4_OFFSET | IPV4_MF)))
		return REASON_PASS_UNKNOWN_PROTO;
	__builtin_memset(l4, 0, sizeof(l4));
	if (bpf_skb_load_bytes(skb, p->l4_off + hlen, l4, in.protocol == IPPROTO_TCP ? 14 : 4))
		return REASON_PASS_UNKNOWN_PROTO;
	if (in.protocol == IPPROTO_TCP)
		tf = l4[13];

	/* The reply as it will leave the backend: {B, C, fp, cp}. */
	key.saddr = p->daddr.v4;
	key.daddr = in.saddr;
	__builtin_memcpy(&key.sport, &l4[2], 2);
	__builtin_memcpy(&key.dport, &l4[0], 2);
	key.proto = in.protocol;
	key.dir = CT_DIR_REPLY;
	fe.addr = in.daddr;
	fe.port = key.sport;
	now = ct_now();

	e = ct4_lookup(&key, now);
	known = e && (e->flags & CT_F_DSR) ? bpf_map_lookup_elem(&dsr_revnat4, &key) : NULL;
	if (known && known->addr == fe.addr && known->port == fe.port) {
		ct_touch(e, key.proto, tf, CT_DIR_SERVICE, now);
	} else {
		/* New here (or the client reused its port for another
		 * frontend): only for a frontend we would DSR ourselves. */
		if (!dsr4_frontend_known(fe.addr, fe.port, key.proto))
			return REASON_PASS_UNKNOWN_PROTO;
		if (dsr_may_record(e, key.proto, tf)) {
			ct_entry_init(&fresh, key.proto, tf, 0, 0, now);
			fresh.flags |= CT_F_DSR;
			if (bpf_map_update_elem(&dsr_revnat4, &key, &fe, BPF_ANY) ||
			    bpf_map_update_elem(&ct4, &key, &fresh, BPF_ANY))
				return -DROP_CT_FULL;
		}
	}

	/* Outer header off; GSO sizes stay as they were (FIXED_GSO), so
	 * segments of a GRO'd tunnel packet stay within the MTU. */
	if (bpf_skb_adjust_room(skb, -(__s32)outer, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
		return -DROP_DSR_DECAP;
	/* @p describes the inner packet from here on (the caller is done
	 * with it): what nat4_rewrite() reads of a packet. */
	p->proto = in.protocol;
	p->l4_off = ETH_HLEN + hlen;
	p->daddr.v4 = fe.addr;
	p->dport = fe.port;
	ret = nat4_rewrite(skb, p, NAT_DST, key.saddr, fe.port);
	if (ret != CONTINUE)
		return ret;
	return REASON_DSR_DECAP;
}

/*
 * TCP SYN-ACK of a DSR flow leaving its backend: lower the MSS option to
 * what fits this node's uplink MTU @mtu once the entry node adds
 * @overhead. The option may sit at an odd offset: the checksum is updated
 * over the aligned 32-bit word holding it. @l4_off: TCP header; @ip_hlen:
 * the IP header(s) length. Returns CONTINUE or -DROP_CSUM.
 * A global function, verified once on its own: the option walk is a loop
 * whose paths would otherwise multiply with every caller state.
 */
/* @word with its in-memory byte @k (0..3) replaced by @v. */
static __always_inline __u32 byte_set(__u32 word, __u32 k, __u8 v)
{
	__u32 shift = (k & 3) * 8;

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
	shift = 24 - shift;
#endif
	return (word & ~(0xffU << shift)) | ((__u32)v << shift);
}

__noinline int strait_dsr_clamp_mss(struct __sk_buff *skb, __u32 l4_off, __u32 mtu,
				    __u32 overhead, __u32 ip_hlen)
{
	/* 64 bytes for 40 of options: indexes masked with 63 stay inside. */
	__u8 opts[64] __attribute__((aligned(8)));
	__u32 csum_off = l4_off + offsetof(struct tcphdr, check);
	__u32 optlen, i = 0, n, at;
	__u16 mss, clamp;
	__be32 old, new;
	__u8 doff;

	if (mtu <= overhead + ip_hlen + sizeof(struct tcphdr))
		return CONTINUE;
	clamp = mtu - overhead - ip_hlen - sizeof(struct tcphdr);
	if (bpf_skb_load_bytes(skb, l4_off + 12, &doff, 1))
		return CONTINUE;
	optlen = (doff >> 4) * 4;
	if (optlen <= sizeof(struct tcphdr))
		return CONTINUE;
	optlen -= sizeof(struct tcphdr);
	if (optlen > TCP_MAX_OPTLEN)
		return CONTINUE;
	__builtin_memset(opts, 0, sizeof(opts));
	if (bpf_skb_load_bytes(skb, l4_off + sizeof(struct tcphdr), opts, optlen))
		return CONTINUE;

	/* The first TCP_MSS_SCAN options: every common stack sends MSS first
	 * in a SYN-ACK, a few NOPs at most before it. (Each step may fork the
	 * verifier's paths; all 40 possible options would be 2^40 of them.) */
	for (n = 0; n < TCP_MSS_SCAN; n++) {
		__u8 kind, len;

		if (i + 1 >= optlen)
			return CONTINUE;
		kind = opts[i & 63];
		if (kind == TCPOPT_EOL)
			return CONTINUE;
		if (kind == TCPOPT_NOP) {
			i++;
			continue;
		}
		len = opts[(i + 1) & 63];
		if (len < 2)
			return CONTINUE; /* malformed: leave it */
		if (kind != TCPOPT_MSS) {
			i += len;
			continue;
		}
		if (len != 4 || i + 4 > optlen)
			return CONTINUE;
		mss = ((__u16)opts[(i + 2) & 63] << 8) | opts[(i + 3) & 63];
		if (mss <= clamp)
			return CONTINUE;
		/* The checksum adds 16-bit words counted from the TCP header
		 * (itself 4-aligned); the value may sit at an odd offset, so
		 * the update covers the aligned 32-bit word holding it. */
		at = sizeof(struct tcphdr) + i + 2;
		if (bpf_skb_load_bytes(skb, l4_off + (at & ~3U), &old, 4))
			return CONTINUE;
		/* Byte k of the word in memory is bits 8k..8k+7 of the
		 * loaded value (little-endian load of network bytes); shifts,
		 * not stack pointer arithmetic, which the verifier refuses. */
		new = byte_set(old, at & 3, clamp >> 8);
		if ((at & 3) == 3) {
			/* Straddles two words: the second byte is in the next. */
			__be32 old2, new2;

			if (bpf_skb_load_bytes(skb, l4_off + (at & ~3U) + 4, &old2, 4))
				return CONTINUE;
			new2 = byte_set(old2, 0, clamp & 0xff);
			if (bpf_skb_store_bytes(skb, l4_off + (at & ~3U) + 4, &new2, 4, 0) ||
			    bpf_l4_csum_replace(skb, csum_off, old2, new2, 4))
				return -DROP_CSUM;
		} else {
			new = byte_set(new, (at & 3) + 1, clamp & 0xff);
		}
		if (bpf_skb_store_bytes(skb, l4_off + (at & ~3U), &new, 4, 0) ||
		    bpf_l4_csum_replace(skb, csum_off, old, new, 4))
			return -DROP_CSUM;
		return CONTINUE;
	}
	return CONTINUE;
}

/* The MTU of the device the reply leaves by (tc egress: skb->ifindex). */
static __always_inline __u32 dsr_dev_mtu(struct __sk_buff *skb)
{
	__u32 mtu = 0;

#ifdef STRAIT_TEST_HOOKS
	mtu = dsr_test_mtu();
	if (mtu)
		return mtu;
#endif
	bpf_check_mtu(skb, 0, &mtu, 0, 0);
	return mtu;
}

/*
 * tc egress of the backend's node: a reply whose REPLY entry @e (key @key)
 * says CT_F_DSR leaves with the frontend as its source; a SYN-ACK gets its
 * MSS clamped first. Returns REASON_DSR_REVNAT, REASON_PASS_REPLY_UNTRACKED
 * (frontend record evicted) or -DROP_*.
 */
static __noinline int dsr4_reply(struct __sk_buff *skb, const struct pkt *p,
				 const struct ct4_key *key, struct ct_entry *e)
{
	struct lb4_revnat *fe;
	int ret;

	fe = bpf_map_lookup_elem(&dsr_revnat4, key);
	if (!fe)
		return REASON_PASS_REPLY_UNTRACKED;
	ct_touch(e, p->proto, p->tcp_flags, CT_DIR_REPLY, ct_now());
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) &&
	    !(p->flags & (PKT_F_FRAG_FIRST | PKT_F_L4_SHORT))) {
		ret = strait_dsr_clamp_mss(skb, p->l4_off, dsr_dev_mtu(skb), DSR4_OVERHEAD,
				    p->l4_off - ETH_HLEN);
		if (ret != CONTINUE)
			return ret;
	}
	ret = nat4_rewrite(skb, p, NAT_SRC, fe->addr, fe->port);
	if (ret != CONTINUE)
		return ret;
	return REASON_DSR_REVNAT;
}
#endif /* !STRAIT_XDP */

/* ---------------------------------------------------------------- IPv6 */

static __always_inline int addr6_is_zero(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return !(w[0] | w[1] | w[2] | w[3]);
}

/* The outer header: version, traffic class and flow label are the inner
 * packet's first word @vtcfl (DSCP/ECN kept, per-flow ECMP entropy kept). */
static __always_inline void dsr6_outer(struct ipv6hdr *ip6, const __u8 *saddr, const __u8 *daddr,
				       __u32 l3_len, __be32 vtcfl)
{
	__builtin_memcpy(ip6, &vtcfl, 4);
	ip6->payload_len = bpf_htons(l3_len);
	ip6->nexthdr = IPPROTO_IPV6;
	ip6->hop_limit = DSR_HOP_LIMIT;
	__builtin_memcpy(&ip6->saddr, saddr, 16);
	__builtin_memcpy(&ip6->daddr, daddr, 16);
}

static __always_inline long dsr6_route(struct __ctx_buff *ctx, const struct pkt *p,
				       const __u8 *daddr, struct bpf_fib_lookup *fib, __u8 *saddr)
{
	const struct node_config *cfg = dsr_config();
	int have = cfg && !addr6_is_zero(cfg->addr6);
	long rc;

	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET6;
	fib->l4_protocol = IPPROTO_IPV6;
	if (have)
		__builtin_memcpy(fib->ipv6_src, cfg->addr6, 16);
	__builtin_memcpy(fib->ipv6_dst, daddr, 16);
	rc = dsr_fib_lookup(ctx, fib, ctx_is_gso(ctx) ? 0 : p->l3_len + DSR6_OVERHEAD, !have);
	if (have)
		__builtin_memcpy(saddr, cfg->addr6, 16);
	else
		__builtin_memcpy(saddr, fib->ipv6_src, 16);
	return rc;
}

/* A packet DSR can carry: no extension headers (the backend's node reads
 * the inner L4 header right after the fixed one). */
static __always_inline int dsr6_plain(const struct pkt *p)
{
	return p->l4_off == ETH_HLEN + sizeof(struct ipv6hdr);
}

#ifndef STRAIT_XDP
static __noinline int dsr6_forward(struct __sk_buff *skb, const struct pkt *p,
				   const struct lb6_backend *be, struct ct_entry *e, int state)
{
	struct bpf_fib_lookup fib;
	union {
		struct ipv6hdr outer;
		struct ct6_key key; /* to undo a new flow's entry on failure */
	} h;
	__u8 saddr[16];
	__be32 vtcfl = 0;
	long rc;
	int ret;

	if (be->port != p->dport || (p->flags & PKT_F_FRAG_FIRST) || !dsr6_plain(p) ||
	    !p->l3_len || p->l3_len > 0xffff) {
		ret = -DROP_UNSUPPORTED;
		goto fail;
	}

	rc = dsr6_route(skb, p, be->addr, &fib, saddr);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		__u32 mtu = fib.mtu_result > DSR6_OVERHEAD ? fib.mtu_result - DSR6_OVERHEAD : 0;

		/* Below 1280 no client can follow; the route is broken
		 * for IPv6 anyway (RFC 8200 5). */
		return DSR_TOO_BIG | (mtu < IPV6_MIN_MTU ? IPV6_MIN_MTU : mtu);
	}
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) ||
	    addr6_is_zero(saddr)) {
		ret = -DROP_FIB_LOOKUP;
		goto fail;
	}

	bpf_skb_load_bytes(skb, ETH_HLEN, &vtcfl, 4);
	dsr6_outer(&h.outer, saddr, be->addr, p->l3_len, vtcfl);
	if (bpf_skb_adjust_room(skb, DSR6_OVERHEAD, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 |
					(p->proto == IPPROTO_UDP ? BPF_F_ADJ_ROOM_FIXED_GSO : 0)) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &h.outer, sizeof(h.outer), BPF_F_RECOMPUTE_CSUM)) {
		ret = -DROP_DSR_ENCAP;
		goto fail;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
		return REASON_DSR_ENCAP;
	}
	if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0))
		return -DROP_DSR_ENCAP;
	bpf_redirect(fib.ifindex, 0);
	return REASON_DSR_ENCAP;

fail:
	if (state == SNAT_FLOW_NEW) {
		__builtin_memset(&h.key, 0, sizeof(h.key));
		__builtin_memcpy(h.key.saddr, p->saddr.v6, 16);
		__builtin_memcpy(h.key.daddr, p->daddr.v6, 16);
		h.key.sport = p->sport;
		h.key.dport = p->dport;
		h.key.proto = p->proto;
		h.key.dir = CT_DIR_SERVICE;
		bpf_map_delete_elem(&ct6, &h.key);
	}
	return ret;
}

static __always_inline int dsr6_send(struct __sk_buff *skb, const struct pkt *p,
				     const struct lb6_backend *be, struct ct_entry *e, int state)
{
	int ret = dsr6_forward(skb, p, be, e, state);

	if (ret >= DSR_TOO_BIG)
		return strait_icmp6_pkt_too_big(skb, p->l3_len, ret & 0xffff);
	return ret;
}

static __always_inline int dsr6_frontend_known(const __u8 *addr, __be16 port, __u8 proto)
{
	const struct node_config *cfg;
	struct lb_service *svc;

	svc = lb6_lookup(addr, port, proto, LB_SCOPE_EXTERNAL);
	if (svc)
		return !!(svc->flags & LB_F_DSR);
	cfg = dsr_config();
	if (!cfg || addr6_is_zero(cfg->addr6))
		return 0;
	svc = lb6_lookup(cfg->addr6, port, proto, LB_SCOPE_EXTERNAL);
	return svc && svc->kind == LB_KIND_NODE_PORT && (svc->flags & LB_F_DSR);
}

/* IPv6 counterpart of dsr4_decap(): p->proto IPPROTO_IPV6 (IP6IP6). */
static __noinline int dsr6_decap(struct __sk_buff *skb, struct pkt *p)
{
	struct ct6_key key = {};
	struct lb6_revnat fe = {};
	struct lb6_revnat *known;
	struct ct_entry fresh;
	struct ct_entry *e;
	__u8 hdr[8]; /* the inner fixed header's first 8 bytes */
	__u8 l4[14];
	__u32 outer;
	__u8 nh, tf = 0;
	__u64 now;
	int ret;

	if (p->flags & (PKT_F_FRAG_FIRST | PKT_F_FRAG_LATER))
		return REASON_PASS_UNKNOWN_PROTO;
	outer = p->l4_off - ETH_HLEN;
	/* Read field by field: the addresses straight into the keys, so the
	 * frame stays small (it sits on top of the program's). */
	if (bpf_skb_load_bytes(skb, p->l4_off, hdr, sizeof(hdr)) ||
	    bpf_skb_load_bytes(skb, p->l4_off + offsetof(struct ipv6hdr, saddr), key.daddr, 16) ||
	    bpf_skb_load_bytes(skb, p->l4_off + offsetof(struct ipv6hdr, daddr), fe.addr, 16))
		return REASON_PASS_UNKNOWN_PROTO;
	nh = hdr[offsetof(struct ipv6hdr, nexthdr)];
	if ((hdr[0] >> 4) != 6 || !proto_has_ports(nh))
		return REASON_PASS_UNKNOWN_PROTO;
	__builtin_memset(l4, 0, sizeof(l4));
	if (bpf_skb_load_bytes(skb, p->l4_off + sizeof(struct ipv6hdr), l4,
			       nh == IPPROTO_TCP ? 14 : 4))
		return REASON_PASS_UNKNOWN_PROTO;
	if (nh == IPPROTO_TCP)
		tf = l4[13];

	__builtin_memcpy(key.saddr, p->daddr.v6, 16);
	__builtin_memcpy(&key.sport, &l4[2], 2);
	__builtin_memcpy(&key.dport, &l4[0], 2);
	key.proto = nh;
	key.dir = CT_DIR_REPLY;
	fe.port = key.sport;
	now = ct_now();

	e = ct6_lookup(&key, now);
	known = e && (e->flags & CT_F_DSR) ? bpf_map_lookup_elem(&dsr_revnat6, &key) : NULL;
	if (known && addr6_eq(known->addr, fe.addr) && known->port == fe.port) {
		ct_touch(e, key.proto, tf, CT_DIR_SERVICE, now);
	} else {
		if (!dsr6_frontend_known(fe.addr, fe.port, key.proto))
			return REASON_PASS_UNKNOWN_PROTO;
		if (dsr_may_record(e, key.proto, tf)) {
			ct_entry_init(&fresh, key.proto, tf, 0, 0, now);
			fresh.flags |= CT_F_DSR;
			if (bpf_map_update_elem(&dsr_revnat6, &key, &fe, BPF_ANY) ||
			    bpf_map_update_elem(&ct6, &key, &fresh, BPF_ANY))
				return -DROP_CT_FULL;
		}
	}

	if (bpf_skb_adjust_room(skb, -(__s32)outer, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
		return -DROP_DSR_DECAP;
	p->proto = nh;
	p->l4_off = ETH_HLEN + sizeof(struct ipv6hdr);
	__builtin_memcpy(p->daddr.v6, fe.addr, 16);
	p->dport = fe.port;
	ret = nat6_rewrite(skb, p, NAT_DST, key.saddr, fe.port);
	if (ret != CONTINUE)
		return ret;
	return REASON_DSR_DECAP;
}

static __noinline int dsr6_reply(struct __sk_buff *skb, const struct pkt *p,
				 const struct ct6_key *key, struct ct_entry *e)
{
	struct lb6_revnat *fe;
	int ret;

	fe = bpf_map_lookup_elem(&dsr_revnat6, key);
	if (!fe)
		return REASON_PASS_REPLY_UNTRACKED;
	ct_touch(e, p->proto, p->tcp_flags, CT_DIR_REPLY, ct_now());
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK) &&
	    !(p->flags & (PKT_F_FRAG_FIRST | PKT_F_L4_SHORT))) {
		ret = strait_dsr_clamp_mss(skb, p->l4_off, dsr_dev_mtu(skb), DSR6_OVERHEAD,
				    p->l4_off - ETH_HLEN);
		if (ret != CONTINUE)
			return ret;
	}
	ret = nat6_rewrite(skb, p, NAT_SRC, fe->addr, fe->port);
	if (ret != CONTINUE)
		return ret;
	return REASON_DSR_REVNAT;
}
#endif /* !STRAIT_XDP */

#endif /* STRAIT_DSR_H */
