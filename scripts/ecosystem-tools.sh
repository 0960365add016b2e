#!/usr/bin/env bash
# Installs the real tools the ecosystem tests (tests/ecosystem_*.rs) run:
#   - prometheus + promtool  (Debian's `prometheus` package ships both)
#   - systemd-analyze        (Debian's `systemd` package)
#   - kubernetes-validate    (PyPI; the wheel bundles the Kubernetes JSON
#                             schemas, so it validates offline)
# Idempotent: installs only what is missing; a second run does nothing but
# print the versions. Needs root (apt-get) the first time.
set -euo pipefail

KUBE_VALIDATE_VERSION="${KUBE_VALIDATE_VERSION:-1.37.0}"
VENV="${GRAYPROXY_TOOLS_VENV:-/opt/grayproxy-tools/venv}"

missing_apt=()
command -v promtool >/dev/null 2>&1 || missing_apt+=(prometheus)
command -v prometheus >/dev/null 2>&1 || missing_apt+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || missing_apt+=(systemd)

if ((${#missing_apt[@]})); then
    # Unique package names.
    mapfile -t pkgs < <(printf '%s\n' "${missing_apt[@]}" | sort -u)
    echo "ecosystem-tools: installing ${pkgs[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # No recommends: prometheus recommends node-exporter, which we do not need.
    # Package scripts do not start the Debian prometheus service where
    # policy-rc.d forbids it (containers); where it does start one, it listens
    # on :9090 and the tests use their own free ports anyway.
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

kube_validate_ok() {
    command -v kubernetes-validate >/dev/null 2>&1 &&
        kubernetes-validate --version 2>/dev/null | grep -q "$KUBE_VALIDATE_VERSION"
}

if ! kube_validate_ok; then
    echo "ecosystem-tools: installing kubernetes-validate==$KUBE_VALIDATE_VERSION from PyPI into $VENV" >&2
    if [[ ! -x "$VENV/bin/pip" ]]; then
        python3 -m venv "$VENV" 2>/dev/null || {
            # Debian's python3 needs python3-venv for `-m venv`.
            apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
            python3 -m venv "$VENV"
        }
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KUBE_VALIDATE_VERSION"
    ln -sf "$VENV/bin/kubernetes-validate" /usr/local/bin/kubernetes-validate
fi

echo "ecosystem-tools: $(promtool --version 2>&1 | head -1)"
echo "ecosystem-tools: $(prometheus --version 2>&1 | head -1)"
echo "ecosystem-tools: $(systemd-analyze --version | head -1)"
echo "ecosystem-tools: kubernetes-validate $(kubernetes-validate --version 2>&1 | tail -1)"
