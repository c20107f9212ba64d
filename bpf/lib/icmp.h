/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * icmp.h — ICMP the datapath sends (port unreachable for a Service without
 * endpoints) and ICMP errors it translates (errors about translated flows,
 * e.g. fragmentation needed / packet too big, must reach the real endpoint
 * with the tuple that endpoint knows, or PMTU discovery breaks).
 */
#ifndef STRAIT_ICMP_H
#define STRAIT_ICMP_H

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"
#include "conntrack.h"
#include "csum.h"
#include "maps.h"
#include "metrics.h"
#include "nat.h"
#include "parse.h"
#include "settings.h"

/* ================================================= no-endpoints replies */

/* Quoted bytes: IPv4 quotes the original IP header and the first 64 bytes
 * after it (RFC 792 asks for 8; 64 covers TCP options for the client's
 * diagnostics, far below RFC 1812's 576 total). IPv6 quotes as much as
 * fits a 1280-byte reply (RFC 4443 2.4(c)). */
#define ICMP4_QUOTE_PAYLOAD 64
#define ICMP6_REPLY_MAX     1280
#define ICMP6_QUOTE_MAX     (ICMP6_REPLY_MAX - sizeof(struct ipv6hdr) - sizeof(struct icmp6hdr))
#define ICMP_REPLY_TTL      64

/*
 * Per-CPU token bucket: settings.icmp_rate replies per second, at most
 * settings.icmp_burst in a row. `tokens` counts whole replies; `last_ns`
 * advances by whole refill periods so no fraction is lost. icmp_rate 0
 * means no limit (as net.ipv4.icmp_ratelimit = 0).
 */
static __always_inline int icmp_ratelimit_allow(void)
{
	__u64 rate = settings.icmp_rate;
	__u64 burst = settings.icmp_burst ? settings.icmp_burst : 1;
	struct icmp_bucket *b;
	__u32 zero = 0;
	__u64 now, period, n;

	if (!rate)
		return 1;
	period = NSEC_PER_SEC / rate;
	if (!period)
		return 1;
	b = bpf_map_lookup_elem(&icmp_ratelimit, &zero);
	if (!b)
		return 0;

	now = bpf_ktime_get_coarse_ns();
	n = (now - b->last_ns) / period;
	if (n) {
		if (n >= burst || b->tokens + n >= burst) {
			b->tokens = burst;
			b->last_ns = now;
		} else {
			b->tokens += n;
			b->last_ns += n * period;
		}
	}
	if (!b->tokens)
		return 0;
	b->tokens--;
	return 1;
}

/* Read the Ethernet header and turn it around for the reply. */
static __always_inline int icmp_reply_eth(struct __sk_buff *skb, struct ethhdr *eth)
{
	__u8 mac[ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, eth, sizeof(*eth)))
		return -1;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	return 0;
}

/*
 * Turn the packet into ICMP port unreachable from the frontend to the client,
 * in place (Cilium's __tail_no_service_ipv4): trim to the quote, open room
 * for the new IP + ICMP headers after the MAC header, write the headers and
 * checksum the result. Every packet pointer is stale after the resize, so
 * only offsets are used. Headers after Ethernet are stored with
 * BPF_F_RECOMPUTE_CSUM so a CHECKSUM_COMPLETE skb->csum stays true; the
 * Ethernet header is outside what skb->csum covers.
 * Known limit: a CHECKSUM_PARTIAL original (sent from a local netns over a
 * veth) keeps that state, with csum_start pointing into the quote; veth
 * peers accept it as is, but a device without checksum offload would have
 * the stack "finish" a checksum inside the quote. bpf_skb_adjust_room()
 * only resets CHECKSUM_UNNECESSARY, and no helper resets PARTIAL.
 * Returns @reason (REASON_NO_ENDPOINTS_REPLY or REASON_FRAG_NEEDED_REPLY,
 * whose action redirects the packet back out of its device) or -DROP_*.
 *
 * Their callers below are global functions (not inlined, not static) on purpose: the
 * verifier checks a global function once, on its own, with ctx + scalar
 * arguments, instead of once per caller state; this rare path (a resize and
 * a checksum loop) would otherwise multiply the verification work of the
 * whole program, and its locals (checksum buffer, new headers) stay out of
 * the per-packet stack frame. The original addresses are read back from the
 * packet, which is untouched until the resize.
 * @hlen: original IPv4 header length; @l3_len: original datagram length.
 */
