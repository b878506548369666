#include "audit/audit_keys.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "base/log.h"

namespace citadel::audit::internal {

namespace {

struct KeyBioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using Bio = std::unique_ptr<BIO, KeyBioFree>;

std::string key_errno_text() { return std::strerror(errno); }

Result<std::string> read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open: " + key_errno_text());
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return IoError(path + ": cannot read");
  return ss.str();
}

void fsync_dir_of(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

// Writes text to path (exclusive create when !replace), or to path.tmp and renames it over path (replace).
Status write_file(const std::string& path, const std::string& text, mode_t mode, bool replace) {
  const std::string target = replace ? path + ".tmp" : path;
  if (replace) ::unlink(target.c_str());  // a stale temporary file of a crashed run
  const int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return IoError(target + ": cannot create: " + key_errno_text());
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return IoError(target + ": cannot write: " + key_errno_text());
  if (replace && ::rename(target.c_str(), path.c_str()) != 0)
    return IoError(path + ": cannot rename into place: " + key_errno_text());
  fsync_dir_of(path);
  return OkStatus();
}

Result<std::string> private_pem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return Internal("audit: cannot encode the signing key");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

Result<std::string> public_pem(EVP_PKEY* key) {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) return Internal("audit: cannot encode a public key");
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// "version=3 created=1767225600" in the comment lines before the PEM block.
int64_t header_value(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("-----BEGIN", 0) == 0) break;
    if (line.empty() || line[0] != '#') continue;
    const size_t at = line.find(" " + name + "=");
    if (at == std::string::npos) continue;
    const char* p = line.c_str() + at + name.size() + 2;
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(p, &end, 10);
    if (end != p && errno == 0 && v >= 0) return v;
  }
  return -1;
}

std::string key_header(const std::string& id, int version, int64_t created) {
  return "# citadel audit signing key\n# key_id=" + id + " version=" + std::to_string(version) +
         " created=" + std::to_string(created) + "\n";
}

Result<Pkey> generate() {
  Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) return Internal("audit: Ed25519 key generation failed");
  return key;
}

}  // namespace

Result<FileIdentity> file_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return NotFound(path + ": does not exist");
    return IoError(path + ": cannot stat: " + key_errno_text());
  }
  FileIdentity f;
  f.dev = st.st_dev;
  f.ino = st.st_ino;
  f.size = st.st_size;
  f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return f;
}

Result<std::shared_ptr<const SigningKey>> load_signing_key(const std::string& path, bool create) {
  if (path.empty()) return InvalidArgument("audit: no signing key file given");
  auto before = file_identity(path);
  if (!before.ok() && before.status().code() == StatusCode::kNotFound) {
    if (!create) return NotFound(path + ": the audit signing key does not exist");
    ASSIGN_OR_RETURN(Pkey key, generate());
    const int64_t now = now_ms() / 1000;
    ASSIGN_OR_RETURN(std::string pem, private_pem(key.get()));
    const Status st = write_file(path, key_header(key_id(key.get()), 1, now) + pem, 0600, /*replace=*/false);
    if (!st.ok()) return st.with_context("cannot create the audit signing key");
    log_info(path + ": created audit signing key " + key_id(key.get()) + " (version 1)");
    // Another process may have created it at the same moment (O_EXCL lost): fall through and load theirs.
  } else if (!before.ok()) {
    return before.status();
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    // Whoever reads the key can forge checkpoints; say so, but do not refuse (mounted secrets are often 0644).
    log_warn(path + ": the audit signing key is readable by group or others; chmod 600 it");
  }
  ASSIGN_OR_RETURN(FileIdentity ident, file_identity(path));
  ASSIGN_OR_RETURN(std::string text, read_text(path));
  Bio bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  Pkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!key) return InvalidArgument(path + ": not a PEM private key");
  if (EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519) return InvalidArgument(path + ": not an Ed25519 key");
  auto k = std::make_shared<SigningKey>();
  k->id = key_id(key.get());
  k->key = std::move(key);
  const int64_t version = header_value(text, "version");
  k->version = version > 0 && version < (1 << 30) ? static_cast<int>(version) : 1;
  k->created_unix = std::max<int64_t>(0, header_value(text, "created"));
  k->file = ident;
  return std::shared_ptr<const SigningKey>(std::move(k));
}

