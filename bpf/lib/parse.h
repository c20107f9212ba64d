/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * parse.h — Ethernet / IPv4 / IPv6 / L4 parsing into a struct pkt.
 *
 * Everything later steps need is copied into struct pkt, so they work from
 * offsets and values, not packet pointers: rewrites go through
 * bpf_skb_store_bytes() and the csum helpers, which invalidate every packet
 * pointer anyway. Written against ctx.h, so the same parser serves tc
 * (skb) and XDP (xdp_md): the variables keep the name skb either way.
 */
#ifndef STRAIT_PARSE_H
#define STRAIT_PARSE_H

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "abi.h"
#include "ctx.h"
#include "metrics.h"

/*
 * <linux/icmp.h> includes <linux/if.h>, which includes glibc's
 * <sys/socket.h>: that does not build for -target bpf (gnu/stubs-32.h).
 * The few ICMPv4 definitions we use, with the kernel's names and values; the
 * include guard makes a later #include <linux/icmp.h> a no-op.
 */
#ifndef _LINUX_ICMP_H
#define _LINUX_ICMP_H
#define ICMP_DEST_UNREACH  3
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12
#define ICMP_PORT_UNREACH  3
#define ICMP_FRAG_NEEDED   4
struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest; /* echo id/sequence, unused, gateway or MTU */
};
#endif

#define PKT_IPV4 4
#define PKT_IPV6 6

/* pkt.flags */
#define PKT_F_FRAG_FIRST (1 << 0) /* fragment at offset 0: carries the L4 header */
#define PKT_F_FRAG_LATER (1 << 1) /* fragment at offset > 0: no L4 header */
#define PKT_F_HAS_PORTS  (1 << 2) /* sport/dport (or ICMP type/code) were read */
#define PKT_F_L4_SHORT   (1 << 3) /* the fixed L4 header is truncated */

/* TCP flag bits, byte 13 of the TCP header. */
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20

#define IPV4_MF      0x2000
#define IPV4_OFFSET  0x1fff
#define IPV6_MF      0x0001 /* fragment header: more fragments */
#define IPV6_OFFSET  0xfff8 /* fragment header: offset in 8-byte units, << 3 */
#define IPV6_MAX_EXT 8 /* extension headers walked before DROP_IPV6_EXT_CHAIN */

union strait_addr {
	__be32 v4;
	__u8 v6[16];
	__u32 w[4];
};

struct pkt {
	__u32 l4_off;    /* offset of the L4 header from the Ethernet header */
	__u32 l3_len;    /* IP datagram length (header says so, else ctx_len(skb) - ETH_HLEN) */
	__be32 frag_id;  /* frag{4,6} key: IPv4 identification (16 bits, zero-extended),
			  * IPv6 fragment header identification; 0 if not a fragment */
	__u8 family;     /* PKT_IPV4 / PKT_IPV6 */
	__u8 proto;      /* L4 protocol after any IPv6 extension headers */
	__u8 flags;      /* PKT_F_* */
	__u8 tcp_flags;  /* TCP_* of this packet */
	__be16 sport;    /* TCP / UDP / SCTP ports */
	__be16 dport;
	__u8 icmp_type;  /* ICMP / ICMPv6 */
	__u8 icmp_code;
	__u8 frag_proto; /* frag{4,6} key: IPv4 protocol, IPv6 fragment header next
			  * header (the same in every fragment; proto may differ
			  * when more extension headers follow it in the first) */
	__u8 pad;
	union strait_addr saddr;
	union strait_addr daddr;
	__u32 flow_epoch; /* lib/flowcache.h: flow_epoch as read before any lookup */
};

/* The skb names of ctx.h's ctx_data()/ctx_data_end(), for the tc-only headers. */
static __always_inline void *skb_data(const struct __ctx_buff *skb)
{
	return ctx_data(skb);
}

static __always_inline void *skb_data_end(const struct __ctx_buff *skb)
{
	return ctx_data_end(skb);
}

static __always_inline int proto_has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* ctx_pull() (ctx.h) under the name the parser grew up with. */
static __always_inline int pkt_ensure(struct __ctx_buff *skb, __u32 len)
{
	return ctx_pull(skb, len);
}

/*
 * Are @len bytes at @off part of the datagram and in the linear head? The
 * datagram ends where its IP length field says (p->l3_len), not where the
 * frame ends: bytes past it (Ethernet padding, or a length field that lies)
 * are not L4 header, and translating them would rewrite ports and
 * checksums the receiver never reads as such.
 */
static __always_inline int l4_present(struct __ctx_buff *skb, const struct pkt *p, __u32 off,
				      __u32 len)
{
	if (off + len > ETH_HLEN + p->l3_len)
		return 0;
	return !pkt_ensure(skb, off + len);
}

