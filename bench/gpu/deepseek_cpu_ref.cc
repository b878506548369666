// The host-side proof of bench/gpu/deepseek_hf_check.py's weight mapping, with no GPU: writes the CUDA decoder's
// synthetic weights of a deepseek2 preset (runtime::synth_weight_values, the values init_synthetic generates on the
// device, element for element) as a GGUF, runs Citadel's CPU exact path (fp32 activations and weights, the same
// recipe) over the HF check's tokens, and dumps what citadel_deepseek_bench dumps (tokens.bin, logits_prefill.bin,
// config.json). deepseek_hf_check.py --selftest-tiny then builds HF transformers' model from the same hash on the CPU
// and compares; at the V2-Lite shape (scripts/gpu/deepseek_hf.sh --cpu-exact) it is the exact path's row of the check.
//
// The GGUF is what `citadel synth` writes for the preset (metadata, llama.cpp's MLA layout: attn_k_b / attn_v_b,
// 3-D expert stacks) with the hash's values: f32 for tiny presets, bf16 (lossless: the values are bf16) above 2^28
// parameters. V2-Lite: a 31 GB file and about 63 GB of host memory for the f32 weights.
//
// Usage: citadel_deepseek_cpu_ref PRESET OUT_DIR [N_TOKENS]   (PRESET: deepseek2-tiny | deepseek3-tiny |
//        deepseek-v2-lite)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "backend/solo_batch.h"
#include "base/thread_pool.h"
#include "model/arch.h"
#include "model/synth.h"
#include "runtime/cuda_decoder.h"
#include "runtime/runner_factory.h"
#include "hf_dump.h"

using namespace citadel;

namespace {

constexpr uint32_t kSeed = 42;

Status fail(const std::string& what) { return InvalidArgument("deepseek_cpu_ref: " + what); }

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The (role, layer) of each tensor of the plan, checked against the role table's names and shapes.
Result<std::vector<std::pair<TensorRole, int>>> plan_roles(const ModelConfig& c, const SynthPlan& plan) {
  const ArchSpec* arch = find_arch(c.arch);
  if (!arch) return fail("no architecture " + c.arch);
  std::map<std::string, std::pair<TensorRole, int>> role_of;  // GGUF tensor name -> (role, layer)
  for (const RoleUse& use : arch->roles)
    for (int l = 0; l < (role_info(use.role).per_layer ? int(c.n_layers) : 1); ++l)
      role_of[tensor_name(use.role, l, "gguf")] = {use.role, l};
  std::vector<std::pair<TensorRole, int>> roles;
  for (const SynthTensor& t : plan.tensors) {
    auto it = role_of.find(t.name);
    if (it == role_of.end() || role_info(it->second.first).synth_id < 0)
      return fail("tensor " + t.name + " has no synthetic role");
    if (role_shape(c, it->second.first) != t.shape) return fail("tensor " + t.name + ": shape differs from role_shape");
    roles.push_back(it->second);
  }
  return roles;
}

// fp32 logits [n][V] of every position of one sequence on the CPU exact path.
Result<std::vector<float>> cpu_forward(const std::string& gguf, const std::vector<int32_t>& toks) {
  const int n = static_cast<int>(toks.size()), bs = 16, n_blocks = (n + bs - 1) / bs;
  ASSIGN_OR_RETURN(auto runner, runtime::make_model_runner(gguf, {.device = "cpu", .exact = true,
                                                                   .max_batched_tokens = n}));
  RETURN_IF_ERROR(runner->allocate_kv(n_blocks, bs));
  const engine::Batch b = engine::solo_batch(toks, 0, bs, n_blocks);
  std::vector<float> logits(static_cast<size_t>(n) * static_cast<size_t>(runner->n_vocab()));
  RETURN_IF_ERROR(runner->forward(b, logits.data()));
  return logits;
}

Status run(const std::string& preset, const std::string& dir, int n_tokens) {
  SynthOptions so;
  so.arch = "deepseek2", so.preset = preset, so.dtype = "f32", so.out = dir + "/model.gguf";
  ASSIGN_OR_RETURN(SynthPlan plan, plan_synth(so));
  if (plan.n_params > (int64_t{1} << 28)) {
    if (plan.n_params > int64_t{20000000000}) return fail(preset + " is too large for a CPU reference");
    so.dtype = "bf16";
    ASSIGN_OR_RETURN(plan, plan_synth(so));
  }
  const ModelConfig c = synth_config(plan);
  ASSIGN_OR_RETURN(const auto roles, plan_roles(c, plan));
  so.values = [&](size_t i, int64_t first, int64_t n, float* out) {  // V2-Lite: 15.7 B values, ~4 ns each
    ThreadPool::global().parallel_for(n, [&](int64_t b, int64_t e) {
      runtime::synth_weight_values(c, kSeed, roles[i].first, roles[i].second, first + b, e - b, out + b);
    }, 4096);
  };
  double t0 = now_s();
  RETURN_IF_ERROR(write_synth(so));
  std::fprintf(stderr, "%s: %s written (%s, %.1f s)\n", preset.c_str(), so.out.c_str(), so.dtype.c_str(), now_s() - t0);
  const std::vector<int32_t> toks = benchutil::hf_check_tokens(n_tokens, c.n_vocab);
  t0 = now_s();
  ASSIGN_OR_RETURN(std::vector<float> logits, cpu_forward(so.out, toks));
  std::fprintf(stderr, "%s: CPU exact forward of %d tokens (load included) %.1f s\n", preset.c_str(), n_tokens,
               now_s() - t0);
  if (so.dtype != "f32") std::remove(so.out.c_str());  // a large file, read by nothing else (the self-test reads f32)
  const std::string extra = "  \"positions\": " + std::to_string(n_tokens) +
                            ",\n  \"runs\": [\"prefill\"],\n  \"reference\": \"citadel cpu exact (fp32)\",\n";
  const std::string cfg = benchutil::deepseek_config_json(c, kSeed, extra);
  if (!benchutil::write_array(dir + "/tokens.bin", toks) ||
      !benchutil::write_array(dir + "/logits_prefill.bin", logits) ||
      !benchutil::write_bytes(dir + "/config.json", cfg.data(), cfg.size()))
    return fail("cannot write the dump in " + dir);
  return OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s PRESET OUT_DIR [N_TOKENS]\n", argv[0]);
    return 2;
  }
  const int n = argc > 3 ? std::atoi(argv[3]) : 256;
  if (n <= 0 || n > 4096) {
    std::fprintf(stderr, "N_TOKENS must be in 1..4096\n");
    return 2;
  }
  const Status st = run(argv[1], argv[2], n);
  if (!st.ok()) {
    std::fprintf(stderr, "%s\n", st.to_string().c_str());
    return 1;
  }
  std::printf("%s: %d positions written to %s\n", argv[1], n, argv[2]);
  return 0;
}
