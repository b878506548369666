// deepseek2 from HF checkpoints (safetensors + config.json; fixtures by tools/reference/make_deepseek_fixtures.py):
// the config.json mapping gives the GGUF's ModelConfig, FP8 block dequantization equals the Python reference, expert
// stacks keep their dtype, and broken checkpoints fail with one line naming the tensor. Logits: hf_parity_test.cc.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "kernels/quant/quant.h"
#include "model/role_source.h"
#include "model_test_util.h"
#include "tests/test_util.h"

namespace citadel {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using model_testing::synth_file;

const char* st_dtype(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kF8E4M3: return "F8_E4M3";
    default: ADD_FAILURE() << dtype_name(t); return "?";
  }
}

// Copies golden model/<src> to a temp dir: tensors for which keep() is false are dropped, f32 tensors for which
// bf16() is true are stored as bf16, and edit() may change config.json. The caller removes the dir.
struct HfEdit {
  std::function<bool(const std::string&)> keep = [](const std::string&) { return true; };
  std::function<bool(const std::string&)> bf16 = [](const std::string&) { return false; };
  std::function<void(json*)> edit_config = [](json*) {};
};
std::string copy_hf(const std::string& src, const std::string& tag, const HfEdit& e) {
  const fs::path from = testing::golden("model/" + src);
  const fs::path dir = fs::temp_directory_path() / ("citadel-test-" + src + "-" + tag + "-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto store = open_safetensors((from / "model.safetensors").string());
  EXPECT_TRUE(store.ok()) << store.status().message();
  json header = json::object();
  std::vector<uint8_t> data;
  for (const TensorInfo& t : (*store)->tensors()) {
    if (!e.keep(t.name)) continue;
    DType dtype = t.dtype;
    std::vector<uint8_t> bytes(t.data, t.data + t.nbytes);
    if (t.dtype == DType::kF32 && e.bf16(t.name)) {
      std::vector<float> f(static_cast<size_t>(t.numel()));
      std::memcpy(f.data(), t.data, t.nbytes);
      bytes.resize(f.size() * 2);
      EXPECT_TRUE(quantize_row(DType::kBF16, f.data(), bytes.data(), t.numel()).ok());
      dtype = DType::kBF16;
    }
    header[t.name] = {{"dtype", st_dtype(dtype)}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data.insert(data.end(), bytes.begin(), bytes.end());
  }
  const std::string h = header.dump();
  const uint64_t n = h.size();
  std::ofstream out(dir / "model.safetensors", std::ios::binary);
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  out.close();
  std::ifstream cf(from / "config.json");
  json cfg = json::parse(cf);
  e.edit_config(&cfg);
  std::ofstream(dir / "config.json") << cfg.dump(1);
  return dir.string();
}

std::string load_error(const std::string& dir) {
  auto w = load_model(dir, {});
  fs::remove_all(dir);
  return w.ok() ? "" : w.status().message();
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.arch, b.arch);
  EXPECT_EQ(a.n_layers, b.n_layers);
  EXPECT_EQ(a.dim, b.dim);
  EXPECT_EQ(a.n_heads, b.n_heads);
  EXPECT_EQ(a.n_kv_heads, b.n_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.ffn_dim, b.ffn_dim);
  EXPECT_EQ(a.n_vocab, b.n_vocab);
  EXPECT_EQ(a.context_len, b.context_len);
  EXPECT_DOUBLE_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.rope_dim, b.rope_dim);
  EXPECT_EQ(a.rope_type, b.rope_type);
  EXPECT_EQ(a.rope_scaling.type, b.rope_scaling.type);
  EXPECT_NEAR(a.rope_scaling.factor, b.rope_scaling.factor, 1e-6);
  EXPECT_EQ(a.rope_scaling.original_context, b.rope_scaling.original_context);
  EXPECT_NEAR(a.rope_scaling.yarn_log_mul, b.rope_scaling.yarn_log_mul, 1e-7);
  EXPECT_NEAR(a.norm_eps, b.norm_eps, 1e-12);
  EXPECT_EQ(a.tied_embeddings, b.tied_embeddings);
  EXPECT_NEAR(attention_scale(a), attention_scale(b), 1e-7);
  EXPECT_EQ(a.has_mla, b.has_mla);
  EXPECT_EQ(a.mla.q_lora_rank, b.mla.q_lora_rank);
  EXPECT_EQ(a.mla.kv_lora_rank, b.mla.kv_lora_rank);
  EXPECT_EQ(a.mla.qk_nope_dim, b.mla.qk_nope_dim);
  EXPECT_EQ(a.mla.qk_rope_dim, b.mla.qk_rope_dim);
  EXPECT_EQ(a.mla.v_head_dim, b.mla.v_head_dim);
  EXPECT_EQ(a.has_moe, b.has_moe);
  EXPECT_EQ(a.moe.n_experts, b.moe.n_experts);
  EXPECT_EQ(a.moe.n_experts_used, b.moe.n_experts_used);
  EXPECT_EQ(a.moe.n_shared, b.moe.n_shared);
  EXPECT_EQ(a.moe.expert_ffn_dim, b.moe.expert_ffn_dim);
  EXPECT_EQ(a.moe.n_dense_layers, b.moe.n_dense_layers);
  EXPECT_EQ(a.moe.sigmoid_gating, b.moe.sigmoid_gating);
  EXPECT_EQ(a.moe.norm_topk, b.moe.norm_topk);
  EXPECT_NEAR(a.moe.routed_scale, b.moe.routed_scale, 1e-6);
  EXPECT_EQ(a.moe.n_group, b.moe.n_group);
  EXPECT_EQ(a.moe.topk_group, b.moe.topk_group);
}

