#include "crypto/key_source.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

namespace citadel::crypto {

void cleanse_memory(void* p, size_t n) {
  if (p && n) OPENSSL_cleanse(p, n);
}

namespace {

constexpr int kCommandTimeoutMs = 10000;
constexpr size_t kMaxKeySource = 64 << 10;

// The string's heap buffer held key material: wipe it before it is freed.
struct WipeOnExit {
  std::string* s;
  ~WipeOnExit() {
    if (!s->empty()) OPENSSL_cleanse(s->data(), s->size());
  }
};

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool decode_hex_key(const std::string& hex, KeyBytes* out) {
  if (hex.size() != 2 * kKeyBytes) return false;
  out->assign(kKeyBytes, 0);
  for (size_t i = 0; i < kKeyBytes; ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

// "2026-12-05T00:00:00Z" or unix seconds.
bool parse_time(const std::string& s, int64_t* out) {
  if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos) {
    *out = std::strtoll(s.c_str(), nullptr, 10);
    return true;
  }
  std::tm tm{};
  const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (!end || *end) return false;
  *out = static_cast<int64_t>(timegm(&tm));
  return true;
}

std::string format_time(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Result<Key> load_key_file(const std::string& path, const std::string& spec) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("key " + spec + ": cannot open " + path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  WipeOnExit wipe{&text};
  if (text.size() > kMaxKeySource) return InvalidArgument("key " + spec + ": file too large to be a key");
  Key key;
  if (text.size() == kKeyBytes) {
    key.bytes.assign(text.begin(), text.end());  // 32 raw bytes
  } else {
    ASSIGN_OR_RETURN(key, parse_key_text(text, "key " + spec));
  }
  if (key.created_unix == 0) {
    struct stat st {};
    if (stat(path.c_str(), &st) == 0) key.created_unix = static_cast<int64_t>(st.st_mtime);
  }
  return key;
}

std::vector<std::string> split_args(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  std::string a;
  while (is >> a) out.push_back(a);
  return out;
}

}  // namespace

Result<Key> parse_key_text(const std::string& text, const std::string& where) {
  Key key;
  std::string t = trim(text);
  if (t.find('=') == std::string::npos) {
    if (!decode_hex_key(t, &key.bytes))
      return InvalidArgument(where + ": expected 64 hex digits (a 32-byte key) or id=/created=/key= lines");
    return key;
  }
  bool have_key = false;
  std::istringstream is(text);
  std::string line;
  WipeOnExit wipe{&line};
  for (int n = 1; std::getline(is, line); ++n) {
    std::string l = trim(line);
    if (l.empty() || l[0] == '#') continue;
    size_t eq = l.find('=');
    if (eq == std::string::npos)
      return InvalidArgument(where + ": line " + std::to_string(n) + ": expected name=value");
    std::string name = trim(l.substr(0, eq)), value = trim(l.substr(eq + 1));
    if (name == "id") {
      key.id = value;
    } else if (name == "created") {
      if (!parse_time(value, &key.created_unix))
        return InvalidArgument(where + ": created: expected YYYY-MM-DDTHH:MM:SSZ or unix seconds");
    } else if (name == "key") {
      if (!decode_hex_key(value, &key.bytes)) return InvalidArgument(where + ": key: expected 64 hex digits");
      have_key = true;
    } else {
      return InvalidArgument(where + ": line " + std::to_string(n) + ": unknown field '" + name + "'");
    }
    OPENSSL_cleanse(l.data(), l.size());
  }
  if (!have_key) return InvalidArgument(where + ": no key= line");
  if (key.id.size() > 255) return InvalidArgument(where + ": id longer than 255 bytes");
  return key;
}

Result<std::string> run_key_command(const std::vector<std::string>& argv, int timeout_ms) {
  if (argv.empty()) return InvalidArgument("empty key command");
  const std::string name = argv[0];
  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return IoError("key command " + name + ": pipe: " + std::strerror(errno));
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return IoError("key command " + name + ": fork: " + std::strerror(errno));
  }
  if (pid == 0) {  // child: only async-signal-safe calls until exec
    dup2(out_pipe[1], STDOUT_FILENO);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(out_pipe[1]);
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  bool timed_out = false;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) { timed_out = true; break; }
    pollfd pfd{out_pipe[0], POLLIN, 0};
    int r = poll(&pfd, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) { timed_out = true; break; }
    ssize_t n = read(out_pipe[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (out.size() < kMaxKeySource) out.append(buf, static_cast<size_t>(n));
  }
  OPENSSL_cleanse(buf, sizeof buf);
  close(out_pipe[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  Status err;
  if (timed_out)
    err = Status(StatusCode::kDeadlineExceeded,
                 "key command " + name + ": no answer within " + std::to_string(timeout_ms / 1000) + " s (killed)");
  else if (WIFSIGNALED(status))
    err = IoError("key command " + name + ": killed by signal " + std::to_string(WTERMSIG(status)));
  else if (WEXITSTATUS(status) == 127)
    err = NotFound("key command " + name + ": cannot run it (exit 127: not found or not executable)");
  else if (WEXITSTATUS(status) != 0)
    err = IoError("key command " + name + ": exit status " + std::to_string(WEXITSTATUS(status)));
  if (!err.ok()) {
    OPENSSL_cleanse(out.data(), out.size());
    return err;
  }
  return out;
}

Result<Key> load_key(const std::string& spec) {
  if (spec.rfind("env:", 0) == 0) {
    const std::string name = spec.substr(4);
    const char* v = std::getenv(name.c_str());
    if (!v || !*v) return NotFound("key " + spec + ": environment variable " + name + " is not set");
    return parse_key_text(v, "key " + spec);
  }
  if (spec.rfind("cmd:", 0) == 0) {
    std::vector<std::string> argv = split_args(spec.substr(4));
    if (argv.empty()) return InvalidArgument("key " + spec + ": no command after cmd:");
    ASSIGN_OR_RETURN(std::string out, run_key_command(argv, kCommandTimeoutMs));
    WipeOnExit wipe{&out};
    return parse_key_text(out, "key cmd:" + argv[0]);
  }
  if (spec.empty()) return InvalidArgument("empty key spec (expected PATH, env:NAME or cmd:PROG ARGS)");
  return load_key_file(spec.rfind("file:", 0) == 0 ? spec.substr(5) : spec, spec);
}

Result<Key> generate_key(const std::string& id) {
  if (id.size() > 255) return InvalidArgument("key id longer than 255 bytes");
  Key key;
  key.id = id;
  key.bytes.assign(kKeyBytes, 0);
  if (RAND_bytes(key.bytes.data(), static_cast<int>(kKeyBytes)) != 1) return Internal("RAND_bytes failed");
  key.created_unix = static_cast<int64_t>(std::time(nullptr));
  return key;
}

Status write_key_file(const std::string& path, const Key& key) {
  if (key.bytes.size() != kKeyBytes) return InvalidArgument("key " + key.id + ": not 32 bytes");
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return IoError(path + ": cannot create the key file: " + std::strerror(errno));
  static const char kHex[] = "0123456789abcdef";
  std::string text = "id=" + key.id + "\ncreated=" + format_time(key.created_unix) + "\nkey=";
  for (uint8_t b : key.bytes) {
    text.push_back(kHex[b >> 4]);
    text.push_back(kHex[b & 15]);
  }
  text.push_back('\n');
  WipeOnExit wipe{&text};
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      close(fd);
      unlink(path.c_str());
      return IoError(path + ": cannot write the key file: " + std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0 || close(fd) != 0) return IoError(path + ": cannot write the key file: " + std::strerror(errno));
  return OkStatus();
}

bool key_older_than(const Key& key, int days, int64_t now) {
  return key.created_unix > 0 && now - key.created_unix > static_cast<int64_t>(days) * 86400;
}

}  // namespace citadel::crypto
