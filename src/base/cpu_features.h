// What the CPU we run on can do, probed once (cpuid via the compiler's builtins); used to pick SIMD kernels at run
// time so one binary runs on any x86-64 (and builds elsewhere, where everything reads false).
// $CITADEL_CPU=generic (or avx2) caps the level, for testing the fallbacks and before/after benchmarks on one binary. Thread-safe (immutable after first use).
#pragma once

namespace citadel {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512dq = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;  // vdpbf16ps (AMD Zen 4, Intel Cooper Lake / Sapphire Rapids)
  bool avx512vbmi = false;  // vpermb / vpermt2b
  // AMX tiles with int8 products (Intel Sapphire Rapids on), usable: the CPU has them, the OS saves the tile state
  // (XCR0) and granted this process the tile data (arch_prctl ARCH_REQ_XCOMP_PERM, asked once by cpu_features()).
  bool amx_int8 = false;

  bool has_avx2_fma() const { return avx2 && fma && f16c; }
  bool has_avx512() const { return has_avx2_fma() && avx512f && avx512bw && avx512vl && avx512dq; }
  bool has_avx512_bf16() const { return has_avx512() && avx512bf16; }
  // What the AMX prompt GEMM needs besides the tiles: AVX-512 VNNI / VBMI for its packing and scaling.
  bool has_amx_int8() const { return has_avx512() && avx512vnni && avx512vbmi && amx_int8; }
};

const CpuFeatures& cpu_features();

// "avx512", "avx2" or "generic": the level the kernels use.
const char* cpu_simd_level();

}  // namespace citadel