/*
 * The fixed L4 header. A truncated header does not end the parse: the
 * program only knows whether the packet is for a Service (DROP_INVALID_L4)
 * or not (left to the stack) after the lookup, so the ports are read when
 * at least they are present.
 */
static __always_inline int parse_l4(struct __ctx_buff *skb, struct pkt *p)
{
	void *data, *data_end, *l4;
	__u32 off = p->l4_off;

	/* A bound the verifier can carry into the pointer arithmetic below;
	 * no real header chain comes close (IPv6 walks at most 8 headers). */
	if (off > 0x4000)
		return -DROP_INVALID_L3;

	switch (p->proto) {
	case IPPROTO_TCP:
		if (!l4_present(skb, p, off, sizeof(struct tcphdr)))
			break;
		data = skb_data(skb);
		data_end = skb_data_end(skb);
		l4 = data + off;
		if (l4 + sizeof(struct tcphdr) > data_end)
			break;
		p->sport = ((struct tcphdr *)l4)->source;
		p->dport = ((struct tcphdr *)l4)->dest;
		p->tcp_flags = ((__u8 *)l4)[13];
		p->flags |= PKT_F_HAS_PORTS;
		return CONTINUE;
	case IPPROTO_UDP:
		if (!l4_present(skb, p, off, sizeof(struct udphdr)))
			break;
		data = skb_data(skb);
		data_end = skb_data_end(skb);
		l4 = data + off;
		if (l4 + sizeof(struct udphdr) > data_end)
			break;
		p->sport = ((struct udphdr *)l4)->source;
		p->dport = ((struct udphdr *)l4)->dest;
		p->flags |= PKT_F_HAS_PORTS;
		return CONTINUE;
	case IPPROTO_SCTP:
		/* Common header: ports, verification tag, CRC32c. */
		if (!l4_present(skb, p, off, 12))
			break;
		data = skb_data(skb);
		data_end = skb_data_end(skb);
		l4 = data + off;
		if (l4 + 12 > data_end)
			break;
		p->sport = ((__be16 *)l4)[0];
		p->dport = ((__be16 *)l4)[1];
		p->flags |= PKT_F_HAS_PORTS;
		return CONTINUE;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		/* Both share the 8-byte type/code/checksum/rest layout. */
		if (!l4_present(skb, p, off, 8))
			break;
		data = skb_data(skb);
		data_end = skb_data_end(skb);
		l4 = data + off;
		if (l4 + 8 > data_end)
			break;
		p->icmp_type = ((__u8 *)l4)[0];
		p->icmp_code = ((__u8 *)l4)[1];
		p->flags |= PKT_F_HAS_PORTS;
		return CONTINUE;
	default:
		/* Not a protocol we translate; the program decides. */
		return CONTINUE;
	}

	/* Truncated fixed header: keep the ports if the first 4 bytes exist. */
	p->flags |= PKT_F_L4_SHORT;
	if (!proto_has_ports(p->proto) || !l4_present(skb, p, off, 4))
		return CONTINUE;
	data = skb_data(skb);
	data_end = skb_data_end(skb);
	l4 = data + off;
	if (l4 + 4 > data_end)
		return CONTINUE;
	p->sport = ((__be16 *)l4)[0];
	p->dport = ((__be16 *)l4)[1];
	p->flags |= PKT_F_HAS_PORTS;
	return CONTINUE;
}

static __always_inline int parse_ipv4(struct __ctx_buff *skb, struct pkt *p)
{
	void *data, *data_end;
	struct iphdr *ip;
	__u32 hlen, tot;

	if (pkt_ensure(skb, ETH_HLEN + sizeof(struct iphdr)))
		return -DROP_INVALID_L3;
	data = skb_data(skb);
	data_end = skb_data_end(skb);
	ip = data + ETH_HLEN;
	if ((void *)(ip + 1) > data_end)
		return -DROP_INVALID_L3;
	if (ip->version != 4)
		return -DROP_INVALID_L3;

	hlen = ip->ihl * 4;
	if (hlen < sizeof(struct iphdr) || ETH_HLEN + hlen > ctx_len(skb))
		return -DROP_INVALID_IHL;

	/* tot_len 0 is legal for BIG TCP GSO packets (> 64 KiB); otherwise the
	 * header must fit and the datagram must not claim more than we hold
	 * (Ethernet padding may make us hold more). */
	tot = bpf_ntohs(ip->tot_len);
	if (tot && (tot < hlen || tot > ctx_len(skb) - ETH_HLEN))
		return -DROP_INVALID_L3;

	p->family = PKT_IPV4;
	p->proto = ip->protocol;
	p->saddr.v4 = ip->saddr;
	p->daddr.v4 = ip->daddr;
	p->frag_id = ip->id;
	p->frag_proto = ip->protocol;
	p->l3_len = tot ? tot : ctx_len(skb) - ETH_HLEN;
	p->l4_off = ETH_HLEN + hlen;

	if (ip->frag_off & bpf_htons(IPV4_OFFSET)) {
		/* Later fragment: no L4 header; frag4 tells where it goes. */
		p->flags |= PKT_F_FRAG_LATER;
		return CONTINUE;
	}
	if (ip->frag_off & bpf_htons(IPV4_MF))
		p->flags |= PKT_F_FRAG_FIRST;

	return parse_l4(skb, p);
}

