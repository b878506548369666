// MmapFile: a read-only memory map of a whole file. Movable, not copyable; unmaps on destruction.
// wrap() makes one over bytes already in memory (e.g. a model decrypted into locked memory, crypto/envelope.h):
// it then holds a reference to their owner instead of a mapping, so readers built on MmapFile work unchanged.
// Thread-safety: the mapped bytes are immutable and may be read from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"

namespace citadel {

class MmapFile {
 public:
  MmapFile() = default;
  ~MmapFile();
  MmapFile(MmapFile&& other) noexcept;
  MmapFile& operator=(MmapFile&& other) noexcept;
  MmapFile(const MmapFile&) = delete;
  MmapFile& operator=(const MmapFile&) = delete;

  static Result<MmapFile> open(const std::string& path);
  // [data, data + size) must stay valid while `owner` lives; the MmapFile keeps owner alive. name is path().
  static MmapFile wrap(std::shared_ptr<const void> owner, const uint8_t* data, size_t size, std::string name);

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // True for a mapping of a file (its pages can be dropped and read again), false for wrap()'s bytes in memory.
  bool file_mapping() const { return owner_ == nullptr; }

 private:
  void reset();
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
  std::shared_ptr<const void> owner_;  // set by wrap(): no mapping of our own to unmap
};

}  // namespace citadel
