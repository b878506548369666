// CudaRunner (see cuda_runner.h): translates engine batches into CudaDecoder steps.
#include "runtime/cuda_runner.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/env.h"
#include "base/log.h"
#include "model/arch.h"
#include "model/shard.h"
#include "model/weights.h"
#include "runtime/cuda_loader.h"
#include "runtime/cuda_status.cuh"
#include "runtime/device_comm.h"
#include "runtime/nccl_group.h"
#include "runtime/peer_all_reduce.h"

namespace citadel::runtime {

namespace {

// Fault injection only: writes through a pointer no allocation can own.
__global__ void wild_write_kernel(int* p) { p[threadIdx.x] = 1; }

Status inject_cuda_fault(const std::string& kind) {
  if (kind == "sticky") {
    wild_write_kernel<<<1, 32>>>(reinterpret_cast<int*>(uintptr_t{0x10}));
    CUDA_TRY(cudaGetLastError());
    CUDA_TRY(cudaDeviceSynchronize());  // cudaErrorIllegalAddress
    return Internal("cuda runner: the injected illegal write did not fault");
  }
  void* p = nullptr;
  CUDA_TRY(cudaMalloc(&p, size_t{1} << 62));  // cudaErrorMemoryAllocation
  cudaFree(p);
  return Internal("cuda runner: the injected 2^62-byte allocation succeeded");
}

}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

Result<std::unique_ptr<CudaRunner>> CudaRunner::create(CudaRunnerOptions opt) {
  const ModelConfig& c = opt.config;
  if (c.n_layers <= 0 || c.n_kv_heads <= 0 || c.head_dim <= 0 || c.n_vocab <= 0)
    return InvalidArgument("cuda runner: model dimensions must be positive");
  if (opt.decoder.max_seq_len <= 0) return InvalidArgument("cuda runner: max_seq_len must be positive");
  RETURN_IF_ERROR(cuda_supports(c));
  RETURN_IF_ERROR(check_cuda_device(opt.decoder.device, cuda_device_count()));  // refused before any weight is read
  if (opt.tensor_parallel < 1) return InvalidArgument("cuda runner: tensor_parallel must be at least 1");
  if (opt.tensor_parallel > 1) {
    RETURN_IF_ERROR(cuda_tp_supported(c, opt.tensor_parallel));
    if (!opt.load_rank) return InvalidArgument("cuda runner: tensor parallelism needs load_rank");
    if (!env_is("CITADEL_TP_COMM", "host"))
      RETURN_IF_ERROR(check_cuda_device(opt.decoder.device + opt.tensor_parallel - 1, cuda_device_count())
                          .with_context("tensor parallel " + std::to_string(opt.tensor_parallel) + ": one device per rank"));
  }
  if (opt.fault_after_steps == 0)
    if (const char* v = std::getenv("CITADEL_CUDA_FAULT_AFTER_STEPS")) opt.fault_after_steps = std::atoi(v);
  if (opt.fault_kind.empty()) {
    const char* k = std::getenv("CITADEL_CUDA_FAULT_KIND");
    opt.fault_kind = k && *k ? k : "oom";
  }
  if (opt.fault_kind != "oom" && opt.fault_kind != "sticky")
    return InvalidArgument("cuda runner: CITADEL_CUDA_FAULT_KIND must be oom or sticky, got '" + opt.fault_kind + "'");
  if (opt.fault_after_steps > 0)
    log_warn("cuda runner: fault injection on: step " + std::to_string(opt.fault_after_steps) + " fails (" +
             opt.fault_kind + ")");
  return std::unique_ptr<CudaRunner>(new CudaRunner(std::move(opt)));
}

Status CudaRunner::begin_step() {
  if (!failed_.ok()) return failed_;
  ++steps_;
  if (opt_.fault_after_steps > 0 && steps_ == opt_.fault_after_steps) return note(inject_cuda_fault(opt_.fault_kind));
  return OkStatus();
}

Status CudaRunner::note(Status st) {
  if (st.ok() || !failed_.ok()) return st;
  // A sticky error is returned by every later call: ask the device (this also waits for queued work).
  const cudaError_t e = cudaDeviceSynchronize();
  if (cuda_error_is_sticky(e)) {
    (void)(failed_ = Internal(st.message() + "; the device is in a sticky error state (" + cudaGetErrorName(e) +
                              "): this runner fails every later call"));
    return failed_;
  }
  return st;
}

CudaRunner::CudaRunner(CudaRunnerOptions opt) : opt_(std::move(opt)) {}
CudaRunner::~CudaRunner() = default;

int CudaRunner::n_vocab() const { return static_cast<int>(opt_.config.n_vocab); }
int CudaRunner::max_context() const { return opt_.decoder.max_seq_len; }

size_t CudaRunner::kv_bytes_per_token() const {  // every rank's pool together (KV heads split or replicated)
  const int n = opt_.tensor_parallel;
  const ModelConfig c = n > 1 ? tp_rank_config(opt_.config, n) : opt_.config;
  const ArchSpec* arch = find_arch(c.arch);  // non-null: checked by create()
  return static_cast<size_t>(c.n_layers * arch->kv_layout(c).values_per_token()) * (opt_.decoder.exact() ? 4 : 2) *
         static_cast<size_t>(n);
}

Status CudaRunner::allocate_kv(int n_blocks, int block_size) {
  ScopedCudaDevice on(opt_.decoder.device);
  if (n_blocks <= 0 || block_size <= 0)
    return InvalidArgument("cuda runner: allocate_kv(" + std::to_string(n_blocks) + ", " +
                           std::to_string(block_size) + ")");
  CudaDecoderOptions d = opt_.decoder;
  d.kv_blocks = n_blocks;
  d.block_size = block_size;
  // A sequence can never be longer than the pool; the block-table width follows max_seq_len.
  d.max_seq_len = static_cast<int>(std::min<int64_t>(d.max_seq_len, int64_t{n_blocks} * block_size));
  return build_decoder(d);
}

Result<int> CudaRunner::allocate_kv_from_memory(int block_size, double fraction) {
  ScopedCudaDevice on(opt_.decoder.device);  // cudaMemGetInfo below reads this model's card
  if (block_size <= 0 || !(fraction > 0 && fraction < 1))
    return InvalidArgument("cuda runner: allocate_kv_from_memory(" + std::to_string(block_size) + ", " +
                           std::to_string(fraction) + ")");
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
    cudaGetLastError();
    return Unsupported("cuda runner: no CUDA device");
  }
  CudaDecoderOptions d = opt_.decoder;
  d.kv_blocks = 0;  // what the card has left after the weights and activations, minus the reserve
  d.block_size = block_size;
  d.reserve_bytes = static_cast<int64_t>((1.0 - fraction) * static_cast<double>(total_b));
  RETURN_IF_ERROR(build_decoder(d));
  const int64_t n = decoder_->n_kv_blocks();
  if (n > std::numeric_limits<int>::max()) return ResourceExhausted("cuda runner: KV pool of too many blocks");
  return static_cast<int>(n);
}

