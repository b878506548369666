#include "bench_client/bench_client.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <sstream>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "base/clock.h"

namespace citadel::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using json = nlohmann::json;

namespace {

struct Prompt {
  json prompt;  // string or array of token ids
  int output_len = 0;
};

const char* const kWords[] = {"the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be",
                              "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but",
                              "have", "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her",
                              "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no"};

std::string random_words(std::mt19937_64& rng, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    if (i) s += ' ';
    s += kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))];
  }
  return s;
}

json random_prompt(const BenchOptions& o, std::mt19937_64& rng, int n, bool words) {
  if (words) return random_words(rng, n);
  json ids = json::array();
  for (int i = 0; i < n; ++i)
    ids.push_back(o.token_id_low + static_cast<int>(rng() % static_cast<uint64_t>(o.token_id_high - o.token_id_low)));
  return ids;
}

Result<std::vector<Prompt>> make_prompts(const BenchOptions& o) {
  std::mt19937_64 rng(o.seed);
  const bool chat = o.endpoint.find("chat") != std::string::npos;
  const bool words = chat || o.random_words;
  std::vector<Prompt> out;
  if (o.dataset == "random") {
    for (int i = 0; i < o.num_prompts; ++i) out.push_back({random_prompt(o, rng, o.random_input_len, words), o.random_output_len});
  } else if (o.dataset == "prefix-repetition") {
    std::vector<json> prefixes;
    for (int p = 0; p < std::max(1, o.num_prefixes); ++p) prefixes.push_back(random_prompt(o, rng, o.prefix_len, words));
    for (int i = 0; i < o.num_prompts; ++i) {
      const json& pre = prefixes[i % prefixes.size()];
      json suffix = random_prompt(o, rng, o.random_input_len, words);
      json p;
      if (words) {
        p = pre.get<std::string>() + " " + suffix.get<std::string>();
      } else {
        p = pre;
        for (auto& t : suffix) p.push_back(t);
      }
      out.push_back({p, o.random_output_len});
    }
  } else if (o.dataset == "sharegpt") {
    std::ifstream f(o.dataset_path);
    if (!f) return IoError(o.dataset_path + ": cannot open the ShareGPT dataset");
    json data = json::parse(f, nullptr, false);
    if (!data.is_array()) return InvalidArgument(o.dataset_path + ": expected a JSON array of conversations");
    std::vector<Prompt> all;
    for (const auto& conv : data) {
      if (!conv.is_object() || !conv.contains("conversations") || !conv["conversations"].is_array()) continue;
      const auto& turns = conv["conversations"];
      if (turns.size() < 2 || !turns[0].contains("value") || !turns[1].contains("value")) continue;
      if (!turns[0]["value"].is_string() || !turns[1]["value"].is_string()) continue;
      const std::string prompt = turns[0]["value"], reply = turns[1]["value"];
      // ~4 bytes per token (no tokenizer here); vLLM's filters: both >= 4 tokens, prompt <= 1024, sum <= 2048.
      const int pl = static_cast<int>(prompt.size() / 4), ol = static_cast<int>(reply.size() / 4);
      if (pl < 4 || ol < 4 || pl > 1024 || pl + ol > 2048) continue;
      all.push_back({prompt, o.random_output_len > 0 && o.ignore_eos ? o.random_output_len : ol});
    }
    if (all.empty()) return InvalidArgument(o.dataset_path + ": no usable conversations");
    std::shuffle(all.begin(), all.end(), rng);
    for (int i = 0; i < o.num_prompts; ++i) out.push_back(all[i % all.size()]);
  } else {
    return InvalidArgument("unknown dataset '" + o.dataset + "' (random, sharegpt, prefix-repetition)");
  }
  return out;
}

struct Conn {
  explicit Conn(asio::io_context& ioc) : sock(ioc) {}
  tcp::socket sock;
  beast::flat_buffer buf;
};

class Bench;

