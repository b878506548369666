#!/usr/bin/env bash
# Installs what Citadel needs, if missing. Idempotent; Debian 12.
#   install-deps.sh run    what building the server needs (make run)
#   install-deps.sh test   that, plus the test libraries, servers and Python tools (make test; the default)
set -euo pipefail
what=${1:-test}
pkgs=(cmake g++ make libcli11-dev nlohmann-json3-dev libboost-dev libboost-system-dev libssl-dev openssl
      libsqlite3-dev libpq-dev libyaml-dev)
if [ "$what" = test ]; then
  # prometheus: promtool (alert rule tests) and the server (the scrape test); nginx-light: the replicas test
  pkgs+=(libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev python3-pip postgresql prometheus
         nginx-light)
fi
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
if [ "$what" = test ] && [ -f "$req" ]; then
  python3 -m pip install -q -r "$req"
fi
