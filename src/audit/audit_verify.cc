// Readers of the audit log: verify (chain, checkpoints, anchor, head file), JSONL export, paged query.
#include <algorithm>
#include <limits>
#include <map>

#include "audit/audit_chain.h"
#include "audit/audit_keys.h"
#include "audit/audit_log.h"

namespace citadel::audit {

namespace {

using store::Value;

constexpr const char* kColumns =
    "seq, time_ms, kind, principal, tenant, request_id, client, model, status, detail, prev_hash, hash";
constexpr int64_t kPage = 2000;

// A row as stored; detail_text is what the hash covers.
struct StoredRecord {
  AuditRecord rec;
  std::string detail_text;
};

StoredRecord parse_row(const store::Row& r) {
  StoredRecord s;
  s.rec.seq = store::as_int(r[0]);
  s.rec.event.time_ms = store::as_int(r[1]);
  s.rec.event.kind = store::as_text(r[2]);
  s.rec.event.principal = store::as_text(r[3]);
  s.rec.event.tenant = store::as_text(r[4]);
  s.rec.event.request_id = store::as_text(r[5]);
  s.rec.event.client = store::as_text(r[6]);
  s.rec.event.model = store::as_text(r[7]);
  s.rec.event.status = static_cast<int>(store::as_int(r[8]));
  s.detail_text = store::as_text(r[9]);
  s.rec.prev_hash = store::as_text(r[10]);
  s.rec.hash = store::as_text(r[11]);
  auto j = nlohmann::json::parse(s.detail_text, nullptr, /*allow_exceptions=*/false);
  s.rec.event.detail = j.is_discarded() ? nlohmann::json(s.detail_text) : std::move(j);
  return s;
}

struct Checkpoint {
  int64_t seq = 0, time_ms = 0;
  std::string hash, signature, key_id;
};

// The keys verification accepts: the current one and the keyring's, by id; and where the chain retired them.
struct Verifier {
  std::string current_id;
  std::map<std::string, internal::Pkey> keys;  // id -> public key (the current key included)
  std::string keyring_file;
  std::map<std::string, int64_t> retired_at;   // id -> seq of its audit signing-key rotation record

