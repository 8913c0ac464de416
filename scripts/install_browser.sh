#!/usr/bin/env bash
# Installs Debian's Chromium for the dashboard's browser test (tests/test_dashboard.py), which
# drives it with Playwright's Python package (never `playwright install`: no download from
# outside the package registries), and fonts so the page's text renders in screenshots.
# Does nothing when they are there already; CI calls it before the tests.
set -euo pipefail
bash "$(dirname "$0")/apt_install.sh" "the dashboard's browser test" \
    chromium fonts-dejavu-core fonts-liberation
/usr/bin/chromium --version >&2
