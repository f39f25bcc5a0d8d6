#!/usr/bin/env bash
# Build the helm CLI from the Go module proxy into the qorch cache (`make helm`).
#
# No registry of this project's ships helm as a package, and helm's own module has no replace
# directive, so `go install helm.sh/helm/v3/cmd/helm@vX` builds it as is (about 3 minutes cold
# on 2 cores). tests/integration/test_helm_install.py renders charts/qorch with it.
#
# Output: $QORCH_CACHE_DIR/helm-v$HELM_VERSION/helm (printed on stdout). Skipped when present.
set -euo pipefail

HELM_VERSION="${QORCH_HELM_VERSION:-3.22.0}"
CACHE_ROOT="${QORCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qorch}"
OUT="$CACHE_ROOT/helm-v$HELM_VERSION"

log() { printf '[helm-build] %s\n' "$*" >&2; }

if [[ -x "$OUT/helm" ]]; then
  log "cached: $OUT/helm"
  echo "$OUT/helm"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  log "Go is not installed: install Go >= 1.26, or put a helm v3 binary at $OUT/helm"
  exit 3
fi

start=$(date +%s)
mkdir -p "$OUT"
tmp=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building helm v$HELM_VERSION"
# helm's version command reads internal/version.version; set it as the release build does.
CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" GOBIN="$tmp" go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
mv -f "$tmp/helm" "$OUT/helm"  # atomically, so an interrupted build never looks cached
log "done in $(( $(date +%s) - start ))s: $OUT/helm"
echo "$OUT/helm"
