// SQLite backend: one connection in WAL mode, serialised by a mutex held for a whole statement or transaction.
// Why one connection: SQLite admits one writer at a time anyway, and a single connection lets the prepared-statement
// cache serve every thread; readers in other processes still proceed concurrently thanks to WAL.
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "store/database.h"
#include "store/sql_text.h"

namespace citadel::store {

namespace {

constexpr int kBusyTimeoutMs = 5000;
constexpr int kSqliteMaxTries = 4;           // BEGIN IMMEDIATE already waits kBusyTimeoutMs per try
constexpr size_t kMaxCachedStatements = 256;

// Set while fn runs inside transact() on this thread: using the Database (not the Session) there would deadlock.
thread_local const void* tls_sqlite_transaction = nullptr;

Status sqlite_status(sqlite3* db, int rc, const std::string& sql) {
  const int primary = rc & 0xff;
  std::string msg = std::string("sqlite: ") + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  if (!sql.empty()) msg += " [" + internal::sql_head(sql) + "]";
  switch (primary) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return ResourceExhausted(msg);
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
    case SQLITE_TOOBIG: return InvalidArgument(msg);
    case SQLITE_ERROR: return Internal(msg);  // syntax errors, missing tables: a bug in the caller's SQL
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return DataLoss(msg);
    default: return IoError(msg);
  }
}

bool is_busy(int rc) { return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED; }

bool blank(const char* s) {
  for (; s && *s; ++s) {
    if (!std::isspace(static_cast<unsigned char>(*s))) return false;
  }
  return true;
}

class SqliteDb;

// The Session handed to fn inside transact(): runs on the already-locked connection and remembers the first error
// (a failed statement fails the whole transaction, as it does on PostgreSQL).
class SqliteTx : public Session {
 public:
  explicit SqliteTx(SqliteDb& db) : db_(db) {}
  Result<int64_t> exec(const std::string& sql, const std::vector<Value>& params) override;
  Result<std::vector<Row>> query(const std::string& sql, const std::vector<Value>& params) override;
  const Status& first_error() const { return first_error_; }
  bool busy() const { return busy_; }

 private:
  void note(const Status& s, int rc);
  SqliteDb& db_;
  Status first_error_;
  bool busy_ = false;
};

Status exec_pragma(sqlite3* db, const char* sql);

// Checkpoints the WAL from its own connection and thread, so that no request-path commit pays for copying pages
// back and the fsync that goes with it (SQLite's automatic checkpoint runs inside the committing call: with it, one
// commit in a few hundred took tens of milliseconds). PASSIVE never blocks the writer.
class Checkpointer {
 public:
  explicit Checkpointer(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
      sqlite3_close_v2(db_);
      db_ = nullptr;
      return;  // the writer's automatic checkpoint stays on (see open_sqlite)
    }
    sqlite3_busy_timeout(db_, 100);
    thread_ = std::thread([this] { run(); });
  }
  ~Checkpointer() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (db_) {
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      sqlite3_close_v2(db_);
    }
  }
  bool running() const { return db_ != nullptr; }

 private:
  void run() {
    std::unique_lock<std::mutex> l(mu_);
    while (!cv_.wait_for(l, std::chrono::milliseconds(200), [this] { return stop_; })) {
      l.unlock();
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      l.lock();
    }
  }
  sqlite3* db_ = nullptr;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

