/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * abi.h — the single source of every map layout strait shares between the
 * kernel and the agent.
 *
 * Rules (the TypeScript codecs in src/bpf/abi.ts mirror these structs and a
 * test compares them field by field with the BTF of the compiled object):
 *  - every key and value is a named struct, so `bpftool map dump` prints fields;
 *  - padding is explicit and must be written as zero (hash keys compare bytes);
 *  - __be16/__be32 fields are in network byte order, everything else is host order;
 *  - each size is pinned by a _Static_assert: changing one is an ABI change that
 *    makes a restarted agent replace (not adopt) the pinned map.
 */
#ifndef STRAIT_ABI_H
#define STRAIT_ABI_H

#include <linux/types.h>

/* ---- services{4,6}: frontend (VIP/NodePort/LB address, port, proto) ---- */

/* lb{4,6}_key.scope: which traffic a frontend entry serves. A Service whose
 * internal and external traffic policies select different backends has two
 * entries and LB_F_TWO_SCOPES on the external one. */
#define LB_SCOPE_EXTERNAL 0
#define LB_SCOPE_INTERNAL 1

struct lb4_key {
	__be32 addr;  /* frontend address */
	__be16 port;  /* frontend port */
	__u8 proto;   /* IPPROTO_TCP / IPPROTO_UDP / IPPROTO_SCTP */
	__u8 scope;   /* LB_SCOPE_* */
};
_Static_assert(sizeof(struct lb4_key) == 8, "lb4_key size");

struct lb6_key {
	__u8 addr[16]; /* frontend address */
	__be16 port;   /* frontend port */
	__u8 proto;    /* IPPROTO_* */
	__u8 scope;    /* LB_SCOPE_* */
};
_Static_assert(sizeof(struct lb6_key) == 20, "lb6_key size");

/* lb_service.flags */
#define LB_F_AFFINITY          (1 << 0) /* sessionAffinity: ClientIP */
#define LB_F_LOCAL_EXTERNAL    (1 << 1) /* externalTrafficPolicy: Local */
#define LB_F_LOCAL_INTERNAL    (1 << 2) /* internalTrafficPolicy: Local */
#define LB_F_DSR               (1 << 3) /* remote backends reached by DSR */
#define LB_F_SOURCE_RANGES     (1 << 4) /* loadBalancerSourceRanges apply */
#define LB_F_TWO_SCOPES        (1 << 5) /* an LB_SCOPE_INTERNAL entry exists */
#define LB_F_REJECT_NO_ENDPOINTS (1 << 6) /* count == 0: ICMP unreachable, not drop */

/* lb_service.kind: what kind of frontend this is */
#define LB_KIND_CLUSTER_IP    0
#define LB_KIND_NODE_PORT     1
#define LB_KIND_EXTERNAL_IP   2
#define LB_KIND_LOAD_BALANCER 3

/* lb_service.algorithm */
#define LB_ALG_RANDOM 0 /* slot = 1 + flow hash % backend_count, service_slots */
#define LB_ALG_MAGLEV 1 /* maglev[service_id][flow hash % MAGLEV_TABLE_SIZE] */

struct lb_service {
	__u32 service_id;       /* key into service_slots / maglev / affinity */
	__u32 backend_count;    /* slots 1..count exist; 0 = no endpoints */
	__u32 rev_nat_id;       /* key into revnat{4,6}: what replies become */
	__u32 affinity_timeout; /* seconds, with LB_F_AFFINITY */
	__u16 flags;            /* LB_F_* */
	__u8 kind;              /* LB_KIND_* */
	__u8 algorithm;         /* LB_ALG_* */
};
_Static_assert(sizeof(struct lb_service) == 20, "lb_service size");

/* ---- service_slots: (service, slot) -> backend; slot 0 is never used ---- */

struct lb_slot_key {
	__u32 service_id;
	__u32 slot; /* 1..backend_count */
};
_Static_assert(sizeof(struct lb_slot_key) == 8, "lb_slot_key size");

struct lb_slot {
	__u32 backend_id; /* key into backends{4,6} */
};
_Static_assert(sizeof(struct lb_slot) == 4, "lb_slot size");

