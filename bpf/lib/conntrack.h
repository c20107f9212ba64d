/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * conntrack.h — the ct{4,6} entries of translated flows.
 *
 * A flow C:cp -> V:vp -> B:bp owns a CT_DIR_SERVICE entry {C, V, cp, vp}
 * (keeps the flow on its backend) and a CT_DIR_REPLY entry {B, C, bp, cp}
 * (only replies with it are reverse-NATed); see abi.h. Both carry the same
 * flow flags and deadline: whichever direction refreshes one refreshes the
 * other, so a one-way flow cannot lose the entry of the silent direction.
 *
 * Writes are rationed: an entry is written when its flags change or when its
 * deadline would move by more than CT_REFRESH_NS, i.e. at most about once a
 * second per flow and direction. Established traffic otherwise only reads
 * the entry, which keeps its cache line shared between CPUs.
 *
 * Time is bpf_ktime_get_coarse_ns(): the same CLOCK_MONOTONIC as
 * bpf_ktime_get_ns() at tick resolution, without a clock-source read per
 * packet.
 */
#ifndef STRAIT_CONNTRACK_H
#define STRAIT_CONNTRACK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "abi.h"
#include "maps.h"
#include "metrics.h"
#include "parse.h"
#include "settings.h"

#ifndef EEXIST
#define EEXIST 17
#endif

#define CT_REFRESH_NS NSEC_PER_SEC

/* Flags that describe the flow, shared by its two entries. */
#define CT_FLOW_FLAGS (CT_F_SEEN_REPLY | CT_F_ESTABLISHED | CT_F_CLOSING)

#ifdef STRAIT_TEST_HOOKS
/*
 * Test-only: an entry put here for a SERVICE key is copied into ct4/ct6
 * between the failed lookup and our BPF_NOEXIST insert, exactly as if
 * another CPU had won the insert race for the same flow. A test seeds it and
 * checks that the packet joins the winner's backend (REASON_CT_RACE_JOINED).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct ct_entry);
	__uint(max_entries, 1024);
} ct4_race SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct6_key);
	__type(value, struct ct_entry);
	__uint(max_entries, 1024);
} ct6_race SEC(".maps");
#endif

static __always_inline __u64 ct_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* How long a flow in state @flags lives without traffic. */
static __always_inline __u64 ct_lifetime(__u8 proto, __u16 flags)
{
	if (proto != IPPROTO_TCP)
		return settings.ct_udp_ns; /* UDP and SCTP */
	if (flags & CT_F_CLOSING)
		return settings.ct_tcp_closing_ns;
	if (flags & CT_F_ESTABLISHED)
		return settings.ct_tcp_established_ns;
	return settings.ct_tcp_syn_ns;
}

/* Flow flags after a TCP packet with flags @tf. CLOSING is sticky. */
static __always_inline __u16 ct_tcp_flags(__u16 flags, __u8 tf)
{
	if (tf & (TCP_FIN | TCP_RST))
		return flags | CT_F_CLOSING;
	if (!(flags & CT_F_CLOSING) && (tf & (TCP_SYN | TCP_ACK)) == TCP_ACK)
		return flags | CT_F_ESTABLISHED;
	return flags;
}

/*
 * May a TCP packet to a Service open an entry when there is none?
 * We never window-track and never send RSTs (kubernetes#74839): anything
 * that could belong to a healthy connection is picked up loosely, like
 * nf_conntrack_tcp_loose. Refused: RST (nothing to reset), SYN with FIN, RST
 * or ACK (no client opens a flow to a Service that way), and packets without
 * ACK and SYN (no flags at all, FIN alone, PSH alone, ...). An ACK'd FIN is
 * picked up, into the closing state, so a flow whose entry expired can still
 * close on its backend.
 */
static __always_inline int ct_tcp_may_open(__u8 tf)
{
	if (tf & TCP_RST)
		return 0;
	if (tf & TCP_SYN)
		return !(tf & (TCP_FIN | TCP_ACK));
	return !!(tf & TCP_ACK);
}

/* A fresh entry for a new flow (SERVICE direction, first packet). */
static __always_inline void ct_entry_init(struct ct_entry *e, __u8 proto, __u8 tf,
					  __u32 backend_id, __u32 rev_nat_id, __u64 now)
{
	__u16 flags = 0;

	if (proto == IPPROTO_TCP)
		flags = ct_tcp_flags(0, tf);
	e->expires = now + ct_lifetime(proto, flags);
	e->backend_id = backend_id;
	e->rev_nat_id = rev_nat_id;
	e->flags = flags;
	e->tcp_flags = proto == IPPROTO_TCP ? tf : 0;
	e->pad = 0;
	e->created = now / NSEC_PER_SEC;
}

