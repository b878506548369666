// PostgreSQL backend through libpq: a small lazily grown connection pool, text-format parameters and results,
// SERIALIZABLE transactions retried on serialization failure / deadlock.
#ifdef CITADEL_HAVE_POSTGRES

#include <libpq-fe.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "store/database.h"
#include "store/sql_text.h"

namespace citadel::store {

namespace {

constexpr int kMaxConnections = 8;
constexpr int kPgMaxTries = 20;
constexpr int kSerialiseAfter = 1;  // conflicts after which a retry runs alone in this process (RetryGate)

// Type OIDs from PostgreSQL's pg_type catalogue (stable since 7.x; the server headers are not a build dependency).
constexpr Oid kBoolOid = 16, kInt8Oid = 20, kInt2Oid = 21, kInt4Oid = 23, kOidOid = 26;
constexpr Oid kFloat4Oid = 700, kFloat8Oid = 701, kNumericOid = 1700;

thread_local const void* tls_pg_transaction = nullptr;

bool retryable(const std::string& sqlstate) { return sqlstate == "40001" || sqlstate == "40P01"; }

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// Maps an error to a Status. Only the primary message is used: DETAIL lines quote key values ("Key (k)=(...)"),
// and data-exception messages (class 22) quote the offending input after a colon, so that part is cut.
Status pg_status(PGconn* conn, const PGresult* res, const std::string& sql, std::string* sqlstate_out) {
  const char* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  const char* primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  const std::string sqlstate = state ? state : "";
  std::string msg = primary ? primary : trim(PQerrorMessage(conn));
  if (sqlstate.rfind("22", 0) == 0) msg = msg.substr(0, msg.find(':'));
  if (sqlstate_out) *sqlstate_out = sqlstate;
  msg = "postgres: " + msg + (sqlstate.empty() ? "" : " (SQLSTATE " + sqlstate + ")");
  if (!sql.empty()) msg += " [" + internal::sql_head(sql) + "]";
  const std::string cls = sqlstate.substr(0, 2);
  if (retryable(sqlstate) || cls == "53") return ResourceExhausted(msg);
  if (cls == "23" || cls == "22") return InvalidArgument(msg);
  if (cls == "42") return Internal(msg);  // syntax error, undefined table/column: a bug in the caller's SQL
  return IoError(msg);                     // connection loss (no SQLSTATE, 08xxx), shutdown (57xxx), ...
}

Value column_value(const PGresult* res, int row, int col) {
  if (PQgetisnull(res, row, col)) return std::monostate{};
  const char* v = PQgetvalue(res, row, col);
  switch (PQftype(res, col)) {
    case kInt2Oid:
    case kInt4Oid:
    case kInt8Oid:
    case kOidOid: return static_cast<int64_t>(std::strtoll(v, nullptr, 10));
    case kFloat4Oid:
    case kFloat8Oid:
    case kNumericOid: return std::strtod(v, nullptr);
    case kBoolOid: return static_cast<int64_t>(v[0] == 't');
    default: return std::string(v, static_cast<size_t>(PQgetlength(res, row, col)));
  }
}

bool changes_rows(const char* cmd_status) {
  for (const char* verb : {"INSERT", "UPDATE", "DELETE", "MERGE"}) {
    if (std::strncmp(cmd_status, verb, std::strlen(verb)) == 0) return true;
  }
  return false;
}

// Runs one statement. Numbers are sent typed (int8/float8) so `? + ?` resolves; text and NULL as unknown, so
// the server infers the column's type from context (text into a BIGINT column parses as it would from SQL).
Status run(PGconn* conn, const std::string& sql, const std::vector<Value>& params, std::vector<Row>* rows,
           int64_t* changes, std::string* sqlstate) {
  if (sqlstate) sqlstate->clear();
  int n = 0;
  const std::string text = internal::rewrite_placeholders(sql, &n);
  if (n != static_cast<int>(params.size())) {
    return InvalidArgument("postgres: statement takes " + std::to_string(n) + " parameters, got " +
                           std::to_string(params.size()) + " [" + internal::sql_head(sql) + "]");
  }
  std::vector<std::string> storage(params.size());  // [n] decimal renderings of numeric params
  std::vector<const char*> values(params.size(), nullptr);
  std::vector<Oid> types(params.size(), 0);
  for (size_t i = 0; i < params.size(); ++i) {
    const Value& v = params[i];
    if (auto* x = std::get_if<int64_t>(&v)) {
      storage[i] = std::to_string(*x);
      types[i] = kInt8Oid;
    } else if (auto* d = std::get_if<double>(&v)) {
      char buf[40];
      std::snprintf(buf, sizeof buf, "%.17g", *d);
      storage[i] = buf;
      types[i] = kFloat8Oid;
    } else if (auto* s = std::get_if<std::string>(&v)) {
      values[i] = s->c_str();
      continue;
    } else {
      continue;  // NULL
    }
    values[i] = storage[i].c_str();
  }
  PGresult* res = PQexecParams(conn, text.c_str(), n, types.data(), values.data(), nullptr, nullptr, 0);
  const ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  Status out;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    if (changes) *changes = changes_rows(PQcmdStatus(res)) ? std::strtoll(PQcmdTuples(res), nullptr, 10) : 0;
    if (rows && st == PGRES_TUPLES_OK) {
      const int nrows = PQntuples(res), ncols = PQnfields(res);
      rows->reserve(static_cast<size_t>(nrows));
      for (int r = 0; r < nrows; ++r) {
        Row row;
        row.reserve(static_cast<size_t>(ncols));
        for (int c = 0; c < ncols; ++c) row.push_back(column_value(res, r, c));
        rows->push_back(std::move(row));
      }
    }
  } else if (st == PGRES_EMPTY_QUERY) {
    out = InvalidArgument("postgres: empty statement");
  } else {
    out = pg_status(conn, res, sql, sqlstate);
  }
  PQclear(res);
  return out;
}

void ignore_notice(void*, const char*) {}  // "relation already exists, skipping" and friends are not errors

// Jittered exponential backoff so conflicting transactions do not retry in lockstep.
void backoff(int attempt) {
  thread_local std::minstd_rand rng(static_cast<unsigned>(std::hash<std::thread::id>{}(std::this_thread::get_id())));
  const int cap_us = 200 << std::min(attempt, 5);  // 0.2 ms .. 6.4 ms
  std::this_thread::sleep_for(std::chrono::microseconds(50 + static_cast<int>(rng() % cap_us)));
}

// "postgresql://user@host:port/dbname" from a URL or key=value conninfo, leaving out the password.
std::string describe_conninfo(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts == nullptr) {
    PQfreemem(err);
    return "postgresql://(unparsable connection string)";
  }
  std::string user, host, port, dbname;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (!o->val || !*o->val) continue;
    const std::string k = o->keyword;
    if (k == "user") user = o->val;
    else if (k == "host" || (k == "hostaddr" && host.empty())) host = o->val;
    else if (k == "port") port = o->val;
    else if (k == "dbname") dbname = o->val;
  }
  PQconninfoFree(opts);
  std::string out = "postgresql://";
  if (!user.empty()) out += user + "@";
  out += host.empty() ? "localhost" : host;
  if (!port.empty()) out += ":" + port;
  return out + "/" + dbname;
}