/* ---- maglev: hash of maps, service id -> array[MAGLEV_TABLE_SIZE] of backend ids ---- */
#define MAGLEV_TABLE_SIZE 16381 /* prime; the agent builds and swaps whole tables */

/* ---- service_names: service id (__u32) -> what people call it ----
 * Never read by the datapath: it lets `strait lb list` and `bpftool map dump`
 * name a service id from the pinned maps alone, with the agent stopped. */
#define SERVICE_NAME_MAX 128

struct service_name {
	char name[SERVICE_NAME_MAX]; /* "namespace/name:port/PROTO", NUL-terminated */
};
_Static_assert(sizeof(struct service_name) == 128, "service_name size");

/* ---- backends{4,6}: backend id (__u32) -> backend ---- */

/* A backend leaves a Service in two ways, chosen by the agent: deleting its
 * entry moves the flows it had to another backend at their next packet (what
 * UDP needs: kube-proxy clears UDP conntrack); keeping it QUARANTINED (out of
 * the slots) lets its established flows finish there (TCP, as conntrack does
 * for kube-proxy). Slots only ever hold backends the agent wants selected. */
#define BE_STATE_ACTIVE      0
#define BE_STATE_TERMINATING 1 /* serving but terminating: only when no ready ones */
#define BE_STATE_QUARANTINED 2 /* kept for existing flows, never selected */

#define BE_F_LOCAL (1 << 0) /* runs on this node */

struct lb4_backend {
	__be32 addr;      /* pod (or host) address */
	__be32 node_addr; /* node hosting it, DSR/SNAT next hop; 0 = unknown */
	__be16 port;      /* target port */
	__u8 proto;       /* IPPROTO_* */
	__u8 state;       /* BE_STATE_* */
	__u8 flags;       /* BE_F_* */
	__u8 pad;
	__u16 zone;       /* agent-assigned zone id; 0 = none */
};
_Static_assert(sizeof(struct lb4_backend) == 16, "lb4_backend size");

struct lb6_backend {
	__u8 addr[16];
	__u8 node_addr[16];
	__be16 port;
	__u8 proto;
	__u8 state;
	__u8 flags;
	__u8 pad;
	__u16 zone;
};
_Static_assert(sizeof(struct lb6_backend) == 40, "lb6_backend size");

/* ---- revnat{4,6}: rev-NAT id (__u32) -> the frontend replies come from ---- */

struct lb4_revnat {
	__be32 addr;
	__be16 port;
	__u8 pad[2];
};
_Static_assert(sizeof(struct lb4_revnat) == 8, "lb4_revnat size");

struct lb6_revnat {
	__u8 addr[16];
	__be16 port;
	__u8 pad[2];
};
_Static_assert(sizeof(struct lb6_revnat) == 20, "lb6_revnat size");

/* ---- dsr_revnat{4,6}: DSR receiver, per-flow reverse NAT (LRU), lib/dsr.h ----
 *
 * Key: the flow's CT_DIR_REPLY key on the backend's node ({B, C, bp, cp},
 * struct ct{4,6}_key); value: the frontend the client addressed (struct
 * lb{4,6}_revnat), which the backend's replies get as their source. Per flow,
 * not per rev-NAT id: the entry node's ids mean nothing here, and a NodePort
 * frontend is the entry node's own address, which this node has no entry
 * for. Read only after the ct{4,6} REPLY entry (flag CT_F_DSR) says the flow
 * is alive, so an entry outliving its flow is harmless.
 */

/* ---- sock_revnat{4,6}: socket LB reverse translation (LRU) ----
 *
 * Socket LB (lib/sock.h) rewrites an unconnected UDP socket's destination
 * from a frontend to a backend per datagram (sendmsg); this entry, keyed by
 * the socket and the backend it sent to, lets recvmsg() show the frontend as
 * the reply's source again. (Connected sockets keep theirs in sock_peer.)
 * The socket cookie is unique for the kernel's lifetime, across network
 * namespaces. An IPv4-mapped peer of an IPv6 socket (::ffff:a.b.c.d) is kept
 * in the IPv4 map.
 */
