/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sock.h — socket-level load balancing (cgroup sock_addr programs).
 *
 * A socket in the attached cgroup (pods and host processes alike, in any
 * network namespace) that connects or sends to a frontend gets a backend
 * address written into the sockaddr before the kernel routes anything:
 *   connect4/6   TCP and connected UDP: translated once, at connect();
 *   sendmsg4/6   unconnected UDP: translated per datagram;
 *   recvmsg4/6   UDP replies show the frontend as their source again;
 *   getpeername4/6  a translated socket's peer is the frontend.
 * The packets then carry the backend's address: the tc programs never see a
 * frontend for these flows, so nothing is translated twice, and TCP needs no
 * conntrack at all.
 *
 * Lookup and selection are lib/lb.h's (the tc path's): the frontend entry
 * of cluster traffic (lb{4,6}_lookup_internal), then lb_select_backend()
 * with a hash of the socket cookie and the frontend instead of the packet
 * flow: one socket keeps its backend for a frontend while the slots stay as
 * they are (an unconnected UDP socket's datagrams go to one backend, as the
 * flow hash keeps them on the tc path), and new sockets spread.
 *
 * The reverse map sock_revnat{4,6} (abi.h) is written at translation and
 * read by recvmsg/getpeername; an entry whose frontend has gone (revnat
 * entry removed or now naming another frontend) is dropped when met.
 *
 * IPv4-mapped IPv6 (::ffff:a.b.c.d on a dual-stack socket): connect() and
 * getpeername()/recvmsg() run the *6 hooks with the mapped address, handled
 * here as IPv4 (services4, sock_revnat4); an unconnected sendto() runs the
 * *4 hook with ctx->family == AF_INET6 and a plain IPv4 user_ip4, which the
 * IPv4 path handles as it is.
 *
 * Refusals (no endpoints) fail connect()/sendmsg() at once with
 * ECONNREFUSED through bpf_set_retval() (5.18); anything else that cannot be
 * translated fails with EHOSTUNREACH. Never an odd errno: kernel socket
 * users (NFS/sunrpc) are translated too and busy-loop on those
 * (cilium#33395).
 *
 * Counting (the metrics map, bytes 0): REASON_SOCK_XLATE and refusals
 * (DROP_*) as egress, REASON_SOCK_REVNAT as ingress. Sockets that do not
 * talk to a frontend are not counted (every connect() on the node passes
 * here).
 *
 * Only TCP and UDP are translated here; SCTP frontends are left to the
 * per-packet path.
 */
#ifndef STRAIT_SOCK_H
#define STRAIT_SOCK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"
#include "lb.h"
#include "maps.h"
#include "metrics.h"
#include "parse.h"
#include "settings.h"

/* sock_addr verdicts */
#define SOCK_PROCEED 1
#define SOCK_REJECT  0

#ifndef ECONNREFUSED
#define ECONNREFUSED 111
#endif
#ifndef EHOSTUNREACH
#define EHOSTUNREACH 113
#endif

static __always_inline int sock_proto_translated(__u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

/* ---- selection hash ---- */

struct sock_hash_key {
	__u64 cookie; /* the socket */
	__be32 addr;  /* IPv4 frontend, or the xor of an IPv6 frontend's words */
	__be16 port;
	__u8 proto;
	__u8 pad;
};

static __always_inline __u32 sock_hash(__u64 cookie, __be32 addr, __be16 port, __u8 proto)
{
	/* Aligned and fully initialised: jhash2() reads 32-bit words. */
	struct sock_hash_key k __attribute__((aligned(8))) = {};

	k.cookie = cookie;
	k.addr = addr;
	k.port = port;
	k.proto = proto;
	return jhash2((const __u32 *)&k, sizeof(k) / 4, settings.hash_seed);
}

static __always_inline int ip6_is_v4mapped(const union strait_addr *a)
{
	return a->w[0] == 0 && a->w[1] == 0 && a->w[2] == bpf_htonl(0xffff);
}

/* Word compare (a byte-wise memcmp would be a libc call). */
static __always_inline int addr6_eq(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a;
	const __u32 *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* ---- forward: frontend -> backend ---- */

/*
 * The frontend *addr:*port of an IPv4 (or IPv4-mapped) socket of @proto.
 * Returns REASON_SOCK_XLATE with *addr and *port set to the backend,
 * REASON_PASS when it is no frontend, or -DROP_* when the socket must be
 * refused.
 */
static __always_inline int sock4_xlate_fwd(void *ctx, __u8 proto, __be32 *addr, __be16 *port)
{
	struct sock4_revnat_key rkey = {};
	struct sock4_revnat_entry rval = {};
	struct sock4_revnat_entry *old;
	struct lb4_backend *be;
	struct lb_service *svc;
	__u32 backend_id;
	__u64 cookie;
	int ret;

	svc = lb4_lookup_internal(*addr, *port, proto);
	if (!svc)
		return REASON_PASS;
	if (svc->backend_count == 0)
		return -DROP_NO_ENDPOINTS;

	cookie = bpf_get_socket_cookie(ctx);
	ret = lb_select_backend(svc, sock_hash(cookie, *addr, *port, proto), &backend_id);
	if (ret != CONTINUE)
		return ret;
	be = bpf_map_lookup_elem(&backends4, &backend_id);
	if (!be)
		return -DROP_BACKEND_MISSING;

	rkey.cookie = cookie;
	rkey.addr = be->addr;
	rkey.port = be->port;
	rval.addr = *addr;
	rval.port = *port;
	rval.proto = proto;
	rval.rev_nat_id = svc->rev_nat_id;
	rval.backend_id = backend_id;
	/* Unconnected UDP passes here per datagram: write only what changed
	 * (the lookup refreshes the LRU entry all the same). */
	old = bpf_map_lookup_elem(&sock_revnat4, &rkey);
	if (!old || old->addr != rval.addr || old->port != rval.port ||
	    old->rev_nat_id != rval.rev_nat_id || old->backend_id != rval.backend_id ||
	    old->proto != rval.proto) {
		/* Without it replies would not show the frontend (a DNS
		 * client drops them): refuse rather than half-translate. */
		if (bpf_map_update_elem(&sock_revnat4, &rkey, &rval, BPF_ANY))
			return -DROP_SOCK_REVNAT_FULL;
	}

	*addr = be->addr;
	*port = be->port;
	return REASON_SOCK_XLATE;
}

static __always_inline int sock6_xlate_fwd(void *ctx, __u8 proto, union strait_addr *addr,
					   __be16 *port)
{
	struct sock6_revnat_key rkey = {};
	struct sock6_revnat_entry rval = {};
	struct sock6_revnat_entry *old;
	struct lb6_backend *be;
	struct lb_service *svc;
	__u32 backend_id;
	__u64 cookie;
	int ret;

	svc = lb6_lookup_internal(addr->v6, *port, proto);
	if (!svc)
		return REASON_PASS;
	if (svc->backend_count == 0)
		return -DROP_NO_ENDPOINTS;

	cookie = bpf_get_socket_cookie(ctx);
	ret = lb_select_backend(svc,
				sock_hash(cookie, addr->w[0] ^ addr->w[1] ^ addr->w[2] ^ addr->w[3],
					  *port, proto),
				&backend_id);
	if (ret != CONTINUE)
		return ret;
	be = bpf_map_lookup_elem(&backends6, &backend_id);
	if (!be)
		return -DROP_BACKEND_MISSING;

	rkey.cookie = cookie;
	__builtin_memcpy(rkey.addr, be->addr, 16);
	rkey.port = be->port;
	__builtin_memcpy(rval.addr, addr->v6, 16);
	rval.port = *port;
	rval.proto = proto;
	rval.rev_nat_id = svc->rev_nat_id;
	rval.backend_id = backend_id;
	old = bpf_map_lookup_elem(&sock_revnat6, &rkey);
	if (!old || !addr6_eq(old->addr, rval.addr) || old->port != rval.port ||
	    old->rev_nat_id != rval.rev_nat_id || old->backend_id != rval.backend_id ||
	    old->proto != rval.proto) {
		if (bpf_map_update_elem(&sock_revnat6, &rkey, &rval, BPF_ANY))
			return -DROP_SOCK_REVNAT_FULL;
	}

	__builtin_memcpy(addr->v6, be->addr, 16);
	*port = be->port;
	return REASON_SOCK_XLATE;
}

/* Count a forward outcome and turn it into the hook's verdict. */
static __always_inline int sock_fwd_exit(int ret)
{
	if (ret == REASON_PASS)
		return SOCK_PROCEED;
	if (ret >= 0) {
		metrics_count(ret, METRIC_DIR_EGRESS, 0);
		return SOCK_PROCEED;
	}
	metrics_count(-ret, METRIC_DIR_EGRESS, 0);
	bpf_set_retval(ret == -DROP_NO_ENDPOINTS ? -ECONNREFUSED : -EHOSTUNREACH);
	return SOCK_REJECT;
}

/* connect4 / sendmsg4 (also an IPv6 socket's unconnected sendto() to a
 * mapped address: user_ip4 is the IPv4 address then). */
static __always_inline int sock4_fwd(struct bpf_sock_addr *ctx)
{
	__u32 proto = ctx->protocol;
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	int ret;

	if (!sock_proto_translated(proto))
		return SOCK_PROCEED;
	ret = sock4_xlate_fwd(ctx, proto, &addr, &port);
	if (ret == REASON_SOCK_XLATE) {
		ctx->user_ip4 = addr;
		ctx->user_port = port;
	}
	return sock_fwd_exit(ret);
}

/* connect6 / sendmsg6; a mapped destination goes the IPv4 way. */
static __always_inline int sock6_fwd(struct bpf_sock_addr *ctx)
{
	__u32 proto = ctx->protocol;
	__be16 port = (__be16)ctx->user_port;
	union strait_addr addr;
	int ret;

	if (!sock_proto_translated(proto))
		return SOCK_PROCEED;
	/* user_ip6 only allows 32-bit loads and stores. */
	addr.w[0] = ctx->user_ip6[0];
	addr.w[1] = ctx->user_ip6[1];
	addr.w[2] = ctx->user_ip6[2];
	addr.w[3] = ctx->user_ip6[3];
	if (ip6_is_v4mapped(&addr)) {
		__be32 addr4 = addr.w[3];

		ret = sock4_xlate_fwd(ctx, proto, &addr4, &port);
		if (ret == REASON_SOCK_XLATE) {
			ctx->user_ip6[3] = addr4;
			ctx->user_port = port;
		}
		return sock_fwd_exit(ret);
	}
	ret = sock6_xlate_fwd(ctx, proto, &addr, &port);
	if (ret == REASON_SOCK_XLATE) {
		ctx->user_ip6[0] = addr.w[0];
		ctx->user_ip6[1] = addr.w[1];
		ctx->user_ip6[2] = addr.w[2];
		ctx->user_ip6[3] = addr.w[3];
		ctx->user_port = port;
	}
	return sock_fwd_exit(ret);
}

/* ---- reverse: backend -> frontend (recvmsg, getpeername) ---- */

static __always_inline int sock4_xlate_rev(void *ctx, __be32 *addr, __be16 *port)
{
	struct sock4_revnat_key key = {};
	struct sock4_revnat_entry *e;
	struct lb4_revnat *rn;

	key.cookie = bpf_get_socket_cookie(ctx);
	key.addr = *addr;
	key.port = *port;
	e = bpf_map_lookup_elem(&sock_revnat4, &key);
	if (!e)
		return REASON_PASS;
	rn = bpf_map_lookup_elem(&revnat4, &e->rev_nat_id);
	if (!rn || rn->addr != e->addr || rn->port != e->port) {
		/* The frontend has gone (or its id names another one now):
		 * from here on the socket talks to a plain address. */
		bpf_map_delete_elem(&sock_revnat4, &key);
		return REASON_PASS;
	}
	*addr = e->addr;
	*port = e->port;
	return REASON_SOCK_REVNAT;
}

static __always_inline int sock6_xlate_rev(void *ctx, union strait_addr *addr, __be16 *port)
{
	struct sock6_revnat_key key = {};
	struct sock6_revnat_entry *e;
	struct lb6_revnat *rn;

	key.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(key.addr, addr->v6, 16);
	key.port = *port;
	e = bpf_map_lookup_elem(&sock_revnat6, &key);
	if (!e)
		return REASON_PASS;
	rn = bpf_map_lookup_elem(&revnat6, &e->rev_nat_id);
	if (!rn || rn->port != e->port || !addr6_eq(rn->addr, e->addr)) {
		bpf_map_delete_elem(&sock_revnat6, &key);
		return REASON_PASS;
	}
	__builtin_memcpy(addr->v6, e->addr, 16);
	*port = e->port;
	return REASON_SOCK_REVNAT;
}

/* recvmsg4 / getpeername4. These hooks must return 1 (and may not set a
 * retval): the outcome is only counted. */
static __always_inline int sock4_rev(struct bpf_sock_addr *ctx)
{
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;

	if (sock4_xlate_rev(ctx, &addr, &port) != REASON_SOCK_REVNAT)
		return SOCK_PROCEED;
	ctx->user_ip4 = addr;
	ctx->user_port = port;
	metrics_count(REASON_SOCK_REVNAT, METRIC_DIR_INGRESS, 0);
	return SOCK_PROCEED;
}

static __always_inline int sock6_rev(struct bpf_sock_addr *ctx)
{
	__be16 port = (__be16)ctx->user_port;
	union strait_addr addr;

	addr.w[0] = ctx->user_ip6[0];
	addr.w[1] = ctx->user_ip6[1];
	addr.w[2] = ctx->user_ip6[2];
	addr.w[3] = ctx->user_ip6[3];
	if (ip6_is_v4mapped(&addr)) {
		__be32 addr4 = addr.w[3];

		if (sock4_xlate_rev(ctx, &addr4, &port) != REASON_SOCK_REVNAT)
			return SOCK_PROCEED;
		ctx->user_ip6[3] = addr4;
	} else {
		if (sock6_xlate_rev(ctx, &addr, &port) != REASON_SOCK_REVNAT)
			return SOCK_PROCEED;
		ctx->user_ip6[0] = addr.w[0];
		ctx->user_ip6[1] = addr.w[1];
		ctx->user_ip6[2] = addr.w[2];
		ctx->user_ip6[3] = addr.w[3];
	}
	ctx->user_port = port;
	metrics_count(REASON_SOCK_REVNAT, METRIC_DIR_INGRESS, 0);
	return SOCK_PROCEED;
}

/* ---- connected UDP sockets whose backend has gone ----
 *
 * For the socket iterator (strait_sock_destroy.c): a connected UDP socket
 * was translated to a backend that the agent has since deleted (or whose id
 * now names another address). It would go on sending into the void, since
 * connected sockets never pass sendmsg again (cilium#27300). Returns 1 (and
 * forgets the entry) when the socket should be destroyed. TCP sockets are
 * left alone: a removed TCP backend's connections end as TCP ends them.
 */
static __always_inline int sock4_backend_gone(__u64 cookie, __be32 addr, __be16 port)
{
	struct sock4_revnat_key key = {};
	struct sock4_revnat_entry *e;
	struct lb4_backend *be;

	key.cookie = cookie;
	key.addr = addr;
	key.port = port;
	e = bpf_map_lookup_elem(&sock_revnat4, &key);
	if (!e || e->proto != IPPROTO_UDP)
		return 0;
	be = bpf_map_lookup_elem(&backends4, &e->backend_id);
	if (be && be->addr == addr && be->port == port)
		return 0;
	bpf_map_delete_elem(&sock_revnat4, &key);
	return 1;
}

static __always_inline int sock6_backend_gone(__u64 cookie, const union strait_addr *addr,
					      __be16 port)
{
	struct sock6_revnat_key key = {};
	struct sock6_revnat_entry *e;
	struct lb6_backend *be;

	key.cookie = cookie;
	__builtin_memcpy(key.addr, addr->v6, 16);
	key.port = port;
	e = bpf_map_lookup_elem(&sock_revnat6, &key);
	if (!e || e->proto != IPPROTO_UDP)
		return 0;
	be = bpf_map_lookup_elem(&backends6, &e->backend_id);
	if (be && be->port == port && addr6_eq(be->addr, addr->v6))
		return 0;
	bpf_map_delete_elem(&sock_revnat6, &key);
	return 1;
}

#endif /* STRAIT_SOCK_H */
