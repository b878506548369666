// citadel restore: puts a `citadel backup` directory back into a data directory (serve must not be running on it).
//   citadel restore --from DIR --data-dir D [--signing-key F | --no-signing-key] [--force] [--skip-model-check]
//                   [--state-db postgresql://...]   (a backup of PostgreSQL state: pg_restore into that database)
// Refuses, changing nothing, when the backup does not match its manifest (a file missing, extra, resized or with
// another SHA-256), when a recorded model file is missing or differs (unless --skip-model-check), or when D already
// holds a state database (unless --force: the old state.db, its WAL files and audit.head move to
// D/pre-restore-<ms>/). The audit signing key comes from the backup (--include-signing-key), or --signing-key F
// (the separately kept key), or is left out with --no-signing-key (a restore drill that only verifies: serve would
// need the key). After restoring, the state database's integrity and the audit chain are verified (with the
// restored signing key or audit.pub); exit 1 when they do not check out.
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

namespace restore_cmd {

using namespace citadel;

struct RestoreArgs {
  std::string from, data_dir, signing_key, state_db;
  bool no_signing_key = false, force = false, skip_model_check = false;
};

bool exists(const std::string& p) {
  struct stat st{};
  return ::stat(p.c_str(), &st) == 0;
}

bool listed(const store::BackupManifest& m, const std::string& name) {
  for (const auto& e : m.files)
    if (e.path == name) return true;
  return false;
}

int fail(const Status& st) {
  std::fprintf(stderr, "citadel restore: %s\n", st.message().c_str());
  return 1;
}

// Moves the target's current state aside (--force).
Status move_aside(const std::string& dir) {
  const std::string aside = dir + "/pre-restore-" + std::to_string(static_cast<int64_t>(now_seconds() * 1000.0));
  if (::mkdir(aside.c_str(), 0700) != 0) return IoError(aside + ": cannot create");
  for (const char* f : {"state.db", "state.db-wal", "state.db-shm", "audit.head", "audit.key", "audit.pub"}) {
    const std::string p = dir + "/" + f;
    if (exists(p) && std::rename(p.c_str(), (aside + "/" + f).c_str()) != 0) return IoError(p + ": cannot move aside");
  }
  std::printf("citadel restore: the previous state moved to %s\n", aside.c_str());
  return OkStatus();
}

// A PostgreSQL backup goes back into the database named by --state-db (replicas share it: stop them all first);
// the audit files into the data directory; then the restored chain is verified in that database.
int restore_postgres(const RestoreArgs& a, const store::BackupManifest& m) {
  if (!store::is_postgres_url(a.state_db))
    return fail(InvalidArgument("the backup holds a PostgreSQL dump: give --state-db postgresql://... to restore into"));
  if (::mkdir(a.data_dir.c_str(), 0700) != 0 && !exists(a.data_dir)) return fail(IoError(a.data_dir + ": cannot create"));
  if (Status st = store::pg_restore_from(a.from + "/state.pgdump", a.state_db); !st.ok()) return fail(st);
  for (const char* f : {"audit.head", "audit.pub", "audit.key"}) {
    if (!listed(m, f)) continue;
    const std::string dst = a.data_dir + "/" + f;
    std::remove(dst.c_str());
    if (Status st = store::copy_file_synced(a.from + "/" + f, dst, 0600); !st.ok()) return fail(st);
  }
  if (!a.signing_key.empty() && !a.no_signing_key) {
    const std::string dst = a.data_dir + "/audit.key";
    std::remove(dst.c_str());
    if (Status st = store::copy_file_synced(a.signing_key, dst, 0600); !st.ok()) return fail(st);
  }
  if (listed(m, "audit.pub")) {
    auto db = store::open_database(a.state_db);
    if (!db.ok()) return fail(db.status());
    const std::string head = exists(a.data_dir + "/audit.head") ? a.data_dir + "/audit.head" : "";
    auto rep = audit::verify_audit(**db, a.data_dir + "/audit.pub", head);
    if (!rep.ok()) return fail(rep.status().with_context("verifying the restored audit log"));
    if (!rep->ok)
      return fail(DataLoss("the restored audit log does not verify at record " + std::to_string(rep->first_bad_seq) +
                           ": " + rep->reason));
    std::printf("citadel restore: audit log OK: %lld records, %lld signed checkpoints\n",
                static_cast<long long>(rep->records), static_cast<long long>(rep->checkpoints));
  }
  std::printf("citadel restore: %s restored into the PostgreSQL state (%zu files)\n", a.from.c_str(), m.files.size());
  return 0;
}

int run_restore(const RestoreArgs& a) {
  auto m = store::read_manifest(a.from);
  if (!m.ok()) return fail(m.status());
  if (Status st = store::verify_manifest_files(a.from, *m); !st.ok())
    return fail(st.with_context("the backup does not match its manifest; nothing restored"));
  if (!a.skip_model_check) {
    if (Status st = store::verify_manifest_models(*m); !st.ok())
      return fail(st.with_context("the models differ from the backup's (put the same weights in place, or "
                                  "--skip-model-check); nothing restored"));
  }
  if (listed(*m, "state.pgdump")) return restore_postgres(a, *m);
  if (!listed(*m, "state.db")) return fail(DataLoss(a.from + ": the backup holds no state.db"));
  const bool key_in_backup = listed(*m, "audit.key");
  if (!key_in_backup && a.signing_key.empty() && !a.no_signing_key && listed(*m, "audit.pub"))
    return fail(InvalidArgument("the backup excludes the audit signing key: give the separately kept key with "
                                "--signing-key FILE (or --no-signing-key for a verify-only drill)"));
  if (::mkdir(a.data_dir.c_str(), 0700) != 0 && !exists(a.data_dir)) return fail(IoError(a.data_dir + ": cannot create"));
  if (exists(a.data_dir + "/state.db")) {
    if (!a.force) return fail(InvalidArgument(a.data_dir + " holds a state database already (stop serve; --force moves it aside)"));
    if (Status st = move_aside(a.data_dir); !st.ok()) return fail(st);
  }
  for (const char* f : {"state.db-wal", "state.db-shm"}) std::remove((a.data_dir + "/" + f).c_str());
  // The database under a temporary name first: a half-copied file is never taken for the state.
  const std::string db = a.data_dir + "/state.db", tmp = db + ".restoring";
  std::remove(tmp.c_str());
  if (Status st = store::copy_file_synced(a.from + "/state.db", tmp, 0600); !st.ok()) return fail(st);
  if (std::rename(tmp.c_str(), db.c_str()) != 0) return fail(IoError(db + ": cannot rename into place"));
  for (const char* f : {"audit.head", "audit.pub"}) {
    if (!listed(*m, f)) continue;
    const std::string dst = a.data_dir + "/" + f;
    std::remove(dst.c_str());
    if (Status st = store::copy_file_synced(a.from + "/" + f, dst, 0600); !st.ok()) return fail(st);
  }
  const std::string key_dst = a.data_dir + "/audit.key";
  const std::string key_src = key_in_backup ? a.from + "/audit.key" : a.signing_key;
  if (!key_src.empty() && !a.no_signing_key) {
    std::remove(key_dst.c_str());
    if (Status st = store::copy_file_synced(key_src, key_dst, 0600); !st.ok()) return fail(st);
  }
  if (listed(*m, "config.yaml")) {
    const std::string cfg = a.data_dir + "/config.restored.yaml";
    std::remove(cfg.c_str());
    if (Status st = store::copy_file_synced(a.from + "/config.yaml", cfg, 0600); !st.ok()) return fail(st);
    std::printf("citadel restore: the backed-up serve config is at %s (compare it with the live one)\n", cfg.c_str());
  }
  if (Status st = store::sqlite_integrity_check(db); !st.ok()) return fail(st);
  // The audit chain against the restored key (the private key proves the pair matches; audit.pub otherwise).
  if (listed(*m, "audit.pub")) {
    const std::string verify_key = exists(key_dst) ? key_dst : a.data_dir + "/audit.pub";
    auto sdb = store::open_sqlite(db);
    if (!sdb.ok()) return fail(sdb.status());
    const std::string head = exists(a.data_dir + "/audit.head") ? a.data_dir + "/audit.head" : "";
    auto rep = audit::verify_audit(**sdb, verify_key, head);
    if (!rep.ok()) return fail(rep.status().with_context("verifying the restored audit log"));
    if (!rep->ok)
      return fail(DataLoss("the restored audit log does not verify at record " + std::to_string(rep->first_bad_seq) +
                           ": " + rep->reason + (a.signing_key.empty() ? "" : " (is --signing-key the right key?)")));
    std::printf("citadel restore: audit log OK: %lld records, %lld signed checkpoints (key %s)\n",
                static_cast<long long>(rep->records), static_cast<long long>(rep->checkpoints), verify_key.c_str());
  }
  std::printf("citadel restore: %s restored into %s (%zu files, %zu models checked)\n", a.from.c_str(),
              a.data_dir.c_str(), m->files.size(), a.skip_model_check ? size_t{0} : m->models.size());
  return 0;
}

citadel::cli::Registrar reg("restore", "Restore a `citadel backup` directory into a data directory",
                            [](CLI::App& sub) {
  auto a = std::make_shared<RestoreArgs>();
  sub.add_option("--from", a->from, "backup directory")->required();
  sub.add_option("--data-dir", a->data_dir, "data directory to restore into")->required();
  sub.add_option("--signing-key", a->signing_key, "the audit signing key kept apart from the backup");
  sub.add_option("--state-db", a->state_db, "PostgreSQL backups: the database (postgresql://...) to restore into");
  sub.add_flag("--no-signing-key", a->no_signing_key, "restore without the signing key (verify-only drill)");
  sub.add_flag("--force", a->force, "move an existing state database aside");
  sub.add_flag("--skip-model-check", a->skip_model_check, "do not check the recorded model files");
  return [a] { return run_restore(*a); };
});

}  // namespace restore_cmd
