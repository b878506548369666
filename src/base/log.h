// Minimal leveled logging to stderr, as text or as JSON lines.
// Thread-safe: each line is formatted in full and written with one write(2) (retried only for a partial write), so
// lines of concurrent threads never interleave.
//
// Formats (set_log_format, once at start-up):
//   text (default): `[citadel info] message`
//   json:           {"ts":"2024-05-01T12:34:56.789Z","level":"info","msg":"message","component":"access",
//                    "request_id":"req-1",...extra fields}
//                   one object per line; "component" only when the line names one, "request_id" only when the
//                   writing thread is inside a LogRequestScope. Always valid JSON and valid UTF-8: control characters
//                   are escaped, invalid UTF-8 bytes become U+FFFD.
// The log filter (e.g. PII masking) is applied to the message and to every string field value before encoding.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>

namespace citadel {

enum class LogLevel { kDebug = 0, kInfo, kWarn, kError };
enum class LogFormat { kText = 0, kJson };

void set_log_level(LogLevel level);
LogLevel log_level();
inline bool log_enabled(LogLevel level) { return static_cast<int>(level) >= static_cast<int>(log_level()); }
void set_log_format(LogFormat format);
LogFormat log_format();
void log_line(LogLevel level, const std::string& msg);

// Every message (and string field value) passes through this before it is written (e.g. PII masking); set once at
// start-up.
using LogFilter = std::function<std::string(const std::string&)>;
void set_log_filter(LogFilter filter);

// One extra key of a structured line: a string (filtered, escaped) or a number (written as is in JSON).
struct LogField {
  LogField(std::string_view k, std::string_view v) : key(k), text(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), text(v) {}
  LogField(std::string_view k, const char* v) : key(k), text(v) {}
  LogField(std::string_view k, int64_t v) : key(k), is_number(true), integer(v) {}
  LogField(std::string_view k, int v) : key(k), is_number(true), integer(v) {}
  LogField(std::string_view k, double v) : key(k), is_number(true), is_double(true), real(v) {}
  // A string the log filter must not see (operator-given configuration, already free of secrets).
  static LogField unfiltered(std::string_view k, std::string_view v) {
    LogField f(k, v);
    f.filter = false;
    return f;
  }
  std::string_view key;  // a plain ASCII name chosen by the caller (not escaped beyond JSON's rules)
  std::string_view text;
  bool is_number = false, is_double = false, filter = true;
  int64_t integer = 0;
  double real = 0;
};

// A line with a component ("access", "config", ...; "" = none) and extra fields. Text format: the message followed by
// ` key=value` pairs (component=, then request_id= inside a LogRequestScope, then the fields; a value with spaces,
// quotes or control characters is quoted and escaped as in JSON). Plain log_line() text lines stay as they were.
void log_event(LogLevel level, std::string_view component, const std::string& msg,
               std::initializer_list<LogField> fields = {});

// log_event for a line about one request written away from that request's handling thread (the engine thread, a
// connection's executor after the handler returned, a background writer): `request_id` is given explicitly and wins
// over any LogRequestScope of the writing thread ("" = none).
void log_request_event(std::string_view request_id, LogLevel level, std::string_view component,
                       const std::string& msg, std::initializer_list<LogField> fields = {});

// While alive, lines written by this thread carry `request_id` (JSON format). Scopes nest: the previous id is
// restored on destruction. The id is copied. Construct and destroy on the same thread.
class LogRequestScope {
 public:
  explicit LogRequestScope(std::string request_id);
  ~LogRequestScope();
  LogRequestScope(const LogRequestScope&) = delete;
  LogRequestScope& operator=(const LogRequestScope&) = delete;

 private:
  std::string previous_;
};
// The id of the innermost LogRequestScope on this thread ("" = none).
const std::string& current_log_request_id();

// ---- building blocks, exposed for tests ----
// Appends `s` as the body of a JSON string (no quotes): ", \ and control characters escaped (\n, \t, \u0001, ...),
// DEL and other valid UTF-8 kept as is, each byte of an invalid or truncated UTF-8 sequence (overlong forms,
// surrogates, > U+10FFFF included) replaced by U+FFFD.
void json_escape_append(std::string* out, std::string_view s);
// "2024-05-01T12:34:56.789Z" for milliseconds since the Unix epoch.
std::string rfc3339_utc_ms(int64_t unix_ms);
// One complete line (with the trailing newline) as log_event would write it; `msg` and the fields unfiltered here
// (the filter is applied by the caller), `request_id` "" = none.
std::string format_log_line(LogFormat format, LogLevel level, int64_t unix_ms, std::string_view request_id,
                            std::string_view component, std::string_view msg,
                            std::initializer_list<LogField> fields = {});
// The sink lines go to (default: file descriptor 2). Tests capture lines with it; nullptr restores stderr.
using LogSink = std::function<void(const std::string& line)>;
void set_log_sink_for_testing(LogSink sink);

inline void log_debug(const std::string& m) { log_line(LogLevel::kDebug, m); }
inline void log_info(const std::string& m) { log_line(LogLevel::kInfo, m); }
inline void log_warn(const std::string& m) { log_line(LogLevel::kWarn, m); }
inline void log_error(const std::string& m) { log_line(LogLevel::kError, m); }

}  // namespace citadel