// One request: connect (or reuse), write, read the streamed response chunk by chunk.
class Call : public std::enable_shared_from_this<Call> {
 public:
  // scheduled: the arrival time (now_seconds()) this request was due at.
  Call(Bench* b, int idx, std::string body, bool chat, double scheduled)
      : b_(b), idx_(idx), body_(std::move(body)), chat_(chat), scheduled_(scheduled) {}
  void start();

 private:
  void send();
  void read();
  void on_sse(std::string_view data);
  void done(bool ok, std::string err);

  Bench* b_;
  int idx_;
  std::string body_;
  bool chat_;
  double scheduled_;
  std::unique_ptr<Conn> conn_;
  bool reused_ = false, got_bytes_ = false, finished_ = false;
  http::request<http::string_body> req_;
  std::optional<http::response_parser<http::string_body>> parser_;
  std::string line_buf_;
  std::function<size_t(std::uint64_t, beast::string_view, beast::error_code&)> chunk_cb_;  // outlives parser_
  double t0_ = 0, last_ = 0;
  RequestResult r_;
};

class Bench {
 public:
  Bench(const BenchOptions& o, std::vector<Prompt> prompts)
      : o_(o), prompts_(std::move(prompts)), results_(prompts_.size()), rng_(o.seed ^ 0x5bd1e995) {}

  Status resolve() {
    std::string url = o_.base_url;
    if (url.rfind("http://", 0) != 0) return InvalidArgument("--base-url must start with http://");
    url = url.substr(7);
    const size_t slash = url.find('/');
    if (slash != std::string::npos) {
      path_prefix_ = url.substr(slash);
      if (!path_prefix_.empty() && path_prefix_.back() == '/') path_prefix_.pop_back();
      url = url.substr(0, slash);
    }
    host_ = url;
    const size_t colon = url.rfind(':');
    std::string host = colon == std::string::npos ? url : url.substr(0, colon);
    std::string port = colon == std::string::npos ? "80" : url.substr(colon + 1);
    beast::error_code ec;
    tcp::resolver res(ioc_);
    auto r = res.resolve(host, port, ec);
    if (ec || r.empty()) return IoError("cannot resolve " + host + ":" + port + ": " + ec.message());
    ep_ = *r.begin();
    return OkStatus();
  }

  double run() {
    start_ = now_seconds();
    next_arrival_ = start_;
    schedule();
    ioc_.run();
    return now_seconds() - start_;
  }

  const std::vector<RequestResult>& results() const { return results_; }

  // ---- used by Call ----
  asio::io_context& ioc() { return ioc_; }
  const tcp::endpoint& ep() const { return ep_; }
  std::unique_ptr<Conn> take_conn() {
    if (idle_.empty()) return nullptr;
    auto c = std::move(idle_.back());
    idle_.pop_back();
    return c;
  }
  void give_conn(std::unique_ptr<Conn> c) { idle_.push_back(std::move(c)); }
  const std::string& host() const { return host_; }
  const BenchOptions& opts() const { return o_; }
  std::string target() const { return path_prefix_ + o_.endpoint; }
  void finished(int idx, RequestResult r) {
    results_[idx] = std::move(r);
    --inflight_;
    ++completed_;
    if (completed_ == static_cast<int>(prompts_.size())) {
      idle_.clear();
      timer_.reset();
      return;
    }
    schedule();
  }

 private:
  std::string body_for(const Prompt& p) const {
    json j;
    j["model"] = o_.model;
    if (o_.endpoint.find("chat") != std::string::npos) {
      j["messages"] = json::array({{{"role", "user"}, {"content", p.prompt.is_string() ? p.prompt : json(p.prompt.dump())}}});
    } else {
      j["prompt"] = p.prompt;
    }
    j["max_tokens"] = p.output_len;
    j["temperature"] = o_.temperature;
    if (o_.top_p < 1.0) j["top_p"] = o_.top_p;
    j["stream"] = true;
    j["stream_options"] = {{"include_usage", true}};
    if (o_.ignore_eos) j["ignore_eos"] = true;
    if (o_.logprobs >= 0) {
      if (o_.endpoint.find("chat") != std::string::npos)
        j["logprobs"] = true, j["top_logprobs"] = o_.logprobs;
      else
        j["logprobs"] = o_.logprobs;
    }
    return j.dump();
  }

