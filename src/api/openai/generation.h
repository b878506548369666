// Generation: one HTTP request's journey through the engine, from submit to the last byte.
//
// Submits n engine requests per prompt, then pumps their TokenEvents on the connection's executor: incremental
// detokenization, stop strings (StopStringMatcher: matched across token boundaries, the stop text is not returned,
// the engine request is cancelled), the DeepSeek-R1 <think> split (reasoning_content), logprobs, and the OpenAI
// response shapes (chat.completion / text_completion / native infer; SSE chunks when streaming).
// The engine notifies from its own thread; the notification only posts a pump onto the connection's executor. A
// client that goes away cancels every engine request of the generation; a client that reads too slowly stops the
// pump (backpressure) and the engine then cancels the request ("consumer too slow").
// Thread-safety: start() from the connection's executor; everything else runs there.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "api/errors.h"
#include "api/model_host.h"
#include "api/openai/request.h"
#include "api/request_context.h"
#include "base/metrics.h"
#include "server/http_types.h"

namespace citadel::api {

// Server-side counters and latency samples (shared by all requests; thread-safe).
class ServiceStats {
 public:
  void record_pre_submit(double seconds);      // request received -> submitted (parse, template, tokenize)
  void record_first_step(double seconds);      // request received -> first engine step delivered an event
  // The "server" object of /api/v1/stats; responses_2xx/4xx/5xx are sums of citadel:http_requests_total in reg.
  nlohmann::json to_json(const metrics::Registry& reg) const;
  std::atomic<int64_t> client_disconnects{0};
  std::atomic<int64_t> streams_active{0};

 private:
  mutable std::mutex mu_;
  std::vector<double> pre_submit_, first_step_;  // ring buffers of the last kSamples values (seconds)
  size_t pre_next_ = 0, first_next_ = 0;
  int64_t pre_count_ = 0, first_count_ = 0;
  double pre_sum_ = 0, first_sum_ = 0;
};

// Starts the generation for an already parsed + prepared request; answers the responder in every case (errors
// included). host must stay alive until the response completes (the generation holds a shared_ptr). ctx (may be
// null) receives the engine's token counts and the finish reason before the response ends, and gives the engine
// request its tenant and principal.
void start_generation(std::shared_ptr<const ModelHost> host, std::shared_ptr<ServiceStats> stats,
                      const server::HttpRequest& http, ParsedRequest req, PreparedRequest prep,
                      std::shared_ptr<server::Responder> responder, std::shared_ptr<RequestContext> ctx);

// Shaping helpers (exposed for unit tests).
std::string sse_data(const std::string& json_text);  // "data: <json>\n\n"
std::string dump_json(const nlohmann::ordered_json& j);  // never throws (invalid UTF-8 replaced)

}  // namespace citadel::api
