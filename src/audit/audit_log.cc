// The audit writer: bounded queue -> one writer thread -> group commit (records + signed checkpoint in one
// transaction) -> head file. Schema, closed kind list and retention live here too.
#include "audit/audit_log.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <unordered_set>

#include "audit/audit_chain.h"
#include "audit/audit_content.h"
#include "audit/audit_keys.h"
#include "base/log.h"

namespace citadel::audit {

namespace {

using store::Value;

constexpr const char* kV2 = R"sql(
CREATE TABLE audit_records (
  seq BIGINT PRIMARY KEY,
  time_ms BIGINT NOT NULL,
  kind TEXT NOT NULL,
  principal TEXT NOT NULL,
  tenant TEXT NOT NULL,
  request_id TEXT NOT NULL,
  client TEXT NOT NULL,
  model TEXT NOT NULL,
  status BIGINT NOT NULL,
  detail TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX audit_records_time ON audit_records (time_ms);
CREATE INDEX audit_records_kind ON audit_records (kind, seq);
CREATE INDEX audit_records_principal ON audit_records (principal, seq);
CREATE INDEX audit_records_tenant ON audit_records (tenant, seq);
CREATE TABLE audit_checkpoints (
  seq BIGINT PRIMARY KEY,
  hash TEXT NOT NULL,
  time_ms BIGINT NOT NULL,
  key_id TEXT NOT NULL,
  signature TEXT NOT NULL
);
CREATE TABLE audit_anchor (
  id BIGINT PRIMARY KEY,
  seq BIGINT NOT NULL,
  hash TEXT NOT NULL,
  time_ms BIGINT NOT NULL,
  key_id TEXT NOT NULL,
  signature TEXT NOT NULL
)
)sql";

// Rows per INSERT statement: 12 parameters each stays under SQLite's historic 999-parameter limit.
constexpr size_t kRowsPerInsert = 64;
// Records per transaction: bounds one commit's time and memory when a backlog drains.
constexpr size_t kMaxBatch = 8192;

struct Tail {
  int64_t seq = 0;
  std::string hash;
};

// The chain's end as the database has it: the last record, else the retention anchor, else the genesis.
Result<Tail> read_tail(store::Session& s) {
  ASSIGN_OR_RETURN(auto rows, s.query("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"));
  if (!rows.empty()) return Tail{store::as_int(rows[0][0]), store::as_text(rows[0][1])};
  ASSIGN_OR_RETURN(auto anchor, s.query("SELECT seq, hash FROM audit_anchor WHERE id = 1"));
  if (!anchor.empty()) return Tail{store::as_int(anchor[0][0]), store::as_text(anchor[0][1])};
  return Tail{0, internal::kZeroHash};
}

std::string insert_sql(size_t rows) {
  std::string sql =
      "INSERT INTO audit_records (seq, time_ms, kind, principal, tenant, request_id, client, model, status, "
      "detail, prev_hash, hash) VALUES ";
  for (size_t i = 0; i < rows; ++i) {
    if (i) sql.append(", ");
    sql.append("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  }
  return sql;
}

void push_record(std::vector<Value>& p, int64_t seq, const AuditEvent& e, const std::string& detail,
                 const std::string& prev, const std::string& hash) {
  p.emplace_back(seq);
  p.emplace_back(e.time_ms);
  p.emplace_back(e.kind);
  p.emplace_back(e.principal);
  p.emplace_back(e.tenant);
  p.emplace_back(e.request_id);
  p.emplace_back(e.client);
  p.emplace_back(e.model);
  p.emplace_back(static_cast<int64_t>(e.status));
  p.emplace_back(detail);
  p.emplace_back(prev);
  p.emplace_back(hash);
}

// A head past the stored end (or naming a checkpoint the database lacks) means records were deleted: appending now
// would reuse their seqs and overwrite the head file, erasing the evidence. Refuse; the operator runs verify.
Status check_head(store::Database& db, const internal::Head& head, int64_t end, const std::string& path) {
  ASSIGN_OR_RETURN(auto cp, db.query("SELECT hash FROM audit_checkpoints WHERE seq = ?", {Value{head.seq}}));
  ASSIGN_OR_RETURN(auto anchor, db.query("SELECT seq FROM audit_anchor WHERE id = 1"));
  const int64_t anchor_seq = anchor.empty() ? 0 : store::as_int(anchor[0][0]);
  const bool purged = cp.empty() && head.seq <= anchor_seq;
  if (head.seq > end || (!purged && (cp.empty() || store::as_text(cp[0][0]) != head.hash))) {
    return DataLoss("audit: head file " + path + " names checkpoint seq " + std::to_string(head.seq) +
                    " which the database (end seq " + std::to_string(end) +
                    ") does not hold: the log was truncated or replaced; run `citadel audit verify`");
  }
  return OkStatus();
}

}  // namespace

const std::vector<std::string>& audit_event_kinds() {
  static const std::vector<std::string> kinds = {
      "server.start",   "server.stop",       "config.change",   "model.load",        "model.unload",
      "model.swap",     "key.create",        "key.revoke",      "key.rotate",        "key.update",
      "role.update",    "tenant.create",     "tenant.update",   "auth.failure",      "permission.denied",
      "quota.rejected", "inference",         "embedding",       "kb.request",        "audit.export",
      "audit.query",    "retention.purge",   "encryption.key_rotation"};
  return kinds;
}

bool is_audit_event_kind(const std::string& kind) {
  static const std::unordered_set<std::string> set(audit_event_kinds().begin(), audit_event_kinds().end());
  return set.count(kind) != 0;
}

std::vector<store::Migration> audit_migrations() { return {{2, "audit log", kV2}}; }

AuditLog::AuditLog(store::Database* db, AuditOptions options, std::shared_ptr<const internal::SigningKey> key,
                   int64_t head_seq)
    : db_(db), options_(std::move(options)), key_(std::move(key)), last_seq_(head_seq) {
  early_wake_ = std::min(kMaxBatch, options_.max_queue / 2 + 1);
  writer_ = std::thread([this] { writer_loop(); });
}

AuditLog::~AuditLog() { close(); }

Result<std::unique_ptr<AuditLog>> AuditLog::open(store::Database* db, AuditOptions options) {
  if (db == nullptr) return InvalidArgument("audit: no database");
  if (options.flush_interval_ms < 1) options.flush_interval_ms = 1;
  if (options.max_queue < 1) options.max_queue = 1;
  if (options.head_file.empty()) options.head_file = options.signing_key_file + ".head";
  if (options.keyring_file.empty()) options.keyring_file = internal::keyring_path(options.signing_key_file);
  ASSIGN_OR_RETURN(auto key, internal::load_signing_key(options.signing_key_file, /*create=*/true));
  auto tail = read_tail(*db);
  if (!tail.ok()) {
    return tail.status().with_context("audit: cannot read the chain (were audit_migrations() applied?)");
  }
  auto head = internal::read_head(options.head_file);
  if (!head.ok() && head.status().code() != StatusCode::kNotFound) return head.status();
  if (head.ok()) RETURN_IF_ERROR(check_head(*db, *head, tail->seq, options.head_file));
  const int64_t end = tail->seq;
  // Stored content needs its table (state version 4); without it purge has no content to delete.
  const bool content_table = db->query("SELECT seq FROM audit_content LIMIT 1").ok();
  if (options.content_key && !content_table) {
    return InvalidArgument("audit: stored content needs the audit_content table (apply audit_content_migrations())");
  }
  auto log = std::unique_ptr<AuditLog>(new AuditLog(db, std::move(options), std::move(key), end));
  log->content_table_ = content_table;
  log->last_hash_ = tail->hash;  // read by the writer only after an append (ordered by mu_)
  return log;
}

std::shared_ptr<const internal::SigningKey> AuditLog::current_key() {
  std::lock_guard<std::mutex> lock(key_mu_);
  // One stat per commit: cheap next to the transaction, and it lets `citadel audit rotate-key` (another process)
  // take effect in a running server without a restart.
  auto ident = internal::file_identity(options_.signing_key_file);
  if (ident.ok() && *ident == key_->file) return key_;
  auto fresh = ident.ok() ? internal::load_signing_key(options_.signing_key_file, /*create=*/false)
                          : Result<std::shared_ptr<const internal::SigningKey>>(ident.status());
  if (!fresh.ok()) {
    if (!key_reload_warned_) {
      log_warn("audit: the signing key file cannot be read (" + fresh.status().message() +
               "); still signing with key " + key_->id);
    }
    key_reload_warned_ = true;
    return key_;
  }
  key_reload_warned_ = false;
  if ((*fresh)->id != key_->id) {
    log_warn("audit: the signing key file changed: now signing with key " + (*fresh)->id + " (version " +
             std::to_string((*fresh)->version) + "), was " + key_->id +
             "; verify accepts the old key's checkpoints only if it is in the keyring (citadel audit rotate-key "
             "puts it there)");
  }
  key_ = std::move(*fresh);
  return key_;
}

bool AuditLog::append(AuditEvent e) {
  if (!is_audit_event_kind(e.kind)) return false;
  if (e.time_ms == 0) e.time_ms = internal::now_ms();
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ || failed_ || queue_.size() >= options_.max_queue) return false;
    // One notify per batch (and one when a backlog builds up), not per record: append stays a queue push.
    wake = queue_.empty() || queue_.size() + 1 == early_wake_;
    AuditRecord r;
    r.event = std::move(e);
    queue_.push_back(std::move(r));
    ++enqueued_;
  }
  if (wake) wake_.notify_one();
  return true;
}

Status AuditLog::flush() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = enqueued_, failures = failures_;
  if (committed_ >= target) return OkStatus();
  flush_requested_ = true;
  wake_.notify_one();
  progress_.wait(lock, [&] { return committed_ >= target || failures_ != failures || writer_done_; });
  if (committed_ >= target) return OkStatus();
  return last_status_.ok() ? Internal("audit: the writer stopped before the flush completed") : last_status_;
}

