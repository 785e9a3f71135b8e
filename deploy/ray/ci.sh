#!/usr/bin/env bash
# kiln_ray's end-to-end test: two `kiln serve` replicas behind Ray Serve on a
# local Ray cluster, driven with the official `openai` client.
#   bash deploy/ray/ci.sh [path/to/kiln]     (default: $KILN_BINARY, else `kiln` on PATH)
# The default model must be in the kiln cache (`kiln download`). Packages go
# to a virtual environment under ~/.cache/kiln/ray-venv, created once and
# reinstalled only when requirements-test.txt changes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
binary="${1:-${KILN_BINARY:-$(command -v kiln || true)}}"
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
    echo "kiln binary not found: pass its path or set KILN_BINARY" >&2
    exit 1
fi
binary="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"

venv="$HOME/.cache/kiln/ray-venv" req="$here/requirements-test.txt"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        echo "python3 -m venv failed: install python3-venv (apt install python3-venv)" >&2
        exit 1
    }
fi
if ! cmp -s "$req" "$venv/requirements.txt"; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$venv/requirements.txt"
fi

export KILN_BINARY="$binary"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
export RAY_USAGE_STATS_ENABLED=0
cd "$here/tests"
exec timeout 600 "$venv/bin/python" -m unittest -v test_units test_ray_serve
