#include "api/openai/generation.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <random>

#include "base/clock.h"
#include "base/log.h"
#include "chat/reasoning.h"
#include "engine/stop.h"

namespace citadel::api {

using ojson = nlohmann::ordered_json;

namespace {

constexpr size_t kSamples = 4096;
constexpr size_t kHighWater = 256u << 10;  // stop pumping while this much output is queued on the socket

std::string random_suffix() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  uint64_t x = salt + 0x9e3779b97f4a7c15ull * (++counter);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(x));
  return buf;
}

void push_sample(std::vector<double>& ring, size_t& next, double v) {
  if (ring.size() < kSamples) ring.push_back(v);
  else ring[next] = v;
  next = (next + 1) % kSamples;
}

ojson summarize(std::vector<double> v, int64_t count, double sum) {
  ojson j;
  j["count"] = count;
  j["mean_ms"] = count ? 1e3 * sum / static_cast<double>(count) : 0.0;
  if (v.empty()) {
    j["p50_ms"] = 0.0, j["p90_ms"] = 0.0, j["p99_ms"] = 0.0, j["max_ms"] = 0.0;
    return j;
  }
  std::sort(v.begin(), v.end());
  auto q = [&](double p) { return 1e3 * v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))]; };
  j["p50_ms"] = q(0.5), j["p90_ms"] = q(0.9), j["p99_ms"] = q(0.99), j["max_ms"] = 1e3 * v.back();
  return j;
}

ojson bytes_array(const std::string& s) {
  ojson a = ojson::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

}  // namespace

void ServiceStats::record_pre_submit(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  push_sample(pre_submit_, pre_next_, s);
  pre_count_++, pre_sum_ += s;
}
void ServiceStats::record_first_step(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  push_sample(first_step_, first_next_, s);
  first_count_++, first_sum_ += s;
}
nlohmann::json ServiceStats::to_json(const metrics::Registry& reg) const {
  int64_t by_class[6] = {0, 0, 0, 0, 0, 0};  // 1xx..5xx
  for (const auto& s : reg.samples("citadel:http_requests_total")) {
    const int c = s.labels.size() == 3 && !s.labels[2].empty() ? s.labels[2][0] - '0' : 0;
    if (c >= 1 && c <= 5) by_class[c] += static_cast<int64_t>(s.value);
  }
  std::lock_guard<std::mutex> lock(mu_);
  nlohmann::json j;
  j["received_to_submit"] = summarize(pre_submit_, pre_count_, pre_sum_);
  j["received_to_first_step"] = summarize(first_step_, first_count_, first_sum_);
  j["responses_2xx"] = by_class[2], j["responses_4xx"] = by_class[4], j["responses_5xx"] = by_class[5];
  j["client_disconnects"] = client_disconnects.load();
  j["streams_active"] = streams_active.load();
  return j;
}

std::string sse_data(const std::string& json_text) { return "data: " + json_text + "\n\n"; }

std::string dump_json(const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); }

namespace {

struct Choice {
  int index = 0;
  int prompt_index = 0;
  std::shared_ptr<engine::RequestHandle> handle;
  std::unique_ptr<StreamDecoder> dec;
  engine::StopStringMatcher stop;
  std::optional<chat::ReasoningSplitter> splitter;
  std::string text, reasoning;  // accumulated (non-streaming)
  ojson lp_content = ojson::array();  // chat: [{token, logprob, bytes, top_logprobs}]
  ojson lp_tokens = ojson::array(), lp_token_logprobs = ojson::array(), lp_top = ojson::array(),
        lp_offsets = ojson::array();  // completions
  size_t text_len = 0;              // bytes of text emitted so far (completions text_offset)
  std::string finish_reason;
  Status error;                     // engine failure, if any (its code picks the HTTP status)
  bool stopped_by_string = false;
  bool done = false;
  bool role_sent = false;
  bool echo_sent = false;
  engine::Usage usage;
  explicit Choice(std::vector<std::string> stops) : stop(std::move(stops)) {}
};

// What one event added to a choice (one stream chunk).
struct Delta {
  std::string content, reasoning;
  ojson lp_content = ojson::array();
  ojson lp_tokens = ojson::array(), lp_token_logprobs = ojson::array(), lp_top = ojson::array(),
        lp_offsets = ojson::array();
  bool empty() const { return content.empty() && reasoning.empty() && lp_content.empty() && lp_tokens.empty(); }
};

class Generation : public std::enable_shared_from_this<Generation> {
 public:
  Generation(std::shared_ptr<const ModelHost> host, std::shared_ptr<ServiceStats> stats, ParsedRequest req,
             PreparedRequest prep, std::shared_ptr<server::Responder> r, std::shared_ptr<RequestContext> ctx,
             double received_at, std::string request_id)
      : host_(std::move(host)), stats_(std::move(stats)), req_(std::move(req)), prep_(std::move(prep)),
        responder_(std::move(r)), ctx_(std::move(ctx)), received_at_(received_at),
        request_id_(std::move(request_id)) {
    const bool chat = req_.endpoint == Endpoint::kChat;
    id_ = (chat ? "chatcmpl-" : "cmpl-") + random_suffix();
    created_ = static_cast<int64_t>(std::time(nullptr));
    for (int32_t t : host_->codec->eog_ids()) eog_.push_back(t);
  }

