// The server's state (keys, tenants, quota counters) opened from --data-dir / --state-db: the database, migrated to
// this binary's schema, and the stores over it. Shared by `citadel serve` and the `citadel keys` CLI, which may run
// at the same time on the same data directory (SQLite serialises writers; PostgreSQL is shared by replicas).
// Thread-safety: the stores are thread-safe; State itself is built once.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "store/database.h"

namespace citadel::auth {
class KeyStore;
class QuotaManager;
}  // namespace citadel::auth
namespace citadel::audit {
class AuditLog;
}  // namespace citadel::audit
namespace citadel::crypto {
struct Key;
}  // namespace citadel::crypto

namespace citadel::api {

struct State {
  std::string data_dir;
  std::unique_ptr<store::Database> db;
  std::unique_ptr<auth::KeyStore> keys;
  std::unique_ptr<auth::QuotaManager> quotas;
  std::unique_ptr<audit::AuditLog> audit;  // null when opened without the audit log
  std::string audit_key_file;              // the Ed25519 signing key, outside the database (default <data_dir>/audit.key)
  std::string audit_head_file;             // <data_dir>/audit.head: the latest checkpoint this process signed
  int key_max_age_days = 90;               // check_key_ages() warns about keys older than this
  ~State();  // stops the maintenance thread first, then flushes the audit log

  // Purges expired quota leases and old usage rows once a minute, and audit records past retention a minute after
  // start and then once a day, and calls check_key_ages() once a day, on a thread of its own (serve); without it
  // the quota manager purges inline now and then.
  void start_maintenance();

  // Another key whose age check_key_ages() watches (e.g. "model key" of an encrypted model). Thread-safe.
  void watch_key(std::string what, std::string id, int64_t created_unix);
  // Logs a warning, naming the key by id (never its bytes), for the audit signing key and each watched key older
  // than key_max_age_days at now_unix; returns how many warnings it logged. Thread-safe.
  int check_key_ages(int64_t now_unix);

  struct WatchedKey {
    std::string what, id;
    int64_t created_unix = 0;
  };
  // The keys watch_key() added (the audit signing key is reported by the audit log itself). Thread-safe.
  std::vector<WatchedKey> watched_keys() const;

 private:
  std::thread maintenance_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<WatchedKey> watched_;  // guarded by mu_
};

// $CITADEL_DATA_DIR, else $XDG_DATA_HOME/citadel, else ~/.local/share/citadel.
std::string default_data_dir();

struct StateOptions {
  std::string data_dir;            // "" = default_data_dir(); created with mode 0700 when absent
  std::string state_db;            // "" = <data_dir>/state.db
  bool audit = true;               // open the audit log (its head file lives in data_dir, also with PostgreSQL)
  std::string audit_key_file;      // "" = <data_dir>/audit.key; replicas on one PostgreSQL database share one key
  std::string audit_keyring_file;  // "" = <audit key file>.retired (retired public keys; audit_keys.h)
  int64_t audit_retention_days = 180;
  int key_max_age_days = 90;       // State::check_key_ages()
  bool audit_fail_closed = false;
  // Set: inference prompts and outputs are stored in the audit log, AES-256-GCM encrypted under this key
  // (audit/audit_content.h). Never the signing key.
  std::shared_ptr<const crypto::Key> audit_content_key;
};
// Opens the database, migrates it (auth's and the audit log's steps merged in ascending version order: keys,
// tenants, quotas v1, audit v2, PII policy v3, audit content v4) and the stores over it.
Result<std::unique_ptr<State>> open_state(const StateOptions& o);

}  // namespace citadel::api
