#!/usr/bin/env bash
# Installs what Backup+ needs on a fresh Debian machine: the Debian packages (redis-server; for the
# tests chromium, prometheus's promtool, janus, firefox-esr and node), puppeteer-core (npm ci in
# tools/browser) and a virtualenv with the project and its dev tools. Idempotent and quick when
# everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

want_debs=()
command -v redis-server >/dev/null 2>&1 || want_debs+=(redis-server)
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || want_debs+=(chromium)
  command -v promtool >/dev/null 2>&1 || want_debs+=(prometheus)
  # the side-by-side media benchmark (benchmarks/peers.py) starts its own Janus
  command -v janus >/dev/null 2>&1 || want_debs+=(janus)
  # the join page's tests and join-time benchmark in Firefox, driven by puppeteer-core (tools/browser)
  command -v firefox-esr >/dev/null 2>&1 || want_debs+=(firefox-esr)
  command -v node >/dev/null 2>&1 || want_debs+=(nodejs)
  command -v npm >/dev/null 2>&1 || want_debs+=(npm)
fi
if [ ${#want_debs[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${want_debs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # Only the programs are wanted, no system service: Debian's packages of prometheus and janus would
  # start theirs. A policy-rc.d that answers 101 ("action forbidden") keeps invoke-rc.d and
  # deb-systemd-invoke from starting anything during the install (Debian policy, section 9.3.3); it
  # is removed afterwards unless the machine already had one.
  policy=/usr/sbin/policy-rc.d
  own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${want_debs[@]}" >/dev/null || status=$?
  [ -z "$own_policy" ] || $SUDO rm -f "$policy"
  [ "$status" -eq 0 ] || exit "$status"
fi

if [ "${1:-}" = "--test" ] && [ -f tools/browser/package-lock.json ]; then
  lock=tools/browser/node_modules/.installed-$(sha256sum tools/browser/package-lock.json | cut -c1-16)
  if [ ! -f "$lock" ]; then
    echo "setup: npm ci in tools/browser (puppeteer-core, no browser download)"
    (cd tools/browser && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$lock"
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