  ~Generation() {
    for (auto& c : choices_)
      if (c->handle && !c->handle->finished()) c->handle->cancel();
    if (stream_counted_) stats_->streams_active--;
  }

  // Engine-thread callback: records the first step and posts one pump onto the connection's executor.
  std::function<void()> make_notify() {
    std::weak_ptr<Generation> weak = weak_from_this();
    std::weak_ptr<server::Responder> wr = responder_;
    return [weak, wr] {
      auto g = weak.lock();
      if (!g) return;
      if (!g->first_step_seen_.exchange(true)) g->stats_->record_first_step(now_seconds() - g->received_at_);
      if (g->pump_posted_.exchange(true)) return;  // a pump is already queued
      if (auto r = wr.lock()) r->post([weak] {
        if (auto g2 = weak.lock()) g2->pump();
      });
    };
  }

  void start() {
    const std::function<void()> notify = make_notify();
    const int n_prompts = static_cast<int>(prep_.prompts.size());
    for (int p = 0; p < n_prompts; ++p) {
      for (int k = 0; k < req_.n; ++k) {
        auto c = std::make_unique<Choice>(req_.stop);
        c->index = p * req_.n + k;
        c->prompt_index = p;
        c->dec = host_->codec->decoder();
        if (req_.endpoint == Endpoint::kChat && prep_.reasoning) c->splitter.emplace(prep_.prompts[p].starts_in_think);
        engine::GenerateRequest g;
        g.id = id_ + "-" + std::to_string(c->index);
        g.prompt = prep_.prompts[p].tokens;
        g.sampling = req_.sampling;
        if (g.sampling.has_seed) g.sampling.seed += static_cast<uint64_t>(k);  // n choices differ, reproducibly
        g.max_tokens = prep_.max_tokens;
        if (!req_.ignore_eos) g.stop_token_ids = eog_;
        if (ctx_ && ctx_->principal) g.tenant = ctx_->principal->tenant, g.principal = ctx_->principal->id;
        g.cache_namespace = host_->cache_namespace(g.tenant);
        g.log_id = request_id_;
        auto h = host_->engine->submit(std::move(g));
        if (!h.ok()) {
          for (auto& prev : choices_) prev->handle->cancel();
          return fail(from_status(h.status(), h.status().code() == StatusCode::kInvalidArgument ? "messages" : ""));
        }
        c->handle = std::move(*h);
        choices_.push_back(std::move(c));
      }
    }
    stats_->record_pre_submit(now_seconds() - received_at_);
    auto self = shared_from_this();
    responder_->on_closed([self] { self->client_gone(); });
    responder_->on_writable([self] { self->pump(); });
    if (req_.stream) {
      stats_->streams_active++;
      stream_counted_ = true;
      // X-Accel-Buffering: no asks a proxy that buffers responses (nginx with proxy_buffering on, the default) to
      // pass this one through as it comes, so a stream stays a stream behind a proxy not configured for it.
      responder_->start_stream(200, {{"Content-Type", "text/event-stream"},
                                     {"Cache-Control", "no-cache"},
                                     {"X-Accel-Buffering", "no"}});
    }
    // Every pump runs on the responder's executor, after this set-up: the notify goes on there, once every choice
    // exists and the stream has started, and the first pump drains whatever arrived before it.
    responder_->post([self, notify] {
      for (auto& c : self->choices_) c->handle->set_notify(notify);
      self->pump();
    });
  }

  void fail(const ApiError& e) {
    finished_ = true;
    report(true);
    if (ctx_) ctx_->set_error(e.code, e.message);
    responder_->send(error_response(e));
  }