int CudaRunner::rank_device(int r) const {
  return env_is("CITADEL_TP_COMM", "host") ? opt_.decoder.device : opt_.decoder.device + r;
}

Status CudaRunner::build_comms() {
  const int n = opt_.tensor_parallel;
  if (env_is("CITADEL_TP_COMM", "host")) {
    host_group_ = std::make_unique<ThreadCommGroup>(n);
    for (int r = 0; r < n; ++r) comms_.push_back(host_staged_comm(host_group_->rank(r)));
    return OkStatus();
  }
  std::vector<int> devices;
  for (int r = 0; r < n; ++r) devices.push_back(rank_device(r));
  ASSIGN_OR_RETURN(nccl_, NcclGroup::create(devices));
  if (env_is("CITADEL_TP_COMM", "peer")) {  // collectives of up to 1 MiB a rank through peer memory, larger over NCCL
    ASSIGN_OR_RETURN(peer_, PeerAllReduce::create(devices, kPeerSmallElems));
    for (int r = 0; r < n; ++r) comms_.push_back(peer_device_comm(peer_.get(), r, nccl_device_comm(nccl_.get(), r)));
    return OkStatus();
  }
  for (int r = 0; r < n; ++r) comms_.push_back(nccl_device_comm(nccl_.get(), r));
  return OkStatus();
}

