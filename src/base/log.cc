#include "base/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <memory>
#include <vector>

#include "base/utf8.h"

namespace citadel {

static std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
static std::atomic<int> g_format{static_cast<int>(LogFormat::kText)};
// Installed once at start-up (serve: the PII masker); read on every line without a lock.
static std::atomic<LogFilter*> g_filter{nullptr};
static std::atomic<LogSink*> g_sink{nullptr};
static thread_local std::string t_request_id;

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }
void set_log_format(LogFormat format) { g_format = static_cast<int>(format); }
LogFormat log_format() { return static_cast<LogFormat>(g_format.load(std::memory_order_relaxed)); }

void set_log_filter(LogFilter filter) {
  // The previous filter is leaked on purpose: another thread may be inside it (filters are set once per process).
  g_filter.store(filter ? new LogFilter(std::move(filter)) : nullptr);
}

void set_log_sink_for_testing(LogSink sink) {
  // Leaked like the filter (tests only).
  g_sink.store(sink ? new LogSink(std::move(sink)) : nullptr);
}

LogRequestScope::LogRequestScope(std::string request_id) : previous_(std::move(t_request_id)) {
  t_request_id = std::move(request_id);
}
LogRequestScope::~LogRequestScope() { t_request_id = std::move(previous_); }
const std::string& current_log_request_id() { return t_request_id; }

namespace {

const char* const kNames[] = {"debug", "info", "warn", "error"};

void append_replacement(std::string* out) { out->append("\xEF\xBF\xBD"); }

void append_number(std::string* out, const LogField& f) {
  if (!f.is_double) {
    out->append(std::to_string(f.integer));
    return;
  }
  if (!std::isfinite(f.real)) {  // JSON has no NaN/Infinity
    out->append("null");
    return;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", f.real);
  out->append(buf);
}

// Text format value: as is when plain, else quoted and escaped like JSON.
void append_text_value(std::string* out, std::string_view v) {
  bool plain = !v.empty();
  for (char c : v)
    if (static_cast<unsigned char>(c) <= 0x20 || c == '"' || c == '\\' || c == '=') plain = false;
  if (plain) {
    out->append(v);
    return;
  }
  out->push_back('"');
  json_escape_append(out, v);
  out->push_back('"');
}

std::string format_line(LogFormat format, LogLevel level, int64_t unix_ms, std::string_view request_id,
                        std::string_view component, std::string_view msg, const LogField* fields, size_t n,
                        bool plain_text_line) {
  const char* name = kNames[static_cast<int>(level)];
  std::string line;
  line.reserve(msg.size() + 96 + n * 24);
  if (format == LogFormat::kText) {
    line.append("[citadel ").append(name).append("] ").append(msg);
    if (!plain_text_line) {
      if (!component.empty()) line.append(" component="), append_text_value(&line, component);
      if (!request_id.empty()) line.append(" request_id="), append_text_value(&line, request_id);
      for (size_t i = 0; i < n; ++i) {
        line.push_back(' ');
        line.append(fields[i].key).push_back('=');
        if (fields[i].is_number) append_number(&line, fields[i]);
        else append_text_value(&line, fields[i].text);
      }
    }
    line.push_back('\n');
    return line;
  }
  line.append("{\"ts\":\"").append(rfc3339_utc_ms(unix_ms)).append("\",\"level\":\"").append(name);
  line.append("\",\"msg\":\"");
  json_escape_append(&line, msg);
  line.push_back('"');
  if (!component.empty()) {
    line.append(",\"component\":\"");
    json_escape_append(&line, component);
    line.push_back('"');
  }
  if (!request_id.empty()) {
    line.append(",\"request_id\":\"");
    json_escape_append(&line, request_id);
    line.push_back('"');
  }
  for (size_t i = 0; i < n; ++i) {
    line.append(",\"");
    json_escape_append(&line, fields[i].key);
    line.append("\":");
    if (fields[i].is_number) {
      append_number(&line, fields[i]);
    } else {
      line.push_back('"');
      json_escape_append(&line, fields[i].text);
      line.push_back('"');
    }
  }
  line.append("}\n");
  return line;
}

int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void write_line(const std::string& line) {
  if (const LogSink* sink = g_sink.load()) {
    (*sink)(line);
    return;
  }
  // One write(2) per line; a pipe takes writes up to PIPE_BUF atomically, longer ones are retried from where the
  // kernel stopped (only then can another thread's line come between the parts).
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t w = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;  // nowhere to report it
    }
    done += static_cast<size_t>(w);
  }
}

