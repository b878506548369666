#include "model/synth.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "base/half.h"
#include "base/sha256.h"
#include "base/subprocess.h"
#include "format/tensor_store.h"
#include "kernels/quant/quant.h"
#include "model/config.h"
#include "model/memory_plan.h"
#include "tests/test_util.h"

namespace citadel {
namespace {
namespace fs = std::filesystem;

std::string tmp(const std::string& n) {
  return (fs::temp_directory_path() / ("citadel_synth_" + std::to_string(getpid()) + "_" + n)).string();
}

std::string synth_sha(const std::string& dtype, uint64_t seed, const std::string& arch = "") {
  SynthOptions o;
  o.preset = "tiny";
  o.arch = arch;
  o.dtype = dtype;
  o.seed = seed;
  o.out = tmp(dtype + "_" + std::to_string(seed) + arch + ".gguf");
  const Status st = write_synth(o);
  EXPECT_TRUE(st.ok()) << st.to_string();
  auto h = sha256_file(o.out);
  fs::remove(o.out);
  return h.ok() ? *h : "";
}

TEST(Synth, SameSeedSameBytesDifferentSeedDifferent) {
  for (const char* dt : {"f32", "f16", "bf16"}) {
    const std::string a = synth_sha(dt, 7), b = synth_sha(dt, 7), c = synth_sha(dt, 8);
    EXPECT_EQ(a, b) << dt;
    EXPECT_NE(a, c) << dt;
  }
  EXPECT_NE(synth_sha("f32", 7, "llama"), synth_sha("f32", 7, "qwen2"));
}

// Pins the bytes: a change to the generator, the vocab or the writer shows up here. If the change is intended,
// regenerate with `citadel synth --preset tiny --seed 1 --dtype f32 --out x.gguf && sha256sum x.gguf` and check
// the file with python gguf (ReadBackByPythonGguf) before updating.
// This pin is what makes "same bytes on any machine and compiler" testable: CI and the GPU box build with other
// compilers and flags than the machine that produced it.
TEST(Synth, TinyDigestIsStable) {
  EXPECT_EQ(synth_sha("f32", 1), "b1525ecb73a7fc6f4b38638e53c65702f9055fd18830019294e02111c4fbe876");
  EXPECT_EQ(synth_sha("bf16", 1), "826961bdde75a86760797202938cd3e5c112e4a884346b4e498889324b2d43f5");
}

TEST(Synth, QuantizedDtypesAreDeterministic) {
  for (const char* dt : {"q8_0", "q4_0", "q4_K"}) {
    EXPECT_EQ(synth_sha(dt, 3), synth_sha(dt, 3)) << dt;
    EXPECT_NE(synth_sha(dt, 3), synth_sha(dt, 4)) << dt;
  }
  SynthOptions o;
  o.dtype = "f8";
  o.out = tmp("q.gguf");
  EXPECT_EQ(write_synth(o).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(o.out));
}

// The written file reads back through our own reader with the planned names, dtypes and shapes; quantized rows
// decode to values close to the f32 file of the same seed (the quantizer encodes the same generated values).
TEST(Synth, ReadsBackAndQuantizedMatchesF32) {
  SynthOptions o;
  o.preset = "tiny";
  o.seed = 5;
  o.dtype = "f32";
  o.out = tmp("rb_f32.gguf");
  ASSERT_TRUE(write_synth(o).ok());
  o.dtype = "q8_0";
  o.out = tmp("rb_q8.gguf");
  ASSERT_TRUE(write_synth(o).ok());
  auto f32 = open_gguf(tmp("rb_f32.gguf"));
  auto q8 = open_gguf(o.out);
  ASSERT_TRUE(f32.ok()) << f32.status().to_string();
  ASSERT_TRUE(q8.ok()) << q8.status().to_string();
  auto plan = plan_synth(o);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ((*q8)->tensors().size(), plan->tensors.size());
  for (const auto& t : plan->tensors) {
    const TensorInfo* a = (*f32)->find(t.name);
    const TensorInfo* b = (*q8)->find(t.name);
    ASSERT_TRUE(a && b) << t.name;
    EXPECT_EQ(b->shape, t.shape) << t.name;
    EXPECT_EQ(b->dtype, t.dtype) << t.name;
    std::vector<float> x(a->numel()), y(b->numel());
    ASSERT_TRUE(dequantize_row(a->dtype, a->data, x.data(), a->numel()).ok());
    ASSERT_TRUE(dequantize_row(b->dtype, b->data, y.data(), b->numel()).ok());
    double err = 0, ref = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      err += (x[i] - y[i]) * double(x[i] - y[i]);
      ref += double(x[i]) * x[i];
    }
    EXPECT_LT(err / ref, 1e-4) << t.name;
  }
  EXPECT_EQ((*q8)->meta_string("general.architecture").value_or(""), "llama");
  fs::remove(tmp("rb_f32.gguf"));
  fs::remove(o.out);
}

// SynthOptions::values replaces the random init element for element (across the writer's chunks of 2^18 values:
// the embedding of 5000 x 64 spans two), and bf16 encodes it by round-to-nearest-even.
TEST(Synth, ValuesHookGivesEveryElement) {
  for (const char* dt : {"f32", "bf16"}) {
    SynthOptions o;
    o.arch = "deepseek2", o.preset = "deepseek2-tiny", o.dtype = dt, o.n_vocab = 5000;
    o.out = tmp(std::string("values_") + dt);
    auto value = [](size_t index, int64_t i) { return float(index) + 0.5f + float(i % 1000) * 0.001f; };
    o.values = [&](size_t index, int64_t first, int64_t n, float* out) {
      for (int64_t j = 0; j < n; ++j) out[j] = value(index, first + j);
    };
    ASSERT_TRUE(write_synth(o).ok());
    auto plan = plan_synth(o);
    auto store = open_gguf(o.out);
    ASSERT_TRUE(plan.ok() && store.ok());
    for (size_t k = 0; k < plan->tensors.size(); ++k) {
      const TensorInfo* t = (*store)->find(plan->tensors[k].name);
      ASSERT_NE(t, nullptr) << plan->tensors[k].name;
      std::vector<float> got(static_cast<size_t>(t->numel()));
      ASSERT_TRUE(dequantize_row(t->dtype, t->data, got.data(), t->numel()).ok());
      for (int64_t i = 0; i < t->numel(); ++i) {
        const float want = t->dtype == DType::kF32 ? value(k, i) : bf16_to_f32(f32_to_bf16(value(k, i)));
        ASSERT_EQ(got[static_cast<size_t>(i)], want) << t->name << " element " << i;
      }
    }
    fs::remove(o.out);
  }
}

TEST(Synth, VocabFromCopiesTokenizer) {
  const std::string real = testing::model_file("SmolLM2-135M-Instruct.Q4_1.gguf");
  if (real.empty()) GTEST_SKIP() << "SmolLM2-135M-Instruct.Q4_1.gguf not present";
  SynthOptions o;
  o.preset = "tiny";
  o.vocab_from = real;
  o.out = tmp("vocab.gguf");
  ASSERT_TRUE(write_synth(o).ok());
  auto s = open_gguf(o.out);
  auto r = open_gguf(real);
  ASSERT_TRUE(s.ok() && r.ok());
  EXPECT_EQ((*s)->find("token_embd.weight")->shape[0], 49152);
  EXPECT_EQ((*s)->meta_string("tokenizer.ggml.pre"), (*r)->meta_string("tokenizer.ggml.pre"));
  EXPECT_EQ((*s)->meta("tokenizer.ggml.merges")->as_array()->size(), (*r)->meta("tokenizer.ggml.merges")->as_array()->size());
  fs::remove(o.out);
}

TEST(Synth, RejectsBadOptions) {
  SynthOptions o;
  o.preset = "nope";
  EXPECT_FALSE(plan_synth(o).ok());
  o.preset = "qwen2-0.5b";
  o.arch = "llama";
  EXPECT_FALSE(plan_synth(o).ok());
  o.arch = "mamba";
  EXPECT_FALSE(plan_synth(o).ok());
  o.arch = "";
  o.out = "";
  EXPECT_FALSE(write_synth(o).ok());
}

// The plan matches the tensor names and shapes of the real GGUF (header dumped by tools/reference/gguf_tensor_plan.py).
void expect_plan_matches(const std::string& preset, const std::string& fixture) {
  std::ifstream f(testing::golden("model/" + fixture));
  ASSERT_TRUE(f.good()) << fixture;
  const auto j = nlohmann::json::parse(f);
  SynthOptions o;
  o.preset = preset;
  o.dtype = "bf16";
  auto plan = plan_synth(o);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_EQ(plan->n_params, j["n_params"].get<int64_t>());
  std::map<std::string, std::vector<int64_t>> want;
  for (const auto& t : j["tensors"]) want[t["name"]] = t["shape"].get<std::vector<int64_t>>();
  ASSERT_EQ(plan->tensors.size(), want.size());
  for (const auto& t : plan->tensors) {
    auto it = want.find(t.name);
    ASSERT_NE(it, want.end()) << t.name;
    EXPECT_EQ(t.shape, it->second) << t.name;
  }
  const auto& kv = j["kv"];
  const std::string a = kv["general.architecture"];
  const SynthPreset& h = plan->preset;
  EXPECT_EQ(h.arch, a);
  EXPECT_EQ(h.n_layers, kv[a + ".block_count"].get<int>());
  EXPECT_EQ(h.context_length, kv[a + ".context_length"].get<int64_t>());
  EXPECT_EQ(h.n_heads, kv[a + ".attention.head_count"].get<int>());
  EXPECT_EQ(h.n_kv_heads, kv[a + ".attention.head_count_kv"].get<int>());
  EXPECT_FLOAT_EQ(h.rope_theta, kv[a + ".rope.freq_base"].get<float>());
  EXPECT_FLOAT_EQ(h.rms_eps, kv[a + ".attention.layer_norm_rms_epsilon"].get<float>());
  EXPECT_EQ(h.n_vocab, kv["n_vocab"].get<int64_t>());
}

TEST(Synth, DeepSeek7bPlanMatchesRealHeader) {
  expect_plan_matches("deepseek-r1-distill-qwen-7b", "deepseek_r1_distill_qwen_7b_plan.json");
  SynthOptions o;
  o.preset = "deepseek-r1-distill-qwen-7b";
  o.dtype = "bf16";
  auto plan = plan_synth(o);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->n_params, 7615616512);  // ~7.62e9
  // Norms and biases are f32 (4 bytes), the rest bf16 (2 bytes).
  const uint64_t f32_elems = 28ull * (2 * 3584 + 3584 + 2 * 512) + 3584;
  EXPECT_EQ(plan->data_bytes, 2ull * 7615616512 + 2 * f32_elems);
}

