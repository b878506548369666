#include "base/log.h"

#include <atomic>
#include <cstdio>

namespace citadel {

static std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }

void log_line(LogLevel level, const std::string& msg) {
  if (static_cast<int>(level) < g_level.load()) return;
  static const char* kNames[] = {"debug", "info", "warn", "error"};
  std::string line = std::string("[citadel ") + kNames[static_cast<int>(level)] + "] " + msg + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace citadel