void AuditLog::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    closed_ = true;
  }
  const Status st = flush();
  if (!st.ok()) log_error("audit: close: " + st.to_string());
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_one();
  if (writer_.joinable()) writer_.join();
}

bool AuditLog::healthy() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !failed_;
}

AuditStats AuditLog::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  AuditStats s;
  s.written = written_;
  s.write_failures = failures_;
  s.queue_depth = queue_.size() + in_flight_;
  s.last_error = last_status_.ok() ? "" : last_status_.to_string();
  std::lock_guard<std::mutex> klock(key_mu_);
  s.signing_key_id = key_->id;
  s.signing_key_version = key_->version;
  s.signing_key_age_days = internal::key_age_days(*key_, internal::now_ms() / 1000);
  s.signing_key_created_unix = key_->created_unix;
  return s;
}

void AuditLog::writer_loop() {
  const auto interval = std::chrono::milliseconds(options_.flush_interval_ms);
  std::vector<AuditRecord> batch;  // survives a failed commit: retried, never dropped while running
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || flush_requested_ || !queue_.empty() || !batch.empty(); });
      // Group commit: let records gather for one interval unless someone waits on them.
      const auto deadline = std::chrono::steady_clock::now() + interval;
      wake_.wait_until(lock, deadline, [&] {
        return stopping_ || flush_requested_ || queue_.size() >= early_wake_;
      });
      flush_requested_ = false;
      if (stopping_ && queue_.empty() && batch.empty()) break;
      while (!queue_.empty() && batch.size() < kMaxBatch) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      in_flight_ = batch.size();
    }
    if (batch.empty()) continue;
    // Short transactions (see AuditOptions::max_records_per_commit): between two, while the next chunk is hashed
    // and signed, the request path's quota reservations get the database.
    const size_t per_commit = std::max<size_t>(1, options_.max_records_per_commit);
    size_t done = 0;
    Status st;
    while (st.ok() && done < batch.size()) {
      const size_t n = std::min(per_commit, batch.size() - done);
      st = write_batch(std::span<const AuditRecord>(batch).subspan(done, n));
      if (st.ok()) done += n;
    }
    const Status hs = write_head_if_dirty(/*sync=*/false);
    if (st.ok()) st = hs;  // what is committed stays committed; the failure is reported like a commit's
    std::lock_guard<std::mutex> lock(mu_);
    committed_ += done;
    written_ += done;
    batch.erase(batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(done));
    if (st.ok()) {
      failed_ = false;
      last_status_ = OkStatus();
    } else {
      if (!failed_) log_error("audit: write failed (appends refused until it recovers): " + st.to_string());
      ++failures_;
      failed_ = true;
      last_status_ = st;
    }
    in_flight_ = batch.size();
    progress_.notify_all();
    if (!st.ok() && stopping_) {
      log_error("audit: closing with " + std::to_string(batch.size() + queue_.size()) + " records not written");
      break;
    }
  }
  const Status hs = write_head_if_dirty(/*sync=*/true);  // the last head, now durable
  if (!hs.ok()) log_error(hs.to_string());
  std::lock_guard<std::mutex> lock(mu_);
  writer_done_ = true;
  progress_.notify_all();
}

