// The access path alone, without HTTP: what a request waits for in authentication (API key, cached) and quota
// admission (one state-database transaction), at a constant arrival rate, with and beside the audit writer.
// It separates the server's own per-request cost from the machine's scheduling noise that dominates end-to-end tails
// on a shared host (bench/audit/audit_cost.py measures end to end), and compares the audit writer's commit shapes
// in one binary, interleaved:
//   none   no audit log
//   long   one transaction per drained batch (max_records_per_commit unbounded: the writer before 2026-12-06)
//   short  transactions of at most 32 records (AuditOptions' default)
// Each request: KeyStore::authenticate + QuotaManager::reserve (timed: the request path), then an `inference` audit
// event and QuotaManager::settle_later (as the server does when the exchange completes). State on SQLite in a temp
// directory, a developer key with every limit set (the quota stage reserves and settles for real).
//   citadel_access_bench [--rate 1000] [--seconds 10] [--repeats 3] [--modes none,long,short]   -> JSON on stdout
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "audit/audit_content.h"
#include "audit/audit_log.h"
#include "auth/key_store.h"
#include "auth/quota.h"
#include "auth/schema.h"
#include "store/database.h"

namespace {

using namespace citadel;
using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "citadel_access_bench: %s\n", what.c_str());
  std::exit(1);
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())))];
}

struct Run {
  std::vector<double> access_us, lag_us;
  double seconds = 0;
};

// One run of `seconds` at `rate` on a fresh state directory.
Run run_once(const std::string& mode, double rate, double seconds, int repeat) {
  const std::string dir = std::filesystem::temp_directory_path().string() + "/citadel-access-bench-" + mode + "-" +
                          std::to_string(repeat) + "-" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto db = store::open_database(dir + "/state.db");
  if (!db.ok()) die(db.status().to_string());
  std::vector<store::Migration> steps = auth::state_migrations();
  for (auto& m : audit::audit_migrations()) steps.push_back(std::move(m));
  for (auto& m : audit::audit_content_migrations()) steps.push_back(std::move(m));
  std::stable_sort(steps.begin(), steps.end(), [](const auto& a, const auto& b) { return a.version < b.version; });
  if (auto v = store::migrate(**db, steps); !v.ok()) die(v.status().to_string());
  auth::KeyStore keys(db->get());
  auth::QuotaManager quotas(db->get());
  const int64_t now0 = static_cast<int64_t>(std::time(nullptr));
  auth::NewKey nk;
  nk.name = "bench";
  nk.role = auth::Role::kDeveloper;
  nk.limits.requests_per_minute = 1000000, nk.limits.tokens_per_minute = 100000000;
  nk.limits.concurrent_requests = 100000, nk.limits.max_tokens_per_request = 16;
  nk.limits.daily_tokens = 1000000000;
  auto key = keys.create(nk, now0);
  if (!key.ok()) die(key.status().to_string());
  const std::string raw = key->second;
  std::unique_ptr<audit::AuditLog> log;
  if (mode != "none") {
    audit::AuditOptions ao;
    ao.signing_key_file = dir + "/audit.key";
    ao.max_records_per_commit = mode == "long" ? size_t{1} << 30 : ao.max_records_per_commit;
    auto l = audit::AuditLog::open(db->get(), ao);
    if (!l.ok()) die(l.status().to_string());
    log = std::move(*l);
  }
  Run r;
  const auto period = std::chrono::duration<double>(1.0 / rate);
  const int n = static_cast<int>(rate * seconds);
  r.access_us.reserve(n), r.lag_us.reserve(n);
  const auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    const auto due = start + std::chrono::duration_cast<Clock::duration>(period * i);
    std::this_thread::sleep_until(due);
    const auto t0 = Clock::now();
    const int64_t now = static_cast<int64_t>(std::time(nullptr));
    auto k = keys.authenticate(raw, now);
    if (!k.ok()) die(k.status().to_string());
    const std::string rid = "req-" + std::to_string(repeat) + "-" + std::to_string(i);
    auto d = quotas.reserve(rid, {{"key:" + k->id, k->effective_limits}}, 17, 1, now, 660);
    if (!d.ok() || !d->allowed) die("reserve refused");
    const auto t1 = Clock::now();
    r.access_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    r.lag_us.push_back(std::chrono::duration<double, std::micro>(t0 - due).count());
    if (log) {
      audit::AuditEvent e;
      e.kind = "inference";
      e.principal = "key:" + k->id, e.tenant = k->tenant, e.request_id = rid, e.client = "127.0.0.1";
      e.model = "dbg", e.status = 200;
      e.detail = {{"method", "POST"}, {"route", "/v1/completions"}, {"latency_ms", 0}, {"role", "developer"},
                  {"prompt_tokens", 16}, {"completion_tokens", 1}, {"cached_prompt_tokens", 0},
                  {"finish_reason", "length"}, {"streamed", true}};
      log->append(std::move(e));
    }
    quotas.settle_later(rid, 17, now);
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (log) log->close();
  log.reset();
  std::filesystem::remove_all(dir);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  double rate = 1000, seconds = 10;
  int repeats = 3;
  std::vector<std::string> modes = {"none", "long", "short"};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--rate") rate = std::atof(v.c_str());
    else if (a == "--seconds") seconds = std::atof(v.c_str());
    else if (a == "--repeats") repeats = std::atoi(v.c_str());
    else if (a == "--modes") {
      modes.clear();
      std::stringstream ss(v);
      for (std::string m; std::getline(ss, m, ',');) modes.push_back(m);
    } else die("unknown flag " + a);
  }
  for (const auto& m : modes)
    if (m != "none" && m != "long" && m != "short") die("mode must be none, long or short: " + m);
  std::map<std::string, std::vector<nlohmann::json>> out;
  for (int rep = 0; rep < repeats; ++rep) {
    for (size_t j = 0; j < modes.size(); ++j) {
      const std::string& m = modes[(j + rep) % modes.size()];  // rotate the order per repeat
      const Run r = run_once(m, rate, seconds, rep);
      nlohmann::json j_run = {{"p50_access_us", pct(r.access_us, 50)},
                              {"p99_access_us", pct(r.access_us, 99)},
                              {"p99.9_access_us", pct(r.access_us, 99.9)},
                              {"max_access_us", pct(r.access_us, 100)},
                              {"p99_lag_us", pct(r.lag_us, 99)},
                              {"achieved_rate_per_s", static_cast<double>(r.access_us.size()) / r.seconds}};
      std::fprintf(stderr, "%-5s r%d %s\n", m.c_str(), rep + 1, j_run.dump().c_str());
      out[m].push_back(j_run);
    }
  }
  nlohmann::json res = {{"rate_per_s", rate}, {"seconds_per_run", seconds}, {"repeats", repeats}};
  for (const auto& [m, runs] : out) {
    nlohmann::json med;
    for (const char* k : {"p50_access_us", "p99_access_us", "p99.9_access_us", "max_access_us", "p99_lag_us"}) {
      std::vector<double> v;
      for (const auto& r : runs) v.push_back(r[k].get<double>());
      med[k] = pct(v, 50);
    }
    res["median_of_repeats"][m] = med;
    res["runs"][m] = runs;
  }
  std::printf("%s\n", res.dump(2).c_str());
  return 0;
}
