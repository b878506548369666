#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "base/cpu_features.h"

namespace citadel::engine {
namespace {

std::string fmt(float v) { return std::to_string(v); }

}  // namespace

int32_t argmax_ref(const float* x, int n) {
  int32_t best = -1;
  for (int i = 0; i < n; ++i)
    if (!std::isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
  return best < 0 ? 0 : best;
}

float max_value_ref(const float* x, int n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < n; ++i)
    if (x[i] > m) m = x[i];
  return m;
}

namespace {
constexpr int kLanes = 16;
}  // namespace

// A lane-wise max: m = x > m ? x : m is exactly maxps (and skips NaN), so the compiler vectorises it at whatever width
// the build targets; the lanes make it independent of where the compiler places the loop (a scalar max reduction is
// a serial dependency chain: ~1 cycle per element at best).
float max_value_portable(const float* x, int n) {
  float lane[kLanes];
  std::fill(lane, lane + kLanes, -std::numeric_limits<float>::infinity());
  const int nb = n / kLanes * kLanes;
  for (int i = 0; i < nb; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
  float m = -std::numeric_limits<float>::infinity();
  for (int j = 0; j < kLanes; ++j) m = lane[j] > m ? lane[j] : m;
  for (int i = nb; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// The max, then the first block of kLanes holding it, scanned.
int32_t argmax_portable(const float* x, int n) {
  const float m = max_value_portable(x, n);
  const int nb = n / kLanes * kLanes;
  for (int i = 0; i < nb; i += kLanes) {
    bool hit = false;
    for (int j = 0; j < kLanes; ++j) hit |= x[i + j] == m;
    if (hit)
      for (int j = 0;; ++j)
        if (x[i + j] == m) return i + j;
  }
  for (int i = nb; i < n; ++i)
    if (x[i] == m) return i;
  return 0;  // every entry NaN
}

namespace {
const bool g_avx2 = cpu_features().avx2;  // probed once, before main
}  // namespace

int32_t argmax(const float* x, int n) { return g_avx2 ? argmax_avx2(x, n) : argmax_portable(x, n); }
float max_value(const float* x, int n) { return g_avx2 ? max_value_avx2(x, n) : max_value_portable(x, n); }

Status validate_sampling_params(const SamplingParams& p, int n_vocab) {
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
    return InvalidArgument("temperature must be >= 0, got " + fmt(p.temperature));
  if (p.top_k < 0) return InvalidArgument("top_k must be >= 0, got " + std::to_string(p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return InvalidArgument("top_p must be in (0, 1], got " + fmt(p.top_p));
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) return InvalidArgument("min_p must be in [0, 1], got " + fmt(p.min_p));
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty))
    return InvalidArgument("repetition_penalty must be > 0, got " + fmt(p.repetition_penalty));
  if (p.repetition_window < -1)
    return InvalidArgument("repetition_window must be >= -1, got " + std::to_string(p.repetition_window));
  if (!std::isfinite(p.presence_penalty) || !std::isfinite(p.frequency_penalty))
    return InvalidArgument("presence_penalty and frequency_penalty must be finite");
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || id >= n_vocab)
      return InvalidArgument("logit_bias: token id " + std::to_string(id) + " out of range [0, " +
                             std::to_string(n_vocab) + ")");
    if (std::isnan(bias)) return InvalidArgument("logit_bias: bias for token " + std::to_string(id) + " is NaN");
  }
  if (p.top_logprobs < -1 || p.top_logprobs > 20)
    return InvalidArgument("top_logprobs must be in [0, 20], got " + std::to_string(p.top_logprobs));
  return OkStatus();
}

void log_softmax(const float* logits, int n, float* out) {
  const float mx = max_value(logits, n);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const float lse = mx + static_cast<float>(std::log(sum));
  for (int i = 0; i < n; ++i) out[i] = logits[i] - lse;
}

Sampler::Sampler(SamplingParams params, uint64_t fallback_seed)
    : params_(std::move(params)), rng_(params_.has_seed ? params_.seed : fallback_seed) {}

void Sampler::accept(int32_t token) { ++generated_counts_[token]; }

void Sampler::logit_edits(int n_vocab, const std::vector<int32_t>& context, std::vector<LogitEdit>* edits) const {
  edits->clear();
  std::unordered_map<int32_t, size_t> at;  // token -> index in *edits
  auto edit = [&](int32_t t) -> LogitEdit& {
    auto [it, fresh] = at.emplace(t, edits->size());
    if (fresh) edits->push_back(LogitEdit{t});
    return (*edits)[it->second];
  };
  for (const auto& [id, bias] : params_.logit_bias)
    if (id >= 0 && id < n_vocab) edit(id).bias += bias;
  if (params_.repetition_penalty != 1.0f) {
    const size_t n = context.size();
    const size_t w = params_.repetition_window < 0 ? n : std::min(n, static_cast<size_t>(params_.repetition_window));
    for (size_t i = n - w; i < n; ++i)
      if (context[i] >= 0 && context[i] < n_vocab) edit(context[i]).repeat = true;
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f)
    for (const auto& [t, count] : generated_counts_)
      if (t >= 0 && t < n_vocab)
        edit(t).subtract = params_.frequency_penalty * static_cast<float>(count) + params_.presence_penalty;
  std::sort(edits->begin(), edits->end(), [](const LogitEdit& a, const LogitEdit& b) { return a.token < b.token; });
}

void Sampler::apply_penalties(float* logits, int n_vocab, const std::vector<int32_t>& context) const {
  std::vector<LogitEdit> edits;
  logit_edits(n_vocab, context, &edits);
  const float p = params_.repetition_penalty;
  for (const LogitEdit& e : edits) {
    float x = logits[e.token] + e.bias;
    if (e.repeat) x = x > 0 ? x / p : x * p;
    logits[e.token] = x - e.subtract;
  }
}

// work: [n_vocab] processed logits. Applies temperature, top-k, top-p, min-p and draws.
int32_t Sampler::draw(std::vector<float>& work, int n_vocab) {
  const float inv_t = 1.0f / params_.temperature;
  float mx = max_value(work.data(), n_vocab);
  if (!std::isfinite(mx)) mx = 0.0f;  // every logit -inf: degenerate, fall through to uniform over -inf (id 0)
  // Unnormalised probabilities; order candidates lazily (partial sorts) since top-p usually keeps few tokens. The exp
  // stays std::exp on purpose: a vectorised exp rounds differently, and a seeded request must draw the same tokens on
  // every CPU (generic or AVX2).
  std::vector<int32_t> ids(n_vocab);
  std::iota(ids.begin(), ids.end(), 0);
  double total = 0.0;
  for (int i = 0; i < n_vocab; ++i) {
    work[i] = std::exp((work[i] - mx) * inv_t);
    total += work[i];
  }
  if (!(total > 0.0)) return 0;
  auto more_likely = [&](int32_t a, int32_t b) { return work[a] > work[b] || (work[a] == work[b] && a < b); };
  int n_keep = n_vocab;
  int sorted = 0;  // ids[0..sorted) are the `sorted` most likely, in order
  auto sort_prefix = [&](int k) {
    k = std::min(k, n_vocab);
    if (k <= sorted) return;
    std::partial_sort(ids.begin() + sorted, ids.begin() + k, ids.end(), more_likely);
    sorted = k;
  };
  if (params_.top_k > 0 && params_.top_k < n_keep) {
    sort_prefix(params_.top_k);
    n_keep = params_.top_k;
  }
  if (params_.top_p < 1.0f) {
    double kept_mass = 0.0;
    if (n_keep < n_vocab) {
      for (int i = 0; i < n_keep; ++i) kept_mass += work[ids[i]];
    } else {
      kept_mass = total;
    }
    const double target = params_.top_p * kept_mass;
    double cum = 0.0;
    int i = 0;
    for (int chunk = 64;; chunk *= 4) {
      sort_prefix(std::min(n_keep, i + chunk));
      for (; i < sorted && i < n_keep; ++i) {
        cum += work[ids[i]];
        if (cum >= target) break;
      }
      if (i < n_keep && cum >= target) { ++i; break; }
      if (i >= n_keep) break;
    }
    n_keep = std::max(1, std::min(n_keep, i));
  }
  if (params_.min_p > 0.0f) {
    sort_prefix(1);
    const float threshold = params_.min_p * work[ids[0]];
    if (sorted >= n_keep) {
      int k = 1;
      while (k < n_keep && work[ids[k]] >= threshold) ++k;
      n_keep = k;
    } else {  // survivors unsorted beyond `sorted`: filter in place, order irrelevant for drawing
      int k = 0;
      for (int i = 0; i < n_keep; ++i)
        if (work[ids[i]] >= threshold) ids[k++] = ids[i];
      n_keep = std::max(1, k);
    }
  }
  double mass = 0.0;
  for (int i = 0; i < n_keep; ++i) mass += work[ids[i]];
  const double u = rng_.next_double() * mass;
  double cum = 0.0;
  for (int i = 0; i < n_keep; ++i) {
    cum += work[ids[i]];
    if (u < cum) return ids[i];
  }
  return ids[n_keep - 1];
}

SampleResult Sampler::sample(const float* logits, int n_vocab, const std::vector<int32_t>& context) {
  SampleResult r;
  const bool modifies = !params_.logit_bias.empty() || params_.repetition_penalty != 1.0f ||
                        params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f;
  if (params_.temperature == 0.0f && !modifies) {
    r.token = argmax(logits, n_vocab);  // common greedy case: no copy of the row
  } else {
    work_.assign(logits, logits + n_vocab);
    apply_penalties(work_.data(), n_vocab, context);
    r.token = params_.temperature == 0.0f ? argmax(work_.data(), n_vocab) : draw(work_, n_vocab);
  }
  if (params_.top_logprobs >= 0) {
    std::vector<float> lp(n_vocab);  // [n_vocab]
    log_softmax(logits, n_vocab, lp.data());
    r.logprob = lp[r.token];
    const int n = std::min(params_.top_logprobs, n_vocab);
    if (n > 0) {
      std::vector<int32_t> ids(n_vocab);
      std::iota(ids.begin(), ids.end(), 0);
      std::partial_sort(ids.begin(), ids.begin() + n, ids.end(),
                        [&](int32_t a, int32_t b) { return lp[a] > lp[b] || (lp[a] == lp[b] && a < b); });
      for (int i = 0; i < n; ++i) r.top.push_back({ids[i], lp[ids[i]]});
    }
  }
  return r;
}

}  // namespace citadel::engine