/*
 * Apply one packet of the flow, travelling in direction @dir, to its entry.
 * Writes only what changed (see the write rationing above). Returns 1 when
 * the flow flags or the deadline were written, so the peer entry must
 * follow (ct4_follow / ct6_follow), 0 otherwise.
 */
static __always_inline int ct_touch(struct ct_entry *e, __u8 proto, __u8 tf, __u8 dir,
				    __u64 now)
{
	__u16 flags = e->flags;
	__u8 seen = e->tcp_flags;
	__u64 expires;

	if (proto == IPPROTO_TCP) {
		/* A bare SYN on a closing flow is a new connection reusing the
		 * tuple (client port reuse): reopen it on the same backend. */
		if (dir == CT_DIR_SERVICE && (flags & CT_F_CLOSING) &&
		    (tf & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST)) == TCP_SYN) {
			flags &= ~CT_FLOW_FLAGS;
			seen = 0;
		}
		flags = ct_tcp_flags(flags, tf);
		seen |= tf;
	}
	if (dir == CT_DIR_REPLY)
		flags |= CT_F_SEEN_REPLY;

	if (seen != e->tcp_flags)
		e->tcp_flags = seen; /* direction-local: the peer does not follow */

	expires = now + ct_lifetime(proto, flags);
	if (flags != e->flags) {
		e->flags = flags;
		e->expires = expires;
		return 1;
	}
	if (expires > e->expires + CT_REFRESH_NS) {
		e->expires = expires;
		return 1;
	}
	return 0;
}

/* Does a packet with TCP flags @tf on the SERVICE entry @e open a new
 * connection on a closing tuple (ct_touch() reopens it)? Flow creation,
 * as a new entry is. */
static __always_inline int ct_tcp_reopens(const struct ct_entry *e, __u8 proto, __u8 tf)
{
	return proto == IPPROTO_TCP && (e->flags & CT_F_CLOSING) &&
	       (tf & (TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST)) == TCP_SYN;
}

/* Bring @peer in line with the entry that was just touched. */
static __always_inline void ct_entry_follow(struct ct_entry *peer, const struct ct_entry *e)
{
	peer->flags = (peer->flags & ~CT_FLOW_FLAGS) | (e->flags & CT_FLOW_FLAGS);
	peer->expires = e->expires;
}

/* The peer's entry when it has to be created again (evicted by the LRU). */
static __always_inline void ct_entry_peer(struct ct_entry *peer, const struct ct_entry *e)
{
	peer->expires = e->expires;
	peer->backend_id = e->backend_id;
	peer->rev_nat_id = e->rev_nat_id;
	peer->flags = e->flags;
	peer->tcp_flags = 0;
	peer->pad = 0;
	peer->created = e->created;
}

/* ------------------------------------------------ established-flow caches
 * Shared by tc's lib/flowcache.h and XDP's lib/xdp.h: a cached flow stands
 * for conntrack only while the packet brings nothing ct_touch() would record,
 * and only under the flow epoch the agent bumps after every map change. */

/* Does cached conntrack state (@ct_flags, @tcp_seen) cover a packet with TCP
 * flags @tf, i.e. would ct_touch() record nothing new for it? */
static __always_inline int ct_covers(__u16 ct_flags, __u8 tcp_seen, __u8 proto, __u8 tf)
{
	if (proto != IPPROTO_TCP)
		return 1;
	if (tf & (TCP_SYN | TCP_FIN | TCP_RST))
		return 0;
	if ((__u8)(tcp_seen | tf) != tcp_seen)
		return 0;
	return ct_tcp_flags(ct_flags, tf) == ct_flags;
}

/* flow_epoch's low 32 bits, read before any lookup of the packet's: only
 * equality matters, and 2^32 bumps within a cached flow's second cannot
 * happen. */
static __always_inline __u32 flow_epoch_now(void)
{
	__u32 zero = 0;
	struct flow_epoch *ep = bpf_map_lookup_elem(&flow_epoch, &zero);

	return ep ? (__u32)ep->epoch : 0;
}

/* Slot of @p's flow in a direct-mapped cache of 2^@bits slots: the tuple's
 * words folded, then mixed; @salt and @ifindex keep hooks and devices apart.
 * A collision only costs a miss; the node's seed keeps it unpredictable. */
static __always_inline __u32 flow_slot_hash(const struct pkt *p, __u32 salt, __u32 ifindex, int v6,
					    int bits)
{
	__u32 s = p->saddr.w[0], d = p->daddr.w[0];
	__u32 h = settings.hash_seed;

	if (v6) {
		s ^= p->saddr.w[1] ^ p->saddr.w[2] ^ p->saddr.w[3];
		d ^= p->daddr.w[1] ^ p->daddr.w[2] ^ p->daddr.w[3];
	}
	h ^= s ^ ((d << 16) | (d >> 16));
	h ^= ((__u32)p->sport << 16 | p->dport) * 0x85ebca6bU;
	h ^= (salt << 8 | p->proto) ^ (ifindex << 12);
	h *= 0x9e3779b1U;
	return h >> (32 - bits);
}