TEST(Synth, SmolLM2PlanMatchesRealHeader) {
  expect_plan_matches("smollm2-135m", "smollm2_135m_plan.json");
}

TEST(Synth, ReadBackByPythonGguf) {
  auto probe = run_process({"python3", "-c", "import gguf, numpy"});
  if (!probe.ok() || probe->exit_code != 0) GTEST_SKIP() << "python3 with the gguf package is not available";
  SynthOptions o;
  o.preset = "tiny";
  o.arch = "qwen2";
  o.dtype = "f16";
  o.seed = 3;
  o.out = tmp("py.gguf");
  ASSERT_TRUE(write_synth(o).ok());
  const char* script = R"PY(
import json, sys, gguf, numpy as np
r = gguf.GGUFReader(sys.argv[1])
kv = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.") and k != "tokenizer.ggml.merges"}
kv["n_tokens"] = len(kv.pop("tokenizer.ggml.tokens"))
kv.pop("tokenizer.ggml.token_type")
ts = {}
for t in r.tensors:
    d = np.array(t.data, dtype=np.float64)
    ts[t.name] = {"shape": [int(x) for x in reversed(list(t.shape))], "type": int(t.tensor_type),
                  "mean": float(d.mean()), "std": float(d.std())}
print(json.dumps({"kv": kv, "tensors": ts}))
)PY";
  auto r = run_process({"python3", "-c", script, o.out});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->exit_code, 0) << r->output;
  const auto j = nlohmann::json::parse(r->output.substr(r->output.find('{')));
  const auto& kv = j["kv"];
  EXPECT_EQ(kv["general.architecture"], "qwen2");
  EXPECT_EQ(kv["qwen2.block_count"], 2);
  EXPECT_EQ(kv["qwen2.embedding_length"], 64);
  EXPECT_EQ(kv["qwen2.attention.head_count_kv"], 2);
  EXPECT_EQ(kv["tokenizer.ggml.model"], "gpt2");
  EXPECT_EQ(kv["n_tokens"], builtin_vocab().tokens.size());
  EXPECT_EQ(kv["tokenizer.ggml.eos_token_id"], builtin_vocab().eos_id);
  const auto& ts = j["tensors"];
  EXPECT_EQ(ts.size(), 2u + 2u * 12u);  // embd, output_norm; per layer 9 + 3 biases (tied: no output.weight)
  EXPECT_EQ(ts["blk.1.attn_k.bias"]["shape"], nlohmann::json::array({32}));
  EXPECT_EQ(ts["blk.0.ffn_down.weight"]["shape"], nlohmann::json::array({64, 128}));
  EXPECT_EQ(ts["blk.0.ffn_down.weight"]["type"], 1);
  EXPECT_EQ(ts["blk.0.attn_norm.weight"]["type"], 0);
  // Statistics: weights ~ N(0, 1/fan_in), norms ~ 1.
  EXPECT_NEAR(ts["blk.0.ffn_down.weight"]["std"].get<double>(), 1.0 / std::sqrt(128.0), 0.01);
  EXPECT_NEAR(ts["blk.0.attn_q.weight"]["mean"].get<double>(), 0.0, 0.01);
  EXPECT_NEAR(ts["blk.0.attn_norm.weight"]["mean"].get<double>(), 1.0, 0.01);
  fs::remove(o.out);
}

