#!/usr/bin/env bash
# Installs what building and testing Citadel needs, if missing. Idempotent; Debian 12.
# prometheus: promtool (alert rule tests) and the prometheus binary (the scrape system test).
set -euo pipefail
pkgs=(cmake g++ make libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev clang
      libclang-rt-14-dev python3-pip libboost-dev libboost-system-dev libssl-dev openssl libsqlite3-dev libpq-dev
      postgresql prometheus)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
# Python test tools (fixture comparison and system tests); small, no model frameworks.
req="$(dirname "$0")/../tools/requirements-test.txt"
if [ -f "$req" ]; then
  python3 -m pip install -q -r "$req"
fi