// Everything one batch's transaction writes, computed for a given chain tail: the hashed record rows (content
// sealed), the content rows and the signed checkpoint.
struct AuditLog::Prepared {
  int64_t tail_seq = 0;
  std::string tail_hash;
  std::vector<std::vector<Value>> record_chunks;  // kRowsPerInsert records (12 values each) per INSERT
  std::vector<std::vector<Value>> content_rows;
  internal::Head head;
};

Result<AuditLog::Prepared> AuditLog::prepare(std::span<const AuditRecord> batch,
                                             const std::vector<std::string>& details, int64_t tail_seq,
                                             const std::string& tail_hash, int64_t checkpoint_time,
                                             const internal::SigningKey& key) const {
  Prepared p;
  p.tail_seq = tail_seq, p.tail_hash = tail_hash;
  std::string prev = tail_hash;
  int64_t seq = tail_seq;
  for (size_t start = 0; start < batch.size(); start += kRowsPerInsert) {
    const size_t n = std::min(kRowsPerInsert, batch.size() - start);
    std::vector<Value> params;
    params.reserve(n * 12);
    for (size_t i = start; i < start + n; ++i) {
      ++seq;
      std::string sealed_detail;
      if (batch[i].event.content && options_.content_key) {
        ASSIGN_OR_RETURN(sealed_detail, seal_for_record(seq, batch[i].event, &p.content_rows));
      }
      const std::string& detail = sealed_detail.empty() ? details[i] : sealed_detail;
      std::string hash = internal::record_hash(prev, seq, batch[i].event, detail);
      push_record(params, seq, batch[i].event, detail, prev, hash);
      prev = std::move(hash);
    }
    p.record_chunks.push_back(std::move(params));
  }
  ASSIGN_OR_RETURN(std::string sig, internal::sign_hex(key.key.get(),
                                                       internal::checkpoint_message(internal::kCheckpointTag, seq,
                                                                                    prev, checkpoint_time)));
  p.head = internal::Head{seq, prev, sig, key.id, checkpoint_time};
  return p;
}

