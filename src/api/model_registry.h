// ModelRegistry: the models one server holds and the names requests reach them by.
//
//   models   each loaded ModelHost under its served name (unique), e.g. "chat@2026-12"; its own other names (the
//            catalogue name, the file name) resolve to it too unless an alias or an earlier model has them. The first
//            model added is the default (requests that name no model: /api/v1/infer).
//   aliases  a name that splits traffic between served models by weight ("chat" -> chat@2026-12 90, chat@2027-01 10:
//            a canary). Sticky aliases send the same caller (the sticky key: the principal's id) to the same model
//            for a given split; others take turns by smooth weighted round robin (50/50 alternates, 90/10 sends every
//            tenth request to the second; exact over every cycle of the total weight). Setting an alias keeps its
//            previous targets, so
//            rollback() is one call. An alias name is never a served name.
//
// Swap without downtime: add the new version, set the alias to it, remove the old one. remove() only takes the
// model out of the registry: requests that already resolved it hold its shared_ptr and finish; the host (engine,
// runner, weights) is freed when the last of them ends. A model an alias still routes to cannot be removed.
//
// Thread-safety: every method locks; resolve() may run on any I/O thread concurrently with changes.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "api/model_host.h"
#include "base/status.h"

namespace citadel::api {

class ModelRegistry {
 public:
  struct Target {
    std::string model;  // a served name
    int weight = 0;     // > 0
  };
  struct Alias {
    std::string name;
    std::vector<Target> targets;
    bool sticky = false;
    std::vector<Target> previous;  // what rollback() restores (empty: nothing to roll back to)
    bool previous_sticky = false;
    std::vector<int64_t> current;  // smooth weighted round robin state, one per target (not sticky)
  };

  // kInvalidArgument when the served name is already a model's or an alias's.
  Status add(std::shared_ptr<const ModelHost> host);
  // Takes the model out. kNotFound when absent; kInvalidArgument when an alias routes to it.
  Result<std::shared_ptr<const ModelHost>> remove(const std::string& served_name);
  // Replaces everything by this one model (null: none). The one-model server and tests use it.
  void reset(std::shared_ptr<const ModelHost> host);

  // Sets (or creates) an alias. Errors: kInvalidArgument (no targets, a weight <= 0, a total above 1e6, a duplicate
  // target, a name that is a model's), kNotFound (a target that is not a served model).
  Status set_alias(const std::string& name, std::vector<Target> targets, bool sticky);
  // Restores the targets before the last set_alias. kNotFound (no such alias), kInvalidArgument (nothing to roll
  // back to, or a previous target is gone).
  Status rollback(const std::string& name);
  Status delete_alias(const std::string& name);  // kNotFound
  std::vector<Alias> aliases() const;

  // The model a request naming `model` uses (null: unknown). An alias picks a target by weight.
  std::shared_ptr<const ModelHost> resolve(const std::string& model, std::string_view sticky_key) const;
  std::shared_ptr<const ModelHost> default_host() const;
  std::vector<std::shared_ptr<const ModelHost>> hosts() const;  // in the order they were added
  bool empty() const;

 private:
  const ModelHost* find_locked(const std::string& name) const;
  const Alias* alias_locked(const std::string& name) const;

  mutable std::mutex mu_;
  std::vector<std::shared_ptr<const ModelHost>> hosts_;
  mutable std::vector<Alias> aliases_;  // resolve() advances the round-robin state
};

}  // namespace citadel::api
