# Kubernetes + etcd binaries for the lab (included from the top Makefile).
#   make k8s-bins     build them into $(K8S_BIN_DIR) if missing or stale
# Versions are pinned in lab/k8s-versions.env; the build is lab/build-k8s.sh.

K8S_LAB_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
include $(K8S_LAB_DIR)/k8s-versions.env

STRAIT_CACHE ?= $(HOME)/.cache/strait
export STRAIT_CACHE
K8S_BIN_DIR := $(STRAIT_CACHE)/k8s-$(KUBERNETES_VERSION)/bin

.PHONY: k8s-bins
# The script returns at once when the cached binaries match the pinned versions.
k8s-bins:
	@$(K8S_LAB_DIR)/build-k8s.sh
