#include "base/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "base/check.h"
#include "base/utf8.h"

namespace citadel::metrics {
namespace {

constexpr size_t kMaxLabelBytes = 128;

std::string sanitize_value(std::string_view v) {
  std::string out;
  out.reserve(std::min(v.size(), kMaxLabelBytes));
  for (size_t i = 0; i < v.size();) {
    const size_t n = utf8_sequence_length(v, i);
    if (n == 0) {
      if (out.size() + 1 > kMaxLabelBytes) break;
      out.push_back('?');
      ++i;
      continue;
    }
    if (out.size() + n > kMaxLabelBytes) break;  // never cut a character in half
    out.append(v.substr(i, n));
    i += n;
  }
  return out;
}

void append_labels(std::string& out, const std::vector<std::string>& names, const std::vector<std::string>& values,
                   const char* extra_name = nullptr, const std::string& extra_value = {}) {
  if (names.empty() && !extra_name) return;
  out.push_back('{');
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) out.push_back(',');
    out += names[i];
    out += "=\"";
    out += escape_label_value(values[i]);
    out.push_back('"');
  }
  if (extra_name) {
    if (!names.empty()) out.push_back(',');
    out += extra_name;
    out += "=\"";
    out += escape_label_value(extra_value);
    out.push_back('"');
  }
  out.push_back('}');
}

void render_family(const FamilyBase& f, std::string& out) {
  out += "# HELP " + f.name() + " " + escape_help(f.help()) + "\n";
  out += "# TYPE " + f.name() + " " + metric_type_name(f.type()) + "\n";
  const auto& names = f.label_names();
  auto line = [&](const std::string& metric, const std::vector<std::string>& values, double v,
                  const char* extra = nullptr, const std::string& extra_value = {}) {
    out += metric;
    append_labels(out, names, values, extra, extra_value);
    out.push_back(' ');
    out += format_value(v);
    out.push_back('\n');
  };
  switch (f.type()) {
    case MetricType::kCounter:
      for (const auto& [k, c] : static_cast<const CounterFamily&>(f).series()) line(f.name(), k, c->value());
      break;
    case MetricType::kGauge:
      for (const auto& [k, g] : static_cast<const GaugeFamily&>(f).series())
        if (g->present()) line(f.name(), k, g->value());
      break;
    case MetricType::kHistogram: {
      const auto& hf = static_cast<const HistogramFamily&>(f);
      const auto& bounds = hf.bounds();
      for (const auto& [k, h] : hf.series()) {
        const Histogram::Snapshot s = h->snapshot();
        for (size_t b = 0; b < bounds.size(); ++b)
          line(f.name() + "_bucket", k, static_cast<double>(s.cumulative[b]), "le", format_value(bounds[b]));
        line(f.name() + "_bucket", k, static_cast<double>(s.count), "le", "+Inf");
        line(f.name() + "_sum", k, s.sum);
        line(f.name() + "_count", k, static_cast<double>(s.count));
      }
      break;
    }
  }
}

}  // namespace

const char* metric_type_name(MetricType t) {
  switch (t) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
  }
  return "untyped";
}

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) {
  if (std::isnan(v)) return;
  // The first bound >= v (le is inclusive); past the last: the +Inf bucket.
  const size_t b = static_cast<size_t>(std::lower_bound(bounds_->begin(), bounds_->end(), v) - bounds_->begin());
  counts_[b].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.cumulative.resize(bounds_->size() + 1);
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    acc += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = acc;
  }
  // count is the +Inf bucket, so _count and the buckets always agree (an observe() racing with this snapshot may
  // be in _sum and not yet in a bucket, or the reverse: off by one observation at most, never inconsistent buckets).
  s.count = acc;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

FamilyBase::FamilyBase(std::string name, std::string help, MetricType type, std::vector<std::string> labels,
                       size_t max_series)
    : name_(std::move(name)), help_(std::move(help)), type_(type), labels_(std::move(labels)),
      max_series_(max_series) {
  CHECK_MSG(valid_metric_name(name_), name_.c_str());
  CHECK_MSG(max_series_ >= 1, name_.c_str());
  for (const auto& l : labels_) {
    CHECK_MSG(valid_label_name(l), l.c_str());
    CHECK_MSG(!(type_ == MetricType::kHistogram && l == "le"), "a histogram cannot have a label named le");
  }
}