Status CudaRunner::on_ranks(const std::function<Status(CudaDecoder*, int)>& f) {
  if (ranks_.empty()) return f(decoder_.get(), 0);
  // A rank that fails leaves the others waiting in a collective for it: the comms are aborted to release them.
  const Status st = run_ranks(
      static_cast<int>(ranks_.size()) + 1, host_group_.get(),
      [&](int r) {
        if (r == 0) return f(decoder_.get(), 0);  // the caller's thread, whose device is rank 0's already
        ScopedCudaDevice on(rank_device(r));
        return f(ranks_[static_cast<size_t>(r) - 1].get(), r);
      },
      [&] {
        for (auto& c : comms_) c->abort();
      });
  if (st.ok() || !failed_.ok() || comms_.empty() || !comms_[0]->aborted()) return st;
  (void)(failed_ = Internal("tensor parallel: " + st.message() +
                            "; the ranks' collectives were aborted to release the ranks waiting for the failed one, "
                            "so this runner fails every later call (restart to recover)"));
  return failed_;
}

// The decoder for options d (every rank's, with tensor parallelism), its weights loaded (or synthetic) and finalized.
Status CudaRunner::build_decoder(CudaDecoderOptions d) {
  if (decoder_) return InvalidArgument("cuda runner: allocate_kv called twice");
  const int n = opt_.tensor_parallel;
  if (n > 1) RETURN_IF_ERROR(build_comms());
  const ModelConfig rc = n > 1 ? tp_rank_config(opt_.config, n) : opt_.config;
  for (int r = 0; r < n; ++r) {
    CudaDecoderOptions dr = d;
    dr.device = rank_device(r);
    dr.comm = n > 1 ? comms_[static_cast<size_t>(r)].get() : nullptr;
    if (r > 0) dr.kv_blocks = decoder_->n_kv_blocks(), dr.verbose = false;  // every rank the same pool
    ScopedCudaDevice on(dr.device);
    ASSIGN_OR_RETURN(auto dec, CudaDecoder::create(rc, dr));
    if (n > 1) {
      RETURN_IF_ERROR(opt_.load_rank(r, dec.get()));
      RETURN_IF_ERROR(dec->finalize());
    } else if (opt_.load) {
      RETURN_IF_ERROR(opt_.load(dec.get()));
      RETURN_IF_ERROR(dec->finalize());
    } else {
      RETURN_IF_ERROR(dec->init_synthetic(opt_.synthetic_seed));
    }
    if (n > 1 && d.verbose) {
      const auto [eb, ee] = tp_expert_range(rc, r, n);  // MoE: expert parallel (docs/TENSOR_PARALLEL.md)
      const std::string experts =
          rc.has_moe ? ", routed experts " + std::to_string(eb) + ".." + std::to_string(ee - 1) +
                           " of " + std::to_string(rc.moe.n_experts) + ", shared experts' FFN slice " +
                           std::to_string(tp_shared_width(rc, n))
                     : "";
      log_info("cuda tensor parallel: rank " + std::to_string(r) + " of " + std::to_string(n) + " on device " +
               std::to_string(dr.device) + ": " + std::to_string(rc.n_heads) + " heads, " +
               std::to_string(rc.n_kv_heads) + " KV heads, FFN " + std::to_string(rc.ffn_dim) + experts + "; " +
               dec->memory_plan());
    }
    if (r == 0) decoder_ = std::move(dec);
    else ranks_.push_back(std::move(dec));
  }
  opt_.decoder = d;
  if (opt_.warm_up) {
    // A failed warm-up costs only its purpose: the steps it meant to prepare pay their first-time costs when they
    // come (a sticky device error still fails the first real step, as it would have anyway).
    const auto t0 = std::chrono::steady_clock::now();
    const Status s = on_ranks([&](CudaDecoder* dec, int) { return warm_up_decoder(dec, d).status(); });
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!s.ok()) log_warn("cuda warm-up failed, continuing without it: " + s.to_string());
    else if (d.verbose) log_info("cuda warm-up (GEMM tuning per M bucket, decode graphs per batch bucket): " +
                                 std::to_string(static_cast<int>(secs * 1000)) + " ms");
  }
  return OkStatus();
}