struct sock4_revnat_key {
	__u64 cookie; /* bpf_get_socket_cookie() */
	__be32 addr;  /* backend address the socket sends to */
	__be16 port;  /* backend port */
	__u8 pad[2];
};
_Static_assert(sizeof(struct sock4_revnat_key) == 16, "sock4_revnat_key size");

struct sock4_revnat_entry {
	__be32 addr;         /* frontend address the socket asked for */
	__be16 port;         /* frontend port */
	__u8 proto;          /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
	__u32 rev_nat_id;    /* revnat4 entry that must still say addr:port */
	__u32 backend_id;    /* the backends4 entry chosen (for bpftool and the CLI) */
};
_Static_assert(sizeof(struct sock4_revnat_entry) == 16, "sock4_revnat_entry size");

struct sock6_revnat_key {
	__u64 cookie;
	__u8 addr[16];
	__be16 port;
	__u8 pad[6];
};
_Static_assert(sizeof(struct sock6_revnat_key) == 32, "sock6_revnat_key size");

struct sock6_revnat_entry {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 pad;
	__u32 rev_nat_id;
	__u32 backend_id;
};
_Static_assert(sizeof(struct sock6_revnat_entry) == 28, "sock6_revnat_entry size");

/* ---- sock_peer: the translation of a connected socket (sk storage) ----
 *
 * What connect() chose for a TCP or connected UDP socket, kept in the
 * socket's own storage (BPF_MAP_TYPE_SK_STORAGE, lib/sock.h): it lives and
 * dies with the socket and is never evicted, so getpeername(), recvmsg() and
 * the agent's socket iterator always find it, however many sockets come and
 * go. Unconnected UDP sockets talk to many peers: theirs are in
 * sock_revnat{4,6}. A mapped peer of an IPv6 socket is family 4.
 *
 * The agent never reads it (sk storage is looked up by socket, not listed),
 * so it has no codec in src/bpf/abi.ts, and only the socket objects define
 * the map.
 */
struct sock_peer {
	__u8 backend[16];     /* the address the socket is connected to (IPv4: first 4 bytes) */
	__u8 frontend[16];    /* the frontend it asked for */
	__be16 backend_port;
	__be16 frontend_port;
	__u8 family;          /* 4 or 6: which backends/revnat map the ids are in */
	__u8 proto;           /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad[2];
	__u32 rev_nat_id;     /* revnat{4,6} entry that must still say frontend */
	__u32 backend_id;     /* backends{4,6} entry that must still say backend */
};
_Static_assert(sizeof(struct sock_peer) == 48, "sock_peer size");

/* ---- ct{4,6}: connection tracking (LRU) ----
 *
 * A translated flow client C:cp -> VIP V:vp -> backend B:bp owns two entries:
 *   CT_DIR_SERVICE {C, V, cp, vp}: the original tuple; keeps the flow on its
 *                                  backend when slots change.
 *   CT_DIR_REPLY   {B, C, bp, cp}: the reply as it leaves the backend; only
 *                                  replies with this entry are reverse-NATed.
 * The VIP is part of the service key, so one backend behind several VIPs
 * never shares an entry between them (cilium#11810).
 * ICMP echo uses sport = echo id, dport = 0.
 */
#define CT_DIR_SERVICE 0
#define CT_DIR_REPLY   1

struct ct4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* CT_DIR_* */
	__u8 pad[2];
};
_Static_assert(sizeof(struct ct4_key) == 16, "ct4_key size");

struct ct6_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u8 pad[2];
};
_Static_assert(sizeof(struct ct6_key) == 40, "ct6_key size");

/* ct_entry.flags */
#define CT_F_SEEN_REPLY  (1 << 0) /* the backend answered */
#define CT_F_ESTABLISHED (1 << 1) /* TCP: past the handshake */
#define CT_F_CLOSING     (1 << 2) /* TCP: FIN or RST seen; short expiry, sticky */
#define CT_F_SNAT        (1 << 3) /* source rewritten to the node (north-south) */
#define CT_F_DSR         (1 << 4) /* delivered by DSR */

