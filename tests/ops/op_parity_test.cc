// The op-parity driver: one gtest per (op, shape, dtype, backend) of the table in op_cases.h that the backend
// supports. Each runs every implementation the backend has for the op on the case's seeded inputs and compares each
// output with the CPU reference under the stated bound; a failure names op, backend, implementation, dtype, shape,
// the output, its NMSE and the bound. Backends that cannot run here (no CUDA device) skip.
// The self-checks below prove that a case can fail: perturbed outputs, a NaN, one ulp off an exact output and an
// off-by-one causal mask are all reported.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "tests/ops/op_cases.h"

namespace citadel::opparity {
namespace {

struct Param {
  const OpCase* c;
  int shape;
  std::string dtype;
  const Backend* backend;
};

std::vector<Param> all_params() {
  std::vector<Param> v;
  for (const OpCase& c : op_cases())
    for (int i = 0; i < int(c.shapes.size()); ++i)
      for (const std::string& dt : c.dtypes)
        for (const Backend* b : backends()) {
          if (c.shapes[i].device_only && !b->is_device()) continue;
          if (b->supports(c.op, c.shapes[i], dt)) v.push_back({&c, i, dt, b});
        }
  return v;
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const Param& p = info.param;
  std::string n = p.c->op + "_" + p.backend->name() + "_" + p.dtype + "_" + std::to_string(p.shape) + "_" +
                  p.c->shapes[p.shape].label();
  for (char& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

std::string describe(const Param& p, const std::string& impl) {
  return p.c->op + " [" + p.backend->name() + "/" + impl + "] dtype " + p.dtype + " shape " +
         p.c->shapes[p.shape].label();
}

class OpParity : public ::testing::TestWithParam<Param> {};

TEST_P(OpParity, MatchesReference) {
  const Param& p = GetParam();
  const std::string why = p.backend->unavailable();
  if (!why.empty()) GTEST_SKIP() << why;
  const Shape& s = p.c->shapes[p.shape];
  Tensors in, want;
  p.c->generate(s, p.dtype, case_seed(p.c->op, p.shape, p.dtype), &in);
  p.c->reference(s, p.dtype, in, &want);
  std::vector<ImplResult> results;
  const std::string err = p.backend->run(p.c->op, s, p.dtype, in, &results);
  ASSERT_TRUE(err.empty()) << describe(p, "*") << ": " << err;
  ASSERT_FALSE(results.empty()) << describe(p, "*") << ": no implementation ran";
  for (const ImplResult& r : results) {
    const std::string what = describe(p, r.impl);
    const Bound* b = find_bound(p.c->op, p.backend->name(), p.dtype, r.impl);
    ASSERT_NE(b, nullptr) << what << ": no bound stated in op_cases.cc";
    const Verdict v = compare(what, r.out, want, b->nmse);
    EXPECT_TRUE(v.ok) << v.message << "  (bound " << b->nmse << ": " << b->why << ")";
    if (p.backend->is_device()) std::printf("%s: worst nmse %.2e (bound %.0e)\n", what.c_str(), v.worst, b->nmse);
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, OpParity, ::testing::ValuesIn(all_params()), param_name);

const OpCase& find_case(const std::string& op) {
  for (const OpCase& c : op_cases())
    if (c.op == op) return c;
  ADD_FAILURE() << "no case " << op;
  return op_cases().front();
}

// Every op's reference output, perturbed by 10% (NMSE ~1e-2, above every stated bound), fails; unperturbed passes.
TEST(OpParitySelfCheck, PerturbedOutputsFail) {
  double loosest = 0;
  for (const Bound& b : bounds()) loosest = std::max(loosest, b.nmse);
  ASSERT_LT(loosest, 1e-2);
  for (const OpCase& c : op_cases()) {
    int i = 0;
    while (i + 1 < int(c.shapes.size()) && c.shapes[i].device_only) ++i;
    const Shape& s = c.shapes[i];
    Tensors in, want;
    c.generate(s, c.dtypes.front(), case_seed(c.op, i, c.dtypes.front()), &in);
    c.reference(s, c.dtypes.front(), in, &want);
    ASSERT_FALSE(want.f.empty()) << c.op;
    EXPECT_TRUE(compare(c.op, want, want, 0).ok) << c.op;
    for (const auto& [name, values] : want.f) {
      Tensors got = want;
      for (float& x : got.f[name]) x = x * 1.1f + 1e-3f;
      const Verdict v = compare(c.op, got, want, loosest);
      EXPECT_FALSE(v.ok) << c.op << " output " << name << ": a 10% error passed";
      EXPECT_NE(v.message.find(c.op), std::string::npos) << v.message;
      EXPECT_NE(v.message.find(name), std::string::npos) << v.message;
    }
  }
}

// One element off, a NaN, and one ulp off an exact output are each reported with the op, output and NMSE.
TEST(OpParitySelfCheck, SingleElementErrorsAreReported) {
  const OpCase& c = find_case("rmsnorm");
  Shape s;
  s.tokens = 3, s.dim = 64;
  Tensors in, want;
  c.generate(s, "f32", 7, &in);
  c.reference(s, "f32", in, &want);
  Tensors got = want;
  got.f["y"][5] *= 2.f;
  Verdict v = compare("rmsnorm [cpu/rmsnorm] dtype f32 shape T3_N64", got, want, 1e-10);
  EXPECT_FALSE(v.ok);
  EXPECT_NE(v.message.find("rmsnorm [cpu/rmsnorm] dtype f32 shape T3_N64: output y nmse"), std::string::npos)
      << v.message;
  got = want;
  got.f["y"][0] = NAN;
  v = compare("rmsnorm", got, want, 1.0);
  EXPECT_FALSE(v.ok) << "a NaN must fail any bound";
  EXPECT_TRUE(std::isinf(v.worst));

  const OpCase& e = find_case("embedding");
  Shape t;
  t.vocab = 10, t.dim = 64, t.tokens = 3;
  Tensors ein, ewant;
  e.generate(t, "f32", 8, &ein);
  e.reference(t, "f32", ein, &ewant);
  Tensors egot = ewant;
  float& x = egot.f["y"][17];
  x = std::nextafter(x, INFINITY);
  v = compare("embedding", egot, ewant, 1.0);
  EXPECT_FALSE(v.ok) << "one ulp off an exact output must fail whatever the bound";
  EXPECT_NE(v.message.find("must be exact: 1 of"), std::string::npos) << v.message;
}

// The loosest attention bound (bf16 prefill, 1e-4) still catches a causal mask one key short: the same queries
// against one token less of context.
TEST(OpParitySelfCheck, CausalOffByOneIsCaught) {
  const OpCase& c = find_case("attention");
  const Bound* loosest = find_bound("attention", "cuda", "bf16", "prefill_mma");
  ASSERT_NE(loosest, nullptr);
  for (int i = 0; i < int(c.shapes.size()); ++i) {
    const Shape& s = c.shapes[i];
    if (s.device_only || s.variant != "prefill") continue;
    bool shiftable = true;
    for (size_t q = 0; q < s.ctx.size(); ++q) shiftable = shiftable && s.ctx[q] > s.n_new[q];
    if (!shiftable) continue;
    Tensors in, want, shifted;
    c.generate(s, "f32", case_seed(c.op, i, "f32"), &in);
    c.reference(s, "f32", in, &want);
    for (int32_t& pos : in.i["pos_of_token"]) --pos;
    c.reference(s, "f32", in, &shifted);
    const Verdict v = compare("attention shifted", shifted, want, loosest->nmse);
    EXPECT_FALSE(v.ok) << s.label() << ": the bound would not catch an off-by-one causal mask (nmse " << v.worst
                       << ")";
  }
}

}  // namespace
}  // namespace citadel::opparity
