// Tensor-parallel shards of a decoder's weights: rank r of N holds, per the role table's split axis
// (model/roles.h SplitAxis):
//   kRows (column-parallel): its slice of the output rows: q heads [r H/N, (r+1) H/N), their K / V heads, the FFN's
//         gate / up rows [r F/N, (r+1) F/N), the vocabulary rows of the embedding and the LM head (vocab-parallel);
//   kCols (row-parallel): the matching input columns of o and down, whose outputs the ranks sum (all-reduce);
//   kReplicated: all of it (norms, rope factors).
// With N a multiple of the KV heads (and more ranks than KV heads), each rank holds the one KV head its q heads read,
// replicated across the N / KVH ranks of that group (as Megatron-style serving does).
//
// Storage: a row slice is a view into the full weights (the file mapping: a rank reads only its rows); a column
// slice is copied once (each row's slice of whole quantisation blocks). The full ModelWeights must outlive its
// shards. Views carry no interleaved copy (WeightView::interleaved is for whole matrices).
//
//   kExperts: whole heads of MLA's k_b / v_b stacks (with the rank's q heads and o's matching columns; the latent
//         projections and cache stay whole on every rank), and whole routed experts (expert parallel: the router
//         stays whole, each rank runs its experts); the shared experts split as an FFN.
// Supported: the llama family (llama, qwen2), gemma3 and deepseek2. The executor (model/transformer.h with a
// Communicator) reduces the row-parallel outputs, the embedding and the routed experts' sum, and gathers the
// vocabulary slices of the logits.
//
// Thread-safety: pure functions; a shard is immutable like the weights it views.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"
#include "model/config.h"
#include "model/weights.h"

namespace citadel {

// Whether config c splits across n ranks; the error says why not ("tensor parallel 3: 4 attention heads are not a
// multiple of 3 ranks"). Quantised column slices also need whole blocks: checked by shard_weights.
Status tp_supported(const ModelConfig& c, int n);
// Rank r's config: n_heads / n, n_kv_heads / n (1 when replicated), ffn_dim / n; n_vocab stays the whole vocabulary
// (ModelWeights::tp says which rows a rank holds).
ModelConfig tp_rank_config(const ModelConfig& c, int n);
// The shape of role r in a shard of n ranks, rank_config = tp_rank_config(c, n): role_shape(rank_config, r), but the
// routed expert stacks hold n_experts / n experts and the shared experts n_shared * expert_ffn_dim / n of their
// width. The vocabulary roles (kTokEmbd, kOutput) keep the whole vocabulary here: a rank's rows are tp_vocab_range.
std::vector<int64_t> tp_role_shape(const ModelConfig& rank_config, TensorRole r, int n);
// The width of a rank's slice of an MoE layer's shared experts (n_shared * expert_ffn_dim / n; c: the whole model's
// config or a rank's, whose MoE part is the same).
inline int64_t tp_shared_width(const ModelConfig& c, int n) { return c.moe.n_shared * c.moe.expert_ffn_dim / n; }
// The routed experts rank r of n holds (expert parallel): [first, second), n_experts / n of them (c: as above).
inline std::pair<int64_t, int64_t> tp_expert_range(const ModelConfig& c, int r, int n) {
  const int64_t e = c.moe.n_experts / n;
  return {r * e, (r + 1) * e};
}
// The vocabulary rows rank r holds: [begin, end), ceil(V / n) per rank (the last rank fewer, possibly none).
struct VocabRange {
  int64_t begin = 0, end = 0;
};
VocabRange tp_vocab_range(int64_t n_vocab, int r, int n);

// Rank r's shard of full (r in [0, n), tp_supported). n == 1 gives a shard equal to full (views, no copies).
Result<std::unique_ptr<ModelWeights>> shard_weights(const ModelWeights& full, int r, int n);

}  // namespace citadel
