#!/usr/bin/env bash
# Build kube-scheduler from the same k8s.io/kubernetes module as the control plane (bench/vs_kube_scheduler.py).
#
# The control-plane build (operator/qorch/devcluster/build.sh) leaves a module in
# $QORCH_CACHE_DIR/build/k8s-v$VERSION whose go.mod already replaces every staging
# module; building one more command from it needs only its import and a tidy.
# Output: $QORCH_CACHE_DIR/k8s-v$VERSION/kube-scheduler (skipped when present).
set -euo pipefail

K8S_VERSION="${QORCH_K8S_VERSION:-1.36.3}"
CACHE_ROOT="${QORCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qorch}"
OUT="$CACHE_ROOT/k8s-v$K8S_VERSION"
WORK="$CACHE_ROOT/build/k8s-v$K8S_VERSION/k8s"
log() { printf '[kube-scheduler-build] %s\n' "$*" >&2; }

if [[ -x "$OUT/kube-scheduler" ]]; then
  echo "$OUT/kube-scheduler"
  exit 0
fi
[[ -f "$WORK/go.mod" ]] || { log "build the control plane first: make controlplane"; exit 1; }
start=$(date +%s)
minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
cd "$WORK"
cat > scheduler_tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-scheduler"
GO
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"
go mod tidy
go build -trimpath -ldflags "-s -w \
 -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$minor" \
 -o "$OUT/kube-scheduler.tmp" k8s.io/kubernetes/cmd/kube-scheduler
mv -f "$OUT/kube-scheduler.tmp" "$OUT/kube-scheduler"
log "done in $(( $(date +%s) - start ))s"
echo "$OUT/kube-scheduler"
