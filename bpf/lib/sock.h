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
 * What was chosen is remembered for the way back: a connected socket's one
 * peer in its own storage (sock_peer, below: never evicted, freed with the
 * socket), an unconnected UDP socket's peers in the LRU map
 * sock_revnat{4,6} keyed by socket cookie and backend (abi.h). recvmsg and
 * getpeername show the frontend only while the rev-NAT entry still names it
 * (a Service that has gone leaves its sockets talking to a plain address);
 * a stale LRU entry is dropped when met.
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
 *
 * sessionAffinity: ClientIP (lib/lb.h) keys on the socket's network
 * namespace cookie, client address zero. connect() runs before the kernel
 * picks a source address (and sendmsg() rarely carries one), so the address
 * is not known here; the netns stands for it: a pod is one netns with one
 * address per family, and the node's own processes (hostNetwork pods too)
 * share the root netns as they share the node's address on the wire, which
 * is the client kube-proxy would see for them. Entries of the tc path
 * (keyed by address, cookie 0) never meet these.
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

/* The client address of socket LB's affinity keys (see above). */
static const __u8 sock_no_client[16] = {};

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

/* ---- sock_peer: connected sockets' translation (sk storage) ----
 *
 * Defined here, not in maps.h: only the socket objects use it (they share
 * its pin), and it is no table the agent lists — sk storage is found from
 * its socket, not iterated — so the tc object and the agent's typed maps
 * leave it out. See struct sock_peer in abi.h. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for sk storage */
	__type(key, int);
	__type(value, struct sock_peer);
} sock_peer SEC(".maps");

static __always_inline int addr4_is(const __u8 *a, __be32 addr)
{
	return *(const __be32 *)a == addr;
}

/* ---- forward: frontend -> backend ---- */

/* The backend chosen for a frontend, and what to remember about it. */
struct sock_choice {
	__u32 backend_id;
	__u32 rev_nat_id;
};

/*
 * Select a backend for the frontend addr:port of @proto. Returns CONTINUE
 * with *be and *c set, REASON_PASS when it is no frontend, or -DROP_* when
 * the socket must be refused.
 */
static __always_inline int sock4_select(void *ctx, __u8 proto, __be32 addr, __be16 port,
					struct lb4_backend **be, struct sock_choice *c)
{
	struct lb_service *svc;
	int ret;

	svc = lb4_lookup_internal(addr, port, proto);
	if (!svc)
		return REASON_PASS;
	if (svc->backend_count == 0)
		return -DROP_NO_ENDPOINTS;
	ret = lb4_select_backend(svc, sock_hash(bpf_get_socket_cookie(ctx), addr, port, proto),
				 bpf_get_netns_cookie(ctx), 0, &c->backend_id);
	if (ret != CONTINUE)
		return ret;
	*be = bpf_map_lookup_elem(&backends4, &c->backend_id);
	if (!*be)
		return -DROP_BACKEND_MISSING;
	c->rev_nat_id = svc->rev_nat_id;
	return CONTINUE;
}

static __always_inline int sock6_select(void *ctx, __u8 proto, const union strait_addr *addr,
					__be16 port, struct lb6_backend **be, struct sock_choice *c)
{
	struct lb_service *svc;
	int ret;

	svc = lb6_lookup_internal(addr->v6, port, proto);
	if (!svc)
		return REASON_PASS;
	if (svc->backend_count == 0)
		return -DROP_NO_ENDPOINTS;
	ret = lb6_select_backend(svc,
				 sock_hash(bpf_get_socket_cookie(ctx),
					   addr->w[0] ^ addr->w[1] ^ addr->w[2] ^ addr->w[3], port, proto),
				 bpf_get_netns_cookie(ctx), sock_no_client, &c->backend_id);
	if (ret != CONTINUE)
		return ret;
	*be = bpf_map_lookup_elem(&backends6, &c->backend_id);
	if (!*be)
		return -DROP_BACKEND_MISSING;
	c->rev_nat_id = svc->rev_nat_id;
	return CONTINUE;
}

