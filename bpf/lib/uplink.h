/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * uplink.h — the tc pipeline on a node's uplink, per family:
 *   ingress  client -> frontend: Service lookup, conntrack, backend
 *            selection, DNAT; ICMP errors about our replies; fragments.
 *   egress   backend -> client: reverse NAT of tracked replies; ICMP
 *            errors from backends; fragments.
 * Every function returns per metrics.h: an outcome reason, -DROP_*, never
 * CONTINUE.
 *
 * Conntrack race accounting: a packet that lost the SERVICE entry insert
 * race and joined the winner's backend is counted once, as
 * REASON_CT_RACE_JOINED (not also as REASON_SERVICE_DNAT); it is translated
 * all the same (TC_ACT_OK). Translated ingress packets are the sum of both.
 * A SNAT flow's joiner is counted as REASON_SERVICE_SNAT: its action is the
 * redirect, which REASON_CT_RACE_JOINED's TC_ACT_OK would cancel.
 *
 * North-south (issue 6), at ingress, in this order:
 *  1. replies of SNAT flows (addressed to the node's SNAT ports) are
 *     reversed before any Service lookup (lib/snat.h);
 *  2. loadBalancerSourceRanges: a client outside the ranges is dropped
 *     (DROP_SOURCE_RANGE) before conntrack or anything else;
 *  3. a new flow of a NodePort / externalIP / LoadBalancer frontend whose
 *     backend runs on another node is SNATed to the node's address
 *     (CT_F_SNAT, lib/snat.h) and redirected to the backend; a local
 *     backend, externalTrafficPolicy: Local (client address kept) and
 *     ClusterIP traffic are DNATed and handed to the stack as before;
 *  4. externalTrafficPolicy: Local with endpoints elsewhere only:
 *     DROP_NO_LOCAL_ENDPOINTS (kube-proxy drops these too; a Service with
 *     no endpoints at all is rejected with ICMP).
 * sessionAffinity: ClientIP keys on the client address
 * (lb{4,6}_select_backend()).
 */
#ifndef STRAIT_UPLINK_H
#define STRAIT_UPLINK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "conntrack.h"
#include "flowcache.h"
#include "frag.h"
#include "icmp.h"
#include "lb.h"
#include "maps.h"
#include "metrics.h"
#include "nat.h"
#include "parse.h"
#include "snat.h"
#include "dsr.h"

/*
 * Does a new flow of frontend @svc to a backend with BE_F_* @be_flags leave
 * this node (SNAT or DSR)? Only north-south frontends; ClusterIP traffic
 * from outside is routed as before. externalTrafficPolicy: Local keeps the
 * client address (its slots only hold local endpoints anyway).
 */
static __always_inline int lb_north_south_remote(const struct lb_service *svc, __u8 be_flags)
{
	if (svc->kind == LB_KIND_CLUSTER_IP || (svc->flags & LB_F_LOCAL_EXTERNAL))
		return 0;
	return !(be_flags & BE_F_LOCAL);
}

/*
 * lb_hairpin — a pod reaching a Service through the per-packet path (tc at
 * its veth's ingress, lxc*) and getting itself as the backend. DNAT alone
 * sends P:cp -> P:bp back to P, whose reply P:bp -> P:cp never leaves it
 * and matches no socket (the client's socket is connected to the
 * frontend). kube-proxy masquerades this case; so do we: the flow is SNATed
 * like a north-south flow to a remote backend (lib/snat.h, CT_F_SNAT) to
 * the node's address from `config` and a port of the SNAT range, and
 * redirected back to the pod's veth (fib.h). The pod answers the node
 * address, its reply enters the same veth's ingress, where snat{4,6}_reverse
 * (checked before any Service lookup) turns it back into F:fp -> P:cp and
 * redirects it to the pod.
 * Why the node's address (not the veth's node-side address): it is in
 * `config` for every device, every pod routes to it (kubelet probes and
 * NodePorts need that), and the SNAT reverse path already keys on it, so
 * hairpin flows share one port allocator and reverse path with the
 * north-south ones. The server sees the node's address, as under
 * kube-proxy (whose MASQUERADE picks the node-side address of the route).
 * A node without an address of the family or a SNAT range in `config`
 * DNATs only, as before. Counted REASON_HAIRPIN_SNAT (forward) and
 * REASON_SNAT_REVNAT (replies).
 */

/* ---------------------------------------------------------------- IPv4 */

/*
 * The conntrack flag a new flow to @be gets: 0 (delivered here, or routed
 * with DNAT only), CT_F_SNAT, or (lib/dsr.h) CT_F_DSR. A node without an
 * IPv4 address or SNAT range in `config` cannot SNAT and DNATs only.
 */
static __always_inline __u16 lb4_remote_mode(const struct lb_service *svc,
					     const struct lb4_backend *be, const struct pkt *p)
{
	/* Hairpin: see lb_hairpin above. */
	if (be->addr == p->saddr.v4)
		return snat4_configured() ? CT_F_SNAT : 0;
	if (!lb_north_south_remote(svc, be->flags))
		return 0;
	if (dsr_wanted(svc, be->flags))
		return CT_F_DSR;
	return snat4_configured() ? CT_F_SNAT : 0;
}

/*
 * A packet of a flow whose backend is on another node (CT_F_SNAT or
 * CT_F_DSR in @e): the one branch between SNAT and DSR. @state: SNAT_FLOW_*.
 */
static __always_inline int lb4_to_remote(struct __sk_buff *skb, struct pkt *p,
					 const struct lb_service *svc, const struct lb4_backend *be,
					 const struct ct4_key *key, struct ct_entry *e, int state,
					 __u64 now)
{
	int ret;

	if (e->flags & CT_F_DSR)
		return dsr4_send(skb, p, be, e, state);
	ret = snat4_forward(skb, p, be, e, state);
	return ret == REASON_SERVICE_SNAT && be->addr == p->saddr.v4 ? REASON_HAIRPIN_SNAT : ret;
}

/* The REPLY key of a flow: the reply as it leaves backend @be for client. */
static __always_inline void ct4_reply_key(struct ct4_key *k, const struct pkt *p,
					  const struct lb4_backend *be)
{
	k->saddr = be->addr;
	k->daddr = p->saddr.v4;
	k->sport = be->port;
	k->dport = p->sport;
	k->proto = p->proto;
	k->dir = CT_DIR_REPLY;
}

/*
 * Write the REPLY entry @fresh of a regular flow being created (new, or a
 * TCP connection reopening a closing tuple), whoever holds the key. When a
 * client reuses its port, a DSR flow recorded here (lib/dsr.h: REPLY entry
 * CT_F_DSR + dsr_revnat under the same key, the tuple at the pod being the
 * same) and a later flow through this node's own frontend collide: the
 * newest flow wins, and the DSR flow's frontend record goes, so nothing
 * turns this flow's replies into the DSR frontend's. Only on creation: a
 * refresh never takes a tuple back (ct4_follow()). Returns 0, or -1 when
 * the entry could not be written.
 */
static __always_inline int ct4_reply_claim(const struct ct4_key *rkey, const struct ct_entry *fresh)
{
	if (bpf_map_update_elem(&ct4, rkey, fresh, BPF_ANY))
		return -1;
	bpf_map_delete_elem(&dsr_revnat4, rkey);
	return 0;
}

static __always_inline int lb4_ingress(struct __sk_buff *skb, struct pkt *p)
{
	/* Aligned: the flow hash reads it as 32-bit words. */
	struct ct4_key key __attribute__((aligned(8))) = {};
	struct ct4_key rkey = {};
	int reason = REASON_SERVICE_DNAT;
	struct lb_service *svc;
	struct lb4_backend *be;
	struct ct_entry entry;
	struct ct_entry *e;
	int established = 0;
	__u32 backend_id;
	__u16 remote;
	__u64 now;
	int ret;

	/* An established flow's packet: its cached rewrite (lib/flowcache.h). */
	if (flow_cache_try(skb, p, FLOW_HOOK_TC_INGRESS))
		return REASON_SERVICE_DNAT;

	if (p->flags & PKT_F_FRAG_LATER)
		return frag_follow(skb, p, FRAG_REWRITE_DADDR);
	if (p->proto == IPPROTO_IPIP)
		return dsr4_decap(skb, p); /* DSR receiver (lib/dsr.h) */
	if (p->proto == IPPROTO_ICMP)
		return snat4_icmp_error(skb, p); /* SNAT flows, else icmp.h */
	if (!proto_has_ports(p->proto))
		return REASON_PASS_UNKNOWN_PROTO;
	if (!(p->flags & PKT_F_HAS_PORTS))
		return REASON_PASS; /* not even ports: cannot be matched */

	ret = snat4_reverse(skb, p);
	if (ret != CONTINUE)
		return ret;

	svc = lb4_lookup_service(p);
	if (!svc)
		return REASON_PASS;
	if (p->flags & PKT_F_L4_SHORT)
		return -DROP_INVALID_L4;
	if ((svc->flags & LB_F_SOURCE_RANGES) && !lb4_source_allowed(svc, p->saddr.v4))
		return -DROP_SOURCE_RANGE;

	key.saddr = p->saddr.v4;
	key.daddr = p->daddr.v4;
	key.sport = p->sport;
	key.dport = p->dport;
	key.proto = p->proto;
	key.dir = CT_DIR_SERVICE;
	now = ct_now();

	/* A tracked flow is translated like its flow whatever its flags, seq
	 * or window: we never reset a healthy connection (kubernetes#74839).
	 * It also keeps its backend while the backend exists, even with the
	 * Service down to zero endpoints (a quarantined or terminating
	 * backend still serves its flows). */
	e = ct4_lookup(&key, now);
	if (e) {
		be = bpf_map_lookup_elem(&backends4, &e->backend_id);
		if (be) {
			int reopen = ct_tcp_reopens(e, p->proto, p->tcp_flags);
			int touched = ct_touch(e, p->proto, p->tcp_flags, CT_DIR_SERVICE, now);

			if (e->flags & (CT_F_SNAT | CT_F_DSR))
				return lb4_to_remote(skb, p, svc, be, &key, e,
						     touched ? SNAT_FLOW_TOUCHED : SNAT_FLOW_TRACKED,
						     now);
			if (touched) {
				ct4_reply_key(&rkey, p, be);
				if (reopen) {
					/* A new connection: see ct4_reply_claim(). */
					ct_entry_peer(&entry, e);
					ct4_reply_claim(&rkey, &entry);
				} else {
					ct4_follow(&rkey, e);
				}
			}
			established = 1;
			goto xlate;
		}
		/* The backend is gone (endpoint removed): choose again, so
		 * UDP flows move on as kube-proxy's conntrack flush does. */
	}

	if (svc->backend_count == 0) {
		if (svc->flags & LB_F_REJECT_NO_ENDPOINTS)
			return icmp4_no_endpoints_reply(skb, p);
		return svc->flags & LB_F_LOCAL_EXTERNAL ? -DROP_NO_LOCAL_ENDPOINTS
							: -DROP_NO_ENDPOINTS;
	}
	if (p->proto == IPPROTO_TCP && !ct_tcp_may_open(p->tcp_flags))
		return -DROP_TCP_INVALID;

	ret = lb4_select_backend(svc, lb4_flow_hash(&key), 0, p->saddr.v4, &backend_id);
	if (ret != CONTINUE)
		return ret;
	be = bpf_map_lookup_elem(&backends4, &backend_id);
	if (!be)
		return -DROP_BACKEND_MISSING;
	remote = lb4_remote_mode(svc, be, p);
	/* Refuse what nat4_rewrite() / snat4_forward() would refuse before
	 * creating state. */
	if (p->proto == IPPROTO_SCTP && (be->port != p->dport || remote))
		return -DROP_UNSUPPORTED;
	if (remote && (p->flags & PKT_F_FRAG_FIRST))
		return -DROP_UNSUPPORTED;

	ct_entry_init(&entry, p->proto, p->tcp_flags, backend_id, svc->rev_nat_id, now);
	entry.flags |= remote;
	ret = ct4_insert_service(&key, &entry, now);
	if (ret < 0)
		return ret;
	if (ret == CT_JOINED) {
		reason = REASON_CT_RACE_JOINED;
		be = bpf_map_lookup_elem(&backends4, &entry.backend_id);
		if (!be)
			return -DROP_BACKEND_MISSING;
		remote = lb4_remote_mode(svc, be, p);
		entry.flags = (entry.flags & ~(CT_F_SNAT | CT_F_DSR)) | remote;
	}
	if (remote)
		return lb4_to_remote(skb, p, svc, be, &key, &entry,
				     ret == CT_JOINED ? SNAT_FLOW_JOINED : SNAT_FLOW_NEW, now);

	/* Written by the loser too: same content, and the winner may not have
	 * written it yet. */
	ct4_reply_key(&rkey, p, be);
	entry.tcp_flags = 0;
	if (ct4_reply_claim(&rkey, &entry)) {
		/* Without its REPLY entry the flow's replies would leave
		 * untranslated: undo ours rather than keep half a flow. */
		if (ret == CT_INSERTED)
			bpf_map_delete_elem(&ct4, &key);
		return -DROP_CT_FULL;
	}

xlate:
	if (p->flags & PKT_F_FRAG_FIRST) {
		union strait_addr to = {};

		to.v4 = be->addr;
		ret = frag_record(p, &to, FRAG_REWRITE_DADDR);
		if (ret != CONTINUE)
			return ret;
	}
	ret = nat4_rewrite(skb, p, NAT_DST, be->addr, be->port);
	if (ret != CONTINUE)
		return ret;
	if (established)
		flow_cache_fill(skb, p, PKT_IPV4, FLOW_HOOK_TC_INGRESS, e, &be->addr, be->port, now);
	return reason;
}

static __always_inline int lb4_egress(struct __sk_buff *skb, struct pkt *p)
{
	struct ct4_key key = {};
	struct ct4_key skey = {};
	struct lb4_revnat *rn;
	struct ct_entry *e;
	__u64 now;
	int ret;

	/* A tracked reply: its cached rewrite (lib/flowcache.h). */
	if (flow_cache_try(skb, p, FLOW_HOOK_TC_EGRESS))
		return REASON_REVNAT;

	if (p->flags & PKT_F_FRAG_LATER)
		return frag_follow(skb, p, FRAG_REWRITE_SADDR);
	if (p->proto == IPPROTO_ICMP)
		return icmp4_error_egress(skb, p);
	if (!proto_has_ports(p->proto))
		return REASON_PASS_UNKNOWN_PROTO;
	if (!(p->flags & PKT_F_HAS_PORTS) || (p->flags & PKT_F_L4_SHORT))
		return REASON_PASS;

	key.saddr = p->saddr.v4;
	key.daddr = p->daddr.v4;
	key.sport = p->sport;
	key.dport = p->dport;
	key.proto = p->proto;
	key.dir = CT_DIR_REPLY;
	now = ct_now();
	e = ct4_lookup(&key, now);
	if (!e)
		return REASON_PASS;
	if (e->flags & CT_F_DSR)
		return dsr4_reply(skb, p, &key, e); /* DSR receiver (lib/dsr.h) */
	rn = bpf_map_lookup_elem(&revnat4, &e->rev_nat_id);
	if (!rn)
		return REASON_PASS_REPLY_UNTRACKED; /* tracked, but its frontend is gone */

	if (ct_touch(e, p->proto, p->tcp_flags, CT_DIR_REPLY, now)) {
		/* The SERVICE entry, rebuilt from the reply and the frontend. */
		skey.saddr = p->daddr.v4;
		skey.daddr = rn->addr;
		skey.sport = p->dport;
		skey.dport = rn->port;
		skey.proto = p->proto;
		skey.dir = CT_DIR_SERVICE;
		ct4_follow(&skey, e);
	}

	if (p->flags & PKT_F_FRAG_FIRST) {
		union strait_addr to = {};

		to.v4 = rn->addr;
		ret = frag_record(p, &to, FRAG_REWRITE_SADDR);
		if (ret != CONTINUE)
			return ret;
	}
	ret = nat4_rewrite(skb, p, NAT_SRC, rn->addr, rn->port);
	if (ret != CONTINUE)
		return ret;
	flow_cache_fill(skb, p, PKT_IPV4, FLOW_HOOK_TC_EGRESS, e, &rn->addr, rn->port, now);
	return REASON_REVNAT;
}

/* ---------------------------------------------------------------- IPv6 */

static __always_inline __u16 lb6_remote_mode(const struct lb_service *svc,
					     const struct lb6_backend *be, const struct pkt *p)
{
	if (addr6_eq(be->addr, p->saddr.v6))
		return snat6_configured() ? CT_F_SNAT : 0;
	if (!lb_north_south_remote(svc, be->flags))
		return 0;
	if (dsr_wanted(svc, be->flags))
		return CT_F_DSR;
	return snat6_configured() ? CT_F_SNAT : 0;
}

/* The one branch between SNAT and DSR, IPv6 (see lb4_to_remote()). */
static __always_inline int lb6_to_remote(struct __sk_buff *skb, struct pkt *p,
					 const struct lb_service *svc, const struct lb6_backend *be,
					 const struct ct6_key *key, struct ct_entry *e, int state,
					 __u64 now)
{
	int ret;

	if (e->flags & CT_F_DSR)
		return dsr6_send(skb, p, be, e, state);
	ret = snat6_forward(skb, p, be, e, state);
	return ret == REASON_SERVICE_SNAT && addr6_eq(be->addr, p->saddr.v6) ? REASON_HAIRPIN_SNAT
									      : ret;
}

static __always_inline void ct6_reply_key(struct ct6_key *k, const struct pkt *p,
					  const struct lb6_backend *be)
{
	__builtin_memcpy(k->saddr, be->addr, 16);
	__builtin_memcpy(k->daddr, p->saddr.v6, 16);
	k->sport = be->port;
	k->dport = p->sport;
	k->proto = p->proto;
	k->dir = CT_DIR_REPLY;
}

static __always_inline int ct6_reply_claim(const struct ct6_key *rkey, const struct ct_entry *fresh)
{
	if (bpf_map_update_elem(&ct6, rkey, fresh, BPF_ANY))
		return -1;
	bpf_map_delete_elem(&dsr_revnat6, rkey);
	return 0;
}

static __always_inline int lb6_ingress(struct __sk_buff *skb, struct pkt *p)
{
	struct ct6_key key __attribute__((aligned(8))) = {};
	struct ct6_key rkey = {};
	int reason = REASON_SERVICE_DNAT;
	struct lb_service *svc;
	struct lb6_backend *be;
	struct ct_entry entry;
	struct ct_entry *e;
	int established = 0;
	__u32 backend_id;
	__u16 remote;
	__u64 now;
	int ret;

	/* An established flow's packet: its cached rewrite (lib/flowcache.h). */
	if (flow_cache_try(skb, p, FLOW_HOOK_TC_INGRESS))
		return REASON_SERVICE_DNAT;

	if (p->flags & PKT_F_FRAG_LATER)
		return frag_follow(skb, p, FRAG_REWRITE_DADDR);
	if (p->proto == IPPROTO_IPV6)
		return dsr6_decap(skb, p); /* DSR receiver (lib/dsr.h) */
	if (p->proto == IPPROTO_ICMPV6)
		return snat6_icmp_error(skb, p); /* SNAT flows, else icmp.h */
	if (!proto_has_ports(p->proto))
		return REASON_PASS_UNKNOWN_PROTO;
	if (!(p->flags & PKT_F_HAS_PORTS))
		return REASON_PASS;

	ret = snat6_reverse(skb, p);
	if (ret != CONTINUE)
		return ret;

	svc = lb6_lookup_service(p);
	if (!svc)
		return REASON_PASS;
	if (p->flags & PKT_F_L4_SHORT)
		return -DROP_INVALID_L4;
	if ((svc->flags & LB_F_SOURCE_RANGES) && !lb6_source_allowed(svc, p->saddr.v6))
		return -DROP_SOURCE_RANGE;

	__builtin_memcpy(key.saddr, p->saddr.v6, 16);
	__builtin_memcpy(key.daddr, p->daddr.v6, 16);
	key.sport = p->sport;
	key.dport = p->dport;
	key.proto = p->proto;
	key.dir = CT_DIR_SERVICE;
	now = ct_now();

	e = ct6_lookup(&key, now);
	if (e) {
		be = bpf_map_lookup_elem(&backends6, &e->backend_id);
		if (be) {
			int reopen = ct_tcp_reopens(e, p->proto, p->tcp_flags);
			int touched = ct_touch(e, p->proto, p->tcp_flags, CT_DIR_SERVICE, now);

			if (e->flags & (CT_F_SNAT | CT_F_DSR))
				return lb6_to_remote(skb, p, svc, be, &key, e,
						     touched ? SNAT_FLOW_TOUCHED : SNAT_FLOW_TRACKED,
						     now);
			if (touched) {
				ct6_reply_key(&rkey, p, be);
				if (reopen) {
					ct_entry_peer(&entry, e);
					ct6_reply_claim(&rkey, &entry);
				} else {
					ct6_follow(&rkey, e);
				}
			}
			established = 1;
			goto xlate;
		}
	}

	if (svc->backend_count == 0) {
		if (svc->flags & LB_F_REJECT_NO_ENDPOINTS)
			return icmp6_no_endpoints_reply(skb, p);
		return svc->flags & LB_F_LOCAL_EXTERNAL ? -DROP_NO_LOCAL_ENDPOINTS
							: -DROP_NO_ENDPOINTS;
	}
	if (p->proto == IPPROTO_TCP && !ct_tcp_may_open(p->tcp_flags))
		return -DROP_TCP_INVALID;

	ret = lb6_select_backend(svc, lb6_flow_hash(&key), 0, p->saddr.v6, &backend_id);
	if (ret != CONTINUE)
		return ret;
	be = bpf_map_lookup_elem(&backends6, &backend_id);
	if (!be)
		return -DROP_BACKEND_MISSING;
	remote = lb6_remote_mode(svc, be, p);
	if (p->proto == IPPROTO_SCTP && (be->port != p->dport || remote))
		return -DROP_UNSUPPORTED;
	if (remote && (p->flags & PKT_F_FRAG_FIRST))
		return -DROP_UNSUPPORTED;

	ct_entry_init(&entry, p->proto, p->tcp_flags, backend_id, svc->rev_nat_id, now);
	entry.flags |= remote;
	ret = ct6_insert_service(&key, &entry, now);
	if (ret < 0)
		return ret;
	if (ret == CT_JOINED) {
		reason = REASON_CT_RACE_JOINED;
		be = bpf_map_lookup_elem(&backends6, &entry.backend_id);
		if (!be)
			return -DROP_BACKEND_MISSING;
		remote = lb6_remote_mode(svc, be, p);
		entry.flags = (entry.flags & ~(CT_F_SNAT | CT_F_DSR)) | remote;
	}
	if (remote)
		return lb6_to_remote(skb, p, svc, be, &key, &entry,
				     ret == CT_JOINED ? SNAT_FLOW_JOINED : SNAT_FLOW_NEW, now);

	ct6_reply_key(&rkey, p, be);
	entry.tcp_flags = 0;
	if (ct6_reply_claim(&rkey, &entry)) {
		if (ret == CT_INSERTED)
			bpf_map_delete_elem(&ct6, &key);
		return -DROP_CT_FULL;
	}

xlate:
	if (p->flags & PKT_F_FRAG_FIRST) {
		union strait_addr to;

		__builtin_memcpy(to.v6, be->addr, 16);
		ret = frag_record(p, &to, FRAG_REWRITE_DADDR);
		if (ret != CONTINUE)
			return ret;
	}
	ret = nat6_rewrite(skb, p, NAT_DST, be->addr, be->port);
	if (ret != CONTINUE)
		return ret;
	if (established)
		flow_cache_fill(skb, p, PKT_IPV6, FLOW_HOOK_TC_INGRESS, e, be->addr, be->port, now);
	return reason;
}

static __always_inline int lb6_egress(struct __sk_buff *skb, struct pkt *p)
{
	struct ct6_key key = {};
	struct ct6_key skey = {};
	struct lb6_revnat *rn;
	struct ct_entry *e;
	__u64 now;
	int ret;

	/* A tracked reply: its cached rewrite (lib/flowcache.h). */
	if (flow_cache_try(skb, p, FLOW_HOOK_TC_EGRESS))
		return REASON_REVNAT;

	if (p->flags & PKT_F_FRAG_LATER)
		return frag_follow(skb, p, FRAG_REWRITE_SADDR);
	if (p->proto == IPPROTO_ICMPV6)
		return icmp6_error_egress(skb, p);
	if (!proto_has_ports(p->proto))
		return REASON_PASS_UNKNOWN_PROTO;
	if (!(p->flags & PKT_F_HAS_PORTS) || (p->flags & PKT_F_L4_SHORT))
		return REASON_PASS;

	__builtin_memcpy(key.saddr, p->saddr.v6, 16);
	__builtin_memcpy(key.daddr, p->daddr.v6, 16);
	key.sport = p->sport;
	key.dport = p->dport;
	key.proto = p->proto;
	key.dir = CT_DIR_REPLY;
	now = ct_now();
	e = ct6_lookup(&key, now);
	if (!e)
		return REASON_PASS;
	if (e->flags & CT_F_DSR)
		return dsr6_reply(skb, p, &key, e); /* DSR receiver (lib/dsr.h) */
	rn = bpf_map_lookup_elem(&revnat6, &e->rev_nat_id);
	if (!rn)
		return REASON_PASS_REPLY_UNTRACKED;

	if (ct_touch(e, p->proto, p->tcp_flags, CT_DIR_REPLY, now)) {
		__builtin_memcpy(skey.saddr, p->daddr.v6, 16);
		__builtin_memcpy(skey.daddr, rn->addr, 16);
		skey.sport = p->dport;
		skey.dport = rn->port;
		skey.proto = p->proto;
		skey.dir = CT_DIR_SERVICE;
		ct6_follow(&skey, e);
	}

	if (p->flags & PKT_F_FRAG_FIRST) {
		union strait_addr to;

		__builtin_memcpy(to.v6, rn->addr, 16);
		ret = frag_record(p, &to, FRAG_REWRITE_SADDR);
		if (ret != CONTINUE)
			return ret;
	}
	ret = nat6_rewrite(skb, p, NAT_SRC, rn->addr, rn->port);
	if (ret != CONTINUE)
		return ret;
	flow_cache_fill(skb, p, PKT_IPV6, FLOW_HOOK_TC_EGRESS, e, rn->addr, rn->port, now);
	return REASON_REVNAT;
}

#endif /* STRAIT_UPLINK_H */