static __always_inline int icmp4_reply(struct __sk_buff *skb, __u32 hlen, __u32 l3_len,
				       __u8 type, __u8 code, __be32 rest, int reason)
{
	__u32 quote = l3_len;
	struct icmphdr icmp = {};
	struct iphdr ip = {};
	struct ethhdr eth;
	__be32 addrs[2]; /* original saddr (client), daddr (frontend) */
	__u16 check;
	__u32 sum;

	if (quote > hlen + ICMP4_QUOTE_PAYLOAD)
		quote = hlen + ICMP4_QUOTE_PAYLOAD;
	if (!icmp_ratelimit_allow())
		return -DROP_ICMP_RATE_LIMITED;
	if (icmp_reply_eth(skb, &eth) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), addrs, sizeof(addrs)))
		return -DROP_ICMP_REPLY_FAILED;

	if (bpf_skb_change_tail(skb, ETH_HLEN + quote, 0))
		return -DROP_ICMP_REPLY_FAILED;
	if (bpf_skb_adjust_room(skb, sizeof(ip) + sizeof(icmp), BPF_ADJ_ROOM_MAC, 0))
		return -DROP_ICMP_REPLY_FAILED;

	ip.version = 4;
	ip.ihl = 5;
	ip.tot_len = bpf_htons(sizeof(ip) + sizeof(icmp) + quote);
	ip.ttl = ICMP_REPLY_TTL;
	ip.protocol = IPPROTO_ICMP;
	ip.saddr = addrs[1]; /* from the frontend the client addressed */
	ip.daddr = addrs[0];
	ip.check = csum_fold(csum_buf(&ip, sizeof(ip), 0));
	icmp.type = type;
	icmp.code = code;
	icmp.rest = rest;

	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), BPF_F_RECOMPUTE_CSUM) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip), &icmp, sizeof(icmp),
				BPF_F_RECOMPUTE_CSUM))
		return -DROP_ICMP_REPLY_FAILED;

	/* ICMPv4: header + quote, no pseudo-header. */
	if (csum_skb(skb, ETH_HLEN + sizeof(ip), sizeof(icmp) + quote, 0, &sum))
		return -DROP_ICMP_REPLY_FAILED;
	check = csum_fold(sum);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip) + offsetof(struct icmphdr, checksum),
				&check, sizeof(check), BPF_F_RECOMPUTE_CSUM))
		return -DROP_ICMP_REPLY_FAILED;
	return reason;
}

/* Partial sum of the ICMPv6 pseudo-header (RFC 8200 8.1) for @len bytes
 * from @src to @dst. */
static __always_inline __u32 icmp6_pseudo_sum(const __u8 *src, const __u8 *dst, __u32 len)
{
	__u32 sum = csum_buf(src, 16, 0);

	sum = csum_buf(dst, 16, sum);
	sum = csum_add(sum, bpf_htonl(len));
	return csum_add(sum, bpf_htonl(IPPROTO_ICMPV6));
}

