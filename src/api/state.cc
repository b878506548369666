#include "api/state.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "auth/key_store.h"
#include "auth/quota.h"
#include "audit/audit_content.h"
#include "audit/audit_log.h"
#include "auth/schema.h"
#include "base/log.h"

namespace citadel::api {

State::~State() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (maintenance_.joinable()) maintenance_.join();
  audit.reset();  // flushes
  quotas.reset();
  keys.reset();
  db.reset();
}

void State::start_maintenance() {
  if (maintenance_.joinable() || !quotas) return;
  quotas->set_auto_purge(false);
  maintenance_ = std::thread([this] {
    std::unique_lock<std::mutex> l(mu_);
    int minutes = 0;
    while (!cv_.wait_for(l, std::chrono::seconds(60), [this] { return stop_; })) {
      l.unlock();
      const int64_t now = static_cast<int64_t>(std::time(nullptr));
      const Status st = quotas->purge(now);
      if (!st.ok()) log_warn("quota purge: " + st.message());
      ++minutes;
      if (audit && minutes % (24 * 60) == 1) {  // a minute after start, then daily
        auto ap = audit->purge(now * 1000, "server");
        if (!ap.ok()) log_warn("audit retention purge: " + ap.status().message());
        else if (*ap > 0) log_info("audit retention purge: " + std::to_string(*ap) + " records older than " +
                                   std::to_string(audit->options().retention_days) + " days removed");
      }
      if (minutes % (24 * 60) == 0) check_key_ages(now);  // at start (serve calls it), then daily
      l.lock();
    }
  });
}

void State::watch_key(std::string what, std::string id, int64_t created_unix) {
  std::lock_guard<std::mutex> l(mu_);
  watched_.push_back({std::move(what), std::move(id), created_unix});
}

std::vector<State::WatchedKey> State::watched_keys() const {
  std::lock_guard<std::mutex> l(mu_);
  return watched_;
}

int State::check_key_ages(int64_t now_unix) {
  std::vector<WatchedKey> keys;
  {
    std::lock_guard<std::mutex> l(mu_);
    keys = watched_;
  }
  if (audit) {
    const audit::AuditStats s = audit->stats();
    if (s.signing_key_created_unix <= 0) {
      log_info("audit signing key '" + s.signing_key_id + "': creation time unknown (made outside Citadel); its "
               "age is not checked until it is rotated (citadel audit rotate-key)");
    } else {
      keys.push_back({"audit signing key", s.signing_key_id, s.signing_key_created_unix});
    }
  }
  int warned = 0;
  for (const auto& k : keys) {
    if (k.created_unix <= 0) continue;
    const int64_t days = now_unix > k.created_unix ? (now_unix - k.created_unix) / 86400 : 0;
    if (days <= key_max_age_days) continue;
    const char* how = k.what == "audit signing key" ? "citadel audit rotate-key" : "citadel rotate-key";
    log_warn(k.what + " '" + k.id + "' is " + std::to_string(days) + " days old, older than key_max_age_days=" +
             std::to_string(key_max_age_days) + ": rotate it (" + how + ")");
    ++warned;
  }
  return warned;
}

std::string default_data_dir() {
  if (const char* d = std::getenv("CITADEL_DATA_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_DATA_HOME"); x && *x) return std::string(x) + "/citadel";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.local/share/citadel";
}

namespace {

// mkdir -p with mode 0700 for the directories it creates.
Status make_dirs(const std::string& path) {
  std::string cur;
  size_t i = 0;
  while (i <= path.size()) {
    const size_t j = path.find('/', i);
    const size_t end = j == std::string::npos ? path.size() : j;
    cur = path.substr(0, end);
    if (!cur.empty() && ::mkdir(cur.c_str(), 0700) != 0 && errno != EEXIST)
      return IoError(cur + ": cannot create the data directory: " + std::strerror(errno));
    if (j == std::string::npos) break;
    i = j + 1;
  }
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return IoError(path + ": not a directory");
  return OkStatus();
}

}  // namespace

Result<std::unique_ptr<State>> open_state(const StateOptions& o) {
  auto s = std::make_unique<State>();
  s->data_dir = o.data_dir.empty() ? default_data_dir() : o.data_dir;
  RETURN_IF_ERROR(make_dirs(s->data_dir));
  const std::string url = o.state_db.empty() ? s->data_dir + "/state.db" : o.state_db;
  auto db = store::open_database(url);
  if (!db.ok()) return db.status();
  s->db = std::move(*db);
  std::vector<store::Migration> steps = auth::state_migrations();
  for (auto& m : audit::audit_migrations()) steps.push_back(std::move(m));
  for (auto& m : audit::audit_content_migrations()) steps.push_back(std::move(m));
  // Each module numbers its own steps (auth 1, audit 2, PII policy 3, audit content 4): apply them in order.
  std::stable_sort(steps.begin(), steps.end(), [](const auto& a, const auto& b) { return a.version < b.version; });
  auto v = store::migrate(*s->db, steps);
  if (!v.ok()) return v.status().with_context(s->db->describe());
  s->keys = std::make_unique<auth::KeyStore>(s->db.get());
  s->quotas = std::make_unique<auth::QuotaManager>(s->db.get());
  s->audit_key_file = o.audit_key_file.empty() ? s->data_dir + "/audit.key" : o.audit_key_file;
  s->audit_head_file = s->data_dir + "/audit.head";
  s->key_max_age_days = o.key_max_age_days;
  if (o.audit) {
    audit::AuditOptions ao;
    ao.signing_key_file = s->audit_key_file;
    ao.head_file = s->audit_head_file;
    ao.keyring_file = o.audit_keyring_file;
    ao.retention_days = o.audit_retention_days;
    ao.fail_closed = o.audit_fail_closed;
    ao.content_key = o.audit_content_key;
    auto log = audit::AuditLog::open(s->db.get(), ao);
    if (!log.ok()) {
      return log.status().with_context("audit log (check it with: citadel audit verify --data-dir " + s->data_dir +
                                       ")");
    }
    s->audit = std::move(*log);
  }
  return s;
}

}  // namespace citadel::api