struct ct_entry {
	__u64 expires;    /* bpf_ktime_get_ns() deadline; past it the entry is a miss */
	__u32 backend_id; /* chosen backend */
	__u32 rev_nat_id; /* frontend the replies are rewritten to */
	__u16 flags;      /* CT_F_* */
	__u8 tcp_flags;   /* union of TCP flags seen in this direction */
	__u8 pad;
	__u32 created;    /* bpf_ktime_get_ns() / 1e9 at creation */
};
_Static_assert(sizeof(struct ct_entry) == 24, "ct_entry size");

/* ---- frag{4,6}: fragments after the first follow the first (LRU) ----
 * Keyed by the fragment as it arrives (before translation); the value is
 * the address the first fragment got. See lib/frag.h. */

#define FRAG_REWRITE_DADDR 0 /* ingress DNAT: daddr := addr */
#define FRAG_REWRITE_SADDR 1 /* egress reverse NAT: saddr := addr */

struct frag4_key {
	__be32 saddr; /* as the fragments arrive (before translation) */
	__be32 daddr;
	__be16 id;    /* IPv4 identification */
	__u8 proto;
	__u8 pad;
};
_Static_assert(sizeof(struct frag4_key) == 12, "frag4_key size");

struct frag4_entry {
	__be32 addr;  /* the replacement address */
	__u8 rewrite; /* FRAG_REWRITE_* */
	__u8 pad[3];
};
_Static_assert(sizeof(struct frag4_entry) == 8, "frag4_entry size");

struct frag6_key {
	__u8 saddr[16]; /* as the fragments arrive (before translation) */
	__u8 daddr[16];
	__be32 id;      /* fragment header identification */
	__u8 proto;     /* fragment header next header (the upper-layer protocol),
			 * the same in every fragment of the datagram */
	__u8 pad[3];
};
_Static_assert(sizeof(struct frag6_key) == 40, "frag6_key size");

struct frag6_entry {
	__u8 addr[16]; /* the replacement address */
	__u8 rewrite;  /* FRAG_REWRITE_* */
	__u8 pad[3];
};
_Static_assert(sizeof(struct frag6_entry) == 20, "frag6_entry size");

/* ---- snat{4,6}: north-south SNAT port allocations (LRU), lib/snat.h ----
 *
 * A flow C:cp -> frontend F:fp (NodePort / externalIP / LoadBalancer) whose
 * backend B:bp is on another node leaves this node as N:S -> B:bp, N the
 * node's address (config addr4/addr6), S the client's own port cp when
 * that tuple is free, else a port from config snat_port_min..max
 * (lib/snat.h). It owns two entries, keyed like conntrack:
 *   SNAT_DIR_OUT {C, F, cp, fp}: the flow as it arrives (= its CT_DIR_SERVICE
 *                                key) -> {N, S}: how it leaves;
 *   SNAT_DIR_IN  {B, N, bp, S}:  the reply as it arrives (= its CT_DIR_REPLY
 *                                key) -> {C, cp}: whom it goes back to.
 * The IN entry is the port allocation: it is inserted with BPF_NOEXIST, so
 * S is unique per (N, B, bp, proto), as Linux's own NAT does per
 * destination. `expires` mirrors the flow's conntrack deadline (refreshed
 * with it): past it the entry is free for another flow.
 */
#define SNAT_DIR_OUT 0
#define SNAT_DIR_IN  1

struct snat4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* SNAT_DIR_* */
	__u8 pad[2];
};
_Static_assert(sizeof(struct snat4_key) == 16, "snat4_key size");

struct snat4_entry {
	__be32 addr; /* OUT: node address N; IN: client address C */
	__be16 port; /* OUT: SNAT port S;    IN: client port cp */
	__u8 pad[2];
	__u64 expires; /* bpf_ktime_get_ns() deadline, the flow's */
};
_Static_assert(sizeof(struct snat4_entry) == 16, "snat4_entry size");

struct snat6_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u8 pad[2];
};
_Static_assert(sizeof(struct snat6_key) == 40, "snat6_key size");

