// The audit signing key's life cycle: the key file with its creation record, the keyring of retired public halves,
// and rotation. Internal to src/audit (the writer and verify use it; the CLI goes through AuditLog).
//
// Key file (<data_dir>/audit.key or --audit-key): an Ed25519 private key PEM, mode 0600. Keys Citadel creates carry
// comment lines before the PEM block, which OpenSSL's PEM reader skips:
//   # citadel audit signing key
//   # key_id=<16 hex> version=<N> created=<unix seconds>
// A key made elsewhere (openssl genpkey) has no such line: version 1, creation time unknown (0). The creation time
// lives in the file so that it survives copies (a file's mtime does not).
//
// Keyring (<key file>.retired unless given): the PUBLIC halves of retired keys, each a PEM block preceded by a
// comment `# key_id=<id> version=<N> created=<unix> retired=<unix>`. The comments are informational: a key's id is
// always recomputed from the key itself. Verification accepts checkpoints signed by the current key or by a key of
// the keyring; any other key is a failure. Keep the keyring with the key, outside the database.
//
// Thread-safety: free functions, reentrant. Files are replaced by rename, so a reader sees the old or the new file.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "audit/audit_chain.h"
#include "base/status.h"

namespace citadel::audit::internal {

// Which file a loaded key came from: a changed inode, size or mtime means the file was replaced (rotation).
struct FileIdentity {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileIdentity& o) const {
    return dev == o.dev && ino == o.ino && size == o.size && mtime_ns == o.mtime_ns;
  }
  bool operator!=(const FileIdentity& o) const { return !(*this == o); }
};
// kNotFound when the file does not exist.
Result<FileIdentity> file_identity(const std::string& path);

struct SigningKey {
  Pkey key;
  std::string id;            // key_id(): 16 hex digits of SHA-256 of the public key; what checkpoints store
  int version = 1;           // 1 for the first key, +1 per rotation
  int64_t created_unix = 0;  // 0 = unknown (a key Citadel did not create)
  FileIdentity file;         // of the file it was loaded from
};

// Loads the key file; creates a version-1 key (0600, O_EXCL) when it does not exist and `create` is true.
Result<std::shared_ptr<const SigningKey>> load_signing_key(const std::string& path, bool create);

// Days since created_unix (floor), or -1 when the creation time is unknown.
int64_t key_age_days(const SigningKey& key, int64_t now_unix);

// The retired public keys by id. A missing file is an empty keyring; an unreadable or malformed one an error.
using Keyring = std::map<std::string, Pkey>;
Result<Keyring> load_keyring(const std::string& path);

// Default keyring path for a key file.
std::string keyring_path(const std::string& key_file);

struct RotatedKey {
  std::string old_id, new_id;
  int old_version = 0, new_version = 0;
  std::shared_ptr<const SigningKey> key;  // the new key, as now on disk
};
// Rotates the key file: appends the current key's public half to the keyring (fsynced; skipped when already there),
// then writes a fresh key (version + 1, created now_unix) to a temporary file and renames it over key_file. A crash
// at any point leaves either the old key current, or the new key current with the old one in the keyring. The
// caller records the rotation in the log. Errors: no key file, unwritable files.
Result<RotatedKey> rotate_key_files(const std::string& key_file, const std::string& keyring_file, int64_t now_unix);

}  // namespace citadel::audit::internal
