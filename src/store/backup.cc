#include "store/backup.h"

#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/sha256.h"
#include "base/subprocess.h"

namespace citadel::store {
namespace {

constexpr const char* kFormat = "citadel-backup-v1";
constexpr const char* kManifestName = "MANIFEST.json";

Status fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError(path + ": cannot open to sync");
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? OkStatus() : IoError(path + ": fsync failed");
}

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

Result<DbPtr> open_db(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK)
    return IoError(path + ": cannot open the SQLite database: " + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  return db;
}

nlohmann::json entries_json(const std::vector<ManifestEntry>& v) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& e : v) a.push_back({{"path", e.path}, {"bytes", e.bytes}, {"sha256", e.sha256}});
  return a;
}

Status entries_from(const nlohmann::json& a, std::vector<ManifestEntry>* out) {
  if (!a.is_array()) return DataLoss("backup manifest: a file list is not an array");
  for (const auto& e : a) {
    if (!e.is_object() || !e.contains("path") || !e["path"].is_string() || !e.contains("sha256") ||
        !e["sha256"].is_string() || !e.contains("bytes") || !e["bytes"].is_number_integer())
      return DataLoss("backup manifest: an entry lacks path, bytes or sha256");
    out->push_back({e["path"].get<std::string>(), e["bytes"].get<int64_t>(), e["sha256"].get<std::string>()});
  }
  return OkStatus();
}

Status check_entry(const std::string& full, const ManifestEntry& e, const char* what) {
  struct stat st{};
  if (::stat(full.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    return NotFound(std::string(what) + " " + e.path + ": listed in the manifest but missing");
  if (st.st_size != e.bytes)
    return DataLoss(std::string(what) + " " + e.path + ": " + std::to_string(st.st_size) + " bytes, the manifest says " +
                    std::to_string(e.bytes));
  auto h = sha256_file(full);
  if (!h.ok()) return h.status();
  if (*h != e.sha256)
    return DataLoss(std::string(what) + " " + e.path + ": SHA-256 " + *h + " differs from the manifest's " + e.sha256);
  return OkStatus();
}

}  // namespace

Status sqlite_online_backup(const std::string& src_path, const std::string& dst_path, int timeout_ms) {
  struct stat st{};
  if (::stat(dst_path.c_str(), &st) == 0) return InvalidArgument(dst_path + ": exists already (a backup never overwrites)");
  // Read-write (no create): a WAL database's reader may need to create its -shm file.
  auto src = open_db(src_path, SQLITE_OPEN_READWRITE);
  if (!src.ok()) return src.status();
  sqlite3_busy_timeout(src->get(), 200);
  auto dst = open_db(dst_path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (!dst.ok()) return dst.status();
  sqlite3_backup* b = sqlite3_backup_init(dst->get(), "main", src->get(), "main");
  if (!b) return IoError(dst_path + ": cannot start the SQLite backup: " + sqlite3_errmsg(dst->get()));
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int rc;
  for (;;) {
    // -1: every page in one step, i.e. one read transaction: the copy is one consistent snapshot even while
    // writers commit (WAL lets them go on beside the reader).
    rc = sqlite3_backup_step(b, -1);
    if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED) break;
    if (std::chrono::steady_clock::now() > until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const int fin = sqlite3_backup_finish(b);
  if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
    return ResourceExhausted(src_path + ": the database stayed locked for " + std::to_string(timeout_ms) +
                             " ms; backup not taken");
  if (rc != SQLITE_DONE || fin != SQLITE_OK)
    return IoError(src_path + " -> " + dst_path + ": SQLite backup failed: " + sqlite3_errstr(rc != SQLITE_DONE ? rc : fin));
  dst->reset();  // close before syncing: the copy is complete on disk
  return fsync_path(dst_path);
}

Status sqlite_integrity_check(const std::string& path) {
  auto db = open_db(path, SQLITE_OPEN_READONLY);
  if (!db.ok()) return db.status();
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db->get(), "PRAGMA integrity_check", -1, &stmt, nullptr) != SQLITE_OK)
    return DataLoss(path + ": " + sqlite3_errmsg(db->get()));
  std::string answer;
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    const unsigned char* t = sqlite3_column_text(stmt, 0);
    if (!answer.empty()) answer += "; ";
    answer += t ? reinterpret_cast<const char*>(t) : "";
  }
  sqlite3_finalize(stmt);
  if (answer != "ok") return DataLoss(path + ": integrity check failed: " + answer.substr(0, 300));
  return OkStatus();
}

Status copy_file_synced(const std::string& src, const std::string& dst, unsigned mode) {
  const int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) return IoError(src + ": cannot read");
  const int out = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (out < 0) {
    ::close(in);
    return IoError(dst + ": cannot create (exists already?)");
  }
  char buf[1 << 16];
  Status st = OkStatus();
  for (;;) {
    const ssize_t n = ::read(in, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      st = IoError(src + ": read failed");
      break;
    }
    for (ssize_t off = 0; off < n;) {
      const ssize_t w = ::write(out, buf + off, static_cast<size_t>(n - off));
      if (w <= 0) {
        st = IoError(dst + ": write failed");
        break;
      }
      off += w;
    }
    if (!st.ok()) break;
  }
  if (st.ok() && ::fsync(out) != 0) st = IoError(dst + ": fsync failed");
  ::close(in);
  ::close(out);
  return st;
}