Result<double> warm_up_decoder(CudaDecoder* dec, const CudaDecoderOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const int bs = dec->block_size(), width = dec->max_blocks_per_seq();
  const int64_t pool_tokens = dec->n_kv_blocks() * bs;
  const int64_t longest = std::min<int64_t>({o.max_step_tokens, o.max_seq_len, pool_tokens, int64_t{width} * bs});
  std::vector<int32_t> ids;
  for (int64_t m = 16; m <= longest; m *= 2) {  // prefill: one sequence of m tokens in blocks 0, 1, ...
    CudaStep s;
    s.tokens.assign(static_cast<size_t>(m), 0);
    for (int64_t i = 0; i < m; ++i) s.positions.push_back(static_cast<int32_t>(i));
    s.query_start = {0, static_cast<int32_t>(m)};
    s.seq_lens = {static_cast<int32_t>(m)};
    for (int i = 0; i < width; ++i)
      s.block_tables.push_back(static_cast<int32_t>(std::min<int64_t>(i, dec->n_kv_blocks() - 1)));
    RETURN_IF_ERROR(dec->step(s, &ids, nullptr));
  }
  std::vector<int> buckets;  // the decode graphs' batch buckets: powers of two below max_batch, then max_batch
  for (int b = 1; b < o.max_batch; b *= 2) buckets.push_back(b);
  buckets.push_back(o.max_batch);
  for (int b : buckets) {  // decode: b sequences at context 1, sequence i in block i
    if (b > dec->n_kv_blocks()) break;
    for (bool sampled : {false, true}) {
      CudaStep s;
      s.tokens.assign(static_cast<size_t>(b), 0);
      s.positions.assign(static_cast<size_t>(b), 0);
      s.seq_lens.assign(static_cast<size_t>(b), 1);
      for (int i = 0; i <= b; ++i) s.query_start.push_back(i);
      for (int i = 0; i < b; ++i) {
        for (int j = 0; j < width; ++j) s.block_tables.push_back(j == 0 ? i : 0);
      }
      if (sampled) s.sampling.assign(static_cast<size_t>(b), CudaSampling{});
      RETURN_IF_ERROR(dec->step(s, &ids, nullptr));
    }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Status CudaRunner::copy_blocks(const std::vector<std::pair<int, int>>& src_dst) {
  ScopedCudaDevice on(opt_.decoder.device);
  if (!decoder_) return InvalidArgument("cuda runner: copy_blocks before allocate_kv");
  if (!failed_.ok()) return failed_;
  return note(on_ranks([&](CudaDecoder* d, int) { return d->copy_blocks(src_dst); }));
}

Status CudaRunner::prepare_step(const engine::Batch& b) {
  if (!decoder_) return InvalidArgument("cuda runner: forward before allocate_kv");
  const int T = b.n_tokens(), B = b.n_seqs();
  if (T <= 0 || B <= 0) return InvalidArgument("cuda runner: empty batch");
  if (b.block_size != decoder_->block_size())
    return InvalidArgument("cuda runner: batch block_size " + std::to_string(b.block_size) + " != " +
                           std::to_string(decoder_->block_size()));
  if (b.seq_of_token.size() != b.tokens.size() || b.query_start.size() != static_cast<size_t>(B) + 1 ||
      b.block_tables.size() != static_cast<size_t>(B) * std::max(b.max_blocks, 0))
    return InvalidArgument("cuda runner: inconsistent batch sizes");
  const int width = decoder_->max_blocks_per_seq();
  step_.tokens = b.tokens;
  step_.positions = b.positions;
  step_.query_start = b.query_start;
  step_.seq_lens = b.seq_lens;
  step_.block_tables.assign(static_cast<size_t>(B) * width, 0);  // -1 padding -> block 0 (never read)
  for (int s = 0; s < B; ++s)
    for (int i = 0; i < std::min(b.max_blocks, width); ++i) {
      const int32_t v = b.block_tables[static_cast<size_t>(s) * b.max_blocks + i];
      if (v >= 0) step_.block_tables[static_cast<size_t>(s) * width + i] = v;
    }
  step_.all_logits = false;
  step_.sampling.clear();
  return OkStatus();
}

Status CudaRunner::forward_sampled(const engine::Batch& b, const std::vector<engine::RowSampling>& rows,
                                   int32_t* ids, engine::RowLogprobs* logprobs) {
  if (!launched_rows_.empty()) return InvalidArgument("cuda runner: forward_sampled with launched steps outstanding");
  RETURN_IF_ERROR(launch_sampled(b, rows));
  return collect_sampled(ids, logprobs);
}

Status CudaRunner::launch_sampled(const engine::Batch& b, const std::vector<engine::RowSampling>& rows) {
  ScopedCudaDevice on(opt_.decoder.device);
  RETURN_IF_ERROR(prepare_step(b));
  RETURN_IF_ERROR(begin_step());
  const int T = b.n_tokens(), B = b.n_seqs();
  if (rows.size() != b.logit_rows.size()) return InvalidArgument("cuda runner: one sampling entry per logit row");
  for (int32_t& t : step_.tokens) {  // pending: the previous launch's row -> its sequence there
    if (t >= 0) continue;
    const size_t r = static_cast<size_t>(-1 - static_cast<int64_t>(t));
    if (r >= prev_seq_of_row_.size())
      return InvalidArgument("cuda runner: pending token of row " + std::to_string(r) +
                             ", which the previous step lacks");
    t = static_cast<int32_t>(-1 - prev_seq_of_row_[r]);
  }
  step_.sampling.assign(static_cast<size_t>(B), CudaSampling{});  // sequences without a row: greedy, ignored
  std::vector<int> seq_of_row(rows.size());
  for (size_t r = 0; r < rows.size(); ++r) {
    const int i = b.logit_rows[r];
    const int s = i >= 0 && i < T ? b.seq_of_token[i] : -1;
    if (s < 0 || s >= B || i != b.query_start[s + 1] - 1)
      return InvalidArgument("cuda runner: device sampling needs the last token of a sequence, got row " +
                             std::to_string(i));
    const engine::RowSampling& q = rows[r];
    CudaSampling& d = step_.sampling[static_cast<size_t>(s)];
    d.temperature = q.temperature, d.top_k = q.top_k, d.top_p = q.top_p, d.min_p = q.min_p;
    d.seed = static_cast<uint32_t>(q.seed ^ (q.seed >> 32)), d.counter = q.counter;
    d.repetition_penalty = q.repetition_penalty, d.top_logprobs = q.top_logprobs;
    d.edits.resize(q.edits.size());
    for (size_t i = 0; i < q.edits.size(); ++i) {
      const engine::LogitEdit& e = q.edits[i];
      d.edits[i] = CudaLogitEdit{e.token, e.bias, e.subtract, e.repeat};
    }
    seq_of_row[r] = s;
  }
  RETURN_IF_ERROR(note(on_ranks([&](CudaDecoder* d, int) { return d->launch(step_); })));
  prev_seq_of_row_ = seq_of_row;
  launched_rows_.push_back(std::move(seq_of_row));
  return OkStatus();
}

Status CudaRunner::collect_sampled(int32_t* ids, engine::RowLogprobs* logprobs) {
  ScopedCudaDevice on(opt_.decoder.device);
  if (launched_rows_.empty()) return InvalidArgument("cuda runner: collect without a launched step");
  const std::vector<int> seq_of_row = std::move(launched_rows_.front());
  launched_rows_.erase(launched_rows_.begin());
  std::vector<int32_t> next;
  std::vector<std::vector<int32_t>> others(ranks_.size());  // the other ranks' ids: the same as rank 0's
  RETURN_IF_ERROR(note(on_ranks([&](CudaDecoder* d, int r) {
    return r == 0 ? d->collect(&next, logprobs ? &lps_ : nullptr) : d->collect(&others[static_cast<size_t>(r) - 1]);
  })));
  for (size_t r = 0; r < seq_of_row.size(); ++r) {
    const size_t s = static_cast<size_t>(seq_of_row[r]);
    ids[r] = next[s];
    if (logprobs) logprobs[r] = engine::RowLogprobs{lps_[s].logprob, std::move(lps_[s].top)};
  }
  return OkStatus();
}

Status CudaRunner::forward(const engine::Batch& b, float* logits) {
  ScopedCudaDevice on(opt_.decoder.device);
  if (!launched_rows_.empty()) return InvalidArgument("cuda runner: forward with launched steps outstanding");
  RETURN_IF_ERROR(prepare_step(b));
  RETURN_IF_ERROR(begin_step());
  const int T = b.n_tokens(), B = b.n_seqs(), V = static_cast<int>(opt_.config.n_vocab);
  // The decoder returns the last token's logits of each sequence; other rows need the all-tokens mode.
  std::vector<int> src_row(b.logit_rows.size());
  bool last_only = true;
  for (size_t r = 0; r < b.logit_rows.size(); ++r) {
    const int i = b.logit_rows[r];
    if (i < 0 || i >= T) return InvalidArgument("cuda runner: logit row " + std::to_string(i) + " out of range");
    const int s = b.seq_of_token[i];
    if (s < 0 || s >= B) return InvalidArgument("cuda runner: token " + std::to_string(i) + " has no sequence");
    if (i == b.query_start[s + 1] - 1)
      src_row[r] = s;
    else
      last_only = false;
  }
  step_.all_logits = !last_only;
  RETURN_IF_ERROR(
      note(on_ranks([&](CudaDecoder* d, int r) { return d->step(step_, nullptr, r == 0 ? &logits_ : nullptr); })));
  for (size_t r = 0; r < b.logit_rows.size(); ++r) {
    const size_t src = last_only ? static_cast<size_t>(src_row[r]) : static_cast<size_t>(b.logit_rows[r]);
    std::memcpy(logits + r * V, logits_.data() + src * V, sizeof(float) * V);
  }
  return OkStatus();
}

namespace {
// "<what> loaded in 1.23 s (N MiB staged on T threads)", or "(reference path)".
void log_load(const std::string& what, const CudaLoadStats& s, bool reference) {
  const std::string how = reference ? std::string("reference path")
                                    : std::to_string(s.staged_bytes >> 20) + " MiB staged on " +
                                          std::to_string(s.threads) + " threads";
  char line[240];
  std::snprintf(line, sizeof(line), "%s loaded in %.2f s (%s)", what.c_str(), s.total_s, how.c_str());
  log_info(line);
}
}  // namespace

Result<std::unique_ptr<engine::ModelRunner>> make_cuda_runner(const TensorStore& store, const CudaRunnerOptions& opt) {
  ASSIGN_OR_RETURN(ModelConfig mc, model_config_from(store));  // CudaRunner::create checks cuda_supports(mc)
  CudaRunnerOptions o = opt;
  o.config = mc;
  if (mc.context_len > 0 && mc.context_len < o.decoder.max_seq_len) o.decoder.max_seq_len = static_cast<int>(mc.context_len);
  const TensorStore* st = &store;
  CudaLoadOptions lo;
  if (const char* v = std::getenv("CITADEL_CUDA_LOAD")) {
    const std::string mode = v;
    if (mode != "reference" && mode != "fast" && !mode.empty())
      return InvalidArgument("CITADEL_CUDA_LOAD must be fast or reference, got '" + mode + "'");
    lo.reference = mode == "reference";
  }
  const bool verbose = o.decoder.verbose;
  o.warm_up = !env_is("CITADEL_CUDA_WARMUP", "off");  // off: before / after on one binary
  if (o.tensor_parallel > 1) {  // each rank loads its shard of the model through the CPU loader's views
    ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> w,
                     load_model(store.path(), WeightsOptions{.copy_half_for_decode = false}));
    const std::shared_ptr<const ModelWeights> full = std::move(w);
    const int n = o.tensor_parallel;
    const std::string format = store.format();
    o.load_rank = [full, format, n, lo, verbose](int r, CudaDecoder* d) {
      CudaLoadStats s;
      RETURN_IF_ERROR(load_cuda_shard(*full, format, r, n, d, lo, &s));
      if (verbose) log_load("cuda rank " + std::to_string(r) + " weights", s, lo.reference);
      return OkStatus();
    };
    o.keep_alive = std::make_shared<std::pair<std::shared_ptr<const void>, std::shared_ptr<const ModelWeights>>>(
        o.keep_alive, full);
  } else {  // one decoder: the staged fast load (or its reference twin)
    o.load = [st, mc, lo, verbose](CudaDecoder* d) {
      CudaLoadStats s;
      RETURN_IF_ERROR(load_cuda_weights(*st, mc, d, lo, &s));
      if (verbose) log_load("cuda weights", s, lo.reference);
      return OkStatus();
    };
  }
  ASSIGN_OR_RETURN(auto runner, CudaRunner::create(std::move(o)));
  return std::unique_ptr<engine::ModelRunner>(std::move(runner));
}

}  // namespace citadel::runtime