  // Launches every request whose arrival time has come while the concurrency limit allows.
  void schedule() {
    while (next_ < static_cast<int>(prompts_.size())) {
      if (o_.concurrency > 0 && inflight_ >= o_.concurrency) return;
      const double now = now_seconds();
      if (o_.request_rate > 0 && next_arrival_ > now) {
        if (!timer_armed_) {
          timer_armed_ = true;
          if (!timer_) timer_ = std::make_unique<asio::steady_timer>(ioc_);
          timer_->expires_after(std::chrono::microseconds(static_cast<int64_t>((next_arrival_ - now) * 1e6)));
          timer_->async_wait([this](beast::error_code) {
            timer_armed_ = false;
            schedule();
          });
        }
        return;
      }
      const int i = next_++;
      ++inflight_;
      const double due = o_.request_rate > 0 ? next_arrival_ : now;
      if (o_.request_rate > 0) {
        if (o_.arrival == "constant") {
          next_arrival_ = start_ + (i + 1) / o_.request_rate;  // no drift from summing gaps
        } else {
          std::exponential_distribution<double> gap(o_.request_rate);
          next_arrival_ += gap(rng_);
        }
      }
      const bool chat = o_.endpoint.find("chat") != std::string::npos;
      std::make_shared<Call>(this, i, body_for(prompts_[i]), chat, due)->start();
    }
  }

  const BenchOptions& o_;
  std::vector<Prompt> prompts_;
  std::vector<RequestResult> results_;
  std::mt19937_64 rng_;
  asio::io_context ioc_;
  tcp::endpoint ep_;
  std::string host_, path_prefix_;
  std::vector<std::unique_ptr<Conn>> idle_;
  std::unique_ptr<asio::steady_timer> timer_;
  bool timer_armed_ = false;
  int next_ = 0, inflight_ = 0, completed_ = 0;
  double start_ = 0, next_arrival_ = 0;
};

void Call::start() {
  t0_ = now_seconds();
  r_.send_lag = std::max(0.0, t0_ - scheduled_);
  req_ = http::request<http::string_body>(http::verb::post, b_->target(), 11);
  req_.set(http::field::host, b_->host());
  req_.set(http::field::content_type, "application/json");
  req_.set(http::field::authorization, "Bearer " + b_->opts().api_key);
  req_.keep_alive(true);
  req_.body() = body_;
  req_.prepare_payload();
  conn_ = b_->take_conn();
  reused_ = conn_ != nullptr;
  if (conn_) return send();
  conn_ = std::make_unique<Conn>(b_->ioc());
  conn_->sock.async_connect(b_->ep(), [self = shared_from_this()](beast::error_code ec) {
    if (ec) return self->done(false, "connect: " + ec.message());
    beast::error_code ignored;
    self->conn_->sock.set_option(tcp::no_delay(true), ignored);
    self->send();
  });
}

void Call::send() {
  http::async_write(conn_->sock, req_, [self = shared_from_this()](beast::error_code ec, size_t) {
    if (ec) return self->done(false, "write: " + ec.message());
    self->parser_.emplace();
    self->parser_->body_limit(64u << 20);
    self->chunk_cb_ = [self = self.get()](std::uint64_t, beast::string_view body, beast::error_code&) -> size_t {
      self->got_bytes_ = true;
      self->line_buf_.append(body.data(), body.size());
      size_t pos;
      while ((pos = self->line_buf_.find("\n\n")) != std::string::npos) {
        std::string ev = self->line_buf_.substr(0, pos);
        self->line_buf_.erase(0, pos + 2);
        if (ev.rfind("data: ", 0) == 0) self->on_sse(std::string_view(ev).substr(6));
      }
      return body.size();
    };
    self->parser_->on_chunk_body(self->chunk_cb_);
    self->read();
  });
}

