#!/usr/bin/env bash
# Installs the independent gRPC client the gRPC tests (tests/grpc_python.rs)
# call grayproxy with: Python's grpcio from PyPI, in the tools venv.
# Idempotent; needs root (apt-get, /opt) the first time.
set -euo pipefail

GRPCIO_VERSION="${GRPCIO_VERSION:-1.76.0}"
VENV="${GRAYPROXY_TOOLS_VENV:-/opt/grayproxy-tools/venv}"

if ! "$VENV/bin/python" -c "import grpc" >/dev/null 2>&1; then
    echo "grpc-tools: installing grpcio==$GRPCIO_VERSION from PyPI into $VENV" >&2
    if [[ ! -x "$VENV/bin/pip" ]]; then
        python3 -m venv "$VENV" 2>/dev/null || {
            apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
            python3 -m venv "$VENV"
        }
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check "grpcio==$GRPCIO_VERSION"
fi
echo "grpc-tools: grpcio $("$VENV/bin/python" -c 'import grpc; print(grpc.__version__)')"