struct snat6_entry {
	__u8 addr[16];
	__be16 port;
	__u8 pad[6];
	__u64 expires;
};
_Static_assert(sizeof(struct snat6_entry) == 32, "snat6_entry size");

/* snat6_scratch (per-CPU array, one entry): working space of the IPv6 SNAT
 * paths. Their keys do not fit on the BPF stack next to the ingress
 * program's own frame (512 bytes per call chain). Never read by the agent. */
struct snat6_scratch {
	struct snat6_key okey;   /* the flow's OUT key (= its ct6 SERVICE key) */
	struct snat6_key ikey;   /* its IN key (= its ct6 REPLY key) */
	struct snat6_entry v;    /* an entry being written */
	struct ct_entry fresh;   /* a ct6 REPLY entry being written */
};
_Static_assert(sizeof(struct snat6_scratch) == 136, "snat6_scratch size");

/* ---- affinity{4,6}: sessionAffinity ClientIP (LRU), lib/lb.h ----
 * tc keys on the client address (netns_cookie 0); socket LB keys on the
 * netns cookie (client address zero). */

struct affinity4_key {
	__u64 netns_cookie;
	__u32 service_id;
	__be32 client;
};
_Static_assert(sizeof(struct affinity4_key) == 16, "affinity4_key size");

struct affinity6_key {
	__u64 netns_cookie;
	__u32 service_id;
	__u8 client[16];
	__u8 pad[4];
};
_Static_assert(sizeof(struct affinity6_key) == 32, "affinity6_key size");

struct affinity_entry {
	__u64 last_used;  /* bpf_ktime_get_coarse_ns() of the last new flow that used it */
	__u32 backend_id; /* the client's backend */
	__u32 slot;       /* where the Service's table held it: slot 1..count, or Maglev
			   * index (lib/lb.h checks membership there first); 0 = unknown */
};
_Static_assert(sizeof(struct affinity_entry) == 16, "affinity_entry size");

/* ---- source_ranges{4,6}: LPM trie; prefixlen counts service_id's 32 bits too ---- */

struct srange4_key {
	__u32 prefixlen; /* 32 + CIDR length */
	__u32 service_id;
	__be32 addr;
};
_Static_assert(sizeof(struct srange4_key) == 12, "srange4_key size");

struct srange6_key {
	__u32 prefixlen;
	__u32 service_id;
	__u8 addr[16];
};
_Static_assert(sizeof(struct srange6_key) == 24, "srange6_key size");

struct srange_entry {
	__u8 allow; /* 1 */
	__u8 pad[3];
};
_Static_assert(sizeof(struct srange_entry) == 4, "srange_entry size");

/* ---- config: one entry (key 0) of node facts, written by the agent ---- */

#define NODE_MODE_SOCKET_LB (1 << 0)
#define NODE_MODE_DSR       (1 << 1)
#define NODE_MODE_XDP       (1 << 2)

#define NODE_MAX_UPLINKS 4

struct node_config {
	__be32 addr4;                            /* SNAT / ICMP source, IPv4 */
	__u8 addr6[16];                          /* SNAT / ICMP source, IPv6 */
	__u32 uplink_ifindex[NODE_MAX_UPLINKS];  /* 0 = unused */
	__u32 modes;                             /* NODE_MODE_* */
	__u16 nodeport_min;
	__u16 nodeport_max;
	__u16 snat_port_min;
	__u16 snat_port_max;
};
_Static_assert(sizeof(struct node_config) == 48, "node_config size");

/* ---- metrics: per-CPU array; index = METRICS_INDEX(reason, dir) ----
 * An array map needs an integer key, so {reason, direction} is packed into
 * it; the agent sums the per-CPU values. */
#define METRIC_DIR_INGRESS 0
#define METRIC_DIR_EGRESS  1
#define METRIC_DIRS        2
#define METRIC_REASONS     64
#define METRICS_INDEX(reason, dir) ((dir) * METRIC_REASONS + (reason))
#define METRICS_MAX (METRIC_DIRS * METRIC_REASONS)

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};
_Static_assert(sizeof(struct metrics_value) == 16, "metrics_value size");

