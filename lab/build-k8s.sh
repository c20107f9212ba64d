#!/usr/bin/env bash
# Builds the real Kubernetes and etcd binaries the lab runs, from the official
# Go modules at the versions pinned in lab/k8s-versions.env, into a cache
# outside the repo:
#
#   ${STRAIT_CACHE:-~/.cache/strait}/k8s-<KUBERNETES_VERSION>/bin/
#     etcd etcdctl kube-apiserver kube-controller-manager kube-proxy kubectl
#
# How: a throwaway Go module per source (one for k8s.io/kubernetes, one for
# etcd) is generated in the cache dir. The Kubernetes one requires
# k8s.io/kubernetes@KUBERNETES_VERSION and replaces every staging module that
# k8s.io/kubernetes's own go.mod points at ./staging/... (or requires as
# v0.0.0) with its published K8S_STAGING_VERSION; the list is read from the
# downloaded go.mod, not hard-coded. Binaries are built the way
# hack/lib/golang.sh builds release binaries: static (CGO_ENABLED=0),
# -trimpath, -tags selinux,notest,grpcnotrace, -s -w, and the version ldflags
# of hack/lib/version.sh, so `kube-apiserver --version` and the API's /version
# report KUBERNETES_VERSION.
#
# Reuse: when every binary exists and the stamp file matches the pinned
# versions (and this recipe), it prints the bin dir and exits at once.
# Builds run under `nice -n 19` with GOMAXPROCS=2 and `go build -p 2`
# (override with GOMAXPROCS / K8S_BUILD_JOBS); progress goes to stderr, full
# compiler output to <cache>/k8s-<version>/logs/. The bin dir is printed as
# the last (only) line of stdout, so `bin=$(lab/build-k8s.sh)` works.
#
# Usage: lab/build-k8s.sh [--check | --print-dir | --force]
#   --check      exit 0 if the cached binaries are up to date, 1 otherwise
#   --print-dir  print the bin dir (built or not) and exit
#   --force      rebuild even if up to date
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
versions_file="${K8S_VERSIONS_FILE:-$here/k8s-versions.env}"
# shellcheck source=lab/k8s-versions.env
source "$versions_file"
: "${KUBERNETES_VERSION:?not set in $versions_file}"
: "${K8S_STAGING_VERSION:?not set in $versions_file}"
: "${ETCD_VERSION:?not set in $versions_file}"

# Bump when the way binaries are built changes, so caches are rebuilt.
RECIPE=1

cache="${STRAIT_CACHE:-$HOME/.cache/strait}"
top="$cache/k8s-$KUBERNETES_VERSION"
bin="$top/bin"
stamp="$top/stamp"
logs="$top/logs"

ETCD_BINS=(etcd etcdctl)
K8S_BINS=(kube-apiserver kube-controller-manager kube-proxy kubectl)
ALL_BINS=("${ETCD_BINS[@]}" "${K8S_BINS[@]}")

t0=$SECONDS
log() { printf '[k8s-bins %4ds] %s\n' "$((SECONDS - t0))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
fmt_secs() { printf '%dm%02ds' "$(($1 / 60))" "$(($1 % 60))"; }

want_stamp() {
  printf 'recipe=%s\nkubernetes=%s\nstaging=%s\netcd=%s\n' \
    "$RECIPE" "$KUBERNETES_VERSION" "$K8S_STAGING_VERSION" "$ETCD_VERSION"
}

up_to_date() {
  [[ -f "$stamp" && "$(cat "$stamp")" == "$(want_stamp)" ]] || return 1
  local b
  for b in "${ALL_BINS[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

force=0
case "${1:-}" in
  "") ;;
  --check) up_to_date; exit ;;
  --print-dir) echo "$bin"; exit 0 ;;
  --force) force=1 ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument: $1 (see --help)" ;;
esac

if [[ $force == 0 ]] && up_to_date; then echo "$bin"; exit 0; fi

mkdir -p "$top" "$bin" "$logs"
# One build at a time per version (parallel `make` runs, test files, ...).
exec 9>"$top/.lock"
if ! flock -n 9; then
  log "another build of k8s-$KUBERNETES_VERSION is running; waiting for it"
  flock 9
  if [[ $force == 0 ]] && up_to_date; then echo "$bin"; exit 0; fi
fi

