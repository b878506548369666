// The op-parity harness (issue 16, in the manner of llama.cpp's test-backend-ops): every op of every backend against
// the CPU reference (the scalar `cpu::*_ref` functions of src/kernels/ops.h and the quant references), over a table of
// shapes and dtypes, each (op, backend, dtype[, implementation]) with one stated NMSE bound.
//
// Pieces: the case table (op_cases.cc: ops, shapes, dtypes, bounds), the input generators and the references
// (op_refs.cc), one adapter per backend (backend_cpu.cc, backend_cuda.cc: host f32 in, host f32 out) and one driver
// (op_parity_test.cc, a gtest parameterised over (op, shape, dtype, backend)). Adding a backend = one adapter file
// that registers a Backend; adding an op = a generator, a reference and a table row here, then the adapters.
//
// NMSE = sum (got - want)^2 / sum want^2 per output tensor (NaN or Inf anywhere: +inf; want all zero: sum got^2);
// outputs the reference marks exact (copies, untouched pool slots, ids) must match bit for bit. Results of several
// implementations of one op on one backend (e.g. CUDA decode attention: SIMT / tensor cores, split counts) are each
// checked. Shapes marked device_only (model-scale) run on device backends only: a 2-core host has no time for them.
//
// The table (bounds(): the first row that matches wins; `impl*` is a prefix):
//   op             backend dtype                              bound   why
//   matmul         cpu     f32 f16 bf16 bf16xf32              1e-10   same products, float vs double summation
//   matmul         cpu     q8_0 q4_0 q4_1 q5_0 q5_1 q4_K ...  1e-3    activations quantised to q8_0 / q8_K
//   matmul         cuda    f32 (gemv_f32)                     1e-10   fp32 summation order
//   matmul         cuda    bf16 gemv f32 out                  1e-9    fp32 accumulation of exact bf16 products
//   matmul         cuda    bf16 cuBLAS / cuBLASLt f32 out     1e-6    tensor-core fp32 accumulation
//   matmul         cuda    bf16 / int8 / fp8, bf16 out        1e-5    bf16 rounding of the output (~3e-6)
//   matmul         cuda    bf16xf32 gemv / bf16x3 GEMM        1e-12 / 1e-10   fp32 math / three bf16 planes
//   matmul         cuda    int8 / int4 f32 out                1e-8 / 1e-10    inputs on the quantisation grids
//   matmul         cuda    int4x (x off the int8 grid)        1e-4    the kernel rounds x to int8 per 32 (w4a8);
//                                                                     matmul_silu 3e-4
//   matmul         cuda    fp8 gemv f32 / cuBLASLt f32        1e-10 / 1e-7    fp8 MMA reduced-precision accumulation
//   matmul_silu    as matmul; bf16x3 GEMM + SiLU 5e-10; bf16xf32 gemv 1e-12; bf16 outputs 1e-5
//   rmsnorm, add_rmsnorm  cpu f32 1e-10; cuda f32 1e-12; cuda bf16 1e-5 (bf16 output); residual exact
//   add            cpu     f32                                0       one IEEE add
//   silu_mul       cpu 1e-10 (AVX2 exp ~2 ulp); cuda f32 1e-12; cuda bf16 1e-5
//   softmax        cpu     f32                                1e-10   AVX2 exp ~2 ulp
//   rope           cpu 1e-10; cuda bf16 1e-5
//   rope_kv_write  cpu 1e-10; cuda f32 1e-12; cuda bf16 1e-5; V pool and untouched slots exact
//   kv_write, embedding (+ gather_rows), argmax   every backend   0   copies / ids
//   attention      cpu f32 f16 1e-10; cuda f32 1e-10; cuda bf16 SIMT decode 1e-5, mma decode 3e-5 (bf16
//                  probabilities), prefill 1e-4
//   rmsnorm_rows, mla_rope_kv_write, mla_attention   cuda bf16 1e-5 (bf16 outputs of fp32 math; fp32 probabilities);
//                  mla_attention on tensor cores (mma*) 3e-5 (bf16 probabilities)
// Inputs are generated on the grid of the dtype (bf16, f16, or for the CUDA weight formats int8 / int4 / fp8 with
// power-of-two scales so that the device quantisers reproduce them exactly); the reference then computes in f32 /
// double on those exact values, and the bounds measure the kernel, not the format.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace citadel::opparity {

// Named host tensors of one case instance (inputs, or the outputs of a reference or an implementation).
struct Tensors {
  std::map<std::string, std::vector<float>> f;
  std::map<std::string, std::vector<int32_t>> i;
  std::set<std::string> exact;  // outputs that must match bit for bit (set by the reference)
  const std::vector<float>& F(const std::string& name) const;    // CHECKs that it exists
  const std::vector<int32_t>& I(const std::string& name) const;  // CHECKs that it exists
};

