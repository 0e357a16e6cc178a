#!/usr/bin/env bash
# Makes sure kube-apiserver, kube-controller-manager and etcd exist and prints ONE directory that
# holds all three (last line of stdout). Everything else goes to stderr, so callers can simply take
# the last stdout line.
#
# Resolution order, per binary:
#   1. KUBE_APISERVER_BIN / KUBE_CONTROLLER_MANAGER_BIN / ETCD_BIN
#   2. KUBEBUILDER_ASSETS (envtest layout; it usually has no kube-controller-manager)
#   3. a build from Debian's own kubernetes source package, cached in .cache/kubernetes/<version>/
#      (the only Kubernetes source reachable from here); etcd from Debian's etcd-server.
#
# Idempotent and safe to run concurrently: the build runs under a lock and is skipped when the
# cache already holds both binaries (then nothing touches apt or the network).
# Packages it may install (root only; otherwise it prints the command): dpkg-dev golang-go rsync
# jq make etcd-server, plus a deb-src entry for bookworm main.
set -euo pipefail

log() { printf '[e2e-binaries] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${E2E_CACHE_DIR:-$repo_root/.cache/kubernetes}"
mkdir -p "$cache_root"

# Everything runs in the main shell (no $(...) around functions that install), so that a fresh
# machine gets one `apt-get update`, after the deb-src entry is in place.
apt_updated=0
apt_update_once() {
  if [[ $apt_updated -eq 0 ]]; then
    log "apt-get update"
    apt-get update -qq >&2
    apt_updated=1
  fi
}

# Installing on demand keeps a fresh CI machine working without a separate setup step; a non-root
# user gets the exact command instead of a half-finished build.
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    die "missing packages; run: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
  fi
  apt_update_once
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

deb_src_list=/etc/apt/sources.list.d/debian-src-e2e.sources
ensure_deb_src() {
  if apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Version:'; then
    return 0
  fi
  local codename uri
  codename="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")"
  [[ $(id -u) -eq 0 ]] || die "no deb-src entry for $codename main: add one and run apt-get update"
  if [[ ! -f $deb_src_list ]]; then
    # The same mirror the machine's binary entries use, so no host is hard-coded here.
    uri="$(awk -v s="$codename" 'BEGIN { RS = "" } /(^|\n)Types:[^\n]*deb/ {
        if ($0 ~ ("\nSuites:[^\n]*[ \t]" s "([ \t]|\n|$)")) { match($0, /URIs:[ \t]*[^ \t\n]+/);
        u = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", u); print u; exit } }' \
      /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
    if [[ -z $uri ]]; then
      uri="$(awk -v s="$codename" '$1 == "deb" && $0 ~ (" " s " ") { for (i = 2; i <= NF; i++)
          if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null || true)"
    fi
    [[ -n $uri ]] || die "found no deb entry for $codename to mirror as deb-src"
    log "adding $deb_src_list (deb-src $uri $codename main)"
    printf '%s\n' 'Types: deb-src' "URIs: $uri" "Suites: $codename" 'Components: main' \
      'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >"$deb_src_list"
  fi
  apt_updated=0
}

# Debian versions look like 1.20.5+really1.20.2-1.1+deb12u1; the cache is keyed by the upstream
# part actually shipped, so a Debian-only revision does not force a rebuild.
upstream_of() {
  local v="${1#*:}"
  v="${v%-*}"
  v="${v##*really}"
  printf '%s\n' "$v"
}

have_build() { [[ -f "$1/.complete" && -x "$1/bin/kube-apiserver" && -x "$1/bin/kube-controller-manager" ]]; }

