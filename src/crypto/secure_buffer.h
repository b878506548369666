// SecureBuffer: memory for secrets too large for the stack or std::vector (decrypted model weights, keys).
// Anonymous private mmap (never backed by a file, so the plaintext cannot reach the page cache or a file on disk),
// mlock()ed when the OS allows it (so it is not swapped out), MADV_DONTDUMP (so it is not in core dumps), and
// wiped with OPENSSL_cleanse before munmap on destruction.
// When mlock is refused (RLIMIT_MEMLOCK is usually 8 MiB for non-root users) the buffer still works; locked() is
// false and create() logs one warning per process, since a model of many GB can rarely be locked.
// Thread-safety: not synchronised; one owner writes it, after which any thread may read it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/status.h"

namespace citadel::crypto {

class SecureBuffer {
 public:
  SecureBuffer() = default;
  ~SecureBuffer();
  SecureBuffer(SecureBuffer&& other) noexcept;
  SecureBuffer& operator=(SecureBuffer&& other) noexcept;
  SecureBuffer(const SecureBuffer&) = delete;
  SecureBuffer& operator=(const SecureBuffer&) = delete;

  // size bytes, zero-filled. size 0 gives an empty buffer (data() == nullptr). Fails (ResourceExhausted) when the
  // mapping cannot be made.
  static Result<SecureBuffer> create(size_t size);

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool locked() const { return locked_; }

  // Wipes and unmaps now (the destructor does the same).
  void reset();

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;      // bytes the caller asked for
  size_t mapped_ = 0;    // bytes mapped (size_ rounded up to pages)
  bool locked_ = false;
};

}  // namespace citadel::crypto
