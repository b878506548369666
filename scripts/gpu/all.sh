#!/usr/bin/env bash
# Everything this session's GPU work needs, in parts, one build for all (scripts/gpu/build.sh into build-gpu, which
# stays between calls while the machine is warm). Usage (repository root on the GPU machine):
#   OUT=... bash scripts/gpu/all.sh PART...   PART: build tests serve[:LABEL[:flag,flag...]] load deepseek embed nvml mixed
#   dsbench[:LABEL[:VAR=VAL,...]] dsncu[:MODE,...[:VAR=VAL,...]] micro moevar
#   cpukernels (the CPU kernel tests and K-quant GEMVs on the GPU host's CPU) vsllama (bench/cpu/vs_llamacpp.sh there)
#   tp (scripts/gpu/tp_proof.sh: tensor parallelism, a dry run on one GPU, the proof on several)
#   base (extracts .gpu_base.tgz, `git archive --format=tar.gz --prefix=base/ REV` of a base commit carried along, to
#   /tmp/base and builds $BASE_TARGETS there: before / after in one call)
#   pack (last: every file under $OUT into $OUT/all.tgz, since the device tool brings back only a few files)
# A part that fails is reported and the next one runs. Each part's wall time is printed.
set -uo pipefail
OUT=${OUT:-/tmp/citadel_gpu_out}
mkdir -p "$OUT"
echo "commit $(cat .gpu_commit 2>/dev/null || git rev-parse HEAD); $(nvidia-smi --query-gpu=name --format=csv,noheader)"
MODEL=/tmp/m/deepseek-r1-distill-qwen-7b-f16.gguf
for part in "$@"; do
  t0=$(date +%s)
  case $part in
    build) bash scripts/gpu/build.sh citadel citadel_gpu_tests citadel_gpu_bench citadel_deepseek_bench \
             citadel_deepseek_cpu_ref citadel_load_bench citadel_nvml_tests citadel_embed_bench citadel_tp_bench \
             ${EXTRA_TARGETS:-};;
    tests) timeout 300 ./build-gpu/citadel_gpu_tests --gtest_filter="${GPU_TEST_FILTER:-*}" > "$OUT/gpu_tests.log" 2>&1
           echo "gpu tests rc=$?"
           grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|Which is" "$OUT/gpu_tests.log" | head -40;;
    serve*) IFS=: read -r _ label flags <<< "$part"
            timeout 420 bash bench/gpu/serve_bench.sh "${label:-default}" ${flags//,/ };;
    load) MODEL=$MODEL timeout 300 bash bench/gpu/load.sh;;
    deepseek) timeout 400 bash scripts/gpu/deepseek_hf.sh;;
    embed) timeout 300 bash bench/gpu/embed.sh;;
    nvml) ./build-gpu/citadel_nvml_tests > "$OUT/nvml_tests.log" 2>&1; echo "nvml tests rc=$?"
          grep -E "^\[  (FAILED|PASSED|SKIPPED|     OK) " "$OUT/nvml_tests.log" | head;;
    mixed) CITADEL_BENCH_MIXED=1 timeout 240 ./build-gpu/bench/citadel_gpu_bench "$OUT/mixed_step.json" > /dev/null \
             2> "$OUT/mixed_step.log"; echo "mixed bench rc=$?"; grep -E "mixed step|error" "$OUT/mixed_step.log";;
    base) rm -rf /tmp/base && mkdir -p /tmp/base && tar xzf .gpu_base.tgz -C /tmp && cp -r .gpu-deps /tmp/base/ \
            && (cd /tmp/base && OUT=$OUT/base bash scripts/gpu/build.sh ${BASE_TARGETS:-citadel_deepseek_bench});;
    dsbench*) IFS=: read -r _ label envs <<< "$part"  # dsbench:LABEL[:VAR=VAL,...]: the DeepSeek-V2-Lite bench
              bin=./build-gpu/bench/citadel_deepseek_bench  # LABEL base*: the base build's (part `base`)
              [[ $label == base* ]] && bin=/tmp/base/build-gpu/bench/citadel_deepseek_bench
              env ${envs//,/ } timeout 240 $bin "$OUT/deepseek_${label:-default}.json" \
                > /dev/null 2> "$OUT/deepseek_${label:-default}.log"
              echo "deepseek bench ${label:-default} rc=$?"; grep -E "share of|error" "$OUT/deepseek_${label:-default}.log"
              grep -E "tok_s|ratio" "$OUT/deepseek_${label:-default}.json";;
    dsncu*) IFS=: read -r _ modes envs <<< "$part"  # dsncu[:MODE,MODE[:VAR=VAL,...]]: per-kernel times of one step
            env ${envs//,/ } bash bench/gpu/deepseek_ncu.sh "$OUT" ${modes//,/ };;
    moevar) CITADEL_BENCH_MOE_VARIANTS=1 timeout 200 ./build-gpu/bench/citadel_deepseek_bench > /dev/null \
              2> "$OUT/moe_variants.log"; echo "moe variants rc=$?"; cat "$OUT/moe_variants.log";;
    micro) CITADEL_BENCH_MICRO=1 timeout 200 ./build-gpu/bench/citadel_gpu_bench > /dev/null 2> "$OUT/micro.log"
           echo "micro bench rc=$?"; cat "$OUT/micro.log";;
    cpukernels) # the CPU kernel tests and the interleaved K-quant GEMV before / after on this host's CPU (AVX-512 / AMX
      # paths the development machine may lack): build-gpu/citadel_cpu_kernel_tests, bench/kernels_bench
      echo "host CPU: $(lscpu | sed -n 's/^Model name: *//p'); $(grep -o -w 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
      bash scripts/gpu/build.sh citadel_cpu_kernel_tests \
        && { ./build-gpu/citadel_cpu_kernel_tests > "$OUT/cpu_kernel_tests.log" 2>&1; echo "cpu kernel tests rc=$?"
             grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|Expected|Which is" "$OUT/cpu_kernel_tests.log" | head -30; }
      # KBENCH_TOGGLE: the variable set on / off for before / after (CITADEL_CPU_AMX for the AMX prompt GEMM)
      tg=${KBENCH_TOGGLE:-CITADEL_CPU_INTERLEAVE}
      bash scripts/gpu/build.sh kernels_bench && for v in on off; do
        env CITADEL_THREADS=2 $tg=$v ./build-gpu/bench/kernels_bench --benchmark_filter="${KBENCH_FILTER:-gemv/1[24]/}" \
          --benchmark_out="$OUT/kernels_bench_${tg}_$v.json" --benchmark_out_format=json 2>&1 | grep -E "gemv|prefill" | head -20
      done;;
    vsllama) # bench/cpu/vs_llamacpp.sh on this host's CPU against llama.cpp's llama-bench / llama-quantize, built on
      # the development machine for this CPU type (AVX-512 / VNNI / BF16, AMX off: the issue's peer) and carried as
      # .gpu-llama.tar.xz; citadel with AMX (default) and without it (citadel_base, CITADEL_CPU_AMX=off). The real
      # SmolLM2-135M Q4_1 file (too large for one call's carry) travels in two halves, .gpu-smol-a and .gpu-smol-b,
      # in two calls on the same warm machine, checked against .gpu-smol.sha256.
      mkdir -p /tmp/llama && tar xJf .gpu-llama.tar.xz -C /tmp/llama
      models="smollm2-135m:q4_0 smollm2-135m:q8_0 smollm2-135m:f16 qwen2-0.5b:q4_0 qwen2-0.5b:q8_0"
      if [ -f .gpu-smol-a ] && [ -f .gpu-smol-b ]; then
        mkdir -p /tmp/m && cat .gpu-smol-a .gpu-smol-b > /tmp/m/SmolLM2-135M-Instruct.Q4_1.gguf
        if [ "$(sha256sum /tmp/m/SmolLM2-135M-Instruct.Q4_1.gguf | cut -d' ' -f1)" = "$(cat .gpu-smol.sha256)" ]; then
          models="/tmp/m/SmolLM2-135M-Instruct.Q4_1.gguf $models"
        else echo "SmolLM2 halves do not match their checksum: left out"; fi
      fi
      bash scripts/gpu/build.sh citadel cpu_model_bench \
        && LLAMA_BENCH=/tmp/llama/llama-bench BASE_ENV="CITADEL_CPU_AMX=off" ROUNDS=${VS_ROUNDS:-3} \
           MODELS=${VS_MODELS:-$models} OUT=$OUT/vs_llamacpp.json BENCH_DIR=/tmp/vsb timeout ${VS_TIMEOUT:-420} \
           bash bench/cpu/vs_llamacpp.sh build-gpu 2> "$OUT/vs_llamacpp.log"
      echo "vs llama.cpp rc=$?"; tail -3 "$OUT/vs_llamacpp.log"
      cp /tmp/vsb/vs_llamacpp.jsonl "$OUT/" 2>/dev/null;;  # every run's line, also when the timeout cut it short
    tp) bash scripts/gpu/build.sh citadel_gpu_tests citadel_tp_bench && bash scripts/gpu/tp_proof.sh;;
    pack) tar czf /tmp/all.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/all.tgz "$OUT/";;
    *) echo "unknown part $part";;
  esac
  echo "== part $part: $(( $(date +%s) - t0 )) s"
done