command -v go >/dev/null || die "go is not installed (Go >= 1.26 is needed)"
# Never fetch a toolchain; use the installed Go (the go.mod files below say
# which version they need, and go says so clearly if it is too old).
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOWORK=off
export CGO_ENABLED=0
export GOMAXPROCS="${GOMAXPROCS:-2}"
jobs="${K8S_BUILD_JOBS:-$GOMAXPROCS}"
heartbeat="${K8S_BUILD_HEARTBEAT:-30}"

lowprio=(nice -n 19)
if command -v ionice >/dev/null && ionice -c 2 -n 7 true 2>/dev/null; then
  lowprio+=(ionice -c 2 -n 7)
fi

log "Kubernetes $KUBERNETES_VERSION (staging $K8S_STAGING_VERSION), etcd $ETCD_VERSION"
log "into $bin  ($(go env GOVERSION), GOMAXPROCS=$GOMAXPROCS, -p $jobs, nice 19)"
rm -f "$stamp"

# --- module metadata -------------------------------------------------------
# `go mod download -json` prints Info (.info: Version, Time), GoMod, Dir, ...
json_field() { sed -n "s/^[[:space:]]*\"$1\": \"\(.*\)\",\{0,1\}$/\1/p" | head -n1; }

download() { # module@version -> JSON on stdout
  local out
  if ! out=$("${lowprio[@]}" go mod download -json "$1" 2>&1); then
    printf '%s\n' "$out" >&2
    die "cannot download $1 from the module proxy ($(go env GOPROXY))"
  fi
  if grep -q '"Error"' <<<"$out"; then
    printf '%s\n' "$out" >&2
    die "cannot download $1 from the module proxy ($(go env GOPROXY))"
  fi
  printf '%s\n' "$out"
}

log "fetching k8s.io/kubernetes@$KUBERNETES_VERSION and etcd $ETCD_VERSION module sources"
k8s_json=$(download "k8s.io/kubernetes@$KUBERNETES_VERSION")
k8s_gomod=$(json_field GoMod <<<"$k8s_json")
k8s_info=$(json_field Info <<<"$k8s_json")
[[ -f "$k8s_gomod" ]] || die "no go.mod for k8s.io/kubernetes@$KUBERNETES_VERSION"
download "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
download "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION" >/dev/null

