#!/usr/bin/env bash
# Installs etcd for the fleet-mode tests (tests/fleet_*.rs), which start it
# themselves on free loopback ports: Debian's `etcd-server` package (etcd
# 3.4, binary /usr/bin/etcd). Idempotent; needs root (apt-get) the first time.
# Building grayproxy itself needs neither etcd nor protoc (see scripts/protoc).
set -euo pipefail

if ! command -v etcd >/dev/null 2>&1; then
    echo "fleet-tools: installing etcd-server with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Package scripts do not start Debian's etcd service where policy-rc.d
    # forbids it (containers); where one does start, it listens on :2379 and
    # the tests use their own free ports anyway.
    apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
fi

echo "fleet-tools: $(etcd --version 2>&1 | head -1)"
