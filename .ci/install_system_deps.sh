#!/bin/sh
# System packages the tests need, installed by CI as root: Debian's Chromium (tests/test_browser.py
# drives it headless; chromium-driver is there for selenium-based checks). Does nothing when both
# are present already.
set -eu

missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"

if [ -z "$missing" ]; then
    echo "install_system_deps: chromium and chromium-driver are installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_system_deps: run as root to install:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get install -y $missing
chromium --version