std::vector<std::string> FamilyBase::sanitize(const std::vector<std::string>& values) const {
  CHECK_MSG(values.size() == labels_.size(), name_.c_str());
  std::vector<std::string> out;
  out.reserve(values.size());
  for (const auto& v : values) out.push_back(sanitize_value(v));
  return out;
}

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

bool valid_metric_name(std::string_view n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool valid_label_name(std::string_view n) {
  if (n.empty() || n.rfind("__", 0) == 0) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

Registry::Registry() = default;
Registry::~Registry() = default;

FamilyBase* Registry::find(const std::string& name) const {
  auto it = families_.find(name);
  return it == families_.end() ? nullptr : it->second.get();
}

template <class F>
F* Registry::add(const std::string& name, MetricType type, std::function<std::unique_ptr<F>()> make,
                 const std::vector<std::string>& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  if (FamilyBase* f = find(name)) {
    CHECK_MSG(f->type() == type && f->label_names() == labels, ("metric re-registered differently: " + name).c_str());
    return static_cast<F*>(f);
  }
  auto fam = make();
  F* raw = fam.get();
  families_.emplace(name, std::move(fam));
  return raw;
}

CounterFamily* Registry::counter(const std::string& name, const std::string& help, std::vector<std::string> labels,
                                 size_t max_series) {
  return add<CounterFamily>(
      name, MetricType::kCounter,
      [&] { return std::make_unique<CounterFamily>(name, help, MetricType::kCounter, labels, max_series); }, labels);
}

GaugeFamily* Registry::gauge(const std::string& name, const std::string& help, std::vector<std::string> labels,
                             size_t max_series) {
  return add<GaugeFamily>(
      name, MetricType::kGauge,
      [&] { return std::make_unique<GaugeFamily>(name, help, MetricType::kGauge, labels, max_series); }, labels);
}

HistogramFamily* Registry::histogram(const std::string& name, const std::string& help, std::vector<std::string> labels,
                                     std::vector<double> bounds, size_t max_series) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    CHECK_MSG(std::isfinite(bounds[i]), name.c_str());
    CHECK_MSG(i == 0 || bounds[i] > bounds[i - 1], ("histogram bounds must ascend: " + name).c_str());
  }
  return add<HistogramFamily>(name, MetricType::kHistogram,
                              [&] {
                                return std::make_unique<HistogramFamily>(name, help, MetricType::kHistogram, labels,
                                                                         max_series, bounds);
                              },
                              labels);
}

void Registry::add_collector(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(fn));
}

void Registry::collect() {
  std::lock_guard<std::mutex> clock(collect_mu_);
  std::vector<std::function<void()>> fns;
  {
    std::lock_guard<std::mutex> lock(mu_);
    fns = collectors_;
  }
  for (auto& fn : fns) fn();
}

std::string Registry::render() {
  collect();
  return render_collected();
}

std::string Registry::render_collected() const {
  std::vector<const FamilyBase*> fams;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, f] : families_) fams.push_back(f.get());
  }
  std::string out;
  out.reserve(fams.size() * 256);
  for (const FamilyBase* f : fams) render_family(*f, out);
  return out;
}

std::vector<Registry::Sample> Registry::samples(const std::string& name) const {
  const FamilyBase* f;
  {
    std::lock_guard<std::mutex> lock(mu_);
    f = find(name);
  }
  std::vector<Sample> out;
  if (!f) return out;
  if (f->type() == MetricType::kCounter) {
    for (const auto& [k, c] : static_cast<const CounterFamily*>(f)->series()) out.push_back({k, c->value()});
  } else if (f->type() == MetricType::kGauge) {
    for (const auto& [k, g] : static_cast<const GaugeFamily*>(f)->series())
      if (g->present()) out.push_back({k, g->value()});
  }
  return out;
}

double Registry::sum(const std::string& name) const {
  double s = 0.0;
  for (const auto& x : samples(name)) s += x.value;
  return s;
}

std::vector<std::string> Registry::names() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, f] : families_) out.push_back(name);
  return out;
}

const std::vector<double>& latency_buckets_short() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                        0.15,  0.2,    0.3,   0.5,  0.75, 1.0,  2.5};
  return b;
}

const std::vector<double>& latency_buckets_long() {
  static const std::vector<double> b = {0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,  0.5,  0.75,
                                        1.0,   2.5,  5.0,   10.0, 20.0,  40.0, 80.0, 160.0, 320.0, 600.0};
  return b;
}

}  // namespace citadel::metrics
