#!/usr/bin/env bash
# Idempotent set-up from a fresh clone: uv, the project's virtual environment from uv.lock, and (with
# --browser) Debian's Chromium for the browser tests. Label Studio's own environment is created by
# `kazi stack up` itself. Safe to run on every command: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
export UV_PYTHON_DOWNLOADS=never UV_LINK_MODE=copy

uv_bin=""
if [ -x .venv/bin/uv ]; then
  uv_bin=.venv/bin/uv
elif command -v uv >/dev/null 2>&1; then
  uv_bin=$(command -v uv)
else
  if [ ! -x .state/tools/uv/bin/uv ]; then
    echo "bootstrap: installing uv $UV_VERSION into .state/tools/uv"
    python3 -m venv .state/tools/uv
    .state/tools/uv/bin/pip install --quiet "uv==$UV_VERSION"
  fi
  uv_bin=.state/tools/uv/bin/uv
fi

groups=(--group dev)
for arg in "$@"; do
  case "$arg" in
    --bench) groups+=(--group bench) ;;
  esac
done

stamp_key=$( (sha256sum uv.lock pyproject.toml; echo "${groups[*]}") | sha256sum | cut -c1-16)
if [ ! -f ".venv/.kazi-synced-$stamp_key" ]; then
  echo "bootstrap: syncing .venv from uv.lock (${groups[*]})"
  "$uv_bin" sync --frozen --quiet --python python3.11 --no-default-groups "${groups[@]}"
  rm -f .venv/.kazi-synced-*
  touch ".venv/.kazi-synced-$stamp_key"
fi

for arg in "$@"; do
  if [ "$arg" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
    echo "bootstrap: installing Debian's chromium for the browser tests"
    if [ "$(id -u)" = 0 ]; then sudo_cmd=""; else sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq >/dev/null
    $sudo_cmd apt-get install -y -qq chromium >/dev/null
  fi
done
