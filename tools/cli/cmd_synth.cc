// citadel synth: write a deterministic random-weight GGUF at a real model's shape (src/model/synth.h).
#include <cstdio>
#include <memory>

#include "command.h"
#include "model/memory_plan.h"
#include "model/synth.h"

namespace synth_cmd {

struct SynthArgs {
  citadel::SynthOptions opts;
  bool dry_run = false;
};

int run_synth(const SynthArgs& a) {
  auto plan = citadel::plan_synth(a.opts);
  if (!plan.ok()) {
    std::fprintf(stderr, "citadel synth: %s\n", plan.status().to_string().c_str());
    return 1;
  }
  const auto& h = plan->preset;
  std::fprintf(stderr, "%s (%s): %d layers, dim %d, heads %d/%d, ffn %d, vocab %lld, %s; %zu tensors, %.4g params, %.3f GB\n",
               h.name.c_str(), h.arch.c_str(), h.n_layers, h.dim, h.n_heads, h.n_kv_heads, h.ffn_dim,
               static_cast<long long>(h.n_vocab), h.tied ? "tied" : "untied", plan->tensors.size(),
               static_cast<double>(plan->n_params), plan->data_bytes / 1e9);
  if (a.dry_run) {
    for (const auto& t : plan->tensors) {
      std::printf("%-28s %-5s [", t.name.c_str(), citadel::dtype_name(t.dtype));
      for (size_t i = 0; i < t.shape.size(); ++i) std::printf("%s%lld", i ? ", " : "", static_cast<long long>(t.shape[i]));
      std::printf("]\n");
    }
    const citadel::ModelConfig c = citadel::synth_config(*plan);
    const auto need = citadel::memory_need(c, plan->data_bytes);
    for (const auto& f : citadel::standard_fits(need, citadel::host_ram_bytes(), c.context_len)) {
      std::printf("memory: %s: %s\n", f.device.c_str(), f.verdict.c_str());
    }
    return 0;
  }
  const citadel::Status st = citadel::write_synth(a.opts);
  if (!st.ok()) {
    std::fprintf(stderr, "citadel synth: %s\n", st.to_string().c_str());
    return 1;
  }
  std::printf("%s\n", a.opts.out.c_str());
  return 0;
}

citadel::cli::Registrar reg("synth", "Write a deterministic random-weight GGUF at a real model's shape",
                            [](CLI::App& sub) {
  auto a = std::make_shared<SynthArgs>();
  sub.add_option("--arch", a->opts.arch, "llama | qwen2 | deepseek2 | gemma3 (default: the preset's; tiny: llama)");
  sub.add_option("--preset", a->opts.preset, "tiny | smollm2-135m | qwen2-0.5b | deepseek-r1-distill-qwen-7b | llama-3-8b | deepseek2-tiny | deepseek3-tiny | deepseek-v2-lite | deepseek-v3 | gemma3-tiny | gemma3-270m");
  sub.add_option("--seed", a->opts.seed, "PRNG seed (same seed, same bytes)");
  sub.add_option("--dtype", a->opts.dtype, "f32 | f16 | bf16 | q8_0 | q4_0 | q4_K");
  sub.add_option("--out", a->opts.out, "output GGUF file");
  sub.add_option("--vocab-from", a->opts.vocab_from, "copy tokenizer.* keys from this GGUF");
  sub.add_flag("--dry-run", a->dry_run, "print the tensor plan, write nothing");
  return [a] { return run_synth(*a); };
});

}  // namespace synth_cmd
