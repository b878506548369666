#include "base/log.h"

#include <atomic>
#include <cstdio>
#include <memory>

namespace citadel {

static std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
// Installed once at start-up (serve: the PII masker); read on every line without a lock.
static std::atomic<LogFilter*> g_filter{nullptr};

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }

void set_log_filter(LogFilter filter) {
  // The previous filter is leaked on purpose: another thread may be inside it (filters are set once per process).
  g_filter.store(filter ? new LogFilter(std::move(filter)) : nullptr);
}

void log_line(LogLevel level, const std::string& msg) {
  if (static_cast<int>(level) < g_level.load()) return;
  static const char* kNames[] = {"debug", "info", "warn", "error"};
  const LogFilter* f = g_filter.load();
  std::string line = std::string("[citadel ") + kNames[static_cast<int>(level)] + "] " + (f ? (*f)(msg) : msg) + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace citadel
