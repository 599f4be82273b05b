#!/usr/bin/env bash
# Installs headless Chromium (Debian package `chromium`) for the dashboard's
# browser tests (internal/e2e/dashboard_browser_test.go, driven by chromedp).
# Idempotent: does nothing when /usr/bin/chromium (or $CHROMIUM) exists.
set -euo pipefail
BIN=${CHROMIUM:-/usr/bin/chromium}
if [[ -x "$BIN" ]]; then
  echo ">> chromium present: $BIN ($("$BIN" --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=sudo
  else
    cat >&2 <<MSG
!! $BIN is missing and this script is not running as root.
   The dashboard browser tests need Debian's headless Chromium. Install it with:
       sudo apt-get update && sudo apt-get install -y chromium
   (or set CHROMIUM=/path/to/chromium), then run 'make test' again.
MSG
    exit 1
  fi
else
  SUDO=
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "!! $BIN is missing and apt-get is not available: install Chromium and set CHROMIUM=/path/to/chromium" >&2
  exit 1
fi
echo ">> installing chromium (Debian package) for the browser tests"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo ">> chromium installed: $("$BIN" --version 2>/dev/null || echo "$BIN")"