 private:
  bool is_eog(int32_t t) const { return std::find(eog_.begin(), eog_.end(), t) != eog_.end(); }

  void client_gone() {
    if (finished_) return;
    finished_ = true;
    stats_->client_disconnects++;
    for (auto& c : choices_) c->handle->cancel();
    report(true);
    // Runs on the connection's executor (or wherever the close was seen), not in the handler's log scope.
    if (log_enabled(LogLevel::kInfo)) {
      const engine::Usage t = totals(true);
      log_request_event(request_id_, LogLevel::kInfo, "generation", "client disconnected: generation cancelled",
                        {{"completion_tokens", t.completion_tokens}, {"streamed", req_.stream ? 1 : 0}});
    }
  }

  void pump() {
    pump_posted_ = false;
    if (finished_) return;
    bool all_done = true;
    for (auto& cp : choices_) {
      Choice& c = *cp;
      engine::TokenEvent ev;
      while (!c.done) {
        if (req_.stream && responder_->pending_bytes() > kHighWater) break;  // on_writable() resumes
        if (!c.handle->try_pop(&ev)) break;
        Delta d;
        process(c, ev, &d);
        if (req_.stream) emit_chunk(c, d);
      }
      if (!c.done) all_done = false;
    }
    if (all_done) finish();
  }

  // Routes emitted text through the reasoning splitter (chat + R1) into the delta and the accumulators.
  void route_text(Choice& c, const std::string& text, Delta* d, bool final) {
    std::string content, reasoning;
    if (c.splitter) {
      chat::ReasoningDelta r = c.splitter->feed(text);
      content = std::move(r.content), reasoning = std::move(r.reasoning);
      if (final) {
        chat::ReasoningDelta t = c.splitter->finish();
        content += t.content, reasoning += t.reasoning;
      }
    } else {
      content = text;
    }
    d->content += content, d->reasoning += reasoning;
    c.text += content, c.reasoning += reasoning;
  }

  void add_logprobs(Choice& c, const engine::TokenEvent& ev, Delta* d) {
    const std::string piece = host_->codec->piece(ev.token);
    if (req_.endpoint == Endpoint::kChat) {
      ojson e;
      e["token"] = piece;
      e["logprob"] = ev.logprob;
      e["bytes"] = bytes_array(piece);
      ojson top = ojson::array();
      for (const auto& t : ev.top_logprobs) {
        const std::string tp = host_->codec->piece(t.token);
        top.push_back({{"token", tp}, {"logprob", t.logprob}, {"bytes", bytes_array(tp)}});
      }
      e["top_logprobs"] = std::move(top);
      d->lp_content.push_back(e);
      c.lp_content.push_back(std::move(e));
    } else {
      ojson top = ojson::object();
      for (const auto& t : ev.top_logprobs) top[host_->codec->piece(t.token)] = t.logprob;
      d->lp_tokens.push_back(piece), c.lp_tokens.push_back(piece);
      d->lp_token_logprobs.push_back(ev.logprob), c.lp_token_logprobs.push_back(ev.logprob);
      d->lp_top.push_back(top), c.lp_top.push_back(std::move(top));
      d->lp_offsets.push_back(c.text_len), c.lp_offsets.push_back(c.text_len);
    }
  }

  void process(Choice& c, const engine::TokenEvent& ev, Delta* d) {
    if (req_.echo && !c.echo_sent) {
      c.echo_sent = true;
      route_text(c, prep_.prompts[c.prompt_index].text, d, false);
      c.text_len += prep_.prompts[c.prompt_index].text.size();
    }
    if (!c.stopped_by_string && ev.token >= 0 && !is_eog(ev.token)) {
      const std::string out = c.stop.feed(c.dec->push(ev.token));
      if (c.stop.stopped()) {
        c.stopped_by_string = true;
        c.handle->cancel();  // the engine drops the request at its next step
      }
      if (req_.logprobs) add_logprobs(c, ev, d);
      c.text_len += out.size();
      route_text(c, out, d, false);
    }
    if (ev.finish == engine::FinishReason::kNone) return;
    std::string tail;
    if (!c.stopped_by_string) {
      tail = c.stop.feed(c.dec->flush());
      if (c.stop.stopped()) c.stopped_by_string = true;
      else tail += c.stop.flush();
    }
    c.text_len += tail.size();
    route_text(c, tail, d, /*final=*/true);
    using engine::FinishReason;
    if (c.stopped_by_string || ev.finish == FinishReason::kStop) {
      c.finish_reason = "stop";
    } else if (ev.finish == FinishReason::kLength || ev.finish == FinishReason::kDeadline) {
      c.finish_reason = "length";
    } else {
      c.finish_reason = "error";
      c.error = c.handle->final_status();
      if (c.error.ok()) c.error = Internal(std::string("generation ended: ") + engine::finish_reason_name(ev.finish));
    }
    c.usage = c.handle->usage();
    c.done = true;
  }

