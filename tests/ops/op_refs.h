// Input generators and CPU references of the op-parity cases (op_refs.cc); the table in op_cases.cc points at them.
// Every reference is built from the scalar `cpu::*_ref` ops of src/kernels/ops.h, the quant references
// (quantize_row / dequantize_row) and the copy ops of ops.h (kv_write, embedding); where an op has no CPU twin it is
// composed from them (add_rmsnorm = add_ref + rmsnorm_ref, silu_mul of a stacked gate|up row = silu_mul_ref on its
// halves, matmul_silu = matmul_ref + silu_mul_ref, rope_kv_write = rope_ref + kv_write), never new scalar math.
#pragma once

#include "tests/ops/op_cases.h"

namespace citadel::opparity {

constexpr float kRmsEps = 1e-6f;

#define CITADEL_OPPARITY_OP(name)                                                              \
  void generate_##name(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in); \
  void reference_##name(const Shape& s, const std::string& dtype, const Tensors& in, Tensors* out);
CITADEL_OPPARITY_OP(matmul)
CITADEL_OPPARITY_OP(matmul_silu)
CITADEL_OPPARITY_OP(rmsnorm)
CITADEL_OPPARITY_OP(add_rmsnorm)
CITADEL_OPPARITY_OP(add)
CITADEL_OPPARITY_OP(silu_mul)
CITADEL_OPPARITY_OP(softmax)
CITADEL_OPPARITY_OP(rope)
CITADEL_OPPARITY_OP(rope_kv_write)
CITADEL_OPPARITY_OP(kv_write)
CITADEL_OPPARITY_OP(embedding)
CITADEL_OPPARITY_OP(argmax)
CITADEL_OPPARITY_OP(attention)
CITADEL_OPPARITY_OP(rmsnorm_rows)
CITADEL_OPPARITY_OP(mla_rope_kv_write)
CITADEL_OPPARITY_OP(mla_attention)
#undef CITADEL_OPPARITY_OP

// MLA: the RoPE of a shape's variant over its qk_rope dims (rope_params with head_dim = qk_rope).
RopeParams mla_rope_params(const Shape& s, const Tensors& in);

// y [T][N] = x [T][K] W [N][K]^T (+ bias [N]) as the reference computes it for `dtype` (matmul_ref on the bytes the
// reference quantiser stores for GGUF dtypes, on the f32 values otherwise), then add_ref of the bias row by row.
std::vector<float> reference_linear(const std::string& dtype, const std::vector<float>& w, int n, int k,
                                    const std::vector<float>& x, int t, const std::vector<float>* bias);

}  // namespace citadel::opparity
