// Internals of the audit log shared by the writer (audit_log.cc) and the readers (audit_verify.cc): the canonical
// record hash, Ed25519 keys and signatures (OpenSSL), the head file. Not part of the module's public API.
// Thread-safety: free functions are reentrant; an EVP_PKEY may be used for signing from several threads.
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "audit/audit_log.h"
#include "base/status.h"

namespace citadel::audit::internal {

// prev_hash of the first record when nothing was ever purged.
extern const char* const kZeroHash;

// SHA-256 (hex) of prev_hash || length-prefixed (8-byte big-endian length) fields in a fixed order: a domain tag,
// seq, time_ms, kind, principal, tenant, request_id, client, model, status, detail_text. Length prefixes make the
// encoding injective (no "ab"+"c" == "a"+"bc"); detail is hashed as the exact text stored.
std::string record_hash(const std::string& prev_hash, int64_t seq, const AuditEvent& e,
                        const std::string& detail_text);

// The bytes a checkpoint / anchor signature covers: tag || seq || hash || time_ms (length-prefixed).
std::string checkpoint_message(const char* tag, int64_t seq, const std::string& hash, int64_t time_ms);
constexpr const char* kCheckpointTag = "citadel-audit-checkpoint-v1";
constexpr const char* kAnchorTag = "citadel-audit-anchor-v1";

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

// Loads an Ed25519 private key (PEM), or creates one (mode 0600, O_EXCL) when the file does not exist; see
// audit_keys.h for the key file's creation record and the keyring.
Result<Pkey> load_or_create_signing_key(const std::string& path);
// Loads an Ed25519 key for verification: a private key PEM or a public key PEM.
Result<Pkey> load_verify_key(const std::string& path);
// First 16 hex digits of SHA-256 of the raw public key.
std::string key_id(EVP_PKEY* key);
Result<std::string> sign_hex(EVP_PKEY* key, const std::string& message);
bool verify_hex(EVP_PKEY* key, const std::string& message, const std::string& signature_hex);

// The latest checkpoint this process committed, kept outside the database.
struct Head {
  int64_t seq = 0;
  std::string hash, signature, key_id;
  int64_t time_ms = 0;
};
// Writes path.tmp and renames it over path (atomic for readers and across a process crash); sync: also fsyncs the
// file before the rename and the directory after it (durable across a power loss).
Status write_head(const std::string& path, const Head& head, bool sync = true);
// kNotFound when the file does not exist; kDataLoss when it cannot be parsed.
Result<Head> read_head(const std::string& path);

int64_t now_ms();

}  // namespace citadel::audit::internal
