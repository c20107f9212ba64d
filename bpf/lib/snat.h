/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * snat.h — north-south SNAT: a NodePort / externalIP / LoadBalancer flow
 * whose backend runs on another node leaves this node with the node's
 * address as its source, so the backend's replies come back here to be
 * reversed (the backend's node would otherwise answer the client from the
 * pod address, which the client drops).
 *
 *   client C:cp -> frontend F:fp      arrives on the uplink
 *   node   N:S  -> backend  B:bp      leaves (DNAT + SNAT), redirected
 *   backend B:bp -> N:S               the reply arrives on the uplink
 *   frontend F:fp -> C:cp             leaves toward the client, redirected
 *
 * State per flow (abi.h): the conntrack SERVICE entry {C, F, cp, fp} with
 * CT_F_SNAT, the conntrack REPLY entry {B, N, bp, S} (the reply as it
 * arrives here), and two snat{4,6} entries: OUT {C, F, cp, fp} -> {N, S}
 * and IN {B, N, bp, S} -> {C, cp}. The snat entries carry the flow's
 * conntrack deadline and are refreshed with it, so a port is free again
 * once its flow has expired.
 *
 * Port allocation: first the client's own source port (snat*_alloc_keep),
 * as netfilter's masquerade keeps it whenever the translated tuple is
 * unique — without it, closed TCP flows holding their port for the closing
 * timeout exhausted the 4,536-port default range at ~3,000 new connections
 * per second from one client to one backend. The client's port is taken
 * when another flow's IN entry has it (BPF_NOEXIST) or when a socket of
 * this node owns the reply tuple B:bp -> N:cp (snat_sock_holds(), looked
 * up at allocation). Then, as before (Cilium's snat_v4_new_mapping,
 * simplified): start at a
 * hash of the flow in snat_port_min..max and probe SNAT_PROBES consecutive
 * ports, inserting the IN entry with BPF_NOEXIST, so two CPUs never take
 * one port; an occupant past its deadline is deleted and the insert retried
 * (still NOEXIST: of two CPUs reclaiming one port, one wins). No port in
 * SNAT_PROBES tries is a counted drop (DROP_SNAT_EXHAUSTED): the client
 * retries, nothing spins. A port is unique per (N, B, bp, protocol), so the
 * range is per backend.
 *
 * Two CPUs may start the same new flow at once (the conntrack insert race,
 * conntrack.h): both allocate, the OUT entry is inserted with BPF_NOEXIST,
 * and the loser frees its port and adopts the winner's.
 *
 * The SNAT range must stay clear of ports the node's own sockets use
 * towards backends (a node socket to a pod from an ephemeral port, and a
 * SNAT entry for the same backend and port would steal its replies): the
 * agent's default 61000-65535 lies above Linux's ephemeral range
 * (32768-60999) and the NodePort range (30000-32767).
 *
 * Residual risk of kept client ports: they usually lie in the ephemeral
 * range. The socket lookup protects sockets that exist when the flow
 * starts; a socket the node opens *later* to the same backend B:bp may get
 * the same ephemeral port cp (connect() checks only other sockets, not our
 * map), and until the SNAT flow's entries expire its replies B:bp -> N:cp
 * are taken for the client's (reversed here before the stack sees them).
 * netfilter avoids that because local connections pass conntrack's unique
 * tuple check too; a tc program cannot see connect(). It needs a node
 * socket to the one backend address and port a north-south client uses,
 * with the one port that client chose, within the flow's lifetime — rare,
 * but possible under a high connection rate. The range fallback keeps the
 * old guarantee for every port that is not the client's.
 *
 * The snat keys have the layout of the conntrack keys, and SNAT_DIR_OUT /
 * _IN equal CT_DIR_SERVICE / _REPLY: a flow's OUT key *is* its SERVICE
 * key and its IN key its REPLY key, byte for byte, so one key on the stack
 * serves both maps (asserted below; the ingress program's stack is tight).
 *
 * ICMP errors about SNAT flows (snat{4,6}_icmp_error) are translated both
 * ways: an error about the forward packet N:S -> B:bp (from the backend's
 * node or a router between the nodes, addressed to N) goes back to the
 * client as an error about C:cp -> F:fp, redirected like a reply; an error
 * from the client's side about a reply F:fp -> C:cp goes to the backend as
 * one about B:bp -> N:S, the tuple its socket knows (PMTU discovery needs
 * that), through the stack like the other ingress ICMP translations.
 *
 * Not done: fragments of SNAT flows (the frag maps record one address, a
 * SNAT flow changes two in each direction), counted DROP_UNSUPPORTED; SCTP
 * (its CRC cannot be updated incrementally for a port change), refused
 * before any state is made.
 */
#ifndef STRAIT_SNAT_H
#define STRAIT_SNAT_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"
#include "conntrack.h"
#include "fib.h"
#include "icmp.h"
#include "lb.h"
#include "maps.h"
#include "metrics.h"
#include "nat.h"
#include "parse.h"
#include "settings.h"

#define SNAT_PROBES 32

/* Salt for the port hash, so ports do not follow the backend choice. */
#define SNAT_HASH_SALT 0x5a17c0deU

/* snat{4,6}_forward @state: how the caller found the flow. */
#define SNAT_FLOW_NEW      0 /* this packet inserted the conntrack entry */
#define SNAT_FLOW_JOINED   1 /* another CPU inserted it first (race) */
#define SNAT_FLOW_TRACKED  2 /* an existing flow; entry not rewritten */
#define SNAT_FLOW_TOUCHED  3 /* an existing flow whose entry was just rewritten */

_Static_assert(SNAT_DIR_OUT == CT_DIR_SERVICE && SNAT_DIR_IN == CT_DIR_REPLY, "snat dirs");
_Static_assert(sizeof(struct snat4_key) == sizeof(struct ct4_key) &&
		       offsetof(struct snat4_key, dir) == offsetof(struct ct4_key, dir),
	       "snat4_key is a ct4_key");
_Static_assert(sizeof(struct snat6_key) == sizeof(struct ct6_key) &&
		       offsetof(struct snat6_key, dir) == offsetof(struct ct6_key, dir),
	       "snat6_key is a ct6_key");

static __always_inline struct node_config *node_config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline int snat_range_ok(const struct node_config *cfg)
{
	return cfg->snat_port_min && cfg->snat_port_min <= cfg->snat_port_max;
}

/* Can this node SNAT at all: an address of the family and a port range. */
static __always_inline int snat4_configured(void)
{
	struct node_config *cfg = node_config_get();

	return cfg && cfg->addr4 && snat_range_ok(cfg);
}

static __always_inline int snat6_configured(void)
{
	struct node_config *cfg = node_config_get();
	const __u32 *a;

	if (!cfg || !snat_range_ok(cfg))
		return 0;
	a = (const __u32 *)cfg->addr6;
	return !!(a[0] | a[1] | a[2] | a[3]);
}

/* Is @port (host order) one we hand out? */
static __always_inline int snat_port_in_range(const struct node_config *cfg, __u16 port)
{
	return snat_range_ok(cfg) && port >= cfg->snat_port_min && port <= cfg->snat_port_max;
}

/* The first port to try for the flow of @okey (a hash, so flows spread). */
static __always_inline __u32 snat_start(const void *okey, __u32 words)
{
	return jhash2((const __u32 *)okey, words, settings.hash_seed ^ SNAT_HASH_SALT);
}

/*
 * Does a socket of this node own the reply tuple @t (backend B:bp -> node
 * N:P, the layout of the snat IN key's first bytes) of protocol @proto? A
 * connected or listening TCP socket (also TIME_WAIT and request sockets:
 * bpf_skc_lookup_tcp), or a bound UDP socket, in the netns of the skb's
 * device, the node's. Such a port must not be kept for a SNAT flow: its
 * replies would be taken from the socket. Other protocols: treated as
 * taken (no lookup exists), so they always use the range.
 */
static __always_inline int snat_sock_holds(struct __sk_buff *skb, struct bpf_sock_tuple *t,
					   __u32 size, __u8 proto)
{
	struct bpf_sock *sk;

	if (proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, t, size, BPF_F_CURRENT_NETNS, 0);
	else if (proto == IPPROTO_UDP)
		sk = bpf_sk_lookup_udp(skb, t, size, BPF_F_CURRENT_NETNS, 0);
	else
		return 1;
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* ---------------------------------------------------------------- IPv4 */

static __always_inline void snat4_key_of(struct snat4_key *k, __be32 saddr, __be32 daddr,
					 __be16 sport, __be16 dport, __u8 proto, __u8 dir)
{
	k->saddr = saddr;
	k->daddr = daddr;
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
	k->dir = dir;
}

/* Is the IN entry @ikey live, and does it lead back to the client of @p? */
static __always_inline int snat4_in_is(const struct snat4_key *ikey, const struct pkt *p, __u64 now)
{
	struct snat4_entry *in = bpf_map_lookup_elem(&snat4, ikey);

	return in && in->expires > now && in->addr == p->saddr.v4 && in->port == p->sport;
}

/*
 * Claim port ikey->dport: insert the IN entry @v with BPF_NOEXIST, so two
 * CPUs never take one port; an occupant past its deadline is deleted and
 * the insert retried (still NOEXIST: of two CPUs reclaiming one port, one
 * wins). Returns 0 when the port is ours.
 */
static __always_inline int snat4_claim(const struct snat4_key *ikey, const struct snat4_entry *v,
				       __u64 now)
{
	struct snat4_entry *old;

	if (!bpf_map_update_elem(&snat4, ikey, v, BPF_NOEXIST))
		return 0;
	old = bpf_map_lookup_elem(&snat4, ikey);
	if (old && old->expires > now)
		return -1; /* in use */
	/* Its flow is over: reclaim the port, still racing fairly. */
	bpf_map_delete_elem(&snat4, ikey);
	return bpf_map_update_elem(&snat4, ikey, v, BPF_NOEXIST) ? -1 : 0;
}

/*
 * The IN entry {B, N, bp, S} of @ikey is ours: write the OUT entry. Returns
 * CONTINUE (@ikey->dport is the flow's port) or -DROP_SNAT_EXHAUSTED. @v
 * holds the IN value and is overwritten.
 */
static __always_inline int snat4_commit(const struct pkt *p, const struct snat4_key *okey,
					struct snat4_key *ikey, struct snat4_entry *v, __u64 now)
{
	struct snat4_entry *old;
	__be16 mine = ikey->dport;

	v->addr = ikey->daddr; /* the node */
	v->port = mine;
	if (!bpf_map_update_elem(&snat4, okey, v, BPF_NOEXIST))
		return CONTINUE;
	old = bpf_map_lookup_elem(&snat4, okey);
	if (old && old->expires > now && old->addr == ikey->daddr) {
		/* Another CPU set this flow up first: use its port if its IN
		 * entry is there and leads back to our client. */
		ikey->dport = old->port;
		if (snat4_in_is(ikey, p, now)) {
			__be16 theirs = ikey->dport;

			ikey->dport = mine;
			bpf_map_delete_elem(&snat4, ikey);
			ikey->dport = theirs;
			return CONTINUE;
		}
		ikey->dport = mine;
	}
	/* A stale mapping of an earlier flow with this tuple: replace it. */
	if (bpf_map_update_elem(&snat4, okey, v, BPF_ANY)) {
		bpf_map_delete_elem(&snat4, ikey);
		return -DROP_SNAT_EXHAUSTED;
	}
	return CONTINUE;
}

/*
 * A port of the SNAT range for the flow of @okey (its OUT key). @ikey comes
 * in as the IN key (dport ignored) and leaves with the port. Writes IN,
 * then OUT. Returns CONTINUE or -DROP_SNAT_EXHAUSTED. No socket check: the
 * range lies outside the node's ephemeral range (see the top).
 */
static __always_inline int snat4_alloc(const struct pkt *p, const struct snat4_key *okey,
				       struct snat4_key *ikey, struct snat4_entry *v,
				       const struct node_config *cfg, __u64 expires, __u64 now)
{
	__u32 min = cfg->snat_port_min;
	__u32 range, start, i;

	if (!snat_range_ok(cfg))
		return -DROP_SNAT_EXHAUSTED;
	range = (__u32)cfg->snat_port_max - min + 1;
	start = snat_start(okey, sizeof(*okey) / 4);

	v->addr = p->saddr.v4;
	v->port = p->sport;
	v->expires = expires;
	for (i = 0; i < SNAT_PROBES; i++) {
		if (i >= range)
			return -DROP_SNAT_EXHAUSTED;
		ikey->dport = bpf_htons((__u16)(min + (start + i) % range));
		if (!snat4_claim(ikey, v, now))
			return snat4_commit(p, okey, ikey, v, now);
	}
	return -DROP_SNAT_EXHAUSTED;
}

/*
 * As snat4_alloc(), but the client's own source port first (what
 * netfilter's masquerade does when the translated tuple is unique), the
 * range only when that port is taken: by another flow's IN entry to the
 * same backend, or by a socket of this node on the reply tuple (see
 * snat_sock_holds()). @skb: for the socket lookup (its device's netns).
 */
static __always_inline int snat4_alloc_keep(struct __sk_buff *skb, const struct pkt *p,
					    const struct snat4_key *okey, struct snat4_key *ikey,
					    struct snat4_entry *v, const struct node_config *cfg,
					    __u64 expires, __u64 now)
{
	if (p->sport) {
		v->addr = p->saddr.v4;
		v->port = p->sport;
		v->expires = expires;
		ikey->dport = p->sport;
		/* The IN key starts with the reply tuple's saddr, daddr,
		 * sport, dport: the layout of bpf_sock_tuple.ipv4. */
		if (!snat_sock_holds(skb, (struct bpf_sock_tuple *)ikey,
				     sizeof(((struct bpf_sock_tuple *)0)->ipv4), p->proto) &&
		    !snat4_claim(ikey, v, now))
			return snat4_commit(p, okey, ikey, v, now);
	}
	return snat4_alloc(p, okey, ikey, v, cfg, expires, now);
}

/* Deadline of both snat entries of a flow := its conntrack deadline. */
static __always_inline void snat4_refresh(const struct snat4_key *okey, const struct snat4_key *ikey,
					  __u64 expires)
{
	struct snat4_entry *s;

	s = bpf_map_lookup_elem(&snat4, okey);
	if (s)
		s->expires = expires;
	s = bpf_map_lookup_elem(&snat4, ikey);
	if (s)
		s->expires = expires;
}

/*
 * A packet @p of a north-south flow (client -> frontend; conntrack SERVICE
 * entry @e flagged CT_F_SNAT; @state SNAT_FLOW_*) to backend @be on another
 * node: find or make the flow's SNAT port, keep the REPLY entry {B, N, bp,
 * S}, rewrite C:cp -> F:fp into N:S -> B:bp. Returns REASON_SERVICE_SNAT
 * (the caller sends it) or -DROP_*.
 *
 * Not inlined (nor the reply's): a BPF-to-BPF call gets a stack frame of
 * its own, and inlined into the ingress program both families' keys would
 * pass the 512-byte limit. Five arguments at most: the SERVICE key is
 * rebuilt from @p and the time read again.
 */
static __noinline int snat4_xlate_flow(struct __sk_buff *skb, const struct pkt *p,
				       const struct lb4_backend *be, struct ct_entry *e, int state)
{
	struct snat4_key okey = {}; /* also the flow's ct4 SERVICE key */
	struct snat4_key ikey = {}; /* also its ct4 REPLY key */
	struct node_config *cfg;
	struct snat4_entry *out;
	union { /* one after the other: the stack is tight (see above) */
		struct snat4_entry v;
		struct ct_entry fresh;
	} u = {};
	__u64 now = ct_now();
	int reuse = 0;
	int ret;

	if (p->flags & PKT_F_FRAG_FIRST)
		return -DROP_UNSUPPORTED;

	snat4_key_of(&okey, p->saddr.v4, p->daddr.v4, p->sport, p->dport, p->proto, SNAT_DIR_OUT);
	out = bpf_map_lookup_elem(&snat4, &okey);
	if (out && out->expires > now) {
		snat4_key_of(&ikey, be->addr, out->addr, be->port, out->port, p->proto, SNAT_DIR_IN);
		/* A tracked flow trusts its mapping; a new one (client port
		 * reuse, or entries lost to the LRU) only if it leads back. */
		reuse = state >= SNAT_FLOW_TRACKED || snat4_in_is(&ikey, p, now);
	}
	if (!reuse) {
		cfg = node_config_get();
		if (!cfg || !cfg->addr4)
			return -DROP_SNAT_EXHAUSTED;
		snat4_key_of(&ikey, be->addr, cfg->addr4, be->port, 0, p->proto, SNAT_DIR_IN);
		ret = snat4_alloc_keep(skb, p, &okey, &ikey, &u.v, cfg, e->expires, now);
		if (ret != CONTINUE) {
			/* Nothing of a new flow may stay behind: its next
			 * packet must find no entry and try again. */
			if (state == SNAT_FLOW_NEW)
				bpf_map_delete_elem(&ct4, &okey);
			return ret;
		}
		ct_entry_peer(&u.fresh, e);
		if (bpf_map_update_elem(&ct4, &ikey, &u.fresh, BPF_ANY)) {
			bpf_map_delete_elem(&snat4, &ikey);
			bpf_map_delete_elem(&snat4, &okey);
			if (state == SNAT_FLOW_NEW)
				bpf_map_delete_elem(&ct4, &okey);
			return -DROP_CT_FULL;
		}
	} else if (state != SNAT_FLOW_TRACKED) {
		ct4_follow((const struct ct4_key *)&ikey, e);
		snat4_refresh(&okey, &ikey, e->expires);
	}

	ret = nat4_rewrite(skb, p, NAT_DST, be->addr, be->port);
	if (ret != CONTINUE)
		return ret;
	ret = nat4_rewrite(skb, p, NAT_SRC, ikey.daddr, ikey.dport);
	if (ret != CONTINUE)
		return ret;
	return REASON_SERVICE_SNAT;
}

/*
 * A reply of a SNAT flow: B:bp -> N:S, S in the SNAT range, with a live IN
 * entry, rewritten to F:fp -> C:cp. Returns REASON_SNAT_REVNAT (the caller
 * sends it), CONTINUE when the packet is no SNAT reply (a host socket may
 * use the port), or another outcome.
 */
static __noinline int snat4_xlate_reply(struct __sk_buff *skb, const struct pkt *p)
{
	struct snat4_key ikey = {}; /* also the flow's ct4 REPLY key */
	struct snat4_key okey = {}; /* also its ct4 SERVICE key */
	struct node_config *cfg;
	struct snat4_entry *in;
	struct lb4_revnat *rn;
	struct ct_entry *e;
	__be32 client;
	__be16 cport;
	__u64 now;
	int ret;

	cfg = node_config_get();
	/* Any port: a flow may keep its client's (snat4_alloc_keep()). */
	if (!cfg || !cfg->addr4 || p->daddr.v4 != cfg->addr4)
		return CONTINUE;

	now = ct_now();
	snat4_key_of(&ikey, p->saddr.v4, p->daddr.v4, p->sport, p->dport, p->proto, SNAT_DIR_IN);
	in = bpf_map_lookup_elem(&snat4, &ikey);
	if (!in || in->expires <= now)
		return CONTINUE;
	client = in->addr;
	cport = in->port;

	/* The port is taken: whatever goes wrong now, the packet is ours. The
	 * stack has no socket on it and would answer with a reset; dropped, the
	 * reply is sent again, and the client's next packet rewrites a REPLY
	 * entry the LRU took (ct4_follow). */
	e = ct4_lookup((const struct ct4_key *)&ikey, now);
	if (!e)
		return -DROP_SNAT_UNTRACKED;
	rn = bpf_map_lookup_elem(&revnat4, &e->rev_nat_id);
	if (!rn)
		return -DROP_SNAT_UNTRACKED; /* tracked, but its frontend is gone */
	if (p->flags & (PKT_F_FRAG_FIRST | PKT_F_L4_SHORT))
		return -DROP_UNSUPPORTED;

	if (ct_touch(e, p->proto, p->tcp_flags, CT_DIR_REPLY, now)) {
		snat4_key_of(&okey, client, rn->addr, cport, rn->port, p->proto, SNAT_DIR_OUT);
		ct4_follow((const struct ct4_key *)&okey, e);
		snat4_refresh(&okey, &ikey, e->expires);
	}

	ret = nat4_rewrite(skb, p, NAT_DST, client, cport);
	if (ret != CONTINUE)
		return ret;
	ret = nat4_rewrite(skb, p, NAT_SRC, rn->addr, rn->port);
	if (ret != CONTINUE)
		return ret;
	return REASON_SNAT_REVNAT;
}

/* Translate and send a SNAT flow's packet to its backend. */
static __always_inline int snat4_forward(struct __sk_buff *skb, const struct pkt *p,
					 const struct lb4_backend *be, struct ct_entry *e, int state)
{
	int ret = snat4_xlate_flow(skb, p, be, e, state);

	if (ret != REASON_SERVICE_SNAT)
		return ret;
	ret = fib4_forward(skb);
	return ret == CONTINUE ? REASON_SERVICE_SNAT : ret;
}

/*
 * Replies of SNAT flows, checked before the Service lookup, so a reply is
 * never taken for a new flow to a frontend on the node's address
 * (cilium#33723). Returns CONTINUE when the packet is not one.
 */
static __always_inline int snat4_reverse(struct __sk_buff *skb, const struct pkt *p)
{
	int ret = snat4_xlate_reply(skb, p);

	if (ret != REASON_SNAT_REVNAT)
		return ret;
	ret = fib4_forward(skb);
	return ret == CONTINUE ? REASON_SNAT_REVNAT : ret;
}

/* ---------------------------------------------------------------- IPv6 */

/* 16 address bytes as four words: every IPv6 address we copy sits at a
 * 4-byte aligned offset, and byte-wise copies (all clang can do for u8[16]
 * of unknown alignment) cost a stack slot per byte in a tight frame. */
static __always_inline void snat_addr6_copy(void *dst, const void *src)
{
	__u32 *d = dst;
	const __u32 *s = src;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
	d[3] = s[3];
}

static __always_inline void snat6_key_of(struct snat6_key *k, const __u8 *saddr, const __u8 *daddr,
					 __be16 sport, __be16 dport, __u8 proto, __u8 dir)
{
	snat_addr6_copy(k->saddr, saddr);
	snat_addr6_copy(k->daddr, daddr);
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
	k->dir = dir;
}

static __always_inline int snat6_in_is(const struct snat6_key *ikey, const struct pkt *p, __u64 now)
{
	struct snat6_entry *in = bpf_map_lookup_elem(&snat6, ikey);

	return in && in->expires > now && addr6_eq(in->addr, p->saddr.v6) && in->port == p->sport;
}

static __always_inline int snat6_claim(const struct snat6_key *ikey, const struct snat6_entry *v,
				       __u64 now)
{
	struct snat6_entry *old;

	if (!bpf_map_update_elem(&snat6, ikey, v, BPF_NOEXIST))
		return 0;
	old = bpf_map_lookup_elem(&snat6, ikey);
	if (old && old->expires > now)
		return -1;
	bpf_map_delete_elem(&snat6, ikey);
	return bpf_map_update_elem(&snat6, ikey, v, BPF_NOEXIST) ? -1 : 0;
}

static __always_inline int snat6_commit(const struct pkt *p, const struct snat6_key *okey,
					struct snat6_key *ikey, struct snat6_entry *v, __u64 now)
{
	struct snat6_entry *old;
	__be16 mine = ikey->dport;

	snat_addr6_copy(v->addr, ikey->daddr);
	v->port = mine;
	if (!bpf_map_update_elem(&snat6, okey, v, BPF_NOEXIST))
		return CONTINUE;
	old = bpf_map_lookup_elem(&snat6, okey);
	if (old && old->expires > now && addr6_eq(old->addr, ikey->daddr)) {
		ikey->dport = old->port;
		if (snat6_in_is(ikey, p, now)) {
			__be16 theirs = ikey->dport;

			ikey->dport = mine;
			bpf_map_delete_elem(&snat6, ikey);
			ikey->dport = theirs;
			return CONTINUE;
		}
		ikey->dport = mine;
	}
	if (bpf_map_update_elem(&snat6, okey, v, BPF_ANY)) {
		bpf_map_delete_elem(&snat6, ikey);
		return -DROP_SNAT_EXHAUSTED;
	}
	return CONTINUE;
}

static __always_inline int snat6_alloc(const struct pkt *p, const struct snat6_key *okey,
				       struct snat6_key *ikey, struct snat6_entry *v,
				       const struct node_config *cfg, __u64 expires, __u64 now)
{
	__u32 min = cfg->snat_port_min;
	__u32 range, start, i;

	if (!snat_range_ok(cfg))
		return -DROP_SNAT_EXHAUSTED;
	range = (__u32)cfg->snat_port_max - min + 1;
	start = snat_start(okey, sizeof(*okey) / 4);

	snat_addr6_copy(v->addr, p->saddr.v6);
	v->port = p->sport;
	v->expires = expires;
	for (i = 0; i < SNAT_PROBES; i++) {
		if (i >= range)
			return -DROP_SNAT_EXHAUSTED;
		ikey->dport = bpf_htons((__u16)(min + (start + i) % range));
		if (!snat6_claim(ikey, v, now))
			return snat6_commit(p, okey, ikey, v, now);
	}
	return -DROP_SNAT_EXHAUSTED;
}

/* As snat4_alloc_keep(). @ikey lives in snat6_scratch (a map value, which
 * the socket lookup helpers accept as the tuple). */
static __always_inline int snat6_alloc_keep(struct __sk_buff *skb, const struct pkt *p,
					    const struct snat6_key *okey, struct snat6_key *ikey,
					    struct snat6_entry *v, const struct node_config *cfg,
					    __u64 expires, __u64 now)
{
	if (p->sport) {
		snat_addr6_copy(v->addr, p->saddr.v6);
		v->port = p->sport;
		v->expires = expires;
		ikey->dport = p->sport;
		/* saddr, daddr, sport, dport: bpf_sock_tuple.ipv6's layout. */
		if (!snat_sock_holds(skb, (struct bpf_sock_tuple *)ikey,
				     sizeof(((struct bpf_sock_tuple *)0)->ipv6), p->proto) &&
		    !snat6_claim(ikey, v, now))
			return snat6_commit(p, okey, ikey, v, now);
	}
	return snat6_alloc(p, okey, ikey, v, cfg, expires, now);
}

static __always_inline void snat6_refresh(const struct snat6_key *okey, const struct snat6_key *ikey,
					  __u64 expires)
{
	struct snat6_entry *s;

	s = bpf_map_lookup_elem(&snat6, okey);
	if (s)
		s->expires = expires;
	s = bpf_map_lookup_elem(&snat6, ikey);
	if (s)
		s->expires = expires;
}

/*
 * IPv6: as snat4_xlate_flow(), with the keys and values in the per-CPU
 * snat6_scratch (abi.h): three 40-byte keys do not fit the stack that the
 * ingress program leaves. Programs do not nest on a CPU, and nothing here
 * outlives the call.
 */
static __noinline int snat6_xlate_flow(struct __sk_buff *skb, const struct pkt *p,
				       const struct lb6_backend *be, struct ct_entry *e, int state)
{
	struct snat6_scratch *sc;
	struct node_config *cfg;
	struct snat6_entry *out;
	__u64 now = ct_now();
	__u32 zero = 0;
	const __u32 *a;
	int reuse = 0;
	int ret;

	if (p->flags & PKT_F_FRAG_FIRST)
		return -DROP_UNSUPPORTED;
	sc = bpf_map_lookup_elem(&snat6_scratch, &zero);
	if (!sc)
		return -DROP_UNSUPPORTED;

	__builtin_memset(&sc->okey, 0, sizeof(sc->okey));
	__builtin_memset(&sc->ikey, 0, sizeof(sc->ikey));
	snat6_key_of(&sc->okey, p->saddr.v6, p->daddr.v6, p->sport, p->dport, p->proto,
		     SNAT_DIR_OUT);
	out = bpf_map_lookup_elem(&snat6, &sc->okey);
	if (out && out->expires > now) {
		snat6_key_of(&sc->ikey, be->addr, out->addr, be->port, out->port, p->proto,
			     SNAT_DIR_IN);
		reuse = state >= SNAT_FLOW_TRACKED || snat6_in_is(&sc->ikey, p, now);
	}
	if (!reuse) {
		cfg = node_config_get();
		if (!cfg)
			return -DROP_SNAT_EXHAUSTED;
		a = (const __u32 *)cfg->addr6;
		if (!(a[0] | a[1] | a[2] | a[3]))
			return -DROP_SNAT_EXHAUSTED;
		snat6_key_of(&sc->ikey, be->addr, cfg->addr6, be->port, 0, p->proto, SNAT_DIR_IN);
		__builtin_memset(&sc->v, 0, sizeof(sc->v));
		ret = snat6_alloc_keep(skb, p, &sc->okey, &sc->ikey, &sc->v, cfg, e->expires, now);
		if (ret != CONTINUE) {
			if (state == SNAT_FLOW_NEW)
				bpf_map_delete_elem(&ct6, &sc->okey);
			return ret;
		}
		ct_entry_peer(&sc->fresh, e);
		if (bpf_map_update_elem(&ct6, &sc->ikey, &sc->fresh, BPF_ANY)) {
			bpf_map_delete_elem(&snat6, &sc->ikey);
			bpf_map_delete_elem(&snat6, &sc->okey);
			if (state == SNAT_FLOW_NEW)
				bpf_map_delete_elem(&ct6, &sc->okey);
			return -DROP_CT_FULL;
		}
	} else if (state != SNAT_FLOW_TRACKED) {
		ct6_follow((const struct ct6_key *)&sc->ikey, e);
		snat6_refresh(&sc->okey, &sc->ikey, e->expires);
	}

	ret = nat6_rewrite(skb, p, NAT_DST, be->addr, be->port);
	if (ret != CONTINUE)
		return ret;
	ret = nat6_rewrite(skb, p, NAT_SRC, sc->ikey.daddr, sc->ikey.dport);
	if (ret != CONTINUE)
		return ret;
	return REASON_SERVICE_SNAT;
}

static __noinline int snat6_xlate_reply(struct __sk_buff *skb, const struct pkt *p)
{
	struct snat6_scratch *sc;
	struct node_config *cfg;
	struct snat6_entry *in;
	struct lb6_revnat *rn;
	struct ct_entry *e;
	union strait_addr client;
	__u32 zero = 0;
	__be16 cport;
	__u64 now;
	int ret;

	cfg = node_config_get();
	if (!cfg || !addr6_eq(p->daddr.v6, cfg->addr6))
		return CONTINUE;
	sc = bpf_map_lookup_elem(&snat6_scratch, &zero);
	if (!sc)
		return CONTINUE;

	now = ct_now();
	__builtin_memset(&sc->ikey, 0, sizeof(sc->ikey));
	snat6_key_of(&sc->ikey, p->saddr.v6, p->daddr.v6, p->sport, p->dport, p->proto,
		     SNAT_DIR_IN);
	in = bpf_map_lookup_elem(&snat6, &sc->ikey);
	if (!in || in->expires <= now)
		return CONTINUE;
	snat_addr6_copy(client.v6, in->addr);
	cport = in->port;

	e = ct6_lookup((const struct ct6_key *)&sc->ikey, now);
	if (!e)
		return -DROP_SNAT_UNTRACKED; /* see snat4_xlate_reply() */
	rn = bpf_map_lookup_elem(&revnat6, &e->rev_nat_id);
	if (!rn)
		return -DROP_SNAT_UNTRACKED;
	if (p->flags & (PKT_F_FRAG_FIRST | PKT_F_L4_SHORT))
		return -DROP_UNSUPPORTED;

	if (ct_touch(e, p->proto, p->tcp_flags, CT_DIR_REPLY, now)) {
		__builtin_memset(&sc->okey, 0, sizeof(sc->okey));
		snat6_key_of(&sc->okey, client.v6, rn->addr, cport, rn->port, p->proto,
			     SNAT_DIR_OUT);
		ct6_follow((const struct ct6_key *)&sc->okey, e);
		snat6_refresh(&sc->okey, &sc->ikey, e->expires);
	}

	ret = nat6_rewrite(skb, p, NAT_DST, client.v6, cport);
	if (ret != CONTINUE)
		return ret;
	ret = nat6_rewrite(skb, p, NAT_SRC, rn->addr, rn->port);
	if (ret != CONTINUE)
		return ret;
	return REASON_SNAT_REVNAT;
}

static __always_inline int snat6_forward(struct __sk_buff *skb, const struct pkt *p,
					 const struct lb6_backend *be, struct ct_entry *e, int state)
{
	int ret = snat6_xlate_flow(skb, p, be, e, state);

	if (ret != REASON_SERVICE_SNAT)
		return ret;
	ret = fib6_forward(skb);
	return ret == CONTINUE ? REASON_SERVICE_SNAT : ret;
}

static __always_inline int snat6_reverse(struct __sk_buff *skb, const struct pkt *p)
{
	int ret = snat6_xlate_reply(skb, p);

	if (ret != REASON_SNAT_REVNAT)
		return ret;
	ret = fib6_forward(skb);
	return ret == CONTINUE ? REASON_SNAT_REVNAT : ret;
}

/* ------------------------------------------------------ ICMP errors */

/*
 * An ICMP error at ingress about a SNAT flow; the caller has checked it is
 * an error with its header present. Returns REASON_SNAT_ICMP_XLATE (toward
 * the client: the caller sends it), REASON_ICMP_ERROR_XLATE (toward the
 * backend, for the stack to route), REASON_PASS (not about a SNAT flow) or
 * -DROP_*. Outer addresses are read back from the packet.
 */
static __noinline int snat4_icmp_xlate(struct __sk_buff *skb, __u32 l4_off)
{
	__u32 icmp_csum = l4_off + offsetof(struct icmphdr, checksum);
	__u32 ip_csum;
	struct snat4_key k = {};
	struct node_config *cfg;
	struct icmp_inner4 in;
	struct snat4_entry *s;
	struct lb4_backend *be;
	struct lb4_revnat *rn;
	struct ct_entry *e;
	__be32 outer[2]; /* saddr, daddr */
	__be32 client;
	__be16 cport;
	__u64 now = ct_now();
	int ret;

	if (icmp4_parse_inner(skb, l4_off, &in) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), outer, sizeof(outer)))
		return REASON_PASS;
	ip_csum = in.ip_off + offsetof(struct iphdr, check);
	cfg = node_config_get();
	if (!cfg)
		return REASON_PASS;

	/* About N:S -> B:bp? S may be any port (a kept client port), so
	 * the IN entry decides; without one it may still be about a reply
	 * N:fp -> C:cp of a NodePort frontend (below). */
	s = NULL;
	if (outer[1] == cfg->addr4 && in.ip.saddr == cfg->addr4) {
		snat4_key_of(&k, in.ip.daddr, in.ip.saddr, in.dport, in.sport, in.ip.protocol,
			     SNAT_DIR_IN);
		s = bpf_map_lookup_elem(&snat4, &k);
	}
	if (s && s->expires > now) {
		/* About N:S -> B:bp: back to the client, about C:cp -> F:fp. */
		client = s->addr;
		cport = s->port;
		e = ct4_lookup((const struct ct4_key *)&k, now);
		if (!e)
			return REASON_PASS;
		rn = bpf_map_lookup_elem(&revnat4, &e->rev_nat_id);
		if (!rn)
			return REASON_PASS;

		ret = nat4_addr(skb, NAT_DST, outer[1], client);
		if (ret == CONTINUE && outer[0] == in.ip.daddr) /* the backend itself */
			ret = nat4_addr(skb, NAT_SRC, outer[0], rn->addr);
		if (ret == CONTINUE)
			ret = icmp4_inner_rewrite(skb, icmp_csum, &in,
						  in.ip_off + offsetof(struct iphdr, saddr),
						  in.ip.saddr, client, in.l4_off, in.sport, cport);
		/* The quoted header checksum changed: the next rewrite's
		 * ICMP checksum update starts from its new value. */
		if (ret == CONTINUE && bpf_skb_load_bytes(skb, ip_csum, &in.ip.check, 2))
			ret = -DROP_CSUM;
		if (ret == CONTINUE)
			ret = icmp4_inner_rewrite(skb, icmp_csum, &in,
						  in.ip_off + offsetof(struct iphdr, daddr),
						  in.ip.daddr, rn->addr, in.l4_off + 2, in.dport, rn->port);
		return ret == CONTINUE ? REASON_SNAT_ICMP_XLATE : ret;
	}

	/* About F:fp -> C:cp, a reply we sent: to the backend, about
	 * B:bp -> N:S. Only errors addressed to the frontend that sent it. */
	if (outer[1] != in.ip.saddr)
		return REASON_PASS;
	snat4_key_of(&k, in.ip.daddr, in.ip.saddr, in.dport, in.sport, in.ip.protocol,
		     SNAT_DIR_OUT);
	e = ct4_lookup((const struct ct4_key *)&k, now);
	if (!e || !(e->flags & CT_F_SNAT))
		return REASON_PASS;
	be = bpf_map_lookup_elem(&backends4, &e->backend_id);
	s = bpf_map_lookup_elem(&snat4, &k);
	if (!be || !s || s->expires <= now)
		return REASON_PASS;

	ret = nat4_addr(skb, NAT_DST, outer[1], be->addr);
	if (ret == CONTINUE)
		ret = icmp4_inner_rewrite(skb, icmp_csum, &in, in.ip_off + offsetof(struct iphdr, saddr),
					  in.ip.saddr, be->addr, in.l4_off, in.sport, be->port);
	if (ret == CONTINUE && bpf_skb_load_bytes(skb, ip_csum, &in.ip.check, 2))
		ret = -DROP_CSUM;
	if (ret == CONTINUE)
		ret = icmp4_inner_rewrite(skb, icmp_csum, &in, in.ip_off + offsetof(struct iphdr, daddr),
					  in.ip.daddr, s->addr, in.l4_off + 2, in.dport, s->port);
	return ret == CONTINUE ? REASON_ICMP_ERROR_XLATE : ret;
}