void Call::read() {
  http::async_read_some(conn_->sock, conn_->buf, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
    if (ec) {
      if (self->reused_ && !self->got_bytes_) {  // a stale keep-alive connection: retry once on a new one
        self->reused_ = false;
        self->conn_.reset();
        self->conn_ = std::make_unique<Conn>(self->b_->ioc());
        self->conn_->sock.async_connect(self->b_->ep(), [self](beast::error_code ec2) {
          if (ec2) return self->done(false, "connect: " + ec2.message());
          self->send();
        });
        return;
      }
      return self->done(false, "read: " + ec.message());
    }
    if (!self->parser_->is_done()) return self->read();
    const auto& res = self->parser_->get();
    if (res.result_int() != 200)
      return self->done(false, "HTTP " + std::to_string(res.result_int()) + ": " + res.body().substr(0, 200));
    const bool keep = res.keep_alive();
    self->done(self->r_.output_tokens > 0 || !self->r_.itl.empty() || self->r_.ttft > 0, "no tokens");
    if (keep && self->conn_) self->b_->give_conn(std::move(self->conn_));
  });
}

void Call::on_sse(std::string_view data) {
  const double t = now_seconds();
  if (data == "[DONE]") return;
  json j = json::parse(data, nullptr, false);
  if (j.is_discarded()) return;
  if (j.contains("usage") && j["usage"].is_object()) {
    r_.prompt_tokens = j["usage"].value("prompt_tokens", 0);
    r_.output_tokens = j["usage"].value("completion_tokens", 0);
  }
  if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) return;
  const auto& c = j["choices"][0];
  std::string text;
  if (chat_ && c.contains("delta")) {
    const auto& d = c["delta"];
    if (d.contains("content") && d["content"].is_string()) text = d["content"];
    if (d.contains("reasoning_content") && d["reasoning_content"].is_string()) text += d["reasoning_content"].get<std::string>();
  } else if (c.contains("text") && c["text"].is_string()) {
    text = c["text"];
  }
  if (text.empty()) return;
  if (r_.ttft == 0) r_.ttft = t - t0_;
  else r_.itl.push_back(t - last_);
  last_ = t;
}

