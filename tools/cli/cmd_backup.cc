// citadel backup: a consistent snapshot of a data directory, also while `citadel serve` runs on it.
//   citadel backup --out DIR [--data-dir D] [--state-db PATH] [--audit-key F] [--config F] [--model F]...
//                  [--models-dir D] [--include-signing-key]
// DIR (created, mode 0700; must not exist or be empty) receives:
//   audit.head   the audit log's head file, copied FIRST: the database snapshot taken after it holds at least the
//                checkpoint it names (a head newer than the snapshot would make verify fail)
//   state.db     keys, tenants, quotas, PII policies and the audit records: SQLite's online backup (one consistent
//                snapshot while writers go on), integrity-checked
//   audit.pub    the public half of the audit signing key: enough to verify the restored chain
//   audit.key    only with --include-signing-key (then DIR is a secret); by default the signing key stays out and
//                is backed up separately (docs/OPERATIONS.md: key handling)
//   config.yaml  the serve config file (--config), when given
//   MANIFEST.json  size and SHA-256 of every file above and of each model file (--model, --models-dir; models are
//                hashed, not copied: restore checks that the same weights are in place)
// Before the manifest is written the copied audit chain is verified (hash chain, signatures, head) with audit.pub.
//   state.pgdump instead of state.db when the state is in PostgreSQL (--state-db postgresql://...): pg_dump's custom
//                format, one consistent snapshot (the password goes to pg_dump through PGPASSWORD)
#include <dirent.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "api/state.h"
#include "audit/audit_log.h"
#include "base/clock.h"
#include "command.h"
#include "store/backup.h"
#include "store/database.h"