TEST(DeepSeekHf, ConfigJsonGivesTheGgufConfig) {
  struct Dir { const char* dir; const char* preset; };
  for (const Dir& d : {Dir{"deepseek2-tiny-hf", "deepseek2-tiny"}, Dir{"deepseek2-tiny-hf-experts", "deepseek2-tiny"},
                       Dir{"deepseek3-tiny-hf", "deepseek3-tiny"}, Dir{"deepseek3-tiny-hf-fp8", "deepseek3-tiny"}}) {
    const std::string gguf = synth_file("deepseek2", d.preset, 1, "f32");
    auto g = open_model_file(gguf);
    auto h = open_model_file(testing::golden("model/") + d.dir);
    ASSERT_TRUE(g.ok() && h.ok()) << d.dir;
    auto gc = model_config_from(**g);
    auto hc = model_config_from(**h);
    ASSERT_TRUE(gc.ok()) << gc.status().message();
    ASSERT_TRUE(hc.ok()) << hc.status().message();
    expect_same_config(*hc, *gc, d.dir);
    EXPECT_EQ(hc->n_params, gc->n_params);  // FP8 block scales are not parameters
    EXPECT_EQ((*h)->meta_int("deepseek2.attention.head_count_kv"), 1);
    fs::remove(gguf);
  }
  auto fp8 = open_model_file(testing::golden("model/deepseek3-tiny-hf-fp8"));
  ASSERT_TRUE(fp8.ok());
  EXPECT_EQ((*fp8)->meta_string("hf.quantization.method"), "fp8");
  EXPECT_EQ((*fp8)->meta_int("hf.quantization.weight_block_rows"), 16);
  EXPECT_EQ((*fp8)->meta_int("hf.quantization.weight_block_cols"), 32);
}

TEST(DeepSeekHf, F8E4M3Decodes) {
  const uint8_t in[] = {0x00, 0x80, 0x38, 0xB8, 0x7E, 0xFE, 0x01, 0x08, 0x07, 0x3C};
  const float want[] = {0.0f, -0.0f, 1.0f, -1.0f, 448.0f, -448.0f, 0x1p-9f, 0x1p-6f, 7 * 0x1p-9f, 1.5f};
  float out[10];
  ASSERT_TRUE(dequantize_row(DType::kF8E4M3, in, out, 10).ok());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(out[i], want[i]) << i;
  EXPECT_TRUE(std::signbit(out[1]));
  const uint8_t nan[] = {0x7F, 0xFF};
  ASSERT_TRUE(dequantize_row(DType::kF8E4M3, nan, out, 2).ok());
  EXPECT_TRUE(std::isnan(out[0]) && std::isnan(out[1]));
}