/* @l3_len: original packet length (IPv6 header included). */
static __always_inline int icmp6_reply(struct __sk_buff *skb, __u32 l3_len, __u8 type,
				       __u8 code, __be32 rest, int reason)
{
	__u32 quote = l3_len;
	struct icmp6hdr icmp = {};
	struct ipv6hdr ip6 = {};
	struct ethhdr eth;
	__u16 check;
	__u32 sum;

	if (quote > ICMP6_QUOTE_MAX)
		quote = ICMP6_QUOTE_MAX;
	if (!icmp_ratelimit_allow())
		return -DROP_ICMP_RATE_LIMITED;
	/* The original saddr/daddr land swapped in the new header. */
	if (icmp_reply_eth(skb, &eth) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), &ip6.daddr, 16) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, daddr), &ip6.saddr, 16))
		return -DROP_ICMP_REPLY_FAILED;

	if (bpf_skb_change_tail(skb, ETH_HLEN + quote, 0))
		return -DROP_ICMP_REPLY_FAILED;
	if (bpf_skb_adjust_room(skb, sizeof(ip6) + sizeof(icmp), BPF_ADJ_ROOM_MAC, 0))
		return -DROP_ICMP_REPLY_FAILED;

	ip6.version = 6;
	ip6.payload_len = bpf_htons(sizeof(icmp) + quote);
	ip6.nexthdr = IPPROTO_ICMPV6;
	ip6.hop_limit = ICMP_REPLY_TTL;
	icmp.icmp6_type = type;
	icmp.icmp6_code = code;
	icmp.icmp6_dataun.un_data32[0] = rest;

	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6), BPF_F_RECOMPUTE_CSUM) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip6), &icmp, sizeof(icmp),
				BPF_F_RECOMPUTE_CSUM))
		return -DROP_ICMP_REPLY_FAILED;

	/* ICMPv6 covers the pseudo-header: from the frontend to the client. */
	if (csum_skb(skb, ETH_HLEN + sizeof(ip6), sizeof(icmp) + quote,
		     icmp6_pseudo_sum((const __u8 *)&ip6.saddr, (const __u8 *)&ip6.daddr,
				      sizeof(icmp) + quote),
		     &sum))
		return -DROP_ICMP_REPLY_FAILED;
	check = csum_fold(sum);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip6) + offsetof(struct icmp6hdr, icmp6_cksum),
				&check, sizeof(check), BPF_F_RECOMPUTE_CSUM))
		return -DROP_ICMP_REPLY_FAILED;
	return reason;
}

/* The global entry points: port unreachable (no endpoints), and the
 * fragmentation needed / packet too big of lib/dsr.h with the MTU the client
 * must use (RFC 1191: 16 bits after 16 unused; RFC 4443 3.2: 32 bits). */
__noinline int strait_icmp4_reply(struct __sk_buff *skb, __u32 hlen, __u32 l3_len)
{
	return icmp4_reply(skb, hlen, l3_len, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, 0,
			   REASON_NO_ENDPOINTS_REPLY);
}

__noinline int strait_icmp4_frag_needed(struct __sk_buff *skb, __u32 hlen, __u32 l3_len,
					__u32 mtu)
{
	return icmp4_reply(skb, hlen, l3_len, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED,
			   bpf_htonl(mtu & 0xffff), REASON_FRAG_NEEDED_REPLY);
}

__noinline int strait_icmp6_reply(struct __sk_buff *skb, __u32 l3_len)
{
	return icmp6_reply(skb, l3_len, ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH, 0,
			   REASON_NO_ENDPOINTS_REPLY);
}

__noinline int strait_icmp6_pkt_too_big(struct __sk_buff *skb, __u32 l3_len, __u32 mtu)
{
	return icmp6_reply(skb, l3_len, ICMPV6_PKT_TOOBIG, 0, bpf_htonl(mtu),
			   REASON_FRAG_NEEDED_REPLY);
}

static __always_inline int icmp4_no_endpoints_reply(struct __sk_buff *skb, const struct pkt *p)
{
	return strait_icmp4_reply(skb, p->l4_off - ETH_HLEN, p->l3_len);
}

static __always_inline int icmp6_no_endpoints_reply(struct __sk_buff *skb, const struct pkt *p)
{
	return strait_icmp6_reply(skb, p->l3_len);
}

