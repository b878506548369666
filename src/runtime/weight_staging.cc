// Host side of the fast CUDA weight load (see weight_staging.h): staging forms, the batch plan, the parallel fill.
#include "runtime/weight_staging.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <numeric>
#include <string>

#include "base/half.h"
#include "kernels/quant/quant.h"

namespace citadel::runtime {

const char* stage_form_name(StageForm f) {
  switch (f) {
    case StageForm::kRaw16: return "raw16";
    case StageForm::kF16: return "f16";
    case StageForm::kBf16: return "bf16";
    case StageForm::kF32: return "f32";
  }
  return "?";
}

int64_t stage_esz(StageForm f) { return f == StageForm::kF32 ? 4 : 2; }

int64_t stage_align(DType t) {
  const DTypeInfo* info = dtype_info(t);
  return info ? std::max<int64_t>(1, info->block) : 1;
}

namespace {
bool plain_float(DType t) { return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16; }
}  // namespace

Result<StageForm> stage_form(const TensorInfo& t, int storage_esz) {
  if (storage_esz != 2 && storage_esz != 4)
    return InvalidArgument("tensor " + t.name + ": storage of " + std::to_string(storage_esz) + " bytes per element");
  const int64_t n = t.numel();
  if (n < 0 || t.data == nullptr) return DataLoss("tensor " + t.name + ": no data");
  // f8_e4m3 tensors of HF checkpoints carry block scales only the CPU loader applies (model/role_source.h).
  if (!plain_float(t.dtype) && (!dequantize_supported(t.dtype) || t.dtype == DType::kF8E4M3))
    return Unsupported("tensor " + t.name + ": dtype " + dtype_name(t.dtype) + " cannot be loaded on CUDA");
  if (n % stage_align(t.dtype) != 0)
    return DataLoss("tensor " + t.name + ": size is not a whole number of blocks");
  if (t.nbytes < dtype_row_bytes(t.dtype, n)) return DataLoss("tensor " + t.name + ": short data");
  if (storage_esz == 4) return StageForm::kF32;
  if (t.dtype == DType::kBF16) return StageForm::kRaw16;
  if (t.dtype == DType::kF16) return StageForm::kF16;
  return StageForm::kBf16;
}

namespace {

// out [n] = fp32 values of elements [begin, begin + n) of t (begin block-aligned for quantized types).
Status range_to_f32(const TensorInfo& t, int64_t begin, int64_t n, float* out) {
  switch (t.dtype) {
    case DType::kF32:
      std::memcpy(out, t.data + begin * 4, static_cast<size_t>(n) * 4);  // safetensors data may be unaligned
      return OkStatus();
    case DType::kF16:
    case DType::kBF16: {
      const uint8_t* p = t.data + begin * 2;
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + i * 2, 2);
        out[i] = t.dtype == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return OkStatus();
    }
    default: {
      const DTypeInfo* info = dtype_info(t.dtype);
      return dequantize_row(t.dtype, t.data + (begin / info->block) * info->block_bytes, out, n);
    }
  }
}

// Byte range of the file holding elements [begin, end) of t.
void source_bytes(const TensorInfo& t, int64_t begin, int64_t end, const uint8_t** p, size_t* len) {
  const DTypeInfo* info = dtype_info(t.dtype);
  const int64_t block = stage_align(t.dtype);
  const int64_t bb = info ? info->block_bytes : 4;
  const int64_t b0 = begin / block * bb, b1 = (end + block - 1) / block * bb;
  *p = t.data + b0;
  *len = static_cast<size_t>(b1 - b0);
}

}  // namespace

