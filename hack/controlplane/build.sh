#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd into the qorch cache.
# The script itself ships inside the package (so `qorch dev cluster build`
# works for pip users too); this wrapper is the repository's entry point.
exec bash "$(dirname "$0")/../../operator/qorch/devcluster/build.sh" "$@"