static __always_inline int ipv6_is_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
	       nh == IPPROTO_FRAGMENT || nh == IPPROTO_AH;
}

static __always_inline int parse_ipv6(struct __ctx_buff *skb, struct pkt *p)
{
	void *data, *data_end;
	struct ipv6hdr *ip6;
	__u32 plen, off;
	__u8 nh;
	int i;

	if (pkt_ensure(skb, ETH_HLEN + sizeof(struct ipv6hdr)))
		return -DROP_INVALID_L3;
	data = skb_data(skb);
	data_end = skb_data_end(skb);
	ip6 = data + ETH_HLEN;
	if ((void *)(ip6 + 1) > data_end)
		return -DROP_INVALID_L3;
	if (ip6->version != 6)
		return -DROP_INVALID_L3;

	/* payload_len 0: jumbogram / BIG TCP; trust ctx_len(skb) then. */
	plen = bpf_ntohs(ip6->payload_len);
	if (plen > ctx_len(skb) - ETH_HLEN - sizeof(struct ipv6hdr))
		return -DROP_INVALID_L3;

	p->family = PKT_IPV6;
	__builtin_memcpy(p->saddr.v6, &ip6->saddr, 16);
	__builtin_memcpy(p->daddr.v6, &ip6->daddr, 16);
	p->l3_len = plen ? plen + sizeof(struct ipv6hdr) : ctx_len(skb) - ETH_HLEN;
	nh = ip6->nexthdr;
	off = ETH_HLEN + sizeof(struct ipv6hdr);

	/* Extension headers are rare: read them with bpf_skb_load_bytes()
	 * rather than carrying bounds-checked pointers through the loop. */
	for (i = 0; i < IPV6_MAX_EXT; i++) {
		__u8 hdr[8];

		if (!ipv6_is_ext(nh))
			break;
		if (nh == IPPROTO_FRAGMENT) {
			__be16 frag_off;

			/* RFC 8200 4.5: next header, reserved, offset (13
			 * bits) | res (2) | M, identification (32 bits). */
			if (ctx_load_bytes(skb, off, hdr, 8))
				return -DROP_INVALID_L3;
			nh = hdr[0];
			off += 8;
			frag_off = *(__be16 *)&hdr[2];
			__builtin_memcpy(&p->frag_id, &hdr[4], sizeof(p->frag_id));
			p->frag_proto = nh;
			if (frag_off & bpf_htons(IPV6_OFFSET)) {
				/* Later fragment: the rest is payload. */
				p->flags |= PKT_F_FRAG_LATER;
				p->proto = nh;
				p->l4_off = off;
				return CONTINUE;
			}
			if (frag_off & bpf_htons(IPV6_MF))
				p->flags |= PKT_F_FRAG_FIRST;
			continue;
		}
		if (ctx_load_bytes(skb, off, hdr, 2))
			return -DROP_INVALID_L3;
		/* AH counts its length in 4-byte units minus 2, the others in
		 * 8-byte units minus 1 (RFC 4302, RFC 8200). */
		if (nh == IPPROTO_AH)
			off += ((__u32)hdr[1] + 2) * 4;
		else
			off += ((__u32)hdr[1] + 1) * 8;
		nh = hdr[0];
	}
	if (ipv6_is_ext(nh))
		return -DROP_IPV6_EXT_CHAIN;

	p->proto = nh;
	p->l4_off = off;
	return parse_l4(skb, p);
}

/* Returns CONTINUE for IPv4/IPv6 (struct pkt filled), or an outcome. */
static __always_inline int parse_packet(struct __ctx_buff *skb, struct pkt *p)
{
	void *data = skb_data(skb);
	void *data_end = skb_data_end(skb);
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end) {
		if (pkt_ensure(skb, ETH_HLEN))
			return REASON_PASS; /* runt frame: not for us to judge */
		data = skb_data(skb);
		data_end = skb_data_end(skb);
		eth = data;
		if ((void *)(eth + 1) > data_end)
			return REASON_PASS;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(skb, p);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(skb, p);
	return REASON_PASS; /* ARP, VLAN, LLDP, ...: not ours */
}

#endif /* STRAIT_PARSE_H */