// fp8-blocks.safetensors: w [130, 260] F8_E4M3 with 128 x 128 block scales [2, 3] (partial blocks at both edges) and
// torch's w.float() * scale_inv: the same f32 products, so equal exactly.
TEST(DeepSeekHf, Fp8BlockDequantizationMatchesPython) {
  auto s = open_safetensors(testing::golden("model/fp8-blocks.safetensors"));
  ASSERT_TRUE(s.ok()) << s.status().message();
  const TensorInfo *w = (*s)->find("w"), *scale = (*s)->find("w_scale_inv"), *ref = (*s)->find("reference");
  ASSERT_TRUE(w && scale && ref);
  EXPECT_EQ(w->dtype, DType::kF8E4M3);
  EXPECT_EQ(scale->shape, (std::vector<int64_t>{2, 3}));
  std::vector<float> got(static_cast<size_t>(w->numel())), want(got.size());
  ASSERT_TRUE(dequantize_fp8_blocks(*w, *scale, 128, 128, got.data()).ok());
  std::memcpy(want.data(), ref->data, ref->nbytes);
  size_t differ = 0;
  for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
  EXPECT_EQ(differ, 0u);
  Status st = dequantize_fp8_blocks(*w, *scale, 64, 128, got.data());
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("w_scale_inv has shape [2, 3], expected [3, 3]"), std::string::npos) << st.message();
}

TEST(DeepSeekHf, ExpertStacksKeepTheirDtype) {
  const std::string bf16 = copy_hf("deepseek2-tiny-hf-experts", "bf16", HfEdit{.bf16 = [](const std::string& n) {
    return n.find(".mlp.experts.") != std::string::npos;
  }});
  auto w = load_model(bf16, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  for (TensorRole r : {TensorRole::kGateExps, TensorRole::kUpExps, TensorRole::kDownExps}) {
    EXPECT_EQ((*w)->mat(r, 1).dtype, DType::kBF16) << role_name(r);
    EXPECT_EQ((*w)->mat(r, 1).rows, r == TensorRole::kDownExps ? 8 * 64 : 8 * 32);
  }
  fs::remove_all(bf16);
  // One expert in bf16, the rest f32: the stack becomes f32.
  const std::string mixed = copy_hf("deepseek2-tiny-hf-experts", "mixed", HfEdit{.bf16 = [](const std::string& n) {
    return n.find(".mlp.experts.3.gate_proj") != std::string::npos;
  }});
  w = load_model(mixed, {});
  ASSERT_TRUE(w.ok()) << w.status().message();
  EXPECT_EQ((*w)->mat(TensorRole::kGateExps, 1).dtype, DType::kF32);
  EXPECT_EQ((*w)->mat(TensorRole::kUpExps, 1).dtype, DType::kF32);
  fs::remove_all(mixed);
}

void expect_one_line(const std::string& m, const std::string& needle) {
  EXPECT_NE(m.find(needle), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

TEST(DeepSeekHf, BrokenCheckpointsNameTheTensor) {
  auto drop = [](const std::string& name) {
    return HfEdit{.keep = [name](const std::string& n) { return n != name; }};
  };
  expect_one_line(load_error(copy_hf("deepseek2-tiny-hf-experts", "e3", drop("model.layers.2.mlp.experts.3.up_proj.weight"))),
                  "tensor model.layers.2.mlp.experts.3.up_proj.weight is missing");
  expect_one_line(load_error(copy_hf("deepseek2-tiny-hf", "fused", drop("model.layers.1.mlp.experts.gate_up_proj"))),
                  "tensor model.layers.1.mlp.experts.gate_up_proj (or model.layers.1.mlp.experts.E.gate_proj.weight "
                  "per expert) is missing");
  expect_one_line(load_error(copy_hf("deepseek2-tiny-hf", "kvb", drop("model.layers.0.self_attn.kv_b_proj.weight"))),
                  "model.layers.0.self_attn.kv_b_proj.weight) are missing");
  expect_one_line(
      load_error(copy_hf("deepseek3-tiny-hf-fp8", "scale", HfEdit{.edit_config = [](json* c) {
                           (*c)["quantization_config"]["weight_block_size"] = {32, 32};
                         }})),
      "_scale_inv has shape");
  expect_one_line(load_error(copy_hf("deepseek2-tiny-hf", "freq", HfEdit{.edit_config = [](json* c) {
                    (*c)["moe_layer_freq"] = 2;
                  }})),
                  "moe_layer_freq 2");
  expect_one_line(load_error(copy_hf("deepseek3-tiny-hf", "interleave", HfEdit{.edit_config = [](json* c) {
                    (*c)["rope_interleave"] = false;
                  }})),
                  "rope_interleave false");
}

}  // namespace
}  // namespace citadel
