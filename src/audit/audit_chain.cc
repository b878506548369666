#include "audit/audit_chain.h"

#include <fcntl.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "audit/audit_keys.h"
#include "base/log.h"
#include "base/sha256.h"

namespace citadel::audit::internal {

const char* const kZeroHash = "0000000000000000000000000000000000000000000000000000000000000000";

namespace {

void put_field(Sha256& h, const std::string& s) {
  uint8_t len[8];
  const uint64_t n = s.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (56 - 8 * i));
  h.update(len, sizeof len);
  h.update(s.data(), s.size());
}

void append_field(std::string& out, const std::string& s) {
  const uint64_t n = s.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(static_cast<uint8_t>(n >> (56 - 8 * i))));
  out.append(s);
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

std::string errno_text() { return std::strerror(errno); }

std::string to_hex_bytes(const unsigned char* p, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[p[i] >> 4]);
    out.push_back(kDigits[p[i] & 15]);
  }
  return out;
}

bool from_hex(const std::string& hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  out->clear();
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
  }
  return true;
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open: " + errno_text());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status check_ed25519(EVP_PKEY* key, const std::string& path) {
  if (EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) return InvalidArgument(path + ": not an Ed25519 key");
  return OkStatus();
}

}  // namespace

std::string record_hash(const std::string& prev_hash, int64_t seq, const AuditEvent& e,
                        const std::string& detail_text) {
  Sha256 h;
  h.update(prev_hash.data(), prev_hash.size());
  put_field(h, "citadel-audit-record-v1");
  put_field(h, std::to_string(seq));
  put_field(h, std::to_string(e.time_ms));
  put_field(h, e.kind);
  put_field(h, e.principal);
  put_field(h, e.tenant);
  put_field(h, e.request_id);
  put_field(h, e.client);
  put_field(h, e.model);
  put_field(h, std::to_string(e.status));
  put_field(h, detail_text);
  return to_hex(h.finish());
}

std::string checkpoint_message(const char* tag, int64_t seq, const std::string& hash, int64_t time_ms) {
  std::string m;
  append_field(m, tag);
  append_field(m, std::to_string(seq));
  append_field(m, hash);
  append_field(m, std::to_string(time_ms));
  return m;
}

Result<Pkey> load_or_create_signing_key(const std::string& path) {
  ASSIGN_OR_RETURN(auto key, load_signing_key(path, /*create=*/true));
  EVP_PKEY_up_ref(key->key.get());
  return Pkey(key->key.get());
}

Result<Pkey> load_verify_key(const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, read_file(path));
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    std::unique_ptr<BIO, BioFree> bio2(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    key.reset(PEM_read_bio_PUBKEY(bio2.get(), nullptr, nullptr, nullptr));
  }
  if (!key) return InvalidArgument(path + ": not a PEM private or public key");
  RETURN_IF_ERROR(check_ed25519(key.get(), path));
  return key;
}

std::string key_id(EVP_PKEY* key) {
  unsigned char raw[32];
  size_t n = sizeof raw;
  if (EVP_PKEY_get_raw_public_key(key, raw, &n) != 1) return "";
  return sha256_hex(raw, n).substr(0, 16);
}

Result<std::string> sign_hex(EVP_PKEY* key, const std::string& message) {
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  unsigned char sig[64];
  size_t n = sizeof sig;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), sig, &n, reinterpret_cast<const unsigned char*>(message.data()), message.size()) !=
          1) {
    return Internal("audit: Ed25519 signing failed");
  }
  return to_hex_bytes(sig, n);
}

bool verify_hex(EVP_PKEY* key, const std::string& message, const std::string& signature_hex) {
  std::string sig;
  if (!from_hex(signature_hex, &sig)) return false;
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  return ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key) == 1 &&
         EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
}

Status write_head(const std::string& path, const Head& head, bool sync) {
  nlohmann::json j = {{"seq", head.seq},
                      {"hash", head.hash},
                      {"time_ms", head.time_ms},
                      {"key_id", head.key_id},
                      {"signature", head.signature}};
  std::string text = j.dump();
  text.push_back('\n');
  std::string tmp = path;
  tmp.append(".tmp");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return IoError(tmp + ": cannot create: " + errno_text());
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && (!sync || ::fsync(fd) == 0);
  ::close(fd);
  if (!ok) return IoError(tmp + ": cannot write: " + errno_text());
  if (::rename(tmp.c_str(), path.c_str()) != 0) return IoError(path + ": cannot rename into place: " + errno_text());
  if (!sync) return OkStatus();
  // The rename itself must survive a power loss, or a restarted writer could see an older head than it committed.
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
  return OkStatus();
}

Result<Head> read_head(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return NotFound(path + ": audit head file does not exist");
  ASSIGN_OR_RETURN(std::string text, read_file(path));
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("seq") || !j["seq"].is_number_integer() || !j.contains("hash") ||
      !j["hash"].is_string() || !j.contains("signature") || !j["signature"].is_string()) {
    return DataLoss(path + ": audit head file is not a checkpoint");
  }
  Head h;
  h.seq = j["seq"].get<int64_t>();
  h.hash = j["hash"].get<std::string>();
  h.signature = j["signature"].get<std::string>();
  if (j.contains("time_ms") && j["time_ms"].is_number_integer()) h.time_ms = j["time_ms"].get<int64_t>();
  if (j.contains("key_id") && j["key_id"].is_string()) h.key_id = j["key_id"].get<std::string>();
  return h;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace citadel::audit::internal
