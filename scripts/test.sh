#!/usr/bin/env bash
# The one test command: formatting, lints, the whole test suite.
# Installs what the tests need (Debian packages) on a fresh machine; skips nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "== tools the tests drive (prometheus, promtool, systemd-analyze, kubernetes-validate)"
bash scripts/ecosystem-tools.sh

echo "== the browser the web UI test drives (chromium, chromedriver)"
bash scripts/ui-tools.sh

echo "== etcd for the fleet-mode tests"
bash scripts/fleet-tools.sh
echo "== the independent gRPC client (grpcio)"
bash scripts/grpc-tools.sh

echo "== cargo test"
cargo test --no-fail-fast
