// The audit log: an append-only, hash-chained record of who did what, kept in the state database, with signed
// checkpoints and a head file outside the database so that editing, deleting, reordering or truncating records is
// detected by verify_audit().
//
// Chain: record n stores prev_hash = hash of record n-1 (64 zeros for seq 1, or the retention anchor's hash after a
// purge) and hash = SHA-256(prev_hash || canonical encoding of every stored field, seq included); see
// audit_chain.h. Every committed batch also stores a checkpoint {seq, hash, time_ms, key_id, Ed25519 signature} in
// the same transaction and then rewrites the head file (temp file + rename) with that checkpoint. Deleting the tail
// of the table (records and checkpoints together) leaves the head file pointing past the end: verify fails.
// key_id names the signing key; rotate_signing_key() retires a key into a keyring of public halves that verify
// accepts (audit_keys.h), and a writer re-reads a replaced key file before each commit.
//
// Writer: append() only queues (a bounded deque under a mutex: microseconds, never the database). ONE writer thread
// commits everything queued (group commit), in transactions of at most max_records_per_commit records, each with its
// checkpoint, and then rewrites the head file once. The chain's tail is read inside that transaction, so
// several processes (replicas on PostgreSQL, the CLI beside a server) extend one chain without forking it.
//
// Durability contract: the writer commits a batch at least every flush_interval_ms while records are queued, so a
// record appended more than ~flush_interval_ms ago (plus the commit's own time) is on disk; flush() returns once
// everything appended before the call is committed (or says why not). A process killed with SIGKILL loses at most
// the records not yet committed; what was committed is never left half-written (each commit is one transaction,
// with its checkpoint). Power loss: commits follow the database's own setting (SQLite WAL with synchronous=NORMAL:
// synced at checkpoints); the head file is replaced atomically per drained batch but fsynced only on its first
// write and when the writer stops: after a power loss it may name an older checkpoint (verify accepts that) rather
// than one the unsynced database lost, and no commit pays two fsyncs.
// Lock time: the batch's hashes, content sealing and checkpoint signature are computed before the transaction
// (against the tail this writer committed last), so the database's single writer slot, which quota reserve and
// settle on the request path also need, is held only for the INSERTs.
//
// Thread-safety: AuditLog is safe from any thread. verify_audit, export_jsonl and query_audit read through the
// Database they are given (safe from any thread, concurrently with a writer).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <ostream>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "crypto/key_source.h"
#include "store/database.h"

