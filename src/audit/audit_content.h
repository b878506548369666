// Stored content: the prompt and output of an inference request, kept for sites that must keep them, encrypted
// (AES-256-GCM) under a content key separate from the audit signing key and bound to the audit record it belongs to.
//
// What is stored (state schema version 4, table audit_content, one row per audit record that has content):
//   seq (the record's), request_id, time_ms (the record's), key_id, nonce (hex, 12 random bytes per blob),
//   ciphertext (hex, ciphertext || 16-byte tag).
// The plaintext is one JSON object {"prompt": <the request's messages / prompt as received>, "output": [...]}.
// The cipher key is HKDF-SHA256(content key, fixed salt, info "citadel-audit-content/1"), never the key itself. The AAD is
// tag || request_id || seq || key_id (length-prefixed), so a blob moved to another record does not decrypt.
// The record's detail carries {"content": {"key_id": K, "sha256": H}}, H = SHA-256(nonce || ciphertext || tag), and
// the record hash covers the detail: deleting or replacing a blob is caught by check_content() (run by
// `citadel audit verify`) and by read_content().
// Plaintext never reaches the database, a log line or an error message; errors name seqs and request ids only.
//
// Retention: AuditLog::purge() deletes a record's content in the same transaction as the record.
// Thread-safety: free functions, reentrant; the Database may be used concurrently with a writer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "crypto/key_source.h"
#include "store/database.h"

namespace citadel::audit {

// State schema version 4 "audit content" (after audit_migrations()' version 2; version 3 is the PII policy).
std::vector<store::Migration> audit_content_migrations();

// The id recorded with each blob: the key's own id, else "sha256:" + 16 hex digits of a domain-separated SHA-256
// of the key bytes (names the key without revealing it).
std::string content_key_id(const crypto::Key& key);

struct SealedContent {
  std::string key_id;
  std::string nonce_hex;       // 24 hex digits
  std::string ciphertext_hex;  // ciphertext || tag
  std::string sha256_hex;      // SHA-256(nonce || ciphertext || tag): what the record's detail carries
};

// Encrypts plaintext for the record (request_id, seq). Errors only when OpenSSL fails.
Result<SealedContent> seal_content(const crypto::Key& key, const std::string& request_id, int64_t seq,
                                   const std::string& plaintext);
// Decrypts a blob for the record (request_id, seq). kDataLoss "authentication failed: wrong content key or modified
// content" when the tag does not verify (wrong key, modified blob, blob of another record).
Result<std::string> open_content(const crypto::Key& key, const std::string& request_id, int64_t seq,
                                 const SealedContent& blob);

// One record's decrypted content.
struct ContentEntry {
  int64_t seq = 0;
  std::string request_id;
  nlohmann::json content;  // {"prompt": ..., "output": ...}
};

// The content of every record of request_id, oldest first. kNotFound when no record of that request has stored
// content; kDataLoss when a blob is missing, its SHA-256 differs from the record's detail, or it does not decrypt;
// kInvalidArgument when the key's id differs from the one the record names.
Result<std::vector<ContentEntry>> read_content(store::Database& db, const std::string& request_id,
                                               const crypto::Key& key);

// Compares every record that names stored content with its blob (present, same SHA-256) and every blob with a
// record (no orphans). No key needed. Returns the first problem as {seq, reason}; seq 0 and "" when all agree.
struct ContentCheck {
  int64_t records = 0;  // records with content checked
  int64_t first_bad_seq = 0;
  std::string reason;
  bool ok() const { return reason.empty(); }
};
Result<ContentCheck> check_content(store::Database& db);

}  // namespace citadel::audit
