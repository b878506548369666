#include "base/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace citadel {
namespace {

CpuFeatures probe() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
#endif
  if (const char* cap = std::getenv("CITADEL_CPU")) {
    if (std::strcmp(cap, "generic") == 0) f = CpuFeatures{};
    if (std::strcmp(cap, "avx2") == 0)
      f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = f.avx512vnni = f.avx512bf16 = false;
  }
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = probe();
  return f;
}

const char* cpu_simd_level() {
  const CpuFeatures& f = cpu_features();
  if (f.has_avx512()) return "avx512";
  if (f.has_avx2_fma()) return "avx2";
  return "generic";
}

}  // namespace citadel
