#!/usr/bin/env bash
# Build Kueue for the admission head-to-head (bench/vs_kueue.py).
#
# `go install` of the released module (it needs no `replace` lines; about 7 minutes cold
# on 2 cores). The module's CRDs (config/components/crd/bases) and webhook
# configurations (config/components/webhook) are copied next to the binary, since the
# benchmark installs them itself (Kueue runs out of cluster, without its own cert manager).
# Output: $QORCH_CACHE_DIR/kueue-v$VERSION/kueue (skipped when present), printed last.
set -euo pipefail

KUEUE_VERSION="${QORCH_KUEUE_VERSION:-0.17.0}"
CACHE_ROOT="${QORCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qorch}"
OUT="$CACHE_ROOT/kueue-v$KUEUE_VERSION"
log() { printf '[kueue-build] %s\n' "$*" >&2; }

if [[ -x "$OUT/kueue" && -d "$OUT/crd" && -f "$OUT/webhook/manifests.yaml" ]]; then
  echo "$OUT/kueue"
  exit 0
fi
start=$(date +%s)
mkdir -p "$OUT"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}"
GOBIN="$OUT/bin.tmp" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@v$KUEUE_VERSION"
module="$(go env GOMODCACHE)/sigs.k8s.io/kueue@v$KUEUE_VERSION"
rm -rf "$OUT/crd" "$OUT/webhook"
mkdir -p "$OUT/crd" "$OUT/webhook"
cp "$module"/config/components/crd/bases/*.yaml "$OUT/crd/"
cp "$module"/config/components/webhook/*.yaml "$OUT/webhook/"
chmod -R u+w "$OUT/crd" "$OUT/webhook"
mv -f "$OUT/bin.tmp/kueue" "$OUT/kueue"
rmdir "$OUT/bin.tmp"
log "done in $(( $(date +%s) - start ))s"
echo "$OUT/kueue"
