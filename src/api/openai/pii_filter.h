// The prompt PII policy at the inference boundary (auth/pii_policy.h): finds personal data (crypto::PiiMasker) in
// every text of a parsed OpenAI request that reaches the model, and masks it in place or refuses the request.
//
// What is scanned (walk_request_text): chat messages of every role: `content` as a string, or each {"type": "text"}
// part of a content-part array (other part types, e.g. image_url, are left untouched), `name`,
// `reasoning_content`, and each tool call's `function.arguments`; every string value inside `tools` (descriptions,
// schemas; never object keys); completion and native-infer prompt strings; token-id prompts, through their decoded
// text (codec given). Structural strings (role, type, ids) are not text for the model and are left alone.
// Masking replaces each finding by the masker's placeholder ("[PHONE]", ...); a token-id prompt with findings is
// replaced by the tokens of its masked text, encoded as a text prompt would be.
//
// Runs after authentication and request parsing, before the chat template and tokenization (Service::generate), so
// a rejected request is never tokenized, never reserved against quotas and never charged.
// Thread-safety: pure functions over the caller's request (the masker is immutable).
#pragma once

#include <map>
#include <optional>
#include <string>

#include "api/errors.h"
#include "api/model_host.h"
#include "api/openai/request.h"
#include "api/request_context.h"
#include "auth/pii_policy.h"
#include "crypto/pii.h"

namespace citadel::api {

// Findings by kind: the built-in kinds by pii_kind_name() ("mobile_phone", "resident_id", ...), an operator pattern
// by its own name. Never the values.
struct PiiScan {
  std::map<std::string, int> counts;
  int total = 0;
  // "1 bank_card, 2 mobile_phone" (kinds in name order); "none" when nothing was found.
  std::string summary() const;
  // "bank_card=1,mobile_phone=2" for the audit detail; "none" when nothing was found.
  std::string counts_text() const;
};

// Scans every model-bound text of req (see the file comment) and, when mask is true, replaces the findings in place.
// codec: decodes and re-encodes token-id prompts; null leaves them unscanned.
PiiScan walk_request_text(const crypto::PiiMasker& masker, ParsedRequest* req, bool mask, const TextCodec* codec);

// Applies `policy` to req: kOff (or kInherit) does nothing; kMask masks in place; kReject returns the 400
// pii_detected error (type invalid_request_error; the message names the kinds and counts, never the values) when
// anything is found. With a policy other than off, ctx (may be null) receives the audit detail "pii_policy" and
// "pii_findings" (counts_text()). masker null with a policy other than off: a 500 (fail closed).
std::optional<ApiError> apply_pii_policy(auth::PiiPolicy policy, const crypto::PiiMasker* masker, ParsedRequest* req,
                                         const TextCodec* codec, RequestContext* ctx);

}  // namespace citadel::api
