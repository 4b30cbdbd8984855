#!/usr/bin/env bash
# ./run.sh        attempt a record on this machine (no GPU: the tiny-cpu track end to end)
# ./run.sh test   install the test extra and run the test suite
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    echo "==> creating $VENV"
    python3 -m venv "$VENV"
fi

# Install torch first and exactly: a CPU wheel of 2.13.0 is what these machines serve; any other
# torch would pull gigabytes of CUDA packages. A machine with CUDA keeps whatever torch it has.
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "==> installing torch==2.13.0"
    "$PY" -m pip install -q "torch==2.13.0"
fi

extra=""
[ "${1:-}" = "test" ] && extra="[dev]"
stamp="$VENV/.installed$extra"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> installing speedrun$extra into $VENV"
    "$PY" -m pip install -q -e ".$extra"
    touch "$stamp"
fi

case "${1:-}" in
    test)
        shift
        exec "$PY" -m pytest "$@"
        ;;
    "")
        exec "$VENV/bin/speedrun" main
        ;;
    *)
        echo "usage: ./run.sh [test [pytest args…]]" >&2
        exit 2
        ;;
esac
