#!/usr/bin/env bash
# Installs the browser the web UI test (tests/ui.rs) drives: Debian's
# `chromium` and `chromium-driver` (WebDriver). Idempotent: installs only
# what is missing. Needs root (apt-get) the first time.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)

if ((${#missing[@]})); then
    echo "ui-tools: installing ${missing[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

chromium --version
chromedriver --version
