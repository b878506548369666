// open_database() dispatch and schema migrations shared by both backends.
#include <chrono>

#include "store/database.h"
#include "store/sql_text.h"

namespace citadel::store {

namespace {

// Arbitrary constant naming Citadel's migration lock among PostgreSQL advisory locks ("CITADEL" in hex-ish).
constexpr int64_t kMigrationLockKey = 0x43173DE1;

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

Result<int> current_version(Session& s) {
  ASSIGN_OR_RETURN(auto rows, s.query("SELECT MAX(version) FROM schema_migrations"));
  if (rows.empty() || rows[0].empty()) return 0;
  return static_cast<int>(as_int(rows[0][0]));
}

Status newer_than_binary(int db_version, int highest) {
  return Unsupported("state database schema version " + std::to_string(db_version) +
                     " is newer than this binary (" + std::to_string(highest) + ")");
}

Status check_steps(const std::vector<Migration>& steps) {
  int prev = 0;
  for (const auto& m : steps) {
    if (m.version <= prev) {
      return InvalidArgument("migrations: version " + std::to_string(m.version) + " (" + m.name +
                             ") does not follow version " + std::to_string(prev));
    }
    prev = m.version;
  }
  return OkStatus();
}

// Creates schema_migrations once. On PostgreSQL two processes racing on CREATE TABLE IF NOT EXISTS can both miss
// the table and one fails on the catalog's unique index; the advisory lock makes the second wait and then see it.
Status ensure_table(Database& db) {
  const bool pg = db.kind() == Database::Kind::kPostgres;
  return db.transact([&](Session& s) -> Status {
    if (pg) {
      auto locked = s.query("SELECT pg_advisory_xact_lock(?)", {Value{kMigrationLockKey}});
      if (!locked.ok()) return locked.status();
    }
    auto made = s.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at BIGINT NOT NULL)");
    return made.status();
  });
}

// Applies one step unless another process already did. PostgreSQL: LOCK TABLE is the transaction's first
// statement and takes no snapshot, so the SERIALIZABLE snapshot taken by the next query already sees any step a
// concurrent migrate() committed while we waited. SQLite: BEGIN IMMEDIATE already excludes other writers.
Status apply_step(Database& db, const Migration& step, int highest) {
  const bool pg = db.kind() == Database::Kind::kPostgres;
  const auto statements = internal::split_statements(step.sql);
  return db.transact([&](Session& s) -> Status {
    if (pg) {
      auto locked = s.exec("LOCK TABLE schema_migrations IN EXCLUSIVE MODE");
      if (!locked.ok()) return locked.status();
    }
    ASSIGN_OR_RETURN(int version, current_version(s));
    if (version > highest) return newer_than_binary(version, highest);
    if (version >= step.version) return OkStatus();
    for (const auto& sql : statements) {
      auto r = s.exec(sql);
      if (!r.ok()) return r.status();
    }
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    auto rec = s.exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                      {Value{int64_t{step.version}}, Value{step.name}, Value{now}});
    return rec.status();
  });
}

}  // namespace

Result<std::unique_ptr<Database>> open_database(const std::string& url_or_path) {
  const std::string& s = url_or_path;
  if (starts_with(s, "postgres://") || starts_with(s, "postgresql://") || s.find("host=") != std::string::npos ||
      s.find("dbname=") != std::string::npos) {
    return open_postgres(s);
  }
  // Accept what describe() prints for SQLite, so a logged description can be pasted back.
  if (starts_with(s, "sqlite://")) return open_sqlite(s.substr(9));
  if (starts_with(s, "sqlite:")) return open_sqlite(s.substr(7));
  return open_sqlite(s);
}

Result<int> migrate(Database& db, const std::vector<Migration>& steps) {
  RETURN_IF_ERROR(check_steps(steps));
  const int highest = steps.empty() ? 0 : steps.back().version;
  RETURN_IF_ERROR(ensure_table(db).with_context("migrations"));
  ASSIGN_OR_RETURN(int version, current_version(db));
  if (version > highest) return newer_than_binary(version, highest);
  for (const auto& step : steps) {
    if (step.version <= version) continue;
    RETURN_IF_ERROR(apply_step(db, step, highest)
                        .with_context("migration " + std::to_string(step.version) + " (" + step.name + ")"));
  }
  return current_version(db);
}

}  // namespace citadel::store
