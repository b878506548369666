#include "model/shard.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace citadel {
namespace {

using R = TensorRole;

std::string tp_name(int n) { return "tensor parallel " + std::to_string(n); }

// Rank r's ranges, in rows or columns of the matrices they index.
struct RankRanges {
  std::pair<int64_t, int64_t> q, kv, o, ffn, vocab;
  std::pair<int64_t, int64_t> heads, experts, shared;  // MLA heads (k_b / v_b / kv_b), routed experts, shared FFN
  int64_t kv_b_per_head = 0;                           // rows of kv_b per head (MLA: qk_nope + v)
};

RankRanges rank_ranges(const ModelConfig& c, int r, int n) {
  RankRanges g;
  const int64_t hd = c.head_dim, hq = c.n_heads / n;
  g.q = {r * hq * hd, (r + 1) * hq * hd};
  if (c.n_kv_heads % n == 0) {
    const int64_t hk = c.n_kv_heads / n;
    g.kv = {r * hk * hd, (r + 1) * hk * hd};
  } else {  // n a multiple of the KV heads: the KV head of this rank's q heads
    const int64_t kvh = r * hq / (c.n_heads / c.n_kv_heads);
    g.kv = {kvh * hd, (kvh + 1) * hd};
  }
  const int64_t f = c.ffn_dim / n;
  g.ffn = {r * f, (r + 1) * f};
  const int64_t vw = c.has_mla ? c.mla.v_head_dim : hd;  // attention output width per head (o's columns)
  g.o = {r * hq * vw, (r + 1) * hq * vw};
  g.heads = {r * hq, (r + 1) * hq};
  g.kv_b_per_head = c.mla.qk_nope_dim + c.mla.v_head_dim;
  const int64_t s = tp_shared_width(c, n);
  g.experts = tp_expert_range(c, r, n);
  g.shared = {r * s, (r + 1) * s};
  const VocabRange v = tp_vocab_range(c.n_vocab, r, n);
  g.vocab = {v.begin, v.end};
  return g;
}

// The range a kRows / kCols role splits (rows or columns); kExperts roles: the range of their leading axis.
std::pair<int64_t, int64_t> role_range(const RankRanges& g, R role) {
  switch (role) {
    case R::kWq: case R::kBq: case R::kWqB: return g.q;
    case R::kWo: return g.o;
    case R::kWk: case R::kWv: case R::kBk: case R::kBv: return g.kv;
    case R::kGate: case R::kUp: case R::kDown: return g.ffn;
    case R::kWkB: case R::kWvB: return g.heads;
    case R::kWkvB: return {g.heads.first * g.kv_b_per_head, g.heads.second * g.kv_b_per_head};
    case R::kGateExps: case R::kUpExps: case R::kDownExps: return g.experts;
    case R::kGateShexp: case R::kUpShexp: case R::kDownShexp: return g.shared;
    default: return g.vocab;  // kTokEmbd, kOutput
  }
}

// The count of the leading axis of a kExperts role (heads or experts), to turn its range into rows.
int64_t leading_count(const ModelConfig& c, R role) {
  return role == R::kWkB || role == R::kWvB ? c.n_heads : c.moe.n_experts;
}

// Columns [b, e) of v: a copy of each row's blocks, kept in owned.
Result<WeightView> col_slice(const WeightView& v, int64_t b, int64_t e, R role, int n,
                             std::vector<std::vector<uint8_t>>* owned) {
  const DTypeInfo* info = dtype_info(v.dtype);
  if (b % info->block != 0 || (e - b) % info->block != 0) {
    return InvalidArgument(tp_name(n) + ": " + role_name(role) + "'s " + std::to_string(e - b) +
                           " columns per rank are not whole " + info->name + " blocks of " +
                           std::to_string(info->block));
  }
  const size_t from = static_cast<size_t>(b / info->block) * info->block_bytes;
  const size_t len = static_cast<size_t>((e - b) / info->block) * info->block_bytes;
  std::vector<uint8_t> copy(len * static_cast<size_t>(v.rows));
  const auto* src = static_cast<const uint8_t*>(v.data);
  for (int64_t row = 0; row < v.rows; ++row)
    std::memcpy(copy.data() + row * len, src + row * v.row_bytes() + from, len);
  owned->push_back(std::move(copy));
  return WeightView{v.dtype, owned->back().data(), v.rows, e - b};
}

Status shard_roles(const ModelConfig& c, const RoleWeights& in, const RankRanges& g, int n, RoleWeights* out,
                   std::vector<std::vector<uint8_t>>* owned) {
  for (int i = 0; i < kNumTensorRoles; ++i) {
    const R role = static_cast<R>(i);
    const RoleInfo& info = role_info(role);
    const auto [b, e] = role_range(g, role);
    if (info.matrix) {
      const WeightView& v = in.mat[static_cast<size_t>(i)];
      if (!v.data) continue;
      WeightView& o = out->mat[static_cast<size_t>(i)];
      switch (info.split) {
        case SplitAxis::kReplicated: o = v; break;
        case SplitAxis::kRows: o = v.rows_view(b, e - b); break;
        case SplitAxis::kCols: {
          ASSIGN_OR_RETURN(o, col_slice(v, b, e, role, n, owned));
          break;
        }
        case SplitAxis::kExperts: {  // whole heads or experts: their rows of the stack viewed as [count rows, cols]
          const int64_t per = v.rows / leading_count(c, role);
          o = v.rows_view(b * per, (e - b) * per);
          break;
        }
      }
    } else {
      const float* p = in.vec[static_cast<size_t>(i)];
      if (!p) continue;
      out->vec[static_cast<size_t>(i)] = info.split == SplitAxis::kRows ? p + b : p;
    }
  }
  return OkStatus();
}

}  // namespace

