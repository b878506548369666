// load_cuda_weights (cuda_loader.h): the fast path puts a store's tensors into a decoder's weight slots through a
// few pinned staging buffers. For each batch of weight_staging.h's plan: wait until the device has finished copying
// the buffer's previous batch, fill it on the host threads (the file's bytes as they are for bf16 and f16, host
// conversion only for f32 and quantized types), then queue its copies and the in-place bf16 conversion on a copy
// stream and go on with the next buffer: the device copies batch i while the host fills batch i + 1, and the kernel
// is asked (madvise) to read a few batches ahead from the file. load_cuda_shard runs the same over a tensor-parallel
// shard's tensors (views into the file mapping and the shard's copied column slices).
#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "base/thread_pool.h"
#include "kernels/cuda/cuda_ops.h"
#include "model/arch.h"
#include "model/shard.h"
#include "runtime/cuda_loader.h"
#include "runtime/cuda_status.cuh"
#include "runtime/weight_staging.h"

namespace citadel::runtime {

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kPrefetchBatches = 4;  // batches madvise'd ahead of the one being filled

// Pinned staging buffers [n][bytes], one event per buffer (recorded after its copies) and the copy stream. The
// destructor waits for the stream before freeing anything, so an early error return never frees a buffer the
// device still reads.
struct Staging {
  cudaStream_t stream = nullptr;
  std::vector<void*> buffers;
  std::vector<cudaEvent_t> copied;

