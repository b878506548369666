#include <cstdio>

#include "command.h"

#ifndef CITADEL_VERSION
#define CITADEL_VERSION "0.1.0"
#endif

static citadel::cli::Registrar version_reg("version", "Print the version", [](CLI::App&) {
  return [] {
    std::printf("citadel %s\n", CITADEL_VERSION);
    return 0;
  };
});
