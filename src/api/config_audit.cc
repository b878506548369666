#include "api/config_audit.h"

#include "base/sha256.h"

namespace citadel::api {

std::string config_digest(const std::map<std::string, std::string>& fingerprint) {
  std::string text;
  for (const auto& [k, v] : fingerprint) text += k + "=" + v + "\n";
  return sha256_hex(text);
}

nlohmann::json config_start_detail(const std::string& instance, const std::map<std::string, std::string>& fingerprint) {
  nlohmann::json values = nlohmann::json::object();
  for (const auto& [k, v] : fingerprint) values[k] = v;
  return {{"instance", instance}, {"config_sha256", config_digest(fingerprint)}, {"config", std::move(values)}};
}

Result<std::optional<nlohmann::json>> previous_server_start(store::Database& db, const std::string& instance) {
  ASSIGN_OR_RETURN(
      auto rows,
      db.query("SELECT detail FROM audit_records WHERE kind = 'server.start' ORDER BY seq DESC LIMIT 1000"));
  for (const auto& row : rows) {
    auto j = nlohmann::json::parse(store::as_text(row[0]), nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return std::optional<nlohmann::json>(nlohmann::json::object());  // unreadable: "unknown"
    auto who = j.find("instance");
    if (who == j.end() || (who->is_string() && who->get<std::string>() == instance))
      return std::optional<nlohmann::json>(std::move(j));
  }
  return std::optional<nlohmann::json>();
}

std::optional<nlohmann::json> config_change_detail(const std::optional<nlohmann::json>& previous_start,
                                                   const std::map<std::string, std::string>& now) {
  if (!previous_start) return std::nullopt;
  const std::string digest = config_digest(now);
  auto sha = previous_start->find("config_sha256");
  auto old = previous_start->find("config");
  const bool known = sha != previous_start->end() && sha->is_string() && old != previous_start->end() &&
                     old->is_object();
  if (known && sha->get<std::string>() == digest) return std::nullopt;
  nlohmann::json changed = nlohmann::json::array();
  if (known) {
    std::map<std::string, std::pair<nlohmann::json, nlohmann::json>> diff;
    for (const auto& [k, v] : old->items())
      if (!now.count(k) || !v.is_string() || v.get<std::string>() != now.at(k)) diff[k].first = v;
    for (const auto& [k, v] : now) {
      auto o = old->find(k);
      if (o == old->end() || !o->is_string() || o->get<std::string>() != v) {
        diff[k].first = o == old->end() ? nlohmann::json(nullptr) : *o;
        diff[k].second = v;
      }
    }
    for (auto& [k, ov] : diff) changed.push_back({{"key", k}, {"old", ov.first}, {"new", ov.second}});
  }
  return nlohmann::json{{"previous_sha256", known ? *sha : nlohmann::json(nullptr)},
                        {"config_sha256", digest},
                        {"changed", std::move(changed)}};
}

}  // namespace citadel::api
