// A byte-level fake model for testing the server without weights: the vocabulary is the 256 bytes plus <eos> (256)
// and <bos> (257); the runner honours the KV contract (reads each token's context back through the block table) and
// produces deterministic logits from a hash of the whole context, favouring printable ASCII, so sampling, seeds,
// stop strings and logprobs behave like a real model's. Forward passes cost microseconds: server overhead shows.
#pragma once

#include <memory>

#include "api/model_host.h"
#include "backend/model_runner.h"

namespace citadel::api {

constexpr int32_t kDebugEos = 256;
constexpr int32_t kDebugBos = 257;
constexpr int32_t kDebugVocab = 258;

std::unique_ptr<TextCodec> make_debug_codec();
// step_ms > 0: every forward() also sleeps this long (a slow model, for cancellation and load tests).
// hang: every forward() blocks for ever (a hung engine: the watchdog test of deploy/systemd's unit). Such a process
// does not drain: only SIGKILL (or the service manager's watchdog SIGABRT) ends it once a request has been scheduled.
std::unique_ptr<engine::ModelRunner> make_debug_runner(int max_context, int step_ms = 0, bool hang = false);

}  // namespace citadel::api
