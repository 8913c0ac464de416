#!/usr/bin/env bash
# Command one: install what is needed and bring the runtime up (the hub, in the foreground).
source "$(dirname "$0")/env.sh"
exec "${UV[@]}" run --frozen python -m bus.hub "$@"