  Staging() = default;
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  ~Staging() {
    if (stream) cudaStreamSynchronize(stream);
    for (cudaEvent_t e : copied) cudaEventDestroy(e);
    for (void* b : buffers) cudaFreeHost(b);
    if (stream) cudaStreamDestroy(stream);
  }
  Status init(int n, int64_t bytes) {
    CUDA_TRY(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    for (int i = 0; i < n; ++i) {
      void* p = nullptr;
      CUDA_TRY(cudaHostAlloc(&p, static_cast<size_t>(bytes), cudaHostAllocDefault));
      buffers.push_back(p);
      cudaEvent_t e;
      CUDA_TRY(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      copied.push_back(e);
    }
    return OkStatus();
  }
};

// Queues the copies of a filled batch (runs of contiguous pieces of one tensor as one copy) and the in-place
// conversion of its 16-bit runs on s.
Status submit_batch(const std::vector<StagedTensor>& tensors, const std::vector<CudaDecoder::WeightSlot>& slots,
                    const StageBatch& batch, const uint8_t* buffer, cudaStream_t s) {
  const std::vector<StagePiece>& ps = batch.pieces;
  for (size_t i = 0; i < ps.size();) {
    const StagePiece& p = ps[i];
    const StageForm f = tensors[static_cast<size_t>(p.tensor)].form;
    int64_t end = p.end, next = p.offset + p.bytes(f);
    size_t j = i + 1;
    for (; j < ps.size() && ps[j].tensor == p.tensor && ps[j].begin == end && ps[j].offset == next; ++j)
      end = ps[j].end, next += ps[j].bytes(f);
    const CudaDecoder::WeightSlot& w = slots[static_cast<size_t>(p.tensor)];
    void* dst = static_cast<uint8_t*>(w.device) + p.begin * w.esz;
    CUDA_TRY(cudaMemcpyAsync(dst, buffer + p.offset, static_cast<size_t>(next - p.offset), cudaMemcpyHostToDevice, s));
    if (f == StageForm::kF16 || f == StageForm::kRaw16)
      cuda::bf16_inplace(static_cast<uint16_t*>(dst), end - p.begin, f == StageForm::kF16, s);
    i = j;
  }
  CUDA_TRY(cudaGetLastError());
  return OkStatus();
}

// The fast path over a plain list of tensors (plan_cuda_weights of a store, or a shard's model_tensors); where
// names the source in errors. t0: when the caller started planning (setup_s counts from there).
Status load_staged(const std::vector<CudaWeightRef>& refs, const std::string& where, CudaDecoder* dec,
                   const CudaLoadOptions& o, CudaLoadStats* stats, Clock::time_point t0) {
  std::vector<StagedTensor> tensors;
  std::vector<CudaDecoder::WeightSlot> slots;
  std::vector<float> rope;
  for (const CudaWeightRef& w : refs) {
    const TensorInfo& t = *w.tensor;
    if (w.role == TensorRole::kRopeFreqs) {  // [rope_dim / 2] fp32, kept on the host by the decoder
      RETURN_IF_ERROR(tensor_to_f32(t, &rope));
      RETURN_IF_ERROR(dec->set_weight_f32(w.role, w.layer, rope.data(), static_cast<int64_t>(rope.size())));
      continue;
    }
    ASSIGN_OR_RETURN(CudaDecoder::WeightSlot slot, dec->weight_slot(w.role, w.layer));
    if (slot.count != t.numel())
      return InvalidArgument(where + ": tensor " + t.name + " has " + std::to_string(t.numel()) +
                             " elements, the decoder holds " + std::to_string(slot.count));
    ASSIGN_OR_RETURN(StageForm form, stage_form(t, slot.esz));
    tensors.push_back(StagedTensor{&t, form, t.numel()});
    slots.push_back(slot);
    stats->source_bytes += static_cast<int64_t>(dtype_row_bytes(t.dtype, t.numel()));
    stats->staged_bytes += t.numel() * stage_esz(form);
  }
  ASSIGN_OR_RETURN(std::vector<StageBatch> batches, plan_staging(tensors, o.staging_bytes, o.piece_bytes));
  int64_t buffer_bytes = 0;
  for (const StageBatch& b : batches) buffer_bytes = std::max(buffer_bytes, b.bytes);
  const int n_buf = static_cast<int>(std::min<size_t>(std::max(o.n_staging, 1), batches.size()));
  const int threads = o.threads > 0 ? o.threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  ThreadPool pool(threads);
  Staging st;
  RETURN_IF_ERROR(st.init(n_buf, buffer_bytes));
  for (size_t k = 0; k < batches.size() && k < kPrefetchBatches; ++k) prefetch_batch(tensors, batches[k]);
  Clock::time_point t = Clock::now();
  stats->setup_s = seconds_between(t0, t);
  stats->batches = static_cast<int>(batches.size());
  stats->threads = threads;
  for (size_t k = 0; k < batches.size(); ++k) {
    const size_t b = k % static_cast<size_t>(n_buf);
    if (k >= static_cast<size_t>(n_buf)) {  // the device still copies this buffer's previous batch
      CUDA_TRY(cudaEventSynchronize(st.copied[b]));
      const Clock::time_point u = Clock::now();
      stats->wait_s += seconds_between(t, u);
      t = u;
    }
    if (k + kPrefetchBatches < batches.size()) prefetch_batch(tensors, batches[k + kPrefetchBatches]);
    RETURN_IF_ERROR(fill_batch(tensors, batches[k], pool, st.buffers[b]));
    const Clock::time_point u = Clock::now();
    stats->fill_s += seconds_between(t, u);
    t = u;
    RETURN_IF_ERROR(submit_batch(tensors, slots, batches[k], static_cast<const uint8_t*>(st.buffers[b]), st.stream));
    CUDA_TRY(cudaEventRecord(st.copied[b], st.stream));
  }
  CUDA_TRY(cudaStreamSynchronize(st.stream));
  stats->drain_s = seconds_between(t, Clock::now());
  return OkStatus();
}

// The reference twin's sink: fp32 values into dec's slots (rounded or requantized by the decoder).
CudaWeightSink set_weights(CudaDecoder* dec) {
  return [dec](TensorRole r, int layer, const float* p, int64_t n) { return dec->set_weight_f32(r, layer, p, n); };
}

// Runs load(stats, t0) with stats (the caller's, else a local one) reset, t0 the start, and total_s set after.
Status timed_load(CudaLoadStats* stats, const std::function<Status(CudaLoadStats*, Clock::time_point)>& load) {
  CudaLoadStats local;
  CudaLoadStats* s = stats ? stats : &local;
  *s = CudaLoadStats{};
  const Clock::time_point t0 = Clock::now();
  const Status st = load(s, t0);
  s->total_s = seconds_between(t0, Clock::now());
  return st;
}

}  // namespace

Status load_cuda_weights(const TensorStore& store, const ModelConfig& c, CudaDecoder* dec, const CudaLoadOptions& o,
                         CudaLoadStats* stats) {
  return timed_load(stats, [&](CudaLoadStats* s, Clock::time_point t0) -> Status {
    const ArchSpec* arch = find_arch(c.arch);
    if (o.reference || (arch && arch->finish)) return read_cuda_weights(store, c, set_weights(dec));
    ASSIGN_OR_RETURN(std::vector<CudaWeightRef> refs, plan_cuda_weights(store, c));
    return load_staged(refs, store.path(), dec, o, s, t0);
  });
}

Status load_cuda_shard(const ModelWeights& full, const std::string& format, int rank, int n, CudaDecoder* dec,
                       const CudaLoadOptions& o, CudaLoadStats* stats) {
  return timed_load(stats, [&](CudaLoadStats* s, Clock::time_point t0) -> Status {
    ASSIGN_OR_RETURN(std::unique_ptr<ModelWeights> shard, shard_weights(full, rank, n));
    if (o.reference) return read_model_weights(*shard, format, set_weights(dec));
    ASSIGN_OR_RETURN(std::vector<ModelTensor> tensors, model_tensors(*shard, format));
    std::vector<CudaWeightRef> refs;
    for (const ModelTensor& m : tensors) refs.push_back(CudaWeightRef{m.role, m.layer, &m.tensor});
    CudaLoadOptions ro = o;  // the n ranks load at once: each takes its share of the host's cores
    if (ro.threads <= 0)
      ro.threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / std::max(n, 1));
    return load_staged(refs, "rank " + std::to_string(rank) + " of " + std::to_string(n), dec, ro, s, t0);
  });
}

}  // namespace citadel::runtime
