#include "api/model_registry.h"

#include <algorithm>
#include <functional>

namespace citadel::api {

const ModelHost* ModelRegistry::find_locked(const std::string& name) const {
  for (const auto& h : hosts_) {
    if (h->served_name == name) return h.get();
  }
  return nullptr;
}

const ModelRegistry::Alias* ModelRegistry::alias_locked(const std::string& name) const {
  for (const Alias& a : aliases_) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

Status ModelRegistry::add(std::shared_ptr<const ModelHost> host) {
  if (!host) return InvalidArgument("no model");
  std::lock_guard<std::mutex> lock(mu_);
  const std::string& n = host->served_name;
  if (find_locked(n) || alias_locked(n)) return InvalidArgument("the name '" + n + "' is already in use");
  hosts_.push_back(std::move(host));
  return OkStatus();
}

Result<std::shared_ptr<const ModelHost>> ModelRegistry::remove(const std::string& served_name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(hosts_.begin(), hosts_.end(), [&](const auto& h) { return h->served_name == served_name; });
  if (it == hosts_.end()) return NotFound("no model '" + served_name + "' is loaded");
  for (const Alias& a : aliases_) {
    for (const Target& t : a.targets) {
      if (t.model == served_name) {
        return InvalidArgument("the alias '" + a.name + "' routes to '" + served_name + "'; move it first");
      }
    }
  }
  std::shared_ptr<const ModelHost> h = std::move(*it);
  hosts_.erase(it);
  return h;
}

void ModelRegistry::reset(std::shared_ptr<const ModelHost> host) {
  std::lock_guard<std::mutex> lock(mu_);
  hosts_.clear();
  aliases_.clear();
  if (host) hosts_.push_back(std::move(host));
}

Status ModelRegistry::set_alias(const std::string& name, std::vector<Target> targets, bool sticky) {
  if (name.empty() || name.size() > 200) return InvalidArgument("an alias name is 1 to 200 characters");
  if (targets.empty()) return InvalidArgument("an alias needs at least one target");
  int64_t total = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (targets[i].weight <= 0) return InvalidArgument("target weights must be positive");
    total += targets[i].weight;
    for (size_t j = 0; j < i; ++j) {
      if (targets[j].model == targets[i].model) return InvalidArgument("'" + targets[i].model + "' is named twice");
    }
  }
  if (total > 1'000'000) return InvalidArgument("the weights add up to more than 1000000");
  std::lock_guard<std::mutex> lock(mu_);
  if (find_locked(name)) return InvalidArgument("'" + name + "' is a model's name, not an alias");
  for (const Target& t : targets) {
    if (!find_locked(t.model)) return NotFound("no model '" + t.model + "' is loaded");
  }
  for (Alias& a : aliases_) {
    if (a.name != name) continue;
    a.previous = std::move(a.targets);
    a.previous_sticky = a.sticky;
    a.targets = std::move(targets);
    a.sticky = sticky;
    a.current.clear();
    return OkStatus();
  }
  aliases_.push_back(Alias{name, std::move(targets), sticky, {}, false, {}});
  return OkStatus();
}

Status ModelRegistry::rollback(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  for (Alias& a : aliases_) {
    if (a.name != name) continue;
    if (a.previous.empty()) return InvalidArgument("the alias '" + name + "' has no earlier targets");
    for (const Target& t : a.previous) {
      if (!find_locked(t.model)) return InvalidArgument("the earlier target '" + t.model + "' is no longer loaded");
    }
    std::swap(a.targets, a.previous);
    std::swap(a.sticky, a.previous_sticky);
    a.current.clear();
    return OkStatus();
  }
  return NotFound("no alias '" + name + "'");
}

Status ModelRegistry::delete_alias(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find_if(aliases_.begin(), aliases_.end(), [&](const Alias& a) { return a.name == name; });
  if (it == aliases_.end()) return NotFound("no alias '" + name + "'");
  aliases_.erase(it);
  return OkStatus();
}

std::vector<ModelRegistry::Alias> ModelRegistry::aliases() const {
  std::lock_guard<std::mutex> lock(mu_);
  return aliases_;
}

std::shared_ptr<const ModelHost> ModelRegistry::resolve(const std::string& model, std::string_view sticky_key) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string target = model;
  for (Alias& a : aliases_) {
    if (a.name != model) continue;
    int64_t total = 0;
    for (const Target& t : a.targets) total += t.weight;
    if (a.sticky) {
      int64_t x = static_cast<int64_t>(std::hash<std::string_view>{}(sticky_key) % static_cast<uint64_t>(total));
      for (const Target& t : a.targets) {
        if (x < t.weight) {
          target = t.model;
          break;
        }
        x -= t.weight;
      }
    } else {
      // Smooth weighted round robin: every target gains its weight, the largest is chosen and pays the total.
      a.current.resize(a.targets.size(), 0);
      size_t best = 0;
      for (size_t i = 0; i < a.targets.size(); ++i) {
        a.current[i] += a.targets[i].weight;
        if (a.current[i] > a.current[best]) best = i;
      }
      a.current[best] -= total;
      target = a.targets[best].model;
    }
    break;
  }
  for (const auto& h : hosts_) {
    if (h->served_name == target) return h;
  }
  for (const auto& h : hosts_) {  // a model's other names (catalogue, file): the first loaded wins
    if (h->accepts(target)) return h;
  }
  return nullptr;
}

std::shared_ptr<const ModelHost> ModelRegistry::default_host() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hosts_.empty() ? nullptr : hosts_.front();
}

std::vector<std::shared_ptr<const ModelHost>> ModelRegistry::hosts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hosts_;
}

bool ModelRegistry::empty() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hosts_.empty();
}

}  // namespace citadel::api
