// The state database's schema for identity and access: tenants, API keys (hashed), per-role limit overrides, quota
// usage windows and in-flight quota leases. Applied with store::migrate(db, auth::state_migrations()) at start-up.
// Every statement is written in the dialect SQLite and PostgreSQL both accept (BIGINT, TEXT, ON CONFLICT).
//
// Conventions of the tables: times are Unix seconds (BIGINT); 0 means "never" for expires_at / revoked_at; a NULL
// limit column means "not set here" (QuotaLimits' nullopt), a negative one unlimited. api_keys stores only the key id
// and the hex SHA-256 of the whole raw key, never the key itself.
// Thread-safety: state_migrations() returns an immutable static list.
#pragma once

#include <vector>

#include "store/database.h"

namespace citadel::auth {

// Version 1: "keys, tenants, quotas" (and the "default" tenant); version 3: the prompt PII policy columns
// (api_keys.pii, tenants.pii). Versions are shared with the audit log's steps (2, 4): open_state() merges both lists
// in ascending order. Later versions append; never edit a shipped step.
const std::vector<store::Migration>& state_migrations();

}  // namespace citadel::auth
