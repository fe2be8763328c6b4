#!/usr/bin/env bash
# Installs what Backup+ needs on a fresh Debian machine: the Debian packages (redis-server, coturn; for the
# tests chromium, prometheus's promtool, iproute2, nftables, faketime, janus, firefox-esr and node),
# puppeteer-core (npm ci in tools/browser) and a virtualenv with the project and its dev tools.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

want_debs=()
command -v redis-server >/dev/null 2>&1 || want_debs+=(redis-server)
# serve starts its own TURN server (coturn's turnserver) for participants behind firewalls
command -v turnserver >/dev/null 2>&1 || want_debs+=(coturn)
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || want_debs+=(chromium)
  command -v promtool >/dev/null 2>&1 || want_debs+=(prometheus)
  # the chaos suite (tests/chaos): network namespaces and faults, a broker's clock moved
  command -v ip >/dev/null 2>&1 || want_debs+=(iproute2)
  command -v nft >/dev/null 2>&1 || want_debs+=(nftables)
  command -v faketime >/dev/null 2>&1 || want_debs+=(faketime)
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
  # Packages such as prometheus, coturn and janus would start system services on install; only their
  # binaries are wanted (the project starts its own processes). Debian's policy-rc.d mechanism keeps
  # invoke-rc.d from starting anything; an existing policy is left as it is, ours is removed after.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    own_policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# written by backupplus scripts/setup.sh for the length of one install\nexit 101\n' \
      | $SUDO tee "$own_policy" >/dev/null
    $SUDO chmod 755 "$own_policy"
    trap '$SUDO rm -f "$own_policy"' EXIT
  fi
  $SUDO apt-get update -qq
  status=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${want_debs[@]}" >/dev/null || status=$?
  if [ -n "$own_policy" ]; then $SUDO rm -f "$own_policy"; trap - EXIT; fi
  [ "$status" -eq 0 ] || exit "$status"
  # coturn's package enables its system service for the next boot: serve owns its own turnserver, a
  # system one would hold ports 3478/5349. Disabled (and stopped) where systemd runs.
  if [[ " ${want_debs[*]} " == *" coturn "* ]] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now coturn >/dev/null 2>&1 || true
  fi
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