/* connect(): the socket's one peer goes into its own storage. */
static __always_inline int sock_peer_record(struct bpf_sock_addr *ctx, const struct sock_peer *p)
{
	struct sock_peer *st;

	st = bpf_sk_storage_get(&sock_peer, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return -DROP_SOCK_REVNAT_FULL;
	__builtin_memcpy(st, p, sizeof(*p));
	return CONTINUE;
}

/* sendmsg(): one of the socket's peers, in the LRU map. Unconnected UDP
 * passes here per datagram: write only what changed (the lookup refreshes
 * the LRU entry all the same). */
static __always_inline int sock4_revnat_record(void *ctx, __be32 backend, __be16 backend_port,
					       __be32 frontend, __be16 frontend_port, __u8 proto,
					       const struct sock_choice *c)
{
	struct sock4_revnat_key key = {};
	struct sock4_revnat_entry val = {};
	struct sock4_revnat_entry *old;

	key.cookie = bpf_get_socket_cookie(ctx);
	key.addr = backend;
	key.port = backend_port;
	val.addr = frontend;
	val.port = frontend_port;
	val.proto = proto;
	val.rev_nat_id = c->rev_nat_id;
	val.backend_id = c->backend_id;
	old = bpf_map_lookup_elem(&sock_revnat4, &key);
	if (old && old->addr == val.addr && old->port == val.port && old->proto == val.proto &&
	    old->rev_nat_id == val.rev_nat_id && old->backend_id == val.backend_id)
		return CONTINUE;
	/* Without it replies would not show the frontend (a DNS client drops
	 * them): refuse rather than half-translate. */
	if (bpf_map_update_elem(&sock_revnat4, &key, &val, BPF_ANY))
		return -DROP_SOCK_REVNAT_FULL;
	return CONTINUE;
}

static __always_inline int sock6_revnat_record(void *ctx, const __u8 *backend, __be16 backend_port,
					       const union strait_addr *frontend,
					       __be16 frontend_port, __u8 proto,
					       const struct sock_choice *c)
{
	struct sock6_revnat_key key = {};
	struct sock6_revnat_entry val = {};
	struct sock6_revnat_entry *old;

	key.cookie = bpf_get_socket_cookie(ctx);
	__builtin_memcpy(key.addr, backend, 16);
	key.port = backend_port;
	__builtin_memcpy(val.addr, frontend->v6, 16);
	val.port = frontend_port;
	val.proto = proto;
	val.rev_nat_id = c->rev_nat_id;
	val.backend_id = c->backend_id;
	old = bpf_map_lookup_elem(&sock_revnat6, &key);
	if (old && addr6_eq(old->addr, val.addr) && old->port == val.port &&
	    old->proto == val.proto && old->rev_nat_id == val.rev_nat_id &&
	    old->backend_id == val.backend_id)
		return CONTINUE;
	if (bpf_map_update_elem(&sock_revnat6, &key, &val, BPF_ANY))
		return -DROP_SOCK_REVNAT_FULL;
	return CONTINUE;
}

/*
 * The IPv4 (or IPv4-mapped) frontend *addr:*port of a socket of @proto:
 * on REASON_SOCK_XLATE *addr and *port are the backend's. @connect: record
 * in sock_peer (connect) or sock_revnat4 (sendmsg).
 */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx, __u8 proto, __be32 *addr,
					   __be16 *port, int connect)
{
	struct sock_choice c = {};
	struct lb4_backend *be;
	int ret;

	ret = sock4_select(ctx, proto, *addr, *port, &be, &c);
	if (ret != CONTINUE)
		return ret;
	if (connect) {
		struct sock_peer p = {};

		*(__be32 *)p.backend = be->addr;
		*(__be32 *)p.frontend = *addr;
		p.backend_port = be->port;
		p.frontend_port = *port;
		p.family = 4;
		p.proto = proto;
		p.rev_nat_id = c.rev_nat_id;
		p.backend_id = c.backend_id;
		ret = sock_peer_record(ctx, &p);
	} else {
		ret = sock4_revnat_record(ctx, be->addr, be->port, *addr, *port, proto, &c);
	}
	if (ret != CONTINUE)
		return ret;
	*addr = be->addr;
	*port = be->port;
	return REASON_SOCK_XLATE;
}