/* Every verdict is counted under one reason. Values 1..31 are outcomes, 32..63
 * are drops. The TypeScript names live in src/bpf/abi.ts; keep both in step. */
enum metric_reason {
	REASON_UNSPEC = 0,
	REASON_PASS = 1,               /* not Service traffic: left to the stack */
	REASON_SERVICE_DNAT = 2,       /* translated to a backend */
	REASON_REVNAT = 3,             /* reply rewritten back to the frontend */
	REASON_ICMP_ERROR_XLATE = 4,   /* ICMP error about a tracked flow translated */
	REASON_FRAG_XLATE = 5,         /* non-first fragment followed its first */
	REASON_NO_ENDPOINTS_REPLY = 6, /* ICMP port unreachable sent */
	REASON_CT_RACE_JOINED = 7,     /* lost a CT insert race, used the winner's backend */
	REASON_PASS_UNKNOWN_PROTO = 8, /* L4 we do not translate: left alone */
	REASON_PASS_REPLY_UNTRACKED = 9, /* reply-shaped, no CT entry: left alone */
	REASON_PASS_FRAGMENT = 10,     /* fragment not about a Service: left alone */
	REASON_SOCK_XLATE = 11,        /* socket LB: connect/sendmsg sent to a backend (egress) */
	REASON_SOCK_REVNAT = 12,       /* socket LB: recvmsg/getpeername shows the frontend (ingress) */
	REASON_SERVICE_SNAT = 13,      /* to a backend on another node, source = node (SNAT), redirected */
	REASON_SNAT_REVNAT = 14,       /* reply to a SNAT flow reversed, redirected toward the client */
	REASON_SNAT_ICMP_XLATE = 15,   /* ICMP error about a SNAT flow translated, redirected to the client */
	REASON_HAIRPIN_SNAT = 16,      /* a pod to a Service whose backend is itself: source = node (SNAT),
					* redirected back to it (lib/uplink.h); its replies count as SNAT_REVNAT */
	/* 17..19 left for SNAT/ETP; DSR and MTU (lib/dsr.h) from 20 */
	REASON_DSR_ENCAP = 20,         /* DSR: encapsulated (IPIP / IP6IP6) to the backend, redirected */
	REASON_DSR_DECAP = 21,         /* DSR receiver: decapsulated, DNATed to the backend here */
	REASON_DSR_REVNAT = 22,        /* DSR receiver: backend's reply leaves from the frontend, to the client */
	REASON_FRAG_NEEDED_REPLY = 23, /* DSR: too big once encapsulated: ICMP frag needed / packet too big sent */
	REASON_XDP_DSR_ENCAP = 24,     /* DSR by XDP (before an skb): encapsulated, XDP_TX / redirected */

	DROP_INVALID_L3 = 32,          /* truncated or malformed IP header */
	DROP_INVALID_IHL = 33,         /* IPv4 IHL < 5 or beyond the packet */
	DROP_IPV6_EXT_CHAIN = 34,      /* more extension headers than we walk */
	DROP_INVALID_L4 = 35,          /* truncated L4 header to a Service */
	DROP_NO_ENDPOINTS = 36,        /* Service without endpoints, no reply sent */
	DROP_BACKEND_MISSING = 37,     /* slot or backend entry absent */
	DROP_CT_FULL = 38,             /* conntrack insert failed */
	DROP_FRAG_UNKNOWN = 39,        /* later fragment whose first was never seen */
	DROP_TCP_INVALID = 40,         /* RST / bad flags to a Service with no CT */
	DROP_CSUM = 41,                /* checksum helper failed */
	DROP_ICMP_RATE_LIMITED = 42,   /* no-endpoints reply over the rate */
	DROP_ICMP_REPLY_FAILED = 43,   /* could not build the ICMP reply */
	DROP_FRAG_FULL = 44,           /* fragment map insert failed */
	DROP_UNSUPPORTED = 45,         /* a Service feature this path cannot do */
	DROP_SOCK_REVNAT_FULL = 46,    /* socket LB: reverse entry not written, socket refused */
	DROP_SNAT_EXHAUSTED = 47,      /* no free SNAT port for a new north-south flow */
	DROP_SOURCE_RANGE = 48,        /* loadBalancerSourceRanges: client outside every range */
	DROP_NO_LOCAL_ENDPOINTS = 49,  /* externalTrafficPolicy: Local and no endpoint on this node */
	DROP_FIB_LOOKUP = 50,          /* no route or neighbour to send a redirected packet on */
	DROP_TTL_EXCEEDED = 51,        /* a packet we forward ourselves ran out of TTL / hop limit */
	DROP_SNAT_UNTRACKED = 52,      /* reply to a live SNAT port whose conntrack entry is gone (LRU):
					* dropped, not left to the stack, which would reset the flow */
	/* 53..55 left for SNAT/ETP; DSR and MTU (lib/dsr.h) from 56 */
	DROP_DSR_ENCAP = 56,           /* DSR: no room for, or no write of, the outer header */
	DROP_DSR_DECAP = 57,           /* DSR receiver: tunnelled packet malformed or not removable */
};

