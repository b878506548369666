// Database: Citadel's state store (API keys, tenants, quota counters; later audit and registry state) behind one
// small SQL interface with two backends: SQLite under --data-dir (default; WAL journal, busy timeout) and
// PostgreSQL through libpq (several replicas sharing keys and quotas). Callers write SQL once, in the dialect both
// accept: `?` placeholders (the PostgreSQL backend rewrites them to $1..$n), INTEGER/BIGINT/TEXT columns,
// `INSERT ... ON CONFLICT (...) DO UPDATE SET ...`, no RETURNING-specific tricks beyond what both support.
//
// Transactions: transact(fn) runs fn inside one transaction that excludes every other writer of the same database
// (SQLite: BEGIN IMMEDIATE; PostgreSQL: SERIALIZABLE) and retries fn from the start, up to a bound, when the backend
// reports a conflict (SQLITE_BUSY past the timeout, SQLSTATE 40001/40P01). fn must therefore be a pure function of
// what it reads in the transaction (no side effects outside it). fn's error rolls back and is returned.
// A statement that fails inside fn fails the whole transaction even if fn ignores the error (PostgreSQL aborts the
// transaction anyway; SQLite is made to match): transact() rolls back and returns that first error. Use
// `ON CONFLICT` rather than "try the INSERT and look at the error". Inside fn use only the Session it is given:
// calling the Database itself from fn returns kInternal (it would deadlock on SQLite, escape the transaction on
// PostgreSQL). On PostgreSQL a transaction that keeps conflicting is retried alone within this process (other
// transactions of the same Database wait), so a hot row such as one tenant's counter never starves a writer.
//
// Statements: one statement per exec()/query() call (migrate() splits scripts itself). `?` inside '...' or "..."
// literals and -- comments is text, not a placeholder. Parameters: int64 and double are sent typed; text and NULL
// take the type of their context, so compare text with text columns and numbers with numeric columns.
// Results: integer columns come back as int64 (PostgreSQL INT2/4/8, SQLite INTEGER), DOUBLE PRECISION/REAL/NUMERIC
// as double, NULL as monostate, anything else as text (PostgreSQL BOOLEAN as 0/1). Use as_int()/as_text() when a
// column's type may differ between the backends (e.g. an expression).
//
// Error codes: constraint violations (UNIQUE, NOT NULL, FOREIGN KEY, CHECK) and bad input values ->
// kInvalidArgument; conflicts still unresolved after the retries, busy database, too many connections ->
// kResourceExhausted; SQL the server rejects (syntax, unknown table or column) -> kInternal (a bug in the caller);
// corrupt SQLite file -> kDataLoss; connection and I/O failures -> kIo. A PostgreSQL connection found broken is
// reset at its next use; the statement that found it broken fails (it is not silently re-run).
//
// Migrations: migrate() applies numbered steps in order, each in its own transaction, recording the version in
// table schema_migrations; a database newer than the binary is an error (never silently downgraded).
//
// Thread-safety: a Database is safe from any thread; the SQLite backend serialises its connection with a mutex;
// the PostgreSQL backend keeps a small pool of connections. Errors are Status with the backend's message and the
// statement's first words (never the parameter values: they may hold key hashes).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "base/status.h"

namespace citadel::store {

// One SQL value: NULL, a 64-bit integer, a double or text (blobs are stored as text, hex or base64, by callers).
using Value = std::variant<std::monostate, int64_t, double, std::string>;
using Row = std::vector<Value>;

// Accessors that tolerate the backends' type differences (PostgreSQL returns text for everything).
bool is_null(const Value& v);
int64_t as_int(const Value& v);          // NULL -> 0; text parsed as decimal
double as_double(const Value& v);
std::string as_text(const Value& v);     // NULL -> ""; numbers formatted

// Statements inside one transaction (or autocommit, outside transact()).
class Session {
 public:
  virtual ~Session() = default;
  // Runs a statement; returns the number of rows changed (INSERT/UPDATE/DELETE), 0 otherwise.
  virtual Result<int64_t> exec(const std::string& sql, const std::vector<Value>& params = {}) = 0;
  // Runs a query; returns every row (columns in select order).
  virtual Result<std::vector<Row>> query(const std::string& sql, const std::vector<Value>& params = {}) = 0;
};

struct Migration {
  int version;          // 1, 2, 3, ... strictly increasing
  std::string name;     // "keys and tenants"
  std::string sql;      // one or more statements separated by ';'
};

class Database : public Session {
 public:
  enum class Kind { kSqlite, kPostgres };
  virtual Kind kind() const = 0;
  // "sqlite:/var/lib/citadel/state.db" or "postgresql://user@host/db" (password never shown).
  virtual std::string describe() const = 0;
  // Runs fn in one exclusive transaction (see the file comment); retries on conflict.
  virtual Status transact(const std::function<Status(Session&)>& fn) = 0;
};

// Opens the state database from a URL or path:
//   "postgres://..." / "postgresql://..." / "host=... dbname=..." (libpq conninfo) -> PostgreSQL
//   "sqlite:PATH" (what describe() prints) or anything else: a SQLite file path. The directory must exist; a new
//   file is created with mode 0600 (an existing file keeps its mode); ":memory:" is a private in-memory database.
// Opening PostgreSQL connects once, so a wrong address or credential fails here rather than at the first request;
// connections (at most 8) are added on demand.
Result<std::unique_ptr<Database>> open_database(const std::string& url_or_path);
Result<std::unique_ptr<Database>> open_sqlite(const std::string& path);
Result<std::unique_ptr<Database>> open_postgres(const std::string& conninfo);

// Applies the migrations not yet applied (see the file comment). Returns the resulting version.
Result<int> migrate(Database& db, const std::vector<Migration>& steps);

}  // namespace citadel::store
