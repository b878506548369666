// Backups of the state: a consistent copy of a live SQLite database (SQLite's online backup API, safe while
// `citadel serve` writes to it), and the manifest that lists every file of a backup with its size and SHA-256 so
// that a restore refuses a backup that was altered, truncated or mixed with another one.
//
// Manifest (MANIFEST.json in the backup directory): {"format": "citadel-backup-v1", "created_ms", "files":
// [{"path", "bytes", "sha256"}...] (relative to the directory), "models": [{"path", "bytes", "sha256"}...]
// (absolute paths; models are not copied), "info": {...free-form facts: source, signing key handling}}.
// Thread-safety: free functions without shared state.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace citadel::store {

// Copies the SQLite database at src_path (which may be open and written by other connections and processes) into
// dst_path (created; must not exist) as one consistent snapshot: all pages are copied inside one read transaction
// (sqlite3_backup_step(-1)), retried while the source is locked (busy_timeout) up to timeout_ms. The copy is
// fsynced. kIo / kDataLoss / kResourceExhausted (still busy) with the file named.
Status sqlite_online_backup(const std::string& src_path, const std::string& dst_path, int timeout_ms = 30000);

// PRAGMA integrity_check on a database file: OkStatus when SQLite answers "ok", else kDataLoss with its answer.
Status sqlite_integrity_check(const std::string& path);

// PostgreSQL state: is `url` a postgresql:// URL or a libpq conninfo (dbname=...)?
bool is_postgres_url(const std::string& url);
// pg_dump of the database at url into file (custom format, one consistent snapshot, no ownership) / pg_restore of
// such a file into the database at url (--clean --if-exists: the dump's tables replace the current ones, in one
// transaction). The password of a postgresql:// URL reaches the child through PGPASSWORD, never its command line.
// kNotFound when the PostgreSQL client tools are not installed; kIo with the tool's last line when it fails.
Status pg_dump_to(const std::string& url, const std::string& file);
Status pg_restore_from(const std::string& file, const std::string& url);

struct ManifestEntry {
  std::string path;  // relative to the backup directory (files) or absolute (models)
  int64_t bytes = 0;
  std::string sha256;  // lower-case hex
};

struct BackupManifest {
  int64_t created_ms = 0;
  std::vector<ManifestEntry> files;
  std::vector<ManifestEntry> models;
  std::string info_json = "{}";  // a JSON object (what was backed up from where, key handling)
};

// Copies src to dst (created with `mode`, must not exist), fsyncs it. kIo naming the file.
Status copy_file_synced(const std::string& src, const std::string& dst, unsigned mode = 0600);

// Hashes the file `dir`/`rel` into an entry (rel may also be an absolute path with dir "").
Result<ManifestEntry> hash_entry(const std::string& dir, const std::string& rel);

// Writes dir/MANIFEST.json (temp file + rename, fsynced).
Status write_manifest(const std::string& dir, const BackupManifest& m);
// Reads dir/MANIFEST.json; kDataLoss when it is not a citadel-backup-v1 manifest.
Result<BackupManifest> read_manifest(const std::string& dir);
// Checks that every file of the manifest exists in dir with its size and SHA-256, that no listed path leaves dir,
// and that dir holds no other regular file (besides MANIFEST.json); kDataLoss naming the first mismatch.
Status verify_manifest_files(const std::string& dir, const BackupManifest& m);
// Checks every model of the manifest (size and SHA-256 of the file at its path); kDataLoss / kNotFound naming it.
Status verify_manifest_models(const BackupManifest& m);

}  // namespace citadel::store