/* ---- load-time settings: const volatile .rodata `settings` ---- */

struct lb_settings {
	__u64 ct_tcp_syn_ns;         /* handshake not finished */
	__u64 ct_tcp_established_ns; /* established */
	__u64 ct_tcp_closing_ns;     /* after FIN / RST */
	__u64 ct_udp_ns;
	__u64 ct_icmp_ns;
	__u64 frag_ns;               /* how long a first fragment's mapping lives */
	__u32 hash_seed;             /* flow hash seed, random per node */
	__u32 icmp_rate;             /* no-endpoints replies per second per CPU */
	__u32 icmp_burst;            /* token bucket depth */
	__u32 pad;
};
_Static_assert(sizeof(struct lb_settings) == 64, "lb_settings size");

struct icmp_bucket {
	__u64 last_ns;
	__u64 tokens;
};
_Static_assert(sizeof(struct icmp_bucket) == 16, "icmp_bucket size");

/* ---- xdp_nexthop, xdp_flow{4,6}: the XDP fast path's caches (lib/xdp.h) ----
 * Derived state only: losing any entry costs one slow-path packet. */
struct xdp_nh_key {
	__u32 ifindex;   /* device the packet came in on: the route lookup's input */
	__u8 family;     /* AF_INET / AF_INET6 */
	__u8 pad[3];
	__u8 addr[16];   /* outer destination (backend address); IPv4 in the first 4 bytes */
};
_Static_assert(sizeof(struct xdp_nh_key) == 24, "xdp_nh_key size");

struct xdp_nexthop {
	__u64 expires;   /* ct_now() clock: looked up again after this */
	__u32 ifindex;   /* egress device */
	__u32 mtu;       /* route MTU (outer packet) */
	__u8 smac[6];
	__u8 dmac[6];
	__u8 pad[4];
	__u8 saddr[16];  /* outer source; IPv4 in the first 4 bytes */
};
_Static_assert(sizeof(struct xdp_nexthop) == 48, "xdp_nexthop size");

#define XDP_FLOW_HDR_MAX 56 /* Ethernet + outer IPv6 header (54), padded */

/* Value of xdp_flow4 (key ct4_key) and xdp_flow6 (key ct6_key): an
 * established DSR flow's encapsulation, ready to push. */
struct xdp_flow {
	__u64 valid_until; /* ct_now() clock: the slow path runs again after this */
	__u32 iif;         /* ingress device it was computed for */
	__u32 ifindex;     /* egress device */
	__u32 backend_id;
	__u32 csum;        /* IPv4: folded sum of hdr's outer header (tot_len, tos, check 0) */
	__u16 max_len;     /* largest inner L3 length that fits the route MTU encapsulated */
	__u16 ct_flags;    /* the conntrack entry's flags when cached */
	__u8 tcp_seen;     /* and its tcp_flags */
	__u8 epoch[3];     /* flow_epoch's low 24 bits (little-endian) when the slow path began */
	__u8 hdr[XDP_FLOW_HDR_MAX]; /* Ethernet + outer IP header */
};
_Static_assert(sizeof(struct xdp_flow) == 88, "xdp_flow size");

