# strait — build and test entry points. `make demo` and `make test` do all set-up
# on a fresh machine (they depend on `deps`).
SHELL := /bin/bash
.DEFAULT_GOAL := build

BUILD     := build
BPF_OUT   := $(BUILD)/bpf
NATIVE_OUT:= $(BUILD)/native
CLANG     ?= clang
ARCH      := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
BPF_CFLAGS:= -target bpf -O2 -g -Wall -Werror -D__TARGET_ARCH_$(ARCH) \
             -I/usr/include/$(shell uname -m)-linux-gnu -Ibpf
BPF_SRCS  := $(wildcard bpf/*.c)
BPF_OBJS  := $(patsubst bpf/%.c,$(BPF_OUT)/%.o,$(BPF_SRCS))
BPF_HDRS  := $(wildcard bpf/lib/*.h)
NODE_BIN  := node_modules/.bin
# Every recipe runs Node 24 (the devDependency), not the system Node 20: vitest's
# `#!/usr/bin/env node` and the test processes it starts resolve `node` from PATH,
# and @kubernetes/client-node's undici crashes on import under Node 20.
SYSTEM_PATH := $(PATH)
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

APT_PACKAGES := clang llvm libbpf-dev bpftool iproute2 ethtool tcpdump nftables iptables libelf-dev \
                zlib1g-dev pkg-config gcc make
DEPS_STAMP := node_modules/.strait-deps

include lab/k8s.mk

.PHONY: deps build bpf native ts test test-unit test-bpf test-netns bench clean bpffs demo demo-down

# System packages are installed only when a tool is missing, so warm machines
# skip apt entirely; npm ci runs when package-lock.json changed.
deps: $(DEPS_STAMP)
$(DEPS_STAMP): package.json package-lock.json
	@if ! (command -v clang && command -v bpftool && command -v tcpdump && command -v ethtool \
	       && command -v nft && command -v iptables-restore \
	       && test -f /usr/include/bpf/libbpf.h) >/dev/null 2>&1; then \
	  echo "deps: installing system packages: $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi
	PATH="$(SYSTEM_PATH)" npm ci --no-audit --no-fund
	@touch $@

build: deps bpf native ts

bpf: $(BPF_OBJS)
$(BPF_OUT)/%.o: bpf/%.c $(BPF_HDRS)
	@mkdir -p $(BPF_OUT)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

native: $(NATIVE_OUT)/libstrait.so
$(NATIVE_OUT)/libstrait.so: native/strait.c native/strait.h
	@mkdir -p $(NATIVE_OUT)
	$(CC) -O2 -g -Wall -Wextra -Werror -fPIC -shared -o $@ native/strait.c -lbpf -lelf -lz

ts:
	$(NODE_BIN)/tsc -p tsconfig.json

# bpffs must be mounted for pinning; tests need root.
bpffs:
	@mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

# The e2e tests run real etcd/kube-apiserver/kube-controller-manager built from
# the official Go modules (cached outside the repo; the first build takes a while).
# The e2e files each run a control plane (etcd, kube-apiserver, often
# kube-controller-manager) plus agents: on two cores they run one at a time,
# after everything else.
test: build bpffs k8s-bins
	$(NODE_BIN)/vitest run --exclude 'test/e2e/**'
	$(NODE_BIN)/vitest run test/e2e --no-file-parallelism

# The lab (strait lab --help): real etcd/kube-apiserver/kube-controller-manager, 2 namespace
# nodes with one agent each, 4 backend pods, Services and traffic. Leaves the lab up.
STRAIT := $(NODE_BIN)/node dist/src/cli/main.js
demo: build bpffs k8s-bins
	$(STRAIT) lab demo
demo-down:
	$(STRAIT) lab down

test-unit: build
	$(NODE_BIN)/vitest run test/unit
test-bpf: build bpffs
	$(NODE_BIN)/vitest run test/bpf
test-netns: build bpffs
	$(NODE_BIN)/vitest run test/netns

# northsouth: the lab (k8s-bins) with kube-proxy twin nodes, so nft and iptables too (make deps)
bench: build bpffs k8s-bins
	$(NODE_BIN)/node dist/bench/dataplane.js
	$(NODE_BIN)/node dist/bench/northsouth.js

clean:
	rm -rf $(BUILD) dist