static __noinline int snat6_icmp_xlate(struct __sk_buff *skb, __u32 l4_off)
{
	__u32 icmp_csum = l4_off + offsetof(struct icmp6hdr, icmp6_cksum);
	struct snat6_scratch *sc;
	struct node_config *cfg;
	struct icmp_inner6 in;
	struct snat6_entry *s;
	struct lb6_backend *be;
	struct lb6_revnat *rn;
	struct ct_entry *e;
	union strait_addr outer_src, outer_dst, client;
	__be16 cport;
	__u32 zero = 0;
	__u64 now = ct_now();
	int ret;

	if (icmp6_parse_inner(skb, l4_off, &in) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), outer_src.v6, 16) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, daddr), outer_dst.v6, 16))
		return REASON_PASS;
	cfg = node_config_get();
	sc = bpf_map_lookup_elem(&snat6_scratch, &zero);
	if (!cfg || !sc)
		return REASON_PASS;
	__builtin_memset(&sc->ikey, 0, sizeof(sc->ikey));

	/* As snat4_icmp_xlate(): the IN entry decides, any port. */
	s = NULL;
	if (addr6_eq(outer_dst.v6, cfg->addr6) && addr6_eq(&in.ip.saddr, cfg->addr6)) {
		snat6_key_of(&sc->ikey, (const __u8 *)&in.ip.daddr, (const __u8 *)&in.ip.saddr,
			     in.dport, in.sport, in.ip.nexthdr, SNAT_DIR_IN);
		s = bpf_map_lookup_elem(&snat6, &sc->ikey);
	}
	if (s && s->expires > now) {
		snat_addr6_copy(client.v6, s->addr);
		cport = s->port;
		e = ct6_lookup((const struct ct6_key *)&sc->ikey, now);
		if (!e)
			return REASON_PASS;
		rn = bpf_map_lookup_elem(&revnat6, &e->rev_nat_id);
		if (!rn)
			return REASON_PASS;

		ret = icmp6_rewrite(skb, icmp_csum, 1, ETH_HLEN + offsetof(struct ipv6hdr, daddr),
				    outer_dst.v6, client.v6, 0, 0, 0);
		if (ret == CONTINUE && addr6_eq(outer_src.v6, &in.ip.daddr))
			ret = icmp6_rewrite(skb, icmp_csum, 1,
					    ETH_HLEN + offsetof(struct ipv6hdr, saddr), outer_src.v6,
					    rn->addr, 0, 0, 0);
		if (ret == CONTINUE)
			ret = icmp6_rewrite(skb, icmp_csum, 0, in.ip_off + offsetof(struct ipv6hdr, saddr),
					    (const __u8 *)&in.ip.saddr, client.v6, in.l4_off, in.sport,
					    cport);
		if (ret == CONTINUE)
			ret = icmp6_rewrite(skb, icmp_csum, 0, in.ip_off + offsetof(struct ipv6hdr, daddr),
					    (const __u8 *)&in.ip.daddr, rn->addr, in.l4_off + 2,
					    in.dport, rn->port);
		return ret == CONTINUE ? REASON_SNAT_ICMP_XLATE : ret;
	}

	if (!addr6_eq(outer_dst.v6, &in.ip.saddr))
		return REASON_PASS;
	snat6_key_of(&sc->ikey, (const __u8 *)&in.ip.daddr, (const __u8 *)&in.ip.saddr, in.dport,
		     in.sport, in.ip.nexthdr, SNAT_DIR_OUT);
	e = ct6_lookup((const struct ct6_key *)&sc->ikey, now);
	if (!e || !(e->flags & CT_F_SNAT))
		return REASON_PASS;
	be = bpf_map_lookup_elem(&backends6, &e->backend_id);
	s = bpf_map_lookup_elem(&snat6, &sc->ikey);
	if (!be || !s || s->expires <= now)
		return REASON_PASS;

	ret = icmp6_rewrite(skb, icmp_csum, 1, ETH_HLEN + offsetof(struct ipv6hdr, daddr),
			    outer_dst.v6, be->addr, 0, 0, 0);
	if (ret == CONTINUE)
		ret = icmp6_rewrite(skb, icmp_csum, 0, in.ip_off + offsetof(struct ipv6hdr, saddr),
				    (const __u8 *)&in.ip.saddr, be->addr, in.l4_off, in.sport,
				    be->port);
	if (ret == CONTINUE)
		ret = icmp6_rewrite(skb, icmp_csum, 0, in.ip_off + offsetof(struct ipv6hdr, daddr),
				    (const __u8 *)&in.ip.daddr, s->addr, in.l4_off + 2, in.dport,
				    s->port);
	return ret == CONTINUE ? REASON_ICMP_ERROR_XLATE : ret;
}