static __always_inline int sock6_xlate_fwd(struct bpf_sock_addr *ctx, __u8 proto,
					   union strait_addr *addr, __be16 *port, int connect)
{
	struct sock_choice c = {};
	struct lb6_backend *be;
	int ret;

	ret = sock6_select(ctx, proto, addr, *port, &be, &c);
	if (ret != CONTINUE)
		return ret;
	if (connect) {
		struct sock_peer p = {};

		__builtin_memcpy(p.backend, be->addr, 16);
		__builtin_memcpy(p.frontend, addr->v6, 16);
		p.backend_port = be->port;
		p.frontend_port = *port;
		p.family = 6;
		p.proto = proto;
		p.rev_nat_id = c.rev_nat_id;
		p.backend_id = c.backend_id;
		ret = sock_peer_record(ctx, &p);
	} else {
		ret = sock6_revnat_record(ctx, be->addr, be->port, addr, *port, proto, &c);
	}
	if (ret != CONTINUE)
		return ret;
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
static __always_inline int sock4_fwd(struct bpf_sock_addr *ctx, int connect)
{
	__u32 proto = ctx->protocol;
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	int ret;

	if (!sock_proto_translated(proto))
		return SOCK_PROCEED;
	ret = sock4_xlate_fwd(ctx, proto, &addr, &port, connect);
	if (ret == REASON_SOCK_XLATE) {
		ctx->user_ip4 = addr;
		ctx->user_port = port;
	}
	return sock_fwd_exit(ret);
}

/* connect6 / sendmsg6; a mapped destination goes the IPv4 way. */
static __always_inline int sock6_fwd(struct bpf_sock_addr *ctx, int connect)
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

		ret = sock4_xlate_fwd(ctx, proto, &addr4, &port, connect);
		if (ret == REASON_SOCK_XLATE) {
			ctx->user_ip6[3] = addr4;
			ctx->user_port = port;
		}
		return sock_fwd_exit(ret);
	}
	ret = sock6_xlate_fwd(ctx, proto, &addr, &port, connect);
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

/*
 * A connected socket's peer addr:port (family 4: IPv4 or mapped) is its
 * translated backend: the frontend instead. Its frontend still has to be
 * what its rev-NAT id says (the Service may have gone since).
 */
static __always_inline int sock_peer_rev(struct bpf_sock_addr *ctx, __u8 family,
					 union strait_addr *addr, __be16 *port)
{
	struct sock_peer *st;

	st = bpf_sk_storage_get(&sock_peer, ctx->sk, 0, 0);
	if (!st || st->family != family || st->backend_port != *port)
		return REASON_PASS;
	if (family == 4) {
		struct lb4_revnat *rn;

		if (!addr4_is(st->backend, addr->v4))
			return REASON_PASS;
		rn = bpf_map_lookup_elem(&revnat4, &st->rev_nat_id);
		if (!rn || !addr4_is(st->frontend, rn->addr) || rn->port != st->frontend_port)
			return REASON_PASS;
		addr->v4 = rn->addr;
	} else {
		struct lb6_revnat *rn;

		if (!addr6_eq(st->backend, addr->v6))
			return REASON_PASS;
		rn = bpf_map_lookup_elem(&revnat6, &st->rev_nat_id);
		if (!rn || !addr6_eq(st->frontend, rn->addr) || rn->port != st->frontend_port)
			return REASON_PASS;
		__builtin_memcpy(addr->v6, rn->addr, 16);
	}
	*port = st->frontend_port;
	return REASON_SOCK_REVNAT;
}

