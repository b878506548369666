// Keys for encryption at rest, and where they come from.
//
// A Key is a 32-byte master key with an id (recorded in every file it encrypts, e.g. "model-key@3") and a creation
// time (for the rotation warning). The same 32 bytes serve every cipher: AES-256-GCM and SM4 both use per-file keys
// derived from it (crypto/envelope.h), so one key file works with --cipher aes-256-gcm and --cipher sm4.
//
// Key specs (load_key):
//   PATH | file:PATH   a key file: the text format below, or exactly 32 raw bytes, or 64 hex digits
//   env:NAME           the environment variable NAME holds the text format or 64 hex digits
//   cmd:PROG ARG...    runs PROG (execvp, no shell; arguments split on spaces, no quoting) with a 10 s timeout and
//                      reads the text format or 64 hex digits from its stdout: how sites plug in Vault or an HSM
//                      client. A non-zero exit, a signal or the timeout is an error naming the command (never its
//                      output, which may hold key bytes).
// Text format (one key=value per line, '#' comments, blank lines ignored; only key= is required):
//   id=model-key@3
//   created=2026-12-05T00:00:00Z        (UTC, or unix seconds; absent: the key file's mtime, else unknown = 0)
//   key=<64 hex digits>
// Key bytes live in memory that is wiped (OPENSSL_cleanse) when freed; no function here logs or returns them in a
// message.
// Thread-safety: free functions, reentrant. load_key("env:...") reads the environment (getenv).
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace citadel::crypto {

// Wipes memory before giving it back, so key bytes do not linger in freed heap blocks.
template <typename T>
struct CleansingAllocator {
  using value_type = T;
  CleansingAllocator() = default;
  template <typename U>
  CleansingAllocator(const CleansingAllocator<U>&) {}
  T* allocate(size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, size_t n);
  template <typename U>
  bool operator==(const CleansingAllocator<U>&) const { return true; }
};
void cleanse_memory(void* p, size_t n);  // OPENSSL_cleanse, kept out of this header
template <typename T>
void CleansingAllocator<T>::deallocate(T* p, size_t n) {
  cleanse_memory(p, n * sizeof(T));
  std::allocator<T>().deallocate(p, n);
}

using KeyBytes = std::vector<uint8_t, CleansingAllocator<uint8_t>>;

inline constexpr size_t kKeyBytes = 32;

struct Key {
  std::string id;           // "" when the source names none
  KeyBytes bytes;           // kKeyBytes bytes
  int64_t created_unix = 0; // 0 = unknown
};

// Loads a key from a spec (above). Errors name the spec and what is wrong, in one line.
Result<Key> load_key(const std::string& spec);

// Parses the text format or 64 hex digits (the content of a key file, variable or command output).
// `where` names the source in errors.
Result<Key> parse_key_text(const std::string& text, const std::string& where);

// A fresh random key (OpenSSL RAND_bytes), created now.
Result<Key> generate_key(const std::string& id);

// Writes a key in the text format, mode 0600; refuses to overwrite an existing file.
Status write_key_file(const std::string& path, const Key& key);

// True when the key's creation time is known and more than `days` days before `now` (unix seconds): serve warns
// at start-up when a model key is older than the rotation period (90 days by default).
bool key_older_than(const Key& key, int days, int64_t now);

// Runs argv[0] (PATH lookup, no shell) and returns its stdout (at most 64 KiB); kills it after timeout_ms.
// Errors: cannot start, timeout, non-zero exit or signal. Exposed for tests.
Result<std::string> run_key_command(const std::vector<std::string>& argv, int timeout_ms);

}  // namespace citadel::crypto
