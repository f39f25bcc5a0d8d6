#!/usr/bin/env bash
# Build promql-check (main.go here: Prometheus's own PromQL parser and rule-file checks) from
# the Go module proxy into the qorch cache (`make promql`). tests/integration/test_metrics_names.py
# runs it on manifests/monitoring. About 10 s once the modules are downloaded.
#
# Output: $QORCH_CACHE_DIR/promql-check-<hash of go.mod, go.sum, main.go>/promql-check
# (printed on stdout). Skipped when present.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE_ROOT="${QORCH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qorch}"
OUT="$CACHE_ROOT/promql-check-$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/main.go" | sha256sum | cut -c1-12)"

log() { printf '[promql-build] %s\n' "$*" >&2; }

if [[ -x "$OUT/promql-check" ]]; then
  log "cached: $OUT/promql-check"
  echo "$OUT/promql-check"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  log "Go is not installed: install Go >= 1.26"
  exit 3
fi
mkdir -p "$OUT"
cd "$HERE"
log "building promql-check"
CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false}" go build -trimpath -ldflags "-s -w" -o "$OUT/promql-check.tmp" .
mv -f "$OUT/promql-check.tmp" "$OUT/promql-check"  # atomically, so an interrupted build never looks cached
echo "$OUT/promql-check"