/*
 * ICMP errors at ingress: about SNAT flows here, else the generic
 * translation of icmp.h. Returns an outcome (REASON_PASS: not ours).
 */
static __always_inline int snat4_icmp_error(struct __sk_buff *skb, const struct pkt *p)
{
	int ret;

	if (!icmp_error_candidate(p))
		return REASON_PASS;
	ret = snat4_icmp_xlate(skb, p->l4_off);
	if (ret == REASON_SNAT_ICMP_XLATE) {
		ret = fib4_forward(skb);
		return ret == CONTINUE ? REASON_SNAT_ICMP_XLATE : ret;
	}
	return ret == REASON_PASS ? icmp4_error_ingress(skb, p) : ret;
}

static __always_inline int snat6_icmp_error(struct __sk_buff *skb, const struct pkt *p)
{
	int ret;

	if (!icmp_error_candidate(p))
		return REASON_PASS;
	ret = snat6_icmp_xlate(skb, p->l4_off);
	if (ret == REASON_SNAT_ICMP_XLATE) {
		ret = fib6_forward(skb);
		return ret == CONTINUE ? REASON_SNAT_ICMP_XLATE : ret;
	}
	return ret == REASON_PASS ? icmp6_error_ingress(skb, p) : ret;
}

#endif /* STRAIT_SNAT_H */