// One shape of an op; which fields matter is stated per op in op_cases.cc.
struct Shape {
  int tokens = 0;   // T (matmul M, queries of softmax rows, ...)
  int dim = 0;      // row width: rmsnorm / silu_mul / softmax / embedding dim, matmul n_out, matmul_silu ffn
  int n_in = 0;     // matmul K
  int vocab = 0;    // embedding table rows, argmax V
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int block_size = 16;   // KV pool rows per block
  int n_blocks = 0;      // KV pool blocks (kv_write, rope_kv_write)
  std::vector<int> ctx;    // attention: tokens cached per sequence, the new ones included
  std::vector<int> n_new;  // attention: queries per sequence, the last n_new[s] positions of its context
  int window = 0;          // attention: > 0: sliding window (the query at position p sees keys p - window + 1 .. p)
  bool bias = false;       // matmul: + bias [n_out]
  std::string variant;     // rope: norm, neox, norm_partial, neox_yarn, norm_linear_ff; attention: decode, prefill
  float theta = 10000.f;   // RoPE base
  int qk_nope = 0, qk_rope = 0, kv_lora_rank = 0;  // MLA: per-head query dims, latent rank (the row L = r + rope)
  bool device_only = false;  // model-scale: device backends only
  std::string label() const;  // e.g. T3_N17_K608_bias
};

// Generator: fills `in` with seeded random inputs of (shape, dtype). Reference: the expected outputs.
using GenerateFn = void (*)(const Shape& s, const std::string& dtype, uint32_t seed, Tensors* in);
using ReferenceFn = void (*)(const Shape& s, const std::string& dtype, const Tensors& in, Tensors* out);

struct OpCase {
  std::string op;
  std::vector<Shape> shapes;
  std::vector<std::string> dtypes;  // union over backends; each adapter says which it supports
  GenerateFn generate;
  ReferenceFn reference;
};
const std::vector<OpCase>& op_cases();

struct Bound {
  const char* op;
  const char* backend;
  const char* dtype;
  const char* impl;  // "*" any; "name*" prefix
  double nmse;
  const char* why;
};
const std::vector<Bound>& bounds();
// The first matching row, or nullptr (the driver fails the case: every result needs a stated bound).
const Bound* find_bound(const std::string& op, const std::string& backend, const std::string& dtype,
                        const std::string& impl);

// One implementation's outputs (same names as the reference's).
struct ImplResult {
  std::string impl;
  Tensors out;
};

// A backend adapter. run() takes the host inputs, runs each of the backend's implementations of the op and returns
// host f32 outputs; it returns "" or what went wrong (a device error, a contract the adapter saw broken).
class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  virtual bool is_device() const = 0;               // device_only shapes run only where true
  virtual std::string unavailable() const { return ""; }  // non-empty: the reason the driver skips (no device)
  virtual bool supports(const std::string& op, const Shape& s, const std::string& dtype) const = 0;
  virtual std::string run(const std::string& op, const Shape& s, const std::string& dtype, const Tensors& in,
                          std::vector<ImplResult>* results) const = 0;
};
// Adapters register themselves from a static initialiser in their own file.
bool register_backend(const Backend* backend);
const std::vector<const Backend*>& backends();

// sum (got - want)^2 / sum want^2 (want all zero: sum got^2); sizes differ or a non-finite value: +inf.
double nmse(const std::vector<float>& got, const std::vector<float>& want);

struct Verdict {
  bool ok = true;
  double worst = 0;     // the largest NMSE over the outputs
  std::string message;  // on failure: names the case, the output, its NMSE and the bound
};
// Compares every output of `want` with `got` (exact outputs bit for bit, the others within `bound`). `what` names
// the case (op, backend, impl, dtype, shape) in the message.
Verdict compare(const std::string& what, const Tensors& got, const Tensors& want, double bound);

uint32_t case_seed(const std::string& op, int shape_index, const std::string& dtype);

// Helpers shared by the references and the adapters.
// RoPE parameters of a shape's variant (rope_dim = head_dim, or head_dim/2 for *_partial); the freq_factors
// pointer (variant *_ff) points into `in`.
RopeParams rope_params(const Shape& s, const Tensors& in);
// GGUF storage type of a matmul / embedding dtype name (bf16xf32 -> kBF16), or false for f32 math on the values
// (f32 and the CUDA weight formats int8 / int4 / fp8, whose inputs already lie on their grids).
bool gguf_dtype(const std::string& dtype, DType* t);
// Rows of W [rows][cols] stored as `t` by the reference quantiser (quantize_row): the bytes both sides use.
std::vector<uint8_t> quantize_rows(DType t, const std::vector<float>& w, int64_t rows, int64_t cols);
// Attention output o [n_tokens][n_heads][head_dim] (sequence 0's queries first)
// -> out.s<i> [n_new[i]][n_heads][head_dim].
void split_attention_output(const Shape& s, const std::vector<float>& o, Tensors* out);

}  // namespace citadel::opparity
