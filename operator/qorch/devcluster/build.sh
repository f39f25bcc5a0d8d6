#!/usr/bin/env bash
# Build kube-apiserver, kubectl and etcd from the Go module proxy into a cache.
#
# Why a script of our own: `go install k8s.io/kubernetes/cmd/...@vX` fails
# because k8s.io/kubernetes replaces its staging modules with local paths, and
# Go ignores replace directives of dependencies. So we make a tiny module that
# requires k8s.io/kubernetes and replaces every staging module with its
# published v0.N.x twin, read from the go.mod of the exact version we build.
#
# Output: $QORCH_CACHE_DIR/k8s-v$K8S_VERSION/{kube-apiserver,kubectl,etcd}
# The build is skipped when all three binaries are already there.
set -euo pipefail

K8S_VERSION="${QORCH_K8S_VERSION:-1.36.3}"
ETCD_VERSION="${QORCH_ETCD_VERSION:-3.6.16}"
CACHE_ROOT="${QORCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qorch}"
OUT="$CACHE_ROOT/k8s-v$K8S_VERSION"
WORK="$CACHE_ROOT/build/k8s-v$K8S_VERSION"

log() { printf '[controlplane-build] %s\n' "$*" >&2; }

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/kubectl" && -x "$OUT/etcd" ]]; then
  log "cached: $OUT"
  echo "$OUT"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  cat >&2 <<MSG
[controlplane-build] Go is not installed, and no prebuilt binaries were found.
  Either install Go >= 1.25 (https://go.dev/doc/install, or your distro's golang package),
  or point QORCH_K8S_ASSETS (or KUBEBUILDER_ASSETS) at a folder holding
  kube-apiserver, etcd and kubectl, e.g. from 'setup-envtest use -p path'.
MSG
  exit 3
fi

start=$(date +%s)
minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
staging_version="v0.${K8S_VERSION#*.}"
mkdir -p "$OUT" "$WORK/k8s" "$WORK/etcd"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"

# --- kube-apiserver + kubectl -------------------------------------------
log "reading staging modules of k8s.io/kubernetes v$K8S_VERSION"
gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[[ -f "$gomod" ]] || { log "could not download k8s.io/kubernetes@v$K8S_VERSION"; exit 1; }
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod" | sort -u)
log "${#staging[@]} staging modules -> $staging_version"

cd "$WORK/k8s"
rm -f go.mod go.sum
cat > tools.go <<'GO'
//go:build tools

// Package tools pins the Kubernetes commands this module builds.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
go mod init qorch.local/controlplane/k8s >/dev/null 2>&1
go mod edit -require="k8s.io/kubernetes@v$K8S_VERSION"
for m in "${staging[@]}"; do
  go mod edit -replace="$m=$m@$staging_version"
done
log "resolving modules (first run downloads a lot)"
go mod tidy

ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
 -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
log "building kube-apiserver"
go build -trimpath -ldflags "$ldflags" -o "$OUT/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
log "building kubectl"
go build -trimpath -ldflags "$ldflags" -o "$OUT/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl

# --- etcd ------------------------------------------------------------------
cd "$WORK/etcd"
rm -f go.mod go.sum
cat > main.go <<'GO'
// Command etcd is upstream etcd's server main, built from the module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
go mod init qorch.local/controlplane/etcd >/dev/null 2>&1
go mod edit -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
go mod tidy
log "building etcd v$ETCD_VERSION"
go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" .

# Publish atomically so an interrupted build never looks cached.
for b in kube-apiserver kubectl etcd; do mv -f "$OUT/$b.tmp" "$OUT/$b"; done
log "done in $(( $(date +%s) - start ))s: $OUT"
echo "$OUT"