namespace backup_cmd {

using namespace citadel;

struct BackupArgs {
  std::string out, data_dir, state_db, audit_key, config;
  std::vector<std::string> models;
  std::string models_dir;
  bool include_signing_key = false;
};

bool exists(const std::string& p) {
  struct stat st{};
  return ::stat(p.c_str(), &st) == 0;
}

Status make_out_dir(const std::string& dir) {
  if (exists(dir)) {
    DIR* d = ::opendir(dir.c_str());
    if (!d) return InvalidArgument(dir + ": exists and is not a directory");
    int n = 0;
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") ++n;
    ::closedir(d);
    if (n > 0) return InvalidArgument(dir + ": not empty (a backup goes into a new directory)");
    return OkStatus();
  }
  if (::mkdir(dir.c_str(), 0700) != 0) return IoError(dir + ": cannot create");
  return OkStatus();
}

// Writes the public half of the Ed25519 private key in key_file as a PEM public key.
Status write_public_key(const std::string& key_file, const std::string& out) {
  FILE* f = std::fopen(key_file.c_str(), "rb");
  if (!f) return IoError(key_file + ": cannot read the audit signing key");
  EVP_PKEY* key = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (!key) return DataLoss(key_file + ": not a PEM private key");
  FILE* o = std::fopen(out.c_str(), "wbx");
  if (!o) {
    EVP_PKEY_free(key);
    return IoError(out + ": cannot create");
  }
  const int ok = PEM_write_PUBKEY(o, key);
  EVP_PKEY_free(key);
  if (std::fclose(o) != 0 || ok != 1) return IoError(out + ": cannot write the public key");
  return OkStatus();
}

Status add_models(const BackupArgs& a, store::BackupManifest* m) {
  std::vector<std::string> paths = a.models;
  if (!a.models_dir.empty()) {
    DIR* d = ::opendir(a.models_dir.c_str());
    if (!d) return IoError(a.models_dir + ": cannot list the models directory");
    while (dirent* e = ::readdir(d)) {
      const std::string p = a.models_dir + "/" + e->d_name;
      struct stat st{};
      if (e->d_name[0] != '.' && ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) paths.push_back(p);
    }
    ::closedir(d);
  }
  for (const auto& p : paths) {
    auto e = store::hash_entry("", p);
    if (!e.ok()) return e.status();
    m->models.push_back(std::move(*e));
  }
  return OkStatus();
}

int fail(const Status& st) {
  std::fprintf(stderr, "citadel backup: %s\n", st.message().c_str());
  return 1;
}

int run_backup(const BackupArgs& a) {
  const std::string data_dir = a.data_dir.empty() ? api::default_data_dir() : a.data_dir;
  const std::string db_path = a.state_db.empty() ? data_dir + "/state.db" : a.state_db;
  const bool pg = store::is_postgres_url(db_path);
  if (!pg && !exists(db_path)) return fail(NotFound(db_path + ": no state database here"));
  const std::string key_file = a.audit_key.empty() ? data_dir + "/audit.key" : a.audit_key;
  const std::string head_file = data_dir + "/audit.head";
  if (Status st = make_out_dir(a.out); !st.ok()) return fail(st);
  store::BackupManifest m;
  m.created_ms = static_cast<int64_t>(now_seconds() * 1000.0);
  std::vector<std::string> files;
  // The head first, the database after it (see the header comment).
  const bool have_head = exists(head_file);
  if (have_head) {
    if (Status st = store::copy_file_synced(head_file, a.out + "/audit.head", 0600); !st.ok()) return fail(st);
    files.push_back("audit.head");
  }
  if (pg) {
    if (Status st = store::pg_dump_to(db_path, a.out + "/state.pgdump"); !st.ok()) return fail(st);
    files.push_back("state.pgdump");
  } else {
    if (Status st = store::sqlite_online_backup(db_path, a.out + "/state.db"); !st.ok()) return fail(st);
    if (Status st = store::sqlite_integrity_check(a.out + "/state.db"); !st.ok()) return fail(st);
    files.push_back("state.db");
  }
  const bool have_key = exists(key_file);
  if (have_key) {
    if (Status st = write_public_key(key_file, a.out + "/audit.pub"); !st.ok()) return fail(st);
    files.push_back("audit.pub");
    if (a.include_signing_key) {
      if (Status st = store::copy_file_synced(key_file, a.out + "/audit.key", 0600); !st.ok()) return fail(st);
      files.push_back("audit.key");
    }
  }
  if (!a.config.empty()) {
    if (Status st = store::copy_file_synced(a.config, a.out + "/config.yaml", 0600); !st.ok()) return fail(st);
    files.push_back("config.yaml");
  }
  // The copied chain must verify before this backup is called good. PostgreSQL: the database it was dumped from,
  // after the dump (a superset of the snapshot's records; restore verifies the restored copy itself).
  nlohmann::json info = {{"source_data_dir", data_dir}, {"state", pg ? "postgresql" : "sqlite"}};
  if (have_key) {
    auto db = pg ? store::open_database(db_path) : store::open_sqlite(a.out + "/state.db");
    if (!db.ok()) return fail(db.status());
    auto rep = audit::verify_audit(**db, a.out + "/audit.pub", have_head ? a.out + "/audit.head" : "");
    db->reset();
    if (!pg) {
      for (const char* suffix : {"-wal", "-shm"}) std::remove((a.out + "/state.db" + suffix).c_str());
    }
    if (!rep.ok()) return fail(rep.status().with_context("verifying the copied audit log"));
    if (!rep->ok)
      return fail(DataLoss("the copied audit log does not verify at record " + std::to_string(rep->first_bad_seq) +
                           ": " + rep->reason + " (is the source broken? run citadel audit verify)"));
    info["audit_records"] = rep->records;
    info["audit_checkpoints"] = rep->checkpoints;
  }
  info["signing_key"] = !have_key ? "absent (no audit log signing key in the data directory)"
                        : a.include_signing_key ? "included (this backup is a secret: encrypt it, restrict access)"
                                                : "excluded: back up " + key_file + " separately (secret store); "
                                                  "restore with --signing-key";
  for (const auto& f : files) {
    auto e = store::hash_entry(a.out, f);
    if (!e.ok()) return fail(e.status());
    m.files.push_back(std::move(*e));
  }
  if (Status st = add_models(a, &m); !st.ok()) return fail(st);
  m.info_json = info.dump();
  if (Status st = store::write_manifest(a.out, m); !st.ok()) return fail(st);
  std::printf("citadel backup: %s: %zu files, %zu models, audit log %s; signing key %s\n", a.out.c_str(),
              m.files.size(), m.models.size(),
              info.contains("audit_records") ? ("verified (" + std::to_string(info["audit_records"].get<int64_t>()) +
                                                " records)").c_str()
                                             : "not present",
              !have_key ? "absent" : a.include_signing_key ? "INCLUDED (keep this backup secret)" : "excluded");
  return 0;
}

citadel::cli::Registrar reg("backup", "Snapshot the state (keys, quotas, audit log, config, model hashes)",
                            [](CLI::App& sub) {
  auto a = std::make_shared<BackupArgs>();
  sub.add_option("--out", a->out, "new backup directory")->required();
  sub.add_option("--data-dir", a->data_dir, "state directory (default as serve)");
  sub.add_option("--state-db", a->state_db, "state database (default DATA_DIR/state.db)");
  sub.add_option("--audit-key", a->audit_key, "audit signing key (default DATA_DIR/audit.key)");
  sub.add_option("--config", a->config, "serve config file to include");
  sub.add_option("--model", a->models, "model file to record (size, SHA-256); repeatable");
  sub.add_option("--models-dir", a->models_dir, "record every file in this directory");
  sub.add_flag("--include-signing-key", a->include_signing_key,
               "copy the audit signing key into the backup (then the backup is a secret)");
  return [a] { return run_backup(*a); };
});

}  // namespace backup_cmd