// Admission to transaction attempts within this process: ordinary attempts share the gate; an attempt that has
// already lost kSerialiseAfter conflicts takes it exclusively (and new attempts queue behind it), so it runs
// without competition from this process. Why: a hot row (one tenant's quota counter) aborts all but one of its
// concurrent SERIALIZABLE writers each round, and plain backoff lets unlucky writers starve past any bound.
// Deadlock-free: a waiter holds a connection but no row locks (it is between attempts).
class RetryGate {
 public:
  void enter(bool exclusive) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!exclusive) {
      cv_.wait(lock, [&] { return !exclusive_ && exclusive_waiting_ == 0; });
      ++shared_;
      return;
    }
    ++exclusive_waiting_;
    cv_.wait(lock, [&] { return !exclusive_ && shared_ == 0; });
    --exclusive_waiting_;
    exclusive_ = true;
  }
  void leave(bool exclusive) {
    std::lock_guard<std::mutex> lock(mu_);
    if (exclusive) exclusive_ = false;
    else --shared_;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int shared_ = 0;             // attempts running in shared mode
  int exclusive_waiting_ = 0;  // starving attempts waiting for exclusive mode (they go first)
  bool exclusive_ = false;
};

class PgDb;

// The Session inside transact(): one pooled connection in an open transaction. After a failed statement
// PostgreSQL refuses the rest of the transaction, so the first error is remembered and fails transact().
class PgTx : public Session {
 public:
  explicit PgTx(PGconn* conn) : conn_(conn) {}
  Result<int64_t> exec(const std::string& sql, const std::vector<Value>& params) override {
    int64_t changes = 0;
    Status s = note(run(conn_, sql, params, nullptr, &changes, &state_));
    if (!s.ok()) return s;
    return changes;
  }
  Result<std::vector<Row>> query(const std::string& sql, const std::vector<Value>& params) override {
    std::vector<Row> rows;
    Status s = note(run(conn_, sql, params, &rows, nullptr, &state_));
    if (!s.ok()) return s;
    return rows;
  }
  const Status& first_error() const { return first_error_; }
  const std::string& first_sqlstate() const { return first_state_; }

