// Host side of loading a TensorStore into the CUDA decoder (see cuda_loader.h): config mapping, tensor names, fp32
// conversion. make_cuda_runner() itself is in cuda_runner.cu (CUDA builds only).
#include "runtime/cuda_loader.h"

#include <algorithm>
#include <cstring>

#include "base/half.h"
#include "kernels/quant/quant.h"

namespace citadel::runtime {

Result<CudaWeightFormat> parse_cuda_weight_format(const std::string& name) {
  if (name == "bf16") return CudaWeightFormat::kBf16;
  if (name == "int8") return CudaWeightFormat::kInt8;
  if (name == "int4") return CudaWeightFormat::kInt4;
  if (name == "f32") return CudaWeightFormat::kF32;
  if (name == "fp8") return CudaWeightFormat::kFp8;
  return InvalidArgument("cuda weights: '" + name + "' is not one of bf16, int8, int4, fp8, f32");
}

Result<CudaModelConfig> cuda_config_from(const ModelConfig& mc) {
  const std::string what = "cuda loader (" + (mc.name.empty() ? mc.arch : mc.name) + "): ";
  if (mc.arch != "llama" && mc.arch != "qwen2")
    return Unsupported(what + "architecture '" + mc.arch + "' (llama, qwen2)");
  if (mc.rope_type == RopeStyle::kNone) return Unsupported(what + "models without RoPE");
  if (mc.rope_dim != mc.head_dim)
    return Unsupported(what + "partial RoPE (rope_dim " + std::to_string(mc.rope_dim) + " of head_dim " +
                       std::to_string(mc.head_dim) + ")");
  if (mc.rope_scaling.type != "none" && !(mc.rope_scaling.type == "linear" && mc.rope_scaling.factor == 1.0))
    return Unsupported(what + "rope scaling '" + mc.rope_scaling.type + "'");
  const int64_t limit = int64_t{1} << 30;
  for (int64_t v : {mc.dim, mc.n_layers, mc.n_heads, mc.n_kv_heads, mc.head_dim, mc.ffn_dim, mc.n_vocab})
    if (v <= 0 || v > limit) return DataLoss(what + "a model dimension is missing or out of range");
  CudaModelConfig c;
  c.hidden_dim = static_cast<int>(mc.dim), c.n_layers = static_cast<int>(mc.n_layers);
  c.n_heads = static_cast<int>(mc.n_heads), c.n_kv_heads = static_cast<int>(mc.n_kv_heads);
  c.head_dim = static_cast<int>(mc.head_dim), c.ffn_dim = static_cast<int>(mc.ffn_dim);
  c.n_vocab = static_cast<int>(mc.n_vocab);
  c.qkv_bias = mc.attn_bias;
  c.rope_neox = mc.rope_type == RopeStyle::kNeox;
  c.rope_theta = static_cast<float>(mc.rope_theta);
  c.rms_eps = static_cast<float>(mc.norm_eps);
  return c;
}

namespace {

const char* gguf_name(CudaWeight w) {
  switch (w) {
    case CudaWeight::kEmbed: return "token_embd.weight";
    case CudaWeight::kOutputNorm: return "output_norm.weight";
    case CudaWeight::kOutput: return "output.weight";
    case CudaWeight::kAttnNorm: return "attn_norm.weight";
    case CudaWeight::kWq: return "attn_q.weight";
    case CudaWeight::kWk: return "attn_k.weight";
    case CudaWeight::kWv: return "attn_v.weight";
    case CudaWeight::kBq: return "attn_q.bias";
    case CudaWeight::kBk: return "attn_k.bias";
    case CudaWeight::kBv: return "attn_v.bias";
    case CudaWeight::kWo: return "attn_output.weight";
    case CudaWeight::kFfnNorm: return "ffn_norm.weight";
    case CudaWeight::kWGate: return "ffn_gate.weight";
    case CudaWeight::kWUp: return "ffn_up.weight";
    case CudaWeight::kWDown: return "ffn_down.weight";
  }
  return "?";
}

const char* hf_name(CudaWeight w) {
  switch (w) {
    case CudaWeight::kEmbed: return "model.embed_tokens.weight";
    case CudaWeight::kOutputNorm: return "model.norm.weight";
    case CudaWeight::kOutput: return "lm_head.weight";
    case CudaWeight::kAttnNorm: return "input_layernorm.weight";
    case CudaWeight::kWq: return "self_attn.q_proj.weight";
    case CudaWeight::kWk: return "self_attn.k_proj.weight";
    case CudaWeight::kWv: return "self_attn.v_proj.weight";
    case CudaWeight::kBq: return "self_attn.q_proj.bias";
    case CudaWeight::kBk: return "self_attn.k_proj.bias";
    case CudaWeight::kBv: return "self_attn.v_proj.bias";
    case CudaWeight::kWo: return "self_attn.o_proj.weight";
    case CudaWeight::kFfnNorm: return "post_attention_layernorm.weight";
    case CudaWeight::kWGate: return "mlp.gate_proj.weight";
    case CudaWeight::kWUp: return "mlp.up_proj.weight";
    case CudaWeight::kWDown: return "mlp.down_proj.weight";
  }
  return "?";
}

bool is_global(CudaWeight w) {
  return w == CudaWeight::kEmbed || w == CudaWeight::kOutput || w == CudaWeight::kOutputNorm;
}

// [rows, cols] of a logical tensor (cols = 1 for vectors); mirrors cuda_weight_shape() without needing CUDA.
void logical_shape(const CudaModelConfig& c, CudaWeight w, int64_t* rows, int64_t* cols) {
  const int64_t D = c.hidden_dim, Q = int64_t{c.n_heads} * c.head_dim, KV = int64_t{c.n_kv_heads} * c.head_dim;
  *cols = 1;
  switch (w) {
    case CudaWeight::kEmbed: case CudaWeight::kOutput: *rows = c.n_vocab, *cols = D; return;
    case CudaWeight::kOutputNorm: case CudaWeight::kAttnNorm: case CudaWeight::kFfnNorm: *rows = D; return;
    case CudaWeight::kWq: *rows = Q, *cols = D; return;
    case CudaWeight::kWk: case CudaWeight::kWv: *rows = KV, *cols = D; return;
    case CudaWeight::kBq: *rows = Q; return;
    case CudaWeight::kBk: case CudaWeight::kBv: *rows = KV; return;
    case CudaWeight::kWo: *rows = D, *cols = Q; return;
    case CudaWeight::kWGate: case CudaWeight::kWUp: *rows = c.ffn_dim, *cols = D; return;
    case CudaWeight::kWDown: *rows = D, *cols = c.ffn_dim; return;
  }
  *rows = 0;
}

}  // namespace

std::string cuda_tensor_name(const TensorStore& store, CudaWeight w, int layer) {
  const bool gguf = store.format() == "gguf";
  if (is_global(w)) return gguf ? gguf_name(w) : hf_name(w);
  return gguf ? "blk." + std::to_string(layer) + "." + gguf_name(w)
              : "model.layers." + std::to_string(layer) + "." + hf_name(w);
}

Status tensor_to_f32(const TensorInfo& t, std::vector<float>* out) {
  const int64_t n = t.numel();
  if (n < 0 || t.data == nullptr) return DataLoss("tensor " + t.name + ": no data");
  out->resize(static_cast<size_t>(n));
  float* dst = out->data();
  switch (t.dtype) {
    case DType::kBF16:
    case DType::kF16:
    case DType::kF32: {
      const size_t esz = t.dtype == DType::kF32 ? 4 : 2;
      if (t.nbytes < static_cast<uint64_t>(n) * esz) return DataLoss("tensor " + t.name + ": short data");
      if (esz == 4) {  // memcpy: safetensors data may be unaligned
        std::memcpy(dst, t.data, static_cast<size_t>(n) * 4);
        return OkStatus();
      }
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, t.data + i * 2, 2);
        dst[i] = t.dtype == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return OkStatus();
    }
    default:
      break;
  }
  if (!dequantize_supported(t.dtype))
    return Unsupported("tensor " + t.name + ": dtype " + dtype_name(t.dtype) + " cannot be loaded on CUDA");
  const DTypeInfo* info = dtype_info(t.dtype);
  const int64_t chunk = int64_t{info->block} * 1024;  // elements per dequantize call
  if (n % info->block != 0) return DataLoss("tensor " + t.name + ": size is not a whole number of blocks");
  if (t.nbytes < dtype_row_bytes(t.dtype, n)) return DataLoss("tensor " + t.name + ": short data");
  for (int64_t i = 0; i < n; i += chunk)
    RETURN_IF_ERROR(dequantize_row(t.dtype, t.data + (i / info->block) * info->block_bytes, dst + i,
                                   std::min(chunk, n - i)));
  return OkStatus();
}

