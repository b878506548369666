// Minimal leveled logging to stderr. Thread-safe (one write per line).
#pragma once

#include <functional>
#include <string>

namespace citadel {

enum class LogLevel { kDebug = 0, kInfo, kWarn, kError };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_line(LogLevel level, const std::string& msg);

// Every message passes through this before it is written (e.g. PII masking); set once at start-up.
using LogFilter = std::function<std::string(const std::string&)>;
void set_log_filter(LogFilter filter);

inline void log_debug(const std::string& m) { log_line(LogLevel::kDebug, m); }
inline void log_info(const std::string& m) { log_line(LogLevel::kInfo, m); }
inline void log_warn(const std::string& m) { log_line(LogLevel::kWarn, m); }
inline void log_error(const std::string& m) { log_line(LogLevel::kError, m); }

}  // namespace citadel