TEST(Synth, BuiltinVocabIsByteLevelBpe) {
  const BuiltinVocab& v = builtin_vocab();
  EXPECT_EQ(v.tokens[' '], "\xC4\xA0");   // 'Ġ'
  EXPECT_EQ(v.tokens['\n'], "\xC4\x8A");  // 'Ċ'
  EXPECT_EQ(v.tokens['A'], "A");
  EXPECT_GT(v.merges.size(), 100u);
  EXPECT_EQ(v.tokens[v.eos_id], "<|im_end|>");
  EXPECT_EQ(v.tokens[v.bos_id], "<|endoftext|>");
  EXPECT_EQ(v.tokens.size(), v.token_types.size());
  // Every merge's parts and result are tokens.
  std::map<std::string, int> ids;
  for (size_t i = 0; i < v.tokens.size(); ++i) ids[v.tokens[i]] = static_cast<int>(i);
  for (const auto& m : v.merges) {
    const size_t sp = m.find(' ');
    ASSERT_NE(sp, std::string::npos);
    EXPECT_TRUE(ids.count(m.substr(0, sp)) && ids.count(m.substr(sp + 1)) && ids.count(m.substr(0, sp) + m.substr(sp + 1)))
        << m;
  }
}

}  // namespace
}  // namespace citadel

