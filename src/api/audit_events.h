// Which audit event an exchange stands for: every inference request (status, token counts from the engine, finish
// reason, latency, client, request id), every authentication failure, permission denial and quota rejection, and
// every successful identity change through the admin API (key create/revoke/rotate/update, tenant create/update,
// role limits) and audit query. Nothing else (a model list, a health probe) is recorded.
// The detail holds ids, counts, codes and the error message with its PII masked; never prompt or output text and
// never a credential (the record only has the key id).
// Thread-safety: a pure function.
#pragma once

#include <optional>

#include "api/request_context.h"
#include "audit/audit_log.h"

namespace citadel::crypto {
class PiiMasker;
}

namespace citadel::api {

std::optional<audit::AuditEvent> audit_event_for(const ExchangeRecord& rec, auth::Permission permission,
                                                 const crypto::PiiMasker* masker);

}  // namespace citadel::api