 private:
  Status note(Status s) {
    if (!s.ok() && first_error_.ok()) {
      first_error_ = s;
      first_state_ = state_;
    }
    return s;
  }
  PGconn* conn_;
  std::string state_, first_state_;
  Status first_error_;
};

class PgDb : public Database {
 public:
  PgDb(std::string conninfo, PGconn* first) : conninfo_(std::move(conninfo)), describe_(describe_conninfo(conninfo_)) {
    idle_.push_back(first);
    open_ = 1;
  }
  ~PgDb() override {
    for (PGconn* c : idle_) PQfinish(c);
  }

  Kind kind() const override { return Kind::kPostgres; }
  std::string describe() const override { return describe_; }

  Result<int64_t> exec(const std::string& sql, const std::vector<Value>& params) override {
    RETURN_IF_ERROR(check_not_nested());
    ASSIGN_OR_RETURN(PGconn * conn, acquire());
    int64_t changes = 0;
    Status s = run(conn, sql, params, nullptr, &changes, nullptr);
    release(conn);
    if (!s.ok()) return s;
    return changes;
  }

  Result<std::vector<Row>> query(const std::string& sql, const std::vector<Value>& params) override {
    RETURN_IF_ERROR(check_not_nested());
    ASSIGN_OR_RETURN(PGconn * conn, acquire());
    std::vector<Row> rows;
    Status s = run(conn, sql, params, &rows, nullptr, nullptr);
    release(conn);
    if (!s.ok()) return s;
    return rows;
  }

  Status transact(const std::function<Status(Session&)>& fn) override {
    RETURN_IF_ERROR(check_not_nested());
    ASSIGN_OR_RETURN(PGconn * conn, acquire());
    Status s = transact_on(conn, fn);
    release(conn);
    return s;
  }

  // Opens a connection with UTF-8 client encoding; quiet about notices.
  static Result<PGconn*> connect(const std::string& conninfo) {
    const char* keys[] = {"dbname", "client_encoding", "fallback_application_name", nullptr};
    const char* vals[] = {conninfo.c_str(), "UTF8", "citadel", nullptr};
    PGconn* c = PQconnectdbParams(keys, vals, /*expand_dbname=*/1);
    if (c == nullptr) return ResourceExhausted("postgres: out of memory opening a connection");
    if (PQstatus(c) != CONNECTION_OK) {
      Status s = IoError("postgres: cannot connect to " + describe_conninfo(conninfo) + ": " +
                         trim(PQerrorMessage(c)));
      PQfinish(c);
      return s;
    }
    PQsetNoticeProcessor(c, ignore_notice, nullptr);
    return c;
  }

 private:
  Status check_not_nested() const {
    if (tls_pg_transaction == this) {
      return Internal("store: Database used inside its own transact(); use the Session passed to fn");
    }
    return OkStatus();
  }

  Status transact_on(PGconn* conn, const std::function<Status(Session&)>& fn);
  Status attempt_once(PGconn* conn, const std::function<Status(Session&)>& fn, bool* conflict);
  Result<PGconn*> acquire();
  void release(PGconn* conn);