namespace citadel {
namespace {

// DeepSeek-V2-Lite and V3 shapes: the parameter counts transformers gives the real configs
// (tools/reference/make_deepseek_fixtures.py); the V2-Lite KV row is 576 values per token and layer.
TEST(Synth, DeepSeekPresetsMatchTransformersParameterCounts) {
  std::ifstream f(testing::golden("model/deepseek_shapes.json"));
  ASSERT_TRUE(f.good());
  const auto j = nlohmann::json::parse(f);
  for (const char* preset : {"deepseek-v2-lite", "deepseek-v3"}) {
    SynthOptions o;
    o.preset = preset;
    o.dtype = "bf16";
    auto plan = plan_synth(o);
    ASSERT_TRUE(plan.ok()) << plan.status().to_string();
    EXPECT_EQ(plan->n_params, j[preset]["n_params"].get<int64_t>()) << preset;
  }
  SynthOptions o;
  o.preset = "deepseek-v2-lite";
  auto plan = plan_synth(o);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->preset.mla.kv_lora_rank + plan->preset.mla.qk_rope_dim, 576);
  o.arch = "llama";
  EXPECT_FALSE(plan_synth(o).ok());  // the preset is deepseek2
  o.preset = "tiny";
  o.arch = "deepseek2";
  EXPECT_FALSE(plan_synth(o).ok());  // deepseek2 needs a deepseek preset
}

}  // namespace
}  // namespace citadel

