#!/usr/bin/env bash
# Installs the EGL libraries MuJoCo renders the simulator's cameras with, headless (Debian's
# Mesa: software rendering without a GPU; with an NVIDIA GPU and its driver, EGL uses the GPU).
# Does nothing when they are there already. CI and `SO101_PROFILE=sim bash scripts/up.sh`
# call it.
set -euo pipefail
exec bash "$(dirname "$0")/apt_install.sh" "the simulator's headless rendering" \
    libegl1 libegl-mesa0 libgl1-mesa-dri libgl1
