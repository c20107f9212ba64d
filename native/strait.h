/* SPDX-License-Identifier: Apache-2.0 */
/*
 * strait.h — a small flat C shim over libbpf 1.1 for the calls whose structs,
 * varargs or namespace switches are awkward through FFI. No business logic:
 * every function maps one-to-one onto libbpf/kernel calls. Everything else
 * (object open/load, map CRUD and batches, pinning) is called directly from
 * src/bpf/native.ts through koffi.
 *
 * Convention: functions return 0 (or a non-negative value) on success and a
 * negative errno on failure, like libbpf 1.x.
 */
#ifndef STRAIT_NATIVE_H
#define STRAIT_NATIVE_H

#include <stdint.h>

struct bpf_object;

/* ---- libbpf log capture ----
 * libbpf's print callback takes a va_list, which FFI cannot pass; this shim
 * installs a C callback that formats messages into a buffer (keeping the tail
 * when it overflows). max_level: 0 = warnings, 1 = + info, 2 = + debug.
 * echo != 0 also writes each message to stderr. */
void strait_log_capture(int32_t max_level, int32_t echo);
/* Copies the captured text (NUL-terminated, tail kept if buf is too small)
 * into buf, clears the buffer, and returns the length copied. */
uint32_t strait_log_take(char *buf, uint32_t size);

/* ---- BPF_PROG_TEST_RUN ----
 * data/ctx may be NULL; out/ctx_out may be NULL. *out_size and *ctx_out_size
 * are the buffer sizes on input and the kernel's sizes on output. */
int strait_prog_test_run(int prog_fd, const void *data, uint32_t size, void *out,
			 uint32_t *out_size, const void *ctx, uint32_t ctx_size,
			 void *ctx_out, uint32_t *ctx_out_size, uint32_t repeat,
			 int32_t *retval, uint32_t *duration_ns);

/* ---- map info (bpf_obj_get_info_by_fd on a map fd) ---- */
struct strait_map_info {
	uint32_t type;
	uint32_t id;
	uint32_t key_size;
	uint32_t value_size;
	uint32_t max_entries;
	uint32_t map_flags;
	char name[16];
};
int strait_map_info(int map_fd, struct strait_map_info *out);

/* ---- program info (bpf_obj_get_info_by_fd on a program fd) ---- */
struct strait_prog_info {
	uint32_t type;
	uint32_t id;
	char name[16];
	uint8_t tag[8];
};
int strait_prog_info(int prog_fd, struct strait_prog_info *out);

/* ---- .rodata variables (const volatile globals), before load ----
 * Finds `name` in the object's `.rodata` datasec and copies `size` bytes of
 * `data` over its initial value. data == NULL: only returns the variable's
 * size. -ENOENT: no such variable; -EINVAL: size differs. */
int strait_rodata_set(struct bpf_object *obj, const char *name, const void *data,
		      uint32_t size);

/* ---- a map typed with the (loaded) object's BTF ----
 * bpf_map_create whose key/value carry the BTF types named key_type and
 * value_type (e.g. "__u32", "lb_settings") of a loaded object, so bpftool
 * prints fields; without BTF when a type is not found. Returns the fd. */
int strait_map_create_btf(struct bpf_object *obj, uint32_t map_type, const char *name,
			  const char *key_type, const char *value_type,
			  uint32_t key_size, uint32_t value_size,
			  uint32_t max_entries, uint32_t map_flags);

/* ---- tc attach/detach on an interface, optionally inside a netns ----
 * netns_path: e.g. /run/netns/NAME, or NULL for the caller's namespace. The
 * call enters the namespace, resolves ifname, attaches, and returns to the
 * caller's namespace before it returns (the process aborts if it cannot
 * return: continuing in the wrong namespace is never safe).
 *
 * mode STRAIT_TC_AUTO tries tcx then clsact; STRAIT_TC_TCX and
 * STRAIT_TC_CLSACT force one. tcx: bpf_link_create(prog, ifindex,
 * BPF_TCX_INGRESS/EGRESS) pinned at pin_path; a link already pinned there is
 * updated in place (bpf_link_update: atomic program swap). clsact:
 * bpf_tc_hook_create + bpf_tc_attach(handle STRAIT_TC_HANDLE, priority
 * STRAIT_TC_PRIORITY, replace); pin_path is not used. */
#define STRAIT_TC_AUTO   0
#define STRAIT_TC_TCX    1
#define STRAIT_TC_CLSACT 2

#define STRAIT_TC_INGRESS 0
#define STRAIT_TC_EGRESS  1

#define STRAIT_TC_HANDLE   0x5354 /* "ST" */
#define STRAIT_TC_PRIORITY 1

