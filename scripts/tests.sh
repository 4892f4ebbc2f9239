#!/usr/bin/env bash
# The test suite, as `make test` (fast) and `make test-slow` (slow) run it.
#
# The worlds the tests read are built first, alone, with every core (the tests themselves pin one
# thread per process, tests/conftest.py), then pytest spreads the test files over worker processes
# (pytest-xdist, one file per worker at a time). WORKBENCH_TEST_WORKERS sets how many (default:
# the number of cores, at most 4; 1 runs everything in this process).
#   bash scripts/tests.sh fast|slow [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:?usage: scripts/tests.sh fast|slow [pytest args...]}"; shift
PY=.venv/bin/python
cores=$(nproc 2>/dev/null || echo 2)
workers="${WORKBENCH_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}"
dist=()
[ "$workers" -gt 1 ] && dist=(-n "$workers" --dist loadfile)

build() {  # build (or find cached) the worlds named, with every core
  local t
  for name in "$@"; do
    t=$(date +%s)
    case "$name" in
      toy) .venv/bin/workbench world build --base toy --seed "${WORKBENCH_TOY_SEED:-0}" ;;
      people) .venv/bin/workbench world build --base smollm2-135m ;;
    esac
    echo "[tests] $name world ready in $(( $(date +%s) - t )) s"
  done
}

case "$kind" in
  fast)
    build toy
    exec "$PY" -m pytest -m "not slow" -q "${dist[@]}" "$@" ;;
  slow)
    build toy people
    rc=0; "$PY" -m pytest -m slow -q "${dist[@]}" "$@" || rc=$?
    [ "$rc" -eq 5 ] && rc=0  # no slow test selected
    exit "$rc" ;;
  *) echo "scripts/tests.sh: unknown kind '$kind' (fast or slow)" >&2; exit 2 ;;
esac