# Staging modules: everything k8s.io/kubernetes replaces with ./staging/...,
# plus anything it requires as v0.0.0.
mapfile -t staging < <(
  awk '
    { line = $0; sub(/^[[:space:]]+/, "", line); sub(/^(require|replace)[[:space:]]+/, "", line); n = split(line, f, /[[:space:]]+/) }
    n >= 3 && f[2] == "=>" && f[3] ~ /^\.\/staging\// { print f[1] }
    n >= 2 && f[1] ~ /^k8s\.io\// && f[2] == "v0.0.0" { print f[1] }
  ' "$k8s_gomod" | sort -u)
((${#staging[@]} > 5)) || die "found only ${#staging[@]} staging modules in $k8s_gomod"
log "${#staging[@]} staging modules -> $K8S_STAGING_VERSION: ${staging[*]}"

go_line=$(awk '$1 == "go" { print $2; exit }' "$k8s_gomod")
# The kubernetes release's build date, taken from the module proxy's .info
# (not the wall clock) so that rebuilds produce the same binaries.
build_date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$k8s_info" 2>/dev/null || true)
build_date=${build_date:-1970-01-01T00:00:00Z}

# --- throwaway modules -----------------------------------------------------
k8s_mod="$top/src/kubernetes"
etcd_mod="$top/src/etcd"
mkdir -p "$k8s_mod" "$etcd_mod"
{
  echo "// Generated by lab/build-k8s.sh: a throwaway module to build Kubernetes binaries."
  echo "module strait.invalid/k8s-build"
  echo
  echo "go ${go_line:-1.26.0}"
  echo
  # The main module's godebug settings apply to the binaries: keep Kubernetes's.
  awk '/^godebug[[:space:]]*\(/ { inb = 1 } inb { print } inb && /^\)/ { inb = 0; next }
       !inb && /^godebug[[:space:]]+[^(]/ { print }' "$k8s_gomod"
  echo
  echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do printf '\t%s => %s %s\n' "$m" "$m" "$K8S_STAGING_VERSION"; done
  echo ")"
} >"$k8s_mod/go.mod.new"
# Rewrite go.mod only when it changes (the build may add indirect requires).
if ! cmp -s "$k8s_mod/go.mod.new" "$k8s_mod/go.mod.gen" 2>/dev/null; then
  cp "$k8s_mod/go.mod.new" "$k8s_mod/go.mod"
  mv "$k8s_mod/go.mod.new" "$k8s_mod/go.mod.gen"
else
  rm -f "$k8s_mod/go.mod.new"
fi

etcd_gomod=$(json_field GoMod <<<"$(download "go.etcd.io/etcd/server/v3@$ETCD_VERSION")")
etcd_go_line=$(awk '$1 == "go" { print $2; exit }' "$etcd_gomod")
cat >"$etcd_mod/go.mod.new" <<EOF
// Generated by lab/build-k8s.sh: a throwaway module to build etcd binaries.
module strait.invalid/etcd-build

go ${etcd_go_line:-1.26.0}

require (
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
	go.etcd.io/etcd/etcdctl/v3 $ETCD_VERSION
)
EOF
if ! cmp -s "$etcd_mod/go.mod.new" "$etcd_mod/go.mod.gen" 2>/dev/null; then
  cp "$etcd_mod/go.mod.new" "$etcd_mod/go.mod"
  mv "$etcd_mod/go.mod.new" "$etcd_mod/go.mod.gen"
else
  rm -f "$etcd_mod/go.mod.new"
fi

# --- build flags -----------------------------------------------------------
major=${KUBERNETES_VERSION#v}; major=${major%%.*}
minor=${KUBERNETES_VERSION#v*.}; minor=${minor%%.*}
k8s_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION"
  k8s_ldflags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=$build_date"
done
k8s_tags="selinux,notest,grpcnotrace"
etcd_ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$ETCD_VERSION"

# --- build -----------------------------------------------------------------
declare -A pkg_of=(
  [etcd]=go.etcd.io/etcd/server/v3
  [etcdctl]=go.etcd.io/etcd/etcdctl/v3
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
)

hb_pid=
stop_heartbeat() {
  if [[ -n "$hb_pid" ]]; then kill "$hb_pid" 2>/dev/null || true; wait "$hb_pid" 2>/dev/null || true; fi
  hb_pid=
}
trap 'stop_heartbeat; rm -f "$bin"/.*.tmp' EXIT

summary=()
n=0
build_one() { # name moddir tags ldflags
  local name=$1 dir=$2 tags=$3 ldflags=$4 pkg=${pkg_of[$1]} start=$SECONDS blog="$logs/$1.log"
  n=$((n + 1))
  log "building $name ($n/${#ALL_BINS[@]}) from $pkg"
  : >"$blog"
  # Heartbeat: elapsed time and packages compiled so far (go build -v).
  (
    # Kill the pending sleep too on exit: it holds stderr open (pipes, tee).
    sp=
    trap '[[ -n "$sp" ]] && kill "$sp" 2>/dev/null; exit 0' TERM
    while :; do
      sleep "$heartbeat" & sp=$!
      wait "$sp"
      c=$(grep -vc '^go: ' "$blog" 2>/dev/null) || true
      log "  ... $name: $(fmt_secs $((SECONDS - start))), ${c:-0} packages compiled so far"
    done
  ) &
  hb_pid=$!
  if ! (cd "$dir" && "${lowprio[@]}" go build -p "$jobs" -v -trimpath -tags "$tags" \
          -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg") >>"$blog" 2>&1; then
    stop_heartbeat
    tail -n 40 "$blog" >&2
    die "building $name failed (full log: $blog)"
  fi
  stop_heartbeat
  mv -f "$bin/.$name.tmp" "$bin/$name"
  local secs=$((SECONDS - start)) size
  size=$(du -h "$bin/$name" | cut -f1)
  log "built $name in $(fmt_secs "$secs") ($size)"
  summary+=("$(printf '%-24s %8s %6s' "$name" "$(fmt_secs "$secs")" "$size")")
}

for b in "${ETCD_BINS[@]}"; do build_one "$b" "$etcd_mod" "" "$etcd_ldflags"; done
for b in "${K8S_BINS[@]}"; do build_one "$b" "$k8s_mod" "$k8s_tags" "$k8s_ldflags"; done

got=$("$bin/kube-apiserver" --version 2>&1 || true)
[[ "$got" == "Kubernetes $KUBERNETES_VERSION" ]] || die "kube-apiserver --version says '$got', want 'Kubernetes $KUBERNETES_VERSION'"

want_stamp >"$stamp"
log "done in $(fmt_secs $((SECONDS - t0))):"
for s in "${summary[@]}"; do log "  $s"; done
echo "$bin"
