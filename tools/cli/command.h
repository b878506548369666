// Subcommand registry for the `citadel` binary. Each tools/cli/cmd_<name>.cc defines one subcommand:
//
//   static citadel::cli::Registrar inspect_reg("inspect", "Print a model file's metadata as JSON", [](CLI::App& sub) {
//     auto opts = std::make_shared<Opts>();
//     sub.add_option("--model", opts->model)->required();
//     return [opts] { return run_inspect(*opts); };   // returns the process exit code
//   });
//
// The files are compiled straight into the executable, so their static registrars always run. Each file keeps its
// helpers in a namespace of its own (`namespace serve_cmd {`), not an anonymous one: `make run`'s unity build
// compiles the commands together in one translation unit.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace citadel::cli {

using Action = std::function<int()>;
using Setup = std::function<Action(CLI::App&)>;

struct CommandSpec {
  std::string name;
  std::string help;
  Setup setup;
};

std::vector<CommandSpec>& registry();

struct Registrar {
  Registrar(std::string name, std::string help, Setup setup) {
    registry().push_back({std::move(name), std::move(help), std::move(setup)});
  }
};

}  // namespace citadel::cli