Status tp_supported(const ModelConfig& c, int n) {
  if (n < 1) return InvalidArgument(tp_name(n) + ": the rank count must be at least 1");
  if (n == 1) return OkStatus();
  if (c.has_moe && c.moe.n_experts % n != 0) {
    return InvalidArgument(tp_name(n) + ": " + std::to_string(c.moe.n_experts) + " experts are not a multiple of " +
                           std::to_string(n) + " ranks");
  }
  if (c.has_moe && c.moe.n_shared * c.moe.expert_ffn_dim % n != 0) {
    return InvalidArgument(tp_name(n) + ": the shared experts' width " +
                           std::to_string(c.moe.n_shared * c.moe.expert_ffn_dim) + " is not a multiple of " +
                           std::to_string(n) + " ranks");
  }
  if (c.n_heads % n != 0) {
    return InvalidArgument(tp_name(n) + ": " + std::to_string(c.n_heads) + " attention heads are not a multiple of " +
                           std::to_string(n) + " ranks");
  }
  if (c.n_kv_heads % n != 0 && n % c.n_kv_heads != 0) {
    return InvalidArgument(tp_name(n) + ": " + std::to_string(c.n_kv_heads) + " KV heads neither divide among " +
                           std::to_string(n) + " ranks nor replicate evenly over them");
  }
  if (c.ffn_dim % n != 0) {
    return InvalidArgument(tp_name(n) + ": the FFN width " + std::to_string(c.ffn_dim) + " is not a multiple of " +
                           std::to_string(n) + " ranks");
  }
  return OkStatus();
}

ModelConfig tp_rank_config(const ModelConfig& c, int n) {
  ModelConfig r = c;
  r.n_heads = c.n_heads / n;
  r.n_kv_heads = std::max<int64_t>(1, c.n_kv_heads / n);
  r.ffn_dim = c.ffn_dim / n;
  return r;
}

std::vector<int64_t> tp_role_shape(const ModelConfig& rank_config, TensorRole r, int n) {
  std::vector<int64_t> shape = role_shape(rank_config, r);
  if (n <= 1 || shape.empty()) return shape;
  switch (r) {
    case R::kGateExps: case R::kUpExps: case R::kDownExps: case R::kGateShexp: case R::kUpShexp:
      shape[0] /= n;  // experts, or the shared width
      break;
    case R::kDownShexp: shape[1] /= n; break;
    default: break;
  }
  return shape;
}

VocabRange tp_vocab_range(int64_t n_vocab, int r, int n) {
  const int64_t per = (n_vocab + n - 1) / n;
  return {std::min(n_vocab, r * per), std::min(n_vocab, (r + 1) * per)};
}

Result<std::unique_ptr<ModelWeights>> shard_weights(const ModelWeights& full, int r, int n) {
  RETURN_IF_ERROR(tp_supported(full.config, n));
  if (r < 0 || r >= n) return InvalidArgument(tp_name(n) + ": no rank " + std::to_string(r));
  if (full.tp.size != 1) return InvalidArgument(tp_name(n) + ": the weights are a shard already");
  auto s = std::make_unique<ModelWeights>();
  s->config = tp_rank_config(full.config, n);
  s->arch = full.arch;
  s->upcast = full.upcast;
  const RankRanges g = rank_ranges(full.config, r, n);
  s->tp = {r, n, g.vocab.first, g.vocab.second, g.experts.first, g.experts.second};
  if (n == 1) {
    s->global = full.global;
    s->layers = full.layers;
    return s;
  }
  RETURN_IF_ERROR(shard_roles(full.config, full.global, g, n, &s->global, &s->owned_bytes));
  s->layers.resize(full.layers.size());
  for (size_t l = 0; l < full.layers.size(); ++l)
    RETURN_IF_ERROR(shard_roles(full.config, full.layers[l], g, n, &s->layers[l], &s->owned_bytes));
  return s;
}

}  // namespace citadel
