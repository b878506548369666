// The host-side proof of bench/gpu/deepseek_hf_check.py's weight mapping, with no GPU: writes the CUDA decoder's
// synthetic weights of a deepseek2 preset (runtime::synth_weight_value, the values init_synthetic generates on the
// device, element for element) as an f32 GGUF, runs Citadel's CPU exact path (fp32, the same recipe) over the HF
// check's tokens, and dumps what citadel_deepseek_bench dumps (tokens.bin, logits_prefill.bin, config.json).
// deepseek_hf_check.py --selftest-tiny then builds HF transformers' model from the same hash on the CPU and compares.
//
// The GGUF's metadata and tensor list are those `citadel synth` writes for the preset (llama.cpp's MLA layout:
// attn_k_b / attn_v_b, 3-D expert stacks); only the values change, to the hash's.
//
// Usage: citadel_deepseek_cpu_ref PRESET OUT_DIR [N_TOKENS]   (PRESET: deepseek2-tiny | deepseek3-tiny | ...)
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "format/gguf_writer.h"
#include "model/arch.h"
#include "model/synth.h"
#include "runtime/cuda_decoder.h"
#include "runtime/runner_factory.h"
#include "hf_dump.h"

using namespace citadel;

namespace {

constexpr uint32_t kSeed = 42;

Status fail(const std::string& what) { return InvalidArgument("deepseek_cpu_ref: " + what); }

// tmpl (a `citadel synth` file of the preset) with every tensor's values replaced by the synthetic hash's, as f32.
Status write_hash_gguf(const ModelConfig& c, const TensorStore& tmpl, const std::string& path) {
  const ArchSpec* arch = find_arch(c.arch);
  if (!arch) return fail("no architecture " + c.arch);
  std::map<std::string, std::pair<TensorRole, int>> role_of;  // GGUF tensor name -> (role, layer)
  for (const RoleUse& use : arch->roles)
    for (int l = 0; l < (role_info(use.role).per_layer ? int(c.n_layers) : 1); ++l)
      role_of[tensor_name(use.role, l, "gguf")] = {use.role, l};
  GgufWriter w;
  for (const auto& [key, value] : tmpl.metadata()) RETURN_IF_ERROR(w.add_meta(key, value));
  for (const TensorInfo& t : tmpl.tensors()) {
    auto it = role_of.find(t.name);
    if (it == role_of.end() || role_info(it->second.first).synth_id < 0)
      return fail("tensor " + t.name + " has no synthetic role");
    const auto [role, layer] = it->second;
    if (role_shape(c, role) != t.shape) return fail("tensor " + t.name + ": shape differs from role_shape");
    std::vector<float> v(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = runtime::synth_weight_value(c, kSeed, role, layer, static_cast<uint32_t>(i));
    RETURN_IF_ERROR(w.add_tensor(t.name, DType::kF32, t.shape, v.data(), v.size() * sizeof(float)));
  }
  return w.write_file(path);
}

// fp32 logits [n][V] of every position of one sequence on the CPU exact path.
Result<std::vector<float>> cpu_forward(const std::string& gguf, const std::vector<int32_t>& toks) {
  const int n = static_cast<int>(toks.size()), bs = 16, n_blocks = (n + bs - 1) / bs;
  ASSIGN_OR_RETURN(auto runner, runtime::make_model_runner(gguf, {.device = "cpu", .exact = true,
                                                                   .max_batched_tokens = n}));
  RETURN_IF_ERROR(runner->allocate_kv(n_blocks, bs));
  engine::Batch b;
  b.tokens = toks;
  b.block_size = bs, b.max_blocks = n_blocks;
  b.query_start = {0, n};
  b.seq_lens = {n};
  for (int i = 0; i < n_blocks; ++i) b.block_tables.push_back(i);
  for (int t = 0; t < n; ++t) {
    b.positions.push_back(t), b.seq_of_token.push_back(0), b.slots.push_back(t), b.logit_rows.push_back(t);
  }
  std::vector<float> logits(static_cast<size_t>(n) * static_cast<size_t>(runner->n_vocab()));
  RETURN_IF_ERROR(runner->forward(b, logits.data()));
  return logits;
}

Status run(const std::string& preset, const std::string& dir, int n_tokens) {
  SynthOptions so;
  so.arch = "deepseek2", so.preset = preset, so.seed = 1, so.dtype = "f32", so.out = dir + "/template.gguf";
  ASSIGN_OR_RETURN(SynthPlan plan, plan_synth(so));
  const ModelConfig c = synth_config(plan);
  if (c.n_params > (int64_t{1} << 28)) return fail(preset + " is too large for a CPU reference");
  RETURN_IF_ERROR(write_synth(so));
  ASSIGN_OR_RETURN(auto tmpl, open_gguf(so.out));
  const std::string gguf = dir + "/model.gguf";
  RETURN_IF_ERROR(write_hash_gguf(c, *tmpl, gguf));
  std::remove(so.out.c_str());
  const std::vector<int32_t> toks = benchutil::hf_check_tokens(n_tokens, c.n_vocab);
  ASSIGN_OR_RETURN(std::vector<float> logits, cpu_forward(gguf, toks));
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