namespace citadel::audit {

namespace internal {
struct SigningKey;  // audit_keys.h
}  // namespace internal

// One event. `detail` holds counts, reasons and ids only: the CALLER guarantees it never contains prompt or output
// text, API keys, tokens or other secrets (the log is readable by the auditor role and exported in clear).
struct AuditEvent {
  std::string kind;        // one of audit_event_kinds()
  int64_t time_ms = 0;     // Unix ms; 0: now (taken by append())
  std::string principal, tenant, request_id, client, model;
  int status = 0;          // HTTP status or 0
  nlohmann::json detail = nlohmann::json::object();
  // Stored content (audit_content.h): the prompt/output JSON of an inference request, sealed by the writer under
  // AuditOptions::content_key into audit_content; the record's detail then gets {"content": {key_id, sha256}}.
  // Dropped unread when the log has no content key. Never stored, hashed or logged in clear.
  std::shared_ptr<const std::string> content;
};

// An event as stored, with its place in the chain.
struct AuditRecord {
  int64_t seq = 0;
  AuditEvent event;
  std::string prev_hash, hash;  // lower-case hex, 64 characters
};

// The closed list of kinds; append() refuses any other (so a typo never creates an unqueryable kind).
const std::vector<std::string>& audit_event_kinds();
bool is_audit_event_kind(const std::string& kind);

// State schema version 2 "audit log" (apply after auth's state_migrations(), version 1): audit_records,
// audit_checkpoints, audit_anchor (one row once anything was purged).
std::vector<store::Migration> audit_migrations();

struct AuditOptions {
  std::string signing_key_file;  // Ed25519 private key (PEM); created mode 0600 if absent; keep it OUTSIDE the
                                 // database (whoever can rewrite both can forge the log)
  int flush_interval_ms = 100;   // group-commit period (see the durability contract)
  int64_t retention_days = 180;  // purge() deletes records older than this
  bool fail_closed = false;      // policy for the caller: refuse the request when append() returns false
  size_t max_queue = 65536;      // append() returns false beyond this many queued records
  std::string head_file;         // default: signing_key_file + ".head"
  std::string keyring_file;      // retired public keys (audit_keys.h); default: signing_key_file + ".retired"
  // Set: events' content is stored encrypted under this key (AES-256-GCM; a key separate from the signing key).
  // Needs audit_content_migrations() (state version 4) applied.
  std::shared_ptr<const crypto::Key> content_key;
  // Records per transaction. The state database has one writer slot, which quota reserve on the request path also
  // needs: a drained batch is committed as several short transactions (each with its signed checkpoint) rather than
  // one long one, so that a reservation waits at most one short commit (at 1,000 requests/s a 100-record commit held
  // it for 0.7 ms typically and up to 4 ms; bench/audit/access_path_bench.cc compares the shapes). Values < 1: 1.
  size_t max_records_per_commit = 32;
};

struct AuditStats {
  uint64_t written = 0;         // records committed by this process
  uint64_t write_failures = 0;  // failed batch commits
  size_t queue_depth = 0;       // queued, not yet committed
  std::string last_error;       // of the last failed commit ("" once a later commit succeeded)
  std::string signing_key_id;   // the key the next checkpoint is signed with (16 hex digits; never key bytes)
  int signing_key_version = 0;  // 1 for the first key, +1 per rotation
  int64_t signing_key_age_days = -1;  // -1: creation time unknown (a key Citadel did not create)
  int64_t signing_key_created_unix = 0;  // 0: unknown
};

// What rotate_signing_key() did (ids only).
struct KeyRotation {
  std::string old_key_id, new_key_id;
  int new_version = 0;
};

// GET /admin/v1/audit. Times in Unix ms, half-open [since_ms, until_ms); 0 = unbounded. Empty strings = any.
struct AuditQuery {
  int64_t since_ms = 0, until_ms = 0;
  std::string kind, principal, tenant;
  int limit = 100;              // 1..1000
  std::string cursor;           // next_cursor of the previous page ("" = first page); opaque to clients
  bool newest_first = true;
};

struct AuditPage {
  std::vector<AuditRecord> records;
  std::string next_cursor;      // "" when this is the last page
};

struct VerifyReport {
  bool ok = false;
  int64_t records = 0;          // records checked
  int64_t checkpoints = 0;      // checkpoint signatures checked
  int64_t first_bad_seq = 0;    // 0 when ok (or when the problem has no seq, e.g. a bad anchor or head file)
  std::string reason;           // what failed, "" when ok
};

class AuditLog {
 public:
  // Loads (or creates) the signing key, checks the audit tables exist and that the head file does not point past
  // the stored chain (kDataLoss: truncated log; run verify), then starts the writer thread. db must outlive the log.
  static Result<std::unique_ptr<AuditLog>> open(store::Database* db, AuditOptions options);
  ~AuditLog();  // close()
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Queues e. False when e.kind is not in the closed list, the queue is full, the last commit failed, or the log
  // is closed: the caller decides (options().fail_closed) whether to refuse the action. Never blocks on I/O.
  bool append(AuditEvent e);
  // Returns once every record appended before the call is committed; the commit's error otherwise.
  Status flush();
  // Flushes, stops the writer. Idempotent; later append() returns false.
  void close();
  bool healthy() const;
  AuditStats stats() const;
  const AuditOptions& options() const { return options_; }
  // True when events' content is stored (a content key was given): callers capture it only then.
  bool stores_content() const { return options_.content_key != nullptr; }

  // Deletes records older than now_ms - retention_days (whole prefix of the chain) and their stored content,
  // keeping a signed anchor
  // {seq, hash of the last deleted record} so that the rest still verifies, then appends and flushes a
  // retention.purge record {purged, anchor_seq, retention_days, cutoff_ms} by `principal`. Returns how many records
  // it deleted; nothing to delete: 0, no record.
  Result<int64_t> purge(int64_t now_ms, const std::string& principal = "");
  Result<AuditPage> query(const AuditQuery& q) const;

  // Replaces the signing key: the old key's public half goes to the keyring, a new key (version + 1, created now)
  // replaces the key file, and an encryption.key_rotation record {key: "audit_signing", old_key_id, new_key_id,
  // new_version} is appended and flushed, signed by the new key. A server running on the same key file picks the
  // new key up at its next batch (the writer compares the file's inode, size and mtime once per commit, inside the
  // commit's transaction, so no checkpoint after the rotation record is signed with the old key). Errors: file
  // errors (nothing changed, or the new key is in place and only the record failed: the message says which).
  Result<KeyRotation> rotate_signing_key(const std::string& principal);