/* ---------------------------------------------------------------- IPv4 */

/* The live entry for @key, or NULL (absent or past its deadline). */
static __always_inline struct ct_entry *ct4_lookup(const struct ct4_key *key, __u64 now)
{
	struct ct_entry *e = bpf_map_lookup_elem(&ct4, key);

	if (!e || e->expires <= now)
		return NULL;
	return e;
}

static __always_inline void ct4_follow(const struct ct4_key *peer_key, const struct ct_entry *e)
{
	struct ct_entry *peer = bpf_map_lookup_elem(&ct4, peer_key);
	struct ct_entry fresh;

	if (peer) {
		/* A DSR flow recorded later (lib/dsr.h) took the tuple: not
		 * ours to follow (the newest flow wins). */
		if ((peer->flags ^ e->flags) & CT_F_DSR)
			return;
		ct_entry_follow(peer, e);
		return;
	}
	/* NOEXIST: never clobber an entry another CPU just created. A failure
	 * here is not fatal for this packet; the next refresh retries. */
	ct_entry_peer(&fresh, e);
	bpf_map_update_elem(&ct4, peer_key, &fresh, BPF_NOEXIST);
}

#define CT_INSERTED 0
#define CT_JOINED   1

/*
 * Insert the SERVICE entry of a new flow. Two CPUs may see the first packets
 * of one flow at once (UDP especially); the first insert wins and the loser
 * adopts the winner's backend instead of overwriting it (Cilium inserts
 * with BPF_ANY, last writer wins, and can split a flow). Returns CT_INSERTED,
 * CT_JOINED with @ours->backend_id replaced by the winner's, or -DROP_CT_FULL.
 */
static __always_inline int ct4_insert_service(const struct ct4_key *key, struct ct_entry *ours,
					      __u64 now)
{
	struct ct_entry *w;
	long err;

#ifdef STRAIT_TEST_HOOKS
	w = bpf_map_lookup_elem(&ct4_race, key);
	if (w)
		bpf_map_update_elem(&ct4, key, w, BPF_ANY);
#endif
	err = bpf_map_update_elem(&ct4, key, ours, BPF_NOEXIST);
	if (!err)
		return CT_INSERTED;
	if (err != -EEXIST)
		return -DROP_CT_FULL;

	w = ct4_lookup(key, now);
	if (w && bpf_map_lookup_elem(&backends4, &w->backend_id)) {
		ours->backend_id = w->backend_id;
		return CT_JOINED;
	}
	/* The occupant is the stale entry our lookup already rejected (past
	 * its deadline, or its backend is gone): replace it. */
	if (bpf_map_update_elem(&ct4, key, ours, BPF_ANY))
		return -DROP_CT_FULL;
	return CT_INSERTED;
}

/* ---------------------------------------------------------------- IPv6 */

static __always_inline struct ct_entry *ct6_lookup(const struct ct6_key *key, __u64 now)
{
	struct ct_entry *e = bpf_map_lookup_elem(&ct6, key);

	if (!e || e->expires <= now)
		return NULL;
	return e;
}

static __always_inline void ct6_follow(const struct ct6_key *peer_key, const struct ct_entry *e)
{
	struct ct_entry *peer = bpf_map_lookup_elem(&ct6, peer_key);
	struct ct_entry fresh;

	if (peer) {
		if ((peer->flags ^ e->flags) & CT_F_DSR)
			return; /* see ct4_follow() */
		ct_entry_follow(peer, e);
		return;
	}
	ct_entry_peer(&fresh, e);
	bpf_map_update_elem(&ct6, peer_key, &fresh, BPF_NOEXIST);
}

static __always_inline int ct6_insert_service(const struct ct6_key *key, struct ct_entry *ours,
					      __u64 now)
{
	struct ct_entry *w;
	long err;

#ifdef STRAIT_TEST_HOOKS
	w = bpf_map_lookup_elem(&ct6_race, key);
	if (w)
		bpf_map_update_elem(&ct6, key, w, BPF_ANY);
#endif
	err = bpf_map_update_elem(&ct6, key, ours, BPF_NOEXIST);
	if (!err)
		return CT_INSERTED;
	if (err != -EEXIST)
		return -DROP_CT_FULL;

	w = ct6_lookup(key, now);
	if (w && bpf_map_lookup_elem(&backends6, &w->backend_id)) {
		ours->backend_id = w->backend_id;
		return CT_JOINED;
	}
	if (bpf_map_update_elem(&ct6, key, ours, BPF_ANY))
		return -DROP_CT_FULL;
	return CT_INSERTED;
}

#endif /* STRAIT_CONNTRACK_H */