Status AuditLog::apply(store::Session& s, const Prepared& p) {
  for (const auto& params : p.record_chunks) RETURN_IF_ERROR(s.exec(insert_sql(params.size() / 12), params).status());
  for (const auto& row : p.content_rows) {
    RETURN_IF_ERROR(s.exec("INSERT INTO audit_content (seq, request_id, time_ms, key_id, nonce, ciphertext) VALUES "
                           "(?, ?, ?, ?, ?, ?)",
                           row)
                        .status());
  }
  std::vector<Value> cp;
  cp.emplace_back(p.head.seq);
  cp.emplace_back(p.head.hash);
  cp.emplace_back(p.head.time_ms);
  cp.emplace_back(p.head.key_id);
  cp.emplace_back(p.head.signature);
  return s.exec("INSERT INTO audit_checkpoints (seq, hash, time_ms, key_id, signature) VALUES (?, ?, ?, ?, ?)", cp)
      .status();
}

// Writes batch (time_ms already set) as records last_seq+1.. with one checkpoint; the head file follows in
// write_head_if_dirty().
// The database is one writer at a time (SQLite: one connection under a mutex), and quota reserve/settle on the
// request path wait for it, so the transaction does only the INSERTs: hashing, content sealing and the checkpoint
// signature are computed beforehand against the tail this writer committed last, and recomputed inside only when
// another process extended the chain meanwhile.
Status AuditLog::write_batch(std::span<const AuditRecord> batch) {
  std::vector<std::string> details;
  details.reserve(batch.size());
  for (const auto& r : batch) details.push_back(r.event.detail.dump());
  const int64_t checkpoint_time = internal::now_ms();
  const int64_t known_end = last_seq_;
  std::optional<Prepared> ahead;
  if (!last_hash_.empty()) {
    auto p = prepare(batch, details, last_seq_, last_hash_, checkpoint_time, *current_key());
    if (p.ok()) ahead = std::move(*p);
  }
  internal::Head head;
  Status st = db_->transact([&](store::Session& s) -> Status {
    ASSIGN_OR_RETURN(Tail tail, read_tail(s));
    if (tail.seq < known_end) {
      return DataLoss("audit: the chain ends at seq " + std::to_string(tail.seq) + " but this writer committed up to " +
                      std::to_string(known_end) + ": records were deleted; run `citadel audit verify`");
    }
    if (ahead && ahead->tail_seq == tail.seq && ahead->tail_hash == tail.hash) {
      RETURN_IF_ERROR(apply(s, *ahead));
      head = ahead->head;
      return OkStatus();
    }
    // A rotation committed by another process meanwhile has replaced the key file: re-read it here, inside the
    // transaction, so that no checkpoint after its rotation record is signed with the retired key.
    const auto key = current_key();
    ASSIGN_OR_RETURN(Prepared p, prepare(batch, details, tail.seq, tail.hash, checkpoint_time, *key));
    RETURN_IF_ERROR(apply(s, p));
    head = p.head;
    return OkStatus();
  });
  if (!st.ok()) return st.with_context("audit");
  last_seq_ = head.seq;
  last_hash_ = head.hash;
  last_signature_ = head.signature, last_checkpoint_ms_ = head.time_ms, last_key_id_ = head.key_id;
  head_stale_ = true;
  return OkStatus();
}

