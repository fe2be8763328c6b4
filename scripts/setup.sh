#!/usr/bin/env bash
# Installs what Backup+ needs on a fresh Debian machine: the Debian packages (redis-server;
# chromium and prometheus's promtool for the tests) and a virtualenv with the project and its
# dev tools. Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

want_debs=()
command -v redis-server >/dev/null 2>&1 || want_debs+=(redis-server)
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || want_debs+=(chromium)
  command -v promtool >/dev/null 2>&1 || want_debs+=(prometheus)
fi
if [ ${#want_debs[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${want_debs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${want_debs[@]}" >/dev/null
  # Debian's prometheus package starts its own daemons; only promtool is wanted, so stop them.
  if printf '%s\n' "${want_debs[@]}" | grep -qx prometheus; then
    pkill -x prometheus >/dev/null 2>&1 || true
    pkill -x prometheus-node-exporter >/dev/null 2>&1 || true
  fi
fi

PY=${PYTHON:-python3}
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv and installing the project with its dev tools"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
