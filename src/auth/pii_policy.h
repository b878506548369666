// The PII policy on prompts: what the server does with personal data (crypto/pii.h's findings) in the text a caller
// sends to the model. Set on a tenant and on an API key; resolved once per request at authentication.
//
// Values: off (prompts go to the model as sent), mask (each finding is replaced by its placeholder before
// tokenization, so the model never sees it), reject (a request with any finding is refused with 400 pii_detected
// and never runs). A key may also say inherit (its default): it then follows its tenant.
//
// Resolution rule (one place: resolve_pii_policy): the key's own setting, when it is not inherit, wins over its
// tenant's; otherwise the tenant's applies; a tenant's own default is off. OIDC principals have no key and follow
// their tenant. Strictness orders off < mask < reject (a developer may only set a key's policy to inherit or to
// something at least as strict as its tenant's: admin_routes.cc).
// Thread-safety: plain values and pure functions.
#pragma once

#include <optional>
#include <string_view>

namespace citadel::auth {

enum class PiiPolicy { kInherit, kOff, kMask, kReject };

// "inherit", "off", "mask", "reject".
const char* pii_policy_name(PiiPolicy p);
// Exact lower-case names only; nullopt for anything else.
std::optional<PiiPolicy> parse_pii_policy(std::string_view s);
// key != kInherit ? key : (tenant != kInherit ? tenant : kOff). Never returns kInherit.
PiiPolicy resolve_pii_policy(PiiPolicy key, PiiPolicy tenant);
// off 0 < mask 1 < reject 2 (kInherit counts as off: it adds nothing by itself).
int pii_policy_strictness(PiiPolicy p);

}  // namespace citadel::auth