void emit(std::string_view request_id, LogLevel level, std::string_view component, const std::string& msg,
          std::initializer_list<LogField> fields, bool plain_text_line) {
  const LogFilter* f = g_filter.load();
  const LogFormat format = log_format();
  const int64_t ms = format == LogFormat::kJson ? now_unix_ms() : 0;
  if (!f) {
    write_line(format_line(format, level, ms, request_id, component, msg, fields.begin(), fields.size(),
                           plain_text_line));
    return;
  }
  // The filter sees the message and every string value; the filtered copies live until the line is written.
  const std::string filtered_msg = (*f)(msg);
  std::vector<std::string> texts;
  std::vector<LogField> filtered(fields.begin(), fields.end());
  texts.reserve(filtered.size());
  for (auto& fld : filtered) {
    if (fld.is_number || !fld.filter) continue;
    texts.push_back((*f)(std::string(fld.text)));
    fld.text = texts.back();
  }
  write_line(format_line(format, level, ms, request_id, component, filtered_msg, filtered.data(), filtered.size(),
                         plain_text_line));
}

}  // namespace

void json_escape_append(std::string* out, std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  size_t i = 0;
  while (i < s.size()) {
    // Runs of printable ASCII other than '"' and '\\' (nearly every byte of a log line) are copied at once.
    size_t run = i;
    while (run < s.size()) {
      const unsigned char b = static_cast<unsigned char>(s[run]);
      if (b < 0x20 || b >= 0x80 || b == '"' || b == '\\') break;
      ++run;
    }
    if (run > i) {
      out->append(s.data() + i, run - i);
      i = run;
      if (i == s.size()) break;
    }
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out->append("\\\""); break;
        case '\\': out->append("\\\\"); break;
        case '\n': out->append("\\n"); break;
        case '\r': out->append("\\r"); break;
        case '\t': out->append("\\t"); break;
        case '\b': out->append("\\b"); break;
        case '\f': out->append("\\f"); break;
        default:
          if (c < 0x20) {
            const char esc[] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
            out->append(esc, sizeof esc);
          } else {
            out->push_back(static_cast<char>(c));
          }
      }
      ++i;
      continue;
    }
    const size_t len = utf8_sequence_length(s, i);
    if (len == 0) {
      append_replacement(out);
      ++i;
      continue;
    }
    out->append(s.substr(i, len));
    i += len;
  }
}

std::string rfc3339_utc_ms(int64_t unix_ms) {
  int64_t secs = unix_ms / 1000, ms = unix_ms % 1000;
  if (ms < 0) ms += 1000, secs -= 1;
  // The "YYYY-MM-DDTHH:MM:SS" part changes once a second: formatted once per second per thread.
  thread_local int64_t cached_secs = INT64_MIN;
  thread_local char cached[64];  // 19 used; room for any year the compiler can imagine
  if (secs != cached_secs) {
    const std::time_t t = static_cast<std::time_t>(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    cached_secs = secs;
  }
  std::string out(cached);
  const char frac[] = {'.', static_cast<char>('0' + ms / 100), static_cast<char>('0' + ms / 10 % 10),
                       static_cast<char>('0' + ms % 10), 'Z'};
  out.append(frac, sizeof frac);
  return out;
}

std::string format_log_line(LogFormat format, LogLevel level, int64_t unix_ms, std::string_view request_id,
                            std::string_view component, std::string_view msg, std::initializer_list<LogField> fields) {
  return format_line(format, level, unix_ms, request_id, component, msg, fields.begin(), fields.size(),
                     /*plain_text_line=*/false);
}

void log_line(LogLevel level, const std::string& msg) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  emit(t_request_id, level, {}, msg, {}, /*plain_text_line=*/true);
}

void log_event(LogLevel level, std::string_view component, const std::string& msg,
               std::initializer_list<LogField> fields) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  emit(t_request_id, level, component, msg, fields, /*plain_text_line=*/false);
}

void log_request_event(std::string_view request_id, LogLevel level, std::string_view component,
                       const std::string& msg, std::initializer_list<LogField> fields) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed)) return;
  emit(request_id, level, component, msg, fields, /*plain_text_line=*/false);
}

}  // namespace citadel
