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

#include "base/status.h"
#include "store/database.h"

namespace citadel::auth {
class KeyStore;
class QuotaManager;
}  // namespace citadel::auth

namespace citadel::api {

struct State {
  std::string data_dir;
  std::unique_ptr<store::Database> db;
  std::unique_ptr<auth::KeyStore> keys;
  std::unique_ptr<auth::QuotaManager> quotas;
  ~State();  // stops the maintenance thread first

  // Purges expired quota leases and old usage rows once a minute on a thread of its own (serve); without it the
  // quota manager purges inline now and then.
  void start_maintenance();

 private:
  std::thread maintenance_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

// $CITADEL_DATA_DIR, else $XDG_DATA_HOME/citadel, else ~/.local/share/citadel.
std::string default_data_dir();

// data_dir "" = default_data_dir(); created with mode 0700 when absent. state_db "" = <data_dir>/state.db.
Result<std::unique_ptr<State>> open_state(const std::string& data_dir, const std::string& state_db);

}  // namespace citadel::api