  ojson chunk_base() const {
    ojson j;
    j["id"] = id_;
    j["object"] = req_.endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion";
    j["created"] = created_;
    j["model"] = host_->served_name;
    return j;
  }

  ojson completion_logprobs(const ojson& tokens, const ojson& lps, const ojson& top, const ojson& offs) const {
    ojson l;
    l["tokens"] = tokens, l["token_logprobs"] = lps, l["top_logprobs"] = top, l["text_offset"] = offs;
    return l;
  }

  void emit_chunk(Choice& c, const Delta& d) {
    const bool chat = req_.endpoint == Endpoint::kChat;
    if (!c.error.ok()) return;  // reported in finish()
    if (d.empty() && !c.done && (c.role_sent || !chat)) return;
    ojson ch;
    ch["index"] = c.index;
    if (chat) {
      if (!c.role_sent) {  // the first chunk of a choice carries only the role, as OpenAI does
        c.role_sent = true;
        ojson first = ch;
        first["delta"] = {{"role", "assistant"}, {"content", ""}};
        first["logprobs"] = nullptr;
        first["finish_reason"] = nullptr;
        write_chunk(first);
        if (d.empty() && !c.done) return;
      }
      ojson delta = ojson::object();
      if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
      if (!d.content.empty()) delta["content"] = d.content;
      ch["delta"] = std::move(delta);
      ch["logprobs"] = d.lp_content.empty() ? ojson(nullptr) : ojson{{"content", d.lp_content}};
    } else {
      ch["text"] = d.content;
      ch["logprobs"] = d.lp_tokens.empty() ? ojson(nullptr)
                                           : completion_logprobs(d.lp_tokens, d.lp_token_logprobs, d.lp_top,
                                                                 d.lp_offsets);
    }
    // finish_reason only on the choice's last chunk; a chunk with content and the finish is split in two so that
    // the last one carries an empty delta, as OpenAI does.
    if (c.done && !d.empty()) {
      ch["finish_reason"] = nullptr;
      write_chunk(ch);
      ch["delta"] = ojson::object();
      if (!chat) ch["text"] = "";
      ch["logprobs"] = nullptr;
    }
    ch["finish_reason"] = c.done ? ojson(c.finish_reason) : ojson(nullptr);
    write_chunk(ch);
  }

  void write_chunk(const ojson& choice) {
    ojson j = chunk_base();
    j["choices"] = ojson::array({choice});
    if (req_.include_usage) j["usage"] = nullptr;
    responder_->write(sse_data(dump_json(j)));
  }

  // Token counts over every choice, from the engine's own counts (live from the handles when the exchange ends
  // early: a client that disconnects mid-stream is charged for what was computed).
  engine::Usage totals(bool live) const {
    engine::Usage t;
    std::vector<bool> seen(prep_.prompts.size(), false);
    for (const auto& c : choices_) {
      const engine::Usage u = live && c->handle ? c->handle->usage() : c->usage;
      if (!seen[c->prompt_index]) {
        seen[c->prompt_index] = true;
        t.prompt_tokens += u.prompt_tokens ? u.prompt_tokens
                                           : static_cast<int>(prep_.prompts[c->prompt_index].tokens.size());
        t.cached_prompt_tokens += u.cached_prompt_tokens;
      }
      t.completion_tokens += u.completion_tokens;
    }
    return t;
  }

  void report(bool live) {
    if (!ctx_) return;
    const engine::Usage t = totals(live);
    ctx_->set_usage(t.prompt_tokens, t.completion_tokens, t.cached_prompt_tokens);
    std::string reason;
    for (const auto& c : choices_)
      if (reason.empty() || c->finish_reason != "stop") reason = c->finish_reason;
    ctx_->set_finish_reason(live ? std::string("cancelled") : reason);
    if (ctx_->capturing_content()) {  // stored content (audit_store_content): the text generated so far
      ojson out = ojson::array();
      for (const auto& c : choices_) {
        ojson o{{"index", c->index}, {"text", c->text}};
        if (!c->reasoning.empty()) o["reasoning"] = c->reasoning;
        out.push_back(std::move(o));
      }
      ctx_->set_content_output(dump_json(out));
    }
  }

