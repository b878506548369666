#!/usr/bin/env bash
# Builds the citadel binary on this machine (CUDA on, portable host flags, build-srv/) and bundles it with the shared
# libraries the GPU machine may lack, so that a device call can serve without building there first (about two
# minutes of device time). The bundle holds every dependency outside glibc, libstdc++, libgcc and CUDA (libpq and
# its Kerberos / LDAP / GnuTLS chain, libyaml, libsqlite3, OpenSSL) and a wrapper that points the loader at them.
# Usage (repository root, this machine): bash scripts/gpu/bundle_server.sh   -> .gpu-server.tar.xz (an ignored path:
# pass it to the device tool's carry). On the device:
#   tar xJf .gpu-server.tar.xz && CITADEL_BIN=$PWD/.gpu-server/citadel-run bash bench/gpu/serve_bench.sh
# If the bundle does not start there (`.gpu-server/citadel-run version` fails), build on the device instead
# (scripts/gpu/build.sh citadel).
set -euo pipefail
cmake -S . -B build-srv -DCITADEL_CUDA=ON -DCITADEL_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90a -Wno-dev --log-level=WARNING \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache > /dev/null
# BUNDLE_TESTS=1: also the GPU tests and the 7B, DeepSeek and tensor-parallel benchmarks (gpu_tests, gpu_bench, ds,
# tp_bench), so that one carried file serves scripts/gpu/carried_call.sh whole.
targets=(citadel)
[ "${BUNDLE_TESTS:-0}" = 1 ] && targets+=(citadel_gpu_tests citadel_deepseek_bench citadel_tp_bench citadel_gpu_bench)
cmake --build build-srv -j"$(nproc)" --target "${targets[@]}" > build-srv/bundle-build.log 2>&1 \
  || { grep -E "error" build-srv/bundle-build.log | head -20; exit 1; }
rm -rf .gpu-server && mkdir -p .gpu-server/lib
cp build-srv/citadel .gpu-server/citadel
bins=(build-srv/citadel)
if [ "${BUNDLE_TESTS:-0}" = 1 ]; then
  cp build-srv/citadel_gpu_tests .gpu-server/gpu_tests && cp build-srv/bench/citadel_deepseek_bench .gpu-server/ds
  cp build-srv/bench/citadel_tp_bench .gpu-server/tp_bench && cp build-srv/bench/citadel_gpu_bench .gpu-server/gpu_bench
  bins+=(build-srv/citadel_gpu_tests build-srv/bench/citadel_deepseek_bench build-srv/bench/citadel_tp_bench
         build-srv/bench/citadel_gpu_bench)
fi
git rev-parse --short HEAD > .gpu-server/COMMIT
git diff --quiet HEAD -- src tests bench || echo "+ uncommitted changes" >> .gpu-server/COMMIT
# Every resolved dependency but the C runtime, the C++ runtime and CUDA's (the device has its own).
ldd "${bins[@]}" | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so|/libcu|/libnv' |
  while read -r lib; do cp -L "$lib" .gpu-server/lib/; done
cat > .gpu-server/citadel-run <<'EOF'
#!/bin/sh
d=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$d/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" exec "$d/citadel" "$@"
EOF
chmod +x .gpu-server/citadel-run
tar cJf .gpu-server.tar.xz .gpu-server
echo "bundle: .gpu-server.tar.xz ($(du -h .gpu-server.tar.xz | cut -f1); $(ls .gpu-server/lib | wc -l) libraries)"
