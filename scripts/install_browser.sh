#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard's browser test (tests/test_dashboard.py), which
# drives it with Playwright's Python package (never `playwright install`: no download from
# outside the package registries). Does nothing when /usr/bin/chromium is there already.
# Needs root (or sudo) and apt; CI calls it before the tests.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser.sh: no apt-get here; install Chromium as /usr/bin/chromium by hand" >&2
    exit 1
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install_browser.sh: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi
echo "install_browser.sh: installing chromium (Debian package)" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
# Fonts so the page's text renders in screenshots; no recommends (printer and desktop bits).
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core \
    fonts-liberation >/dev/null
/usr/bin/chromium --version >&2