struct strait_tc_attachment {
	int32_t mode;      /* STRAIT_TC_TCX or STRAIT_TC_CLSACT */
	uint32_t ifindex;  /* inside the namespace */
	uint32_t handle;   /* clsact */
	uint32_t priority; /* clsact */
	int32_t updated;   /* tcx: an existing pinned link was updated */
	int32_t tcx_errno; /* auto mode fell back to clsact: why tcx failed */
};
int strait_tc_attach(const char *netns_path, const char *ifname, int32_t direction,
		     int prog_fd, int32_t mode, const char *pin_path,
		     struct strait_tc_attachment *out);
/* if_nametoindex inside netns_path (NULL = the caller's). */
int strait_ifindex(const char *netns_path, const char *ifname);

/* tcx: unlinks pin_path (the link dies with its last reference; the netns is
 * not entered). clsact: bpf_tc_detach of our handle/priority in the netns;
 * the clsact qdisc stays (others may use it). */
int strait_tc_detach(const char *netns_path, const char *ifname, int32_t direction,
		     int32_t mode, const char *pin_path);

/* ---- cgroup attach (socket LB) ----
 * bpf_link_create(prog_fd, <cgroup_path's fd>, attach_type) pinned at
 * pin_path; the pin keeps the program attached after the caller exits and
 * unlinking it detaches. A link already pinned there for the same cgroup and
 * attach type gets the new program (bpf_link_update: atomic swap, no socket
 * sees a gap); one for another cgroup or type is unpinned (detached) and
 * replaced. cgroup_id is the cgroup's id (its inode number on cgroup2). */
struct strait_cgroup_attachment {
	uint64_t cgroup_id;
	int32_t updated;  /* an existing pinned link got the new program */
	int32_t replaced; /* a pinned link for another cgroup/type was detached */
};
int strait_cgroup_attach(const char *cgroup_path, int32_t attach_type, int prog_fd,
			 const char *pin_path, struct strait_cgroup_attachment *out);

/* ---- BPF iterators ----
 * A BPF_TRACE_ITER link for prog_fd and an iterator created inside
 * netns_path (NULL: the caller's namespace; socket iterators walk the
 * namespace they were created in), read to the end — the program runs
 * meanwhile — and closed again. The first `size` bytes of the output are
 * copied into buf. Returns the total length of the output, or -errno. */
int64_t strait_iter_run(int prog_fd, const char *netns_path, void *buf, uint32_t size);

/* ---- a listening TCP socket inside a network namespace ----
 * socket() inside netns_path (NULL or "": the caller's), then SO_REUSEADDR,
 * bind to addr:port (addr "" or NULL: every address, one dual-stack IPv6
 * socket; else an IPv4 or IPv6 literal) and listen. Returns the fd, which
 * stays in that namespace while the caller serves it from its own (Node:
 * net.Server.listen({ fd })), or -errno (-EINVAL: addr is no IP literal). */
int strait_listen_tcp(const char *netns_path, const char *addr, uint16_t port, int32_t backlog);

/* ---- XDP attach/detach on an interface, optionally inside a netns ----
 * An XDP BPF link (bpf_link_create(prog, ifindex, BPF_XDP), kernel 5.9),
 * pinned at pin_path like the tcx links: it stays attached while pinned,
 * removing the pin detaches, and a link already pinned there gets the new
 * program atomically (bpf_link_update) — no window without a program on an
 * agent restart. A device holding another XDP program (netlink-attached or
 * another link) refuses the link: -EBUSY / -EEXIST.
 *
 * mode STRAIT_XDP_AUTO tries native (driver) mode, then generic (skb) mode;
 * STRAIT_XDP_NATIVE / STRAIT_XDP_GENERIC force one. The netns is entered as
 * for tc (see strait_tc_attach). */
#define STRAIT_XDP_AUTO    0
#define STRAIT_XDP_NATIVE  1
#define STRAIT_XDP_GENERIC 2

struct strait_xdp_attachment {
	int32_t mode;         /* STRAIT_XDP_NATIVE or STRAIT_XDP_GENERIC: what is attached */
	uint32_t ifindex;     /* inside the namespace */
	int32_t updated;      /* an existing pinned link got the new program */
	int32_t native_errno; /* auto mode fell back to generic: why native failed */
};
int strait_xdp_attach(const char *netns_path, const char *ifname, int prog_fd, int32_t mode,
		      const char *pin_path, struct strait_xdp_attachment *out);

/* Which XDP program (id, 0 = none) is attached to ifname and how
 * (STRAIT_XDP_NATIVE / _GENERIC, or 0). Returns 0 or -errno. */
int strait_xdp_query(const char *netns_path, const char *ifname, uint32_t *prog_id,
		     int32_t *mode);

#endif /* STRAIT_NATIVE_H */
