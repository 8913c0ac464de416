#!/usr/bin/env bash
# Installs the EGL libraries MuJoCo renders the simulator's cameras with, headless (Debian's
# Mesa: software rendering without a GPU; with an NVIDIA GPU and its driver, EGL uses the GPU).
# Does nothing when they are there already. Needs root (or sudo) and apt; CI and
# `SO101_PROFILE=sim bash scripts/up.sh` call it.
set -euo pipefail
PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ "${#missing[@]}" = 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_render.sh: no apt-get here; install ${missing[*]} (or your distribution's" \
        "EGL + Mesa packages) by hand" >&2
    exit 1
fi
SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install_render.sh: need root (or sudo) to apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
echo "install_render.sh: installing ${missing[*]} (Debian packages)" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