  const std::string conninfo_, describe_;
  std::mutex mu_;                // guards idle_ and open_
  std::condition_variable cv_;   // a connection was released or closed
  RetryGate gate_;
  std::vector<PGconn*> idle_;
  int open_ = 0;                 // connections that exist, idle or lent
};

Status PgDb::transact_on(PGconn* conn, const std::function<Status(Session&)>& fn) {
  Status last;
  for (int attempt = 0; attempt < kPgMaxTries; ++attempt) {
    const bool exclusive = attempt >= kSerialiseAfter;
    if (attempt > 0) backoff(attempt);  // outside the gate; other processes' writers still compete
    bool conflict = false;
    gate_.enter(exclusive);
    last = attempt_once(conn, fn, &conflict);
    gate_.leave(exclusive);
    if (!conflict) return last;
  }
  return ResourceExhausted("postgres: transaction still conflicting after " + std::to_string(kPgMaxTries) +
                           " tries: " + last.message());
}

// One attempt of fn in its own transaction; *conflict says the error is a serialization failure worth a retry.
Status PgDb::attempt_once(PGconn* conn, const std::function<Status(Session&)>& fn, bool* conflict) {
  RETURN_IF_ERROR(run(conn, "BEGIN ISOLATION LEVEL SERIALIZABLE", {}, nullptr, nullptr, nullptr));
  PgTx tx(conn);
  tls_pg_transaction = this;
  Status fs = fn(tx);
  tls_pg_transaction = nullptr;
  if (!fs.ok() || !tx.first_error().ok()) {
    (void)run(conn, "ROLLBACK", {}, nullptr, nullptr, nullptr);
    *conflict = retryable(tx.first_sqlstate());
    return tx.first_error().ok() ? fs : tx.first_error();
  }
  std::string state;
  Status committed = run(conn, "COMMIT", {}, nullptr, nullptr, &state);
  *conflict = !committed.ok() && retryable(state);  // a failed COMMIT has already ended the transaction
  return committed;
}

Result<PGconn*> PgDb::acquire() {
  PGconn* conn = nullptr;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !idle_.empty() || open_ < kMaxConnections; });
    if (!idle_.empty()) {
      conn = idle_.back();
      idle_.pop_back();
    } else {
      ++open_;  // reserve the slot, connect without the lock
    }
  }
  if (conn == nullptr) {
    auto fresh = connect(conninfo_);
    if (fresh.ok()) return *fresh;
    std::lock_guard<std::mutex> lock(mu_);
    --open_;
    cv_.notify_one();
    return fresh.status();
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    PQreset(conn);  // the server restarted or the network dropped since the last use
    if (PQstatus(conn) != CONNECTION_OK) {
      Status s = IoError("postgres: connection to " + describe_ + " lost: " + trim(PQerrorMessage(conn)));
      PQfinish(conn);
      std::lock_guard<std::mutex> lock(mu_);
      --open_;
      cv_.notify_one();
      return s;
    }
    PQsetNoticeProcessor(conn, ignore_notice, nullptr);
  }
  return conn;
}

void PgDb::release(PGconn* conn) {
  // A connection left inside a transaction (a failed ROLLBACK) must not carry it into the next user's statements.
  if (PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) != PQTRANS_IDLE) {
    (void)run(conn, "ROLLBACK", {}, nullptr, nullptr, nullptr);
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE) {
    idle_.push_back(conn);
  } else {
    PQfinish(conn);
    --open_;
  }
  cv_.notify_one();
}

}  // namespace

Result<std::unique_ptr<Database>> open_postgres(const std::string& conninfo) {
  // Connect once now so a wrong address or credential fails at start-up, not at the first request.
  ASSIGN_OR_RETURN(PGconn * first, PgDb::connect(conninfo));
  return std::unique_ptr<Database>(new PgDb(conninfo, first));
}

}  // namespace citadel::store

#else  // built without libpq

#include "store/database.h"

namespace citadel::store {

Result<std::unique_ptr<Database>> open_postgres(const std::string&) {
  return Unsupported("this build of Citadel has no PostgreSQL client (libpq-dev was missing at build time)");
}

}  // namespace citadel::store

#endif