 private:
  AuditLog(store::Database* db, AuditOptions options, std::shared_ptr<const internal::SigningKey> key,
           int64_t head_seq);
  void writer_loop();
  // Commits batch (at most max_records_per_commit records) as one transaction with its checkpoint; the head file
  // is written by the caller (write_head_if_dirty) once per drain, not per transaction.
  Status write_batch(std::span<const AuditRecord> batch);
  Status write_head_if_dirty(bool sync);
  struct Prepared;
  Result<Prepared> prepare(std::span<const AuditRecord> batch, const std::vector<std::string>& details,
                           int64_t tail_seq, const std::string& tail_hash, int64_t checkpoint_time,
                           const internal::SigningKey& key) const;
  static Status apply(store::Session& s, const Prepared& p);
  Result<std::string> seal_for_record(int64_t seq, const AuditEvent& e, std::vector<std::vector<store::Value>>* rows)
      const;

  // The key to sign with now: re-reads the key file when it was replaced (rotation by another process).
  std::shared_ptr<const internal::SigningKey> current_key();

  store::Database* db_;
  const AuditOptions options_;
  mutable std::mutex key_mu_;                       // guards key_ and the reload bookkeeping
  std::shared_ptr<const internal::SigningKey> key_;  // never null
  bool key_reload_warned_ = false;                   // guarded by key_mu_
  bool content_table_ = false;  // audit_content exists (state version 4): purge deletes content with records

  mutable std::mutex mu_;
  std::condition_variable wake_;      // writer: flush requested or stop
  std::condition_variable progress_;  // flushers: a commit finished (ok or not)
  std::deque<AuditRecord> queue_;     // guarded by mu_
  uint64_t enqueued_ = 0, committed_ = 0, failures_ = 0, written_ = 0;  // guarded by mu_
  int64_t last_seq_ = 0;              // writer thread only: the chain end it committed (truncation check)
  std::string last_hash_;             // writer thread only: that record's hash (batches are prepared against it)
  bool head_synced_ = false;          // writer thread only: the head file was fsynced once
  bool head_dirty_ = false;           // writer thread only: the last head was written but not fsynced
  bool head_stale_ = false;           // writer thread only: a commit since the head file was last written
  std::string last_signature_;        // writer thread only: the last checkpoint's signature and time (head file)
  int64_t last_checkpoint_ms_ = 0;
  std::string last_key_id_;           // writer thread only: the key that signed it
  size_t early_wake_ = 1;             // queue depth at which the writer commits before the interval ends
  size_t in_flight_ = 0;              // records taken by the writer, not yet committed
  bool flush_requested_ = false, stopping_ = false, closed_ = false, failed_ = false, writer_done_ = false;
  Status last_status_;                // of the last commit
  std::thread writer_;
};

// Recomputes the chain from the anchor (or seq 1): seq contiguity, every prev_hash and hash, every checkpoint's
// hash and signature, the anchor's signature, and that the head file's checkpoint exists in the database and is not
// beyond the end. Signatures are checked against the key named by the checkpoint's key_id, which must be the public
// half of the key in key_file (a private key PEM or a public key PEM) or a key of the keyring (keyring_file, ""
// = key_file + ".retired"; a missing keyring is empty): a checkpoint signed by any other key fails with its seq, and
// so does a checkpoint at or after an audit signing-key rotation record that is signed by the key it retired.
// A missing head file is a failure when records exist. Tampering is reported in VerifyReport (ok=false); Status
// errors are for an unreadable key, keyring or database.
Result<VerifyReport> verify_audit(store::Database& db, const std::string& key_file, const std::string& head_file,
                                  const std::string& keyring_file = "");

// One JSON object per line, oldest first: {seq, time_ms, kind, principal, tenant, request_id, client, model, status,
// detail, prev_hash, hash}, for records with since_ms <= time_ms < until_ms (0 = unbounded).
Status export_jsonl(store::Database& db, std::ostream& out, int64_t since_ms, int64_t until_ms);

// One page of records matching q (see AuditQuery). kInvalidArgument for a bad limit or cursor.
Result<AuditPage> query_audit(store::Database& db, const AuditQuery& q);

// The JSON form of a record (what export_jsonl writes per line and what GET /admin/v1/audit returns).
nlohmann::json audit_record_json(const AuditRecord& r);

}  // namespace citadel::audit