int64_t key_age_days(const SigningKey& key, int64_t now_unix) {
  if (key.created_unix <= 0) return -1;
  return now_unix > key.created_unix ? (now_unix - key.created_unix) / 86400 : 0;
}

std::string keyring_path(const std::string& key_file) { return key_file + ".retired"; }

Result<Keyring> load_keyring(const std::string& path) {
  Keyring ring;
  std::error_code ec;
  if (path.empty() || !std::filesystem::exists(path, ec)) return ring;
  ASSIGN_OR_RETURN(std::string text, read_text(path));
  size_t blocks = 0;
  for (size_t at = text.find("-----BEGIN PUBLIC KEY-----"); at != std::string::npos;
       at = text.find("-----BEGIN PUBLIC KEY-----", at + 1)) {
    ++blocks;
  }
  Bio bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  size_t read = 0;
  while (Pkey key{PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr)}) {
    ++read;
    if (EVP_PKEY_get_id(key.get()) != EVP_PKEY_ED25519) return DataLoss(path + ": a keyring key is not Ed25519");
    std::string id = key_id(key.get());
    ring.emplace(std::move(id), std::move(key));
  }
  ERR_clear_error();  // the reader ends with "no start line"
  if (read != blocks) {
    return DataLoss(path + ": keyring block " + std::to_string(read + 1) + " of " + std::to_string(blocks) +
                    " is not a PEM public key");
  }
  return ring;
}

Result<RotatedKey> rotate_key_files(const std::string& key_file, const std::string& keyring_file, int64_t now_unix) {
  ASSIGN_OR_RETURN(auto old, load_signing_key(key_file, /*create=*/false));
  const std::string ring_path = keyring_file.empty() ? keyring_path(key_file) : keyring_file;
  ASSIGN_OR_RETURN(Keyring ring, load_keyring(ring_path));
  if (ring.count(old->id) == 0) {
    std::string text;
    std::error_code ec;
    if (std::filesystem::exists(ring_path, ec)) {
      ASSIGN_OR_RETURN(text, read_text(ring_path));
      if (!text.empty() && text.back() != '\n') text.push_back('\n');
    } else {
      text = "# citadel audit keyring: public halves of retired audit signing keys; `citadel audit verify` accepts\n"
             "# checkpoints signed by them. Keep this file with the signing key, outside the database.\n";
    }
    ASSIGN_OR_RETURN(std::string pub, public_pem(old->key.get()));
    text += "# key_id=" + old->id + " version=" + std::to_string(old->version) + " created=" +
            std::to_string(old->created_unix) + " retired=" + std::to_string(now_unix) + "\n" + pub;
    const Status st = write_file(ring_path, text, 0644, /*replace=*/true);
    if (!st.ok()) return st.with_context("audit key rotation: keyring (the signing key is unchanged)");
  }
  ASSIGN_OR_RETURN(Pkey fresh, generate());
  const std::string new_id = key_id(fresh.get());
  ASSIGN_OR_RETURN(std::string pem, private_pem(fresh.get()));
  const Status st = write_file(key_file, key_header(new_id, old->version + 1, now_unix) + pem, 0600, /*replace=*/true);
  if (!st.ok()) return st.with_context("audit key rotation: new key (the old key is still current)");
  ASSIGN_OR_RETURN(auto now_key, load_signing_key(key_file, /*create=*/false));
  if (now_key->id != new_id) return Internal(key_file + ": changed by someone else during the rotation");
  RotatedKey r;
  r.old_id = old->id;
  r.new_id = new_id;
  r.old_version = old->version;
  r.new_version = now_key->version;
  r.key = std::move(now_key);
  return r;
}

}  // namespace citadel::audit::internal