/* ---- xdp_flow_cache: the XDP established fast path's first level (lib/xdp.h) ----
 * A per-CPU direct-mapped array of XDP_FLOW_CACHE_SLOTS slots, indexed by a
 * hash of the packet's tuple and ingress device: an established DSR flow's
 * encapsulation (as in xdp_flow), with the tuple it was made for (compared in
 * full) and the flow_epoch it was made under. Probed before the frontend
 * lookup; xdp_flow{4,6} stay behind it (collisions, a flow moving to another
 * CPU). Derived state only: any slot may be lost at any time. */
#define XDP_FLOW_CACHE_BITS  12
#define XDP_FLOW_CACHE_SLOTS (1U << XDP_FLOW_CACHE_BITS)

struct xdp_flow_slot {
	/* key: the packet as it arrives (IPv4 in the first word, the rest zero) */
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family;       /* PKT_IPV4 / PKT_IPV6; 0: never filled */
	__u8 tcp_seen;     /* the conntrack entry's tcp_flags when cached */
	__u8 pad;
	__u32 iif;         /* ingress device (part of the key) */
	__u32 epoch;       /* flow_epoch (its low 32 bits) when the slow path began */
	__u16 ct_flags;    /* the conntrack entry's flags when cached */
	__u16 max_len;     /* largest inner L3 length that fits the route MTU encapsulated */
	__u32 ifindex;     /* egress device */
	__u32 csum;        /* IPv4: folded sum of hdr's outer header (tot_len, tos, check 0) */
	__u32 pad2;
	__u64 valid_until; /* bpf_jiffies64() clock (lib/xdp.h): a miss from then on */
	__u8 hdr[XDP_FLOW_HDR_MAX]; /* Ethernet + outer IP header, 8-byte aligned */
};
_Static_assert(sizeof(struct xdp_flow_slot) == 128, "xdp_flow_slot size");

/* ---- flow_cache, flow_epoch: the tc established fast path (lib/flowcache.h) ----
 * flow_cache is a per-CPU array of FLOW_CACHE_SLOTS slots, indexed by a hash
 * of the packet's tuple and hook: an established flow's rewrite, ready to
 * apply. flow_epoch (array, one entry) is the agent's: it bumps `epoch`
 * after every change to the Service maps, and a slot cached under another
 * epoch is a miss. Derived state only: any slot may be lost at any time. */
#define FLOW_CACHE_BITS  12
#define FLOW_CACHE_SLOTS (1U << FLOW_CACHE_BITS)

#define FLOW_HOOK_NONE       0 /* empty slot */
#define FLOW_HOOK_TC_INGRESS 1 /* DNAT of the SERVICE direction */
#define FLOW_HOOK_TC_EGRESS  2 /* reverse NAT of the REPLY direction */

struct flow_epoch {
	__u64 epoch;
};
_Static_assert(sizeof(struct flow_epoch) == 8, "flow_epoch size");

struct flow_cache_entry {
	/* key: the packet as it arrives at the hook */
	__u32 saddr[4];    /* IPv4 in the first word, the rest zero */
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 hook;         /* FLOW_HOOK_* */
	__u8 family;       /* PKT_IPV4 / PKT_IPV6 */
	__u8 tcp_seen;     /* the conntrack entry's tcp_flags when cached */
	__u32 ifindex;
	__u16 ct_flags;    /* and its flags */
	__be16 port;       /* the rewrite: new dport (ingress) or sport (egress) */
	__u32 addr[4];     /* new daddr (ingress) or saddr (egress) */
	__u32 addr_diff;   /* 32-bit partial sum: ~old + new address words */
	__u32 port_diff;   /* ~old + new port, as 16-bit words in memory */
	__u32 epoch;       /* flow_epoch (its low 32 bits) when the full path began */
	__u8 pad[4];
	__u64 valid_until; /* ct_now() clock: the slow path runs again after this */
};
_Static_assert(sizeof(struct flow_cache_entry) == 88, "flow_cache_entry size");

#endif /* STRAIT_ABI_H */
