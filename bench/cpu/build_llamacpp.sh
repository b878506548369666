#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, the peer of bench/cpu/vs_llamacpp.sh (and llama-quantize, which makes its Q4_K_M /
# Q6_K files), from the llama.cpp sources vendored in
# llama-cpp-python's source distribution on PyPI, with its native CPU paths (GGML_NATIVE: -march=native, so AVX-512 /
# VNNI / BF16 where the CPU has them; GGML's CPU repacking of q4_0 is on by default). Outside the repository.
#
#   bench/cpu/build_llamacpp.sh [DIR]    -> DIR/build/bin/llama-bench   (DIR default /work/llamacpp)
#   env: LLAMA_CPP_PYTHON_VERSION=0.3.36  JOBS=2
set -euo pipefail
dir=${1:-/work/llamacpp}
ver=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
mkdir -p "$dir"
cd "$dir"
[ -f "llama_cpp_python-$ver.tar.gz" ] || pip download --no-binary :all: --no-deps "llama-cpp-python==$ver" -d .
[ -d "llama_cpp_python-$ver" ] || tar xzf "llama_cpp_python-$ver.tar.gz"
cmake -S "llama_cpp_python-$ver/vendor/llama.cpp" -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
cmake --build build -j"${JOBS:-2}" --target llama-bench llama-quantize
echo "built $dir/build/bin/llama-bench and llama-quantize"
