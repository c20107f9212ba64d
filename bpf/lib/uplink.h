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
 *
 * Not done here yet (later issues; see the hook in lb_select_backend()):
 * session affinity, source ranges, traffic-policy Local, DSR, and SNAT for
 * backends on other nodes: a remote backend is DNATed and handed back to
 * the stack to route, which only works where the backend's replies come
 * back through this node.
 */
#ifndef STRAIT_UPLINK_H
#define STRAIT_UPLINK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "conntrack.h"
#include "frag.h"
#include "icmp.h"
#include "lb.h"
#include "maps.h"
#include "metrics.h"
#include "nat.h"
#include "parse.h"

/* ---------------------------------------------------------------- IPv4 */

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
	__u32 backend_id;
	__u64 now;
	int ret;

	if (p->flags & PKT_F_FRAG_LATER)
		return frag_follow(skb, p, FRAG_REWRITE_DADDR);
	if (p->proto == IPPROTO_ICMP)
		return icmp4_error_ingress(skb, p);
	if (!proto_has_ports(p->proto))
		return REASON_PASS_UNKNOWN_PROTO;
	if (!(p->flags & PKT_F_HAS_PORTS))
		return REASON_PASS; /* not even ports: cannot be matched */

	svc = lb4_lookup_service(p);
	if (!svc)
		return REASON_PASS;
	if (p->flags & PKT_F_L4_SHORT)
		return -DROP_INVALID_L4;

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
			if (ct_touch(e, p->proto, p->tcp_flags, CT_DIR_SERVICE, now)) {
				ct4_reply_key(&rkey, p, be);
				ct4_follow(&rkey, e);
			}
			goto xlate;
		}
		/* The backend is gone (endpoint removed): choose again, so
		 * UDP flows move on as kube-proxy's conntrack flush does. */
	}

	if (svc->backend_count == 0) {
		if (!(svc->flags & LB_F_REJECT_NO_ENDPOINTS))
			return -DROP_NO_ENDPOINTS;
		return icmp4_no_endpoints_reply(skb, p);
	}
	if (p->proto == IPPROTO_TCP && !ct_tcp_may_open(p->tcp_flags))
		return -DROP_TCP_INVALID;

	ret = lb_select_backend(svc, lb4_flow_hash(&key), &backend_id);
	if (ret != CONTINUE)
		return ret;
	be = bpf_map_lookup_elem(&backends4, &backend_id);
	if (!be)
		return -DROP_BACKEND_MISSING;
	/* Refuse what nat4_rewrite() would refuse before creating state. */
	if (p->proto == IPPROTO_SCTP && be->port != p->dport)
		return -DROP_UNSUPPORTED;

	ct_entry_init(&entry, p->proto, p->tcp_flags, backend_id, svc->rev_nat_id, now);
	ret = ct4_insert_service(&key, &entry, now);
	if (ret < 0)
		return ret;
	if (ret == CT_JOINED) {
		reason = REASON_CT_RACE_JOINED;
		be = bpf_map_lookup_elem(&backends4, &entry.backend_id);
		if (!be)
			return -DROP_BACKEND_MISSING;
	}

	/* Written by the loser too: same content, and the winner may not have
	 * written it yet. */
	ct4_reply_key(&rkey, p, be);
	entry.tcp_flags = 0;
	if (bpf_map_update_elem(&ct4, &rkey, &entry, BPF_ANY)) {
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
	return REASON_REVNAT;
}

/* ---------------------------------------------------------------- IPv6 */

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

static __always_inline int lb6_ingress(struct __sk_buff *skb, struct pkt *p)
{
	struct ct6_key key __attribute__((aligned(8))) = {};
	struct ct6_key rkey = {};
	int reason = REASON_SERVICE_DNAT;
	struct lb_service *svc;
	struct lb6_backend *be;
	struct ct_entry entry;
	struct ct_entry *e;
	__u32 backend_id;
	__u64 now;
	int ret;

	if (p->flags & PKT_F_FRAG_LATER)
		return frag_follow(skb, p, FRAG_REWRITE_DADDR);
	if (p->proto == IPPROTO_ICMPV6)
		return icmp6_error_ingress(skb, p);
	if (!proto_has_ports(p->proto))
		return REASON_PASS_UNKNOWN_PROTO;
	if (!(p->flags & PKT_F_HAS_PORTS))
		return REASON_PASS;

	svc = lb6_lookup_service(p);
	if (!svc)
		return REASON_PASS;
	if (p->flags & PKT_F_L4_SHORT)
		return -DROP_INVALID_L4;

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
			if (ct_touch(e, p->proto, p->tcp_flags, CT_DIR_SERVICE, now)) {
				ct6_reply_key(&rkey, p, be);
				ct6_follow(&rkey, e);
			}
			goto xlate;
		}
	}

	if (svc->backend_count == 0) {
		if (!(svc->flags & LB_F_REJECT_NO_ENDPOINTS))
			return -DROP_NO_ENDPOINTS;
		return icmp6_no_endpoints_reply(skb, p);
	}
	if (p->proto == IPPROTO_TCP && !ct_tcp_may_open(p->tcp_flags))
		return -DROP_TCP_INVALID;

	ret = lb_select_backend(svc, lb6_flow_hash(&key), &backend_id);
	if (ret != CONTINUE)
		return ret;
	be = bpf_map_lookup_elem(&backends6, &backend_id);
	if (!be)
		return -DROP_BACKEND_MISSING;
	if (p->proto == IPPROTO_SCTP && be->port != p->dport)
		return -DROP_UNSUPPORTED;

	ct_entry_init(&entry, p->proto, p->tcp_flags, backend_id, svc->rev_nat_id, now);
	ret = ct6_insert_service(&key, &entry, now);
	if (ret < 0)
		return ret;
	if (ret == CT_JOINED) {
		reason = REASON_CT_RACE_JOINED;
		be = bpf_map_lookup_elem(&backends6, &entry.backend_id);
		if (!be)
			return -DROP_BACKEND_MISSING;
	}

	ct6_reply_key(&rkey, p, be);
	entry.tcp_flags = 0;
	if (bpf_map_update_elem(&ct6, &rkey, &entry, BPF_ANY)) {
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
	return REASON_REVNAT;
}

#endif /* STRAIT_UPLINK_H */
