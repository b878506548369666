#include "crypto/secure_buffer.h"

#include <openssl/crypto.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "base/log.h"

namespace citadel::crypto {

SecureBuffer::~SecureBuffer() { reset(); }

SecureBuffer::SecureBuffer(SecureBuffer&& other) noexcept
    : data_(other.data_), size_(other.size_), mapped_(other.mapped_), locked_(other.locked_) {
  other.data_ = nullptr;
  other.size_ = other.mapped_ = 0;
  other.locked_ = false;
}

SecureBuffer& SecureBuffer::operator=(SecureBuffer&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = other.data_;
    size_ = other.size_;
    mapped_ = other.mapped_;
    locked_ = other.locked_;
    other.data_ = nullptr;
    other.size_ = other.mapped_ = 0;
    other.locked_ = false;
  }
  return *this;
}

void SecureBuffer::reset() {
  if (data_) {
    OPENSSL_cleanse(data_, mapped_);
    if (locked_) munlock(data_, mapped_);
    munmap(data_, mapped_);
  }
  data_ = nullptr;
  size_ = mapped_ = 0;
  locked_ = false;
}

Result<SecureBuffer> SecureBuffer::create(size_t size) {
  SecureBuffer b;
  if (size == 0) return b;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  if (size > SIZE_MAX - page) return ResourceExhausted("secure buffer of " + std::to_string(size) + " bytes: too large");
  const size_t mapped = (size + page - 1) / page * page;
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return ResourceExhausted("secure buffer of " + std::to_string(size) + " bytes: " + std::strerror(errno));
  b.data_ = static_cast<uint8_t*>(p);
  b.size_ = size;
  b.mapped_ = mapped;
#ifdef MADV_DONTDUMP
  madvise(p, mapped, MADV_DONTDUMP);  // best effort: a kernel without it still gets a working buffer
#endif
  if (mlock(p, mapped) == 0) {
    b.locked_ = true;
  } else {
    // One warning per process: every model load would otherwise repeat it.
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true))
      log_warn("decrypted data is not locked in memory (mlock of " + std::to_string(mapped) + " bytes: " +
               std::strerror(errno) + "; raise RLIMIT_MEMLOCK / LimitMEMLOCK= to keep it out of swap)");
  }
  return b;
}

}  // namespace citadel::crypto