Status read_cuda_weights(const TensorStore& store, const CudaModelConfig& c, const CudaWeightSink& sink) {
  std::vector<float> buf;
  for (int wi = 0; wi < kNumCudaWeights; ++wi) {
    const auto w = static_cast<CudaWeight>(wi);
    const bool bias = w == CudaWeight::kBq || w == CudaWeight::kBk || w == CudaWeight::kBv;
    if (bias && !c.qkv_bias) continue;
    for (int l = 0; l < (is_global(w) ? 1 : c.n_layers); ++l) {
      std::string name = cuda_tensor_name(store, w, l);
      const TensorInfo* t = store.find(name);
      if (!t && w == CudaWeight::kOutput) {  // tied embeddings: the LM head is the token embedding
        name = cuda_tensor_name(store, CudaWeight::kEmbed, 0);
        t = store.find(name);
      }
      if (!t) return DataLoss(store.path() + ": tensor " + name + " is missing");
      int64_t rows, cols;
      logical_shape(c, w, &rows, &cols);
      const bool vec = cols == 1;
      const bool ok = vec ? (t->shape.size() == 1 && t->shape[0] == rows)
                          : (t->shape.size() == 2 && t->shape[0] == rows && t->shape[1] == cols);
      if (!ok) {
        std::string got;
        for (int64_t d : t->shape) got.append(got.empty() ? "" : ",").append(std::to_string(d));
        std::string want = std::to_string(rows);
        if (!vec) want.append(",").append(std::to_string(cols));
        return DataLoss(store.path() + ": tensor " + name + " has shape [" + got + "], expected [" + want + "]");
      }
      RETURN_IF_ERROR(tensor_to_f32(*t, &buf));
      RETURN_IF_ERROR(sink(w, l, buf.data(), static_cast<int64_t>(buf.size())));
    }
  }
  return OkStatus();
}

}  // namespace citadel::runtime