  ojson usage_json() const {
    const engine::Usage t = totals(false);
    const int64_t prompt = t.prompt_tokens, completion = t.completion_tokens, cached = t.cached_prompt_tokens;
    ojson u;
    u["prompt_tokens"] = prompt;
    u["completion_tokens"] = completion;
    u["total_tokens"] = prompt + completion;
    u["prompt_tokens_details"] = {{"cached_tokens", cached}};
    return u;
  }

  void finish() {
    finished_ = true;
    report(false);
    Status error;
    for (const auto& c : choices_)
      if (!c->error.ok()) error = c->error;
    if (req_.stream) {
      if (!error.ok()) {
        responder_->write(sse_data(error_body(from_status(error))));
      } else if (req_.include_usage) {
        ojson j = chunk_base();
        j["choices"] = ojson::array();
        j["usage"] = usage_json();
        responder_->write(sse_data(dump_json(j)));
      }
      responder_->write("data: [DONE]\n\n");
      responder_->end_stream();
      return;
    }
    if (!error.ok()) return fail(from_status(error));  // kCancelled (shutdown, too slow) 503, else 500
    server::HttpResponse r;
    r.headers.push_back({"Content-Type", "application/json"});
    r.body = dump_json(final_body());
    responder_->send(std::move(r));
  }

  ojson final_body() const {
    if (req_.endpoint == Endpoint::kInfer) {
      const Choice& c = *choices_[0];
      ojson j;
      j["id"] = id_;
      j["model"] = host_->served_name;
      j["text"] = c.text;
      j["finish_reason"] = c.finish_reason;
      j["usage"] = usage_json();
      return j;
    }
    const bool chat = req_.endpoint == Endpoint::kChat;
    ojson j;
    j["id"] = id_;
    j["object"] = chat ? "chat.completion" : "text_completion";
    j["created"] = created_;
    j["model"] = host_->served_name;
    ojson choices = ojson::array();
    for (const auto& cp : choices_) {
      const Choice& c = *cp;
      ojson ch;
      ch["index"] = c.index;
      if (chat) {
        ojson m;
        m["role"] = "assistant";
        m["content"] = c.text;
        if (prep_.reasoning) m["reasoning_content"] = c.reasoning;
        ch["message"] = std::move(m);
        ch["logprobs"] = req_.logprobs ? ojson{{"content", c.lp_content}} : ojson(nullptr);
      } else {
        ch["text"] = c.text;
        ch["logprobs"] = req_.logprobs ? completion_logprobs(c.lp_tokens, c.lp_token_logprobs, c.lp_top, c.lp_offsets)
                                       : ojson(nullptr);
      }
      ch["finish_reason"] = c.finish_reason;
      choices.push_back(std::move(ch));
    }
    j["choices"] = std::move(choices);
    j["usage"] = usage_json();
    return j;
  }

  std::shared_ptr<const ModelHost> host_;
  std::shared_ptr<ServiceStats> stats_;
  ParsedRequest req_;
  PreparedRequest prep_;
  std::shared_ptr<server::Responder> responder_;
  std::shared_ptr<RequestContext> ctx_;  // may be null (no observer)
  double received_at_;
  std::string request_id_;  // the server's request id (x-request-id): what this request's log lines carry
  std::string id_;
  int64_t created_ = 0;
  std::vector<int32_t> eog_;
  std::vector<std::unique_ptr<Choice>> choices_;
  std::atomic<bool> pump_posted_{false};
  std::atomic<bool> first_step_seen_{false};
  bool finished_ = false;
  bool stream_counted_ = false;
};

}  // namespace

void start_generation(std::shared_ptr<const ModelHost> host, std::shared_ptr<ServiceStats> stats,
                      const server::HttpRequest& http, ParsedRequest req, PreparedRequest prep,
                      std::shared_ptr<server::Responder> responder, std::shared_ptr<RequestContext> ctx) {
  auto g = std::make_shared<Generation>(std::move(host), std::move(stats), std::move(req), std::move(prep),
                                        std::move(responder), std::move(ctx), http.received_at, http.request_id);
  g->start();
}

}  // namespace citadel::api
