// HugePageBuffer: zero-filled anonymous memory for data streamed from DRAM over and over (CPU decode reads every
// weight byte once per token), backed by 2 MiB transparent huge pages where the kernel gives them: a 2 MiB-aligned
// mmap with madvise(MADV_HUGEPAGE), which works with THP "always" or "madvise". Over 4 KiB pages each page costs a
// TLB miss and restarts the hardware prefetcher's stream; measured on Zen 4 (2 threads, cpu_model_bench, medians of
// 6-7 interleaved runs, load 1.4-1.9): Qwen2-0.5B q4_0 decode 115 vs 100 tok/s, SmolLM2-135M f16 100 vs 89.
// Where mmap fails, elsewhere than Linux, or with CITADEL_CPU_HUGEPAGES=off (before/after benchmarks on one binary):
// ordinary heap memory (same contract, 64-byte aligned, no huge pages). Mapped buffers are left out of core dumps.
// Movable, not copyable; frees on destruction. Thread-safety: none needed beyond the bytes' own use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace citadel {

// False when CITADEL_CPU_HUGEPAGES=off (read once).
bool huge_pages_enabled();

class HugePageBuffer {
 public:
  HugePageBuffer() = default;
  explicit HugePageBuffer(size_t bytes);  // bytes == 0: empty
  ~HugePageBuffer();
  HugePageBuffer(HugePageBuffer&& other) noexcept;
  HugePageBuffer& operator=(HugePageBuffer&& other) noexcept;
  HugePageBuffer(const HugePageBuffer&) = delete;
  HugePageBuffer& operator=(const HugePageBuffer&) = delete;

  uint8_t* data() const { return data_; }  // 64-byte aligned (2 MiB when mapped)
  size_t size() const { return size_; }
  bool huge_pages_advised() const { return map_ != nullptr; }  // mapped and madvise'd (the kernel may still decline)

 private:
  void reset();
  void* map_ = nullptr;
  size_t map_len_ = 0;
  std::unique_ptr<uint8_t[]> heap_;  // the fallback
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace citadel