  // "" when `signature` over `message` is valid under the key named key_id (empty: the current key) and that key
  // may sign at `seq` (check_retirement); else why not.
  std::string check(const std::string& what, int64_t seq, const std::string& key_id, const std::string& message,
                    const std::string& signature, bool check_retirement) const {
    const std::string id = key_id.empty() ? current_id : key_id;
    auto k = keys.find(id);
    if (k == keys.end()) {
      return what + ": signed by key " + id + ", which is neither the signing key (" + current_id +
             ") nor in the keyring " + keyring_file + " (the signing key was replaced without `citadel audit "
             "rotate-key`, or the keyring is missing)";
    }
    if (check_retirement) {
      auto r = retired_at.find(id);
      if (r != retired_at.end() && seq >= r->second) {
        return what + ": signed by key " + id + ", which the rotation record " + std::to_string(r->second) +
               " retired";
      }
    }
    if (!internal::verify_hex(k->second.get(), message, signature)) return what + ": signature invalid for key " + id;
    return "";
  }
  // Remembers an audit signing-key rotation record (the first one naming a key wins).
  void note(const AuditRecord& r) {
    if (r.event.kind != "encryption.key_rotation" || !r.event.detail.is_object()) return;
    const auto& d = r.event.detail;
    if (d.value("key", "") != "audit_signing" || !d.contains("old_key_id") || !d["old_key_id"].is_string()) return;
    retired_at.emplace(d["old_key_id"].get<std::string>(), r.seq);
  }
};

Result<std::vector<Checkpoint>> read_checkpoints(store::Database& db, int64_t after, int64_t upto) {
  std::vector<Value> p;
  p.emplace_back(after);
  p.emplace_back(upto);
  ASSIGN_OR_RETURN(auto rows, db.query("SELECT seq, hash, time_ms, signature, key_id FROM audit_checkpoints WHERE "
                                       "seq > ? AND seq <= ? ORDER BY seq",
                                       p));
  std::vector<Checkpoint> out;
  for (const auto& r : rows) {
    out.push_back({store::as_int(r[0]), store::as_int(r[2]), store::as_text(r[1]), store::as_text(r[3]),
                   store::as_text(r[4])});
  }
  return out;
}

VerifyReport fail(VerifyReport r, int64_t seq, std::string reason) {
  r.ok = false;
  r.first_bad_seq = seq;
  r.reason = std::move(reason);
  return r;
}

std::string num(int64_t v) { return std::to_string(v); }

// Walks the chain from (start_seq, start_hash); fills rep and *last_seq, *last_checkpoint. ok stays true on success.
Status walk_chain(store::Database& db, Verifier& keys, int64_t start_seq, std::string prev, VerifyReport* rep,
                  int64_t* last_seq, int64_t* last_checkpoint) {
  int64_t expected = start_seq + 1;
  for (;;) {
    std::vector<Value> p;
    p.emplace_back(expected - 1);
    p.emplace_back(kPage);
    std::string sql = "SELECT ";
    sql.append(kColumns).append(" FROM audit_records WHERE seq > ? ORDER BY seq LIMIT ?");
    ASSIGN_OR_RETURN(auto rows, db.query(sql, p));
    if (rows.empty()) break;
    const int64_t hi = store::as_int(rows.back()[0]);
    ASSIGN_OR_RETURN(auto cps, read_checkpoints(db, expected - 1, hi));
    size_t ci = 0;
    for (const auto& row : rows) {
      const StoredRecord s = parse_row(row);
      const int64_t seq = s.rec.seq;
      if (seq != expected) {
        *rep = fail(*rep, expected, "record " + num(expected) + " is missing (the next stored is " + num(seq) + ")");
        return OkStatus();
      }
      // A checkpoint whose record is missing shows up here as a seq gap first, so cps never skip a record.
      if (s.rec.prev_hash != prev) {
        *rep = fail(*rep, seq, "record " + num(seq) + ": prev_hash does not match the previous record's hash");
        return OkStatus();
      }
      if (internal::record_hash(prev, seq, s.rec.event, s.detail_text) != s.rec.hash) {
        *rep = fail(*rep, seq, "record " + num(seq) + ": hash does not match its contents (record altered)");
        return OkStatus();
      }
      keys.note(s.rec);
      for (; ci < cps.size() && cps[ci].seq <= seq; ++ci) {
        const Checkpoint& c = cps[ci];
        if (c.seq != seq || c.hash != s.rec.hash) {
          *rep = fail(*rep, c.seq, "checkpoint " + num(c.seq) + " does not match the record's hash");
          return OkStatus();
        }
        const auto msg = internal::checkpoint_message(internal::kCheckpointTag, c.seq, c.hash, c.time_ms);
        std::string why = keys.check("checkpoint " + num(c.seq), c.seq, c.key_id, msg, c.signature, true);
        if (!why.empty()) {
          *rep = fail(*rep, c.seq, std::move(why));
          return OkStatus();
        }
        ++rep->checkpoints;
        *last_checkpoint = c.seq;
      }
      prev = s.rec.hash;
      ++expected;
      ++rep->records;
    }
  }
  *last_seq = expected - 1;
  return OkStatus();
}

// The end-of-log checks: the last record is signed, no checkpoint lies past the end, the head file is held.
Status check_end(store::Database& db, const Verifier& keys, const Result<internal::Head>& head, int64_t anchor_seq,
                 int64_t last_seq, int64_t last_checkpoint, VerifyReport* rep) {
  if (last_seq > anchor_seq && last_checkpoint != last_seq) {
    *rep = fail(*rep, last_checkpoint + 1,
                "records after seq " + num(last_checkpoint) + " are not covered by a signed checkpoint");
    return OkStatus();
  }
  std::vector<Value> p;
  p.emplace_back(last_seq);
  ASSIGN_OR_RETURN(auto beyond, db.query("SELECT MIN(seq) FROM audit_checkpoints WHERE seq > ?", p));
  ASSIGN_OR_RETURN(auto more, db.query("SELECT MIN(seq) FROM audit_records WHERE seq > ?", p));
  const bool appended_since = !more.empty() && !store::is_null(more[0][0]) && store::as_int(more[0][0]) == last_seq + 1;
  if (!beyond.empty() && !store::is_null(beyond[0][0]) && !appended_since) {
    *rep = fail(*rep, last_seq + 1, "checkpoint " + store::as_text(beyond[0][0]) +
                                        " lies beyond the last record " + num(last_seq) + ": records were deleted");
    return OkStatus();
  }
  if (!head.ok()) {
    if (last_seq > 0) *rep = fail(*rep, 0, head.status().to_string());
    return OkStatus();
  }
  const auto msg = internal::checkpoint_message(internal::kCheckpointTag, head->seq, head->hash, head->time_ms);
  // A head at or below the anchor was signed before the purge, maybe by a key whose rotation record is gone.
  std::string why = keys.check("head file", head->seq, head->key_id, msg, head->signature, head->seq > anchor_seq);
  if (!why.empty()) {
    *rep = fail(*rep, 0, std::move(why));
  } else if (head->seq > last_seq && !appended_since) {
    *rep = fail(*rep, last_seq + 1, "head file names checkpoint " + num(head->seq) + " beyond the last record " +
                                        num(last_seq) + ": the tail was deleted");
  } else if (head->seq > anchor_seq && head->seq <= last_seq) {
    std::vector<Value> q;
    q.emplace_back(head->seq);
    ASSIGN_OR_RETURN(auto cp, db.query("SELECT hash, signature FROM audit_checkpoints WHERE seq = ?", q));
    if (cp.empty() || store::as_text(cp[0][0]) != head->hash || store::as_text(cp[0][1]) != head->signature) {
      *rep = fail(*rep, head->seq, "head file checkpoint " + num(head->seq) + " is not in the database");
    }
  }
  return OkStatus();
}

}  // namespace

Result<VerifyReport> verify_audit(store::Database& db, const std::string& key_file, const std::string& head_file,
                                  const std::string& keyring_file) {
  Verifier keys;
  keys.keyring_file = keyring_file.empty() ? internal::keyring_path(key_file) : keyring_file;
  ASSIGN_OR_RETURN(internal::Pkey key, internal::load_verify_key(key_file));
  ASSIGN_OR_RETURN(keys.keys, internal::load_keyring(keys.keyring_file));
  keys.current_id = internal::key_id(key.get());
  keys.keys[keys.current_id] = std::move(key);
  // The head is read first: a writer running concurrently only moves the real end past it.
  const auto head = internal::read_head(head_file);
  if (!head.ok() && head.status().code() != StatusCode::kNotFound) return head.status();
  VerifyReport rep;
  rep.ok = true;
  ASSIGN_OR_RETURN(auto anchor,
                   db.query("SELECT seq, hash, time_ms, signature, key_id FROM audit_anchor WHERE id = 1"));
  int64_t start = 0;
  std::string prev = internal::kZeroHash;
  if (!anchor.empty()) {
    start = store::as_int(anchor[0][0]);
    prev = store::as_text(anchor[0][1]);
    const auto msg = internal::checkpoint_message(internal::kAnchorTag, start, prev, store::as_int(anchor[0][2]));
    std::string why = keys.check("retention anchor (seq " + num(start) + ")", start, store::as_text(anchor[0][4]), msg,
                                 store::as_text(anchor[0][3]), false);
    if (!why.empty()) return fail(rep, 0, std::move(why));
  }
  int64_t last_seq = start, last_checkpoint = start;
  RETURN_IF_ERROR(walk_chain(db, keys, start, prev, &rep, &last_seq, &last_checkpoint));
  if (!rep.ok) return rep;
  RETURN_IF_ERROR(check_end(db, keys, head, start, last_seq, last_checkpoint, &rep));
  return rep;
}

nlohmann::json audit_record_json(const AuditRecord& r) {
  const AuditEvent& e = r.event;
  return {{"seq", r.seq},         {"time_ms", e.time_ms},       {"kind", e.kind},     {"principal", e.principal},
          {"tenant", e.tenant},   {"request_id", e.request_id}, {"client", e.client}, {"model", e.model},
          {"status", e.status},   {"detail", e.detail},         {"prev_hash", r.prev_hash}, {"hash", r.hash}};
}

Status export_jsonl(store::Database& db, std::ostream& out, int64_t since_ms, int64_t until_ms) {
  const int64_t until = until_ms > 0 ? until_ms : std::numeric_limits<int64_t>::max();
  int64_t after = std::numeric_limits<int64_t>::min();
  std::string sql = "SELECT ";
  sql.append(kColumns).append(
      " FROM audit_records WHERE seq > ? AND time_ms >= ? AND time_ms < ? ORDER BY seq LIMIT ?");
  for (;;) {
    std::vector<Value> p;
    p.emplace_back(after);
    p.emplace_back(since_ms);
    p.emplace_back(until);
    p.emplace_back(kPage);
    ASSIGN_OR_RETURN(auto rows, db.query(sql, p));
    for (const auto& row : rows) {
      const StoredRecord s = parse_row(row);
      out << audit_record_json(s.rec).dump() << '\n';
      after = s.rec.seq;
    }
    if (!out) return IoError("audit export: write failed");
    if (static_cast<int64_t>(rows.size()) < kPage) break;
  }
  out.flush();
  return out ? OkStatus() : IoError("audit export: write failed");
}

Result<AuditPage> query_audit(store::Database& db, const AuditQuery& q) {
  if (q.limit < 1 || q.limit > 1000) return InvalidArgument("audit query: limit must be 1..1000");
  int64_t cursor = 0;
  if (!q.cursor.empty()) {
    // Opaque to clients: "s" + the last seq returned.
    if (q.cursor.size() < 2 || q.cursor[0] != 's' ||
        !std::all_of(q.cursor.begin() + 1, q.cursor.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        q.cursor.size() > 20) {
      return InvalidArgument("audit query: bad cursor");
    }
    cursor = std::stoll(q.cursor.substr(1));
  }
  std::string sql = "SELECT ";
  sql.append(kColumns).append(" FROM audit_records WHERE 1 = 1");
  std::vector<Value> p;
  if (!q.cursor.empty()) {
    sql.append(q.newest_first ? " AND seq < ?" : " AND seq > ?");
    p.emplace_back(cursor);
  }
  if (q.since_ms > 0) {
    sql.append(" AND time_ms >= ?");
    p.emplace_back(q.since_ms);
  }
  if (q.until_ms > 0) {
    sql.append(" AND time_ms < ?");
    p.emplace_back(q.until_ms);
  }
  const std::pair<const char*, const std::string*> eq[] = {
      {" AND kind = ?", &q.kind}, {" AND principal = ?", &q.principal}, {" AND tenant = ?", &q.tenant}};
  for (const auto& [clause, value] : eq) {
    if (value->empty()) continue;
    sql.append(clause);
    p.emplace_back(*value);
  }
  sql.append(q.newest_first ? " ORDER BY seq DESC LIMIT ?" : " ORDER BY seq LIMIT ?");
  p.emplace_back(static_cast<int64_t>(q.limit) + 1);
  ASSIGN_OR_RETURN(auto rows, db.query(sql, p));
  AuditPage page;
  for (size_t i = 0; i < rows.size() && i < static_cast<size_t>(q.limit); ++i) {
    page.records.push_back(parse_row(rows[i]).rec);
  }
  if (rows.size() > static_cast<size_t>(q.limit)) page.next_cursor = "s" + std::to_string(page.records.back().seq);
  return page;
}

}  // namespace citadel::audit
