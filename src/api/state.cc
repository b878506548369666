#include "api/state.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "auth/key_store.h"
#include "auth/quota.h"
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
  quotas.reset();
  keys.reset();
  db.reset();
}

void State::start_maintenance() {
  if (maintenance_.joinable() || !quotas) return;
  quotas->set_auto_purge(false);
  maintenance_ = std::thread([this] {
    std::unique_lock<std::mutex> l(mu_);
    while (!cv_.wait_for(l, std::chrono::seconds(60), [this] { return stop_; })) {
      l.unlock();
      const Status st = quotas->purge(static_cast<int64_t>(std::time(nullptr)));
      if (!st.ok()) log_warn("quota purge: " + st.message());
      l.lock();
    }
  });
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

Result<std::unique_ptr<State>> open_state(const std::string& data_dir, const std::string& state_db) {
  auto s = std::make_unique<State>();
  s->data_dir = data_dir.empty() ? default_data_dir() : data_dir;
  std::string url = state_db;
  if (url.empty()) {
    RETURN_IF_ERROR(make_dirs(s->data_dir));
    url = s->data_dir + "/state.db";
  }
  auto db = store::open_database(url);
  if (!db.ok()) return db.status();
  s->db = std::move(*db);
  auto v = store::migrate(*s->db, auth::state_migrations());
  if (!v.ok()) return v.status().with_context(s->db->describe());
  s->keys = std::make_unique<auth::KeyStore>(s->db.get());
  s->quotas = std::make_unique<auth::QuotaManager>(s->db.get());
  return s;
}

}  // namespace citadel::api