/* ================================================= ICMP error translation
 *
 * An ICMP error quotes the packet that caused it: IP header + at least 8
 * bytes of L4 (the ports). For a translated flow C:cp -> V:vp -> B:bp:
 *  ingress: a router answers our reply V:vp -> C:cp, so the error goes to V
 *    and quotes {V:vp -> C:cp}; SERVICE entry {C, V, cp, vp} -> B:bp:
 *    outer daddr V -> B, quoted saddr:sport V:vp -> B:bp.
 *  egress: the backend answers C:cp -> B:bp, so the error comes from B and
 *    quotes {C:cp -> B:bp}; REPLY entry {B, C, bp, cp} -> revnat V:vp:
 *    outer saddr B -> V, quoted daddr:dport B:bp -> V:vp.
 * Checksums: outer IPv4 header, quoted IPv4 header, ICMP (ICMPv4 covers the
 * message only; ICMPv6 also the outer addresses through its pseudo-header).
 * The quoted L4 checksum is left as it is: nobody verifies it, and with
 * 8 quoted bytes TCP's is not even there.
 * Quoted IPv6 packets must carry TCP/UDP/SCTP right after the fixed header.
 */

static __always_inline int icmp4_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
	       type == ICMP_PARAMETERPROB;
}

static __always_inline int icmp6_is_error(__u8 type)
{
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG ||
	       type == ICMPV6_TIME_EXCEED || type == ICMPV6_PARAMPROB;
}

/*
 * Like the reply builders, the translators are global functions verified
 * once with (ctx, l4_off): this rare path keeps its keys and quoted headers
 * out of the per-packet frame. The caller has checked that the packet is an
 * ICMP error with its 8-byte header present; the outer addresses are read
 * back from the packet. Each returns REASON_ICMP_ERROR_XLATE, REASON_PASS
 * (not about a tracked flow) or -DROP_*.
 */

struct icmp_inner4 {
	__u32 ip_off; /* quoted IPv4 header */
	__u32 l4_off; /* quoted L4 header */
	struct iphdr ip;
	__be16 sport;
	__be16 dport;
};

struct icmp_inner6 {
	__u32 ip_off;
	__u32 l4_off;
	struct ipv6hdr ip;
	__be16 sport;
	__be16 dport;
};

/* 0 when the error quotes a TCP/UDP/SCTP packet we could have translated. */
static __always_inline int icmp4_parse_inner(struct __sk_buff *skb, __u32 l4_off,
					     struct icmp_inner4 *in)
{
	__be16 ports[2];

	in->ip_off = l4_off + sizeof(struct icmphdr);
	if (bpf_skb_load_bytes(skb, in->ip_off, &in->ip, sizeof(in->ip)))
		return -1;
	if (in->ip.version != 4 || in->ip.ihl < 5 || !proto_has_ports(in->ip.protocol))
		return -1;
	if (in->ip.frag_off & bpf_htons(IPV4_OFFSET))
		return -1; /* quotes a later fragment: no ports */
	in->l4_off = in->ip_off + in->ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, in->l4_off, ports, sizeof(ports)))
		return -1;
	in->sport = ports[0];
	in->dport = ports[1];
	return 0;
}

static __always_inline int icmp6_parse_inner(struct __sk_buff *skb, __u32 l4_off,
					     struct icmp_inner6 *in)
{
	__be16 ports[2];

	in->ip_off = l4_off + sizeof(struct icmp6hdr);
	if (bpf_skb_load_bytes(skb, in->ip_off, &in->ip, sizeof(in->ip)))
		return -1;
	if (in->ip.version != 6 || !proto_has_ports(in->ip.nexthdr))
		return -1;
	in->l4_off = in->ip_off + sizeof(struct ipv6hdr);
	if (bpf_skb_load_bytes(skb, in->l4_off, ports, sizeof(ports)))
		return -1;
	in->sport = ports[0];
	in->dport = ports[1];
	return 0;
}