// The head file names the last committed checkpoint. It is synced to disk the first time and when the writer stops,
// not per commit: the records it names are committed with SQLite's synchronous=NORMAL (durable across a process
// crash, synced at checkpoints), and a head synced ahead of them could point past the end after a power loss. Two
// fsyncs per commit also stalled request-path commits (bench/results/gateway-amd-epyc-2026-12-05-c.json). A head
// older than the chain (a crash between a commit and this write) is accepted by verify and by open().
Status AuditLog::write_head_if_dirty(bool sync) {
  if (!head_stale_ && !(sync && head_dirty_)) return OkStatus();
  sync = sync || !head_synced_;
  const internal::Head head{last_seq_, last_hash_, last_signature_, last_key_id_, last_checkpoint_ms_};
  // On failure the head stays stale and is written again after the next commit.
  RETURN_IF_ERROR(
      internal::write_head(options_.head_file, head, sync).with_context("audit: records committed, head file"));
  head_stale_ = false;
  head_synced_ = head_synced_ || sync;
  head_dirty_ = !sync;
  return OkStatus();
}

// Seals e's content for record seq: the audit_content row to insert with the record, and the detail text naming it
// (key id and SHA-256, covered by the record hash). A retried transaction seals again with a fresh nonce.
Result<std::string> AuditLog::seal_for_record(int64_t seq, const AuditEvent& e,
                                              std::vector<std::vector<Value>>* rows) const {
  ASSIGN_OR_RETURN(SealedContent sealed, seal_content(*options_.content_key, e.request_id, seq, *e.content));
  std::vector<Value> p;
  p.emplace_back(seq);
  p.emplace_back(e.request_id);
  p.emplace_back(e.time_ms);
  p.emplace_back(sealed.key_id);
  p.emplace_back(sealed.nonce_hex);
  p.emplace_back(std::move(sealed.ciphertext_hex));
  rows->push_back(std::move(p));
  nlohmann::json d = e.detail;
  d["content"] = {{"key_id", sealed.key_id}, {"sha256", sealed.sha256_hex}};
  return d.dump();
}

