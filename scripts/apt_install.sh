#!/usr/bin/env bash
# Installs the Debian packages given that are not installed yet (nothing when all are):
#   bash scripts/apt_install.sh <why, for the log> PACKAGE...
# Needs root (or sudo) and apt; says what to install by hand when there is neither.
set -euo pipefail
why="$1"
shift
missing=()
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ "${#missing[@]}" = 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt_install.sh: no apt-get here; install ${missing[*]} ($why) by hand" >&2
    exit 1
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "apt_install.sh: need root (or sudo) to apt-get install ${missing[*]} ($why)" >&2
        exit 1
    fi
fi
echo "apt_install.sh: installing ${missing[*]} ($why; Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
