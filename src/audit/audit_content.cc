// Stored content (see audit_content.h): sealing, reading back, and the consistency check against the chain.
#include "audit/audit_content.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <map>

#include "base/sha256.h"
#include "crypto/envelope.h"

namespace citadel::audit {

namespace {

using crypto::primitives::Bytes;
using crypto::primitives::View;
using store::Value;

constexpr const char* kV4 = R"sql(
CREATE TABLE audit_content (
  seq BIGINT PRIMARY KEY,
  request_id TEXT NOT NULL,
  time_ms BIGINT NOT NULL,
  key_id TEXT NOT NULL,
  nonce TEXT NOT NULL,
  ciphertext TEXT NOT NULL
);
CREATE INDEX audit_content_request ON audit_content (request_id)
)sql";

constexpr const char* kAadTag = "citadel-audit-content-v1";
constexpr const char* kHkdfInfo = "citadel-audit-content/1";
constexpr const char* kHkdfSalt = "citadel-audit-content-salt";
constexpr size_t kNonceBytes = 12;

void put_field(std::string& out, const std::string& s) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((static_cast<uint64_t>(s.size()) >> (8 * i)) & 0xff));
  out.append(s);
}

std::string aad(const std::string& request_id, int64_t seq, const std::string& key_id) {
  std::string a;
  put_field(a, kAadTag);
  put_field(a, request_id);
  put_field(a, std::to_string(seq));
  put_field(a, key_id);
  return a;
}

View view(const std::string& s) { return View(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }

// The AES key derived from the content key (the master key itself never keys a cipher).
struct CipherKey {
  Bytes bytes;
  ~CipherKey() { OPENSSL_cleanse(bytes.data(), bytes.size()); }
};

Result<CipherKey> derive(const crypto::Key& key) {
  if (key.bytes.size() != crypto::kKeyBytes) return InvalidArgument("audit content: the key must be 32 bytes");
  const std::string info = kHkdfInfo, salt = kHkdfSalt;  // OpenSSL's HKDF refuses an empty salt
  ASSIGN_OR_RETURN(Bytes k, crypto::primitives::hkdf("SHA256", View(key.bytes.data(), key.bytes.size()), view(salt),
                                                    view(info), 32));
  return CipherKey{std::move(k)};
}

std::string hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) s.push_back(d[p[i] >> 4]), s.push_back(d[p[i] & 15]);
  return s;
}

bool unhex(const std::string& s, Bytes* out) {
  if (s.size() % 2) return false;
  auto v = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  out->clear();
  out->reserve(s.size() / 2);
  for (size_t i = 0; i < s.size(); i += 2) {
    const int hi = v(s[i]), lo = v(s[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<uint8_t>(hi * 16 + lo));
  }
  return true;
}

std::string blob_sha(const std::string& nonce_hex, const std::string& ciphertext_hex) {
  Bytes n, c;
  if (!unhex(nonce_hex, &n) || !unhex(ciphertext_hex, &c)) return "";
  n.insert(n.end(), c.begin(), c.end());
  return sha256_hex(n.data(), n.size());
}

// The {"key_id", "sha256"} a record's detail names, if any.
bool detail_content(const std::string& detail_text, std::string* key_id, std::string* sha) {
  auto d = nlohmann::json::parse(detail_text, nullptr, /*allow_exceptions=*/false);
  if (!d.is_object()) return false;
  auto c = d.find("content");
  if (c == d.end() || !c->is_object()) return false;
  *key_id = c->value("key_id", "");
  *sha = c->value("sha256", "");
  return true;
}

}  // namespace

std::vector<store::Migration> audit_content_migrations() { return {{4, "audit content", kV4}}; }

std::string content_key_id(const crypto::Key& key) {
  if (!key.id.empty()) return key.id;
  std::string m = "citadel-audit-content-key-id";
  m.append(reinterpret_cast<const char*>(key.bytes.data()), key.bytes.size());
  const std::string h = sha256_hex(m);
  OPENSSL_cleanse(m.data(), m.size());
  return "sha256:" + h.substr(0, 16);
}

Result<SealedContent> seal_content(const crypto::Key& key, const std::string& request_id, int64_t seq,
                                   const std::string& plaintext) {
  ASSIGN_OR_RETURN(CipherKey k, derive(key));
  uint8_t nonce[kNonceBytes];
  if (RAND_bytes(nonce, sizeof nonce) != 1) return Internal("audit content: RAND_bytes failed");
  SealedContent s;
  s.key_id = content_key_id(key);
  const std::string a = aad(request_id, seq, s.key_id);
  ASSIGN_OR_RETURN(Bytes ct, crypto::primitives::gcm_seal("AES-256-GCM", View(k.bytes), View(nonce, sizeof nonce),
                                                         view(a), view(plaintext)));
  s.nonce_hex = hex(nonce, sizeof nonce);
  s.ciphertext_hex = hex(ct.data(), ct.size());
  Bytes all(nonce, nonce + sizeof nonce);
  all.insert(all.end(), ct.begin(), ct.end());
  s.sha256_hex = sha256_hex(all.data(), all.size());
  return s;
}