# Sets built_dir to a directory holding kube-apiserver and kube-controller-manager.
built_dir=""
build_kubernetes() {
  local d
  for d in "$cache_root"/*/; do
    if have_build "${d%/}"; then
      built_dir="${d%/}/bin"
      return 0
    fi
  done

  exec 9>"$cache_root/.build.lock"
  log "taking build lock $cache_root/.build.lock"
  flock 9
  for d in "$cache_root"/*/; do
    if have_build "${d%/}"; then
      built_dir="${d%/}/bin"
      exec 9>&-
      return 0
    fi
  done

  ensure_deb_src
  # etcd-server joins the same install so that a fresh machine runs apt-get once.
  local want_etcd=()
  [[ -z "${ETCD_BIN:-}" ]] && ! command -v etcd >/dev/null 2>&1 && want_etcd=(etcd-server)
  ensure_packages dpkg-dev golang-go rsync jq make "${want_etcd[@]}"
  apt_update_once

  local debver version out
  debver="$(apt-cache showsrc kubernetes | awk '/^Version:/ {print $2}' | sort -V | tail -n1)"
  [[ -n $debver ]] || die "apt-cache showsrc kubernetes finds nothing even with $deb_src_list"
  version="$(upstream_of "$debver")"
  out="$cache_root/$version"

  local started=$SECONDS
  log "building Kubernetes $version (Debian source $debver) into $out; this takes a few minutes"
  rm -rf "$out"
  mkdir -p "$out/src" "$out/bin"
  (cd "$out/src" && apt-get source -qq --download-only "kubernetes=$debver" >&2 &&
    dpkg-source --no-check -x ./*.dsc kubernetes >&2)
  local src="$out/src/kubernetes"
  [[ -d "$src/vendor" ]] || die "unpacked source at $src has no vendor/"

  # Kubernetes 1.20 builds in GOPATH mode: -mod=vendor in module mode fails under Go 1.19.
  local gopath="$out/gopath"
  mkdir -p "$gopath/src/k8s.io"
  ln -sfn "$src" "$gopath/src/k8s.io/kubernetes"
  (
    export GOPATH="$gopath" GO111MODULE=off CGO_ENABLED=0 GOFLAGS="" GOCACHE="$out/gocache"
    cd "$gopath/src/k8s.io/kubernetes"
    if [[ ! -f pkg/generated/openapi/zz_generated.openapi.go ]]; then
      log "make gen_openapi (the tarball ships without the generated OpenAPI definitions)"
      make gen_openapi >&2
    fi
    log "go build kube-apiserver kube-controller-manager"
    go build -trimpath -tags 'selinux,notest' -ldflags '-s -w' -o "$out/bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager >&2
  )

  # Sources, GOPATH output and the Go build cache are over 1 GB and never needed again.
  rm -rf "$out/src" "$gopath" "$out/gocache"
  printf '%s (Debian %s)\n' "$version" "$debver" >"$out/.complete"
  log "built Kubernetes $version in $((SECONDS - started)) s"
  exec 9>&-
  built_dir="$out/bin"
}

apiserver="${KUBE_APISERVER_BIN:-}"
controller_manager="${KUBE_CONTROLLER_MANAGER_BIN:-}"
etcd="${ETCD_BIN:-}"
assets="${KUBEBUILDER_ASSETS:-}"
if [[ -n $assets ]]; then
  [[ -d $assets ]] || die "KUBEBUILDER_ASSETS=$assets is not a directory"
  [[ -z $apiserver && -x $assets/kube-apiserver ]] && apiserver="$assets/kube-apiserver"
  [[ -z $controller_manager && -x $assets/kube-controller-manager ]] && controller_manager="$assets/kube-controller-manager"
  [[ -z $etcd && -x $assets/etcd ]] && etcd="$assets/etcd"
fi
for b in "$apiserver" "$controller_manager" "$etcd"; do
  [[ -z $b || -x $b ]] || die "$b is not an executable file"
done

if [[ -z $apiserver || -z $controller_manager ]]; then
  build_kubernetes
  apiserver="${apiserver:-$built_dir/kube-apiserver}"
  controller_manager="${controller_manager:-$built_dir/kube-controller-manager}"
fi
if [[ -z $etcd ]]; then
  command -v etcd >/dev/null 2>&1 || ensure_packages etcd-server
  etcd="$(command -v etcd)" || die "etcd not found after installing etcd-server"
fi

# Callers get a single directory; when the three come from different places, a directory of
# symlinks keyed by their paths gives them one without copying anything.
dir="$(dirname "$apiserver")"
if [[ $controller_manager == "$dir/kube-controller-manager" && $etcd == "$dir/etcd" &&
  $apiserver == "$dir/kube-apiserver" ]]; then
  printf '%s\n' "$dir"
  exit 0
fi
key="$(printf '%s\n' "$apiserver" "$controller_manager" "$etcd" | sha256sum | cut -c1-16)"
links="$cache_root/links/$key"
mkdir -p "$links"
ln -sfn "$(readlink -f "$apiserver")" "$links/kube-apiserver"
ln -sfn "$(readlink -f "$controller_manager")" "$links/kube-controller-manager"
ln -sfn "$(readlink -f "$etcd")" "$links/etcd"
log "kube-apiserver=$apiserver kube-controller-manager=$controller_manager etcd=$etcd -> $links"
printf '%s\n' "$links"
