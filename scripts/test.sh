#!/usr/bin/env bash
# Command two: install what is needed and run the whole test suite.
source "$(dirname "$0")/env.sh"
# The dashboard's browser test drives Debian's Chromium (installed once, if missing).
bash scripts/install_browser.sh
# The simulator's tests render its cameras headless with EGL (installed once, if missing).
bash scripts/install_render.sh
# The two-host test builds network namespaces and a veth pair with `ip` (needs root).
bash scripts/apt_install.sh "ip for the two-host test" iproute2
"${UV[@]}" run --frozen ruff check .
"${UV[@]}" run --frozen ruff format --check .
exec "${UV[@]}" run --frozen pytest "$@"