/*
 * Rewrite one address (at @addr_off inside the quoted IPv4 header) and one
 * port (at @port_off) of the quoted packet, keeping the quoted header
 * checksum and the ICMP checksum (at @icmp_csum) right.
 */
static __always_inline int icmp4_inner_rewrite(struct __sk_buff *skb, __u32 icmp_csum,
					       const struct icmp_inner4 *in, __u32 addr_off,
					       __be32 old_addr, __be32 addr, __u32 port_off,
					       __be16 old_port, __be16 port)
{
	__u32 ip_csum = in->ip_off + offsetof(struct iphdr, check);
	__sum16 old_check = in->ip.check, check;

	if (old_addr != addr) {
		if (bpf_skb_store_bytes(skb, addr_off, &addr, sizeof(addr), 0))
			return -DROP_CSUM;
		if (bpf_l3_csum_replace(skb, ip_csum, old_addr, addr, sizeof(addr)))
			return -DROP_CSUM;
		if (bpf_skb_load_bytes(skb, ip_csum, &check, sizeof(check)))
			return -DROP_CSUM;
		/* The ICMP checksum covers both changed fields of the quote. */
		if (bpf_l4_csum_replace(skb, icmp_csum, old_addr, addr, sizeof(addr)) ||
		    bpf_l4_csum_replace(skb, icmp_csum, old_check, check, sizeof(check)))
			return -DROP_CSUM;
	}
	if (old_port != port) {
		if (bpf_skb_store_bytes(skb, port_off, &port, sizeof(port), 0))
			return -DROP_CSUM;
		if (bpf_l4_csum_replace(skb, icmp_csum, old_port, port, sizeof(port)))
			return -DROP_CSUM;
	}
	return CONTINUE;
}

/*
 * Rewrite 16 address bytes at @addr_off and, unless @port_off is 0, a port.
 * Outer addresses (@pseudo) reach the ICMPv6 checksum through its
 * pseudo-header; the quoted packet's fields (no header checksum in IPv6)
 * through the message itself.
 */
static __always_inline int icmp6_rewrite(struct __sk_buff *skb, __u32 icmp_csum, int pseudo,
					 __u32 addr_off, const __u8 *old_addr, const __u8 *addr,
					 __u32 port_off, __be16 old_port, __be16 port)
{
	__s64 diff;

	if (!addr6_eq(old_addr, addr)) {
		diff = bpf_csum_diff((__be32 *)old_addr, 16, (__be32 *)addr, 16, 0);
		if (diff < 0)
			return -DROP_CSUM;
		if (bpf_skb_store_bytes(skb, addr_off, addr, 16, 0))
			return -DROP_CSUM;
		if (bpf_l4_csum_replace(skb, icmp_csum, 0, (__u32)diff,
					pseudo ? BPF_F_PSEUDO_HDR : 0))
			return -DROP_CSUM;
		if (pseudo)
			nat6_complete_fixup(skb, (__u32)diff); /* lib/nat.h */
	}
	if (port_off && old_port != port) {
		if (bpf_skb_store_bytes(skb, port_off, &port, sizeof(port), 0))
			return -DROP_CSUM;
		if (bpf_l4_csum_replace(skb, icmp_csum, old_port, port, sizeof(port)))
			return -DROP_CSUM;
	}
	return CONTINUE;
}