/* An unconnected UDP socket's datagram source, from sock_revnat4. */
static __always_inline int sock4_revnat_rev(void *ctx, __be32 *addr, __be16 *port)
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

static __always_inline int sock6_revnat_rev(void *ctx, union strait_addr *addr, __be16 *port)
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

/*
 * recvmsg4 / getpeername4 (@recv: also unconnected UDP's peers). These
 * hooks must return 1 (and may not set a retval): the outcome is only
 * counted.
 */
static __always_inline int sock4_rev(struct bpf_sock_addr *ctx, int recv)
{
	__be16 port = (__be16)ctx->user_port;
	union strait_addr addr = {};
	int ret;

	addr.v4 = ctx->user_ip4;
	ret = sock_peer_rev(ctx, 4, &addr, &port);
	if (ret != REASON_SOCK_REVNAT && recv)
		ret = sock4_revnat_rev(ctx, &addr.v4, &port);
	if (ret != REASON_SOCK_REVNAT)
		return SOCK_PROCEED;
	ctx->user_ip4 = addr.v4;
	ctx->user_port = port;
	metrics_count(REASON_SOCK_REVNAT, METRIC_DIR_INGRESS, 0);
	return SOCK_PROCEED;
}

static __always_inline int sock6_rev(struct bpf_sock_addr *ctx, int recv)
{
	__be16 port = (__be16)ctx->user_port;
	union strait_addr addr;
	int ret;

	addr.w[0] = ctx->user_ip6[0];
	addr.w[1] = ctx->user_ip6[1];
	addr.w[2] = ctx->user_ip6[2];
	addr.w[3] = ctx->user_ip6[3];
	if (ip6_is_v4mapped(&addr)) {
		union strait_addr addr4 = {};

		addr4.v4 = addr.w[3];
		ret = sock_peer_rev(ctx, 4, &addr4, &port);
		if (ret != REASON_SOCK_REVNAT && recv)
			ret = sock4_revnat_rev(ctx, &addr4.v4, &port);
		if (ret != REASON_SOCK_REVNAT)
			return SOCK_PROCEED;
		ctx->user_ip6[3] = addr4.v4;
	} else {
		ret = sock_peer_rev(ctx, 6, &addr, &port);
		if (ret != REASON_SOCK_REVNAT && recv)
			ret = sock6_revnat_rev(ctx, &addr, &port);
		if (ret != REASON_SOCK_REVNAT)
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
 * (@st its sock_peer, @daddr:@dport where it is connected now) still
 * connected to the backend socket LB gave it, which the agent has since
 * deleted (or whose id now names another address). It would go on sending
 * into the void: connected sockets never pass sendmsg again (cilium#27300).
 * TCP sockets are left alone: a removed TCP backend's connections end as
 * TCP ends them.
 */
static __always_inline int sock_peer_backend_gone(const struct sock_peer *st, __u8 family,
						  const union strait_addr *daddr, __be16 dport)
{
	if (st->proto != IPPROTO_UDP || st->family != family || st->backend_port != dport)
		return 0;
	if (family == 4) {
		struct lb4_backend *be;

		if (!addr4_is(st->backend, daddr->v4))
			return 0; /* reconnected elsewhere since */
		be = bpf_map_lookup_elem(&backends4, &st->backend_id);
		return !be || be->addr != daddr->v4 || be->port != dport;
	} else {
		struct lb6_backend *be;

		if (!addr6_eq(st->backend, daddr->v6))
			return 0;
		be = bpf_map_lookup_elem(&backends6, &st->backend_id);
		return !be || be->port != dport || !addr6_eq(be->addr, daddr->v6);
	}
}

#endif /* STRAIT_SOCK_H */