void Call::done(bool ok, std::string err) {
  if (finished_) return;
  finished_ = true;
  r_.success = ok;
  if (!ok) r_.error = std::move(err);
  r_.e2el = now_seconds() - t0_;
  b_->finished(idx_, std::move(r_));
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = p / 100.0 * (v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = static_cast<size_t>(std::ceil(pos));
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

void add_stats(json& j, const std::string& name, const std::vector<double>& v_s) {
  std::vector<double> ms;
  for (double x : v_s) ms.push_back(x * 1e3);
  double mean = 0, sd = 0;
  for (double x : ms) mean += x;
  mean = ms.empty() ? 0 : mean / ms.size();
  for (double x : ms) sd += (x - mean) * (x - mean);
  sd = ms.empty() ? 0 : std::sqrt(sd / ms.size());
  j["mean_" + name + "_ms"] = mean;
  j["median_" + name + "_ms"] = percentile(ms, 50);
  j["std_" + name + "_ms"] = sd;
  j["p90_" + name + "_ms"] = percentile(ms, 90);
  j["p95_" + name + "_ms"] = percentile(ms, 95);
  j["p99_" + name + "_ms"] = percentile(ms, 99);
  j["p99.9_" + name + "_ms"] = percentile(ms, 99.9);
  j["max_" + name + "_ms"] = ms.empty() ? 0.0 : *std::max_element(ms.begin(), ms.end());
}

}  // namespace

json summarize(const BenchOptions& o, const std::vector<RequestResult>& results, double duration) {
  std::vector<double> ttft, tpot, itl, e2el, lag, arrival_e2el;
  int64_t in_tokens = 0, out_tokens = 0;
  int completed = 0, good = 0;
  std::vector<std::string> errors;
  double slo_ttft = -1, slo_tpot = -1, slo_e2el = -1;
  for (const auto& g : o.goodput) {
    const size_t c = g.find(':');
    if (c == std::string::npos) continue;
    const double v = std::atof(g.c_str() + c + 1) / 1e3;
    const std::string k = g.substr(0, c);
    if (k == "ttft") slo_ttft = v;
    if (k == "tpot") slo_tpot = v;
    if (k == "e2el") slo_e2el = v;
  }
  for (const auto& r : results) {
    if (!r.success) {
      if (errors.size() < 10) errors.push_back(r.error);
      continue;
    }
    ++completed;
    in_tokens += r.prompt_tokens;
    out_tokens += r.output_tokens;
    ttft.push_back(r.ttft);
    e2el.push_back(r.e2el);
    lag.push_back(r.send_lag);
    arrival_e2el.push_back(r.send_lag + r.e2el);
    double tp = 0;
    if (r.output_tokens > 1) tp = (r.e2el - r.ttft) / (r.output_tokens - 1), tpot.push_back(tp);
    itl.insert(itl.end(), r.itl.begin(), r.itl.end());
    if ((slo_ttft < 0 || r.ttft <= slo_ttft) && (slo_tpot < 0 || tp <= slo_tpot) && (slo_e2el < 0 || r.e2el <= slo_e2el))
      ++good;
  }
  json j;
  j["backend"] = "openai";
  j["endpoint"] = o.endpoint;
  j["model_id"] = o.model;
  j["dataset"] = o.dataset;
  j["num_prompts"] = results.size();
  j["request_rate"] = o.request_rate > 0 ? json(o.request_rate) : json("inf");
  j["arrival"] = o.request_rate > 0 ? json(o.arrival) : json(nullptr);
  j["max_concurrency"] = o.concurrency > 0 ? json(o.concurrency) : json(nullptr);
  j["random_input_len"] = o.random_input_len;
  j["random_output_len"] = o.random_output_len;
  j["duration"] = duration;
  j["completed"] = completed;
  j["failed"] = static_cast<int>(results.size()) - completed;
  j["total_input_tokens"] = in_tokens;
  j["total_output_tokens"] = out_tokens;
  j["request_throughput"] = duration > 0 ? completed / duration : 0.0;
  j["request_goodput"] = o.goodput.empty() ? json(nullptr) : json(duration > 0 ? good / duration : 0.0);
  j["output_throughput"] = duration > 0 ? out_tokens / duration : 0.0;
  j["total_token_throughput"] = duration > 0 ? (in_tokens + out_tokens) / duration : 0.0;
  add_stats(j, "ttft", ttft);
  add_stats(j, "tpot", tpot);
  add_stats(j, "itl", itl);
  add_stats(j, "e2el", e2el);
  add_stats(j, "send_lag", lag);
  add_stats(j, "arrival_e2el", arrival_e2el);
  j["errors"] = errors;
  return j;
}

Result<json> run_bench(const BenchOptions& o) {
  if (o.model.empty()) return InvalidArgument("--model is required");
  if (o.num_prompts < 1) return InvalidArgument("--num-prompts must be >= 1");
  if (o.token_id_high <= o.token_id_low) return InvalidArgument("bad token id range");
  if (!(o.top_p > 0.0 && o.top_p <= 1.0)) return InvalidArgument("--top-p must be in (0, 1]");
  if (o.arrival != "poisson" && o.arrival != "constant")
    return InvalidArgument("--arrival must be poisson or constant, got '" + o.arrival + "'");
  auto prompts = make_prompts(o);
  if (!prompts.ok()) return prompts.status();
  Bench b(o, std::move(*prompts));
  RETURN_IF_ERROR(b.resolve());
  const double dur = b.run();
  return summarize(o, b.results(), dur);
}

}  // namespace citadel::bench
