#include "engine/step_cost.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace citadel::engine {

namespace {
// Pulls an unobserved coefficient to 0 (no cut) without moving observed ones measurably (sums grow as tokens^2).
constexpr double kRidge = 1e-3;
}  // namespace

StepCostModel::StepCostModel(double decay, int min_steps) : decay_(decay), min_steps_(min_steps) {}

void StepCostModel::observe(int decode_tokens, int prefill_tokens, double ms) {
  if (!(ms >= 0) || !std::isfinite(ms) || decode_tokens < 0 || prefill_tokens < 0) return;
  const double x[3] = {1.0, static_cast<double>(decode_tokens), static_cast<double>(prefill_tokens)};
  for (int i = 0; i < 3; ++i) {
    xy_[i] = decay_ * xy_[i] + x[i] * ms;
    for (int j = 0; j < 3; ++j) xx_[i * 3 + j] = decay_ * xx_[i * 3 + j] + x[i] * x[j];
  }
  ++steps_;
}

StepCostFit StepCostModel::fit() const {
  // (X^T W X + ridge I) c = X^T W y by Gaussian elimination with partial pivoting.
  double a[3][4];
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) a[i][j] = xx_[i * 3 + j] + (i == j ? kRidge : 0.0);
    a[i][3] = xy_[i];
  }
  for (int col = 0; col < 3; ++col) {
    int piv = col;
    for (int r = col + 1; r < 3; ++r)
      if (std::fabs(a[r][col]) > std::fabs(a[piv][col])) piv = r;
    if (piv != col)
      for (int k = 0; k < 4; ++k) std::swap(a[col][k], a[piv][k]);
    if (std::fabs(a[col][col]) < 1e-300) return {};
    for (int r = 0; r < 3; ++r) {
      if (r == col) continue;
      const double f = a[r][col] / a[col][col];
      for (int k = col; k < 4; ++k) a[r][k] -= f * a[col][k];
    }
  }
  return {a[0][3] / a[0][0], a[1][3] / a[1][1], a[2][3] / a[2][2]};
}

int StepCostModel::prefill_budget(int decode_tokens, double target_ms, int min_prefill, int max_prefill) const {
  if (!ready() || !(target_ms > 0) || max_prefill <= min_prefill) return max_prefill;
  const StepCostFit f = fit();
  if (!(f.per_prefill_ms > 0)) return max_prefill;  // no measured cost per prompt token yet: no cut
  const double room = target_ms - f.base_ms - f.per_decode_ms * decode_tokens;
  const double n = std::floor(room / f.per_prefill_ms);
  if (!(n > min_prefill)) return min_prefill;
  return n >= max_prefill ? max_prefill : static_cast<int>(n);
}

}  // namespace citadel::engine
