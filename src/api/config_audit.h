// What the audit log records about the server's configuration: server.start carries a digest of the effective
// serve configuration (server::config_fingerprint: non-secret keys and values, key files by path or variable name,
// never key bytes) and the values themselves, so that the next start can name what changed; when the digest differs
// from this instance's previous server.start's, a config.change record lists the changed keys with old and new values.
// Thread-safety: free functions; previous_server_start reads through a thread-safe Database.
#pragma once

#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "store/database.h"

namespace citadel::api {

// SHA-256 (hex) of the fingerprint as sorted "key=value\n" lines.
std::string config_digest(const std::map<std::string, std::string>& fingerprint);

// The part of server.start's detail that describes the configuration and who started:
// {"instance": I, "config_sha256": D, "config": {k: v}}.
nlohmann::json config_start_detail(const std::string& instance, const std::map<std::string, std::string>& fingerprint);

// The detail of the latest server.start record of `instance` (its detail's "instance"; replicas sharing one
// database each compare with their own previous start). A record without "instance" (an older binary) is taken as
// any instance's. Looks back over at most the last 1000 server.start records; nullopt when none matches.
Result<std::optional<nlohmann::json>> previous_server_start(store::Database& db, const std::string& instance);

// config.change's detail when `now` differs from what the previous server.start recorded:
// {"previous_sha256", "config_sha256", "changed": [{"key", "old", "new"}...]} (keys sorted; a key absent on one side
// has null there). nullopt when there was no previous start or nothing changed. A previous start without a
// recorded configuration (an older binary) counts as "unknown": changed lists nothing, previous_sha256 is null.
std::optional<nlohmann::json> config_change_detail(const std::optional<nlohmann::json>& previous_start,
                                                   const std::map<std::string, std::string>& now);

}  // namespace citadel::api