/* Ingress, IPv4: an error about a reply we reverse-NATed. */
__noinline int strait_icmp4_error_ingress(struct __sk_buff *skb, __u32 l4_off)
{
	__u32 icmp_csum = l4_off + offsetof(struct icmphdr, checksum);
	struct ct4_key key = {};
	struct icmp_inner4 in;
	struct lb4_backend *be;
	struct ct_entry *e;
	__be32 daddr;
	int ret;

	if (icmp4_parse_inner(skb, l4_off, &in) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, daddr), &daddr, sizeof(daddr)))
		return REASON_PASS;
	/* It must be addressed to the frontend the quoted reply came from. */
	if (in.ip.saddr != daddr)
		return REASON_PASS;

	key.saddr = in.ip.daddr;
	key.daddr = in.ip.saddr;
	key.sport = in.dport;
	key.dport = in.sport;
	key.proto = in.ip.protocol;
	key.dir = CT_DIR_SERVICE;
	e = ct4_lookup(&key, ct_now());
	if (!e)
		return REASON_PASS;
	be = bpf_map_lookup_elem(&backends4, &e->backend_id);
	if (!be)
		return REASON_PASS;

	/* Outer daddr V -> B: ICMPv4 has no pseudo-header, IP checksum only. */
	ret = nat4_addr(skb, NAT_DST, daddr, be->addr);
	if (ret != CONTINUE)
		return ret;
	ret = icmp4_inner_rewrite(skb, icmp_csum, &in, in.ip_off + offsetof(struct iphdr, saddr),
				  in.ip.saddr, be->addr, in.l4_off, in.sport, be->port);
	if (ret != CONTINUE)
		return ret;
	return REASON_ICMP_ERROR_XLATE;
}

/* Egress, IPv4: a backend's error about a flow we DNATed to it. */
__noinline int strait_icmp4_error_egress(struct __sk_buff *skb, __u32 l4_off)
{
	__u32 icmp_csum = l4_off + offsetof(struct icmphdr, checksum);
	struct ct4_key key = {};
	struct icmp_inner4 in;
	struct lb4_revnat *rn;
	struct ct_entry *e;
	__be32 saddr;
	int ret;

	if (icmp4_parse_inner(skb, l4_off, &in) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &saddr, sizeof(saddr)))
		return REASON_PASS;

	key.saddr = in.ip.daddr;
	key.daddr = in.ip.saddr;
	key.sport = in.dport;
	key.dport = in.sport;
	key.proto = in.ip.protocol;
	key.dir = CT_DIR_REPLY;
	e = ct4_lookup(&key, ct_now());
	if (!e)
		return REASON_PASS;
	rn = bpf_map_lookup_elem(&revnat4, &e->rev_nat_id);
	if (!rn)
		return REASON_PASS;

	/* Only when the backend itself sent it; an error from a hop in
	 * between keeps its own source. */
	if (saddr == in.ip.daddr) {
		ret = nat4_addr(skb, NAT_SRC, saddr, rn->addr);
		if (ret != CONTINUE)
			return ret;
	}
	ret = icmp4_inner_rewrite(skb, icmp_csum, &in, in.ip_off + offsetof(struct iphdr, daddr),
				  in.ip.daddr, rn->addr, in.l4_off + 2, in.dport, rn->port);
	if (ret != CONTINUE)
		return ret;
	return REASON_ICMP_ERROR_XLATE;
}

__noinline int strait_icmp6_error_ingress(struct __sk_buff *skb, __u32 l4_off)
{
	__u32 icmp_csum = l4_off + offsetof(struct icmp6hdr, icmp6_cksum);
	struct ct6_key key = {};
	struct icmp_inner6 in;
	struct lb6_backend *be;
	struct ct_entry *e;
	__u8 daddr[16];
	int ret;

	if (icmp6_parse_inner(skb, l4_off, &in) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, daddr), daddr, 16))
		return REASON_PASS;
	if (!addr6_eq(&in.ip.saddr, daddr))
		return REASON_PASS;

	__builtin_memcpy(key.saddr, &in.ip.daddr, 16);
	__builtin_memcpy(key.daddr, &in.ip.saddr, 16);
	key.sport = in.dport;
	key.dport = in.sport;
	key.proto = in.ip.nexthdr;
	key.dir = CT_DIR_SERVICE;
	e = ct6_lookup(&key, ct_now());
	if (!e)
		return REASON_PASS;
	be = bpf_map_lookup_elem(&backends6, &e->backend_id);
	if (!be)
		return REASON_PASS;

	ret = icmp6_rewrite(skb, icmp_csum, 1, ETH_HLEN + offsetof(struct ipv6hdr, daddr), daddr,
			    be->addr, 0, 0, 0);
	if (ret != CONTINUE)
		return ret;
	ret = icmp6_rewrite(skb, icmp_csum, 0, in.ip_off + offsetof(struct ipv6hdr, saddr),
			    (const __u8 *)&in.ip.saddr, be->addr, in.l4_off, in.sport, be->port);
	if (ret != CONTINUE)
		return ret;
	return REASON_ICMP_ERROR_XLATE;
}

