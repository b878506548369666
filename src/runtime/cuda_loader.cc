// Host side of loading a TensorStore into the CUDA decoder (see cuda_loader.h): what the decoder supports, the
// architecture's tensors converted to fp32. make_cuda_runner() itself is in cuda_runner.cu (CUDA builds only).
#include "runtime/cuda_loader.h"

#include <algorithm>
#include <cstring>

#include "base/half.h"
#include "kernels/quant/quant.h"
#include "model/arch.h"
#include "model/rope.h"
#include "model/shard.h"
#include "model/weights.h"

namespace citadel::runtime {

Result<CudaWeightFormat> parse_cuda_weight_format(const std::string& name) {
  if (name == "bf16") return CudaWeightFormat::kBf16;
  if (name == "int8") return CudaWeightFormat::kInt8;
  if (name == "int4") return CudaWeightFormat::kInt4;
  if (name == "f32") return CudaWeightFormat::kF32;
  if (name == "fp8") return CudaWeightFormat::kFp8;
  return InvalidArgument("cuda weights: '" + name + "' is not one of bf16, int8, int4, fp8, f32");
}

namespace {
// deepseek2 (MLA + MoE): the shapes kernels/cuda/mla.h, moe.h and mla_moe_exact.h take (the weight formats are
// checked by CudaDecoder::create, which knows the format).
Status mla_moe_supported(const ModelConfig& c, const std::string& what) {
  if (c.arch != "deepseek2") return Unsupported(what + "MLA / MoE outside the deepseek2 recipe");
  if (!rope_scaling_supported(c.rope_scaling.type))
    return Unsupported(what + "rope scaling '" + c.rope_scaling.type + "'");
  const MlaConfig& m = c.mla;
  const int64_t limit = int64_t{1} << 30;
  for (int64_t v : {c.dim, c.n_layers, c.n_heads, c.n_vocab, m.kv_lora_rank, m.qk_nope_dim, m.qk_rope_dim,
                    m.v_head_dim})
    if (v <= 0 || v > limit) return DataLoss(what + "a model dimension is missing or out of range");
  if (!c.has_mla) return Unsupported(what + "MoE without MLA");
  if (m.qk_rope_dim % 2 != 0 || m.qk_rope_dim > 128 || m.kv_lora_rank > 1024 ||
      (m.kv_lora_rank + m.qk_rope_dim) % 8 != 0 || m.qk_nope_dim % 8 != 0 || m.v_head_dim % 8 != 0)
    return Unsupported(what + "MLA dims (qk_rope even <= 128, kv_lora_rank <= 1024, latent row, qk_nope and v "
                              "multiples of 8)");
  if (c.dim % 16 != 0 || c.ffn_dim % 16 != 0 || m.q_lora_rank % 8 != 0)
    return Unsupported(what + "dim and ffn_dim must be multiples of 16, q_lora_rank of 8");
  if (c.has_moe) {
    const MoeConfig& e = c.moe;
    if (e.n_experts <= 0 || e.n_experts > 256 || e.n_experts_used <= 0 || e.n_experts_used > 16 ||
        e.n_experts_used > e.n_experts || e.expert_ffn_dim <= 0 || e.expert_ffn_dim % 16 != 0)
      return Unsupported(what + "MoE shape (<= 256 experts, top-k <= 16, expert FFN a multiple of 16)");
  }
  return OkStatus();
}
}  // namespace

Status cuda_supports(const ModelConfig& c) {
  const std::string what = "cuda decoder (" + (c.name.empty() ? c.arch : c.name) + "): ";
  if (!find_arch(c.arch)) return Unsupported(what + "architecture '" + c.arch + "' has no recipe");
  if (c.has_mla || c.has_moe) return mla_moe_supported(c, what);
  if (c.rope_type == RopeStyle::kNone) return Unsupported(what + "models without RoPE");
  if (c.rope_dim != c.head_dim)
    return Unsupported(what + "partial RoPE (rope_dim " + std::to_string(c.rope_dim) + " of head_dim " +
                       std::to_string(c.head_dim) + ")");
  if (!rope_scaling_supported(c.rope_scaling.type))
    return Unsupported(what + "rope scaling '" + c.rope_scaling.type + "'");
  if (c.rope_scaling.type == "llama3")
    if (Status st = llama3_rope_factors(c).status(); !st.ok()) return DataLoss(what + st.message());
  const int64_t limit = int64_t{1} << 30;
  for (int64_t v : {c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.n_vocab})
    if (v <= 0 || v > limit) return DataLoss(what + "a model dimension is missing or out of range");
  if (c.n_heads % c.n_kv_heads != 0 || c.n_heads / c.n_kv_heads > 16)
    return Unsupported(what + "n_heads/n_kv_heads must be an integer <= 16");
  if (c.head_dim != 64 && c.head_dim != 128 && c.head_dim != 256)
    return Unsupported(what + "head_dim " + std::to_string(c.head_dim) + " (needs 64, 128 or 256)");
  // HF checkpoints store Gemma's norm weights without the 1 of its (1 + weight) RMSNorm, which the recipe expects
  // added (llama.cpp's converter adds it); nothing adds it on load yet.
  if (c.arch == "gemma3" && c.source == "safetensors")
    return Unsupported(what + "gemma3 from HF safetensors (norm weights without Gemma's +1; use the GGUF)");
  // Interleaved sliding-window layers (gemma3): the window is a kernel argument (int), the pattern any period.
  if (c.sliding_window < 0 || c.sliding_window > limit || (c.sliding_window > 0 && c.swa_pattern <= 0))
    return DataLoss(what + "sliding window " + std::to_string(c.sliding_window) + " with pattern " +
                    std::to_string(c.swa_pattern));
  // 16-byte GEMV chunks (bf16: 8 elements, int8: 16) along every K; int4 matrices with K % 128 stay int8.
  if (c.dim % 16 != 0 || c.ffn_dim % 16 != 0)
    return Unsupported(what + "dim " + std::to_string(c.dim) + " and ffn_dim " + std::to_string(c.ffn_dim) +
                       " must be multiples of 16");
  return OkStatus();
}

Status cuda_tp_supported(const ModelConfig& c, int n) {
  RETURN_IF_ERROR(tp_supported(c, n));
  const std::string what = "tensor parallel " + std::to_string(n);
  RETURN_IF_ERROR(cuda_supports(tp_rank_config(c, n)).with_context(what));
  const int64_t shared = tp_shared_width(c, n);
  if (c.has_moe && n > 1 && shared % 16 != 0)
    return Unsupported(what + ": the shared experts' slice per rank, " + std::to_string(shared) +
                       " wide, is not a multiple of 16");
  return OkStatus();
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
  // f8_e4m3 tensors of HF checkpoints carry block scales only the CPU loader applies (model/role_source.h).
  if (!dequantize_supported(t.dtype) || t.dtype == DType::kF8E4M3)
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

Result<std::vector<ModelTensor>> model_tensors(const ModelWeights& w, const std::string& format) {
  const ModelConfig& c = w.config;
  std::vector<ModelTensor> out;
  for (const RoleUse& use : w.arch->roles) {
    const TensorRole r = use.role;
    if (r == TensorRole::kWkvB) continue;  // the loader has split it into attn_k_b / attn_v_b
    const bool per_layer = role_info(r).per_layer;
    int64_t count = 1;
    for (int64_t d : tp_role_shape(c, r, w.tp.size)) count *= d;
    if ((r == TensorRole::kTokEmbd || r == TensorRole::kOutput) && w.tp.size > 1)  // a shard's vocabulary rows
      count = (w.tp.vocab_end - w.tp.vocab_begin) * c.dim;
    for (int l = 0; l < (per_layer ? c.n_layers : 1); ++l) {
      TensorInfo t;
      t.name = tensor_name(r, l, format);
      if (role_info(r).matrix) {
        const WeightView& v = w.mat(r, l);
        if (!v.data) continue;  // absent (the loader has checked what each layer needs)
        if (v.rows * v.cols != count) return DataLoss("tensor " + t.name + " has the wrong size");
        t.dtype = v.dtype, t.shape = {v.rows, v.cols};
        t.nbytes = static_cast<uint64_t>(v.rows) * v.row_bytes();
        t.data = static_cast<const uint8_t*>(v.data);
      } else if (const float* p = w.vec(r, l)) {
        t.dtype = DType::kF32, t.shape = {count};
        t.nbytes = static_cast<uint64_t>(count) * sizeof(float);
        t.data = reinterpret_cast<const uint8_t*>(p);
      } else {
        continue;
      }
      out.push_back(ModelTensor{r, l, std::move(t)});
    }
  }
  return out;
}

Status read_model_weights(const ModelWeights& w, const std::string& format, const CudaWeightSink& sink) {
  ASSIGN_OR_RETURN(std::vector<ModelTensor> tensors, model_tensors(w, format));
  std::vector<float> buf;
  for (const ModelTensor& m : tensors) {
    if (m.tensor.dtype == DType::kF8E4M3) {  // unscaled FP8 (block-scaled weights are fp32 in ModelWeights already)
      buf.resize(static_cast<size_t>(m.tensor.numel()));
      RETURN_IF_ERROR(dequantize_row(DType::kF8E4M3, m.tensor.data, buf.data(), m.tensor.numel()));
    } else {
      RETURN_IF_ERROR(tensor_to_f32(m.tensor, &buf));
    }
    RETURN_IF_ERROR(sink(m.role, m.layer, buf.data(), static_cast<int64_t>(buf.size())));
  }
  return OkStatus();
}

namespace {
// Architectures whose roles need assembly at load (arch->finish: deepseek2's kv_b split, HF expert stacks, FP8 block
// scales): the CPU loader's ModelWeights binds them, then each present role goes to the sink as fp32.
Status read_assembled_weights(const TensorStore& store, const CudaWeightSink& sink) {
  ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> w, load_model(store.path(), WeightsOptions{.copy_half_for_decode = false}));
  return read_model_weights(*w, store.format(), sink).with_context(store.path());
}
}  // namespace

Result<std::vector<CudaWeightRef>> plan_cuda_weights(const TensorStore& store, const ModelConfig& c) {
  const ArchSpec* arch = find_arch(c.arch);
  if (!arch) return Unsupported("cuda loader: architecture '" + c.arch + "' has no recipe");
  if (arch->finish) return Unsupported("cuda loader: '" + c.arch + "' weights are assembled at load (ModelWeights)");
  std::vector<CudaWeightRef> refs;
  for (const RoleUse& use : arch->roles) {
    const TensorRole r = use.role;
    if (use.need == RoleNeed::kBiasGroup && !c.attn_bias) continue;
    const bool per_layer = role_info(r).per_layer;
    for (int l = 0; l < (per_layer ? c.n_layers : 1); ++l) {
      std::string name = tensor_name(r, l, store.format());
      const TensorInfo* t = store.find(name);
      if (!t && r == TensorRole::kOutput) {  // tied embeddings: the LM head is the token embedding
        name = tensor_name(TensorRole::kTokEmbd, 0, store.format());
        t = store.find(name);
      }
      if (!t && use.need == RoleNeed::kOptional) break;
      if (!t) return DataLoss(store.path() + ": tensor " + name + " is missing");
      const std::vector<int64_t> want = role_shape(c, r);
      if (t->shape != want)
        return DataLoss(store.path() + ": tensor " + name + " has shape " + shape_str(t->shape) + ", expected " +
                        shape_str(want));
      refs.push_back(CudaWeightRef{r, l, t});
    }
  }
  return refs;
}

Status read_cuda_weights(const TensorStore& store, const ModelConfig& c, const CudaWeightSink& sink) {
  const ArchSpec* arch = find_arch(c.arch);
  if (arch && arch->finish) return read_assembled_weights(store, sink);
  ASSIGN_OR_RETURN(std::vector<CudaWeightRef> refs, plan_cuda_weights(store, c));
  std::vector<float> buf;
  for (const CudaWeightRef& w : refs) {
    RETURN_IF_ERROR(tensor_to_f32(*w.tensor, &buf));
    RETURN_IF_ERROR(sink(w.role, w.layer, buf.data(), static_cast<int64_t>(buf.size())));
  }
  return OkStatus();
}

}  // namespace citadel::runtime