class SqliteDb : public Database {
 public:
  SqliteDb(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteDb() override {
    checkpointer_.reset();
    for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }
  // Moves checkpoints off the commit path (file databases only).
  void start_checkpointer() {
    checkpointer_ = std::make_unique<Checkpointer>(path_);
    if (!checkpointer_->running()) return;
    std::lock_guard<std::mutex> lock(mu_);
    (void)exec_pragma(db_, "PRAGMA wal_autocheckpoint=0");
  }

  Kind kind() const override { return Kind::kSqlite; }
  std::string describe() const override { return "sqlite:" + path_; }

  Result<int64_t> exec(const std::string& sql, const std::vector<Value>& params) override {
    RETURN_IF_ERROR(check_not_nested());
    std::lock_guard<std::mutex> lock(mu_);
    int64_t changes = 0;
    int rc = SQLITE_OK;
    RETURN_IF_ERROR(run_locked(sql, params, nullptr, &changes, &rc));
    return changes;
  }

  Result<std::vector<Row>> query(const std::string& sql, const std::vector<Value>& params) override {
    RETURN_IF_ERROR(check_not_nested());
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<Row> rows;
    int rc = SQLITE_OK;
    RETURN_IF_ERROR(run_locked(sql, params, &rows, nullptr, &rc));
    return rows;
  }

  Status transact(const std::function<Status(Session&)>& fn) override;

  // Runs one statement on the connection; the caller holds mu_. *rc receives sqlite's result code.
  Status run_locked(const std::string& sql, const std::vector<Value>& params, std::vector<Row>* rows,
                    int64_t* changes, int* rc);

 private:
  Status check_not_nested() const {
    if (tls_sqlite_transaction == this) {
      return Internal("store: Database used inside its own transact(); use the Session passed to fn");
    }
    return OkStatus();
  }
  Result<sqlite3_stmt*> prepare_locked(const std::string& sql);
  Status bind(sqlite3_stmt* stmt, const std::vector<Value>& params, const std::string& sql);
  void rollback_locked() {
    if (sqlite3_get_autocommit(db_)) return;  // some errors (SQLITE_FULL, IOERR) already rolled back
    int rc = SQLITE_OK;
    (void)run_locked("ROLLBACK", {}, nullptr, nullptr, &rc);
  }

  sqlite3* db_;
  const std::string path_;
  std::mutex mu_;  // guards db_ and cache_; held across a whole transact()
  std::unordered_map<std::string, sqlite3_stmt*> cache_;  // SQL text -> prepared statement
  std::unique_ptr<Checkpointer> checkpointer_;
};

Result<sqlite3_stmt*> SqliteDb::prepare_locked(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) return it->second;
  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()) + 1, SQLITE_PREPARE_PERSISTENT,
                                    &stmt, &tail);
  if (rc != SQLITE_OK) return sqlite_status(db_, rc, sql);
  if (stmt == nullptr) return InvalidArgument("sqlite: empty statement [" + internal::sql_head(sql) + "]");
  if (!blank(tail)) {
    sqlite3_finalize(stmt);
    return InvalidArgument("sqlite: one statement per call (split scripts on ';') [" + internal::sql_head(sql) +
                           "]");
  }
  // The cache only grows with distinct SQL texts; callers use constant SQL, so the bound is a safety valve.
  if (cache_.size() >= kMaxCachedStatements) {
    for (auto& [text, s] : cache_) sqlite3_finalize(s);
    cache_.clear();
  }
  cache_.emplace(sql, stmt);
  return stmt;
}

Status SqliteDb::bind(sqlite3_stmt* stmt, const std::vector<Value>& params, const std::string& sql) {
  const int expected = sqlite3_bind_parameter_count(stmt);
  if (expected != static_cast<int>(params.size())) {
    return InvalidArgument("sqlite: statement takes " + std::to_string(expected) + " parameters, got " +
                           std::to_string(params.size()) + " [" + internal::sql_head(sql) + "]");
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const int idx = static_cast<int>(i) + 1;
    const Value& v = params[i];
    int rc = SQLITE_OK;
    if (auto* n = std::get_if<int64_t>(&v)) {
      rc = sqlite3_bind_int64(stmt, idx, *n);
    } else if (auto* d = std::get_if<double>(&v)) {
      rc = sqlite3_bind_double(stmt, idx, *d);
    } else if (auto* s = std::get_if<std::string>(&v)) {
      // SQLITE_STATIC: params outlive the statement's use (it is reset before run_locked returns).
      rc = sqlite3_bind_text64(stmt, idx, s->data(), s->size(), SQLITE_STATIC, SQLITE_UTF8);
    } else {
      rc = sqlite3_bind_null(stmt, idx);
    }
    if (rc != SQLITE_OK) return sqlite_status(db_, rc, sql);
  }
  return OkStatus();
}

Value column_value(sqlite3_stmt* stmt, int col) {
  switch (sqlite3_column_type(stmt, col)) {
    case SQLITE_INTEGER: return static_cast<int64_t>(sqlite3_column_int64(stmt, col));
    case SQLITE_FLOAT: return sqlite3_column_double(stmt, col);
    case SQLITE_NULL: return std::monostate{};
    default: {
      const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt, col));
      const int n = sqlite3_column_bytes(stmt, col);
      return std::string(p ? p : "", static_cast<size_t>(n));
    }
  }
}