Result<std::string> open_content(const crypto::Key& key, const std::string& request_id, int64_t seq,
                                 const SealedContent& blob) {
  Bytes nonce, ct;
  if (!unhex(blob.nonce_hex, &nonce) || nonce.size() != kNonceBytes || !unhex(blob.ciphertext_hex, &ct) ||
      ct.size() < 16) {
    return DataLoss("audit content of record " + std::to_string(seq) + " is malformed (modified)");
  }
  ASSIGN_OR_RETURN(CipherKey k, derive(key));
  const std::string a = aad(request_id, seq, blob.key_id);
  auto pt = crypto::primitives::gcm_open("AES-256-GCM", View(k.bytes), View(nonce), view(a), View(ct));
  if (!pt.ok()) {
    return DataLoss("audit content of record " + std::to_string(seq) +
                    ": authentication failed: wrong content key or modified content");
  }
  std::string out(pt->begin(), pt->end());
  OPENSSL_cleanse(pt->data(), pt->size());
  return out;
}

Result<std::vector<ContentEntry>> read_content(store::Database& db, const std::string& request_id,
                                               const crypto::Key& key) {
  ASSIGN_OR_RETURN(auto recs, db.query("SELECT seq, detail FROM audit_records WHERE request_id = ? ORDER BY seq",
                                       {Value{request_id}}));
  std::vector<ContentEntry> out;
  const std::string my_id = content_key_id(key);
  for (const auto& r : recs) {
    const int64_t seq = store::as_int(r[0]);
    std::string key_id, sha;
    if (!detail_content(store::as_text(r[1]), &key_id, &sha)) continue;
    if (key_id != my_id) {
      return InvalidArgument("record " + std::to_string(seq) + " was stored under content key '" + key_id +
                             "', not '" + my_id + "'");
    }
    ASSIGN_OR_RETURN(auto rows, db.query("SELECT key_id, nonce, ciphertext FROM audit_content WHERE seq = ?",
                                         {Value{seq}}));
    if (rows.empty()) return DataLoss("the stored content of record " + std::to_string(seq) + " is missing (deleted)");
    SealedContent b{store::as_text(rows[0][0]), store::as_text(rows[0][1]), store::as_text(rows[0][2]), ""};
    if (blob_sha(b.nonce_hex, b.ciphertext_hex) != sha) {
      return DataLoss("the stored content of record " + std::to_string(seq) +
                      " does not match the SHA-256 its audit record holds (modified or replaced)");
    }
    if (b.key_id != key_id) return DataLoss("the stored content of record " + std::to_string(seq) + " names another key");
    ASSIGN_OR_RETURN(std::string pt, open_content(key, request_id, seq, b));
    auto j = nlohmann::json::parse(pt, nullptr, /*allow_exceptions=*/false);
    OPENSSL_cleanse(pt.data(), pt.size());
    if (j.is_discarded()) return DataLoss("the stored content of record " + std::to_string(seq) + " is not JSON");
    out.push_back(ContentEntry{seq, request_id, std::move(j)});
  }
  if (out.empty()) return NotFound("no stored content for request id '" + request_id.substr(0, 128) + "'");
  return out;
}

Result<ContentCheck> check_content(store::Database& db) {
  ContentCheck c;
  // Detail texts that name content: the LIKE narrows the scan; detail_content() decides.
  ASSIGN_OR_RETURN(auto recs, db.query("SELECT seq, detail FROM audit_records WHERE detail LIKE '%\"content\":%' "
                                       "ORDER BY seq"));
  ASSIGN_OR_RETURN(auto blobs, db.query("SELECT seq, nonce, ciphertext FROM audit_content ORDER BY seq"));
  std::map<int64_t, std::string> sha_of_blob;
  for (const auto& b : blobs) sha_of_blob[store::as_int(b[0])] = blob_sha(store::as_text(b[1]), store::as_text(b[2]));
  auto bad = [&](int64_t seq, std::string why) {
    if (c.first_bad_seq == 0 || seq < c.first_bad_seq) c.first_bad_seq = seq, c.reason = std::move(why);
  };
  for (const auto& r : recs) {
    const int64_t seq = store::as_int(r[0]);
    std::string key_id, sha;
    if (!detail_content(store::as_text(r[1]), &key_id, &sha)) continue;
    ++c.records;
    auto it = sha_of_blob.find(seq);
    if (it == sha_of_blob.end()) {
      bad(seq, "its stored content is missing (deleted)");
      continue;
    }
    if (it->second != sha) bad(seq, "its stored content does not match the record's SHA-256 (modified or replaced)");
    sha_of_blob.erase(it);
  }
  for (const auto& [seq, sha] : sha_of_blob) bad(seq, "stored content without an audit record naming it");
  return c;
}

}  // namespace citadel::audit
