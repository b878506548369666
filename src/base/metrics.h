// Metrics: one registry of counters, gauges and histograms, written by the engine, the API and the transport, read
// by GET /metrics (Prometheus text exposition format 0.0.4) and GET /api/v1/stats.
//
//   Registry reg;
//   auto* req = reg.counter("citadel:http_requests_total", "HTTP exchanges.", {"route", "status"});
//   Counter* c = req->with({"/v1/models", "200"});   // stable pointer: cache it on hot paths
//   c->inc();
//   std::string text = reg.render();                  // collectors run, then the exposition text
//
// Families have a fixed list of label names (set at registration) and a bound on their number of series: once a
// family holds max_series series, a new combination of label values is folded into one overflow series whose every
// label value is "other" (so a flood of tenants or keys cannot grow the exposition without limit). Label values are
// cut to 128 bytes and invalid UTF-8 bytes become '?' before lookup (the exposition must be UTF-8).
//
// Thread-safety: every method of every type here is safe from any thread. Counter/Gauge/Histogram updates are
// lock-free atomics (the hot path: an engine step, an exchange's end); with() takes the family's mutex (a map
// lookup); render()/collect() take the registry's collect mutex, so collectors never run concurrently.
// Errors: a malformed metric or label name, a label-count mismatch or a re-registration with another type or other
// labels is a programming error (CHECK); nothing here depends on input from users.
// Layering: base only (the engine writes metrics; the API renders them).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace citadel::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };
const char* metric_type_name(MetricType t);  // "counter", "gauge", "histogram" (the # TYPE word)

inline constexpr size_t kDefaultMaxSeries = 1000;
inline constexpr const char* kOverflowLabel = "other";

class Counter {
 public:
  void inc(double v = 1.0) {  // v >= 0 (a negative v is ignored: counters only go up)
    if (v > 0) v_.fetch_add(v, std::memory_order_relaxed);
  }
  // Mirrors an external monotonic count (a collector copying AuditLog::stats()); never use beside inc().
  void set_total(double v) { v_.store(v, std::memory_order_relaxed); }
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0.0};
};

class Gauge {
 public:
  void set(double v) {
    v_.store(v, std::memory_order_relaxed);
    present_.store(true, std::memory_order_relaxed);
  }
  void add(double v) {
    v_.fetch_add(v, std::memory_order_relaxed);
    present_.store(true, std::memory_order_relaxed);
  }
  // Leaves the series out of the exposition and of samples() until the next set()/add(): a collector whose source
  // failed this scrape (an NVML call for one device) reports no value rather than a stale or invented one.
  void clear() { present_.store(false, std::memory_order_relaxed); }
  bool present() const { return present_.load(std::memory_order_relaxed); }
  double value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> v_{0.0};
  std::atomic<bool> present_{true};
};

// Fixed buckets (upper bounds, ascending; +Inf is implicit). observe() is one binary search and three atomic adds.
class Histogram {
 public:
  explicit Histogram(const std::vector<double>* bounds);
  void observe(double v);
  struct Snapshot {
    std::vector<uint64_t> cumulative;  // [bounds + 1] observations <= bound; the last is +Inf (== count)
    double sum = 0.0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double>* bounds_;                // owned by the family, immutable
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // [bounds + 1] per bucket (not cumulative)
  std::atomic<double> sum_{0.0};
};

// Common part of a family: name, help, labels, the series map. Series are never removed (pointers stay valid for
// the registry's lifetime).
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, MetricType type, std::vector<std::string> labels, size_t max_series);
  virtual ~FamilyBase() = default;
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return labels_; }
  size_t max_series() const { return max_series_; }
  virtual size_t size() const = 0;  // series now held (the overflow series included)

 protected:
  // The values as a series key: one per label name (CHECK), each cut to 128 bytes, invalid UTF-8 bytes as '?'.
  std::vector<std::string> sanitize(const std::vector<std::string>& values) const;

  const std::string name_, help_;
  const MetricType type_;
  const std::vector<std::string> labels_;
  const size_t max_series_;
  mutable std::mutex mu_;
};

template <class T>
class Family : public FamilyBase {
 public:
  Family(std::string name, std::string help, MetricType type, std::vector<std::string> labels, size_t max_series,
         std::vector<double> bounds = {})
      : FamilyBase(std::move(name), std::move(help), type, std::move(labels), max_series), bounds_(std::move(bounds)) {}

