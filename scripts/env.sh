# Sourced by the other scripts: finds (or installs) uv and syncs the project's locked venv.
# Needs nothing but Python 3.12 on the machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1; then
    UV=(uv)
else
    if ! python3 -m uv --version >/dev/null 2>&1; then
        echo "so101-bus: installing uv (pip install uv)" >&2
        python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
    fi
    UV=(python3 -m uv)
fi
# --compile-bytecode: every process imports torch + lerobot; without .pyc files each start
# recompiles them (~13 s).
"${UV[@]}" sync --frozen --quiet --compile-bytecode
