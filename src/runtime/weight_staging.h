// Host side of the fast CUDA weight load (load_cuda_weights, cuda_loader.h): how each tensor's elements travel from
// the mapped file to the decoder's storage, the split of all tensors into batches that fill one staging buffer each,
// and the parallel fill of a batch. The device side (pinned buffers, copy stream, the in-place f16 -> bf16 kernel)
// is in cuda_weight_upload.cu; nothing here needs CUDA, so the CPU tests check it against the reference conversion.
//
// Bit-exactness contract: per element, the storage ends up holding exactly what the reference path writes
// (tensor_to_f32, then f32_to_bf16 for 2-byte storage or the fp32 value as it is for 4-byte storage).
// - kRaw16: bf16 data into bf16 storage: the bytes as they are, no conversion (bf16 -> f32 -> bf16 is the identity
//   but for signalling NaNs, whose quiet bit f32_to_bf16 sets: the device sets it in place after the copy,
//   cuda::bf16_inplace, a pass at device memory speed).
// - kF16: f16 data into bf16 storage: the bytes as they are; the device converts them in place after the copy
//   (cuda::bf16_inplace: f16 -> f32 exactly, then f32_to_bf16's round to nearest even and NaN rule).
// - kBf16: anything else into bf16 storage (f32, quantized GGUF types): the host rounds each element's fp32 value
//   (the reference dequantize_row for quantized types) with f32_to_bf16.
// - kF32: 4-byte storage (kF32 weights, vectors with fp32 activations): each element's fp32 value.
//
// Thread-safety: pure functions over immutable tensors; fill_batch uses the pool it is given.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "format/tensor_store.h"

namespace citadel::runtime {

enum class StageForm : uint8_t { kRaw16, kF16, kBf16, kF32 };
const char* stage_form_name(StageForm f);

// The form of tensor t into storage of storage_esz bytes per element (2: bf16, 4: fp32). Checks the tensor's data
// (present, long enough, whole blocks); dtypes the CUDA loader cannot convert are kUnsupported naming the tensor.
Result<StageForm> stage_form(const TensorInfo& t, int storage_esz);
// Bytes per staged element: 2 (kRaw16, kF16, kBf16) or 4 (kF32).
int64_t stage_esz(StageForm f);
// Elements a range split must respect: the quantized type's block (32 or 256), else 1.
int64_t stage_align(DType t);

// dst [end - begin] elements of stage_esz(f) bytes = elements [begin, end) of t in form f. begin must be a multiple
// of stage_align(t.dtype), and end too unless it is t.numel(); t must have passed stage_form (data checked).
Status stage_range(const TensorInfo& t, StageForm f, int64_t begin, int64_t end, void* dst);

// One tensor to stage (count == tensor->numel()).
struct StagedTensor {
  const TensorInfo* tensor = nullptr;
  StageForm form = StageForm::kBf16;
  int64_t count = 0;
};
// Elements [begin, end) of tensors[tensor], at byte `offset` of the batch's staging buffer.
struct StagePiece {
  int tensor = 0;
  int64_t begin = 0, end = 0;
  int64_t offset = 0;
  int64_t bytes(StageForm f) const { return (end - begin) * stage_esz(f); }
};
// What one staging buffer carries: pieces in tensor order, offsets increasing, bytes <= the buffer.
struct StageBatch {
  std::vector<StagePiece> pieces;
  int64_t bytes = 0;  // end of the last piece
};

// Splits tensors, in order, into batches of at most buffer_bytes staged bytes, each tensor into pieces of at most
// piece_bytes (the unit one thread converts). A tensor may span batches; a piece never does. Piece offsets are
// multiples of 256 bytes, and pieces of one tensor cut at piece_bytes follow each other without a gap (one copy for
// all of them). InvalidArgument when a buffer cannot hold one aligned block of some tensor (or sizes are <= 0).
Result<std::vector<StageBatch>> plan_staging(const std::vector<StagedTensor>& tensors, int64_t buffer_bytes,
                                             int64_t piece_bytes);

// Fills buffer (at least batch.bytes bytes) with the batch's pieces, in parallel on pool; the first error.
Status fill_batch(const std::vector<StagedTensor>& tensors, const StageBatch& batch, ThreadPool& pool, void* buffer);

// Asks the kernel to start reading the batch's source bytes (madvise WILLNEED on the mapped file): a batch ahead of
// the one being filled, so that a model not in the page cache streams from disk while the host converts. A hint:
// errors are ignored (memory that is not a file mapping, a kernel that declines).
void prefetch_batch(const std::vector<StagedTensor>& tensors, const StageBatch& batch);

}  // namespace citadel::runtime
