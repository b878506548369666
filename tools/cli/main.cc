// citadel: one binary, many subcommands (see command.h).
#include <algorithm>
#include <cstdio>
#include <memory>

#include "command.h"

namespace citadel::cli {
std::vector<CommandSpec>& registry() {
  static std::vector<CommandSpec> commands;
  return commands;
}
}  // namespace citadel::cli

int main(int argc, char** argv) {
  using namespace citadel::cli;
  CLI::App app{"Citadel: a private-deployment LLM server"};
  app.require_subcommand(1);
  auto& cmds = registry();
  std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::vector<std::pair<CLI::App*, Action>> actions;
  for (auto& c : cmds) {
    CLI::App* sub = app.add_subcommand(c.name, c.help);
    actions.emplace_back(sub, c.setup(*sub));
  }
  CLI11_PARSE(app, argc, argv);
  for (auto& [sub, action] : actions) {
    if (sub->parsed()) return action();
  }
  return 2;
}