Result<int64_t> AuditLog::purge(int64_t now_ms, const std::string& principal) {
  const int64_t cutoff = now_ms - options_.retention_days * 86400000;
  int64_t purged = 0, anchor_seq = 0;
  Status st = db_->transact([&](store::Session& s) -> Status {
    purged = 0;
    ASSIGN_OR_RETURN(auto rows, s.query("SELECT MIN(seq), MAX(seq) FROM audit_records WHERE time_ms >= ?",
                                        {Value{cutoff}}));
    ASSIGN_OR_RETURN(auto all, s.query("SELECT MIN(seq), MAX(seq) FROM audit_records"));
    if (all.empty() || store::is_null(all[0][0])) return OkStatus();
    // Only a prefix can go (the chain must stay contiguous): up to the first record still inside retention.
    const int64_t upto = store::is_null(rows[0][0]) ? store::as_int(all[0][1]) : store::as_int(rows[0][0]) - 1;
    if (upto < store::as_int(all[0][0])) return OkStatus();
    ASSIGN_OR_RETURN(auto last, s.query("SELECT hash FROM audit_records WHERE seq = ?", {Value{upto}}));
    if (last.empty()) return DataLoss("audit: purge: record " + std::to_string(upto) + " is missing");
    const std::string hash = store::as_text(last[0][0]);
    const auto key = current_key();
    ASSIGN_OR_RETURN(std::string sig, internal::sign_hex(key->key.get(), internal::checkpoint_message(
                                                                             internal::kAnchorTag, upto, hash, now_ms)));
    std::vector<Value> p;
    p.emplace_back(upto);
    p.emplace_back(hash);
    p.emplace_back(now_ms);
    p.emplace_back(key->id);
    p.emplace_back(sig);
    RETURN_IF_ERROR(s.exec("INSERT INTO audit_anchor (id, seq, hash, time_ms, key_id, signature) VALUES (1, ?, ?, ?, "
                           "?, ?) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, "
                           "time_ms = excluded.time_ms, key_id = excluded.key_id, signature = excluded.signature",
                           p)
                        .status());
    ASSIGN_OR_RETURN(purged, s.exec("DELETE FROM audit_records WHERE seq <= ?", {Value{upto}}));
    RETURN_IF_ERROR(s.exec("DELETE FROM audit_checkpoints WHERE seq <= ?", {Value{upto}}).status());
    if (content_table_) RETURN_IF_ERROR(s.exec("DELETE FROM audit_content WHERE seq <= ?", {Value{upto}}).status());
    anchor_seq = upto;
    return OkStatus();
  });
  if (!st.ok()) return st.with_context("audit: purge");
  if (purged == 0) return int64_t{0};
  AuditEvent e;
  e.kind = "retention.purge";
  e.principal = principal;
  e.detail = {{"purged", purged},
              {"anchor_seq", anchor_seq},
              {"retention_days", options_.retention_days},
              {"cutoff_ms", cutoff}};
  if (!append(std::move(e))) return ResourceExhausted("audit: purge done but its record was not queued");
  RETURN_IF_ERROR(flush());
  return purged;
}

Result<AuditPage> AuditLog::query(const AuditQuery& q) const { return query_audit(*db_, q); }

Result<KeyRotation> AuditLog::rotate_signing_key(const std::string& principal) {
  KeyRotation out;
  {
    // Held across the file replacement so that the writer never signs with a key half-way through it.
    std::lock_guard<std::mutex> lock(key_mu_);
    auto r = internal::rotate_key_files(options_.signing_key_file, options_.keyring_file, internal::now_ms() / 1000);
    if (!r.ok()) return r.status();
    out.old_key_id = r->old_id;
    out.new_key_id = r->new_id;
    out.new_version = r->new_version;
    key_ = r->key;
    key_reload_warned_ = false;
  }
  log_info("audit: signing key rotated: " + out.old_key_id + " -> " + out.new_key_id + " (version " +
           std::to_string(out.new_version) + "); the old public key is in " + options_.keyring_file);
  AuditEvent e;
  e.kind = "encryption.key_rotation";
  e.principal = principal;
  e.detail = {{"key", "audit_signing"},
              {"old_key_id", out.old_key_id},
              {"new_key_id", out.new_key_id},
              {"new_version", out.new_version}};
  if (!append(std::move(e))) {
    return ResourceExhausted("audit: the signing key was rotated (now " + out.new_key_id +
                             ") but its record could not be queued");
  }
  const Status st = flush();
  if (!st.ok()) return st.with_context("audit: the signing key was rotated (now " + out.new_key_id + ") but its record");
  return out;
}

}  // namespace citadel::audit