Status stage_range(const TensorInfo& t, StageForm f, int64_t begin, int64_t end, void* dst) {
  const int64_t n = end - begin;
  if (begin < 0 || n < 0 || end > t.numel() || begin % stage_align(t.dtype) != 0 ||
      (end != t.numel() && end % stage_align(t.dtype) != 0))
    return InvalidArgument("tensor " + t.name + ": staging range [" + std::to_string(begin) + ", " +
                           std::to_string(end) + ") is not a block-aligned part of " + std::to_string(t.numel()));
  switch (f) {
    case StageForm::kRaw16:
    case StageForm::kF16:
      if (t.dtype != (f == StageForm::kF16 ? DType::kF16 : DType::kBF16))
        return InvalidArgument("tensor " + t.name + ": " + dtype_name(t.dtype) + " staged as " + stage_form_name(f));
      std::memcpy(dst, t.data + begin * 2, static_cast<size_t>(n) * 2);
      return OkStatus();
    case StageForm::kF32:
      return range_to_f32(t, begin, n, static_cast<float*>(dst));
    case StageForm::kBf16: {
      // Through fp32 in cache-sized runs (a whole number of quant blocks: 4096 is a multiple of 32 and 256).
      constexpr int64_t kRun = 4096;
      float buf[kRun];
      uint16_t* out = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; i += kRun) {
        const int64_t m = std::min(kRun, n - i);
        RETURN_IF_ERROR(range_to_f32(t, begin + i, m, buf));
        for (int64_t j = 0; j < m; ++j) out[i + j] = f32_to_bf16(buf[j]);
      }
      return OkStatus();
    }
  }
  return InvalidArgument("tensor " + t.name + ": unknown staging form");
}

Result<std::vector<StageBatch>> plan_staging(const std::vector<StagedTensor>& tensors, int64_t buffer_bytes,
                                             int64_t piece_bytes) {
  if (buffer_bytes <= 0 || piece_bytes <= 0)
    return InvalidArgument("staging: buffer and piece sizes must be positive");
  constexpr int64_t kOffsetAlign = 256;
  std::vector<StageBatch> batches(1);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const StagedTensor& st = tensors[i];
    const int64_t esz = stage_esz(st.form), align = stage_align(st.tensor->dtype);
    // Pieces cut at piece_bytes are a whole number of blocks and of 256 bytes (the next one starts right after).
    const int64_t unit = std::lcm(align, kOffsetAlign / esz);
    const int64_t max_piece = std::max(unit, piece_bytes / esz / unit * unit);
    for (int64_t b = 0; b < st.count;) {
      StageBatch* cur = &batches.back();
      const int64_t off = (cur->bytes + kOffsetAlign - 1) / kOffsetAlign * kOffsetAlign;
      const int64_t room = off < buffer_bytes ? (buffer_bytes - off) / esz / align * align : 0;
      if (room <= 0) {
        if (cur->pieces.empty())
          return InvalidArgument("staging: a buffer of " + std::to_string(buffer_bytes) + " bytes cannot hold one " +
                                 std::to_string(align) + "-element block of tensor " + st.tensor->name);
        batches.emplace_back();
        continue;
      }
      const int64_t n = std::min({st.count - b, room, max_piece});
      cur->pieces.push_back(StagePiece{static_cast<int>(i), b, b + n, off});
      cur->bytes = off + n * esz;
      b += n;
    }
  }
  if (batches.back().pieces.empty()) batches.pop_back();
  return batches;
}

Status fill_batch(const std::vector<StagedTensor>& tensors, const StageBatch& batch, ThreadPool& pool, void* buffer) {
  std::atomic<bool> failed{false};
  std::mutex mu;
  Status first;
  pool.parallel_for(static_cast<int64_t>(batch.pieces.size()), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e && !failed.load(std::memory_order_relaxed); ++i) {
      const StagePiece& p = batch.pieces[static_cast<size_t>(i)];
      const StagedTensor& st = tensors[static_cast<size_t>(p.tensor)];
      Status s = stage_range(*st.tensor, st.form, p.begin, p.end, static_cast<uint8_t*>(buffer) + p.offset);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (!failed.exchange(true)) first = std::move(s);
      }
    }
  });
  return first;
}

void prefetch_batch(const std::vector<StagedTensor>& tensors, const StageBatch& batch) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  for (const StagePiece& p : batch.pieces) {
    const uint8_t* src;
    size_t len;
    source_bytes(*tensors[static_cast<size_t>(p.tensor)].tensor, p.begin, p.end, &src, &len);
    const uintptr_t a = reinterpret_cast<uintptr_t>(src) & ~(page - 1);
    (void)madvise(reinterpret_cast<void*>(a), len + (reinterpret_cast<uintptr_t>(src) - a), MADV_WILLNEED);
  }
}

}  // namespace citadel::runtime