__noinline int strait_icmp6_error_egress(struct __sk_buff *skb, __u32 l4_off)
{
	__u32 icmp_csum = l4_off + offsetof(struct icmp6hdr, icmp6_cksum);
	struct ct6_key key = {};
	struct icmp_inner6 in;
	struct lb6_revnat *rn;
	struct ct_entry *e;
	__u8 saddr[16];
	int ret;

	if (icmp6_parse_inner(skb, l4_off, &in) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), saddr, 16))
		return REASON_PASS;

	__builtin_memcpy(key.saddr, &in.ip.daddr, 16);
	__builtin_memcpy(key.daddr, &in.ip.saddr, 16);
	key.sport = in.dport;
	key.dport = in.sport;
	key.proto = in.ip.nexthdr;
	key.dir = CT_DIR_REPLY;
	e = ct6_lookup(&key, ct_now());
	if (!e)
		return REASON_PASS;
	rn = bpf_map_lookup_elem(&revnat6, &e->rev_nat_id);
	if (!rn)
		return REASON_PASS;

	if (addr6_eq(saddr, &in.ip.daddr)) {
		ret = icmp6_rewrite(skb, icmp_csum, 1, ETH_HLEN + offsetof(struct ipv6hdr, saddr),
				    saddr, rn->addr, 0, 0, 0);
		if (ret != CONTINUE)
			return ret;
	}
	ret = icmp6_rewrite(skb, icmp_csum, 0, in.ip_off + offsetof(struct ipv6hdr, daddr),
			    (const __u8 *)&in.ip.daddr, rn->addr, in.l4_off + 2, in.dport,
			    rn->port);
	if (ret != CONTINUE)
		return ret;
	return REASON_ICMP_ERROR_XLATE;
}

/* ---- inline entry points: the cheap checks stay in the caller ---- */

static __always_inline int icmp_error_candidate(const struct pkt *p)
{
	if (!(p->flags & PKT_F_HAS_PORTS) || (p->flags & PKT_F_L4_SHORT))
		return 0;
	return p->family == PKT_IPV4 ? icmp4_is_error(p->icmp_type)
				     : icmp6_is_error(p->icmp_type);
}

static __always_inline int icmp4_error_ingress(struct __sk_buff *skb, const struct pkt *p)
{
	return icmp_error_candidate(p) ? strait_icmp4_error_ingress(skb, p->l4_off) : REASON_PASS;
}

static __always_inline int icmp4_error_egress(struct __sk_buff *skb, const struct pkt *p)
{
	return icmp_error_candidate(p) ? strait_icmp4_error_egress(skb, p->l4_off) : REASON_PASS;
}

static __always_inline int icmp6_error_ingress(struct __sk_buff *skb, const struct pkt *p)
{
	return icmp_error_candidate(p) ? strait_icmp6_error_ingress(skb, p->l4_off) : REASON_PASS;
}

static __always_inline int icmp6_error_egress(struct __sk_buff *skb, const struct pkt *p)
{
	return icmp_error_candidate(p) ? strait_icmp6_error_egress(skb, p->l4_off) : REASON_PASS;
}

#endif /* STRAIT_ICMP_H */
