#!/usr/bin/env bash
# The server's tests against the newest Django, DRF and simplejwt releases on PyPI.
#
#   scripts/test-newest-django.sh                 # tests/tasks tests/accounts tests/collaborations + the internals checks
#   scripts/test-newest-django.sh tests/tasks -x  # other pytest arguments
#
# The project pins Django, djangorestframework and djangorestframework-simplejwt
# (requirements.txt); the few places that read their internals (core/prepared.py lists
# them) are checked by tests that fail naming what changed. This runs those tests, and the
# apps' own, with the newest releases, so a break shows the day it is released rather than
# at the next upgrade.
#
# The virtualenv lives outside the repository (VANTAGE_NEWEST_VENV, default
# ~/.cache/vantage/newest-django) and is upgraded on every run. It holds requirements.txt
# with those three unpinned, plus the test tools; not the algorithm tests' numerical
# libraries. The interpreter is the newest CPython found (VANTAGE_NEWEST_PYTHON, else
# python3.14 ... python3.11 on PATH or under pyenv), since a new Django may need a new
# Python. SQLite, or PostgreSQL when DATABASE_URL is set. Exit status is pytest's.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VANTAGE_NEWEST_VENV:-$HOME/.cache/vantage/newest-django}"
UNPINNED='^(django|djangorestframework|djangorestframework-simplejwt)=='

usable() { "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }

pick_python() {
    local candidate version
    for candidate in "${VANTAGE_NEWEST_PYTHON:-}" python3.14 python3.13 python3.12; do
        [ -n "$candidate" ] && usable "$candidate" && { echo "$candidate"; return; }
    done
    if command -v pyenv >/dev/null; then
        for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[1-9])(\.[0-9]+)?$' | sort -V -r); do
            candidate="$(pyenv root)/versions/$version/bin/python3"
            usable "$candidate" && { echo "$candidate"; return; }
        done
    fi
    echo python3
}

if [ ! -x "$VENV/bin/python" ]; then
    python="$(pick_python)"
    echo "newest-django: creating $VENV with $("$python" --version 2>&1)"
    "$python" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade)
grep -viE "$UNPINNED" requirements.txt >"$VENV/requirements-pinned.txt"
tools=$(grep -iE '^(pytest|pytest-django|daphne)==' requirements-dev.txt | tr '\n' ' ')
# One resolution: the pins of everything else, the newest of the three that fits them.
# shellcheck disable=SC2086
timeout 600 "${pip[@]}" -r "$VENV/requirements-pinned.txt" $tools Django djangorestframework djangorestframework-simplejwt
"$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
import sys
print("newest-django: Python %d.%d, " % sys.version_info[:2]
      + ", ".join(f"{name} {version(name)}" for name in ("Django", "djangorestframework", "djangorestframework-simplejwt")))
EOF

if [ "$#" -eq 0 ]; then
    set -- tests/tasks tests/accounts tests/collaborations tests/test_prepared.py tests/test_pagination.py -x -q
fi
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