Status SqliteDb::run_locked(const std::string& sql, const std::vector<Value>& params, std::vector<Row>* rows,
                            int64_t* changes, int* rc_out) {
  *rc_out = SQLITE_OK;
  auto prepared = prepare_locked(sql);
  if (!prepared.ok()) {
    *rc_out = sqlite3_errcode(db_);
    return prepared.status();
  }
  sqlite3_stmt* stmt = *prepared;
  Status st = bind(stmt, params, sql);
  int rc = SQLITE_DONE;
  while (st.ok()) {
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      if (rows) {
        const int n = sqlite3_column_count(stmt);
        Row row;
        row.reserve(static_cast<size_t>(n));
        for (int c = 0; c < n; ++c) row.push_back(column_value(stmt, c));
        rows->push_back(std::move(row));
      }
      continue;
    }
    if (rc != SQLITE_DONE) {
      *rc_out = rc;
      st = sqlite_status(db_, rc, sql);
    }
    break;
  }
  if (st.ok() && changes) *changes = sqlite3_stmt_readonly(stmt) ? 0 : sqlite3_changes64(db_);
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  return st;
}

Status SqliteDb::transact(const std::function<Status(Session&)>& fn) {
  RETURN_IF_ERROR(check_not_nested());
  std::lock_guard<std::mutex> lock(mu_);
  Status last;
  for (int attempt = 0; attempt < kSqliteMaxTries; ++attempt) {
    int rc = SQLITE_OK;
    last = run_locked("BEGIN IMMEDIATE", {}, nullptr, nullptr, &rc);
    if (!last.ok()) {
      if (is_busy(rc)) continue;
      return last;
    }
    SqliteTx tx(*this);
    tls_sqlite_transaction = this;
    Status fs = fn(tx);
    tls_sqlite_transaction = nullptr;
    if (!fs.ok() || !tx.first_error().ok()) {
      rollback_locked();
      last = tx.first_error().ok() ? fs : tx.first_error();
      if (tx.busy()) continue;
      return last;
    }
    last = run_locked("COMMIT", {}, nullptr, nullptr, &rc);
    if (last.ok()) return OkStatus();
    rollback_locked();
    if (!is_busy(rc)) return last;
  }
  return ResourceExhausted("sqlite: database busy after " + std::to_string(kSqliteMaxTries) + " tries: " +
                           last.message());
}

void SqliteTx::note(const Status& s, int rc) {
  if (s.ok() || !first_error_.ok()) return;
  first_error_ = s;
  busy_ = is_busy(rc);
}

Result<int64_t> SqliteTx::exec(const std::string& sql, const std::vector<Value>& params) {
  int64_t changes = 0;
  int rc = SQLITE_OK;
  Status s = db_.run_locked(sql, params, nullptr, &changes, &rc);
  note(s, rc);
  if (!s.ok()) return s;
  return changes;
}

Result<std::vector<Row>> SqliteTx::query(const std::string& sql, const std::vector<Value>& params) {
  std::vector<Row> rows;
  int rc = SQLITE_OK;
  Status s = db_.run_locked(sql, params, &rows, nullptr, &rc);
  note(s, rc);
  if (!s.ok()) return s;
  return rows;
}

Status exec_pragma(sqlite3* db, const char* sql) {
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  if (rc == SQLITE_OK) return OkStatus();
  std::string msg = std::string("sqlite: ") + (err ? err : sqlite3_errstr(rc)) + " [" + sql + "]";
  sqlite3_free(err);
  return IoError(msg);
}

// Creates the file owner-only before SQLite does (SQLite would use 0644 minus umask); the -wal and -shm files
// inherit the database file's mode.
Status create_private_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return IoError("sqlite: cannot open " + path + ": " + std::strerror(errno));
  ::close(fd);
  return OkStatus();
}

}  // namespace

Result<std::unique_ptr<Database>> open_sqlite(const std::string& path) {
  if (path.empty()) return InvalidArgument("sqlite: empty database path");
  const bool in_memory = path == ":memory:";
  if (!in_memory) RETURN_IF_ERROR(create_private_file(path));
  sqlite3* db = nullptr;
  // NOMUTEX: SqliteDb's own mutex already serialises every use of the connection.
  const int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    Status s = sqlite_status(db, rc, "").with_context(path);
    sqlite3_close_v2(db);
    return s;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON"}) {
    Status s = exec_pragma(db, pragma);
    if (!s.ok()) {
      sqlite3_close_v2(db);
      return s.with_context(path);
    }
  }
  auto out = std::make_unique<SqliteDb>(db, path);
  if (!in_memory) out->start_checkpointer();
  return std::unique_ptr<Database>(std::move(out));
}

}  // namespace citadel::store