namespace citadel {
namespace {

// synth_config gives the config the written file gives, so plans of unwritable shapes are right.
TEST(Synth, ConfigWithoutWritingEqualsTheFilesConfig) {
  for (const char* preset : {"deepseek2-tiny", "deepseek3-tiny", "tiny", "gemma3-tiny"}) {
    SynthOptions o;
    o.preset = preset;
    o.dtype = "f32";
    o.out = tmp(std::string(preset) + ".gguf");
    ASSERT_TRUE(write_synth(o).ok());
    auto plan = plan_synth(o);
    ASSERT_TRUE(plan.ok());
    const ModelConfig want = *model_config_from(**open_model_file(o.out));
    const ModelConfig got = synth_config(*plan);
    EXPECT_EQ(got.arch, want.arch);
    for (auto [a, b] : {std::pair{got.n_layers, want.n_layers}, {got.dim, want.dim}, {got.n_heads, want.n_heads},
                        {got.n_kv_heads, want.n_kv_heads}, {got.head_dim, want.head_dim}, {got.ffn_dim, want.ffn_dim},
                        {got.n_vocab, want.n_vocab}, {got.rope_dim, want.rope_dim}, {got.n_params, want.n_params},
                        {got.mla.kv_lora_rank, want.mla.kv_lora_rank}, {got.mla.q_lora_rank, want.mla.q_lora_rank},
                        {got.moe.n_experts, want.moe.n_experts}, {got.moe.n_group, want.moe.n_group}}) {
      EXPECT_EQ(a, b) << preset;
    }
    EXPECT_EQ(got.rope_type, want.rope_type) << preset;
    EXPECT_EQ(got.rope_scaling.type, want.rope_scaling.type) << preset;
    EXPECT_EQ(got.sliding_window, want.sliding_window) << preset;
    EXPECT_EQ(got.swa_pattern, want.swa_pattern) << preset;
    EXPECT_EQ(got.rope_theta_swa, want.rope_theta_swa) << preset;
    EXPECT_NEAR(attention_scale(got), attention_scale(want), 1e-6) << preset;
    std::filesystem::remove(o.out);
  }
}

// The gemma3-270m preset against the real GGUF's header (tests/golden/format/gemma-3-270m-q4_k_m.gguf.json, dumped
// by gguf-py): every tensor name and shape, the parameter count and the hyper-parameters; the written file of the
// tiny preset is a gemma3 model with its local / global layers.
TEST(Synth, Gemma3PresetsMatchTheRealHeader) {
  std::ifstream f(testing::golden("format/gemma-3-270m-q4_k_m.gguf.json"));
  ASSERT_TRUE(f.good());
  const auto j = nlohmann::json::parse(f);
  SynthOptions o;
  o.preset = "gemma3-270m";
  o.dtype = "bf16";
  auto plan = plan_synth(o);
  ASSERT_TRUE(plan.ok()) << plan.status().to_string();
  std::map<std::string, std::vector<int64_t>> want;
  int64_t n_params = 0;
  for (const auto& t : j["tensors"]) {
    want[t["name"]] = t["shape"].get<std::vector<int64_t>>();
    int64_t n = 1;
    for (int64_t d : want[t["name"]]) n *= d;
    n_params += n;
  }
  ASSERT_EQ(plan->tensors.size(), want.size());
  for (const auto& t : plan->tensors) {
    auto it = want.find(t.name);
    ASSERT_NE(it, want.end()) << t.name;
    EXPECT_EQ(t.shape, it->second) << t.name;
  }
  EXPECT_EQ(plan->n_params, n_params);
  const auto& kv = j["metadata"];
  const ModelConfig c = synth_config(*plan);
  EXPECT_EQ(c.n_layers, kv["gemma3.block_count"]["value"].get<int64_t>());
  EXPECT_EQ(c.context_len, kv["gemma3.context_length"]["value"].get<int64_t>());
  EXPECT_EQ(c.dim, kv["gemma3.embedding_length"]["value"].get<int64_t>());
  EXPECT_EQ(c.ffn_dim, kv["gemma3.feed_forward_length"]["value"].get<int64_t>());
  EXPECT_EQ(c.n_heads, kv["gemma3.attention.head_count"]["value"].get<int64_t>());
  EXPECT_EQ(c.n_kv_heads, kv["gemma3.attention.head_count_kv"]["value"].get<int64_t>());
  EXPECT_EQ(c.head_dim, kv["gemma3.attention.key_length"]["value"].get<int64_t>());
  EXPECT_EQ(c.sliding_window, kv["gemma3.attention.sliding_window"]["value"].get<int64_t>());
  EXPECT_FLOAT_EQ(float(c.rope_theta), kv["gemma3.rope.freq_base"]["value"].get<float>());
  EXPECT_FLOAT_EQ(float(c.norm_eps), kv["gemma3.attention.layer_norm_rms_epsilon"]["value"].get<float>());
  EXPECT_EQ(c.swa_pattern, 6);
  EXPECT_TRUE(c.tied_embeddings);

  o.preset = "gemma3-tiny";
  o.dtype = "f32";
  o.out = tmp("gemma3_tiny.gguf");
  ASSERT_TRUE(write_synth(o).ok());
  auto file = model_config_from(**open_model_file(o.out));
  ASSERT_TRUE(file.ok()) << file.status().to_string();
  EXPECT_EQ(file->arch, "gemma3");
  EXPECT_EQ(file->head_dim, 64);
  EXPECT_EQ(file->rope_type, RopeStyle::kNeox);
  EXPECT_TRUE(is_swa_layer(*file, 0) && is_swa_layer(*file, 1) && !is_swa_layer(*file, 2));
  EXPECT_EQ(file->sliding_window, 16);
  std::filesystem::remove(o.out);
  o.preset = "tiny";
  o.arch = "gemma3";
  EXPECT_FALSE(plan_synth(o).ok());  // gemma3 needs a gemma3 preset
}

// DeepSeek-V3 at bf16 (1342 GB) fits no single device and not eight 80 GB GPUs, and says by how much; V2-Lite's KV is
// 27 x 576 values per token.
TEST(MemoryPlan, DeepSeekShapes) {
  SynthOptions o;
  o.preset = "deepseek-v3";
  o.dtype = "bf16";
  auto v3 = plan_synth(o);
  ASSERT_TRUE(v3.ok());
  const MemoryNeed need = memory_need(synth_config(*v3), v3->data_bytes);
  EXPECT_EQ(need.kv_bytes_per_token(2), 61u * 576 * 2);
  const auto fits = standard_fits(need, 24ull << 30, 163840);
  ASSERT_EQ(fits.size(), 5u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_FALSE(fits[i].fits) << fits[i].device;
    EXPECT_NE(fits[i].verdict.find("does not fit: the weights (1342.3 GB)"), std::string::npos) << fits[i].verdict;
  }
  EXPECT_NE(fits[2].verdict.find("need at least 18 devices of 80.0 GB"), std::string::npos) << fits[2].verdict;
  o.preset = "deepseek-v2-lite";
  auto lite = plan_synth(o);
  ASSERT_TRUE(lite.ok());
  const MemoryNeed ln = memory_need(synth_config(*lite), lite->data_bytes);
  EXPECT_EQ(ln.n_layers * ln.kv_values_per_layer, 27 * 576);
  const DeviceFit h100 = fit_on(ln, "one 80 GB GPU", 80'000'000'000ull, 1, 2, 4'000'000'000ull, 4096);
  EXPECT_TRUE(h100.fits) << h100.verdict;
  EXPECT_EQ(h100.kv_tokens, static_cast<int64_t>((76'000'000'000ull - lite->data_bytes) / (27 * 576 * 2)));
}


// The seed's 70B case (llama-3 70B shape in bf16, 141 GB of weights): one card of either size is too small; the fewest
// that hold it (weights, a 4 GB reserve each, one 8192-token sequence) are two, tensor parallel 2, which its 64 heads,
// 8 KV heads and FFN allow; DeepSeek-V2-Lite (MLA heads and experts) splits too; DeepSeek-V3 needs more than eight
// 141 GB cards.
TEST(MemoryPlan, FewestGpusForA70bShape) {
  ModelConfig c;
  c.arch = "llama", c.n_layers = 80, c.dim = 8192, c.n_heads = 64, c.n_kv_heads = 8, c.head_dim = 128;
  c.ffn_dim = 28672, c.n_vocab = 128256, c.context_len = 8192;
  const uint64_t weights = 141'000'000'000ull;
  const MemoryNeed n = memory_need(c, weights);
  EXPECT_EQ(n.tp_sizes, (std::vector<int>{1, 2, 4, 8}));
  EXPECT_EQ(fewest_devices(n, 80'000'000'000ull, 4'000'000'000ull, 8192), 2);
  EXPECT_EQ(fewest_devices(n, 141'000'000'000ull, 4'000'000'000ull, 8192), 2);
  EXPECT_EQ(fewest_devices(n, 24'000'000'000ull, 4'000'000'000ull, 8192), 8);
  EXPECT_EQ(fewest_devices(n, 16'000'000'000ull, 4'000'000'000ull, 8192), 0);  // eight are not enough
  const auto fits = standard_fits(n, 24ull << 30, 8192);
  ASSERT_EQ(fits.size(), 7u);
  EXPECT_EQ(fits[5].device, "the fewest 80 GB GPUs: 2 (tensor parallel 2)");
  EXPECT_TRUE(fits[5].fits) << fits[5].verdict;
  EXPECT_EQ(fits[6].device, "the fewest 141 GB GPUs: 2 (tensor parallel 2)");
  SynthOptions o;
  o.preset = "deepseek-v2-lite";
  o.dtype = "bf16";
  auto lite = plan_synth(o);
  ASSERT_TRUE(lite.ok());
  EXPECT_EQ(memory_need(synth_config(*lite), lite->data_bytes).tp_sizes, (std::vector<int>{1, 2, 4, 8}));
  o.preset = "deepseek-v3";  // 1342 GB in bf16: eight 141 GB GPUs are not enough
  auto v3 = plan_synth(o);
  ASSERT_TRUE(v3.ok());
  EXPECT_EQ(fewest_devices(memory_need(synth_config(*v3), v3->data_bytes), 141'000'000'000ull, 4'000'000'000ull, 4096),
            0);
}
}  // namespace
}  // namespace citadel
