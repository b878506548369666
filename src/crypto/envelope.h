// Encrypted files at rest ("CITADEL-ENC" envelopes): model weights encrypted in independently authenticated
// chunks, so a 15 GB model is decrypted with one chunk of working memory besides the output, and any change to the
// file (a byte, a dropped, swapped, duplicated or truncated chunk, a trailing extra) fails authentication.
//
// File layout (integers little-endian; version 1):
//   off  size
//     0    11  magic "CITADEL-ENC"
//    11     1  version = 1
//    12     1  cipher: 1 aes-256-gcm | 2 sm4-gcm | 3 sm4-ctr-hmac-sm3
//    13     1  key id length L (0..255)
//    14     2  reserved, 0
//    16     4  chunk size C (plaintext bytes per chunk, 1 .. 1 GiB)
//    20     8  plaintext size P
//    28    16  file id (random per file)
//    44     L  key id (text, e.g. "model-key@3"; names the key, never holds key material)
//   then N = max(1, ceil(P / C)) chunks, each ciphertext (C bytes, the last P - (N-1)C) followed by its tag
//   (16 bytes for the GCM ciphers, 32 for HMAC-SM3).
// Keys: the 32-byte master key (crypto/key_source.h) is never used directly. Per file, HKDF(master, salt = file id,
// info = "citadel-enc/1 <cipher> ...") derives the cipher keys: HKDF-SHA256 -> a 32-byte AES key; HKDF-SM3 -> a
// 16-byte SM4 key (and a separate 32-byte HMAC-SM3 key for sm4-ctr-hmac-sm3: encrypt-then-MAC with distinct keys).
// Since every file has its own key, the chunk nonce file_id[0..4) || be64(chunk index) is never reused under a key.
// SM4-CTR's 16-byte IV is that nonce || 00000000 (the block counter of one chunk, which is at most 1 GiB).
// Binding: hh = SHA-256(header bytes) (SM3 for the SM4 ciphers); each chunk's AAD is hh || be64(index) || is_last
// (1 byte), and HMAC-SM3 covers AAD || ciphertext. So the header is authenticated by every chunk, chunks cannot move,
// and the chunk marked last must be the one the plaintext size says is last.
// Cipher choice: aes-256-gcm is the default; "sm4" picks sm4-gcm where this OpenSSL has it (3.0 does not), else
// sm4-ctr-hmac-sm3; the header records which, and decryption follows the header.
//
// Errors are one line naming the file: "F: authentication failed at chunk 3: wrong key or modified file",
// "F: truncated at chunk 2", "F: unknown version 7 (this build reads 1)", "F: not an encrypted file".
// Outputs are written to OUT.tmp and renamed over OUT only when complete; on any error the .tmp is removed, so no
// partial plaintext stays on disk.
// Thread-safety: free functions, reentrant; different files may be processed concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "crypto/key_source.h"
#include "crypto/secure_buffer.h"

namespace citadel::crypto {

enum class Cipher : uint8_t { kAes256Gcm = 1, kSm4Gcm = 2, kSm4CtrHmacSm3 = 3 };

inline constexpr size_t kDefaultChunkSize = size_t{4} << 20;
inline constexpr size_t kMaxChunkSize = size_t{1} << 30;
inline constexpr char kEnvelopeMagic[] = "CITADEL-ENC";  // 11 bytes on disk, no terminator
inline constexpr uint8_t kEnvelopeVersion = 1;

const char* cipher_name(Cipher c);  // "aes-256-gcm", "sm4-gcm", "sm4-ctr-hmac-sm3"
// "aes-256-gcm" | "sm4" (the best SM4 suite available) | "sm4-gcm" | "sm4-ctr-hmac-sm3". sm4-gcm when this OpenSSL
// lacks it is Unsupported.
Result<Cipher> parse_cipher(const std::string& name);
bool sm4_gcm_available();

// What a header says (not authenticated until a chunk is: use for display and routing only).
struct EnvelopeInfo {
  Cipher cipher = Cipher::kAes256Gcm;
  std::string key_id;
  uint64_t chunk_size = 0;
  uint64_t plaintext_size = 0;
  uint64_t n_chunks = 0;
};
Result<EnvelopeInfo> read_envelope_info(const std::string& path);
// True when the file starts with the magic (any version).
bool is_encrypted_file(const std::string& path);

// Encrypts in_path to out_path. chunk_size: 1 .. kMaxChunkSize.
Status encrypt_file(const std::string& in_path, const std::string& out_path, const Key& key, Cipher cipher,
                    size_t chunk_size = kDefaultChunkSize);
// Decrypts to a plaintext file (tools and tests; serving uses decrypt_to_memory, which never touches the disk).
Status decrypt_file(const std::string& in_path, const std::string& out_path, const Key& key);
// Decrypts into locked, non-dumpable anonymous memory; memory used: the output plus one chunk.
// A key whose id is non-empty must match the file's key id (a clearer error than an authentication failure).
Result<SecureBuffer> decrypt_to_memory(const std::string& path, const Key& key);
// Re-encrypts under new_key chunk by chunk (plaintext only in memory, one chunk at a time), with a fresh file id.
// cipher / chunk_size: nullopt / 0 keep the input's. out_path may equal in_path (tmp + rename).
Status rekey_file(const std::string& in_path, const std::string& out_path, const Key& old_key, const Key& new_key,
                  std::optional<Cipher> cipher = std::nullopt, size_t chunk_size = 0);

// The primitives the envelope is built from, exposed for known-answer tests.
namespace primitives {
using Bytes = std::vector<uint8_t>;
using View = std::span<const uint8_t>;
// cipher: "AES-256-GCM" or "SM4-GCM"; 16-byte tag. Returns ciphertext || tag.
Result<Bytes> gcm_seal(const char* cipher, View key, View iv, View aad, View plaintext);
// input: ciphertext || tag. DataLoss when the tag does not verify.
Result<Bytes> gcm_open(const char* cipher, View key, View iv, View aad, View input);
Result<Bytes> sm4_ecb_encrypt(View key, View plaintext);  // whole 16-byte blocks, no padding
Result<Bytes> sm4_ctr(View key, View iv, View data);
Result<Bytes> digest(const char* name, View data);  // "SHA256", "SM3"
Result<Bytes> hmac(const char* digest_name, View key, View data);
Result<Bytes> hkdf(const char* digest_name, View ikm, View salt, View info, size_t out_len);
}  // namespace primitives

}  // namespace citadel::crypto
