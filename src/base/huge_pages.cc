#include "base/huge_pages.h"

#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "base/env.h"

namespace citadel {
namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

bool huge_pages_enabled() {
  static const bool on = !env_is("CITADEL_CPU_HUGEPAGES", "off");
  return on;
}

HugePageBuffer::HugePageBuffer(size_t bytes) : size_(bytes) {
  if (bytes == 0) return;
#if defined(__linux__)
  if (huge_pages_enabled()) {
    // Over-map by one huge page to align the start; the slack stays unused (untouched, so never backed).
    const size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage, len = rounded + kHugePage;
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      data_ = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(p) + kHugePage - 1) / kHugePage * kHugePage);
      (void)madvise(data_, rounded, MADV_HUGEPAGE);  // best effort: the kernel may have THP off
#ifdef MADV_DONTDUMP
      (void)madvise(p, len, MADV_DONTDUMP);  // model weights (maybe decrypted ones) stay out of core dumps
#endif
      map_ = p;
      map_len_ = len;
      return;
    }
  }
#endif
  heap_.reset(new uint8_t[bytes + 64]());
  data_ = heap_.get() + (64 - reinterpret_cast<uintptr_t>(heap_.get()) % 64) % 64;
}

void HugePageBuffer::reset() {
#if defined(__linux__)
  if (map_) munmap(map_, map_len_);
#endif
  map_ = nullptr;
  map_len_ = 0;
  heap_.reset();
  data_ = nullptr;
  size_ = 0;
}

HugePageBuffer::~HugePageBuffer() { reset(); }

HugePageBuffer::HugePageBuffer(HugePageBuffer&& other) noexcept { *this = std::move(other); }

HugePageBuffer& HugePageBuffer::operator=(HugePageBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    map_ = std::exchange(other.map_, nullptr);
    map_len_ = std::exchange(other.map_len_, 0);
    heap_ = std::move(other.heap_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

}  // namespace citadel
