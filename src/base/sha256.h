// SHA-256 (FIPS 180-4), our own implementation: model file checksums for `citadel pull` and synth tests.
// Thread-safety: a Sha256 object is not shared; the free functions are reentrant.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace citadel {

class Sha256 {
 public:
  using Digest = std::array<uint8_t, 32>;

  Sha256() { reset(); }
  void reset();
  void update(const void* data, size_t n);
  // Finishes the hash; the object must be reset() before reuse.
  Digest finish();

 private:
  void compress(const uint8_t* block);  // block: [64] bytes
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_bytes_ = 0;
};

// Lower-case hex of a digest (64 characters).
std::string to_hex(const Sha256::Digest& d);
std::string sha256_hex(const void* data, size_t n);
inline std::string sha256_hex(const std::string& s) { return sha256_hex(s.data(), s.size()); }
// Streams a file through the hash (1 MiB reads); errors name the file.
Result<std::string> sha256_file(const std::string& path);

}  // namespace citadel
