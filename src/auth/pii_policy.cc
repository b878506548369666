#include "auth/pii_policy.h"

namespace citadel::auth {

const char* pii_policy_name(PiiPolicy p) {
  switch (p) {
    case PiiPolicy::kInherit: return "inherit";
    case PiiPolicy::kOff: return "off";
    case PiiPolicy::kMask: return "mask";
    case PiiPolicy::kReject: return "reject";
  }
  return "off";
}

std::optional<PiiPolicy> parse_pii_policy(std::string_view s) {
  if (s == "inherit") return PiiPolicy::kInherit;
  if (s == "off") return PiiPolicy::kOff;
  if (s == "mask") return PiiPolicy::kMask;
  if (s == "reject") return PiiPolicy::kReject;
  return std::nullopt;
}

PiiPolicy resolve_pii_policy(PiiPolicy key, PiiPolicy tenant) {
  if (key != PiiPolicy::kInherit) return key;
  return tenant == PiiPolicy::kInherit ? PiiPolicy::kOff : tenant;
}

int pii_policy_strictness(PiiPolicy p) {
  switch (p) {
    case PiiPolicy::kMask: return 1;
    case PiiPolicy::kReject: return 2;
    default: return 0;
  }
}

}  // namespace citadel::auth