Result<ManifestEntry> hash_entry(const std::string& dir, const std::string& rel) {
  const std::string full = dir.empty() ? rel : dir + "/" + rel;
  struct stat st{};
  if (::stat(full.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return NotFound(full + ": not a regular file");
  auto h = sha256_file(full);
  if (!h.ok()) return h.status();
  return ManifestEntry{rel, static_cast<int64_t>(st.st_size), *h};
}

Status write_manifest(const std::string& dir, const BackupManifest& m) {
  nlohmann::json j;
  j["format"] = kFormat;
  j["created_ms"] = m.created_ms;
  j["files"] = entries_json(m.files);
  j["models"] = entries_json(m.models);
  j["info"] = nlohmann::json::parse(m.info_json, nullptr, false);
  if (j["info"].is_discarded()) j["info"] = nlohmann::json::object();
  const std::string path = dir + "/" + kManifestName, tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << j.dump(2) << "\n";
    if (!f) return IoError(tmp + ": cannot write");
  }
  RETURN_IF_ERROR(fsync_path(tmp));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return IoError(path + ": cannot rename the manifest into place");
  return fsync_path(dir);
}

Result<BackupManifest> read_manifest(const std::string& dir) {
  const std::string path = dir + "/" + kManifestName;
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFound(path + ": no backup manifest (is this a citadel backup directory?)");
  std::stringstream ss;
  ss << f.rdbuf();
  const auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != kFormat)
    return DataLoss(path + ": not a " + std::string(kFormat) + " manifest");
  BackupManifest m;
  m.created_ms = j.value("created_ms", int64_t{0});
  RETURN_IF_ERROR(entries_from(j.value("files", nlohmann::json()), &m.files).with_context(path));
  RETURN_IF_ERROR(entries_from(j.value("models", nlohmann::json::array()), &m.models).with_context(path));
  m.info_json = j.value("info", nlohmann::json::object()).dump();
  return m;
}

Status verify_manifest_files(const std::string& dir, const BackupManifest& m) {
  std::set<std::string> listed;
  for (const auto& e : m.files) {
    if (e.path.empty() || e.path[0] == '/' || e.path.find("..") != std::string::npos || e.path.find('/') != std::string::npos)
      return DataLoss("backup manifest: file path '" + e.path + "' is not a plain name in the backup directory");
    if (!listed.insert(e.path).second) return DataLoss("backup manifest: " + e.path + " is listed twice");
    RETURN_IF_ERROR(check_entry(dir + "/" + e.path, e, "backup file"));
  }
  DIR* d = ::opendir(dir.c_str());
  if (!d) return IoError(dir + ": cannot list the backup directory");
  std::string extra;
  while (dirent* ent = ::readdir(d)) {
    const std::string name = ent->d_name;
    if (name == "." || name == ".." || name == kManifestName) continue;
    if (!listed.count(name)) {
      extra = name;
      break;
    }
  }
  ::closedir(d);
  if (!extra.empty()) return DataLoss(dir + "/" + extra + ": not in the manifest (a backup is restored whole or not at all)");
  return OkStatus();
}

Status verify_manifest_models(const BackupManifest& m) {
  for (const auto& e : m.models) RETURN_IF_ERROR(check_entry(e.path, e, "model"));
  return OkStatus();
}

bool is_postgres_url(const std::string& url) {
  return url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0 || url.find("dbname=") != std::string::npos;
}

namespace {

// The URL without its password, and the environment entry that passes it (none for a conninfo string).
std::pair<std::string, std::vector<std::string>> pg_target(std::string url) {
  std::vector<std::string> env;
  const size_t scheme = url.find("://");
  if (scheme != std::string::npos) {
    const size_t at = url.find('@', scheme);
    const size_t colon = url.find(':', scheme + 3);
    if (at != std::string::npos && colon != std::string::npos && colon < at) {
      env.push_back("PGPASSWORD=" + url.substr(colon + 1, at - colon - 1));
      url.erase(colon, at - colon);
    }
  }
  return {url, env};
}

Status run_pg_tool(std::vector<std::string> argv, const std::vector<std::string>& env, const std::string& what) {
  ProcessOptions o;
  o.env = env;
  auto r = run_process(argv, o);
  if (!r.ok()) return NotFound(argv[0] + " is not installed (apt-get install postgresql-client): " + what);
  if (r->exit_code != 0) return IoError(what + ": " + argv[0] + " failed: " + r->last_line());
  return OkStatus();
}

}  // namespace

Status pg_dump_to(const std::string& url, const std::string& file) {
  auto [target, env] = pg_target(url);
  return run_pg_tool({"pg_dump", "--format=custom", "--no-owner", "--file=" + file, "--dbname=" + target}, env,
                     "dumping the state database");
}

Status pg_restore_from(const std::string& file, const std::string& url) {
  auto [target, env] = pg_target(url);
  return run_pg_tool({"pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction",
                      "--dbname=" + target, file},
                     env, "restoring the state database");
}

}  // namespace citadel::store