  // The series for these label values (one per label name, in order); created on first use; the overflow series
  // ("other" for every label) once the family is full.
  T* with(const std::vector<std::string>& values) {
    std::vector<std::string> key = sanitize(values);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = series_.find(key);
    if (it != series_.end()) return it->second.get();
    if (series_.size() >= max_series_) {
      key.assign(labels_.size(), kOverflowLabel);
      it = series_.find(key);
      if (it != series_.end()) return it->second.get();
    }
    return series_.emplace(std::move(key), make()).first->second.get();
  }
  T* with(std::initializer_list<std::string_view> values) {
    std::vector<std::string> v;
    v.reserve(values.size());
    for (std::string_view s : values) v.emplace_back(s);
    return with(v);
  }
  T* get() { return with(std::vector<std::string>{}); }  // a family without labels

  // Every series, in label-value order (a copy of the keys; values read live through the pointers).
  std::vector<std::pair<std::vector<std::string>, const T*>> series() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::pair<std::vector<std::string>, const T*>> out;
    out.reserve(series_.size());
    for (const auto& [k, v] : series_) out.emplace_back(k, v.get());
    return out;
  }
  size_t size() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return series_.size();
  }
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::unique_ptr<T> make() const {
    if constexpr (std::is_same_v<T, Histogram>) return std::make_unique<Histogram>(&bounds_);
    else return std::make_unique<T>();
  }
  const std::vector<double> bounds_;  // histograms only
  std::map<std::vector<std::string>, std::unique_ptr<T>> series_;
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// A label value as the exposition writes it (\\, \" and \n escaped), and a HELP text (\\ and \n escaped).
std::string escape_label_value(std::string_view v);
std::string escape_help(std::string_view v);
// A sample value: shortest round-trip decimal, "NaN", "+Inf", "-Inf".
std::string format_value(double v);
// [a-zA-Z_:][a-zA-Z0-9_:]* (metric) and [a-zA-Z_][a-zA-Z0-9_]* without a "__" prefix (label).
bool valid_metric_name(std::string_view name);
bool valid_label_name(std::string_view name);

class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registering an existing name returns the existing family when type and labels match (CHECK otherwise), so two
  // engines of one process share theirs.
  CounterFamily* counter(const std::string& name, const std::string& help, std::vector<std::string> labels = {},
                         size_t max_series = kDefaultMaxSeries);
  GaugeFamily* gauge(const std::string& name, const std::string& help, std::vector<std::string> labels = {},
                     size_t max_series = kDefaultMaxSeries);
  // bounds: finite, strictly ascending upper bounds (+Inf is added by the exposition).
  HistogramFamily* histogram(const std::string& name, const std::string& help, std::vector<std::string> labels,
                             std::vector<double> bounds, size_t max_series = kDefaultMaxSeries);

  // fn runs at every collect() (and so every render()), before the text is made: it refreshes gauges from outside
  // state (/proc, the audit log, the transport). It must be quick and must not call collect() or render().
  void add_collector(std::function<void()> fn);
  void collect();
  // collect() + the exposition (text format 0.0.4), families sorted by name, series by label values.
  std::string render();
  // The exposition without running collectors (tests, and readers that collected already).
  std::string render_collected() const;

  // Reading back (the stats JSON, tests): the samples of a counter or gauge family (empty for an unknown name),
  // and their sum. Call collect() first where collector-fed values matter.
  struct Sample {
    std::vector<std::string> labels;
    double value = 0.0;
  };
  std::vector<Sample> samples(const std::string& name) const;
  double sum(const std::string& name) const;
  std::vector<std::string> names() const;  // every family name, sorted

 private:
  FamilyBase* find(const std::string& name) const;
  template <class F>
  F* add(const std::string& name, MetricType type, std::function<std::unique_ptr<F>()> make,
         const std::vector<std::string>& labels);

  mutable std::mutex mu_;            // families_ and collectors_
  std::mutex collect_mu_;            // one collect() at a time
  std::map<std::string, std::unique_ptr<FamilyBase>> families_;
  std::vector<std::function<void()>> collectors_;
};

// Bucket sets used by Citadel's histograms (seconds); each has a bound at the alert thresholds 0.15 and 0.3.
const std::vector<double>& latency_buckets_short();  // inter-token latency: 1 ms .. 2.5 s
const std::vector<double>& latency_buckets_long();   // TTFT, queue, e2e, HTTP: 5 ms .. 600 s

}  // namespace citadel::metrics
