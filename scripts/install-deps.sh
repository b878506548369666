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
# Helm's lint for deploy/helm (tools/helm_lint.py): no helm executable comes from the registries reached here, but
# the PyPI wheel helm-sdkpy ships Helm v4 as a shared library. Its Python layer wants Python >= 3.12, so only the
# library is taken from the wheel (about 47 MB to fetch, 122 MB unpacked).
helm_lib=${CITADEL_HELM_LIB:-$HOME/.cache/citadel/helm/libhelm_sdkpy.so}
if [ "$what" = test ] && [ ! -f "$helm_lib" ]; then
  tmp=$(mktemp -d)
  if python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
       --platform any -d "$tmp" helm-sdkpy==0.1.32; then
    mkdir -p "$(dirname "$helm_lib")"
    python3 - "$tmp"/helm_sdkpy-*.whl "$helm_lib" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so") as src:
    with open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    mv "$helm_lib.part" "$helm_lib"
  else
    echo "install-deps: helm-sdkpy not fetched: the helm lint test will skip" >&2
  fi
  rm -rf "$tmp"
fi
